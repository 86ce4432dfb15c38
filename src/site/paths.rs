//! The one list of public pages: every page of a snapshot as a typed value, its URL path in a
//! language, and its rendering. The live server's public routes and the static export both go
//! through `render`, so a page cannot look different in the two.

use anyhow::Result;

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
    TownFahrplan(String),
    TownFahrplanIcs(String),
    District(String),
    Services,
    Service(String),
    News,
    Announcement(String),
    Feed,
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
            Page::TownFahrplan(t) => format!("/kommunen/{t}/fahrplan"),
            Page::TownFahrplanIcs(t) => format!("/kommunen/{t}/fahrplan.ics"),
            Page::District(d) => format!("/kreise/{d}"),
            Page::Services => "/leistungen".into(),
            Page::Service(s) => format!("/leistungen/{s}"),
            Page::News => "/meldungen".into(),
            Page::Announcement(id) => format!("/meldungen/{id}"),
            Page::Feed => "/feeds/meldungen.atom".into(),
            Page::Faq => "/fragen".into(),
            Page::Sources => "/quellen".into(),
            Page::Fahrplan => "/fahrplan".into(),
            Page::FahrplanIcs => "/fahrplan.ics".into(),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Page::TownFeed(_) | Page::Feed => ATOM,
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

/// Every public page of a snapshot in every language of the catalogue, lazily (a large area has
/// a million of them): per language the area pages, then per town, per service, per district,
/// per announcement.
pub fn all(snap: &Snapshot) -> impl Iterator<Item = Localized> + '_ {
    i18n::languages().iter().flat_map(move |l| {
        let lang: &'static str = &l.code;
        pages(snap).map(move |page| Localized { lang, page })
    })
}

fn pages(snap: &Snapshot) -> impl Iterator<Item = Page> + '_ {
    let d = &snap.data;
    let area = [
        Page::Home,
        Page::Towns,
        Page::Services,
        Page::News,
        Page::Feed,
        Page::Faq,
        Page::Sources,
        Page::Fahrplan,
        Page::FahrplanIcs,
    ];
    let towns = d.municipalities.iter().flat_map(move |m| {
        let town = m.slug.clone();
        [
            Page::Town(town.clone()),
            Page::TownFeed(town.clone()),
            Page::TownFahrplan(town.clone()),
            Page::TownFahrplanIcs(town.clone()),
        ]
        .into_iter()
        .chain(d.services.iter().map(move |s| Page::TownService { town: town.clone(), service: s.slug.clone() }))
    });
    area.into_iter()
        .chain(towns)
        .chain(d.services.iter().map(|s| Page::Service(s.slug.clone())))
        .chain(d.districts.iter().map(|x| Page::District(x.slug.clone())))
        .chain(snap.published_announcements().map(|a| Page::Announcement(a.id.clone())))
}

/// Whether the snapshot has the page's town, service, district or announcement.
pub fn exists(snap: &Snapshot, page: &Page) -> bool {
    match page {
        Page::Town(t) | Page::TownFeed(t) | Page::TownFahrplan(t) | Page::TownFahrplanIcs(t) => {
            snap.municipality(t).is_some()
        }
        Page::TownService { town, service } => snap.municipality(town).is_some() && snap.service(service).is_some(),
        Page::District(d) => snap.district_by_slug(d).is_some(),
        Page::Service(s) => snap.service(s).is_some(),
        Page::Announcement(id) => snap.announcement(id).is_some(),
        _ => true,
    }
}

/// Renders a page; `None` when the snapshot has no such town, service, district or announcement.
/// `public_url` is for the absolute links in feeds; `export` is the time a static copy is made.
pub fn render(
    snap: &Snapshot,
    lang: &str,
    public_url: &str,
    page: &Page,
    export: Option<&str>,
) -> Option<Result<Rendered>> {
    let town = |slug: &str| snap.municipality(slug);
    let body = match page {
        Page::Home => render::home(snap, lang, export),
        Page::Towns => render::municipalities(snap, lang, export),
        Page::Town(t) => render::municipality(snap, lang, town(t)?, export),
        Page::TownService { town: t, service } => {
            render::service_in_town(snap, lang, town(t)?, snap.service(service)?, export)
        }
        Page::TownFeed(t) => feeds::municipality(snap, lang, public_url, town(t)?),
        Page::TownFahrplan(t) => render::fahrplan(snap, lang, Some(town(t)?), export),
        Page::TownFahrplanIcs(t) => feeds::fahrplan_ics(snap, lang, public_url, Some(town(t)?)),
        Page::District(d) => render::district(snap, lang, snap.district_by_slug(d)?, export),
        Page::Services => render::services(snap, lang, export),
        Page::Service(s) => render::service(snap, lang, snap.service(s)?, export),
        Page::News => render::announcements(snap, lang, export),
        Page::Announcement(id) => render::announcement(snap, lang, snap.announcement(id)?, export),
        Page::Feed => feeds::area(snap, lang, public_url),
        Page::Faq => render::faq(snap, lang, export),
        Page::Sources => render::sources(snap, lang, export),
        Page::Fahrplan => render::fahrplan(snap, lang, None, export),
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
