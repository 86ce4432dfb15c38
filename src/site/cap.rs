//! CAP 1.2 (OASIS Common Alerting Protocol) alerts for warning systems (MoWaS, NINA, KATWARN …),
//! and the Atom index of the current ones (`/cap/index.atom`, `/cap/{identifier}.xml`).
//!
//! Two kinds of alert:
//!
//! - **Announcements.** Each publication of an announcement is an `Alert`; every correction of it
//!   is an `Update` whose `references` name all earlier messages of that publication; a
//!   withdrawal (or a correction that takes it back to a draft) is a `Cancel` referencing them
//!   too. The history comes from the journal's announcement events, which the snapshot keeps
//!   (`Dataset::announcement_history`), so a withdrawn announcement, gone from the tables, still
//!   has its Cancel. Identifiers: `meldung.<id>.<publication time>` for the Alert (a republished
//!   draft is a new Alert), `meldung.<id>.u<journal seq>` for an Update, `meldung.<id>.c<seq>`
//!   for a Cancel.
//! - **Levels.** One alert per service and level (limited, emergency, unavailable) with every
//!   town at that level as an `area`: what a warning system shows as "vehicle registration:
//!   emergency operation in these towns". Its identifier `stufe.<service>.<level>.<hash>` hashes
//!   the towns and the latest statement time, so it is the same as long as nothing in the group
//!   changed and a new one when anything did; the parameters `notbetrieb:service` and
//!   `notbetrieb:level` name the group, so a consumer replaces the group's earlier alert by the
//!   new one. These are `Alert`s without `references` (the snapshot keeps no history of groups).
//!
//! Each alert has a German and an English `info` block with the same content as written by the
//! editors and the interface texts from the message catalogue (`cap.*`). XML is written by hand
//! through the one escape function [`escape`], which also drops characters XML cannot carry.

use std::fmt::Write as _;

use sha2::Digest;

use crate::domain::events::{AnnouncementState, Event};
use crate::domain::{Level, Municipality, ScopeKind, Service, time};
use crate::i18n;
use crate::read::snapshot::Snapshot;
use crate::site::paths::Part;
use crate::site::render;

/// The languages of the `info` blocks, German first.
const INFO_LANGS: [&str; 2] = ["de", "en"];
/// How long a Cancel stays in the index after the withdrawal.
const CANCEL_LISTED_DAYS: i64 = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    Alert,
    Update,
    Cancel,
}

impl MsgType {
    fn as_str(self) -> &'static str {
        match self {
            MsgType::Alert => "Alert",
            MsgType::Update => "Update",
            MsgType::Cancel => "Cancel",
        }
    }
}

/// What an alert is about.
#[derive(Clone, Debug)]
pub enum Subject<'a> {
    /// An announcement as it stood when the message was sent.
    Announcement(AnnouncementState),
    /// Every town where the service is at this level.
    Level { service: &'a Service, level: Level, towns: Vec<&'a Municipality> },
}

/// One CAP message.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub identifier: String,
    /// RFC 3339 as stored (UTC).
    pub sent: String,
    pub msg_type: MsgType,
    /// Earlier messages this one updates or cancels: (identifier, sent).
    pub references: Vec<(String, String)>,
    pub subject: Subject<'a>,
}

/// The one escape for text and attribute values: the five XML specials, and characters XML 1.0
/// cannot carry at all (control characters other than tab and line breaks, U+FFFE, U+FFFF)
/// dropped. `]]>` cannot end anything since `>` is escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if xml_char(c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether XML 1.0 can carry the character at all (Rust strings hold no surrogates).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || ((c as u32) >= 0x20 && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// A part of an identifier: only `a-z`, `0-9` and `-` (slugs and ids already are).
fn id_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// CAP's time format: an explicit offset, never `Z` (the schema's pattern).
pub fn cap_time(rfc3339: &str) -> String {
    let t = time::parse_rfc3339(rfc3339).unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

fn compact_time(rfc3339: &str) -> String {
    time::parse_rfc3339(rfc3339).unwrap_or_default().format("%Y%m%dT%H%M%S").to_string()
}

/// The sender: `notbetrieb@<host of the public URL>`, without spaces or commas.
pub fn sender(public_url: &str) -> String {
    let rest = public_url.split_once("://").map(|(_, r)| r).unwrap_or(public_url);
    let host = rest.split('/').next().unwrap_or("");
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')).collect();
    if host.is_empty() { "notbetrieb".into() } else { format!("notbetrieb@{host}") }
}

pub fn path(identifier: &str) -> String {
    format!("/cap/{identifier}.xml")
}

/// Every announcement's messages, one chain per publication, oldest message first.
pub fn announcement_chains(snap: &Snapshot) -> Vec<Vec<Message<'static>>> {
    use std::collections::HashMap;
    let mut open: HashMap<String, Vec<Message<'static>>> = HashMap::new();
    let mut closed: Vec<Vec<Message<'static>>> = Vec::new();
    let alert = |a: &AnnouncementState, published: &str| Message {
        identifier: format!("meldung.{}.{}", id_part(&a.id), compact_time(published)),
        sent: published.to_string(),
        msg_type: MsgType::Alert,
        references: Vec::new(),
        subject: Subject::Announcement(a.clone()),
    };
    let follow = |chain: &[Message<'static>], a: &AnnouncementState, seq: i64, at: &str, msg_type: MsgType| Message {
        identifier: format!("meldung.{}.{}{seq}", id_part(&a.id), if msg_type == MsgType::Cancel { "c" } else { "u" }),
        sent: at.to_string(),
        msg_type,
        references: chain.iter().map(|m| (m.identifier.clone(), m.sent.clone())).collect(),
        subject: Subject::Announcement(a.clone()),
    };
    for r in snap.data.announcement_history.iter() {
        match &r.event {
            Event::AnnouncementPublished { announcement: a, .. } => {
                if let Some(published) = &a.published_at {
                    if let Some(old) = open.remove(&a.id) {
                        closed.push(old);
                    }
                    open.insert(a.id.clone(), vec![alert(a, published)]);
                }
            }
            Event::AnnouncementCorrected { announcement: a } => {
                let chain = open.entry(a.id.clone()).or_default();
                match &a.published_at {
                    Some(published) => {
                        // Public since a scheduled time without an event of its own: start here.
                        if chain.is_empty() {
                            chain.push(alert(a, published));
                        } else {
                            let m = follow(chain, a, r.seq, &r.at, MsgType::Update);
                            chain.push(m);
                        }
                    }
                    None => {
                        if !chain.is_empty() {
                            let m = follow(chain, a, r.seq, &r.at, MsgType::Cancel);
                            chain.push(m);
                        }
                        if let Some(done) = open.remove(&a.id).filter(|c| !c.is_empty()) {
                            closed.push(done);
                        }
                    }
                }
            }
            Event::AnnouncementWithdrawn { announcement: a } => {
                let mut chain = open.remove(&a.id).unwrap_or_default();
                // A scheduled announcement that had become public had no event of its own.
                if chain.is_empty()
                    && let Some(published) = a.published_at.as_deref().filter(|p| *p <= r.at.as_str())
                {
                    chain.push(alert(a, published));
                }
                if !chain.is_empty() {
                    let m = follow(&chain, a, r.seq, &r.at, MsgType::Cancel);
                    chain.push(m);
                    closed.push(chain);
                }
            }
            _ => {}
        }
    }
    // The published announcements as the snapshot has them: their open chain if it belongs to
    // this publication, else a chain of its own (scheduled ones, data from before the journal).
    let mut chains = closed;
    for a in snap.published_announcements() {
        let published = a.published_at.clone().unwrap_or_default();
        match open.remove(&a.id) {
            Some(chain) if chain.first().is_some_and(|m| m.sent == published) => chains.push(chain),
            other => {
                chains.extend(other.filter(|c| !c.is_empty()));
                chains.push(vec![alert(&AnnouncementState { version: 0, ..AnnouncementState::of(a) }, &published)]);
            }
        }
    }
    // Chains still open whose announcement is no longer published are left out: they end in
    // a Cancel above whenever the announcement was withdrawn.
    chains
}

/// The level alerts: one per service and level other than normal, with its towns; all services,
/// or only `only`.
pub fn level_alerts<'a>(snap: &'a Snapshot, only: Option<&str>) -> Vec<Message<'a>> {
    let mut out = Vec::new();
    for s in snap.data.services.iter().filter(|s| only.is_none_or(|o| o == s.slug)) {
        let mut groups: Vec<(Level, Vec<&Municipality>, String)> = Vec::new();
        for m in snap.data.municipalities.iter() {
            let a = snap.availability(m, s);
            if a.level == Level::Normal {
                continue;
            }
            let stated = match a.statement {
                Some(st) => st.stated_at.clone(),
                None => snap.details(m, s, &a).stated_at,
            };
            let group = match groups.iter().position(|g| g.0 == a.level) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push((a.level, Vec::new(), String::new()));
                    groups.last_mut().expect("just pushed")
                }
            };
            group.1.push(m);
            if stated > group.2 {
                group.2 = stated;
            }
        }
        groups.sort_by_key(|g| g.0);
        for (level, mut towns, latest) in groups {
            towns.sort_by(|a, b| a.ags.cmp(&b.ags));
            // Not the snapshot's time: that changes with every write anywhere, and the group's
            // identifier with it.
            let sent = if latest.is_empty() { snap.changed_at_for_service(s) } else { latest };
            let mut h = sha2::Sha256::new();
            h.update(sent.as_bytes());
            for t in &towns {
                h.update(t.ags.as_bytes());
            }
            let hash = hex::encode(&h.finalize()[..6]);
            out.push(Message {
                identifier: format!("stufe.{}.{}.{hash}", id_part(&s.slug), level.as_str()),
                sent,
                msg_type: MsgType::Alert,
                references: Vec::new(),
                subject: Subject::Level { service: s, level, towns },
            });
        }
    }
    out
}

/// The alerts in the index: the latest message of every published announcement, recent
/// Cancels, and every level alert; newest first.
pub fn current(snap: &Snapshot) -> Vec<Message<'_>> {
    let cutoff = time::parse_rfc3339(&snap.built_at)
        .map(|t| time::format_rfc3339(t - chrono::Duration::days(CANCEL_LISTED_DAYS)))
        .unwrap_or_default();
    let mut out: Vec<Message> = announcement_chains(snap)
        .into_iter()
        .filter_map(|mut chain| chain.pop())
        .filter(|m| m.msg_type != MsgType::Cancel || m.sent >= cutoff)
        .collect();
    out.extend(level_alerts(snap, None));
    out.sort_by(|a, b| b.sent.cmp(&a.sent).then_with(|| a.identifier.cmp(&b.identifier)));
    out
}

/// Every message that has an address: all messages of all announcement chains (earlier ones
/// too, since later ones reference them) and the level alerts.
pub fn all(snap: &Snapshot) -> Vec<Message<'_>> {
    let mut out: Vec<Message> = announcement_chains(snap).into_iter().flatten().collect();
    out.extend(level_alerts(snap, None));
    out
}

/// The CAP files of one part of the site, path and content (for the static export): with the
/// area the index and every announcement's messages (a withdrawn one's too, which has no page of
/// its own), with a service its level alerts. Together over all parts: the index and [`all`].
pub fn files(snap: &Snapshot, public_url: &str, part: &Part) -> Vec<(String, String)> {
    let messages = match part {
        Part::Area => announcement_chains(snap).into_iter().flatten().collect(),
        Part::Service(slug) => level_alerts(snap, Some(slug)),
        _ => Vec::new(),
    };
    let index = (*part == Part::Area).then(|| ("/cap/index.atom".to_string(), index_atom(snap, public_url)));
    index.into_iter().chain(messages.iter().map(|m| (path(&m.identifier), alert_xml(snap, public_url, m)))).collect()
}

/// The message with this identifier, if there is one in this snapshot.
pub fn find<'a>(snap: &'a Snapshot, identifier: &str) -> Option<Message<'a>> {
    if let Some(rest) = identifier.strip_prefix("stufe.") {
        let service = rest.split('.').next()?;
        let slug = snap.data.services.iter().find(|s| id_part(&s.slug) == service)?.slug.clone();
        return level_alerts(snap, Some(&slug)).into_iter().find(|m| m.identifier == identifier);
    }
    if identifier.starts_with("meldung.") {
        return announcement_chains(snap).into_iter().flatten().find(|m| m.identifier == identifier);
    }
    None
}

/// The towns an announcement is about: its town, its district's towns, or every town for the
/// area and for a service.
fn towns_of<'a>(snap: &'a Snapshot, a: &AnnouncementState) -> Vec<&'a Municipality> {
    match a.scope {
        ScopeKind::Municipality => snap.municipality_by_ags(&a.scope_ref).into_iter().collect(),
        ScopeKind::District => snap.towns_of_district(&a.scope_ref).collect(),
        ScopeKind::Area | ScopeKind::Service => snap.data.municipalities.iter().collect(),
    }
}

fn element(out: &mut String, indent: &str, name: &str, value: &str) {
    let _ = writeln!(out, "{indent}<{name}>{}</{name}>", escape(value));
}

/// How bad a level is for a warning system: losing an administrative service is not a danger
/// to life; `Moderate` at most.
fn severity(level: Level) -> &'static str {
    match level {
        Level::Normal | Level::Limited => "Minor",
        Level::Emergency | Level::Unavailable => "Moderate",
    }
}

/// The alert as CAP 1.2 XML.
pub fn alert_xml(snap: &Snapshot, public_url: &str, m: &Message) -> String {
    let sender = sender(public_url);
    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n");
    element(&mut out, "  ", "identifier", &m.identifier);
    element(&mut out, "  ", "sender", &sender);
    element(&mut out, "  ", "sent", &cap_time(&m.sent));
    element(&mut out, "  ", "status", if snap.data.demo { "Exercise" } else { "Actual" });
    element(&mut out, "  ", "msgType", m.msg_type.as_str());
    element(&mut out, "  ", "scope", "Public");
    if !m.references.is_empty() {
        let refs: Vec<String> =
            m.references.iter().map(|(id, sent)| format!("{sender},{id},{}", cap_time(sent))).collect();
        element(&mut out, "  ", "references", &refs.join(" "));
    }
    for lang in INFO_LANGS.into_iter().filter(|l| i18n::is_language(l)) {
        let base = render::base(lang);
        out.push_str("  <info>\n");
        element(&mut out, "    ", "language", &i18n::t(lang, "cap.language"));
        element(&mut out, "    ", "category", "Infra");
        let (event, severity) = match &m.subject {
            Subject::Announcement(_) => (i18n::t(lang, "cap.event_announcement"), "Unknown"),
            Subject::Level { level, .. } => (i18n::t(lang, "cap.event_level"), severity(*level)),
        };
        element(&mut out, "    ", "event", &event);
        element(&mut out, "    ", "urgency", "Unknown");
        element(&mut out, "    ", "severity", severity);
        element(&mut out, "    ", "certainty", "Observed");
        element(&mut out, "    ", "senderName", &snap.data.provider_name);
        let towns = match &m.subject {
            Subject::Announcement(a) => {
                element(&mut out, "    ", "headline", &a.title);
                let mut description = a.body.clone();
                if m.msg_type == MsgType::Cancel {
                    description = format!("{}\n\n{description}", i18n::t(lang, "cap.withdrawn"));
                }
                element(&mut out, "    ", "description", &description);
                // A withdrawn announcement has no page any more: the list of announcements.
                let web = match m.msg_type {
                    MsgType::Cancel => format!("{public_url}{base}/meldungen"),
                    _ => format!("{public_url}{base}/meldungen/{}", a.id),
                };
                element(&mut out, "    ", "web", &web);
                towns_of(snap, a)
            }
            Subject::Level { service, level, towns } => {
                let level_name = i18n::t(lang, &format!("level.{}", level.as_str()));
                let args = [
                    ("service", service.name.clone()),
                    ("level", level_name),
                    ("count", towns.len().to_string()),
                    ("towns", towns.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")),
                ];
                element(&mut out, "    ", "headline", &i18n::tf(lang, "cap.level_headline", &args));
                element(&mut out, "    ", "description", &i18n::tf(lang, "cap.level_description", &args));
                element(&mut out, "    ", "web", &format!("{public_url}{base}/leistungen/{}", service.slug));
                for (name, value) in
                    [("notbetrieb:service", service.slug.as_str()), ("notbetrieb:level", level.as_str())]
                {
                    out.push_str("    <parameter>\n");
                    element(&mut out, "      ", "valueName", name);
                    element(&mut out, "      ", "value", value);
                    out.push_str("    </parameter>\n");
                }
                towns.clone()
            }
        };
        for t in towns {
            out.push_str("    <area>\n");
            element(&mut out, "      ", "areaDesc", &t.name);
            out.push_str("      <geocode>\n");
            element(&mut out, "        ", "valueName", "AGS");
            element(&mut out, "        ", "value", &t.ags);
            out.push_str("      </geocode>\n");
            out.push_str("    </area>\n");
        }
        out.push_str("  </info>\n");
    }
    out.push_str("</alert>\n");
    out
}

/// The German headline of a message, for the index.
fn headline(m: &Message) -> String {
    match &m.subject {
        Subject::Announcement(a) => a.title.clone(),
        Subject::Level { service, level, towns } => i18n::tf(
            i18n::DEFAULT_LANG,
            "cap.level_headline",
            &[
                ("service", service.name.clone()),
                ("level", i18n::t(i18n::DEFAULT_LANG, &format!("level.{}", level.as_str()))),
                ("count", towns.len().to_string()),
            ],
        ),
    }
}

/// Plain text without what XML cannot carry (the Atom writer escapes the rest).
fn clean(s: &str) -> String {
    s.chars().filter(|&c| xml_char(c)).collect()
}

/// The Atom feed of the current alerts, each entry linking to its CAP file.
pub fn index_atom(snap: &Snapshot, public_url: &str) -> String {
    use atom_syndication::{Entry, Feed, Link, Person, Text};
    let fixed = |s: &str| time::parse_rfc3339(s).unwrap_or_default().fixed_offset();
    let link = |href: String, rel: &str, mime: &str| {
        let mut l = Link::default();
        l.set_href(href);
        l.set_rel(rel);
        l.set_mime_type(Some(mime.to_string()));
        l
    };
    let alerts = current(snap);
    let mut f = Feed::default();
    f.set_id(format!("{public_url}/cap/index.atom"));
    let title = i18n::tf(i18n::DEFAULT_LANG, "cap.feed_title", &[("area", snap.data.area_name.clone())]);
    f.set_title(Text::plain(clean(&title)));
    f.set_lang(Some(i18n::language(i18n::DEFAULT_LANG).tag.clone()));
    f.set_updated(fixed(alerts.iter().map(|m| m.sent.as_str()).max().unwrap_or(snap.changed_at.as_str())));
    f.set_links(vec![link(format!("{public_url}/cap/index.atom"), "self", "application/atom+xml")]);
    let mut author = Person::default();
    author.set_name(clean(&snap.data.provider_name));
    f.set_authors(vec![author]);
    let entries: Vec<Entry> = alerts
        .iter()
        .map(|m| {
            let url = format!("{public_url}{}", path(&m.identifier));
            let mut e = Entry::default();
            e.set_id(url.clone());
            e.set_title(Text::plain(clean(&headline(m))));
            e.set_updated(fixed(&m.sent));
            e.set_summary(Some(Text::plain(m.msg_type.as_str().to_string())));
            e.set_links(vec![link(url, "alternate", "application/cap+xml")]);
            e
        })
        .collect();
    f.set_entries(entries);
    f.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::Recorded;
    use crate::domain::*;

    fn town(ags: &str, district: &str, name: &str) -> Municipality {
        Municipality {
            ags: ags.into(),
            slug: format!("t{ags}"),
            name: name.into(),
            district_ags: district.into(),
            member: true,
            population: None,
            lat: 50.0,
            lon: 8.0,
            contact: Contact::default(),
        }
    }

    fn state(id: &str, scope: ScopeKind, scope_ref: &str, title: &str, published: Option<&str>) -> AnnouncementState {
        AnnouncementState {
            id: id.into(),
            scope,
            scope_ref: scope_ref.into(),
            lang: "de".into(),
            title: title.into(),
            body: "Text".into(),
            published_at: published.map(str::to_string),
            version: 1,
        }
    }

    fn announcement(s: &AnnouncementState) -> Announcement {
        Announcement {
            id: s.id.clone(),
            scope_kind: s.scope.clone(),
            scope_ref: s.scope_ref.clone(),
            lang: s.lang.clone(),
            title: s.title.clone(),
            body: s.body.clone(),
            author: String::new(),
            published_at: s.published_at.clone(),
            updated_at: "2026-01-02T00:00:00Z".into(),
            version: s.version,
        }
    }

    fn snapshot(announcements: Vec<Announcement>, history: Vec<Recorded>, demo: bool) -> Snapshot {
        let data = Dataset {
            area_name: "Testkreis".into(),
            provider_name: "Test-IT".into(),
            demo,
            districts: std::sync::Arc::new(vec![District {
                ags: "05962".into(),
                slug: "mk".into(),
                name: "Märkischer Kreis".into(),
                member: true,
                lat: None,
                lon: None,
                contact: Contact::default(),
            }]),
            municipalities: std::sync::Arc::new(vec![
                town("05962040", "05962", "Menden"),
                town("05962004", "05962", "Altena"),
                town("05958004", "05958", "Arnsberg"),
            ]),
            services: std::sync::Arc::new(vec![Service {
                slug: "kfz".into(),
                name: "Kfz-Zulassung".into(),
                area: "vehicle".into(),
                responsibility: Responsibility::District,
                leika_key: String::new(),
                synonyms: vec![],
                description: String::new(),
                sort_order: 0,
            }]),
            statements: vec![Statement {
                scope_ags: "05962".into(),
                service_slug: "kfz".into(),
                level: Level::Emergency,
                restrictions: String::new(),
                workaround: String::new(),
                backlog: String::new(),
                expected_return: String::new(),
                author: String::new(),
                stated_at: "2026-01-01T08:00:00Z".into(),
                version: 1,
                review_on: String::new(),
            }],
            announcements,
            announcement_history: std::sync::Arc::new(history),
            ..Dataset::default()
        };
        Snapshot::build(data, "2026-01-01T00:00:00Z".into(), 1)
    }

    const URL: &str = "https://status.example.org";

    #[test]
    fn escape_covers_markup_and_drops_what_xml_cannot_carry() {
        assert_eq!(escape("<script>&\"'</script>"), "&lt;script&gt;&amp;&quot;&apos;&lt;/script&gt;");
        assert_eq!(escape("a]]>b"), "a]]&gt;b");
        assert_eq!(escape("x\u{1}\u{8}\u{1b}y\u{FFFF}\tz\n"), "xy\tz\n");
    }

    #[test]
    fn sent_has_an_explicit_offset_and_the_sender_no_spaces() {
        assert_eq!(cap_time("2026-03-01T10:20:30Z"), "2026-03-01T10:20:30+00:00");
        assert_eq!(sender("https://status.example.org/x"), "notbetrieb@status.example.org");
        assert_eq!(sender("http://127.0.0.1:8080"), "notbetrieb@127.0.0.1:8080");
    }

    #[test]
    fn a_correction_is_an_update_and_a_withdrawal_a_cancel_referencing_all_earlier_messages() {
        let published = "2026-01-01T09:00:00Z";
        let a1 = state("kfz-aus-abc", ScopeKind::District, "05962", "Zulassung geschlossen", Some(published));
        let mut a2 = a1.clone();
        a2.title = "Zulassung geschlossen (korrigiert)".into();
        let history = vec![
            Recorded {
                seq: 10,
                at: published.into(),
                event: Event::AnnouncementPublished { announcement: a1.clone(), created: true },
            },
            Recorded {
                seq: 12,
                at: "2026-01-01T10:00:00Z".into(),
                event: Event::AnnouncementCorrected { announcement: a2.clone() },
            },
        ];
        let snap = snapshot(vec![announcement(&a2)], history.clone(), false);
        let chains = announcement_chains(&snap);
        assert_eq!(chains.len(), 1);
        let ids: Vec<_> = chains[0].iter().map(|m| (m.identifier.as_str(), m.msg_type)).collect();
        assert_eq!(
            ids,
            [("meldung.kfz-aus-abc.20260101T090000", MsgType::Alert), ("meldung.kfz-aus-abc.u12", MsgType::Update)]
        );
        let update = alert_xml(&snap, URL, &chains[0][1]);
        assert!(update.contains(
            "<references>notbetrieb@status.example.org,meldung.kfz-aus-abc.20260101T090000,2026-01-01T09:00:00+00:00</references>"
        ));
        assert!(update.contains("<headline>Zulassung geschlossen (korrigiert)</headline>"));
        assert!(update.contains("<status>Actual</status>"));
        // The district's announcement lists its two towns, not Arnsberg.
        assert_eq!(update.matches("<areaDesc>").count(), 4, "two towns in each of two info blocks");
        assert!(update.contains("<value>05962040</value>") && !update.contains("05958004"));
        assert!(update.contains("<language>de-DE</language>") && update.contains("<language>en-US</language>"));
        assert!(update.contains("<web>https://status.example.org/en/meldungen/kfz-aus-abc</web>"));

        // Withdrawn: gone from the snapshot's announcements, its Cancel still there.
        let mut history = history;
        history.push(Recorded {
            seq: 15,
            at: "2026-01-01T11:00:00Z".into(),
            event: Event::AnnouncementWithdrawn { announcement: a2 },
        });
        let snap = snapshot(vec![], history, true);
        let chains = announcement_chains(&snap);
        let cancel = chains[0].last().unwrap();
        assert_eq!((cancel.identifier.as_str(), cancel.msg_type), ("meldung.kfz-aus-abc.c15", MsgType::Cancel));
        assert_eq!(cancel.references.len(), 2);
        let xml = alert_xml(&snap, URL, cancel);
        assert!(xml.contains("<msgType>Cancel</msgType>") && xml.contains("<status>Exercise</status>"));
        assert!(find(&snap, "meldung.kfz-aus-abc.c15").is_some());
        assert!(find(&snap, "meldung.kfz-aus-abc.20260101T090000").is_some(), "earlier messages keep their address");
    }

    #[test]
    fn a_level_alert_groups_the_towns_of_a_service_and_level_with_a_stable_identifier() {
        let snap = snapshot(vec![], vec![], false);
        let alerts = level_alerts(&snap, None);
        assert_eq!(alerts.len(), 1);
        let m = &alerts[0];
        assert!(m.identifier.starts_with("stufe.kfz.emergency."), "{}", m.identifier);
        let Subject::Level { towns, .. } = &m.subject else { panic!() };
        let ags: Vec<_> = towns.iter().map(|t| t.ags.as_str()).collect();
        assert_eq!(ags, ["05962004", "05962040"], "the district's statement applies to its towns");
        assert_eq!(level_alerts(&snapshot(vec![], vec![], false), None)[0].identifier, m.identifier, "stable");
        assert_eq!(find(&snap, &m.identifier).map(|f| f.identifier), Some(m.identifier.clone()));
        let xml = alert_xml(&snap, URL, m);
        assert!(xml.contains("<severity>Moderate</severity>") && xml.contains("<value>emergency</value>"));
        assert!(xml.contains("<sent>2026-01-01T08:00:00+00:00</sent>"));
        let mut data = snap.data.clone();
        data.statements[0].stated_at = "2026-01-01T09:00:00Z".into();
        let later = Snapshot::build(data, String::new(), 2);
        assert_ne!(level_alerts(&later, None)[0].identifier, m.identifier, "a changed group is a new message");
    }

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let published = "2026-01-01T09:00:00Z";
        let mut a = state("x", ScopeKind::Municipality, "05962040", "<script>alert(1)</script> & ]]>", Some(published));
        a.body = "<![CDATA[ x ]]> \u{1} &amp; <b>".into();
        let snap = snapshot(vec![announcement(&a)], vec![], false);
        let m = current(&snap).into_iter().find(|m| m.identifier.starts_with("meldung.")).unwrap();
        let xml = alert_xml(&snap, URL, &m);
        assert!(!xml.contains("<script>") && !xml.contains("<b>") && !xml.contains("]]>") && !xml.contains('\u{1}'));
        assert!(xml.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; ]]&gt;"));
        let atom = index_atom(&snap, URL);
        assert!(!atom.contains("<script>") && atom.contains(&format!("{URL}/cap/{}.xml", m.identifier)));
    }

    #[test]
    fn back_to_draft_cancels_a_republication_is_a_new_alert_and_a_scheduled_one_needs_no_event() {
        let first = "2026-01-01T09:00:00Z";
        let again = "2026-01-03T09:00:00Z";
        let a = state("a", ScopeKind::Area, "", "A", Some(first));
        let draft = state("a", ScopeKind::Area, "", "A", None);
        let republished = state("a", ScopeKind::Area, "", "A wieder", Some(again));
        let scheduled = state("s", ScopeKind::Area, "", "Geplant", Some("2026-01-02T00:00:00Z"));
        let history = vec![
            Recorded {
                seq: 1,
                at: first.into(),
                event: Event::AnnouncementPublished { announcement: a, created: true },
            },
            Recorded {
                seq: 2,
                at: "2026-01-02T09:00:00Z".into(),
                event: Event::AnnouncementCorrected { announcement: draft },
            },
            Recorded {
                seq: 3,
                at: again.into(),
                event: Event::AnnouncementPublished { announcement: republished.clone(), created: false },
            },
        ];
        let snap = snapshot(vec![announcement(&republished), announcement(&scheduled)], history, false);
        let ids: Vec<Vec<(String, MsgType)>> = announcement_chains(&snap)
            .into_iter()
            .map(|c| c.into_iter().map(|m| (m.identifier, m.msg_type)).collect())
            .collect();
        let ids: Vec<Vec<(&str, MsgType)>> =
            ids.iter().map(|c| c.iter().map(|(i, t)| (i.as_str(), *t)).collect()).collect();
        assert_eq!(
            ids,
            [
                vec![("meldung.a.20260101T090000", MsgType::Alert), ("meldung.a.c2", MsgType::Cancel)],
                vec![("meldung.a.20260103T090000", MsgType::Alert)],
                vec![("meldung.s.20260102T000000", MsgType::Alert)],
            ]
        );
        let files: Vec<(String, String)> =
            crate::site::paths::parts(&snap).flat_map(|part| files(&snap, URL, &part)).collect();
        let written: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(written[0], "/cap/index.atom");
        assert_eq!(written.len(), 1 + all(&snap).len(), "the index and every message");
        assert!(written.iter().all(|p| *p == "/cap/index.atom" || find(&snap, &p[5..p.len() - 4]).is_some()));
    }
}
