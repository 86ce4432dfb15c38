//! The one list of public pages: every page of a snapshot as a typed value, its URL path in a
//! language, and its rendering. The live server's public routes and the static export both go
//! through `render`, so a page cannot look different in the two.

use std::collections::BTreeSet;

use anyhow::Result;

use crate::domain::events::Touch;

use crate::i18n;
use crate::read::snapshot::Snapshot;
use crate::site::{feeds, render};

pub const HTML: &str = "text/html; charset=utf-8";
pub const ATOM: &str = "application/atom+xml; charset=utf-8";
pub const ICS: &str = "text/calendar; charset=utf-8";

/// One public page, without its language. Slugs and ids are those of the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Page {
    Home,
    Towns,
    Town(String),
    TownService { town: String, service: String },
    TownFeed(String),
    TownStatusFeed(String),
    TownFahrplan(String),
    TownFahrplanIcs(String),
    District(String),
    Services,
    Service(String),
    News,
    Announcement(String),
    Feed,
    StatusFeed,
    Faq,
    Sources,
    Fahrplan,
    FahrplanIcs,
}

/// A page with its language: what a URL path names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Localized {
    pub lang: &'static str,
    pub page: Page,
}

/// A rendered page.
pub struct Rendered {
    pub content_type: &'static str,
    pub body: String,
}

impl Page {
    /// The path without the language prefix: `/kommunen/menden-sauerland`.
    pub fn path(&self) -> String {
        match self {
            Page::Home => "/".into(),
            Page::Towns => "/kommunen".into(),
            Page::Town(t) => format!("/kommunen/{t}"),
            Page::TownService { town, service } => format!("/kommunen/{town}/leistungen/{service}"),
            Page::TownFeed(t) => format!("/kommunen/{t}/meldungen.atom"),
            Page::TownStatusFeed(t) => format!("/kommunen/{t}/status.atom"),
            Page::TownFahrplan(t) => format!("/kommunen/{t}/fahrplan"),
            Page::TownFahrplanIcs(t) => format!("/kommunen/{t}/fahrplan.ics"),
            Page::District(d) => format!("/kreise/{d}"),
            Page::Services => "/leistungen".into(),
            Page::Service(s) => format!("/leistungen/{s}"),
            Page::News => "/meldungen".into(),
            Page::Announcement(id) => format!("/meldungen/{id}"),
            Page::Feed => "/feeds/meldungen.atom".into(),
            Page::StatusFeed => "/feeds/status.atom".into(),
            Page::Faq => "/fragen".into(),
            Page::Sources => "/quellen".into(),
            Page::Fahrplan => "/fahrplan".into(),
            Page::FahrplanIcs => "/fahrplan.ics".into(),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Page::TownFeed(_) | Page::Feed | Page::TownStatusFeed(_) | Page::StatusFeed => ATOM,
            Page::TownFahrplanIcs(_) | Page::FahrplanIcs => ICS,
            _ => HTML,
        }
    }

    /// A file-like path (`/fahrplan.ics`): exported as the file itself, not as `P/index.html`.
    pub fn is_file(&self) -> bool {
        self.content_type() != HTML
    }
}

impl Localized {
    /// The URL path: `/en/kommunen`, and `/en` (not `/en/`) for the English home page.
    pub fn url_path(&self) -> String {
        render::lang_url(self.lang, &self.page.path())
    }
}

/// A part of the site whose files change together: the unit of the static export, and what the
/// touches of an event (`Event::touches`) are turned into for an incremental export.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The area-wide pages, the API's lists, the announcement alerts and the CAP index, the
    /// search fallback, the 404 page, the stylesheet, `robots.txt`.
    Area,
    /// `sitemap.xml`: it changes only when pages come or go.
    Sitemap,
    /// A town (by slug): its pages, each of its service pages, its API answers.
    Town(String),
    /// A district's page (by slug).
    District(String),
    /// A service (by slug): its catalogue page, its API answer, its level alerts.
    Service(String),
    /// A published announcement's page (by id).
    Announcement(String),
}

impl Part {
    /// The part's pages in every language of the catalogue.
    pub fn pages(&self, snap: &Snapshot) -> Vec<Localized> {
        let pages: Vec<Page> = match self {
            Part::Area => vec![
                Page::Home,
                Page::Towns,
                Page::Services,
                Page::News,
                Page::Feed,
                Page::StatusFeed,
                Page::Faq,
                Page::Sources,
                Page::Fahrplan,
                Page::FahrplanIcs,
            ],
            Part::Sitemap => Vec::new(),
            Part::Town(town) if snap.municipality(town).is_some() => [
                Page::Town(town.clone()),
                Page::TownFeed(town.clone()),
                Page::TownStatusFeed(town.clone()),
                Page::TownFahrplan(town.clone()),
                Page::TownFahrplanIcs(town.clone()),
            ]
            .into_iter()
            .chain(snap.data.services.iter().map(|s| Page::TownService { town: town.clone(), service: s.slug.clone() }))
            .collect(),
            Part::District(d) if snap.district_by_slug(d).is_some() => vec![Page::District(d.clone())],
            Part::Service(s) if snap.service(s).is_some() => vec![Page::Service(s.clone())],
            Part::Announcement(id) if snap.announcement(id).is_some() => vec![Page::Announcement(id.clone())],
            _ => Vec::new(),
        };
        i18n::languages()
            .iter()
            .flat_map(|l| pages.iter().map(|page| Localized { lang: &l.code, page: page.clone() }))
            .collect()
    }
}

/// Every part of a snapshot: the area, the sitemap, then per town, per service, per district,
/// per published announcement.
pub fn parts(snap: &Snapshot) -> impl Iterator<Item = Part> + '_ {
    let d = &snap.data;
    [Part::Area, Part::Sitemap]
        .into_iter()
        .chain(d.municipalities.iter().map(|m| Part::Town(m.slug.clone())))
        .chain(d.services.iter().map(|s| Part::Service(s.slug.clone())))
        .chain(d.districts.iter().map(|x| Part::District(x.slug.clone())))
        .chain(snap.published_announcements().map(|a| Part::Announcement(a.id.clone())))
}

/// Every public page of a snapshot in every language of the catalogue, lazily (a large area has
/// a million of them).
pub fn all(snap: &Snapshot) -> impl Iterator<Item = Localized> + '_ {
    parts(snap).flat_map(move |part| part.pages(snap))
}

/// The parts that the touches of committed events change, going from `before` to `after`; `None`
/// when that is everything (an import, a new demo). Parts of both snapshots are named, so a part
/// that is gone after the change is named too (and its files can be removed).
pub fn touched_parts(before: &Snapshot, after: &Snapshot, touches: &[Touch]) -> Option<BTreeSet<Part>> {
    let mut out = BTreeSet::new();
    let both = [before, after];
    // Which towns an AGS stands for: the town, or every town of the district.
    let towns_of = |out: &mut BTreeSet<Part>, ags: &str| {
        for snap in both {
            if ags.len() == 5 {
                out.extend(snap.towns_of_district(ags).map(|m| Part::Town(m.slug.clone())));
            } else if let Some(m) = snap.municipality_by_ags(ags) {
                out.insert(Part::Town(m.slug.clone()));
            }
        }
    };
    for touch in touches {
        match touch {
            Touch::Everything => return None,
            Touch::Area | Touch::Faq => {
                out.insert(Part::Area);
            }
            Touch::AllTowns => {
                // District pages sum their towns up and are as fresh as their freshest town.
                for snap in both {
                    out.extend(snap.data.municipalities.iter().map(|m| Part::Town(m.slug.clone())));
                    out.extend(snap.data.districts.iter().map(|d| Part::District(d.slug.clone())));
                }
            }
            Touch::Municipality(ags) | Touch::District(ags) => {
                out.insert(Part::Area);
                towns_of(&mut out, ags);
                for snap in both {
                    let district = if ags.len() == 5 {
                        snap.district(ags)
                    } else {
                        snap.municipality_by_ags(ags).and_then(|m| snap.district(&m.district_ags))
                    };
                    out.extend(district.map(|d| Part::District(d.slug.clone())));
                    // Towns referred to this place's offices show the service's level there.
                    for r in &snap.data.referrals {
                        if snap.office(&r.office_slug).is_some_and(|o| o.owner_ags == *ags) {
                            towns_of(&mut out, &r.for_ags);
                        }
                    }
                }
            }
            Touch::Service(slug) => {
                out.insert(Part::Area);
                out.insert(Part::Service(slug.clone()));
            }
            Touch::Announcement(id) => {
                out.extend([Part::Area, Part::Sitemap, Part::Announcement(id.clone())]);
            }
            Touch::Procedure(slug) => {
                out.insert(Part::Area);
                for snap in both {
                    out.extend(
                        snap.data
                            .services
                            .iter()
                            .filter(|s| snap.procedures_of(s).iter().any(|p| p.slug == *slug))
                            .map(|s| Part::Service(s.slug.clone())),
                    );
                }
            }
        }
    }
    Some(out)
}

/// Whether the snapshot has the page's town, service, district or announcement.
pub fn exists(snap: &Snapshot, page: &Page) -> bool {
    match page {
        Page::Town(t)
        | Page::TownFeed(t)
        | Page::TownStatusFeed(t)
        | Page::TownFahrplan(t)
        | Page::TownFahrplanIcs(t) => snap.municipality(t).is_some(),
        Page::TownService { town, service } => snap.municipality(town).is_some() && snap.service(service).is_some(),
        Page::District(d) => snap.district_by_slug(d).is_some(),
        Page::Service(s) => snap.service(s).is_some(),
        Page::Announcement(id) => snap.announcement(id).is_some(),
        _ => true,
    }
}

/// Renders a page; `None` when the snapshot has no such town, service, district or announcement.
/// `public_url` is for the absolute links in feeds; `copy` renders the static export's variant.
pub fn render(snap: &Snapshot, lang: &str, public_url: &str, page: &Page, copy: bool) -> Option<Result<Rendered>> {
    let town = |slug: &str| snap.municipality(slug);
    let body = match page {
        Page::Home => render::home(snap, lang, copy),
        Page::Towns => render::municipalities(snap, lang, copy),
        Page::Town(t) => render::municipality(snap, lang, town(t)?, copy),
        Page::TownService { town: t, service } => {
            render::service_in_town(snap, lang, town(t)?, snap.service(service)?, copy)
        }
        Page::TownFeed(t) => feeds::municipality(snap, lang, public_url, town(t)?),
        Page::TownStatusFeed(t) => feeds::status(snap, lang, public_url, Some(town(t)?)),
        Page::TownFahrplan(t) => render::fahrplan(snap, lang, Some(town(t)?), copy),
        Page::TownFahrplanIcs(t) => feeds::fahrplan_ics(snap, lang, public_url, Some(town(t)?)),
        Page::District(d) => render::district(snap, lang, snap.district_by_slug(d)?, copy),
        Page::Services => render::services(snap, lang, copy),
        Page::Service(s) => render::service(snap, lang, snap.service(s)?, copy),
        Page::News => render::announcements(snap, lang, copy),
        Page::Announcement(id) => render::announcement(snap, lang, snap.announcement(id)?, copy),
        Page::Feed => feeds::area(snap, lang, public_url),
        Page::StatusFeed => feeds::status(snap, lang, public_url, None),
        Page::Faq => render::faq(snap, lang, copy),
        Page::Sources => render::sources(snap, lang, copy),
        Page::Fahrplan => render::fahrplan(snap, lang, None, copy),
        Page::FahrplanIcs => feeds::fahrplan_ics(snap, lang, public_url, None),
    };
    Some(body.map(|body| Rendered { content_type: page.content_type(), body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_carry_the_language_prefix_and_files_keep_their_names() {
        let town = Localized { lang: "en", page: Page::Town("menden-sauerland".into()) };
        assert_eq!(town.url_path(), "/en/kommunen/menden-sauerland");
        assert_eq!(Localized { lang: "en", page: Page::Home }.url_path(), "/en");
        assert_eq!(Localized { lang: "de", page: Page::Home }.url_path(), "/");
        assert_eq!(Localized { lang: "de", page: Page::FahrplanIcs }.url_path(), "/fahrplan.ics");
        assert!(Page::TownFeed("x".into()).is_file() && Page::FahrplanIcs.is_file());
        assert!(!Page::Fahrplan.is_file() && !Page::Home.is_file());
    }
}
