//! The recovery in the JSON API under /api/v1: the public Fahrplan, and procedures with their
//! gates and rollout for bearer tokens. Reading the Fahrplan is public and cached like the rest
//! of the read API; procedures are the provider's board (any signed-in role may read, operators
//! and admins change). Writes follow every rule of `api_write` (JSON bodies with unknown fields
//! rejected, `If-Match`, `Idempotency-Key`) and go through `writes`, which enforces the gates; a
//! refused step or rollout is 409 with every unmet condition in `current.unmet`, and the same in
//! words in `current.messages`.

use std::future::Future;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::domain::authz::Principal;
use crate::domain::authz::{Action, authorize};
use crate::domain::recovery::{Procedure, Rollout, Stage};
use crate::http::api::editing::{
    self, Body, BodyErrors, Caller, IdempotencyKey, Input, KeyInUse, Refusals, Reply, Versioned,
};
use crate::http::api::error::{ApiError, Fail};
use crate::http::api::{self, MunicipalityRef, Problem, ServiceRef};
use crate::http::desk::board::{self, Progress};
use crate::read::live::{App, Shared};
use crate::read::snapshot::Snapshot;
use crate::store::{self, ProcedureStep};
use crate::write::formats::{IfMatch, Slug, SlugFilter};
use crate::write::{self, ProcedureInput, RolloutInput, WriteError};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/fahrplan", get(fahrplan))
        .route("/procedures", get(list_procedures).post(post_procedure))
        .route("/procedures/{slug}", get(get_procedure).put(put_procedure))
        .route("/procedures/{slug}/steps", post(post_step))
        .route("/procedures/{slug}/rollout", post(post_rollout))
        .layer(DefaultBodyLimit::max(editing::BODY_LIMIT))
}

// ---------------------------------------------------------------------------------------------
// The Fahrplan (public)

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FahrplanParams {
    /// Only this town's expected returns (its slug); the whole area without it.
    #[param(value_type = Option<SlugFilter>, example = "menden-sauerland")]
    municipality: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Fahrplan {
    /// When the data last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    changed_at: String,
    /// The town asked for, if any.
    municipality: Option<MunicipalityRef>,
    /// Services expected back, by date (earliest first); only what is not in normal operation yet.
    returns: Vec<ExpectedReturn>,
    /// Services not in normal operation yet with no expected date, or one that has passed
    /// ("noch ohne Termin"), in catalogue order.
    without_date: Vec<UndatedReturn>,
    /// The same as an iCalendar feed.
    calendar_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct UndatedReturn {
    service: ServiceRef,
    municipalities: Vec<MunicipalityRef>,
}

#[derive(Serialize, ToSchema)]
pub struct ExpectedReturn {
    /// As stored: a day, a week (`2026-W51`), half a month (`2026-12-H2`) or a month (`2026-12`).
    #[schema(example = "2026-12-15")]
    date: String,
    /// The same as a period; the list is ordered by its first day, then its last.
    expected: api::ExpectedSpan,
    service: ServiceRef,
    /// The towns it is expected back in on that date.
    municipalities: Vec<MunicipalityRef>,
}

#[utoipa::path(
    get,
    path = "/fahrplan",
    tag = "recovery",
    summary = "The Fahrplan: which services are expected back where and when",
    description = "The same as the public page /fahrplan and its iCalendar feed: every service not in normal operation with an expected date from today on, \
        by date, with the towns. The date is the town's statement's or, for derived availability, the latest expected step of the procedures the service needs.",
    params(
        FahrplanParams,
        ("If-None-Match" = Option<String>, Header, description = "ETag of a copy the client has; answered with 304 when unchanged."),
    ),
    responses(
        (status = 200, description = "The expected returns.", body = Fahrplan, headers(("ETag" = String, description = "Changes whenever the content does."))),
        (status = 304, description = "Not modified: the client's copy is current."),
        (status = 400, description = "The slug is malformed or too long.", body = ApiError),
        (status = 404, description = "No town with this slug.", body = ApiError),
    )
)]
async fn fahrplan(
    State(app): State<Shared>,
    params: Result<Query<FahrplanParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let snap = app.snapshot();
    let Ok(Query(params)) = params else { return api::problem(&headers, Problem::InvalidParameters) };
    let town = match params.municipality.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(slug) => {
            match api::valid_slug(slug).and_then(|slug| snap.municipality(slug).ok_or(Problem::NoSuchMunicipality)) {
                Ok(m) => Some(m),
                Err(p) => return api::problem(&headers, p),
            }
        }
    };
    let key = town.map_or("fahrplan".to_string(), |m| format!("fahrplan:{}", m.slug));
    api::cached_json(&headers, &snap, &key, || Fahrplan {
        changed_at: snap.changed_at.clone(),
        municipality: town.map(|m| api::municipality_ref(&snap, m)),
        returns: snap
            .expected_returns(town)
            .into_iter()
            .filter_map(|r| {
                Some(ExpectedReturn {
                    expected: api::expected_span(&r.date)?,
                    date: r.date,
                    service: api::service_ref(r.service),
                    municipalities: r.towns.into_iter().map(|m| api::municipality_ref(&snap, m)).collect(),
                })
            })
            .collect(),
        without_date: snap
            .undated_returns(town)
            .into_iter()
            .map(|r| UndatedReturn {
                service: api::service_ref(r.service),
                municipalities: r.towns.into_iter().map(|m| api::municipality_ref(&snap, m)).collect(),
            })
            .collect(),
        calendar_url: match town {
            Some(m) => format!("{}/kommunen/{}/fahrplan.ics", app.public_url, m.slug),
            None => format!("{}/fahrplan.ics", app.public_url),
        },
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Procedures

/// A procedure or piece of shared infrastructure and where it stands.
#[derive(Serialize, ToSchema)]
pub struct ProcedureOut {
    #[schema(example = "kfz")]
    slug: String,
    #[schema(example = "Kfz-Zulassungsverfahren")]
    name: String,
    /// `procedure` or `infrastructure`.
    kind: String,
    /// Service area, empty for infrastructure.
    area: String,
    /// Lower numbers are restarted first.
    priority: i64,
    stage: Stage,
    /// Since when (RFC 3339, UTC).
    #[schema(format = DateTime)]
    stage_since: String,
    /// What basic operation lacks.
    missing_functions: Vec<String>,
    /// What basic operation offers, in residents' words.
    offered_functions: Vec<String>,
    /// Slugs of the procedures and infrastructure it needs.
    depends_on: Vec<String>,
    /// Slugs of the procedures that need it.
    dependents: Vec<String>,
    /// Slugs of the services that need it.
    services: Vec<String>,
    /// YYYY-MM-DD or empty.
    expected_release: String,
    /// YYYY-MM-DD or empty.
    expected_normal: String,
    /// How far it is rolled out over the towns it is run for.
    rollout: Progress,
    /// Name it in `If-Match` (or `version`) when changing the description.
    version: i64,
}

fn procedure_out(snap: &Snapshot, p: &Procedure, towns: &[&crate::domain::Municipality]) -> ProcedureOut {
    ProcedureOut {
        slug: p.slug.clone(),
        name: p.name.clone(),
        kind: p.kind.clone(),
        area: p.area.clone(),
        priority: p.priority,
        stage: p.stage,
        stage_since: p.stage_since.clone(),
        missing_functions: p.missing_functions.clone(),
        offered_functions: p.offered_functions.clone(),
        depends_on: p.depends_on.clone(),
        dependents: snap
            .data
            .procedures
            .iter()
            .filter(|o| o.depends_on.contains(&p.slug))
            .map(|o| o.slug.clone())
            .collect(),
        services: snap
            .data
            .service_procedures
            .iter()
            .filter(|(_, proc)| *proc == p.slug)
            .map(|(s, _)| s.clone())
            .collect(),
        expected_release: p.expected_release.clone(),
        expected_normal: p.expected_normal.clone(),
        rollout: Progress::of(snap, p, towns),
        version: p.version,
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProcedureList {
    /// In restart order: each after what it depends on, otherwise by priority.
    procedures: Vec<ProcedureOut>,
}

/// The next step's gate: what it still needs.
#[derive(Serialize, ToSchema)]
pub struct Gate {
    /// The next stage forward; null when back in normal operation.
    next_stage: Option<Stage>,
    /// Every condition the next step does not meet yet (`condition` plus details), as in a 409.
    #[schema(value_type = Vec<Object>)]
    unmet: Value,
    /// The same in words.
    messages: Vec<String>,
}

/// How far the procedure is live in one town.
#[derive(Serialize, ToSchema)]
pub struct TownRollout {
    municipality: MunicipalityRef,
    /// As it counts (never more than the procedure's stage allows).
    stage: Rollout,
    /// Since when (RFC 3339, UTC).
    #[schema(format = DateTime)]
    since: String,
    /// When the next step is expected there (YYYY-MM-DD or empty).
    expected_date: String,
    author: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProcedureDetail {
    #[serde(flatten)]
    procedure: ProcedureOut,
    gate: Gate,
    /// Every town it is run for.
    rollouts: Vec<TownRollout>,
    /// Stage changes with their evidence, newest first.
    history: Vec<ProcedureStep>,
}

/// Reading the board needs a token of any role.
fn may_read(who: &Principal) -> Result<(), Fail> {
    authorize(who, &Action::ReadInternal).map_err(|_| Fail::forbidden())
}

fn find(snap: &Snapshot, path: Result<Path<String>, PathRejection>) -> Result<&Procedure, Fail> {
    let Ok(Path(slug)) = path else { return Err(Fail::bad_request("api.invalid_slug")) };
    snap.procedure(editing::check_slug(&slug)?).ok_or_else(|| Fail::not_found("gate.no_such_procedure"))
}

#[utoipa::path(
    get,
    path = "/procedures",
    tag = "recovery",
    summary = "Every procedure and piece of infrastructure with its stage and rollout",
    description = "In restart order. Any role may read.",
    responses((status = 200, description = "The procedures.", body = ProcedureList), Refusals),
    security(("bearer" = []))
)]
async fn list_procedures(State(app): State<Shared>, Caller(who): Caller, headers: HeaderMap) -> Response {
    let result = (|| {
        may_read(&who)?;
        let snap = app.snapshot();
        let towns = board::served_towns(&snap);
        let procedures =
            board::restart_order(&snap.data.procedures).into_iter().map(|p| procedure_out(&snap, p, &towns)).collect();
        editing::reply(StatusCode::OK, &ProcedureList { procedures })
    })();
    editing::respond(&headers, result)
}

#[utoipa::path(
    get,
    path = "/procedures/{slug}",
    tag = "recovery",
    summary = "One procedure with its gate, its rollout per town and its history",
    params(("slug" = Slug, Path, description = "The procedure's slug.", example = "kfz")),
    responses(
        (status = 200, description = "The procedure.", body = ProcedureDetail),
        (status = 400, description = "The slug is malformed (`bad_request`).", body = ApiError),
        (status = 404, description = "No such procedure.", body = ApiError),
        Refusals,
    ),
    security(("bearer" = []))
)]
async fn get_procedure(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        may_read(&who)?;
        let snap = app.snapshot();
        let p = find(&snap, path)?;
        let lang = api::message_lang(&headers);
        let towns = board::served_towns(&snap);
        let next_stage = board::next_stage(p.stage);
        let unmet = match next_stage {
            Some(next) => crate::domain::recovery::check_step(
                &crate::domain::recovery::states(&snap.data.procedures),
                &p.slug,
                next,
                "-",
            )
            .err()
            .unwrap_or_default(),
            None => Vec::new(),
        };
        let unmet = serde_json::json!(unmet);
        let messages = board::explain(lang, &snap, &serde_json::json!({ "unmet": unmet }));
        let rollouts = towns
            .iter()
            .filter_map(|m| {
                let r = snap.rollout(&p.slug, &m.ags)?;
                Some(TownRollout {
                    municipality: api::municipality_ref(&snap, m),
                    stage: board::effective(&snap, p, &m.ags)?,
                    since: r.since.clone(),
                    expected_date: r.expected_date.clone(),
                    author: r.author.clone(),
                })
            })
            .collect();
        let mut c = app.store.read().await?;
        let history = store::procedure_steps(&mut c, &p.slug).await?;
        editing::reply(
            StatusCode::OK,
            &ProcedureDetail {
                procedure: procedure_out(&snap, p, &towns),
                gate: Gate { next_stage, unmet, messages },
                rollouts,
                history,
            },
        )
    };
    editing::respond(&headers, result.await)
}

/// A refused recovery write: gate refusals and cycles come with their reasons in words.
fn refusal(headers: &HeaderMap, snap: &Snapshot, e: WriteError) -> Fail {
    match e {
        WriteError::GateRefused { .. } | WriteError::Cycle { .. } => {
            let key = if matches!(e, WriteError::Cycle { .. }) { "gate.api_cycle" } else { "gate.api_refused" };
            let mut current = e.current().unwrap_or_default();
            current["messages"] = serde_json::json!(board::explain(api::message_lang(headers), snap, &current));
            Fail::conflict(key, current)
        }
        WriteError::NotFound("procedure") => Fail::not_found("gate.no_such_procedure"),
        other => other.into(),
    }
}

/// A procedure as this write saved it (its version is the one the write produced), with what
/// the snapshot knows around it.
fn saved_procedure(app: &App, p: &Procedure) -> ProcedureOut {
    let snap = app.snapshot();
    procedure_out(&snap, p, &board::served_towns(&snap))
}

/// The procedure as stored after a write.
fn saved(app: &App, slug: &str) -> Result<ProcedureOut, Fail> {
    let snap = app.snapshot();
    let p = snap.procedure(slug).ok_or_else(|| Fail::internal("saved procedure not found"))?;
    Ok(procedure_out(&snap, p, &board::served_towns(&snap)))
}

#[utoipa::path(
    post,
    path = "/procedures",
    tag = "recovery",
    summary = "Add a procedure or piece of shared infrastructure",
    description = "It starts `down`. Dependencies must exist and must not form a cycle (409 naming it in `current.cycle`). Unknown fields are rejected with 422. Takes an `Idempotency-Key`.",
    params(IdempotencyKey),
    request_body = ProcedureInput,
    responses(
        (status = 201, description = "The new procedure, version 1.", body = ProcedureOut),
        (status = 409, description = "A procedure with this slug exists (`conflict`, `current.version`), or the dependencies form a cycle (`current.cycle`).", body = ApiError),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_procedure(
    State(app): State<Shared>,
    Caller(who): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (shared, app, who, h) = (app.clone(), &app, &who, &headers);
    editing::post_json(
        app,
        who,
        &headers,
        &uri,
        body,
        |input: ProcedureInput| async move {
            let snap = app.snapshot();
            // Procedures are never removed, so one in the snapshot exists; the write re-checks
            // on the stored rows for one saved since.
            if let Some(existing) = snap.procedure(&input.slug) {
                return Err(Fail::conflict("write.exists", serde_json::json!({ "version": existing.version })));
            }
            write::create_procedure(app, who, &input).await.map_err(|e| match e {
                WriteError::VersionConflict { current } => Fail::conflict("write.exists", current),
                e => refusal(h, &snap, e),
            })
        },
        move |_, p: &Procedure| editing::reply(StatusCode::CREATED, &saved_procedure(&shared, p)),
    )
    .await
}

#[utoipa::path(
    put,
    path = "/procedures/{slug}",
    tag = "recovery",
    summary = "Change a procedure's description",
    description = "Name, kind, area, priority, missing functions, dependencies, services and expected dates; not its stage (see `/steps`). `slug` must be the path's. \
        With a version (`If-Match` or `version`), refused with 409 if someone saved in between; a dependency cycle is refused with 409 naming it in `current.cycle`. Unknown fields are rejected with 422.",
    params(
        ("slug" = Slug, Path, description = "The procedure's slug.", example = "kfz"),
        ("If-Match" = Option<IfMatch>, Header, description = "The version the change starts from, e.g. `\"3\"`."),
    ),
    request_body = Versioned<ProcedureInput>,
    responses(
        (status = 200, description = "The procedure with its new version.", body = ProcedureOut),
        (status = 404, description = "No such procedure.", body = ApiError),
        (status = 409, description = "Someone saved since the given version (`current.version`), or a dependency cycle (`current.cycle`, `current.messages`).", body = ApiError),
        Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn put_procedure(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who, h) = (&app, &who, &headers);
    let result = async {
        let snap = app.snapshot();
        let slug = find(&snap, path)?.slug.clone();
        editing::put_json(&headers, body, |input: ProcedureInput, version| async move {
            if input.slug != slug {
                return Err(Fail::invalid("slug", "gate.path_mismatch"));
            }
            let p = write::save_procedure(app, who, &input, version).await.map_err(|e| refusal(h, &snap, e))?;
            editing::reply(StatusCode::OK, &saved_procedure(app, &p))
        })
        .await
    };
    editing::respond(&headers, result.await)
}

/// Body of POST /procedures/{slug}/steps.
#[derive(Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    /// The new stage: the next one forward, or any earlier one (a step back).
    #[schema(value_type = Stage, example = "cleared")]
    to: String,
    /// Who checked what (required forward), or the reason of a step back (required back).
    #[serde(default)]
    #[schema(schema_with = crate::write::formats::line, example = "Forensische Prüfung ohne Hinweise auf Kompromittierung")]
    evidence: String,
}

#[derive(Serialize, ToSchema)]
pub struct StageChange {
    procedure: String,
    stage: Stage,
}

#[derive(Serialize, ToSchema)]
pub struct StepResult {
    /// The procedure with its new stage.
    procedure: ProcedureOut,
    /// Every procedure whose stage changed: this one and, after a step back, the released
    /// procedures depending on it, which fell back to `hardened` (their rollouts went back to
    /// `not_started`).
    changed: Vec<StageChange>,
}

#[utoipa::path(
    post,
    path = "/procedures/{slug}/steps",
    tag = "recovery",
    summary = "Move a procedure through the security gates",
    description = "`down → under_review → cleared → hardened → released → normal`, one stage at a time forward with evidence; \
        `released` only after `cleared` and `hardened` and with every dependency released. Any earlier stage with a reason: \
        released procedures that depend on it fall back to `hardened` and their rollouts to `not_started`. \
        A refused step is 409 with every unmet condition in `current.unmet` (and in words in `current.messages`). Takes an `Idempotency-Key`.",
    params(("slug" = Slug, Path, description = "The procedure's slug.", example = "fahrerlaubnis"), IdempotencyKey),
    request_body = StepInput,
    responses(
        (status = 200, description = "The step was taken.", body = StepResult),
        (status = 404, description = "No such procedure.", body = ApiError),
        (status = 409, description = "A gate refused the step (`conflict`, `current.unmet`, `current.messages`).", body = ApiError),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_step(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (shared, app, who, h) = (app.clone(), &app, &who, &headers);
    post_on(
        app,
        who,
        path,
        &uri,
        &headers,
        body,
        |slug, input: StepInput| async move {
            let snap = app.snapshot();
            write::step_procedure(app, who, &slug, &input.to, &input.evidence).await.map_err(|e| refusal(h, &snap, e))
        },
        move |slug: &str, _: &StepInput, changed: &Vec<(String, Stage)>| {
            let changed = changed
                .iter()
                .map(|(procedure, stage)| StageChange { procedure: procedure.clone(), stage: *stage })
                .collect();
            editing::reply(StatusCode::OK, &StepResult { procedure: saved(&shared, slug)?, changed })
        },
    )
    .await
}

/// A POST about one procedure: 404 unless the path names one; then as every POST, with its slug.
#[allow(clippy::too_many_arguments)]
async fn post_on<T: Input + Send + Sync + 'static, O: Send + 'static, Fut>(
    app: &App,
    who: &Principal,
    path: Result<Path<String>, PathRejection>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    act: impl FnOnce(String, T) -> Fut,
    answer: impl Fn(&str, &T, &O) -> Result<Reply, Fail> + Clone + Send + 'static,
) -> Response
where
    Fut: Future<Output = Result<O, Fail>>,
{
    match find(&app.snapshot(), path) {
        Ok(p) => {
            let slug = p.slug.clone();
            let answer = {
                let slug = slug.clone();
                move |input: &T, out: &O| answer(&slug, input, out)
            };
            editing::post_json(app, who, headers, uri, body, |input: T| act(slug, input), answer).await
        }
        Err(f) => editing::respond(headers, Err(f)),
    }
}

#[derive(Serialize, ToSchema)]
pub struct RolloutResult {
    /// The procedure with its new rollout counts.
    procedure: ProcedureOut,
    stage: Rollout,
    /// How many towns were set.
    municipalities: usize,
    /// Of the towns the procedure is rolled out to, how many have a statement of their own (or
    /// their district's) that decides at least one of its services instead of the rollout: their
    /// pages keep showing the statement, and its editors see it flagged in the desk.
    municipalities_overridden: usize,
}

#[utoipa::path(
    post,
    path = "/procedures/{slug}/rollout",
    tag = "recovery",
    summary = "Roll a released procedure out (or back) in towns or whole districts",
    description = "`not_started → pilot → basic → normal` for every named town and every town of the named districts at once; `procedure` must be the path's slug. \
        No rollout before the procedure is released and no `normal` before the procedure is back to normal (409 with `current.unmet`); rolling back is always allowed. \
        The public pages of every affected town follow at once. Takes an `Idempotency-Key`.",
    params(("slug" = Slug, Path, description = "The procedure's slug.", example = "sozialwesen"), IdempotencyKey),
    request_body = RolloutInput,
    responses(
        (status = 200, description = "The rollout was set.", body = RolloutResult),
        (status = 404, description = "No such procedure, town or district.", body = ApiError),
        (status = 409, description = "A gate refused the rollout (`conflict`, `current.unmet`, `current.messages`).", body = ApiError),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_rollout(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (shared, app, who, h) = (app.clone(), &app, &who, &headers);
    post_on(
        app,
        who,
        path,
        &uri,
        &headers,
        body,
        |slug, input: RolloutInput| async move {
            if input.procedure != slug {
                return Err(Fail::invalid("procedure", "gate.path_mismatch"));
            }
            let snap = app.snapshot();
            write::set_rollout(app, who, &input).await.map_err(|e| refusal(h, &snap, e))
        },
        move |slug: &str, input: &RolloutInput, count: &usize| {
            let stage =
                Rollout::parse(&input.stage).ok_or_else(|| Fail::internal("stored an unknown rollout stage"))?;
            editing::reply(
                StatusCode::OK,
                &RolloutResult {
                    procedure: saved(&shared, slug)?,
                    stage,
                    municipalities: *count,
                    municipalities_overridden: shared.snapshot().towns_overriding(slug),
                },
            )
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document (merged into the read API's by `api::openapi`)

#[derive(OpenApi)]
#[openapi(
    paths(fahrplan, list_procedures, get_procedure, post_procedure, put_procedure, post_step, post_rollout),
    tags((name = "recovery", description = "The Fahrplan (public) and the recovery of the procedures: stages, security gates, rollout per town (bearer token)")),
)]
struct RecoveryDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = RecoveryDoc::openapi();
    editing::merge_flattened(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_documents_the_recovery_routes() {
        let doc = serde_json::to_value(crate::http::api::openapi()).unwrap();
        assert!(doc["paths"]["/fahrplan"]["get"].is_object());
        assert!(doc["paths"]["/fahrplan"]["get"]["security"].is_null(), "the Fahrplan is public");
        for (path, method) in [
            ("/procedures", "get"),
            ("/procedures", "post"),
            ("/procedures/{slug}", "get"),
            ("/procedures/{slug}", "put"),
            ("/procedures/{slug}/steps", "post"),
            ("/procedures/{slug}/rollout", "post"),
        ] {
            let op = &doc["paths"][path][method];
            assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{method} {path}");
            assert!(op["responses"]["401"].is_object(), "{method} {path}");
        }
        assert!(doc["paths"]["/procedures/{slug}/steps"]["post"]["responses"]["409"].is_object());
        assert_eq!(doc["components"]["schemas"]["Stage"]["enum"][0], "down");
        let versioned = &doc["components"]["schemas"]["Versioned_ProcedureInput"];
        assert!(
            versioned["properties"]["depends_on"].is_object() && versioned["properties"]["version"].is_object(),
            "{versioned}"
        );
    }
}
