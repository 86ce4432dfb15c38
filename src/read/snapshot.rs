//! The public state: an immutable snapshot of everything citizens can see, built from the
//! database after each committed change and swapped atomically. Pages and feeds are rendered
//! from it and cached inside it, so a reader never waits for the database and a new snapshot
//! starts with an empty cache. Editors' Markdown is rendered while the snapshot is built (once
//! per changed text: unchanged texts keep the previous snapshot's HTML), never per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::*;
use crate::read::search::{Index, ServiceSearch};

/// Where a town's availability of a service comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The town stated it.
    Municipality,
    /// The district stated it for all its towns (district-level services such as vehicle registration).
    District,
    /// Follows from the rollout of the procedures the service needs in this town.
    Derived,
    /// Nobody reported a disruption.
    NoReport,
}

/// Everything said about one service in one town, whichever source applies.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Details {
    pub restrictions: String,
    pub workaround: String,
    pub backlog: String,
    pub expected_return: String,
    pub stated_at: String,
    /// The procedures the service needs and their rollout here (also shown when a statement
    /// overrides them, so the page can say which applies).
    pub derivation: Vec<Derivation>,
}

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Derivation {
    pub procedure: String,
    pub name: String,
    pub stage: crate::domain::recovery::Stage,
    pub rollout: crate::domain::recovery::Rollout,
    pub since: String,
    pub expected_date: String,
    /// What basic operation lacks (only while in pilot or basic operation).
    pub missing_functions: Vec<String>,
    /// What basic operation offers (only while in pilot or basic operation).
    pub offered_functions: Vec<String>,
}

/// A statement is looked at again after this many days: the desk lists it until it is
/// confirmed or changed (saving it again counts).
pub const REVIEW_AFTER_DAYS: i64 = 14;

/// A service expected back on a date in some towns.
pub struct ExpectedReturn<'a> {
    /// As stored (`domain::expected`): a day, week, half-month or month; empty when undated.
    pub date: String,
    pub service: &'a Service,
    pub towns: Vec<&'a Municipality>,
}

/// One procedure a service needs, as it stands in one town.
pub struct ProcedureInTown<'a> {
    pub procedure: &'a crate::domain::recovery::Procedure,
    /// The rollout as it counts: never more than the procedure's stage allows.
    pub rollout: crate::domain::recovery::Rollout,
    pub since: &'a str,
    pub expected_date: &'a str,
}

#[derive(Clone, Copy, Debug)]
pub struct Availability<'a> {
    pub level: Level,
    pub source: Source,
    pub statement: Option<&'a Statement>,
}

/// An office that accepts a service instead, seen from one town.
pub struct Alternative<'a> {
    pub referral: &'a Referral,
    pub office: &'a Office,
    pub distance_km: f64,
    /// The service's own current status at that office.
    pub level: Level,
}

/// A rendered response, kept for the snapshot's lifetime: the bytes, pre-compressed once.
pub struct CachedPage {
    pub content_type: &'static str,
    pub body: bytes::Bytes,
    pub gzip: bytes::Bytes,
    pub etag: String,
    /// The ETag ready to send, so answering costs no conversion per request.
    pub etag_header: axum::http::HeaderValue,
}

/// Lookups over the rarely changing part of the data: towns, districts, postal codes, services, offices.
pub struct PlaceIndex {
    municipality_by_slug: HashMap<String, usize>,
    municipality_by_ags: HashMap<String, usize>,
    district_by_ags: HashMap<String, usize>,
    district_by_slug: HashMap<String, usize>,
    service_by_slug: HashMap<String, usize>,
    office_by_slug: HashMap<String, usize>,
    postal: HashMap<String, Vec<usize>>,
    /// Service search per language code.
    service_search: HashMap<String, ServiceSearch>,
    pub municipality_index: Index,
    /// Municipality indices per district AGS, in name order.
    municipalities_by_district: HashMap<String, Vec<usize>>,
}

fn index_of(keys: impl Iterator<Item = String>) -> HashMap<String, usize> {
    keys.enumerate().map(|(i, k)| (k, i)).collect()
}

impl PlaceIndex {
    pub fn build(data: &Dataset) -> PlaceIndex {
        let municipality_by_ags = index_of(data.municipalities.iter().map(|m| m.ags.clone()));
        let mut postal: HashMap<String, Vec<usize>> = HashMap::new();
        for p in data.postal_codes.iter() {
            if let Some(&m) = municipality_by_ags.get(&p.municipality_ags) {
                let list = postal.entry(p.postal_code.clone()).or_default();
                if !list.contains(&m) {
                    list.push(m);
                }
            }
        }
        let mut municipalities_by_district: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, m) in data.municipalities.iter().enumerate() {
            municipalities_by_district.entry(m.district_ags.clone()).or_default().push(i);
        }
        PlaceIndex {
            municipality_by_slug: index_of(data.municipalities.iter().map(|m| m.slug.clone())),
            municipality_by_ags,
            district_by_ags: index_of(data.districts.iter().map(|d| d.ags.clone())),
            district_by_slug: index_of(data.districts.iter().map(|d| d.slug.clone())),
            service_by_slug: index_of(data.services.iter().map(|s| s.slug.clone())),
            office_by_slug: index_of(data.offices.iter().map(|o| o.slug.clone())),
            postal,
            service_search: crate::i18n::languages()
                .iter()
                .map(|l| (l.code.clone(), ServiceSearch::new(&data.services, &l.code)))
                .collect(),
            municipality_index: Index::new(data.municipalities.iter().map(|m| vec![m.name.clone()]).collect()),
            municipalities_by_district,
        }
    }

    /// The service search of `lang`, German for a language we do not have.
    pub fn service_search(&self, lang: &str) -> &ServiceSearch {
        self.service_search.get(lang).unwrap_or_else(|| &self.service_search[crate::i18n::DEFAULT_LANG])
    }
}

pub struct Snapshot {
    pub data: Dataset,
    /// When the data last changed (RFC 3339), shown as "Stand" where nothing more specific applies.
    pub changed_at: String,
    pub data_version: i64,
    /// The places version it was loaded at (see store::bump_places_version).
    pub places_version: i64,
    /// The journal's last entry when the data was loaded: every event up to it is in here.
    pub journal_seq: i64,
    /// When this snapshot was built: what "now" means for scheduled publications in it.
    pub built_at: String,
    /// The next scheduled publication after `built_at`, when the snapshot must be rebuilt.
    pub next_publication: Option<String>,
    /// Indexes of the places and the catalogue, shared with the previous snapshot when those
    /// did not change.
    pub places: Arc<PlaceIndex>,
    statement_by_scope: HashMap<(String, String), usize>,
    /// (town or district AGS, service slug) → referrals.
    referrals_by_target: HashMap<(String, String), Vec<usize>>,
    procedure_by_slug: HashMap<String, usize>,
    /// (procedure slug, town AGS) → rollout.
    rollout_by_town: HashMap<(String, String), usize>,
    /// Service slug → the procedures it needs.
    procedures_of_service: HashMap<String, Vec<usize>>,
    /// Announcement bodies and FAQ answers as sanitised HTML.
    pub markdown: RenderedMarkdown,
    /// Rendered pages; a page's cell is filled by the first request and waited for by the others.
    cache: RwLock<HashMap<String, Arc<tokio::sync::OnceCell<Arc<CachedPage>>>>>,
    /// Positions in `data.status_history` by what they are about: a statement by (scope AGS,
    /// service), a rollout by (town AGS, `@procedure`). Built on first use: most snapshots are
    /// replaced before anyone asks for a history.
    status_index: std::sync::OnceLock<HashMap<(String, String), Vec<usize>>>,
}

/// One step in the public history of a service in a town, from the journal.
pub struct HistoryItem<'a> {
    pub seq: i64,
    /// When it was recorded (RFC 3339, UTC).
    pub at: &'a str,
    pub event: &'a crate::domain::events::Event,
}

/// Markdown texts (announcement bodies, FAQ answers) → their HTML, shared between snapshots so
/// that a text is rendered once when it is written, not again with every snapshot.
#[derive(Clone, Default)]
pub struct RenderedMarkdown(HashMap<Arc<str>, Arc<str>>);

impl RenderedMarkdown {
    /// The HTML of every text in `data`, reusing what `previous` already rendered.
    fn of(data: &Dataset, previous: &RenderedMarkdown) -> RenderedMarkdown {
        let texts = data.announcements.iter().map(|a| &a.body).chain(data.faq.iter().map(|f| &f.answer));
        let mut rendered = HashMap::new();
        for text in texts {
            if rendered.contains_key(text.as_str()) {
                continue;
            }
            let (source, html) = match previous.0.get_key_value(text.as_str()) {
                Some((source, html)) => (source.clone(), html.clone()),
                None => (Arc::from(text.as_str()), Arc::from(crate::domain::markdown::render(text))),
            };
            rendered.insert(source, html);
        }
        RenderedMarkdown(rendered)
    }

    /// The HTML of a text of this snapshot (rendered now for any other text).
    pub fn html(&self, source: &str) -> String {
        match self.0.get(source) {
            Some(html) => html.to_string(),
            None => crate::domain::markdown::render(source),
        }
    }
}

impl Snapshot {
    pub fn build(data: Dataset, changed_at: String, data_version: i64) -> Snapshot {
        Snapshot::build_from(data, changed_at, data_version, None, &RenderedMarkdown::default())
    }

    /// Builds a snapshot reusing what an earlier one computed: its place indexes when given (the
    /// places did not change) and the HTML of texts that did not change.
    pub fn build_from(
        mut data: Dataset,
        changed_at: String,
        data_version: i64,
        places: Option<Arc<PlaceIndex>>,
        markdown: &RenderedMarkdown,
    ) -> Snapshot {
        let places = places.unwrap_or_else(|| Arc::new(PlaceIndex::build(&data)));
        let markdown = RenderedMarkdown::of(&data, markdown);
        // A database filled only by import has no names yet; the site still needs a title.
        if data.area_name.is_empty() {
            data.area_name = crate::i18n::t(crate::i18n::DEFAULT_LANG, "site.default_name");
        }
        if data.provider_name.is_empty() {
            data.provider_name = crate::i18n::t(crate::i18n::DEFAULT_LANG, "site.default_provider");
        }
        let statement_by_scope = data
            .statements
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.scope_ags.clone(), s.service_slug.clone()), i))
            .collect();
        let mut referrals_by_target: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, r) in data.referrals.iter().enumerate() {
            referrals_by_target.entry((r.for_ags.clone(), r.service_slug.clone())).or_default().push(i);
        }
        let procedure_by_slug = index_of(data.procedures.iter().map(|p| p.slug.clone()));
        let rollout_by_town = data
            .rollouts
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.procedure_slug.clone(), r.municipality_ags.clone()), i))
            .collect();
        let mut procedures_of_service: HashMap<String, Vec<usize>> = HashMap::new();
        for (service, procedure) in &data.service_procedures {
            if let Some(&p) = procedure_by_slug.get(procedure) {
                procedures_of_service.entry(service.clone()).or_default().push(p);
            }
        }
        let built_at = crate::domain::time::now_rfc3339();
        let next_publication = data
            .announcements
            .iter()
            .filter_map(|a| a.published_at.clone())
            .chain(data.faq.iter().filter_map(|f| f.published_at.clone()))
            .filter(|t| *t > built_at)
            .min();
        Snapshot {
            data,
            changed_at,
            data_version,
            places_version: 0,
            journal_seq: 0,
            built_at,
            next_publication,
            places,
            statement_by_scope,
            referrals_by_target,
            procedure_by_slug,
            rollout_by_town,
            procedures_of_service,
            markdown,
            cache: RwLock::new(HashMap::new()),
            status_index: std::sync::OnceLock::new(),
        }
    }

    fn status_index(&self) -> &HashMap<(String, String), Vec<usize>> {
        use crate::domain::events::Event;
        self.status_index.get_or_init(|| {
            let mut index: HashMap<(String, String), Vec<usize>> = HashMap::new();
            for (i, r) in self.data.status_history.iter().enumerate() {
                let key = match &r.event {
                    Event::StatementChanged { scope, service, .. }
                    | Event::StatementWithdrawn { scope, service, .. } => (scope.clone(), service.clone()),
                    Event::RolloutChanged { procedure, municipality, .. }
                    | Event::RolloutPulledBack { procedure, municipality, .. } => {
                        (municipality.clone(), format!("@{procedure}"))
                    }
                    _ => continue,
                };
                index.entry(key).or_default().push(i);
            }
            index
        })
    }

    /// What happened to a service in a town, newest first: the town's statements, the district's
    /// (for district services), and the rollout of the procedures it needs there.
    pub fn history(&self, m: &Municipality, s: &Service) -> Vec<HistoryItem<'_>> {
        let index = self.status_index();
        let mut keys = vec![(m.ags.clone(), s.slug.clone())];
        if s.responsibility == Responsibility::District {
            keys.push((m.district_ags.clone(), s.slug.clone()));
        }
        keys.extend(self.procedures_of(s).iter().map(|p| (m.ags.clone(), format!("@{}", p.slug))));
        self.history_of(index, &keys)
    }

    /// What happened to any service of a town (`None`: the whole area), newest first.
    pub fn town_history(&self, m: Option<&Municipality>) -> Vec<HistoryItem<'_>> {
        let index = self.status_index();
        let keys: Vec<(String, String)> = match m {
            Some(m) => index.keys().filter(|(ags, _)| *ags == m.ags || *ags == m.district_ags).cloned().collect(),
            None => index.keys().cloned().collect(),
        };
        self.history_of(index, &keys)
    }

    fn history_of(
        &self,
        index: &HashMap<(String, String), Vec<usize>>,
        keys: &[(String, String)],
    ) -> Vec<HistoryItem<'_>> {
        let mut positions: Vec<usize> = keys.iter().filter_map(|k| index.get(k)).flatten().copied().collect();
        positions.sort_unstable_by(|a, b| b.cmp(a));
        positions.dedup();
        positions
            .into_iter()
            .map(|i| {
                let r = &self.data.status_history[i];
                HistoryItem { seq: r.seq, at: &r.at, event: &r.event }
            })
            .collect()
    }

    pub fn municipality(&self, slug: &str) -> Option<&Municipality> {
        self.places.municipality_by_slug.get(slug).map(|&i| &self.data.municipalities[i])
    }
    pub fn municipality_by_ags(&self, ags: &str) -> Option<&Municipality> {
        self.places.municipality_by_ags.get(ags).map(|&i| &self.data.municipalities[i])
    }
    pub fn district(&self, ags: &str) -> Option<&District> {
        self.places.district_by_ags.get(ags).map(|&i| &self.data.districts[i])
    }
    pub fn district_by_slug(&self, slug: &str) -> Option<&District> {
        self.places.district_by_slug.get(slug).map(|&i| &self.data.districts[i])
    }
    pub fn service(&self, slug: &str) -> Option<&Service> {
        self.places.service_by_slug.get(slug).map(|&i| &self.data.services[i])
    }
    pub fn office(&self, slug: &str) -> Option<&Office> {
        self.places.office_by_slug.get(slug).map(|&i| &self.data.offices[i])
    }

    /// Towns of the area (members and affected customers), for listings.
    pub fn towns_of_district(&self, district_ags: &str) -> impl Iterator<Item = &Municipality> {
        self.places
            .municipalities_by_district
            .get(district_ags)
            .into_iter()
            .flatten()
            .map(|&i| &self.data.municipalities[i])
    }

    /// Districts that have at least one town in the snapshot, in name order.
    pub fn districts_with_towns(&self) -> impl Iterator<Item = &District> {
        self.data.districts.iter().filter(|d| self.places.municipalities_by_district.contains_key(&d.ags))
    }

    fn statement(&self, scope_ags: &str, service: &str) -> Option<&Statement> {
        self.statement_by_scope.get(&(scope_ags.to_string(), service.to_string())).map(|&i| &self.data.statements[i])
    }

    /// The availability of a service for residents of a town: the town's own statement wins;
    /// for district-level services the district's statement applies otherwise.
    pub fn availability(&self, m: &Municipality, s: &Service) -> Availability<'_> {
        if let Some(st) = self.statement(&m.ags, &s.slug) {
            return Availability { level: st.level, source: Source::Municipality, statement: Some(st) };
        }
        if s.responsibility == Responsibility::District
            && let Some(st) = self.statement(&m.district_ags, &s.slug)
        {
            return Availability { level: st.level, source: Source::District, statement: Some(st) };
        }
        let procedures = self.procedures_in_town(m, s);
        if let Some(level) =
            procedures.iter().map(|p| crate::domain::recovery::level_for(p.procedure.stage, p.rollout)).max()
        {
            return Availability { level, source: Source::Derived, statement: None };
        }
        Availability { level: Level::Normal, source: Source::NoReport, statement: None }
    }

    /// The facts behind an availability: the statement's, or those that follow from the rollout.
    pub fn details(&self, m: &Municipality, s: &Service, a: &Availability) -> Details {
        use crate::domain::recovery::Rollout;
        let derivation: Vec<Derivation> = self
            .procedures_in_town(m, s)
            .into_iter()
            .map(|p| Derivation {
                procedure: p.procedure.slug.clone(),
                name: p.procedure.name.clone(),
                stage: p.procedure.stage,
                rollout: p.rollout,
                since: p.since.to_string(),
                expected_date: p.expected_date.to_string(),
                missing_functions: if matches!(p.rollout, Rollout::Pilot | Rollout::Basic) {
                    p.procedure.missing_functions.clone()
                } else {
                    Vec::new()
                },
                offered_functions: if matches!(p.rollout, Rollout::Pilot | Rollout::Basic) {
                    p.procedure.offered_functions.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        if let Some(st) = a.statement {
            return Details {
                restrictions: st.restrictions.clone(),
                workaround: st.workaround.clone(),
                backlog: st.backlog.clone(),
                expected_return: st.expected_return.clone(),
                stated_at: st.stated_at.clone(),
                derivation,
            };
        }
        if a.source != Source::Derived {
            return Details { derivation, ..Details::default() };
        }
        let missing: Vec<&str> =
            derivation.iter().flat_map(|d| d.missing_functions.iter().map(String::as_str)).collect();
        // The day the service can be expected back: the latest of the procedures still missing.
        let expected_return = derivation
            .iter()
            .filter(|d| d.rollout != Rollout::Normal)
            .map(|d| d.expected_date.as_str())
            .max()
            .filter(|d| !d.is_empty())
            .unwrap_or_default()
            .to_string();
        Details {
            restrictions: missing.join(", "),
            expected_return,
            stated_at: derivation.iter().map(|d| d.since.as_str()).max().unwrap_or_default().to_string(),
            derivation,
            ..Details::default()
        }
    }

    /// The "Fahrplan": services expected back, by date, with the towns they return in; for one
    /// town or the whole area. Only what is not in normal operation and has an expected date.
    pub fn expected_returns<'a>(&'a self, town: Option<&'a Municipality>) -> Vec<ExpectedReturn<'a>> {
        self.not_back(town).0
    }

    /// The services not back yet that have no expected date (or one that has passed), with the
    /// towns concerned: the Fahrplan lists them as "noch ohne Termin" instead of leaving them out.
    pub fn undated_returns<'a>(&'a self, town: Option<&'a Municipality>) -> Vec<ExpectedReturn<'a>> {
        self.not_back(town).1
    }

    /// Every service not in normal operation in `town` (or the area), by expected date, and
    /// those without a date (`date` empty), in catalogue order.
    fn not_back<'a>(&'a self, town: Option<&'a Municipality>) -> (Vec<ExpectedReturn<'a>>, Vec<ExpectedReturn<'a>>) {
        let today = crate::domain::time::today_utc();
        // By the first day it may be, then the last: "14.12." before "KW 51" before "Dezember".
        type Key<'k> = (chrono::NaiveDate, chrono::NaiveDate, String, i64, &'k str);
        let mut by_date_service: std::collections::BTreeMap<Key, Vec<&Municipality>> = Default::default();
        let mut undated: std::collections::BTreeMap<(i64, &str), Vec<&Municipality>> = Default::default();
        let towns: Vec<&Municipality> = match town {
            Some(m) => vec![m],
            None => self.data.municipalities.iter().collect(),
        };
        for m in towns {
            for s in self.data.services.iter() {
                let a = self.availability(m, s);
                if a.level == Level::Normal || a.source == Source::NoReport {
                    continue;
                }
                let date = self.details(m, s, &a).expected_return;
                match crate::domain::expected::Expected::parse(&date).and_then(|e| e.span()) {
                    Some((first, last)) if last >= today => {
                        by_date_service.entry((first, last, date, s.sort_order, s.slug.as_str())).or_default().push(m);
                    }
                    // Not stated, not foreseeable, or passed.
                    _ => undated.entry((s.sort_order, s.slug.as_str())).or_default().push(m),
                }
            }
        }
        let dated = by_date_service
            .into_iter()
            .filter_map(|((_, _, date, _, slug), towns)| {
                Some(ExpectedReturn { date, service: self.service(slug)?, towns })
            })
            .collect();
        let undated = undated
            .into_iter()
            .filter_map(|((_, slug), towns)| {
                Some(ExpectedReturn { date: String::new(), service: self.service(slug)?, towns })
            })
            .collect();
        (dated, undated)
    }

    pub fn procedure(&self, slug: &str) -> Option<&crate::domain::recovery::Procedure> {
        self.procedure_by_slug.get(slug).map(|&i| &self.data.procedures[i])
    }

    /// The procedures a service needs.
    pub fn procedures_of(&self, s: &Service) -> Vec<&crate::domain::recovery::Procedure> {
        self.procedures_of_service.get(&s.slug).into_iter().flatten().map(|&i| &self.data.procedures[i]).collect()
    }

    pub fn rollout(&self, procedure: &str, ags: &str) -> Option<&crate::domain::recovery::RolloutRecord> {
        self.rollout_by_town.get(&(procedure.to_string(), ags.to_string())).map(|&i| &self.data.rollouts[i])
    }

    /// The procedures a service needs and how far each is live in the town.
    pub fn procedures_in_town(&self, m: &Municipality, s: &Service) -> Vec<ProcedureInTown<'_>> {
        use crate::domain::recovery::{Rollout, rollout_allowed};
        self.procedures_of_service
            .get(&s.slug)
            .into_iter()
            .flatten()
            // Only procedures the provider runs for this town: those with a rollout record here.
            .filter_map(|&i| {
                let procedure = &self.data.procedures[i];
                let record = self.rollout(&procedure.slug, &m.ags)?;
                let rollout = rollout_allowed(procedure.stage, record.stage);
                let expected = if record.expected_date.is_empty() {
                    procedure.expected_release.as_str()
                } else {
                    record.expected_date.as_str()
                };
                Some(ProcedureInTown {
                    procedure,
                    rollout,
                    since: if rollout == Rollout::NotStarted {
                        procedure.stage_since.as_str()
                    } else {
                        record.since.as_str()
                    },
                    expected_date: expected,
                })
            })
            .collect()
    }

    /// The status of a service at an office's own administration, for referrals.
    fn level_at_office(&self, office: &Office, s: &Service) -> Level {
        if let Some(m) = self.municipality_by_ags(&office.owner_ags) {
            return self.availability(m, s).level;
        }
        self.statement(&office.owner_ags, &s.slug).map(|st| st.level).unwrap_or(Level::Normal)
    }

    /// Offices that accept the service from residents of the town instead, nearest first.
    /// Only referrals valid today; each carries the service's own status at that office.
    pub fn alternatives(&self, m: &Municipality, s: &Service) -> Vec<Alternative<'_>> {
        let today = crate::domain::time::today_utc().format("%Y-%m-%d").to_string();
        let mut out: Vec<Alternative> = [m.ags.as_str(), m.district_ags.as_str()]
            .iter()
            .filter_map(|ags| self.referrals_by_target.get(&(ags.to_string(), s.slug.clone())))
            .flatten()
            .map(|&i| &self.data.referrals[i])
            .filter(|r| {
                (r.valid_from.is_empty() || r.valid_from <= today)
                    && (r.valid_until.is_empty() || r.valid_until >= today)
            })
            .filter_map(|r| {
                let office = self.office(&r.office_slug)?;
                Some(Alternative {
                    referral: r,
                    office,
                    distance_km: distance_km(m.lat, m.lon, office.lat, office.lon),
                    level: self.level_at_office(office, s),
                })
            })
            .collect();
        out.sort_by(|a, b| a.distance_km.total_cmp(&b.distance_km).then_with(|| a.office.name.cmp(&b.office.name)));
        out.dedup_by(|a, b| a.office.slug == b.office.slug);
        out
    }

    /// A statement the recovery has moved past: the procedures behind the service changed on or
    /// after the day it was stated, and the level they give now is better than the statement's. Returns when
    /// they changed. The public card keeps the statement's one level and adds this as a dated
    /// note; the desk flags it to the statement's editors.
    pub fn contradiction(&self, m: &Municipality, s: &Service, a: &Availability) -> Option<String> {
        let st = a.statement?;
        let procedures = self.procedures_in_town(m, s);
        let derived =
            procedures.iter().map(|p| crate::domain::recovery::level_for(p.procedure.stage, p.rollout)).max()?;
        let since = procedures.iter().map(|p| p.since).filter(|s| !s.is_empty()).max()?;
        let day = |t: &str| t.get(..10).unwrap_or(t).to_string();
        // Only a recovery that now offers more than the statement says: a town doing better
        // than its procedures (paper instead of nothing) is the workaround, not a contradiction.
        (derived < st.level && day(since) >= day(&st.stated_at)).then(|| since.to_string())
    }

    /// The towns with a rollout record for `procedure` whose own or district's statements decide
    /// at least one of the procedure's services instead of the rollout.
    pub fn towns_overriding(&self, procedure: &str) -> usize {
        let services: Vec<&Service> =
            self.data.services.iter().filter(|s| self.procedures_of(s).iter().any(|p| p.slug == procedure)).collect();
        self.data
            .municipalities
            .iter()
            .filter(|m| self.rollout(procedure, &m.ags).is_some())
            .filter(|m| services.iter().any(|s| self.availability(m, s).statement.is_some()))
            .count()
    }

    /// Whether a statement is due for review: after its review day, or without one older than
    /// `REVIEW_AFTER_DAYS`.
    pub fn review_due(st: &Statement, now: chrono::DateTime<chrono::Utc>) -> bool {
        if let Some(day) = crate::domain::time::parse_date(&st.review_on) {
            return now.date_naive() > day;
        }
        crate::domain::time::parse_rfc3339(&st.stated_at)
            .is_some_and(|at| now - at > chrono::Duration::days(REVIEW_AFTER_DAYS))
    }

    /// Who handles a service for a town's residents: the district (its contact and offices) for a
    /// district service, the town otherwise. The offices are those the responsible administration
    /// runs; the name is the town's or the district's.
    pub fn responsible<'a>(&'a self, m: &'a Municipality, s: &Service) -> (&'a str, &'a Contact, Vec<&'a Office>) {
        let (ags, name, contact) =
            match self.district(&m.district_ags).filter(|_| s.responsibility == Responsibility::District) {
                Some(d) => (d.ags.as_str(), d.name.as_str(), &d.contact),
                None => (m.ags.as_str(), m.name.as_str(), &m.contact),
            };
        (name, contact, self.data.offices.iter().filter(|o| o.owner_ags == ags).collect())
    }

    /// A service worse than normal with neither a workaround nor a referral to another office:
    /// residents are told so in words ("noch keine Behelfslösung") and the desk lists it, so that
    /// nobody is left with "Ausfall" and nothing else.
    pub fn lacks_workaround(&self, m: &Municipality, s: &Service, a: &Availability) -> bool {
        a.level != Level::Normal
            && a.statement.is_none_or(|st| st.workaround.trim().is_empty())
            && !self.has_alternatives(m, s)
    }

    pub fn has_alternatives(&self, m: &Municipality, s: &Service) -> bool {
        [m.ags.as_str(), m.district_ags.as_str()]
            .iter()
            .any(|ags| self.referrals_by_target.contains_key(&(ags.to_string(), s.slug.clone())))
    }

    /// Towns whose postal codes include `code`.
    pub fn municipalities_for_postal_code(&self, code: &str) -> Vec<&Municipality> {
        self.places.postal.get(code).into_iter().flatten().map(|&i| &self.data.municipalities[i]).collect()
    }

    pub fn postal_codes_of(&self, m: &Municipality) -> Vec<&str> {
        let mut codes: Vec<&str> = self
            .data
            .postal_codes
            .iter()
            .filter(|p| p.municipality_ags == m.ags)
            .map(|p| p.postal_code.as_str())
            .collect();
        codes.dedup();
        codes
    }

    pub fn offices_of(&self, ags: &str) -> Vec<&Office> {
        self.data.offices.iter().filter(|o| o.owner_ags == ags).collect()
    }

    /// Published announcements a resident of the town should see: area-wide, their district's and their town's.
    pub fn announcements_for(&self, m: &Municipality) -> Vec<&Announcement> {
        self.published_announcements()
            .filter(|a| match a.scope_kind {
                ScopeKind::Area => true,
                ScopeKind::District => a.scope_ref == m.district_ags,
                ScopeKind::Municipality => a.scope_ref == m.ags,
                ScopeKind::Service => false,
            })
            .collect()
    }

    /// Published announcements, newest first (the dataset is loaded in that order).
    pub fn published_announcements(&self) -> impl Iterator<Item = &Announcement> {
        self.data
            .announcements
            .iter()
            .filter(|a| a.published_at.as_deref().is_some_and(|p| p <= self.built_at.as_str()))
    }

    pub fn announcement(&self, id: &str) -> Option<&Announcement> {
        self.published_announcements().find(|a| a.id == id)
    }

    pub fn published_faq(&self) -> impl Iterator<Item = &FaqEntry> {
        self.data.faq.iter().filter(|f| f.published_at.as_deref().is_some_and(|p| p <= self.built_at.as_str()))
    }

    /// When information relevant to this town last changed: its own and its district's
    /// statements and the announcements it shows.
    pub fn changed_at_for(&self, m: &Municipality) -> String {
        let statements = self
            .data
            .statements
            .iter()
            .filter(|s| s.scope_ags == m.ags || s.scope_ags == m.district_ags)
            .map(|s| s.stated_at.as_str());
        let announcements = self.announcements_for(m).into_iter().map(|a| a.updated_at.as_str());
        // The recovery changes a town's availability too: its rollouts and its procedures' stages.
        let rollouts = self.data.rollouts.iter().filter(|r| r.municipality_ags == m.ags).flat_map(|r| {
            let stage_since = self.procedure(&r.procedure_slug).map(|p| p.stage_since.as_str());
            std::iter::once(r.since.as_str()).chain(stage_since)
        });
        statements.chain(announcements).chain(rollouts).max().unwrap_or(self.changed_at.as_str()).to_string()
    }

    pub fn changed_at_for_service(&self, s: &Service) -> String {
        let statements =
            self.data.statements.iter().filter(|st| st.service_slug == s.slug).map(|st| st.stated_at.as_str());
        let procedures: Vec<&str> = self
            .procedures_of_service
            .get(&s.slug)
            .into_iter()
            .flatten()
            .map(|&i| self.data.procedures[i].slug.as_str())
            .collect();
        let recovery = self
            .data
            .rollouts
            .iter()
            .filter(|r| procedures.contains(&r.procedure_slug.as_str()))
            .map(|r| r.since.as_str())
            .chain(procedures.iter().filter_map(|p| self.procedure(p)).map(|p| p.stage_since.as_str()));
        statements.chain(recovery).max().unwrap_or(self.changed_at.as_str()).to_string()
    }

    /// Returns the cached rendering of `key`, rendering it on first use. Concurrent first
    /// requests for a key wait for one rendering instead of each doing it, and the rendering runs
    /// off the async executor (`cpu_bound`), so requests for other things do not wait for it.
    pub async fn cached(
        &self,
        key: &str,
        content_type: &'static str,
        render: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<Arc<CachedPage>> {
        let existing = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        let cell = match existing {
            Some(cell) => cell,
            None => self.cache.write().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone(),
        };
        if let Some(page) = cell.get() {
            return Ok(page.clone());
        }
        let page = cell
            .get_or_try_init(|| async { cpu_bound(|| anyhow::Ok(Arc::new(CachedPage::new(content_type, render()?)))) })
            .await?;
        Ok(page.clone())
    }
}

/// Runs CPU-bound work (rendering, compressing, building a snapshot) without holding up the
/// async executor: on the multi-threaded runtime the worker hands its other tasks to another
/// thread for the duration. Elsewhere (single-threaded test runtimes, plain threads) it just runs.
pub fn cpu_bound<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl CachedPage {
    pub fn new(content_type: &'static str, body: String) -> CachedPage {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(body.as_bytes());
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        let gzip = gzip(body.as_bytes());
        let etag_header = axum::http::HeaderValue::from_str(&etag).expect("hex is ASCII");
        CachedPage { content_type, body: body.into(), gzip: gzip.into(), etag, etag_header }
    }
}

/// `body` compressed as gzip (RFC 1952), as the live server sends it and the export writes it
/// beside each file. Each thread keeps its deflate state for the next body: a fresh compressor
/// allocates and zeroes a few hundred KB, more than compressing a small page costs.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    thread_local! {
        static DEFLATE: std::cell::RefCell<flate2::write::DeflateEncoder<Vec<u8>>> =
            std::cell::RefCell::new(flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default()));
    }
    // Header: magic, deflate, no flags, no time, no extra flags, unknown OS.
    let mut out = Vec::with_capacity(body.len() / 4 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut out = DEFLATE.with(|cell| {
        let mut encoder = cell.borrow_mut();
        encoder.reset(out).expect("writing to memory");
        encoder.write_all(body).expect("writing to memory");
        encoder.try_finish().expect("writing to memory");
        encoder.reset(Vec::new()).expect("writing to memory")
    });
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_due_for_review_after_fourteen_days() {
        let now = crate::domain::time::utc(2026, 12, 20, 12, 0);
        let stated = |at: &str| Statement {
            scope_ags: "05962040".into(),
            service_slug: "wohngeld".into(),
            level: Level::Limited,
            restrictions: String::new(),
            workaround: String::new(),
            backlog: String::new(),
            expected_return: String::new(),
            author: "t".into(),
            stated_at: at.into(),
            version: 1,
            review_on: String::new(),
        };
        assert!(!Snapshot::review_due(&stated("2026-12-06T12:00:00Z"), now), "exactly 14 days");
        assert!(Snapshot::review_due(&stated("2026-12-06T11:59:00Z"), now));
        assert!(!Snapshot::review_due(&stated("2026-12-19T08:00:00Z"), now));
        // A review day of its own decides instead: due the day after it.
        let with_day = |day: &str| Statement { review_on: day.into(), ..stated("2026-12-19T08:00:00Z") };
        assert!(Snapshot::review_due(&with_day("2026-12-19"), now));
        assert!(!Snapshot::review_due(&with_day("2026-12-20"), now));
        assert!(!Snapshot::review_due(
            &Statement { review_on: "2027-01-31".into(), ..stated("2026-11-01T08:00:00Z") },
            now
        ));
    }

    #[test]
    fn gzip_round_trips_one_body_after_another_on_one_thread() {
        use std::io::Read;
        let bodies = ["<p>Menden</p>".repeat(1000), String::new(), "ä€😀".repeat(7), "x".into()];
        for body in bodies.iter().chain(bodies.iter()) {
            let mut out = String::new();
            flate2::read::GzDecoder::new(&gzip(body.as_bytes())[..]).read_to_string(&mut out).unwrap();
            assert_eq!(&out, body);
        }
        assert!(gzip(bodies[0].as_bytes()).len() < bodies[0].len() / 20);
    }

    fn town(ags: &str, district: &str, lat: f64) -> Municipality {
        Municipality {
            ags: ags.into(),
            slug: format!("t{ags}"),
            name: format!("Town {ags}"),
            district_ags: district.into(),
            member: true,
            population: None,
            lat,
            lon: 8.0,
            contact: Contact::default(),
        }
    }

    fn service(slug: &str, responsibility: Responsibility) -> Service {
        Service {
            slug: slug.into(),
            name: slug.into(),
            area: "vehicle".into(),
            responsibility,
            leika_key: String::new(),
            synonyms: vec![],
            description: String::new(),
            sort_order: 0,
        }
    }

    fn statement(scope: &str, service: &str, level: Level) -> Statement {
        Statement {
            scope_ags: scope.into(),
            service_slug: service.into(),
            level,
            restrictions: String::new(),
            workaround: String::new(),
            backlog: String::new(),
            expected_return: String::new(),
            author: String::new(),
            stated_at: "2026-01-01T00:00:00Z".into(),
            version: 1,
            review_on: String::new(),
        }
    }

    fn office(slug: &str, owner: &str, lat: f64) -> Office {
        Office {
            slug: slug.into(),
            name: slug.into(),
            owner_ags: owner.into(),
            street: String::new(),
            postal_code: String::new(),
            city: String::new(),
            lat,
            lon: 8.0,
            phone: String::new(),
            email: String::new(),
            website: String::new(),
            opening_hours: String::new(),
        }
    }

    fn referral(id: &str, office: &str, for_ags: &str, until: &str) -> Referral {
        Referral {
            id: id.into(),
            office_slug: office.into(),
            service_slug: "car".into(),
            for_ags: for_ags.into(),
            conditions: String::new(),
            valid_from: String::new(),
            valid_until: until.into(),
        }
    }

    fn snapshot() -> Snapshot {
        let data = Dataset {
            municipalities: std::sync::Arc::new(vec![
                town("01001001", "01001", 50.0),
                town("01001002", "01001", 50.1),
                town("02002001", "02002", 51.0),
            ]),
            services: std::sync::Arc::new(vec![
                service("car", Responsibility::District),
                service("id", Responsibility::Municipality),
            ]),
            statements: vec![
                statement("01001", "car", Level::Unavailable),
                statement("01001002", "car", Level::Limited),
                statement("01001", "id", Level::Emergency),
                statement("02002001", "car", Level::Emergency),
            ],
            offices: std::sync::Arc::new(vec![
                office("far", "", 52.0),
                office("near", "02002001", 50.5),
                office("old", "", 50.0),
            ]),
            referrals: vec![
                referral("r1", "far", "01001", ""),
                referral("r2", "near", "01001", "2999-12-31"),
                referral("r3", "old", "01001", "2000-01-01"),
            ],
            postal_codes: std::sync::Arc::new(vec![
                PostalCode { postal_code: "11111".into(), municipality_ags: "01001001".into(), place: "A".into() },
                PostalCode { postal_code: "11111".into(), municipality_ags: "01001002".into(), place: "B".into() },
            ]),
            ..Dataset::default()
        };
        Snapshot::build(data, "2026-01-01T00:00:00Z".into(), 1)
    }

    #[test]
    fn a_towns_statement_wins_over_its_districts() {
        let snap = snapshot();
        let car = snap.service("car").unwrap();
        let a = snap.availability(snap.municipality("t01001001").unwrap(), car);
        assert_eq!((a.level, a.source), (Level::Unavailable, Source::District));
        let b = snap.availability(snap.municipality("t01001002").unwrap(), car);
        assert_eq!((b.level, b.source), (Level::Limited, Source::Municipality));
    }

    #[test]
    fn district_statements_do_not_apply_to_town_level_services() {
        let snap = snapshot();
        let a = snap.availability(snap.municipality("t01001001").unwrap(), snap.service("id").unwrap());
        assert_eq!((a.level, a.source), (Level::Normal, Source::NoReport));
    }

    #[test]
    fn alternatives_are_valid_today_nearest_first_with_their_own_status() {
        let snap = snapshot();
        let alts = snap.alternatives(snap.municipality("t01001001").unwrap(), snap.service("car").unwrap());
        let names: Vec<_> = alts.iter().map(|a| a.office.slug.as_str()).collect();
        assert_eq!(names, ["near", "far"], "expired referral left out, nearest first");
        assert_eq!(alts[0].level, Level::Emergency, "status at the office's own town");
        assert_eq!(alts[1].level, Level::Normal, "unknown owner: nothing reported");
        assert!(alts[0].distance_km < alts[1].distance_km);
        assert!(snap.alternatives(snap.municipality("t02002001").unwrap(), snap.service("car").unwrap()).is_empty());
    }

    #[test]
    fn a_postal_code_can_span_several_towns() {
        let snap = snapshot();
        assert_eq!(snap.municipalities_for_postal_code("11111").len(), 2);
        assert!(snap.municipalities_for_postal_code("99999").is_empty());
    }

    #[tokio::test]
    async fn pages_are_rendered_once_per_snapshot() {
        let snap = snapshot();
        let mut calls = 0;
        for _ in 0..3 {
            let page = snap
                .cached("k", "text/plain", || {
                    calls += 1;
                    Ok("hello".into())
                })
                .await
                .unwrap();
            assert_eq!(&page.body[..], b"hello");
        }
        assert_eq!(calls, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_wait_for_one_rendering_and_others_do_not_wait() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let snap = Arc::new(snapshot());
        let renders = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let mut waiting = Vec::new();
        for _ in 0..8 {
            let (snap, renders, started_tx, release_rx) =
                (snap.clone(), renders.clone(), started_tx.clone(), release_rx.clone());
            waiting.push(tokio::spawn(async move {
                snap.cached("slow", "text/plain", || {
                    renders.fetch_add(1, Ordering::SeqCst);
                    started_tx.send(()).unwrap();
                    // A slow rendering: blocks this thread until the test lets it finish.
                    release_rx.lock().unwrap().recv().unwrap();
                    Ok("slow page".into())
                })
                .await
                .unwrap()
            }));
        }
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap()).await.unwrap();
        // While one rendering blocks its thread, other work on the executor (more tasks than
        // there are workers) still runs, and other pages render.
        let others: Vec<_> = (0..8).map(|i| tokio::spawn(async move { i * 2 })).collect();
        for (i, other) in others.into_iter().enumerate() {
            assert_eq!(other.await.unwrap(), i * 2);
        }
        let fast = snap.cached("fast", "text/plain", || Ok("fast page".into())).await.unwrap();
        assert_eq!(&fast.body[..], b"fast page");
        release_tx.send(()).unwrap();
        for w in waiting {
            assert_eq!(&w.await.unwrap().body[..], b"slow page");
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1, "one rendering for all eight first requests");
    }

    #[test]
    fn unchanged_texts_keep_their_html_across_snapshots() {
        let note = |id: &str, body: &str| Announcement {
            id: id.into(),
            scope_kind: ScopeKind::Area,
            scope_ref: String::new(),
            lang: "de".into(),
            title: id.into(),
            body: body.into(),
            author: String::new(),
            published_at: Some("2026-01-01T00:00:00Z".into()),
            updated_at: "2026-01-01T00:00:00Z".into(),
            version: 1,
        };
        let mut data = snapshot().data.clone();
        data.announcements = vec![note("a", "alt"), note("b", "- bleibt")];
        let first = Snapshot::build(data, String::new(), 1);
        let mut data = first.data.clone();
        data.announcements[0].body = "**neu**".into();
        let second = Snapshot::build_from(data, String::new(), 2, Some(first.places.clone()), &first.markdown);
        let kept = &second.data.announcements[1].body;
        let (a, b) = (first.markdown.0.get(kept.as_str()).unwrap(), second.markdown.0.get(kept.as_str()).unwrap());
        assert!(Arc::ptr_eq(a, b), "an unchanged text is not rendered again");
        assert_eq!(second.markdown.html("**neu**"), "<p><strong>neu</strong></p>\n");
    }
}
