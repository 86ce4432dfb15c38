//! The read-only JSON API under /api/v1, documented by the OpenAPI document at /api/v1/openapi.json.
//! The write API (`api_write`) shares its routes, errors and document.
//!
//! Like the public pages, every answer comes from the snapshot: the serialised JSON is cached in
//! the snapshot's render cache, so it is built once per data change and then sent with an ETag,
//! pre-compressed, and answered with 304 when the client already has it. Errors are JSON with a
//! stable code and a human message from the catalogue; nothing from the request is echoed back.

pub mod editing;
pub mod error;
pub mod recovery;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::domain::*;
use crate::http;
use crate::http::api::error::{ApiError, Fail};
use crate::i18n;
use crate::read::live::Shared;
use crate::read::search::Topic;
use crate::read::snapshot::{Availability, CachedPage, Snapshot, Source};
use crate::site::paths::Part;
use crate::site::render;
use crate::write::formats::{Slug, SlugFilter};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/municipalities", get(municipalities))
        .route("/municipalities/{slug}", get(municipality))
        .route("/municipalities/{slug}/services/{service}/alternatives", get(alternatives))
        .route("/services", get(services))
        .route("/services/{slug}", get(service))
        .route("/announcements", get(announcements))
        .route("/search", get(search))
        .route("/openapi.json", get(openapi_json))
        .merge(crate::http::api::editing::router())
        .merge(crate::http::api::recovery::router())
        .merge(crate::http::subscriptions::api_routes())
        .merge(crate::http::api::webhooks::router())
        .fallback(unknown_route)
        .method_not_allowed_fallback(other_method)
        // Added last so that it covers the fallbacks too: other sites embed these answers.
        .layer(axum::middleware::map_response(cors))
}

/// The same limits as the search form of the public pages.
const MAX_QUERY: usize = 200;
const MAX_PLACE: usize = 100;

// ---------------------------------------------------------------------------------------------
// Errors

/// Everything that can go wrong, each with its status, code and catalogue message.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Problem {
    UnknownRoute,
    NoSuchMunicipality,
    NoSuchService,
    InvalidSlug,
    InvalidParameters,
    TooLong,
    EmptySearch,
    MethodNotAllowed,
    Internal,
}

impl Problem {
    fn status(self) -> StatusCode {
        match self {
            Problem::UnknownRoute | Problem::NoSuchMunicipality | Problem::NoSuchService => StatusCode::NOT_FOUND,
            Problem::InvalidSlug | Problem::InvalidParameters | Problem::TooLong | Problem::EmptySearch => {
                StatusCode::BAD_REQUEST
            }
            Problem::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Problem::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            _ => "internal_error",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Problem::UnknownRoute => "api.unknown_route",
            Problem::NoSuchMunicipality => "api.no_such_municipality",
            Problem::NoSuchService => "api.no_such_service",
            Problem::InvalidSlug => "api.invalid_slug",
            Problem::InvalidParameters => "api.invalid_parameters",
            Problem::TooLong => "api.too_long",
            Problem::EmptySearch => "api.empty_search",
            Problem::MethodNotAllowed => "api.method_not_allowed",
            Problem::Internal => "api.internal",
        }
    }
}

impl From<Problem> for Fail {
    fn from(p: Problem) -> Fail {
        Fail::new(p.status(), p.code(), p.key())
    }
}

/// The language for error messages: the client's preference among ours (`Accept-Language`,
/// weighed by q-values, `q=0` refusing), German otherwise.
pub(crate) fn message_lang(headers: &HeaderMap) -> &'static str {
    i18n::negotiate(headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or(""))
}

pub(crate) fn problem(headers: &HeaderMap, p: Problem) -> Response {
    Fail::from(p).response(headers)
}

async fn unknown_route(headers: HeaderMap) -> Response {
    problem(&headers, Problem::UnknownRoute)
}

/// Answers CORS preflights (for reading: writes are not meant for scripts on other sites) and
/// refuses other methods a route does not have; axum adds the route's real `Allow` header.
async fn other_method(method: Method, headers: HeaderMap) -> Response {
    if method == Method::OPTIONS {
        return (
            StatusCode::NO_CONTENT,
            [
                (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, "if-none-match, accept-language"),
                (header::ACCESS_CONTROL_MAX_AGE, "86400"),
            ],
        )
            .into_response();
    }
    problem(&headers, Problem::MethodNotAllowed)
}

async fn cors(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    // Without this, scripts on other sites could not read the ETag to revalidate.
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("etag"));
    res
}

/// Checks a slug from the path before it is looked up.
pub(crate) fn valid_slug(s: &str) -> Result<&str, Problem> {
    parse_slug(s).map_err(|e| match e {
        SlugError::TooLong => Problem::TooLong,
        SlugError::Invalid => Problem::InvalidSlug,
    })
}

// ---------------------------------------------------------------------------------------------
// Sending

/// Serialises (once per snapshot) and sends a response; `key` must be bounded by the data, never
/// free text from the request, or the cache would grow with every hostile query.
pub(crate) async fn cached_json<T: Serialize>(
    headers: &HeaderMap,
    snap: &Snapshot,
    key: &str,
    build: impl FnOnce() -> T,
) -> Response {
    match snap.cached(&format!("api:{key}"), http::JSON, || Ok(serde_json::to_string(&build())?)).await {
        Ok(page) => http::send(headers, &page, StatusCode::OK),
        Err(e) => {
            tracing::error!(error = %e, key, "API serialisation failed");
            problem(headers, Problem::Internal)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schemas

#[derive(Serialize, ToSchema)]
pub struct DistrictRef {
    #[schema(example = "maerkischer-kreis")]
    slug: String,
    #[schema(example = "Märkischer Kreis")]
    name: String,
    /// Official district key (5 digits).
    #[schema(example = "05962")]
    ags: String,
}

#[derive(Serialize, ToSchema)]
pub struct MunicipalityRef {
    #[schema(example = "menden-sauerland")]
    slug: String,
    #[schema(example = "Menden (Sauerland)")]
    name: String,
    /// Official municipality key (AGS, 8 digits).
    #[schema(example = "05962040")]
    ags: String,
    district: Option<DistrictRef>,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceRef {
    #[schema(example = "fahrzeug-zulassen")]
    slug: String,
    #[schema(example = "Fahrzeug zulassen")]
    name: String,
    /// Service area: `registration`, `civil_registry`, `social`, `vehicle`, `finance` or `trade`.
    #[schema(example = "vehicle")]
    area: String,
}

/// How many services (of a town) or towns (for a service) are at each level.
#[derive(Serialize, ToSchema, Default)]
pub struct Counts {
    normal: usize,
    limited: usize,
    emergency: usize,
    unavailable: usize,
}

impl Counts {
    fn add(&mut self, l: Level) {
        match l {
            Level::Normal => self.normal += 1,
            Level::Limited => self.limited += 1,
            Level::Emergency => self.emergency += 1,
            Level::Unavailable => self.unavailable += 1,
        }
    }
}

/// The state of one service for the residents of one town.
#[derive(Serialize, ToSchema)]
pub struct Status {
    level: Level,
    /// Who stated it: the town, its district (for district-level services), `derived` from the
    /// recovery of the procedures it needs, or nobody (no disruption reported, level `normal`).
    source: Source,
    /// Name of the town or district that stated it.
    stated_by: Option<String>,
    /// What is restricted.
    restrictions: Option<String>,
    /// What to do instead.
    workaround: Option<String>,
    /// Backlog and processing time.
    backlog: Option<String>,
    /// Expected return to normal operation as stored: a day (`2026-12-15`), a week (`2026-W51`),
    /// half a month (`2026-12-H2`), a month (`2026-12`) or `unknown`; null when not stated or
    /// when the service is in normal operation.
    #[schema(example = "2026-12-H2")]
    expected_return: Option<String>,
    /// The same as a period with its first and last day.
    expected_return_span: Option<ExpectedSpan>,
    /// When it was stated (RFC 3339, UTC).
    #[schema(format = DateTime)]
    stated_at: Option<String>,
    /// Whether other offices accept the service instead (see the alternatives endpoint).
    has_alternatives: bool,
    /// The procedures the service needs and how far each is rolled out in this town; when
    /// `source` is `derived`, the level follows from these.
    derivation: Vec<crate::read::snapshot::Derivation>,
}

/// A service's state in the town being looked at.
#[derive(Serialize, ToSchema)]
pub struct ServiceStatus {
    service: ServiceRef,
    #[serde(flatten)]
    status: Status,
}

/// A town's state for the service being looked at.
#[derive(Serialize, ToSchema)]
pub struct MunicipalityStatus {
    municipality: MunicipalityRef,
    #[serde(flatten)]
    status: Status,
}

#[derive(Serialize, ToSchema)]
pub struct MunicipalitySummary {
    #[schema(example = "menden-sauerland")]
    slug: String,
    #[schema(example = "Menden (Sauerland)")]
    name: String,
    /// Official municipality key (AGS, 8 digits).
    #[schema(example = "05962040")]
    ags: String,
    district: Option<DistrictRef>,
    lat: f64,
    lon: f64,
    population: Option<i64>,
    postal_codes: Vec<String>,
    /// Member of the provider (otherwise an affected customer).
    member: bool,
    /// Services of this town per level.
    counts: Counts,
    /// The town's page on the public site.
    html_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct MunicipalityList {
    /// When the data last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    changed_at: String,
    municipalities: Vec<MunicipalitySummary>,
}

/// Ways to reach an administration. Web addresses are only given when they are http(s).
#[derive(Serialize, ToSchema)]
pub struct ContactOut {
    phone: Option<String>,
    email: Option<String>,
    website: Option<String>,
    /// The emergency website set up during the outage.
    emergency_website: Option<String>,
    /// Social media accounts as plain text, e.g. "Facebook: Stadt Menden".
    social_media: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OfficeOut {
    #[schema(example = "strassenverkehrsamt-dortmund")]
    slug: String,
    name: String,
    street: Option<String>,
    postal_code: Option<String>,
    city: Option<String>,
    lat: f64,
    lon: f64,
    phone: Option<String>,
    email: Option<String>,
    website: Option<String>,
    opening_hours: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MunicipalityDetail {
    #[serde(flatten)]
    summary: MunicipalitySummary,
    /// When information relevant to this town last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    changed_at: String,
    contact: ContactOut,
    /// The district's contact, for district-level services; null when it has none.
    district_contact: Option<ContactOut>,
    /// Offices of the town and of its district.
    offices: Vec<OfficeOut>,
    /// Every service of the catalogue, in catalogue order.
    services: Vec<ServiceStatus>,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceSummary {
    #[schema(example = "fahrzeug-zulassen")]
    slug: String,
    #[schema(example = "Fahrzeug zulassen")]
    name: String,
    #[schema(example = "vehicle")]
    area: String,
    responsibility: Responsibility,
    /// Key in the federal service catalogue (LeiKa/FIM), when known.
    leika_key: Option<String>,
    /// Other words people use for it.
    synonyms: Vec<String>,
    description: Option<String>,
    /// Towns per level for this service.
    counts: Counts,
    /// The service's page on the public site.
    html_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceList {
    #[schema(format = DateTime)]
    changed_at: String,
    services: Vec<ServiceSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceDetail {
    #[serde(flatten)]
    summary: ServiceSummary,
    /// When a statement about this service last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    changed_at: String,
    /// The service in every town, in name order.
    municipalities: Vec<MunicipalityStatus>,
}

/// An office that accepts the service from the town's residents instead.
#[derive(Serialize, ToSchema)]
pub struct AlternativeOut {
    office: OfficeOut,
    /// Straight-line distance from the town, in km, rounded to 0.1.
    #[schema(example = 31.4)]
    distance_km: f64,
    /// The service's own current level at that office.
    level: Level,
    conditions: Option<String>,
    #[schema(format = Date)]
    valid_from: Option<String>,
    #[schema(format = Date)]
    valid_until: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Alternatives {
    municipality: MunicipalityRef,
    service: ServiceRef,
    /// The service's state in the town itself.
    availability: Status,
    /// Valid referrals, nearest first.
    alternatives: Vec<AlternativeOut>,
    /// The same answer on the public site.
    html_url: String,
}

/// Who an announcement is about.
#[derive(Serialize, ToSchema)]
pub struct ScopeOut {
    kind: ScopeKind,
    /// AGS of the district or town, slug of the service; null for the whole area.
    #[serde(rename = "ref")]
    reference: Option<String>,
    /// Display name of the scope.
    name: String,
}

#[derive(Serialize, ToSchema)]
pub struct AnnouncementOut {
    id: String,
    scope: ScopeOut,
    #[schema(example = "de")]
    lang: String,
    title: String,
    /// The text as written (Markdown).
    body_markdown: String,
    /// The text rendered to sanitised HTML (no scripts, styles or event handlers).
    body_html: String,
    #[schema(format = DateTime)]
    published_at: String,
    /// Later than `published_at` when the announcement was corrected.
    #[schema(format = DateTime)]
    updated_at: String,
    html_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct AnnouncementList {
    #[schema(format = DateTime)]
    changed_at: String,
    /// Newest first.
    announcements: Vec<AnnouncementOut>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchHit {
    service: ServiceRef,
    /// The service's state in the town, when the place named exactly one town.
    availability: Option<Status>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    /// Towns matching `place` (a postal code may match several; a name shared by many towns
    /// gives the 20 with the most inhabitants among equally good matches).
    municipalities: Vec<MunicipalityRef>,
    /// How many towns match `place` in all; more than `municipalities` holds when the list is cut.
    municipalities_total: usize,
    /// `place` was given but matched no town.
    place_unknown: bool,
    /// Services matching `q`, best first.
    services: Vec<SearchHit>,
    /// Life events `q` names ("Kind geboren"); their services are among `services`.
    life_events: Vec<TopicOut>,
    /// Matters `q` names that another authority handles ("Kindergeld"), with where to go.
    elsewhere: Vec<TopicOut>,
}

#[derive(Serialize, ToSchema)]
pub struct TopicOut {
    #[schema(example = "birth")]
    key: String,
    /// In the language asked for.
    text: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AnnouncementParams {
    /// Only announcements a resident of this town should see: area-wide, their district's and
    /// their town's.
    #[param(value_type = Option<SlugFilter>, example = "menden-sauerland")]
    municipality: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchParams {
    /// What the citizen wants to do, in their words (German; synonyms, ae/oe/ue and small typos
    /// are tolerated). At most 200 characters.
    #[param(max_length = 200, example = "Auto anmelden")]
    q: Option<String>,
    /// Town name or postal code. At most 100 characters.
    #[param(max_length = 100, example = "58706")]
    place: Option<String>,
    /// The language of `q` and of the texts in the answer; German words are understood in
    /// every language, and a language we do not have is answered in German.
    #[param(value_type = Option<String>, example = "en")]
    lang: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Building the answers from the snapshot

/// Empty text means "not stated"; the API says so with null.
fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() { None } else { Some(s.to_string()) }
}

/// Web addresses only when they are http(s), so embedding sites cannot be handed `javascript:`.
fn opt_url(s: &str) -> Option<String> {
    opt(http_url(s))
}

fn district_ref(snap: &Snapshot, m: &Municipality) -> Option<DistrictRef> {
    snap.district(&m.district_ags).map(|d| DistrictRef {
        slug: d.slug.clone(),
        name: d.name.clone(),
        ags: d.ags.clone(),
    })
}

pub(crate) fn municipality_ref(snap: &Snapshot, m: &Municipality) -> MunicipalityRef {
    MunicipalityRef { slug: m.slug.clone(), name: m.name.clone(), ags: m.ags.clone(), district: district_ref(snap, m) }
}

pub(crate) fn service_ref(s: &Service) -> ServiceRef {
    ServiceRef { slug: s.slug.clone(), name: s.name.clone(), area: s.area.clone() }
}

fn status(snap: &Snapshot, m: &Municipality, s: &Service, a: Availability) -> Status {
    let stated_by = match a.source {
        Source::Municipality => Some(m.name.clone()),
        Source::District => snap.district(&m.district_ags).map(|d| d.name.clone()),
        Source::Derived => Some(snap.data.provider_name.clone()),
        Source::NoReport => None,
    };
    let d = snap.details(m, s, &a);
    Status {
        level: a.level,
        source: a.source,
        stated_by,
        restrictions: opt(&d.restrictions),
        workaround: opt(&d.workaround),
        backlog: opt(&d.backlog),
        expected_return: if a.level == Level::Normal { None } else { opt(&d.expected_return) },
        expected_return_span: if a.level == Level::Normal { None } else { expected_span(&d.expected_return) },
        stated_at: opt(&d.stated_at),
        has_alternatives: snap.has_alternatives(m, s),
        derivation: d.derivation,
    }
}

/// When a service is expected back, as a period (a day is a period of one day).
#[derive(Serialize, ToSchema)]
pub struct ExpectedSpan {
    /// How precisely it is known.
    #[schema(example = "second_half")]
    precision: &'static str,
    /// The first day it may be; null when not foreseeable.
    #[schema(format = Date, example = "2026-12-16")]
    earliest: Option<String>,
    /// The last day it may be; null when not foreseeable.
    #[schema(format = Date, example = "2026-12-31")]
    latest: Option<String>,
    /// In words, in German as the pages say it.
    #[schema(example = "Mitte bis Ende Dezember 2026")]
    text: String,
}

/// `expected_return` as a period; `None` when empty.
pub fn expected_span(stored: &str) -> Option<ExpectedSpan> {
    let e = crate::domain::expected::Expected::parse(stored)?;
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    Some(ExpectedSpan {
        precision: e.precision(),
        earliest: e.span().map(|(first, _)| day(first)),
        latest: e.span().map(|(_, last)| day(last)),
        text: i18n::expected_return(i18n::DEFAULT_LANG, stored),
    })
}

fn contact(c: &Contact) -> ContactOut {
    ContactOut {
        phone: opt(&c.phone),
        email: opt(&c.email),
        website: opt_url(&c.website),
        emergency_website: opt_url(&c.emergency_website),
        social_media: c.social_media.lines().filter_map(opt).collect(),
    }
}

impl ContactOut {
    fn is_empty(&self) -> bool {
        [&self.phone, &self.email, &self.website, &self.emergency_website].iter().all(|f| f.is_none())
            && self.social_media.is_empty()
    }
}

fn office(o: &Office) -> OfficeOut {
    OfficeOut {
        slug: o.slug.clone(),
        name: o.name.clone(),
        street: opt(&o.street),
        postal_code: opt(&o.postal_code),
        city: opt(&o.city),
        lat: o.lat,
        lon: o.lon,
        phone: opt(&o.phone),
        email: opt(&o.email),
        website: opt_url(&o.website),
        opening_hours: opt(&o.opening_hours),
    }
}

fn municipality_summary(
    snap: &Snapshot,
    public_url: &str,
    m: &Municipality,
    postal_codes: Vec<String>,
) -> MunicipalitySummary {
    let mut counts = Counts::default();
    for s in snap.data.services.iter() {
        counts.add(snap.availability(m, s).level);
    }
    MunicipalitySummary {
        slug: m.slug.clone(),
        name: m.name.clone(),
        ags: m.ags.clone(),
        district: district_ref(snap, m),
        lat: m.lat,
        lon: m.lon,
        population: m.population,
        postal_codes,
        member: m.member,
        counts,
        html_url: format!("{public_url}/kommunen/{}", m.slug),
    }
}

fn service_summary(snap: &Snapshot, public_url: &str, s: &Service) -> ServiceSummary {
    let mut counts = Counts::default();
    for m in snap.data.municipalities.iter() {
        counts.add(snap.availability(m, s).level);
    }
    ServiceSummary {
        slug: s.slug.clone(),
        name: s.name.clone(),
        area: s.area.clone(),
        responsibility: s.responsibility,
        leika_key: opt(&s.leika_key),
        synonyms: s.synonyms.clone(),
        description: opt(&s.description),
        counts,
        html_url: format!("{public_url}/leistungen/{}", s.slug),
    }
}

fn announcement(snap: &Snapshot, public_url: &str, a: &Announcement) -> AnnouncementOut {
    AnnouncementOut {
        id: a.id.clone(),
        scope: ScopeOut {
            kind: a.scope_kind.clone(),
            reference: opt(&a.scope_ref),
            name: render::scope_name(snap, &a.lang, &a.scope_kind, &a.scope_ref),
        },
        lang: a.lang.clone(),
        title: a.title.clone(),
        body_markdown: a.body.clone(),
        body_html: snap.markdown.html(&a.body),
        published_at: a.published_at.clone().unwrap_or_default(),
        updated_at: a.updated_at.clone(),
        html_url: format!("{public_url}/meldungen/{}", a.id),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

// ---------------------------------------------------------------------------------------------
// Answers as values, for the handlers and the static export

fn municipality_list(snap: &Snapshot, public_url: &str) -> MunicipalityList {
    // One pass over the postal codes instead of one per town (10,000 towns in the big demo).
    let mut codes: HashMap<&str, Vec<String>> = HashMap::new();
    for p in snap.data.postal_codes.iter() {
        let list = codes.entry(p.municipality_ags.as_str()).or_default();
        if !list.contains(&p.postal_code) {
            list.push(p.postal_code.clone());
        }
    }
    MunicipalityList {
        changed_at: snap.changed_at.clone(),
        municipalities: snap
            .data
            .municipalities
            .iter()
            .map(|m| municipality_summary(snap, public_url, m, codes.remove(m.ags.as_str()).unwrap_or_default()))
            .collect(),
    }
}

fn municipality_detail(snap: &Snapshot, public_url: &str, m: &Municipality) -> MunicipalityDetail {
    let district = snap.district(&m.district_ags);
    let mut offices: Vec<OfficeOut> = snap.offices_of(&m.ags).into_iter().map(office).collect();
    offices.extend(snap.offices_of(&m.district_ags).into_iter().map(office));
    let codes = snap.postal_codes_of(m).into_iter().map(str::to_string).collect();
    MunicipalityDetail {
        summary: municipality_summary(snap, public_url, m, codes),
        changed_at: snap.changed_at_for(m),
        contact: contact(&m.contact),
        district_contact: district.map(|d| contact(&d.contact)).filter(|c| !c.is_empty()),
        offices,
        services: snap
            .data
            .services
            .iter()
            .map(|s| ServiceStatus { service: service_ref(s), status: status(snap, m, s, snap.availability(m, s)) })
            .collect(),
    }
}

fn alternatives_of(snap: &Snapshot, public_url: &str, m: &Municipality, s: &Service) -> Alternatives {
    Alternatives {
        municipality: municipality_ref(snap, m),
        service: service_ref(s),
        availability: status(snap, m, s, snap.availability(m, s)),
        alternatives: snap
            .alternatives(m, s)
            .into_iter()
            .map(|alt| AlternativeOut {
                office: office(alt.office),
                distance_km: (alt.distance_km * 10.0).round() / 10.0,
                level: alt.level,
                conditions: opt(&alt.referral.conditions),
                valid_from: opt(&alt.referral.valid_from),
                valid_until: opt(&alt.referral.valid_until),
            })
            .collect(),
        html_url: format!("{}/kommunen/{}/leistungen/{}", public_url, m.slug, s.slug),
    }
}

fn service_list(snap: &Snapshot, public_url: &str) -> ServiceList {
    ServiceList {
        changed_at: snap.changed_at.clone(),
        services: snap.data.services.iter().map(|s| service_summary(snap, public_url, s)).collect(),
    }
}

fn service_detail(snap: &Snapshot, public_url: &str, s: &Service) -> ServiceDetail {
    ServiceDetail {
        summary: service_summary(snap, public_url, s),
        changed_at: snap.changed_at_for_service(s),
        municipalities: snap
            .data
            .municipalities
            .iter()
            .map(|m| MunicipalityStatus {
                municipality: municipality_ref(snap, m),
                status: status(snap, m, s, snap.availability(m, s)),
            })
            .collect(),
    }
}

fn announcement_list(snap: &Snapshot, public_url: &str, town: Option<&Municipality>) -> AnnouncementList {
    let list: Vec<&Announcement> = match town {
        Some(m) => snap.announcements_for(m),
        None => snap.published_announcements().collect(),
    };
    AnnouncementList {
        changed_at: snap.changed_at.clone(),
        announcements: list.into_iter().map(|a| announcement(snap, public_url, a)).collect(),
    }
}

/// The OpenAPI document as served.
fn openapi_text() -> String {
    openapi().to_json().expect("the OpenAPI document serialises")
}

/// The answers of the read API that need no query string, as (URL path, JSON), for one part of
/// the static export: with the area the lists and this document, with a town its answer and its
/// alternatives per service, with a service its answer.
pub fn static_answers(snap: &Snapshot, public_url: &str, part: &Part) -> Vec<(String, anyhow::Result<String>)> {
    fn json<T: Serialize>(t: T) -> anyhow::Result<String> {
        Ok(serde_json::to_string(&t)?)
    }
    match part {
        Part::Area => vec![
            ("/api/v1/municipalities".to_string(), json(municipality_list(snap, public_url))),
            ("/api/v1/services".to_string(), json(service_list(snap, public_url))),
            ("/api/v1/announcements".to_string(), json(announcement_list(snap, public_url, None))),
            ("/api/v1/openapi.json".to_string(), Ok(openapi_text())),
        ],
        Part::Town(slug) => {
            let Some(m) = snap.municipality(slug) else { return Vec::new() };
            std::iter::once((
                format!("/api/v1/municipalities/{}", m.slug),
                json(municipality_detail(snap, public_url, m)),
            ))
            .chain(snap.data.services.iter().map(|s| {
                (
                    format!("/api/v1/municipalities/{}/services/{}/alternatives", m.slug, s.slug),
                    json(alternatives_of(snap, public_url, m, s)),
                )
            }))
            .collect()
        }
        Part::Service(slug) => snap
            .service(slug)
            .map(|s| (format!("/api/v1/services/{}", s.slug), json(service_detail(snap, public_url, s))))
            .into_iter()
            .collect(),
        Part::Sitemap | Part::District(_) | Part::Announcement(_) => Vec::new(),
    }
}

#[utoipa::path(
    get,
    path = "/municipalities",
    tag = "municipalities",
    summary = "All towns of the area",
    description = "Every town with its district, location, postal codes and how many of its services are at each level.",
    params(("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has; answered with 304 when unchanged.")),
    responses(
        (status = 200, description = "The towns, in name order.", body = MunicipalityList,
            headers(("ETag" = String, description = "Changes whenever the content does."))),
        (status = 304, description = "Not modified: the client's copy is current."),
    )
)]
async fn municipalities(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let snap = app.snapshot();
    cached_json(&headers, &snap, "municipalities", || municipality_list(&snap, &app.public_url)).await
}

#[utoipa::path(
    get,
    path = "/municipalities/{slug}",
    tag = "municipalities",
    summary = "One town with every service's availability",
    params(
        ("slug" = Slug, Path, description = "The town's slug: 1–100 characters of a-z, 0-9 and -.", example = "menden-sauerland"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has; answered with 304 when unchanged."),
    ),
    responses(
        (status = 200, description = "The town, its contact channels and offices, and every service of the catalogue with its level.",
            body = MunicipalityDetail, headers(("ETag" = String, description = "Changes whenever the content does."))),
        (status = 304, description = "Not modified: the client's copy is current."),
        (status = 400, description = "The slug is malformed or too long.", body = ApiError),
        (status = 404, description = "No town with this slug.", body = ApiError),
    )
)]
async fn municipality(
    State(app): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let snap = app.snapshot();
    let m = match path.map_err(|_| Problem::InvalidParameters).and_then(|Path(slug)| {
        let slug = valid_slug(&slug)?;
        snap.municipality(slug).ok_or(Problem::NoSuchMunicipality)
    }) {
        Ok(m) => m,
        Err(p) => return problem(&headers, p),
    };
    cached_json(&headers, &snap, &format!("municipality:{}", m.slug), || municipality_detail(&snap, &app.public_url, m))
        .await
}

#[utoipa::path(
    get,
    path = "/municipalities/{slug}/services/{service}/alternatives",
    tag = "municipalities",
    summary = "Where else a town's residents can get a service",
    description = "Offices that accept the service from the town's residents instead, nearest first, each with the service's own current level there. Only referrals valid today.",
    params(
        ("slug" = Slug, Path, description = "The town's slug.", example = "menden-sauerland"),
        ("service" = Slug, Path, description = "The service's slug.", example = "fahrzeug-zulassen"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has; answered with 304 when unchanged."),
    ),
    responses(
        (status = 200, description = "The service in the town and its alternatives (possibly none).", body = Alternatives,
            headers(("ETag" = String, description = "Changes whenever the content does."))),
        (status = 304, description = "Not modified: the client's copy is current."),
        (status = 400, description = "A slug is malformed or too long.", body = ApiError),
        (status = 404, description = "No town or no service with this slug.", body = ApiError),
    )
)]
async fn alternatives(
    State(app): State<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let snap = app.snapshot();
    let found = path.map_err(|_| Problem::InvalidParameters).and_then(|Path((slug, service))| {
        let (slug, service) = (valid_slug(&slug)?, valid_slug(&service)?);
        let m = snap.municipality(slug).ok_or(Problem::NoSuchMunicipality)?;
        let s = snap.service(service).ok_or(Problem::NoSuchService)?;
        Ok((m, s))
    });
    let (m, s) = match found {
        Ok(found) => found,
        Err(p) => return problem(&headers, p),
    };
    cached_json(&headers, &snap, &format!("alternatives:{}:{}", m.slug, s.slug), || {
        alternatives_of(&snap, &app.public_url, m, s)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/services",
    tag = "services",
    summary = "The service catalogue",
    description = "Every service with its area, responsibility, LeiKa key, synonyms and how many towns are at each level.",
    params(("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has; answered with 304 when unchanged.")),
    responses(
        (status = 200, description = "The services, in catalogue order.", body = ServiceList,
            headers(("ETag" = String, description = "Changes whenever the content does."))),
        (status = 304, description = "Not modified: the client's copy is current."),
    )
)]
async fn services(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let snap = app.snapshot();
    cached_json(&headers, &snap, "services", || service_list(&snap, &app.public_url)).await
}

#[utoipa::path(
    get,
    path = "/services/{slug}",
    tag = "services",
    summary = "One service in every town",
    params(
        ("slug" = Slug, Path, description = "The service's slug.", example = "fahrzeug-zulassen"),
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has; answered with 304 when unchanged."),
    ),
    responses(
        (status = 200, description = "The service and its availability in every town.", body = ServiceDetail,
            headers(("ETag" = String, description = "Changes whenever the content does."))),
        (status = 304, description = "Not modified: the client's copy is current."),
        (status = 400, description = "The slug is malformed or too long.", body = ApiError),
        (status = 404, description = "No service with this slug.", body = ApiError),
    )
)]
async fn service(State(app): State<Shared>, path: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    let snap = app.snapshot();
    let s = match path.map_err(|_| Problem::InvalidParameters).and_then(|Path(slug)| {
        let slug = valid_slug(&slug)?;
        snap.service(slug).ok_or(Problem::NoSuchService)
    }) {
        Ok(s) => s,
        Err(p) => return problem(&headers, p),
    };
    cached_json(&headers, &snap, &format!("service:{}", s.slug), || service_detail(&snap, &app.public_url, s)).await
}

#[utoipa::path(
    get,
    path = "/announcements",
    tag = "announcements",
    summary = "Published announcements",
    params(
        AnnouncementParams,
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has; answered with 304 when unchanged."),
    ),
    responses(
        (status = 200, description = "Published announcements, newest first, with the text as Markdown and as sanitised HTML.",
            body = AnnouncementList, headers(("ETag" = String, description = "Changes whenever the content does."))),
        (status = 304, description = "Not modified: the client's copy is current."),
        (status = 400, description = "A parameter is malformed or too long.", body = ApiError),
        (status = 404, description = "No town with this slug.", body = ApiError),
    )
)]
async fn announcements(
    State(app): State<Shared>,
    params: Result<Query<AnnouncementParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let snap = app.snapshot();
    let Ok(Query(params)) = params else { return problem(&headers, Problem::InvalidParameters) };
    // An empty value, as a form sends it, means no filter.
    let town = match params.municipality.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(slug) => {
            match valid_slug(slug).and_then(|slug| snap.municipality(slug).ok_or(Problem::NoSuchMunicipality)) {
                Ok(m) => Some(m),
                Err(p) => return problem(&headers, p),
            }
        }
    };
    let key = town.map_or("announcements".to_string(), |m| format!("announcements:{}", m.slug));
    cached_json(&headers, &snap, &key, || announcement_list(&snap, &app.public_url, town)).await
}

#[utoipa::path(
    get,
    path = "/search",
    tag = "search",
    summary = "Find services and towns from what citizens type",
    description = "Give `q`, `place` or both. When `place` names exactly one town, each service found comes with its availability there.",
    params(
        SearchParams,
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has; answered with 304 when unchanged."),
    ),
    responses(
        (status = 200, description = "Matching towns and services.", body = SearchResult,
            headers(("ETag" = String, description = "Changes whenever the content does."))),
        (status = 304, description = "Not modified: the client's copy is current."),
        (status = 400, description = "Neither `q` nor `place` given, or one is too long or malformed.", body = ApiError),
    )
)]
async fn search(
    State(app): State<Shared>,
    params: Result<Query<SearchParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let snap = app.snapshot();
    let Ok(Query(params)) = params else { return problem(&headers, Problem::InvalidParameters) };
    let (q, place) = (params.q.unwrap_or_default(), params.place.unwrap_or_default());
    if q.chars().count() > MAX_QUERY || place.chars().count() > MAX_PLACE {
        return problem(&headers, Problem::TooLong);
    }
    if q.trim().is_empty() && place.trim().is_empty() {
        return problem(&headers, Problem::EmptySearch);
    }
    // A language we do not have answers in German, as the pages do.
    let lang = crate::i18n::language(params.lang.as_deref().unwrap_or_default()).code.as_str();
    let found = crate::read::search::find(&snap, lang, &q, &place);
    let town = found.town();
    let (life_events, elsewhere): (Vec<&Topic>, Vec<&Topic>) =
        found.topics.iter().partition(|t| matches!(t, Topic::LifeEvent(_)));
    let out = |topics: Vec<&Topic>| -> Vec<TopicOut> {
        topics.iter().map(|t| TopicOut { key: t.key().to_string(), text: t.text(lang) }).collect()
    };
    let (life_events, elsewhere) = (out(life_events), out(elsewhere));
    let result = SearchResult {
        place_unknown: found.place_unknown,
        services: found
            .services
            .iter()
            .map(|s| SearchHit {
                service: service_ref(s),
                availability: town.map(|m| status(&snap, m, s, snap.availability(m, s))),
            })
            .collect(),
        municipalities: found.towns.iter().map(|m| municipality_ref(&snap, m)).collect(),
        municipalities_total: found.towns_total,
        life_events,
        elsewhere,
    };
    // Built per request and not kept: free text must not fill the snapshot's cache.
    match serde_json::to_string(&result) {
        Ok(body) => http::send(&headers, &CachedPage::new(http::JSON, body), StatusCode::OK),
        Err(_) => problem(&headers, Problem::Internal),
    }
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3 description of this API.", body = Object))
)]
async fn openapi_json(headers: HeaderMap) -> Response {
    // The document depends only on the code, so it is built once per process.
    static DOC: OnceLock<CachedPage> = OnceLock::new();
    let page = DOC.get_or_init(|| CachedPage::new(http::JSON, openapi_text()));
    http::send(&headers, page, StatusCode::OK)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "notbetrieb API",
        description = "Status of municipal services during an IT outage: per town and per service, \
            the level (`normal`, `limited`, `emergency`, `unavailable`), restrictions, workaround, backlog, \
            expected return and other offices that accept the request. Responses carry an ETag and are \
            answered with 304 to `If-None-Match`; gzip on `Accept-Encoding: gzip`; CORS open to every origin. \
            Errors are `{\"error\": code, \"message\": text}` with a stable code. \
            Reading is public; writing (tags `editing`, `accounts`, `journal`) needs `Authorization: Bearer <API token>` \
            and JSON bodies of at most 256 KiB in which unknown fields are rejected (422).",
    ),
    servers((url = "/api/v1", description = "This server")),
    paths(municipalities, municipality, alternatives, services, service, announcements, search, openapi_json),
    components(schemas(ApiError)),
    tags(
        (name = "municipalities", description = "Towns and their services"),
        (name = "services", description = "The service catalogue"),
        (name = "announcements", description = "News from the provider, districts and towns"),
        (name = "search", description = "Search as on the home page"),
        (name = "meta", description = "About the API itself"),
    )
)]
struct ApiDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::http::api::editing::openapi());
    doc.merge(crate::http::api::recovery::openapi());
    doc.merge(crate::http::subscriptions::openapi());
    doc.merge(crate::http::api::webhooks::openapi());
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.extend(crate::write::formats::all());
    parameters_without_null(&mut doc);
    doc
}

/// Parameters are text on the wire, never JSON null, but utoipa documents an `Option<T>`
/// parameter as "T or null", which invites clients to send the word `null`. That it may be
/// left out is said by `required: false` alone.
fn parameters_without_null(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    let is_null =
        |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for op in operations.into_iter().flatten() {
            let parameters = op.parameters.iter_mut().flatten().filter_map(|p| match p {
                RefOr::T(p) => p.schema.as_mut(),
                RefOr::Ref(_) => None,
            });
            for schema in parameters {
                match schema {
                    RefOr::T(Schema::OneOf(one)) => {
                        one.items.retain(|s| !is_null(s));
                        if one.items.len() == 1 {
                            *schema = one.items.remove(0);
                        }
                    }
                    RefOr::T(Schema::Object(o)) => {
                        if let SchemaType::Array(types) = &o.schema_type {
                            let types: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
                            o.schema_type = match types.as_slice() {
                                [one] => SchemaType::Type(one.clone()),
                                _ => SchemaType::Array(types),
                            };
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_lists_every_route() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        for p in [
            "/municipalities",
            "/municipalities/{slug}",
            "/municipalities/{slug}/services/{service}/alternatives",
            "/services",
            "/services/{slug}",
            "/announcements",
            "/search",
            "/openapi.json",
        ] {
            assert!(paths.iter().any(|k| *k == p), "{p} missing from {paths:?}");
        }
        for schema in ["ApiError", "MunicipalityDetail", "Status", "Alternatives", "AnnouncementList"] {
            assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
        }
        assert_eq!(
            doc["components"]["schemas"]["Level"]["enum"],
            serde_json::json!(["normal", "limited", "emergency", "unavailable"])
        );
    }

    #[test]
    fn enums_are_the_domains_lists() {
        use crate::domain::authz::Role;
        use crate::domain::recovery::{Rollout, Stage};
        let doc = serde_json::to_value(openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let list = |v: Vec<&str>| serde_json::json!(v);
        assert_eq!(schemas["Level"]["enum"], list(crate::write::formats::codes(Level::ALL, Level::as_str)));
        assert_eq!(schemas["Role"]["enum"], list(crate::write::formats::codes(Role::ALL, Role::as_str)));
        assert_eq!(schemas["Stage"]["enum"], list(crate::write::formats::codes(Stage::ALL, Stage::as_str)));
        assert_eq!(schemas["Rollout"]["enum"], list(crate::write::formats::codes(Rollout::ALL, Rollout::as_str)));
        assert_eq!(schemas["ServiceArea"]["enum"], serde_json::json!(SERVICE_AREAS));
        assert_eq!(schemas["ProcedureKind"]["enum"], serde_json::json!(crate::domain::recovery::PROCEDURE_KINDS));
        for kind in schemas["ScopeKindName"]["enum"].as_array().unwrap() {
            assert!(ScopeKind::parse(kind.as_str().unwrap()).is_some(), "{kind}");
        }
        assert_eq!(schemas["ScopeKindName"]["enum"], schemas["ScopeKind"]["enum"]);
        for l in i18n::languages() {
            assert!(schemas["LanguageCode"]["enum"].as_array().unwrap().contains(&serde_json::json!(l.code)));
        }
    }

    #[test]
    fn document_names_every_refusal_and_no_null_parameter() {
        let doc = serde_json::to_value(openapi()).unwrap();
        // Routes that answer 400 for a malformed id or slug in the path say so.
        for (path, method) in
            [("/announcements/{id}", "delete"), ("/referrals/{id}", "delete"), ("/procedures/{slug}", "get")]
        {
            assert!(doc["paths"][path][method]["responses"]["400"].is_object(), "{method} {path}");
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let schema = p["schema"].to_string();
                    assert!(!schema.contains("null"), "{method} {path} {}: {schema}", p["name"]);
                    if p["name"] == "slug" || p["name"] == "service" {
                        assert_eq!(p["schema"]["$ref"], "#/components/schemas/Slug", "{method} {path}");
                    }
                }
            }
        }
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["StatementInput"]["properties"]["level"]["$ref"], "#/components/schemas/Level");
        assert_eq!(schemas["IfMatch"]["pattern"], crate::write::formats::IF_MATCH_PATTERN);
    }

    #[test]
    fn error_language_follows_accept_language() {
        let mut h = HeaderMap::new();
        assert_eq!(message_lang(&h), "de");
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en-GB,en;q=0.8,de;q=0.5"));
        assert_eq!(message_lang(&h), "en");
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr-FR, en;q=0, de"));
        assert_eq!(message_lang(&h), "de");
    }

    #[test]
    fn slugs_are_checked_before_lookup() {
        assert!(valid_slug("menden-sauerland").is_ok());
        assert!(matches!(valid_slug("<script>"), Err(Problem::InvalidSlug)));
        assert!(matches!(valid_slug(&"a".repeat(101)), Err(Problem::TooLong)));
    }
}
