//! What happened, in domain words: the typed events every write produces.
//!
//! This module is the contract between the writes and everything that reacts to them later: the
//! journal (whose payload IS the event), the coming outbox (e-mail and webhook notifications) and
//! the incremental static export. It is pure: no I/O, only domain types.
//!
//! # Storage
//!
//! Each event is one journal entry, written in the write's own transaction (see
//! `journal::append_event`): the entry's `kind` is [`Event::kind`], its `scope` is
//! [`Event::scope`] and its `payload` is the event serialised as JSON, `{"type": "...", ...}`.
//! One entry per event, not one entry per write, because the journal's filters (kind, scope,
//! author), the editors' scoped view of the journal and the desk's journal page all work per
//! entry: a bulk status change for ten towns is ten entries, each visible to that town's editor.
//! A consumer reads them back in order with `journal::events_since(c, seq)`; the journal's `seq`
//! is the position in the stream, its `at` the time and its `author` who did it, so the events
//! themselves do not repeat them.
//!
//! # Compatibility
//!
//! Entries written before typed events have an untyped payload without `"type"`; they keep their
//! bytes and hashes forever (the chain verifies on the stored text, whatever its format), and
//! `events_since` skips them. Where an old payload had a field, the event keeps its name
//! (`service`, `level`, `version`, `procedure`, `evidence` …), so readers of the journal's JSON
//! see the same keys as before plus `type` and the new ones (`from`, `scope` …).
//!
//! Adding a variant is compatible; renaming a variant or a field is not (stored events are read
//! back by later versions).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::recovery::{Procedure, Rollout, Stage};
use crate::domain::{Announcement, Contact, FaqEntry, Level, Office, Referral, ScopeKind};

/// A statement's content as the public sees it (who said it and when are the journal entry's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stated {
    pub level: Level,
    #[serde(default)]
    pub restrictions: String,
    #[serde(default)]
    pub workaround: String,
    #[serde(default)]
    pub backlog: String,
    /// Expected return to normal operation, `YYYY-MM-DD`, or empty.
    #[serde(default)]
    pub expected_return: String,
    /// The statement's version after this change (1 for the first statement).
    pub version: i64,
}

impl Stated {
    pub fn of(s: &crate::domain::Statement) -> Stated {
        Stated {
            level: s.level,
            restrictions: s.restrictions.clone(),
            workaround: s.workaround.clone(),
            backlog: s.backlog.clone(),
            expected_return: s.expected_return.clone(),
            version: s.version,
        }
    }
}

/// An announcement as it stands after the change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnnouncementState {
    pub id: String,
    /// Who it is about: `area`, `district`, `municipality` or `service` …
    pub scope: ScopeKind,
    /// … and which one: the AGS, the service slug, or empty for the area.
    pub scope_ref: String,
    pub lang: String,
    pub title: String,
    /// Markdown.
    pub body: String,
    /// `None` for a draft; a time in the future for a scheduled one.
    pub published_at: Option<String>,
    pub version: i64,
}

impl AnnouncementState {
    pub fn of(a: &Announcement) -> AnnouncementState {
        AnnouncementState {
            id: a.id.clone(),
            scope: a.scope_kind.clone(),
            scope_ref: a.scope_ref.clone(),
            lang: a.lang.clone(),
            title: a.title.clone(),
            body: a.body.clone(),
            published_at: a.published_at.clone(),
            version: a.version,
        }
    }
}

/// New and replaced rows of one kind in an import.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCount {
    pub new: usize,
    pub updated: usize,
}

/// The kinds of event other systems can be sent by webhook (`notify::webhooks`).
pub const WEBHOOK_EVENTS: [&str; 4] =
    ["availability.changed", "announcement.published", "announcement.corrected", "announcement.withdrawn"];

/// What happened. Serialised as `{"type": "statement_changed", ...}`; the journal entry around it
/// holds its sequence number, time and author.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A town (8-digit AGS) or district (5-digit AGS) stated the availability of a service.
    /// `from` is the statement it replaced (`None`: there was none, the availability was derived
    /// from the rollout or unreported). Notifications: "service S in A changed from
    /// `from.level` to `level`, expected back on `expected_return`".
    StatementChanged {
        scope: String,
        service: String,
        #[serde(flatten)]
        to: Stated,
        from: Option<Stated>,
    },
    /// A statement was withdrawn: the availability falls back to the district's statement, the
    /// rollout, or "no report". `from` is what was withdrawn.
    StatementWithdrawn { scope: String, service: String, version: i64, from: Option<Stated> },

    /// An announcement went public (created or edited from a draft, publication time now or past).
    AnnouncementPublished {
        #[serde(flatten)]
        announcement: AnnouncementState,
        /// Whether the announcement was created by this change.
        created: bool,
    },
    /// An announcement was saved for publication at `published_at` in the future.
    AnnouncementScheduled {
        #[serde(flatten)]
        announcement: AnnouncementState,
        created: bool,
    },
    /// An announcement was saved as a draft (not public).
    AnnouncementDrafted {
        #[serde(flatten)]
        announcement: AnnouncementState,
        created: bool,
    },
    /// An announcement that was already public was edited: a correction ("updated on …"). If its
    /// `published_at` is now `None`, it was taken back to draft.
    AnnouncementCorrected {
        #[serde(flatten)]
        announcement: AnnouncementState,
    },
    /// An announcement was taken off the public pages; this is what it said.
    AnnouncementWithdrawn {
        #[serde(flatten)]
        announcement: AnnouncementState,
    },

    /// An FAQ entry was created or changed.
    FaqChanged { entry: FaqEntry, version: i64, created: bool },
    /// A town's (8 digits) or district's (5 digits) contact channels were set.
    ContactsChanged { ags: String, contact: Contact, version: i64 },
    /// An office was created or changed (its owner's pages and the towns referred to it show it).
    OfficeSaved { office: Office, created: bool },
    /// An office accepts a service from residents of `for_ags` (created or replaced).
    ReferralChanged {
        #[serde(flatten)]
        referral: Referral,
        created: bool,
    },
    /// A referral was removed.
    ReferralDeleted { id: String, for_ags: String, office_slug: String, service_slug: String },

    /// A procedure's description (not its stage) was created or changed; `services` are the
    /// services that need it.
    ProcedureSaved { procedure: Procedure, services: Vec<String>, created: bool },
    /// A procedure moved through a gate. `because_of` names the dependency whose step back
    /// pulled this one back with it (`None`: stepped itself).
    ProcedureStepped {
        procedure: String,
        from: Stage,
        to: Stage,
        evidence: String,
        #[serde(default)]
        because_of: Option<String>,
    },
    /// A procedure was rolled out (or back) in one town.
    RolloutChanged {
        procedure: String,
        municipality: String,
        from: Rollout,
        to: Rollout,
        /// When the operators expect the next step there (YYYY-MM-DD or empty).
        expected_date: String,
    },
    /// A town's rollout fell back because its procedure stepped back.
    RolloutPulledBack { procedure: String, municipality: String, from: Rollout, to: Rollout },

    /// Places or catalogue (districts, towns, postal codes, services, offices, referrals, FAQ,
    /// procedures' baseline) were loaded in bulk, by `notbetrieb import` or the demo.
    /// Statements that an import changes are journaled as `StatementChanged` each.
    ImportApplied {
        /// The file names, or `demo:<name>`.
        source: Vec<String>,
        /// Per kind of row (`districts`, `municipalities`, …).
        counts: BTreeMap<String, ImportCount>,
    },
    /// A built-in demo was seeded; these are its accounts.
    DemoSeeded { demo: String, accounts: Vec<String> },

    /// An account was created.
    UserCreated { username: String, role: String, scopes: Vec<String> },
    /// An account's role, scope or disabled flag was changed.
    UserChanged { username: String, role: String, scopes: Vec<String>, disabled: bool },
    /// An account was reset (new setup link; password and second factor cleared).
    UserReset { username: String },
    /// An account finished its setup (password and second factor).
    UserSetUp { username: String, second_factor: String, recovery_codes: usize },
    /// A user ended all their sessions.
    UserSignedOutEverywhere { username: String },
    /// An API token was created for `owner`.
    TokenCreated { owner: String, id: i64, name: String, role: String, scopes: Vec<String> },
    /// An API token of `owner` was revoked.
    TokenRevoked { owner: String, id: i64 },
    /// Too many failed sign-ins: the account is locked for a while.
    LoginLocked { username: String, address: String },
    /// Too many failed sign-ins from one address: it is refused for a while.
    LoginAddressBlocked { username: String, address: String },
}

/// An event with its place in the journal: the announcements' history as the snapshot keeps it,
/// so the CAP alerts can say what an update corrects and publish a withdrawal (`site::cap`).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub seq: i64,
    /// The journal entry's time (RFC 3339, UTC).
    pub at: String,
    pub event: Event,
}

/// What part of the public site an event may change; the export turns these into paths
/// (`site` knows the URLs, this module does not).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "part", content = "key", rename_all = "snake_case")]
pub enum Touch {
    /// Area-wide pages: home, overview, area feeds, the JSON API's lists.
    Area,
    /// A town's pages (8-digit AGS), including each of its service pages.
    Municipality(String),
    /// A district's pages (5-digit AGS) and, through it, every town of the district.
    District(String),
    /// A service's catalogue page across towns.
    Service(String),
    /// One announcement's page (and the lists that show it, by its scope).
    Announcement(String),
    /// The FAQ pages.
    Faq,
    /// Every town's pages (an area-wide announcement, a recovery stage that changes the derived
    /// availability everywhere) and the district pages that sum them up, but not the catalogue.
    AllTowns,
    /// The public recovery overview and the catalogue pages of every service that needs this
    /// procedure.
    Procedure(String),
    /// Towns or catalogue changed in bulk: everything.
    Everything,
}

fn place(ags: &str) -> Touch {
    if ags.len() == 5 { Touch::District(ags.to_string()) } else { Touch::Municipality(ags.to_string()) }
}

fn announcement_touches(a: &AnnouncementState) -> Vec<Touch> {
    let mut out = vec![Touch::Area, Touch::Announcement(a.id.clone())];
    match a.scope {
        // Every town page shows the area's announcements.
        ScopeKind::Area => out.push(Touch::AllTowns),
        ScopeKind::District | ScopeKind::Municipality => out.push(place(&a.scope_ref)),
        ScopeKind::Service => out.push(Touch::Service(a.scope_ref.clone())),
    }
    out
}

/// The journal scope of an announcement or FAQ entry, as it has always been written.
pub fn content_scope(kind: &ScopeKind, scope_ref: &str) -> String {
    match kind {
        ScopeKind::Area => "area".into(),
        ScopeKind::Service => format!("service:{scope_ref}"),
        _ => scope_ref.to_string(),
    }
}

impl Event {
    /// The journal entry's `kind`: the same dotted strings the journal has always used, so that
    /// filters (`?kind=statement`) and the desk's journal view keep working.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::StatementChanged { .. } => "statement.set",
            Event::StatementWithdrawn { .. } => "statement.withdraw",
            Event::AnnouncementPublished { created: true, .. }
            | Event::AnnouncementScheduled { created: true, .. }
            | Event::AnnouncementDrafted { created: true, .. } => "announcement.create",
            Event::AnnouncementPublished { .. }
            | Event::AnnouncementScheduled { .. }
            | Event::AnnouncementDrafted { .. } => "announcement.update",
            Event::AnnouncementCorrected { .. } => "announcement.correct",
            Event::AnnouncementWithdrawn { .. } => "announcement.withdraw",
            Event::FaqChanged { .. } => "faq.save",
            Event::ContactsChanged { .. } => "contact.set",
            Event::OfficeSaved { .. } => "office.save",
            Event::ReferralChanged { .. } => "referral.save",
            Event::ReferralDeleted { .. } => "referral.delete",
            Event::ProcedureSaved { .. } => "procedure.save",
            Event::ProcedureStepped { .. } => "procedure.step",
            Event::RolloutChanged { .. } => "rollout.set",
            Event::RolloutPulledBack { .. } => "rollout.pulled_back",
            Event::ImportApplied { .. } => "import.apply",
            Event::DemoSeeded { .. } => "demo.seed",
            Event::UserCreated { .. } => "user.create",
            Event::UserChanged { .. } => "user.update",
            Event::UserReset { .. } => "user.reset",
            Event::UserSetUp { .. } => "user.setup",
            Event::UserSignedOutEverywhere { .. } => "user.sign_out_everywhere",
            Event::TokenCreated { .. } => "token.create",
            Event::TokenRevoked { .. } => "token.revoke",
            Event::LoginLocked { .. } => "login.locked",
            Event::LoginAddressBlocked { .. } => "login.address_blocked",
        }
    }

    /// The journal entry's `scope`: whose data it concerns. An AGS for a town or district,
    /// `area`, `service:<slug>`, or `user:<name>` for accounts; editors see the entries of their
    /// own AGS.
    pub fn scope(&self) -> String {
        match self {
            Event::StatementChanged { scope, .. } | Event::StatementWithdrawn { scope, .. } => scope.clone(),
            Event::AnnouncementPublished { announcement: a, .. }
            | Event::AnnouncementScheduled { announcement: a, .. }
            | Event::AnnouncementDrafted { announcement: a, .. }
            | Event::AnnouncementCorrected { announcement: a }
            | Event::AnnouncementWithdrawn { announcement: a } => content_scope(&a.scope, &a.scope_ref),
            Event::FaqChanged { entry, .. } => content_scope(&entry.scope_kind, &entry.scope_ref),
            Event::ContactsChanged { ags, .. } => ags.clone(),
            Event::OfficeSaved { office, .. } => office.owner_ags.clone(),
            Event::ReferralChanged { referral, .. } => referral.for_ags.clone(),
            Event::ReferralDeleted { for_ags, .. } => for_ags.clone(),
            Event::ProcedureSaved { .. }
            | Event::ProcedureStepped { .. }
            | Event::ImportApplied { .. }
            | Event::DemoSeeded { .. } => "area".into(),
            Event::RolloutChanged { municipality, .. } | Event::RolloutPulledBack { municipality, .. } => {
                municipality.clone()
            }
            Event::UserCreated { username, .. }
            | Event::UserChanged { username, .. }
            | Event::UserReset { username }
            | Event::UserSetUp { username, .. }
            | Event::UserSignedOutEverywhere { username }
            | Event::LoginLocked { username, .. }
            | Event::LoginAddressBlocked { username, .. } => format!("user:{username}"),
            Event::TokenCreated { owner, .. } | Event::TokenRevoked { owner, .. } => format!("user:{owner}"),
        }
    }

    /// What of the public site this event may change (empty: nothing public, e.g. accounts).
    /// Drafts touch nothing public; a scheduled announcement touches its pages when it is due,
    /// which is the export's to schedule.
    pub fn touches(&self) -> Vec<Touch> {
        match self {
            Event::StatementChanged { scope, service, .. } | Event::StatementWithdrawn { scope, service, .. } => {
                vec![Touch::Area, place(scope), Touch::Service(service.clone())]
            }
            Event::AnnouncementPublished { announcement: a, .. }
            | Event::AnnouncementScheduled { announcement: a, .. }
            | Event::AnnouncementCorrected { announcement: a }
            | Event::AnnouncementWithdrawn { announcement: a } => announcement_touches(a),
            Event::AnnouncementDrafted { .. } => Vec::new(),
            Event::FaqChanged { entry, .. } => {
                let mut out = vec![Touch::Faq];
                match entry.scope_kind {
                    ScopeKind::Area => {}
                    ScopeKind::District | ScopeKind::Municipality => out.push(place(&entry.scope_ref)),
                    ScopeKind::Service => out.push(Touch::Service(entry.scope_ref.clone())),
                }
                out
            }
            Event::ContactsChanged { ags, .. } => vec![place(ags)],
            Event::OfficeSaved { office, .. } => vec![Touch::Area, place(&office.owner_ags)],
            Event::ReferralChanged { referral: r, .. } => {
                vec![place(&r.for_ags), Touch::Service(r.service_slug.clone())]
            }
            Event::ReferralDeleted { for_ags, service_slug, .. } => {
                vec![place(for_ags), Touch::Service(service_slug.clone())]
            }
            // What a procedure needs and where it stands decide the derived availability in
            // every town with a rollout of it.
            Event::ProcedureSaved { procedure, .. } => {
                vec![Touch::Area, Touch::AllTowns, Touch::Procedure(procedure.slug.clone())]
            }
            Event::ProcedureStepped { procedure, .. } => {
                vec![Touch::Area, Touch::AllTowns, Touch::Procedure(procedure.clone())]
            }
            Event::RolloutChanged { procedure, municipality, .. }
            | Event::RolloutPulledBack { procedure, municipality, .. } => {
                vec![Touch::Procedure(procedure.clone()), Touch::Municipality(municipality.clone())]
            }
            Event::ImportApplied { .. } | Event::DemoSeeded { .. } => vec![Touch::Everything],
            Event::UserCreated { .. }
            | Event::UserChanged { .. }
            | Event::UserReset { .. }
            | Event::UserSetUp { .. }
            | Event::UserSignedOutEverywhere { .. }
            | Event::TokenCreated { .. }
            | Event::TokenRevoked { .. }
            | Event::LoginLocked { .. }
            | Event::LoginAddressBlocked { .. } => Vec::new(),
        }
    }

    /// The payload text stored (and hashed) in the journal.
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).expect("events serialise")
    }

    /// Reads a journal payload back; `None` for entries written before typed events.
    pub fn from_payload(payload: &str) -> Option<Event> {
        let value: serde_json::Value = serde_json::from_str(payload).ok()?;
        value.get("type")?;
        serde_json::from_value(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stated(level: Level, version: i64) -> Stated {
        Stated {
            level,
            restrictions: "Nur mit Termin".into(),
            workaround: String::new(),
            backlog: "2 Wochen".into(),
            expected_return: "2026-12-24".into(),
            version,
        }
    }

    fn announcement(scope: ScopeKind, scope_ref: &str, published_at: Option<&str>) -> AnnouncementState {
        AnnouncementState {
            id: "a-1".into(),
            scope,
            scope_ref: scope_ref.into(),
            lang: "de".into(),
            title: "T".into(),
            body: "B".into(),
            published_at: published_at.map(str::to_string),
            version: 2,
        }
    }

    fn samples() -> Vec<Event> {
        let procedure = Procedure {
            slug: "kfz".into(),
            name: "Kfz".into(),
            kind: "procedure".into(),
            area: String::new(),
            priority: 1,
            stage: Stage::Down,
            stage_since: "2026-12-01T00:00:00Z".into(),
            missing_functions: vec![],
            offered_functions: vec![],
            expected_release: String::new(),
            expected_normal: String::new(),
            depends_on: vec!["netz".into()],
            version: 1,
        };
        vec![
            Event::StatementChanged {
                scope: "05962040".into(),
                service: "wohngeld".into(),
                to: stated(Level::Limited, 2),
                from: Some(stated(Level::Unavailable, 1)),
            },
            Event::StatementChanged {
                scope: "05962".into(),
                service: "fahrzeug-zulassen".into(),
                to: stated(Level::Emergency, 1),
                from: None,
            },
            Event::StatementWithdrawn {
                scope: "05962040".into(),
                service: "wohngeld".into(),
                version: 2,
                from: Some(stated(Level::Limited, 2)),
            },
            Event::AnnouncementPublished {
                announcement: announcement(ScopeKind::Area, "", Some("2026-12-01T00:00:00Z")),
                created: true,
            },
            Event::AnnouncementScheduled {
                announcement: announcement(ScopeKind::Service, "wohngeld", Some("2099-01-01T00:00:00Z")),
                created: false,
            },
            Event::AnnouncementDrafted {
                announcement: announcement(ScopeKind::Municipality, "05962040", None),
                created: true,
            },
            Event::AnnouncementCorrected { announcement: announcement(ScopeKind::District, "05962", None) },
            Event::AnnouncementWithdrawn {
                announcement: announcement(ScopeKind::Area, "", Some("2026-12-01T00:00:00Z")),
            },
            Event::FaqChanged {
                entry: FaqEntry {
                    id: "f".into(),
                    scope_kind: ScopeKind::Area,
                    scope_ref: String::new(),
                    lang: "de".into(),
                    question: "Q".into(),
                    answer: "A".into(),
                    sort_order: 0,
                    published_at: None,
                    updated_at: "2026-12-01T00:00:00Z".into(),
                },
                version: 1,
                created: true,
            },
            Event::ContactsChanged { ags: "05962040".into(), contact: Contact::default(), version: 3 },
            Event::ReferralChanged {
                referral: Referral {
                    id: "r".into(),
                    office_slug: "o".into(),
                    service_slug: "s".into(),
                    for_ags: "05962".into(),
                    conditions: String::new(),
                    valid_from: String::new(),
                    valid_until: String::new(),
                },
                created: true,
            },
            Event::ReferralDeleted {
                id: "r".into(),
                for_ags: "05962".into(),
                office_slug: "o".into(),
                service_slug: "s".into(),
            },
            Event::ProcedureSaved { procedure, services: vec!["wohngeld".into()], created: true },
            Event::ProcedureStepped {
                procedure: "kfz".into(),
                from: Stage::Hardened,
                to: Stage::Released,
                evidence: "ok".into(),
                because_of: None,
            },
            Event::RolloutChanged {
                procedure: "kfz".into(),
                municipality: "05962040".into(),
                from: Rollout::NotStarted,
                to: Rollout::Pilot,
                expected_date: "2026-12-24".into(),
            },
            Event::RolloutPulledBack {
                procedure: "kfz".into(),
                municipality: "05962040".into(),
                from: Rollout::Basic,
                to: Rollout::NotStarted,
            },
            Event::ImportApplied {
                source: vec!["towns.csv".into()],
                counts: BTreeMap::from([("municipalities".to_string(), ImportCount { new: 3, updated: 1 })]),
            },
            Event::DemoSeeded { demo: "suedwestfalen".into(), accounts: vec!["admin".into()] },
            Event::UserCreated { username: "anna".into(), role: "editor".into(), scopes: vec!["05962040".into()] },
            Event::UserChanged { username: "anna".into(), role: "viewer".into(), scopes: vec![], disabled: true },
            Event::UserReset { username: "anna".into() },
            Event::UserSetUp { username: "anna".into(), second_factor: "totp".into(), recovery_codes: 10 },
            Event::UserSignedOutEverywhere { username: "anna".into() },
            Event::TokenCreated {
                owner: "anna".into(),
                id: 4,
                name: "t".into(),
                role: "editor".into(),
                scopes: vec![],
            },
            Event::TokenRevoked { owner: "anna".into(), id: 4 },
            Event::LoginLocked { username: "anna".into(), address: "127.0.0.1".into() },
            Event::LoginAddressBlocked { username: "anna".into(), address: "127.0.0.1".into() },
        ]
    }

    #[test]
    fn every_event_survives_a_round_trip_through_its_payload() {
        for e in samples() {
            let text = e.to_payload();
            let back = Event::from_payload(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(back.to_payload(), text);
            assert_eq!((back.kind(), back.scope()), (e.kind(), e.scope()));
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(value["type"].is_string(), "{text}");
        }
    }

    #[test]
    fn payloads_are_tagged_and_keep_the_old_field_names() {
        let e = &samples()[0];
        let v: serde_json::Value = serde_json::from_str(&e.to_payload()).unwrap();
        assert_eq!(v["type"], "statement_changed");
        // The fields the untyped payload had stay where they were.
        assert_eq!(
            (v["service"].as_str(), v["level"].as_str(), v["version"].as_i64()),
            (Some("wohngeld"), Some("limited"), Some(2))
        );
        assert_eq!(v["from"]["level"], "unavailable");
        assert_eq!(v["expected_return"], "2026-12-24");
        let step: serde_json::Value = serde_json::from_str(&samples()[13].to_payload()).unwrap();
        assert_eq!(
            (step["type"].as_str(), step["from"].as_str(), step["to"].as_str()),
            (Some("procedure_stepped"), Some("hardened"), Some("released"))
        );
    }

    #[test]
    fn kinds_and_scopes_are_those_the_journal_always_used() {
        let got: Vec<(&str, String)> = samples().iter().map(|e| (e.kind(), e.scope())).collect();
        let want = [
            ("statement.set", "05962040"),
            ("statement.set", "05962"),
            ("statement.withdraw", "05962040"),
            ("announcement.create", "area"),
            ("announcement.update", "service:wohngeld"),
            ("announcement.create", "05962040"),
            ("announcement.correct", "05962"),
            ("announcement.withdraw", "area"),
            ("faq.save", "area"),
            ("contact.set", "05962040"),
            ("referral.save", "05962"),
            ("referral.delete", "05962"),
            ("procedure.save", "area"),
            ("procedure.step", "area"),
            ("rollout.set", "05962040"),
            ("rollout.pulled_back", "05962040"),
            ("import.apply", "area"),
            ("demo.seed", "area"),
            ("user.create", "user:anna"),
            ("user.update", "user:anna"),
            ("user.reset", "user:anna"),
            ("user.setup", "user:anna"),
            ("user.sign_out_everywhere", "user:anna"),
            ("token.create", "user:anna"),
            ("token.revoke", "user:anna"),
            ("login.locked", "user:anna"),
            ("login.address_blocked", "user:anna"),
        ];
        assert_eq!(got.len(), want.len());
        for ((kind, scope), (k, s)) in got.iter().zip(want) {
            assert_eq!((*kind, scope.as_str()), (k, s));
        }
    }

    #[test]
    fn touches_name_the_public_parts() {
        let s = samples();
        assert_eq!(
            s[0].touches(),
            vec![Touch::Area, Touch::Municipality("05962040".into()), Touch::Service("wohngeld".into())]
        );
        assert!(s[1].touches().contains(&Touch::District("05962".into())));
        assert!(s[3].touches().contains(&Touch::Announcement("a-1".into())));
        assert!(s[5].touches().is_empty(), "a draft is not public");
        assert_eq!(s[14].touches(), vec![Touch::Procedure("kfz".into()), Touch::Municipality("05962040".into())]);
        assert_eq!(s[16].touches(), vec![Touch::Everything]);
        assert!(s[18].touches().is_empty(), "accounts are not public");
    }

    #[test]
    fn old_payloads_are_not_events() {
        assert!(Event::from_payload(r#"{"service":"wohngeld","level":"limited","version":1}"#).is_none());
        assert!(Event::from_payload("not json").is_none());
        assert!(Event::from_payload(r#"{"accounts":["admin"]}"#).is_none());
    }
}
