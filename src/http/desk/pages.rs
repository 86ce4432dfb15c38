//! The editing desk's content pages: statements, contact channels and referrals of towns and
//! districts, announcements, FAQ, journal, API tokens and accounts. Sign-in and the session live
//! in `desk`.
//!
//! Every page works without JavaScript. Every form carries the session's CSRF token and ends in
//! POST-redirect-GET with a notice (`?gespeichert=N`, `?entfernt=1`), except where a secret is
//! shown once (new API token, setup link). Every change goes through `writes`, and so through
//! `authz`; the pages only ask `authz` what to show: editors cannot open what they may not
//! change, viewers read everything without forms.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use crate::auth;
use crate::domain::authz::{Action, authorize};
use crate::domain::authz::{Principal, Role};
use crate::domain::time;
use crate::domain::*;
use crate::http::desk::{self, CsrfForm, Desk};
use crate::i18n;
use crate::read::live::Shared;
use crate::read::snapshot::{Availability, Details, Snapshot, Source};
use crate::site::render::{self, v};
use crate::store::journal;
use crate::store::{self, accounts};
use crate::write::{self, WriteError};

pub fn router() -> Router<Shared> {
    Router::new()
        .nest("/kommunen", place_router(PlaceKind::Town))
        .nest("/kreise", place_router(PlaceKind::District))
        .route("/meldungen", get(announcements))
        .route("/meldungen/neu", get(announcement_new).post(announcement_create))
        .route("/meldungen/{id}", get(announcement_edit).post(announcement_update))
        .route("/meldungen/{id}/zuruecknehmen", post(announcement_withdraw))
        .route("/fragen", get(faq_list))
        .route("/fragen/neu", get(faq_new).post(faq_create))
        .route("/fragen/{id}", get(faq_edit).post(faq_update))
        .route("/journal", get(journal_page))
        .route("/journal.csv", get(journal_csv))
        .route("/journal.json", get(journal_json))
        .route("/tokens", get(tokens_page).post(token_create))
        .route("/tokens/{id}/widerrufen", post(token_revoke))
        .route("/benutzer", get(users_page).post(user_create))
        .route("/benutzer/{id}", get(user_page).post(user_update))
        .route("/benutzer/{id}/zuruecksetzen", post(user_reset))
}

/// The same pages for a town (`/kommunen/…`) and a district (`/kreise/…`).
fn place_router(kind: PlaceKind) -> Router<Shared> {
    Router::new()
        .route("/{slug}", get(place_page))
        .route("/{slug}/status", post(place_status))
        .route("/{slug}/leistungen/{service}", get(statement_page).post(statement_save))
        .route("/{slug}/leistungen/{service}/zuruecknehmen", post(statement_withdraw))
        .route("/{slug}/kontakt", post(contact_save))
        .route("/{slug}/dienststellen", post(office_save))
        .route("/{slug}/ausweichstellen", post(referral_add))
        .route("/{slug}/ausweichstellen/{id}/loeschen", post(referral_delete))
        .layer(Extension(kind))
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn redirect(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A page that does not exist or that this user may not open (nothing was changed).
fn unavailable(app: &Shared, desk: &Desk, status: StatusCode) -> Response {
    let key = if status == StatusCode::FORBIDDEN { "write.forbidden" } else { "write.not_found" };
    let content = context! {
        title => i18n::t(desk.lang, "desk_form.unavailable_title"), message => i18n::t(desk.lang, key), back => "/intern",
    };
    desk.page(app, status, "desk/refused.html", content)
}

/// After a write: on to `done` (POST-redirect-GET with a notice), or the refusal with a way back.
fn after_write<T>(app: &Shared, desk: &Desk, result: write::WriteResult<T>, done: &str, back: &str) -> Response {
    match result {
        Ok(_) => redirect(done),
        Err(e) => desk::write_error_page(app, desk, e, back),
    }
}

fn internal(app: &Shared, desk: &Desk, e: anyhow::Error) -> Response {
    desk::write_error_page(app, desk, WriteError::Internal(e), "/intern")
}

/// Editors open only what they may change; everyone else reads everything.
fn may_open(p: &Principal, may_change: bool) -> bool {
    may_change || p.role != Role::Editor
}

/// The notice after a redirect (desk pages and the recovery board): `?gespeichert=N`,
/// `?entfernt=1`, and with a step back `&mit=N` dependent procedures that fell back.
#[derive(Deserialize, Default)]
pub(crate) struct Notice {
    /// How many things were saved.
    #[serde(default)]
    gespeichert: String,
    #[serde(default)]
    entfernt: String,
    /// How many dependent procedures fell back with a step back.
    #[serde(default)]
    mit: String,
}

impl Notice {
    /// The notice in words; `saved_n` is the message for more than one saved thing.
    pub(crate) fn text_with(&self, lang: &str, saved_n: &str) -> Option<String> {
        let mut text = match self.gespeichert.parse::<usize>() {
            Ok(n) if n > 1 => i18n::tf(lang, saved_n, &[("n", n.to_string())]),
            Ok(_) => i18n::t(lang, "desk_form.saved"),
            Err(_) if !self.entfernt.is_empty() => return Some(i18n::t(lang, "desk_form.removed")),
            Err(_) => return None,
        };
        let fallen: usize = self.mit.parse().unwrap_or(0);
        if fallen > 0 {
            text.push(' ');
            text.push_str(&i18n::tf(lang, "board.cascaded", &[("n", fallen.to_string())]));
        }
        Some(text)
    }

    pub(crate) fn text(&self, lang: &str) -> Option<String> {
        self.text_with(lang, "desk_form.saved_n")
    }
}

/// A form as name/value pairs, for forms with repeated names (checkbox groups).
pub(crate) struct Fields(pub(crate) Vec<(String, String)>);

impl Fields {
    pub(crate) fn one(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }
    /// Every value given for `name`, empty ones included.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
    /// Every value given for `name` that is not blank.
    pub(crate) fn filled(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.clone()).collect()
    }
}

/// The stored version of one row, for forms that must not overwrite someone else's change.
async fn stored_version(app: &Shared, row: store::VersionedRow, key: &str) -> anyhow::Result<i64> {
    let mut c = app.store.read().await?;
    store::stored_version(&mut c, row, key).await
}

/// A town or district name for an AGS, or the AGS itself; `area`, `user:…` stay as they are.
fn scope_label(snap: &Snapshot, lang: &str, scope: &str) -> String {
    if let Some(m) = snap.municipality_by_ags(scope) {
        format!("{} ({scope})", m.name)
    } else if let Some(d) = snap.district(scope) {
        format!("{} ({scope})", d.name)
    } else if scope == "area" {
        i18n::t(lang, "scope.area")
    } else {
        scope.to_string()
    }
}

/// German civil time as typed into a form ("2026-12-01T08:00") to UTC.
fn berlin_to_utc(local: NaiveDateTime) -> DateTime<Utc> {
    // The offset at one hour before is right everywhere except inside the hour the clocks change.
    let guess = local.and_utc() - Duration::hours(1);
    local.and_utc() - Duration::hours(time::berlin_offset_hours(guess))
}

fn parse_local(value: &str) -> Option<DateTime<Utc>> {
    let v = value.trim();
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .map(berlin_to_utc)
}

/// UTC (RFC 3339) to the value of a `datetime-local` field in German time.
fn to_local_input(rfc3339: &str) -> String {
    time::parse_rfc3339(rfc3339).map(|t| time::berlin_local(t).format("%Y-%m-%dT%H:%M").to_string()).unwrap_or_default()
}

fn invalid(field: &str, message: &'static str) -> WriteError {
    WriteError::Invalid { field: field.into(), message }
}

// ---------------------------------------------------------------------------------------------
// Towns and districts: statements, contact channels, referrals

#[derive(Clone, Copy, PartialEq, Eq)]
enum PlaceKind {
    Town,
    District,
}

/// A town or district as the desk edits it.
#[derive(Clone, Copy)]
enum Place<'a> {
    Town(&'a Municipality),
    District(&'a District),
}

impl<'a> Place<'a> {
    fn find(snap: &'a Snapshot, kind: PlaceKind, slug: &str) -> Option<Place<'a>> {
        match kind {
            PlaceKind::Town => snap.municipality(slug).map(Place::Town),
            PlaceKind::District => snap.district_by_slug(slug).map(Place::District),
        }
    }

    fn ags(&self) -> &'a str {
        match self {
            Place::Town(m) => &m.ags,
            Place::District(d) => &d.ags,
        }
    }

    fn name(&self) -> &'a str {
        match self {
            Place::Town(m) => &m.name,
            Place::District(d) => &d.name,
        }
    }

    fn contact(&self) -> &'a Contact {
        match self {
            Place::Town(m) => &m.contact,
            Place::District(d) => &d.contact,
        }
    }

    fn url(&self) -> String {
        match self {
            Place::Town(m) => format!("/intern/kommunen/{}", m.slug),
            Place::District(d) => format!("/intern/kreise/{}", d.slug),
        }
    }

    fn versioned_row(&self) -> store::VersionedRow {
        match self {
            Place::Town(_) => store::VersionedRow::Municipality,
            Place::District(_) => store::VersionedRow::District,
        }
    }

    /// A town speaks for every service, a district only for those it is responsible for.
    fn speaks_for(&self, s: &Service) -> bool {
        matches!(self, Place::Town(_)) || s.responsibility == Responsibility::District
    }

    fn availability(&self, snap: &'a Snapshot, s: &Service) -> Availability<'a> {
        match self {
            Place::Town(m) => snap.availability(m, s),
            Place::District(d) => {
                match snap.data.statements.iter().find(|st| st.scope_ags == d.ags && st.service_slug == s.slug) {
                    Some(st) => Availability { level: st.level, source: Source::District, statement: Some(st) },
                    None => Availability { level: Level::Normal, source: Source::NoReport, statement: None },
                }
            }
        }
    }

    fn coordinates(&self) -> Option<(f64, f64)> {
        match self {
            Place::Town(m) => Some((m.lat, m.lon)),
            Place::District(d) => d.lat.zip(d.lon),
        }
    }

    fn view(&self) -> Value {
        let (kind, public_url) = match self {
            Place::Town(m) => ("town", format!("/kommunen/{}", m.slug)),
            Place::District(d) => ("district", format!("/kreise/{}", d.slug)),
        };
        context! { kind => kind, ags => self.ags(), name => self.name(), url => self.url(), public_url => public_url }
    }
}

/// What the user may change at a place; `None` when an editor may not even open it.
#[derive(Serialize)]
struct Rights {
    statements: bool,
    contacts: bool,
    referrals: bool,
}

impl Rights {
    fn of(p: &Principal, ags: &str) -> Option<Rights> {
        let r = Rights {
            statements: authorize(p, &Action::EditStatement { ags }).is_ok(),
            contacts: authorize(p, &Action::EditContacts { ags }).is_ok(),
            referrals: authorize(p, &Action::EditReferral { for_ags: ags }).is_ok(),
        };
        may_open(p, r.statements || r.contacts || r.referrals).then_some(r)
    }
}

/// One service at a place: what citizens see now (shaped for the public `m.availability` macro),
/// and the place's own statement, which the forms edit.
#[derive(Serialize)]
struct ServiceRow {
    service_slug: String,
    service_name: String,
    level: &'static str,
    /// `municipality`, `district`, `derived` or `no_report`.
    source: &'static str,
    source_name: String,
    #[serde(flatten)]
    details: Details,
    /// Referrals are managed on the desk page itself, not linked from each service.
    has_alternatives: bool,
    own: Option<Statement>,
    /// Version of the own statement; 0 when there is none.
    version: i64,
}

fn service_row(snap: &Snapshot, place: &Place, s: &Service) -> ServiceRow {
    let a = place.availability(snap, s);
    let (source, source_name) = match a.source {
        Source::Municipality => ("municipality", place.name().to_string()),
        Source::District => (
            "district",
            a.statement.and_then(|st| snap.district(&st.scope_ags)).map(|d| d.name.clone()).unwrap_or_default(),
        ),
        Source::Derived => ("derived", snap.data.provider_name.clone()),
        Source::NoReport => ("no_report", String::new()),
    };
    let details = match place {
        Place::Town(m) => snap.details(m, s, &a),
        Place::District(_) => a
            .statement
            .map(|st| Details {
                restrictions: st.restrictions.clone(),
                workaround: st.workaround.clone(),
                backlog: st.backlog.clone(),
                expected_return: st.expected_return.clone(),
                stated_at: st.stated_at.clone(),
                derivation: Vec::new(),
            })
            .unwrap_or_default(),
    };
    let own = a.statement.filter(|st| st.scope_ags == place.ags()).cloned();
    ServiceRow {
        service_slug: s.slug.clone(),
        service_name: s.name.clone(),
        level: a.level.as_str(),
        source,
        source_name,
        details,
        has_alternatives: false,
        version: own.as_ref().map_or(0, |st| st.version),
        own,
    }
}

#[derive(Serialize)]
struct AreaGroup {
    key: &'static str,
    items: Vec<ServiceRow>,
}

#[derive(Serialize)]
struct ReferralRow {
    id: String,
    office: String,
    city: String,
    service: String,
    conditions: String,
    valid_from: String,
    valid_until: String,
}

#[derive(Serialize)]
struct Choice {
    value: String,
    label: String,
}

async fn place_page(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path(slug): Path<String>,
    Query(notice): Query<Notice>,
    desk: Desk,
) -> Response {
    let snap = app.snapshot();
    let Some(place) = Place::find(&snap, kind, &slug) else { return unavailable(&app, &desk, StatusCode::NOT_FOUND) };
    let Some(can) = Rights::of(&desk.principal(), place.ags()) else {
        return unavailable(&app, &desk, StatusCode::FORBIDDEN);
    };
    let contact_version = match stored_version(&app, place.versioned_row(), place.ags()).await {
        Ok(v) => v,
        Err(e) => return internal(&app, &desk, e),
    };
    let services: Vec<&Service> = snap.data.services.iter().filter(|s| place.speaks_for(s)).collect();
    let groups: Vec<AreaGroup> = SERVICE_AREAS
        .iter()
        .map(|area| AreaGroup {
            key: area,
            items: services.iter().filter(|s| s.area == *area).map(|s| service_row(&snap, &place, s)).collect(),
        })
        .filter(|g| !g.items.is_empty())
        .collect();
    let referrals: Vec<ReferralRow> = snap
        .data
        .referrals
        .iter()
        .filter(|r| r.for_ags == place.ags())
        .map(|r| {
            let office = snap.office(&r.office_slug);
            ReferralRow {
                id: r.id.clone(),
                office: office.map_or(r.office_slug.clone(), |o| o.name.clone()),
                city: office.map(|o| o.city.clone()).unwrap_or_default(),
                service: snap.service(&r.service_slug).map_or(r.service_slug.clone(), |s| s.name.clone()),
                conditions: r.conditions.clone(),
                valid_from: r.valid_from.clone(),
                valid_until: r.valid_until.clone(),
            }
        })
        .collect();
    // Offices for a new referral, the nearest first.
    let mut offices: Vec<(f64, &Office)> = snap
        .data
        .offices
        .iter()
        .map(|o| (place.coordinates().map_or(0.0, |(lat, lon)| distance_km(lat, lon, o.lat, o.lon)), o))
        .collect();
    offices.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let office_choices: Vec<Choice> = offices
        .iter()
        .map(|(_, o)| Choice {
            value: o.slug.clone(),
            label: if o.city.is_empty() { o.name.clone() } else { format!("{} ({})", o.name, o.city) },
        })
        .collect();
    let service_choices: Vec<Choice> =
        services.iter().map(|s| Choice { value: s.slug.clone(), label: s.name.clone() }).collect();
    desk.page(
        &app,
        StatusCode::OK,
        "desk/place.html",
        context! {
            place => place.view(), can => v(&can), groups => v(&groups), contact => v(place.contact()),
            contact_version => contact_version, referrals => v(&referrals), offices => v(&office_choices),
            services => v(&service_choices), notice => notice.text(desk.lang),
            own_offices => v(snap.data.offices.iter().filter(|o| o.owner_ags == place.ags()).collect::<Vec<_>>()),
        },
    )
}

/// The place a form was sent for, once its CSRF token checked out.
fn submitted_place<'a>(
    app: &Shared,
    desk: &Desk,
    snap: &'a Snapshot,
    kind: PlaceKind,
    slug: &str,
    csrf: &str,
) -> Result<Place<'a>, Response> {
    desk.check_csrf(csrf)?;
    Place::find(snap, kind, slug).ok_or_else(|| unavailable(app, desk, StatusCode::NOT_FOUND))
}

fn statement_input(f: &Fields) -> write::StatementInput {
    write::StatementInput {
        level: f.one("level").to_string(),
        restrictions: f.one("restrictions").to_string(),
        workaround: f.one("workaround").to_string(),
        backlog: f.one("backlog").to_string(),
        expected_return: expected_return(f.one("expected_precision"), f.one("expected_return")),
        review_on: f.one("review_on").to_string(),
    }
}

/// The form's precision and day as one expected return (`domain::expected`). Without a
/// precision the day is taken as it is (a form of before the precision, or a client that writes
/// the stored form itself); a precision without a usable day is passed on as it is, so that the
/// write refuses it with the field's name.
fn expected_return(precision: &str, day: &str) -> String {
    use crate::domain::expected::Expected;
    let day = day.trim();
    if precision.is_empty() {
        return day.to_string();
    }
    Expected::around(precision, crate::domain::time::parse_date(day))
        .map_or_else(|| format!("{precision}:{day}"), |e| e.canonical())
}

/// The bulk form: one statement for every checked service and every service of a checked area.
async fn place_status(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path(slug): Path<String>,
    desk: Desk,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields(pairs);
    let snap = app.snapshot();
    let place = match submitted_place(&app, &desk, &snap, kind, &slug, f.one("csrf")) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let areas = f.all("areas");
    let mut services = f.all("services");
    for s in snap.data.services.iter().filter(|s| place.speaks_for(s) && areas.contains(&s.area)) {
        if !services.contains(&s.slug) {
            services.push(s.slug.clone());
        }
    }
    let back = place.url();
    let result = write::set_statements(
        &app,
        &desk.principal(),
        &[place.ags().to_string()],
        &services,
        &statement_input(&f),
        None,
    )
    .await;
    let done = format!("{back}?gespeichert={}#leistungen", result.as_ref().map_or(0, Vec::len));
    after_write(&app, &desk, result, &done, &back)
}

fn place_and_service<'a>(
    snap: &'a Snapshot,
    kind: PlaceKind,
    slug: &str,
    service: &str,
) -> Option<(Place<'a>, &'a Service)> {
    let place = Place::find(snap, kind, slug)?;
    let s = snap.service(service).filter(|s| place.speaks_for(s))?;
    Some((place, s))
}

async fn statement_page(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path((slug, service)): Path<(String, String)>,
    desk: Desk,
) -> Response {
    let snap = app.snapshot();
    let Some((place, s)) = place_and_service(&snap, kind, &slug, &service) else {
        return unavailable(&app, &desk, StatusCode::NOT_FOUND);
    };
    let Some(can) = Rights::of(&desk.principal(), place.ags()) else {
        return unavailable(&app, &desk, StatusCode::FORBIDDEN);
    };
    let row = service_row(&snap, &place, s);
    desk.page(
        &app,
        StatusCode::OK,
        "desk/statement.html",
        context! { place => place.view(), can => v(&can), row => v(&row) },
    )
}

/// One service's statement, saved only if nobody else saved since the form was shown.
async fn statement_save(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path((slug, service)): Path<(String, String)>,
    desk: Desk,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields(pairs);
    if let Err(r) = desk.check_csrf(f.one("csrf")) {
        return r;
    }
    let snap = app.snapshot();
    let Some((place, s)) = place_and_service(&snap, kind, &slug, &service) else {
        return unavailable(&app, &desk, StatusCode::NOT_FOUND);
    };
    let version = f.one("version").parse::<i64>().ok();
    let (ags, slug) = (place.ags().to_string(), s.slug.clone());
    let result = write::set_statements(
        &app,
        &desk.principal(),
        &[ags],
        std::slice::from_ref(&slug),
        &statement_input(&f),
        version,
    )
    .await;
    after_write(
        &app,
        &desk,
        result,
        &format!("{}?gespeichert=1#leistung-{slug}", place.url()),
        &format!("{}/leistungen/{slug}", place.url()),
    )
}

#[derive(Deserialize)]
struct VersionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: Option<i64>,
}

async fn statement_withdraw(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path((slug, service)): Path<(String, String)>,
    desk: Desk,
    Form(form): Form<VersionForm>,
) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    let snap = app.snapshot();
    let Some((place, s)) = place_and_service(&snap, kind, &slug, &service) else {
        return unavailable(&app, &desk, StatusCode::NOT_FOUND);
    };
    let result = write::withdraw_statement(&app, &desk.principal(), place.ags(), &s.slug, form.version).await;
    after_write(
        &app,
        &desk,
        result,
        &format!("{}?entfernt=1#leistung-{}", place.url(), s.slug),
        &format!("{}/leistungen/{}", place.url(), s.slug),
    )
}

#[derive(Deserialize)]
struct ContactForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    website: String,
    #[serde(default)]
    emergency_website: String,
    #[serde(default)]
    social_media: String,
}

async fn contact_save(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path(slug): Path<String>,
    desk: Desk,
    Form(form): Form<ContactForm>,
) -> Response {
    let snap = app.snapshot();
    let place = match submitted_place(&app, &desk, &snap, kind, &slug, &form.csrf) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let input = write::ContactInput {
        phone: form.phone,
        email: form.email,
        website: form.website,
        emergency_website: form.emergency_website,
        social_media: form.social_media,
    };
    let result = write::set_contact(&app, &desk.principal(), place.ags(), &input, form.version).await;
    after_write(
        &app,
        &desk,
        result,
        &format!("{}?gespeichert=1#kontakt", place.url()),
        &format!("{}#kontakt", place.url()),
    )
}

#[derive(Deserialize)]
struct OfficeForm {
    #[serde(default)]
    csrf: String,
    /// The office's slug: hidden for an existing office, typed for a new one.
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    street: String,
    #[serde(default)]
    postal_code: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    website: String,
    #[serde(default)]
    opening_hours: String,
}

/// Creates or changes one of the place's offices.
async fn office_save(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path(slug): Path<String>,
    desk: Desk,
    Form(form): Form<OfficeForm>,
) -> Response {
    let snap = app.snapshot();
    let place = match submitted_place(&app, &desk, &snap, kind, &slug, &form.csrf) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let office_slug = match crate::domain::parse_slug(form.slug.trim()) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let e = WriteError::Invalid { field: "slug".into(), message: "api.invalid_slug" };
            return after_write::<()>(&app, &desk, Err(e), "", &format!("{}#dienststellen", place.url()));
        }
    };
    let input = write::OfficeInput {
        owner_ags: place.ags().to_string(),
        name: form.name,
        street: form.street,
        postal_code: form.postal_code,
        city: form.city,
        phone: form.phone,
        email: form.email,
        website: form.website,
        opening_hours: form.opening_hours,
        lat: None,
        lon: None,
    };
    let result = write::save_office(&app, &desk.principal(), &office_slug, &input).await;
    after_write(
        &app,
        &desk,
        result,
        &format!("{}?gespeichert=1#dienststellen", place.url()),
        &format!("{}#dienststellen", place.url()),
    )
}

#[derive(Deserialize)]
struct ReferralForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    office_slug: String,
    #[serde(default)]
    service_slug: String,
    #[serde(default)]
    conditions: String,
    #[serde(default)]
    valid_from: String,
    #[serde(default)]
    valid_until: String,
}

async fn referral_add(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path(slug): Path<String>,
    desk: Desk,
    Form(form): Form<ReferralForm>,
) -> Response {
    let snap = app.snapshot();
    let place = match submitted_place(&app, &desk, &snap, kind, &slug, &form.csrf) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let input = write::ReferralInput {
        office_slug: form.office_slug,
        service_slug: form.service_slug,
        for_ags: place.ags().to_string(),
        conditions: form.conditions,
        valid_from: form.valid_from,
        valid_until: form.valid_until,
    };
    let result = write::save_referral(&app, &desk.principal(), None, &input).await;
    after_write(
        &app,
        &desk,
        result,
        &format!("{}?gespeichert=1#ausweichstellen", place.url()),
        &format!("{}#ausweichstellen", place.url()),
    )
}

async fn referral_delete(
    State(app): State<Shared>,
    Extension(kind): Extension<PlaceKind>,
    Path((slug, id)): Path<(String, String)>,
    desk: Desk,
    Form(form): Form<CsrfForm>,
) -> Response {
    let snap = app.snapshot();
    let place = match submitted_place(&app, &desk, &snap, kind, &slug, &form.csrf) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = write::delete_referral(&app, &desk.principal(), &id).await;
    after_write(
        &app,
        &desk,
        result,
        &format!("{}?entfernt=1#ausweichstellen", place.url()),
        &format!("{}#ausweichstellen", place.url()),
    )
}

// ---------------------------------------------------------------------------------------------
// Announcements and FAQ: scoped, Markdown with preview, drafts and publication

#[derive(Serialize)]
struct ScopeGroup {
    key: &'static str,
    options: Vec<Choice>,
}

/// Every scope the user may write announcements and FAQ entries for, as `authz` decides.
fn scope_choices(snap: &Snapshot, lang: &str, p: &Principal) -> Vec<ScopeGroup> {
    let candidates: [(&'static str, ScopeKind, Vec<&str>); 4] = [
        ("area", ScopeKind::Area, vec![""]),
        ("district", ScopeKind::District, snap.data.districts.iter().map(|d| d.ags.as_str()).collect()),
        ("municipality", ScopeKind::Municipality, snap.data.municipalities.iter().map(|m| m.ags.as_str()).collect()),
        ("service", ScopeKind::Service, snap.data.services.iter().map(|s| s.slug.as_str()).collect()),
    ];
    candidates
        .into_iter()
        .map(|(key, kind, refs)| ScopeGroup {
            key,
            options: refs
                .into_iter()
                .filter(|r| authorize(p, &Action::EditAnnouncement { scope: &kind, scope_ref: r }).is_ok())
                .map(|r| Choice { value: format!("{key}:{r}"), label: render::scope_name(snap, lang, &kind, r) })
                .collect(),
        })
        .filter(|g| !g.options.is_empty())
        .collect()
}

/// "municipality:05962040" → ("municipality", "05962040").
fn split_scope(value: &str) -> (String, String) {
    let (kind, r) = value.split_once(':').unwrap_or((value, ""));
    (kind.to_string(), r.to_string())
}

fn may_edit_scope(p: &Principal, kind: &ScopeKind, scope_ref: &str) -> bool {
    authorize(p, &Action::EditAnnouncement { scope: kind, scope_ref }).is_ok()
}

/// Where an announcement or FAQ entry stands.
#[derive(Serialize)]
struct Stage {
    /// `draft`, `scheduled` or `published`.
    state: &'static str,
    published_at: String,
}

impl Stage {
    fn of(published_at: &Option<String>) -> Stage {
        let state = match published_at {
            None => "draft",
            Some(t) if t.as_str() > time::now_rfc3339().as_str() => "scheduled",
            Some(_) => "published",
        };
        Stage { state, published_at: published_at.clone().unwrap_or_default() }
    }
}

/// The publication choice of a form: `draft`, `now` (or keep the time of a published one), or
/// `at` with a German date and time.
fn publication_choice(publish: &str, at: &str) -> Result<String, WriteError> {
    match publish {
        "draft" => Ok("draft".into()),
        "at" => parse_local(at)
            .map(time::format_rfc3339)
            .ok_or_else(|| invalid("publish_at", "desk_form.invalid_local_time")),
        _ => Ok("now".into()),
    }
}

/// The text fields of an announcement or FAQ form as submitted; shown again on preview or error.
#[derive(Deserialize, Serialize, Default)]
struct EditorialForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    /// `preview` re-renders the form with the rendered Markdown instead of saving.
    #[serde(default)]
    action: String,
    #[serde(default)]
    version: Option<i64>,
    /// `kind:ref`, see `scope_choices`.
    #[serde(default)]
    scope: String,
    #[serde(default)]
    lang: String,
    /// The announcement's title or the FAQ question.
    #[serde(default)]
    title: String,
    /// Markdown: the announcement's body or the FAQ answer.
    #[serde(default)]
    body: String,
    #[serde(default)]
    sort_order: String,
    /// `draft`, `now` or `at`.
    #[serde(default)]
    publish: String,
    #[serde(default)]
    publish_at: String,
}

/// Which of the two editorial kinds a form is about.
#[derive(Clone, Copy)]
enum Editorial {
    Announcement,
    Faq,
}

impl Editorial {
    fn list_url(self) -> &'static str {
        match self {
            Editorial::Announcement => "/intern/meldungen",
            Editorial::Faq => "/intern/fragen",
        }
    }
    /// Picks the wording and the fields in the shared templates.
    fn key(self) -> &'static str {
        match self {
            Editorial::Announcement => "announcement",
            Editorial::Faq => "faq",
        }
    }
}

/// Renders the form of an announcement or FAQ entry (new when `id` is `None`); viewers get the
/// entry without the form.
// The form is shown from several places with the same eight facts; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn editorial_form(
    app: &Shared,
    desk: &Desk,
    what: Editorial,
    status: StatusCode,
    id: Option<&str>,
    stage: &Stage,
    form: &EditorialForm,
    extra: Value,
) -> Response {
    let snap = app.snapshot();
    let p = desk.principal();
    let (kind, scope_ref) = split_scope(&form.scope);
    let kind = ScopeKind::parse(&kind);
    let can_edit = id.is_none() || kind.as_ref().is_some_and(|k| may_edit_scope(&p, k, &scope_ref));
    desk.page(app, status,
        "desk/editorial.html",
        context! {
            what => what.key(), id => id, stage => v(stage), form => v(form), can_edit => can_edit, back => what.list_url(),
            scopes => v(scope_choices(&snap, desk.lang, &p)),
            scope_name => kind.map(|k| render::scope_name(&snap, desk.lang, &k, &scope_ref)),
            ..extra
        },
    )
}

/// After a submit: the refusal shown next to the form the user filled in, or the refusal page.
fn editorial_refused(
    app: &Shared,
    desk: &Desk,
    what: Editorial,
    id: Option<&str>,
    stage: &Stage,
    form: &EditorialForm,
    e: WriteError,
) -> Response {
    match e {
        WriteError::Invalid { field, message } => {
            let error = context! { field => field, message => i18n::t(desk.lang, message) };
            editorial_form(
                app,
                desk,
                what,
                StatusCode::UNPROCESSABLE_ENTITY,
                id,
                stage,
                form,
                context! { error => error },
            )
        }
        other => desk::write_error_page(app, desk, other, what.list_url()),
    }
}

/// The form again with the sanitised rendering of its Markdown; nothing is saved.
fn preview(
    app: &Shared,
    desk: &Desk,
    what: Editorial,
    id: Option<&str>,
    stage: &Stage,
    form: &EditorialForm,
) -> Response {
    if let Err(e) = markdown::check(&form.body) {
        return editorial_refused(
            app,
            desk,
            what,
            id,
            stage,
            form,
            WriteError::Invalid { field: "body".into(), message: e.message_key() },
        );
    }
    let html = Value::from_safe_string(markdown::render(&form.body));
    editorial_form(app, desk, what, StatusCode::OK, id, stage, form, context! { preview => html })
}

#[derive(Serialize)]
struct EditorialRow {
    id: String,
    title: String,
    scope: String,
    lang: String,
    stage: Stage,
    updated_at: String,
    corrected: bool,
}

/// The list of announcements or FAQ entries; editors see those of their own scope.
fn editorial_list(app: &Shared, desk: &Desk, what: Editorial, rows: Vec<EditorialRow>, notice: &Notice) -> Response {
    let can_create = !scope_choices(&app.snapshot(), desk.lang, &desk.principal()).is_empty();
    let content = context! {
        what => what.key(), rows => v(&rows), can_create => can_create, list_url => what.list_url(),
        notice => notice.text(desk.lang),
    };
    desk.page(app, StatusCode::OK, "desk/editorial_list.html", content)
}

async fn announcements(State(app): State<Shared>, Query(notice): Query<Notice>, desk: Desk) -> Response {
    let snap = app.snapshot();
    let p = desk.principal();
    let rows: Vec<EditorialRow> = snap
        .data
        .announcements
        .iter()
        .filter(|a| may_open(&p, may_edit_scope(&p, &a.scope_kind, &a.scope_ref)))
        .map(|a| EditorialRow {
            id: a.id.clone(),
            title: a.title.clone(),
            scope: render::scope_name(&snap, desk.lang, &a.scope_kind, &a.scope_ref),
            lang: a.lang.clone(),
            stage: Stage::of(&a.published_at),
            updated_at: a.updated_at.clone(),
            corrected: a.published_at.as_ref().is_some_and(|p| a.updated_at > *p),
        })
        .collect();
    editorial_list(&app, &desk, Editorial::Announcement, rows, &notice)
}

async fn faq_list(State(app): State<Shared>, Query(notice): Query<Notice>, desk: Desk) -> Response {
    let snap = app.snapshot();
    let p = desk.principal();
    let rows: Vec<EditorialRow> = snap
        .data
        .faq
        .iter()
        .filter(|f| may_open(&p, may_edit_scope(&p, &f.scope_kind, &f.scope_ref)))
        .map(|f| EditorialRow {
            id: f.id.clone(),
            title: f.question.clone(),
            scope: render::scope_name(&snap, desk.lang, &f.scope_kind, &f.scope_ref),
            lang: f.lang.clone(),
            stage: Stage::of(&f.published_at),
            updated_at: f.updated_at.clone(),
            corrected: false,
        })
        .collect();
    editorial_list(&app, &desk, Editorial::Faq, rows, &notice)
}

/// An empty form; editors start with their first town, the crisis team with the whole area.
/// Users without any scope to write for (viewers) get 403.
fn editorial_new(app: &Shared, desk: &Desk, what: Editorial) -> Response {
    let first = scope_choices(&app.snapshot(), desk.lang, &desk.principal()).into_iter().flat_map(|g| g.options).next();
    let Some(first) = first else { return unavailable(app, desk, StatusCode::FORBIDDEN) };
    let form =
        EditorialForm { scope: first.value, lang: desk.lang.into(), publish: "draft".into(), ..Default::default() };
    editorial_form(app, desk, what, StatusCode::OK, None, &Stage::of(&None), &form, context! {})
}

async fn announcement_new(State(app): State<Shared>, desk: Desk) -> Response {
    editorial_new(&app, &desk, Editorial::Announcement)
}

async fn faq_new(State(app): State<Shared>, desk: Desk) -> Response {
    editorial_new(&app, &desk, Editorial::Faq)
}

/// The form of a stored entry, with its current version; 403 for editors outside its scope.
async fn editorial_edit(
    app: &Shared,
    desk: &Desk,
    what: Editorial,
    id: &str,
    form: EditorialForm,
    stage: Stage,
) -> Response {
    let (kind, scope_ref) = split_scope(&form.scope);
    let p = desk.principal();
    if !may_open(&p, ScopeKind::parse(&kind).is_some_and(|k| may_edit_scope(&p, &k, &scope_ref))) {
        return unavailable(app, desk, StatusCode::FORBIDDEN);
    }
    let row = match what {
        Editorial::Announcement => store::VersionedRow::Announcement,
        Editorial::Faq => store::VersionedRow::Faq,
    };
    let version = match stored_version(app, row, id).await {
        Ok(v) => v,
        Err(e) => return internal(app, desk, e),
    };
    let rendered = Value::from_safe_string(markdown::render(&form.body));
    let form = EditorialForm {
        version: Some(version),
        publish: if stage.state == "draft" { "draft".into() } else { "now".into() },
        ..form
    };
    editorial_form(app, desk, what, StatusCode::OK, Some(id), &stage, &form, context! { rendered => rendered })
}

async fn announcement_edit(State(app): State<Shared>, Path(id): Path<String>, desk: Desk) -> Response {
    let snap = app.snapshot();
    let Some(a) = snap.data.announcements.iter().find(|a| a.id == id) else {
        return unavailable(&app, &desk, StatusCode::NOT_FOUND);
    };
    let form = EditorialForm {
        scope: format!("{}:{}", a.scope_kind.as_str(), a.scope_ref),
        lang: a.lang.clone(),
        title: a.title.clone(),
        body: a.body.clone(),
        publish_at: a.published_at.as_deref().map(to_local_input).unwrap_or_default(),
        ..Default::default()
    };
    editorial_edit(&app, &desk, Editorial::Announcement, &id, form, Stage::of(&a.published_at)).await
}

async fn faq_edit(State(app): State<Shared>, Path(id): Path<String>, desk: Desk) -> Response {
    let snap = app.snapshot();
    let Some(f) = snap.data.faq.iter().find(|f| f.id == id) else {
        return unavailable(&app, &desk, StatusCode::NOT_FOUND);
    };
    let form = EditorialForm {
        scope: format!("{}:{}", f.scope_kind.as_str(), f.scope_ref),
        lang: f.lang.clone(),
        title: f.question.clone(),
        body: f.answer.clone(),
        sort_order: f.sort_order.to_string(),
        ..Default::default()
    };
    editorial_edit(&app, &desk, Editorial::Faq, &id, form, Stage::of(&f.published_at)).await
}

impl EditorialForm {
    fn lang(&self) -> String {
        if self.lang.is_empty() { i18n::DEFAULT_LANG.into() } else { self.lang.clone() }
    }
}

fn announcement_input(form: &EditorialForm) -> Result<write::AnnouncementInput, WriteError> {
    let (scope, scope_ref) = split_scope(&form.scope);
    Ok(write::AnnouncementInput {
        scope,
        scope_ref,
        lang: form.lang(),
        title: form.title.clone(),
        body: form.body.clone(),
        publish: publication_choice(&form.publish, &form.publish_at)?,
    })
}

fn faq_input(form: &EditorialForm) -> Result<write::FaqInput, WriteError> {
    let (scope, scope_ref) = split_scope(&form.scope);
    let sort_order = match form.sort_order.trim() {
        "" => 0,
        n => n.parse().map_err(|_| invalid("sort_order", "desk_form.invalid_number"))?,
    };
    Ok(write::FaqInput {
        scope,
        scope_ref,
        lang: form.lang(),
        question: form.title.clone(),
        answer: form.body.clone(),
        sort_order,
        publish: if form.publish == "draft" { "draft" } else { "now" }.into(),
    })
}

/// Saves a new (`id` None) or edited announcement or FAQ entry, or shows the preview. Editing a
/// published announcement is a correction the public sees as such.
async fn editorial_save(app: Shared, desk: Desk, what: Editorial, id: Option<String>, form: EditorialForm) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    let snap = app.snapshot();
    let published_at = match (&id, what) {
        (None, _) => Some(None),
        (Some(id), Editorial::Announcement) => {
            snap.data.announcements.iter().find(|a| a.id == *id).map(|a| a.published_at.clone())
        }
        (Some(id), Editorial::Faq) => snap.data.faq.iter().find(|f| f.id == *id).map(|f| f.published_at.clone()),
    };
    let Some(published_at) = published_at else { return unavailable(&app, &desk, StatusCode::NOT_FOUND) };
    let stage = Stage::of(&published_at);
    let id = id.as_deref();
    if form.action == "preview" {
        return preview(&app, &desk, what, id, &stage, &form);
    }
    let p = desk.principal();
    let result = match what {
        Editorial::Announcement => match (announcement_input(&form), id) {
            (Err(e), _) => Err(e),
            (Ok(input), None) => write::create_announcement(&app, &p, &input).await.map(|_| ()),
            (Ok(input), Some(id)) => write::update_announcement(&app, &p, id, &input, form.version).await.map(|_| ()),
        },
        Editorial::Faq => match faq_input(&form) {
            Err(e) => Err(e),
            Ok(input) => write::save_faq(&app, &p, id, &input, form.version).await.map(|_| ()),
        },
    };
    match result {
        Ok(()) => redirect(&format!("{}?gespeichert=1", what.list_url())),
        Err(e) => editorial_refused(&app, &desk, what, id, &stage, &form, e),
    }
}

async fn announcement_create(State(app): State<Shared>, desk: Desk, Form(form): Form<EditorialForm>) -> Response {
    editorial_save(app, desk, Editorial::Announcement, None, form).await
}

async fn announcement_update(
    State(app): State<Shared>,
    Path(id): Path<String>,
    desk: Desk,
    Form(form): Form<EditorialForm>,
) -> Response {
    editorial_save(app, desk, Editorial::Announcement, Some(id), form).await
}

async fn faq_create(State(app): State<Shared>, desk: Desk, Form(form): Form<EditorialForm>) -> Response {
    editorial_save(app, desk, Editorial::Faq, None, form).await
}

async fn faq_update(
    State(app): State<Shared>,
    Path(id): Path<String>,
    desk: Desk,
    Form(form): Form<EditorialForm>,
) -> Response {
    editorial_save(app, desk, Editorial::Faq, Some(id), form).await
}

async fn announcement_withdraw(
    State(app): State<Shared>,
    Path(id): Path<String>,
    desk: Desk,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    let result = write::withdraw_announcement(&app, &desk.principal(), &id).await;
    after_write(&app, &desk, result, "/intern/meldungen?entfernt=1", "/intern/meldungen")
}

// ---------------------------------------------------------------------------------------------
// Journal

/// The journal's filter form; dates are whole days, `until` included.
#[derive(Deserialize, Serialize, Default)]
struct JournalQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

impl JournalQuery {
    fn filter(&self) -> journal::Filter {
        let until = match time::parse_date(self.until.trim()) {
            Some(d) => (d + Duration::days(1)).format("%Y-%m-%d").to_string(),
            None => self.until.trim().to_string(),
        };
        journal::Filter {
            kind: self.kind.trim().to_string(),
            author: self.author.trim().to_string(),
            scope: self.scope.trim().to_string(),
            since: self.since.trim().to_string(),
            until,
        }
    }
}

/// The journal scopes a user may read: editors their towns and districts and their own account;
/// `None` means everything.
fn readable_scopes(desk: &Desk) -> Option<Vec<String>> {
    (desk.user.role == Role::Editor).then(|| {
        let mut scopes = desk.user.scopes.clone();
        scopes.push(format!("user:{}", desk.user.username));
        scopes
    })
}

/// Entries matching the filter that this user may read, newest first.
async fn readable_entries(
    app: &Shared,
    desk: &Desk,
    f: &journal::Filter,
    limit: i64,
) -> anyhow::Result<Vec<journal::Entry>> {
    let mut c = app.store.read().await?;
    let Some(scopes) = readable_scopes(desk) else { return journal::list(&mut c, f, limit).await };
    let mut out = Vec::new();
    for scope in scopes.into_iter().filter(|s| f.scope.is_empty() || *s == f.scope) {
        out.extend(journal::list(&mut c, &journal::Filter { scope, ..f.clone() }, limit).await?);
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.seq));
    out.truncate(limit.max(0) as usize);
    Ok(out)
}

const JOURNAL_PAGE_LIMIT: i64 = 200;

#[derive(Serialize)]
struct JournalRow {
    seq: i64,
    at: String,
    author: String,
    scope: String,
    kind: String,
    payload: String,
}

/// The chain's head and whether the whole journal verifies, in words.
async fn chain_status(app: &Shared, lang: &str) -> anyhow::Result<(i64, String, Result<(), String>)> {
    let mut c = app.store.read().await?;
    let checked = journal::verify_stored(&mut c).await?;
    let (seq, hash) = (checked.head_seq, checked.head_hash);
    let verdict = checked.verdict.map_err(|p| {
        let (key, args) = match p {
            journal::Problem::Altered { seq } => ("desk_journal.altered", vec![("seq", seq.to_string())]),
            journal::Problem::Removed { from, to } => {
                ("desk_journal.removed", vec![("from", from.to_string()), ("to", to.to_string())])
            }
            journal::Problem::Reordered { seq } => ("desk_journal.reordered", vec![("seq", seq.to_string())]),
            journal::Problem::TailRemoved { last_present, expected } => (
                "desk_journal.tail_removed",
                vec![("last", last_present.to_string()), ("expected", expected.to_string())],
            ),
        };
        i18n::tf(lang, key, &args)
    });
    Ok((seq, hash, verdict))
}

async fn journal_page(State(app): State<Shared>, Query(q): Query<JournalQuery>, desk: Desk) -> Response {
    let snap = app.snapshot();
    let result = async {
        let entries = readable_entries(&app, &desk, &q.filter(), JOURNAL_PAGE_LIMIT).await?;
        Ok::<_, anyhow::Error>((entries, chain_status(&app, desk.lang).await?))
    }
    .await;
    let (entries, (head_seq, head_hash, verdict)) = match result {
        Ok(r) => r,
        Err(e) => return internal(&app, &desk, e),
    };
    let rows: Vec<JournalRow> = entries
        .into_iter()
        .map(|e| {
            let payload = if e.payload.chars().count() > 300 {
                format!("{}…", e.payload.chars().take(300).collect::<String>())
            } else {
                e.payload
            };
            JournalRow {
                seq: e.seq,
                at: e.at,
                author: e.author,
                scope: scope_label(&snap, desk.lang, &e.scope),
                kind: e.kind,
                payload,
            }
        })
        .collect();
    desk.page(
        &app,
        StatusCode::OK,
        "desk/journal.html",
        context! {
            q => v(&q), rows => v(&rows), limit => JOURNAL_PAGE_LIMIT, head_seq => head_seq, head_hash => head_hash,
            intact => verdict.is_ok(), problem => verdict.err(), restricted => readable_scopes(&desk).is_some(),
        },
    )
}

/// The filtered journal as a download, oldest first, with every field as hashed.
async fn journal_export(app: Shared, desk: Desk, q: JournalQuery, format: &str) -> Response {
    let entries = match readable_entries(&app, &desk, &q.filter(), i64::MAX).await {
        Ok(mut e) => {
            e.reverse();
            e
        }
        Err(e) => return internal(&app, &desk, e),
    };
    let body = match journal::export(&entries, format) {
        Ok(b) => b,
        Err(e) => return internal(&app, &desk, e),
    };
    let content_type = if format == "csv" { "text/csv; charset=utf-8" } else { "application/json" };
    let disposition = format!("attachment; filename=\"journal.{format}\"");
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).expect("ASCII")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn journal_csv(State(app): State<Shared>, Query(q): Query<JournalQuery>, desk: Desk) -> Response {
    journal_export(app, desk, q, "csv").await
}

async fn journal_json(State(app): State<Shared>, Query(q): Query<JournalQuery>, desk: Desk) -> Response {
    journal_export(app, desk, q, "json").await
}

// ---------------------------------------------------------------------------------------------
// API tokens

#[derive(Serialize)]
struct TokenRow {
    id: i64,
    name: String,
    owner: String,
    role: &'static str,
    scopes: Vec<String>,
    created_at: String,
    expires_at: String,
    revoked_at: String,
    expired: bool,
}

/// The token list: one's own, or everyone's for admins; `new_token` is the secret shown once.
async fn render_tokens(app: &Shared, desk: &Desk, notice: Option<String>, new_token: Option<Value>) -> Response {
    let snap = app.snapshot();
    let p = desk.principal();
    let everyone = p.role == Role::Admin;
    let result = async {
        let mut c = app.store.read().await?;
        let tokens = accounts::tokens(&mut c, if everyone { None } else { Some(p.user_id) }).await?;
        let users = if everyone { accounts::all_users(&mut c).await? } else { Vec::new() };
        Ok::<_, anyhow::Error>((tokens, users))
    }
    .await;
    let (tokens, users) = match result {
        Ok(r) => r,
        Err(e) => return internal(app, desk, e),
    };
    let now = time::now_rfc3339();
    let rows: Vec<TokenRow> = tokens
        .into_iter()
        .map(|t| TokenRow {
            owner: users.iter().find(|u| u.id == t.user_id).map_or(desk.user.username.clone(), |u| u.username.clone()),
            role: t.role.as_str(),
            scopes: t.scopes.iter().map(|s| scope_label(&snap, desk.lang, s)).collect(),
            expired: !t.expires_at.is_empty() && t.expires_at <= now,
            id: t.id,
            name: t.name,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        })
        .collect();
    let can_create =
        authorize(&p, &Action::ManageTokens { for_user: p.user_id, role: p.role, scopes: &p.scopes }).is_ok();
    let scopes: Vec<String> = p.scopes.iter().map(|s| scope_label(&snap, desk.lang, s)).collect();
    desk.page(
        app,
        StatusCode::OK,
        "desk/tokens.html",
        context! {
            rows => v(&rows), can_create => can_create, everyone => everyone, own_scopes => scopes,
            new_token => new_token, notice => notice,
        },
    )
}

async fn tokens_page(State(app): State<Shared>, Query(notice): Query<Notice>, desk: Desk) -> Response {
    render_tokens(&app, &desk, notice.text(desk.lang), None).await
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// Last day of validity (German time), or empty for no expiry.
    #[serde(default)]
    expires: String,
}

async fn token_create(State(app): State<Shared>, desk: Desk, Form(form): Form<TokenForm>) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    let expires_at = match form.expires.trim() {
        "" => String::new(),
        day => match parse_local(&format!("{day}T23:59:59")) {
            Some(t) => time::format_rfc3339(t),
            None => {
                return desk::write_error_page(&app, &desk, invalid("expires", "write.invalid_date"), "/intern/tokens");
            }
        },
    };
    // Role and scope default to the creator's own: an editor's token acts for their towns.
    let input = write::TokenInput { name: form.name.clone(), expires_at, ..Default::default() };
    match write::create_token(&app, &desk.principal(), &input).await {
        Ok((_, secret)) => {
            let saved = Some(i18n::t(desk.lang, "desk_form.saved"));
            render_tokens(&app, &desk, saved, Some(context! { name => form.name.trim(), secret => secret })).await
        }
        // The form's field is `expires` (a day), the write's `expires_at` (its last second).
        Err(WriteError::Invalid { field, message }) if field == "expires_at" => {
            desk::write_error_page(&app, &desk, invalid("expires", message), "/intern/tokens")
        }
        Err(e) => desk::write_error_page(&app, &desk, e, "/intern/tokens"),
    }
}

async fn token_revoke(
    State(app): State<Shared>,
    Path(id): Path<i64>,
    desk: Desk,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    let result = write::revoke_token(&app, &desk.principal(), id).await;
    after_write(&app, &desk, result, "/intern/tokens?entfernt=1", "/intern/tokens")
}

// ---------------------------------------------------------------------------------------------
// Accounts (admins)

#[derive(Serialize)]
struct UserRow {
    id: i64,
    username: String,
    display_name: String,
    role: &'static str,
    scopes: Vec<String>,
    /// The AGS list as typed into the form.
    scope_list: String,
    /// `disabled`, `locked`, `setup_pending` or `active`.
    state: &'static str,
}

fn user_row(snap: &Snapshot, lang: &str, u: &auth::User) -> UserRow {
    let state = if u.disabled {
        "disabled"
    } else if auth::is_locked(u) {
        "locked"
    } else if u.password_hash.is_empty() {
        "setup_pending"
    } else {
        "active"
    };
    UserRow {
        id: u.id,
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        role: u.role.as_str(),
        scopes: u.scopes.iter().map(|s| scope_label(snap, lang, s)).collect(),
        scope_list: u.scopes.join(" "),
        state,
    }
}

/// "05962040, 05962" → ["05962040", "05962"].
fn scope_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c == ';' || c.is_whitespace()).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn setup_link(app: &Shared, token: &str) -> String {
    format!("{}/intern/einrichten/{token}", app.public_url)
}

fn may_manage_users(desk: &Desk) -> bool {
    authorize(&desk.principal(), &Action::ManageUsers).is_ok()
}

async fn render_users(app: &Shared, desk: &Desk, notice: Option<String>, created: Option<Value>) -> Response {
    if !may_manage_users(desk) {
        return unavailable(app, desk, StatusCode::FORBIDDEN);
    }
    let snap = app.snapshot();
    let users = async {
        let mut c = app.store.read().await?;
        accounts::all_users(&mut c).await
    }
    .await;
    let users = match users {
        Ok(u) => u,
        Err(e) => return internal(app, desk, e),
    };
    let rows: Vec<UserRow> = users.iter().map(|u| user_row(&snap, desk.lang, u)).collect();
    desk.page(
        app,
        StatusCode::OK,
        "desk/users.html",
        context! { rows => v(&rows), notice => notice, created => created },
    )
}

async fn users_page(State(app): State<Shared>, Query(notice): Query<Notice>, desk: Desk) -> Response {
    render_users(&app, &desk, notice.text(desk.lang), None).await
}

#[derive(Deserialize)]
struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    scopes: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    disabled: Option<String>,
}

async fn user_create(State(app): State<Shared>, desk: Desk, Form(form): Form<UserForm>) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    let input = write::UserInput {
        username: form.username.trim().to_lowercase(),
        display_name: form.display_name,
        role: form.role,
        scopes: scope_list(&form.scopes),
    };
    match write::create_user(&app, &desk.principal(), &input).await {
        Ok((_, token)) => {
            let created = context! { username => input.username, link => setup_link(&app, &token) };
            render_users(&app, &desk, Some(i18n::t(desk.lang, "desk_form.saved")), Some(created)).await
        }
        Err(e) => desk::write_error_page(&app, &desk, e, "/intern/benutzer"),
    }
}

async fn render_user(app: &Shared, desk: &Desk, id: i64, setup: Option<String>) -> Response {
    if !may_manage_users(desk) {
        return unavailable(app, desk, StatusCode::FORBIDDEN);
    }
    let user = async {
        let mut c = app.store.read().await?;
        accounts::user_by_id(&mut c, id).await
    }
    .await;
    match user {
        Ok(Some(u)) => {
            let row = user_row(&app.snapshot(), desk.lang, &u);
            desk.page(app, StatusCode::OK, "desk/user.html", context! { u => v(&row), setup_link => setup })
        }
        Ok(None) => unavailable(app, desk, StatusCode::NOT_FOUND),
        Err(e) => internal(app, desk, e),
    }
}

async fn user_page(State(app): State<Shared>, Path(id): Path<i64>, desk: Desk) -> Response {
    render_user(&app, &desk, id, None).await
}

async fn user_update(
    State(app): State<Shared>,
    Path(id): Path<i64>,
    desk: Desk,
    Form(form): Form<UserForm>,
) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    let result =
        write::update_user(&app, &desk.principal(), id, &form.role, &scope_list(&form.scopes), form.disabled.is_some())
            .await;
    after_write(&app, &desk, result, "/intern/benutzer?gespeichert=1", &format!("/intern/benutzer/{id}"))
}

async fn user_reset(
    State(app): State<Shared>,
    Path(id): Path<i64>,
    desk: Desk,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    match write::reset_user(&app, &desk.principal(), id).await {
        Ok(token) => render_user(&app, &desk, id, Some(setup_link(&app, &token))).await,
        Err(e) => desk::write_error_page(&app, &desk, e, &format!("/intern/benutzer/{id}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_form_times_become_utc() {
        assert_eq!(parse_local("2026-12-01T08:00").map(time::format_rfc3339).as_deref(), Some("2026-12-01T07:00:00Z"));
        assert_eq!(parse_local("2026-07-01T08:00").map(time::format_rfc3339).as_deref(), Some("2026-07-01T06:00:00Z"));
        assert_eq!(to_local_input("2026-07-01T06:00:00Z"), "2026-07-01T08:00");
        assert!(parse_local("morgen").is_none());
    }

    #[test]
    fn scope_lists_and_values_split() {
        assert_eq!(scope_list("05962040, 05962;05966\n"), ["05962040", "05962", "05966"]);
        assert_eq!(split_scope("municipality:05962040"), ("municipality".into(), "05962040".into()));
        assert_eq!(split_scope("area:"), ("area".into(), String::new()));
    }
}
