//! The domain vocabulary: plain data types shared by storage, snapshot, pages and API.
//! German terms are in `PRODUCT.md`; code uses the English words.

pub mod authz;
pub mod events;
pub mod expected;
pub mod markdown;
pub mod recovery;
pub mod time;

use serde::{Deserialize, Serialize};

/// How well a service works right now. Exactly these four, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Normal,
    Limited,
    Emergency,
    Unavailable,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Normal, Level::Limited, Level::Emergency, Level::Unavailable];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Limited => "limited",
            Level::Emergency => "emergency",
            Level::Unavailable => "unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// The service areas ("Leistungsbereiche") the catalogue is grouped by, in display order.
pub const SERVICE_AREAS: [&str; 6] = ["registration", "civil_registry", "social", "vehicle", "finance", "trade"];

pub fn is_service_area(s: &str) -> bool {
    SERVICE_AREAS.contains(&s)
}

/// Which level of administration provides a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Responsibility {
    Municipality,
    District,
}

impl Responsibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Responsibility::Municipality => "municipality",
            Responsibility::District => "district",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "municipality" => Some(Self::Municipality),
            "district" => Some(Self::District),
            _ => None,
        }
    }
}

/// Ways to reach an administration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    pub phone: String,
    pub email: String,
    pub website: String,
    pub emergency_website: String,
    /// Social media addresses, one per line.
    pub social_media: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct District {
    pub ags: String,
    pub slug: String,
    pub name: String,
    pub member: bool,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub contact: Contact,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Municipality {
    pub ags: String,
    pub slug: String,
    pub name: String,
    pub district_ags: String,
    pub member: bool,
    pub population: Option<i64>,
    pub lat: f64,
    pub lon: f64,
    pub contact: Contact,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PostalCode {
    pub postal_code: String,
    pub municipality_ags: String,
    pub place: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Service {
    pub slug: String,
    pub name: String,
    pub area: String,
    pub responsibility: Responsibility,
    pub leika_key: String,
    /// Other words citizens use for it ("Auto anmelden").
    pub synonyms: Vec<String>,
    pub description: String,
    pub sort_order: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Office {
    pub slug: String,
    pub name: String,
    /// AGS of the town or district running the office; empty for offices we know nothing else about.
    pub owner_ags: String,
    pub street: String,
    pub postal_code: String,
    pub city: String,
    pub lat: f64,
    pub lon: f64,
    pub phone: String,
    pub email: String,
    pub website: String,
    pub opening_hours: String,
}

/// What a town or district stated about one of its services.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Statement {
    /// 8-digit AGS for a town, 5-digit for a district.
    pub scope_ags: String,
    pub service_slug: String,
    pub level: Level,
    pub restrictions: String,
    pub workaround: String,
    pub backlog: String,
    /// Expected return to normal operation: a day, week, half-month, month or `unknown`
    /// (see `domain::expected`), or empty.
    pub expected_return: String,
    pub author: String,
    pub stated_at: String,
    pub version: i64,
    /// The day it is to be looked at again (YYYY-MM-DD); empty: `REVIEW_AFTER_DAYS` after
    /// `stated_at`.
    #[serde(default)]
    pub review_on: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Referral {
    pub id: String,
    pub office_slug: String,
    pub service_slug: String,
    /// Residents of this town (8 digits) or district (5 digits) may go there.
    pub for_ags: String,
    pub conditions: String,
    /// `YYYY-MM-DD` or empty for open-ended.
    pub valid_from: String,
    pub valid_until: String,
}

/// Who an announcement or FAQ entry is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Area,
    District,
    Municipality,
    Service,
}

impl ScopeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScopeKind::Area => "area",
            ScopeKind::District => "district",
            ScopeKind::Municipality => "municipality",
            ScopeKind::Service => "service",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "area" => Some(Self::Area),
            "district" => Some(Self::District),
            "municipality" => Some(Self::Municipality),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Announcement {
    pub id: String,
    pub scope_kind: ScopeKind,
    pub scope_ref: String,
    pub lang: String,
    pub title: String,
    /// Markdown as written by the editor; rendered through the sanitiser.
    pub body: String,
    pub author: String,
    /// `None` while a draft.
    pub published_at: Option<String>,
    pub updated_at: String,
    /// Counts every save; what subscribers were told of is recorded by version.
    #[serde(default)]
    pub version: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaqEntry {
    pub id: String,
    pub scope_kind: ScopeKind,
    pub scope_ref: String,
    pub lang: String,
    pub question: String,
    pub answer: String,
    pub sort_order: i64,
    pub published_at: Option<String>,
    pub updated_at: String,
}

/// Everything the public side needs, as loaded from storage in one go.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub area_name: String,
    pub provider_name: String,
    pub demo: bool,
    // The places and the catalogue change rarely (imports); they are shared between snapshots
    // so a status change does not reload or re-index them.
    pub districts: std::sync::Arc<Vec<District>>,
    pub municipalities: std::sync::Arc<Vec<Municipality>>,
    pub postal_codes: std::sync::Arc<Vec<PostalCode>>,
    pub services: std::sync::Arc<Vec<Service>>,
    pub offices: std::sync::Arc<Vec<Office>>,
    pub statements: Vec<Statement>,
    pub referrals: Vec<Referral>,
    pub announcements: Vec<Announcement>,
    pub faq: Vec<FaqEntry>,
    pub procedures: Vec<crate::domain::recovery::Procedure>,
    pub rollouts: Vec<crate::domain::recovery::RolloutRecord>,
    /// (service slug, procedure slug): the service needs that procedure.
    pub service_procedures: Vec<(String, String)>,
    /// Every announcement event of the journal (published, corrected, withdrawn …), in order:
    /// the history behind the CAP alerts' updates and cancels. Shared between snapshots and
    /// extended by the entries after the last one.
    pub announcement_history: std::sync::Arc<Vec<events::Recorded>>,
    /// Every statement and rollout event of the journal, in order: the public history of each
    /// service in each town and the status feeds. Shared and extended like the above.
    pub status_history: std::sync::Arc<Vec<events::Recorded>>,
}

/// The one folding for slugs and search: lower case, umlauts and ß spelled out (`ä` → `ae`,
/// `ß` → `ss`), common accented vowels without their accent (`é` → `e`, `â` → `a`); every other
/// character is kept as it is.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            'é' | 'è' | 'ê' => out.push('e'),
            'á' | 'à' | 'â' => out.push('a'),
            c => out.push(c),
        }
    }
    out
}

/// Lower-case ASCII slug: "Menden (Sauerland)" → "menden-sauerland", "Lüdenscheid" → "luedenscheid".
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in fold(name).chars() {
        match c {
            c if c.is_ascii_alphanumeric() => out.push(c),
            _ => {
                if !out.is_empty() && !out.ends_with('-') {
                    out.push('-')
                }
            }
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Why a slug was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlugError {
    /// More than 100 characters.
    TooLong,
    /// Empty, or a character other than `a-z`, `0-9` and `-`.
    Invalid,
}

/// The one slug check: 1–100 characters of `a-z`, `0-9` and `-`, as accepted in URLs and imports.
pub fn parse_slug(s: &str) -> Result<&str, SlugError> {
    if s.len() > 100 {
        Err(SlugError::TooLong)
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        Ok(s)
    } else {
        Err(SlugError::Invalid)
    }
}

/// A slug as accepted in URLs and imports (see `parse_slug`).
pub fn is_valid_slug(s: &str) -> bool {
    parse_slug(s).is_ok()
}

/// Great-circle distance in kilometres.
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    6371.0 * 2.0 * a.sqrt().asin()
}

/// Only http(s) addresses become links; anything else (`javascript:`, `data:`) is dropped.
pub fn http_url(s: &str) -> &str {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if (lower.starts_with("https://") || lower.starts_with("http://")) && !t.contains(char::is_whitespace) {
        t
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_fold_umlauts_and_punctuation() {
        assert_eq!(slugify("Menden (Sauerland)"), "menden-sauerland");
        assert_eq!(slugify("Lüdenscheid"), "luedenscheid");
        assert_eq!(slugify("Schalksmühle"), "schalksmuehle");
        assert_eq!(slugify("Eheschließung anmelden"), "eheschliessung-anmelden");
        assert!(is_valid_slug("menden-sauerland"));
        assert!(!is_valid_slug("Menden"));
        assert!(!is_valid_slug("<script>"));
    }

    #[test]
    fn distance_menden_iserlohn_is_about_eight_km() {
        let d = distance_km(51.439281, 7.795344, 51.374541, 7.699212);
        assert!((9.0..10.5).contains(&d), "{d}");
    }

    #[test]
    fn levels_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
        assert_eq!(Level::parse("broken"), None);
    }
}
