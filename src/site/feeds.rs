//! Atom feeds (RFC 4287): the announcements and the status changes, of the whole area and of
//! each town.

use anyhow::Result;
use atom_syndication::{Content, Entry, Feed, Link, Person, Text};

use crate::domain::time;
use crate::domain::{Announcement, Municipality};
use crate::i18n;
use crate::read::snapshot::Snapshot;
use crate::site::render;

fn fixed(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
    time::parse_rfc3339(s).unwrap_or_default().fixed_offset()
}

fn link(href: String, rel: &str, mime: Option<&str>) -> Link {
    let mut l = Link::default();
    l.set_href(href);
    l.set_rel(rel);
    l.set_mime_type(mime.map(str::to_string));
    l
}

fn entry(snap: &Snapshot, lang: &str, public_url: &str, a: &Announcement) -> Entry {
    let url = format!("{public_url}{}/meldungen/{}", render::base(lang), a.id);
    let mut e = Entry::default();
    e.set_id(format!("{public_url}/meldungen/{}", a.id));
    e.set_title(Text::plain(a.title.clone()));
    e.set_updated(fixed(&a.updated_at));
    e.set_published(a.published_at.as_deref().map(fixed));
    e.set_links(vec![link(url, "alternate", Some("text/html"))]);
    e.set_summary(Some(Text::plain(render::scope_name(snap, lang, &a.scope_kind, &a.scope_ref))));
    let mut content = Content::default();
    content.set_content_type(Some("html".to_string()));
    content.set_value(Some(snap.markdown.html(&a.body)));
    e.set_content(Some(content));
    let mut author = Person::default();
    author.set_name(if a.author.is_empty() { snap.data.provider_name.clone() } else { a.author.clone() });
    e.set_authors(vec![author]);
    e
}

/// A feed without entries: its id, title, language, time, links to itself and its page, and the
/// provider as author.
fn feed_head(
    snap: &Snapshot,
    lang: &str,
    public_url: &str,
    title: String,
    self_path: &str,
    page_path: &str,
    updated: &str,
) -> Feed {
    let mut f = Feed::default();
    f.set_id(format!("{public_url}{self_path}"));
    f.set_title(Text::plain(title));
    f.set_lang(Some(i18n::language(lang).tag.clone()));
    f.set_updated(fixed(updated));
    f.set_links(vec![
        link(format!("{public_url}{self_path}"), "self", Some("application/atom+xml")),
        link(format!("{public_url}{page_path}"), "alternate", Some("text/html")),
    ]);
    let mut author = Person::default();
    author.set_name(snap.data.provider_name.clone());
    f.set_authors(vec![author]);
    f
}

// The feed's parts are all different things; a struct for them would only rename the arguments.
#[allow(clippy::too_many_arguments)]
fn feed(
    snap: &Snapshot,
    lang: &str,
    public_url: &str,
    title: String,
    self_path: String,
    page_path: String,
    items: Vec<&Announcement>,
    updated_when_empty: &str,
) -> String {
    let updated = items.iter().map(|a| a.updated_at.as_str()).max().unwrap_or(updated_when_empty);
    let mut f = feed_head(snap, lang, public_url, title, &self_path, &page_path, updated);
    f.set_entries(items.into_iter().map(|a| entry(snap, lang, public_url, a)).collect::<Vec<_>>());
    f.to_string()
}

pub fn area(snap: &Snapshot, lang: &str, public_url: &str) -> Result<String> {
    let base = render::base(lang);
    Ok(feed(
        snap,
        lang,
        public_url,
        i18n::tf(lang, "feed.area_title", &[("area", snap.data.area_name.clone())]),
        format!("{base}/feeds/meldungen.atom"),
        format!("{base}/meldungen"),
        snap.published_announcements().collect(),
        &snap.changed_at,
    ))
}

pub fn municipality(snap: &Snapshot, lang: &str, public_url: &str, m: &Municipality) -> Result<String> {
    let base = render::base(lang);
    Ok(feed(
        snap,
        lang,
        public_url,
        i18n::tf(lang, "feed.town_title", &[("town", m.name.clone())]),
        format!("{base}/kommunen/{}/meldungen.atom", m.slug),
        format!("{base}/kommunen/{}", m.slug),
        snap.announcements_for(m),
        &snap.changed_at_for(m),
    ))
}

/// Status changes in a feed at most: the newest.
const STATUS_ENTRIES: usize = 100;

/// The status changes (statements, withdrawals, rollout steps) of the area or one town, newest
/// first, each linking the page it is about: the public history as a feed.
pub fn status(snap: &Snapshot, lang: &str, public_url: &str, town: Option<&Municipality>) -> Result<String> {
    let base = render::base(lang);
    let (title, self_path, page_path) = match town {
        Some(m) => (
            i18n::tf(lang, "history.feed_town_title", &[("town", m.name.clone())]),
            format!("{base}/kommunen/{}/status.atom", m.slug),
            format!("{base}/kommunen/{}", m.slug),
        ),
        None => (
            i18n::tf(lang, "history.feed_area_title", &[("area", snap.data.area_name.clone())]),
            format!("{base}/feeds/status.atom"),
            format!("{base}/"),
        ),
    };
    let items: Vec<render::HistoryView> =
        snap.town_history(town).iter().take(STATUS_ENTRIES).map(|h| render::history_view(snap, lang, h)).collect();
    let updated = items.first().map(|h| h.at.clone()).unwrap_or_else(|| match town {
        Some(m) => snap.changed_at_for(m),
        None => snap.changed_at.clone(),
    });
    let mut f = feed_head(snap, lang, public_url, title, &self_path, &page_path, &updated);
    let entries = items.iter().map(|h| {
        let place = snap.municipality_by_ags(&h.place_ags).or(town);
        let page = match (place, &h.service_slug) {
            (Some(m), Some(s)) => format!("{base}/kommunen/{}/leistungen/{s}", m.slug),
            (Some(m), None) => format!("{base}/kommunen/{}", m.slug),
            // A district's statement in the area feed: the service's page lists every town.
            (None, Some(s)) => format!("{base}/leistungen/{s}"),
            (None, None) => format!("{base}/"),
        };
        let mut e = Entry::default();
        e.set_id(format!("{public_url}/journal/{}", h.seq));
        let subject = h.service_name.clone().unwrap_or_else(|| place.map(|m| m.name.clone()).unwrap_or_default());
        let title = match h.level {
            Some(level) => format!("{subject}: {}", i18n::t(lang, &format!("level.{level}"))),
            None => subject,
        };
        e.set_title(Text::plain(title));
        e.set_updated(fixed(&h.at));
        e.set_links(vec![link(format!("{public_url}{page}"), "alternate", Some("text/html"))]);
        e.set_summary(Some(Text::plain(h.text.clone())));
        e
    });
    f.set_entries(entries.collect::<Vec<_>>());
    Ok(f.to_string())
}

/// The Fahrplan as iCalendar (RFC 5545): one all-day event per service and expected date, so a
/// calendar shows when a service is expected back; for the area or one town.
pub fn fahrplan_ics(snap: &Snapshot, lang: &str, public_url: &str, town: Option<&Municipality>) -> Result<String> {
    use icalendar::{Calendar, Component, Event, EventLike};
    let mut cal = Calendar::new();
    let title = match town {
        Some(m) => i18n::tf(lang, "fahrplan.calendar_town", &[("town", m.name.clone())]),
        None => i18n::tf(lang, "fahrplan.calendar_area", &[("area", snap.data.area_name.clone())]),
    };
    cal.name(&title);
    let scope = town.map(|m| m.slug.as_str()).unwrap_or("area");
    // A town's calendar is as old as the town's information, so a change elsewhere leaves it as it is.
    let changed_at = town.map_or_else(|| snap.changed_at.clone(), |m| snap.changed_at_for(m));
    let stamp = time::parse_rfc3339(&changed_at).unwrap_or_default();
    for r in snap.expected_returns(town) {
        // A day is an all-day event; a week, half-month or month spans its days (DTEND is the
        // day after the last, as iCalendar counts it).
        let Some((first, last)) = crate::domain::expected::Expected::parse(&r.date).and_then(|e| e.span()) else {
            continue;
        };
        let names: Vec<&str> = r.towns.iter().map(|m| m.name.as_str()).collect();
        let summary = i18n::tf(
            lang,
            "fahrplan.event",
            &[("service", r.service.name.clone()), ("count", r.towns.len().to_string())],
        );
        let summary =
            if first == last { summary } else { format!("{summary}: {}", crate::i18n::expected_return(lang, &r.date)) };
        let url = match town {
            Some(m) => format!("{public_url}{}/kommunen/{}/leistungen/{}", render::base(lang), m.slug, r.service.slug),
            None => format!("{public_url}{}/leistungen/{}", render::base(lang), r.service.slug),
        };
        cal.push(
            Event::new()
                .uid(&format!("{}-{}-{}@notbetrieb", r.service.slug, r.date, scope))
                .summary(&summary)
                .description(&names.join(", "))
                .url(&url)
                .starts(first)
                .ends(last + chrono::Days::new(1))
                .timestamp(stamp)
                .done(),
        );
    }
    Ok(cal.done().to_string())
}
