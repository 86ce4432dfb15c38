//! The recovery board of the editing desk under /intern/wiederanlauf: the matrix of towns ×
//! procedures with progress counts, one page per procedure (gate status, steps, rollout,
//! description, history) and the restart plan.
//!
//! Every signed-in role may look (`ReadInternal`); the forms are shown only to those `authz`
//! lets edit the recovery, and every change goes through `writes` (which asks `authz` again and
//! enforces the gates of `recovery`). A refused step or rollout shows the procedure page again
//! with every unmet condition in words.

use std::collections::{BTreeSet, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::domain::authz::{Action, authorize};
use crate::domain::recovery::{self, Procedure, Rollout, Stage};
use crate::domain::*;
use crate::http::desk::pages::{Fields, Notice};
use crate::http::desk::{self, Desk};
use crate::i18n;
use crate::read::live::Shared;
use crate::read::snapshot::Snapshot;
use crate::site::render::v;
use crate::store;
use crate::write::{self, ProcedureInput, RolloutInput, WriteError};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/wiederanlauf", get(board))
        .route("/wiederanlauf/plan", get(plan))
        .route("/wiederanlauf/neu", get(new_procedure).post(create_procedure))
        .route("/wiederanlauf/{slug}", get(procedure_page).post(save_procedure))
        .route("/wiederanlauf/{slug}/schritt", post(step))
        .route("/wiederanlauf/{slug}/rollout", post(rollout))
}

const BOARD: &str = "/intern/wiederanlauf";

// ---------------------------------------------------------------------------------------------
// Shared pieces (also used by the API and `demo advance`)

/// How far a procedure (or a service area) is rolled out over a set of towns; each town counted
/// once, at the rollout that counts (never more than the procedure's stage allows).
#[derive(Clone, Copy, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub not_started: usize,
    pub pilot: usize,
    pub basic: usize,
    pub normal: usize,
    /// Towns the procedure is run for.
    pub total: usize,
    /// Towns where it is live again: pilot, basic or normal operation.
    pub live: usize,
}

impl Progress {
    fn add(&mut self, r: Rollout) {
        self.total += 1;
        match r {
            Rollout::NotStarted => self.not_started += 1,
            Rollout::Pilot => self.pilot += 1,
            Rollout::Basic => self.basic += 1,
            Rollout::Normal => self.normal += 1,
        }
        if r >= Rollout::Pilot {
            self.live += 1;
        }
    }

    /// The progress of a procedure over `towns` (those without a rollout record do not count).
    pub fn of(snap: &Snapshot, p: &Procedure, towns: &[&Municipality]) -> Progress {
        let mut progress = Progress::default();
        for m in towns {
            if let Some(r) = effective(snap, p, &m.ags) {
                progress.add(r);
            }
        }
        progress
    }
}

/// The rollout of a procedure in a town as it counts, if the provider runs it for that town.
pub fn effective(snap: &Snapshot, p: &Procedure, ags: &str) -> Option<Rollout> {
    snap.rollout(&p.slug, ags).map(|r| recovery::rollout_allowed(p.stage, r.stage))
}

/// Towns the provider runs at least one procedure for, district by district in name order.
pub fn served_towns(snap: &Snapshot) -> Vec<&Municipality> {
    let served: HashSet<&str> = snap.data.rollouts.iter().map(|r| r.municipality_ags.as_str()).collect();
    snap.districts_with_towns()
        .flat_map(|d| snap.towns_of_district(&d.ags))
        .filter(|m| served.contains(m.ags.as_str()))
        .collect()
}

/// The stage after `stage`, if any.
pub fn next_stage(stage: Stage) -> Option<Stage> {
    Stage::ALL.into_iter().find(|s| *s > stage)
}

fn stage_word(lang: &str, stage: &str) -> String {
    i18n::t(lang, &format!("stage.{stage}"))
}

fn procedure_name(snap: &Snapshot, slug: &str) -> String {
    snap.procedure(slug).map_or_else(|| slug.to_string(), |p| p.name.clone())
}

/// Every unmet gate condition (`{"unmet": [...]}`) or the dependency cycle (`{"cycle": [...]}`)
/// of a refused recovery write, as sentences for people.
pub fn explain(lang: &str, snap: &Snapshot, refusal: &Json) -> Vec<String> {
    if let Some(cycle) = refusal.get("cycle").and_then(Json::as_array) {
        let names: Vec<&str> = cycle.iter().filter_map(Json::as_str).collect();
        return vec![i18n::tf(lang, "gate.cycle", &[("cycle", names.join(" → "))])];
    }
    let Some(unmet) = refusal.get("unmet").and_then(Json::as_array) else { return Vec::new() };
    unmet
        .iter()
        .map(|u| {
            let condition = u.get("condition").and_then(Json::as_str).unwrap_or_default();
            let arg = |name: &str| u.get(name).and_then(Json::as_str).unwrap_or_default();
            let args = [
                ("dependency", procedure_name(snap, arg("dependency"))),
                ("stage", stage_word(lang, arg("stage"))),
                ("from", stage_word(lang, arg("from"))),
                ("to", stage_word(lang, arg("to"))),
            ];
            i18n::tf(lang, &format!("gate.{condition}"), &args)
        })
        .collect()
}

/// What keeps a procedure from its next stage, in words (empty when nothing does).
fn unmet_for(lang: &str, snap: &Snapshot, p: &Procedure, to: Stage) -> Vec<String> {
    let states = recovery::states(&snap.data.procedures);
    match recovery::check_step(&states, &p.slug, to, "-") {
        Ok(()) => Vec::new(),
        Err(unmet) => explain(lang, snap, &serde_json::json!({ "unmet": unmet })),
    }
}

// ---------------------------------------------------------------------------------------------
// Pages and forms: helpers

fn can_edit(desk: &Desk) -> bool {
    authorize(&desk.principal(), &Action::EditRecovery).is_ok()
}

fn not_found(app: &Shared, desk: &Desk) -> Response {
    desk::write_error_page(app, desk, WriteError::NotFound("procedure"), BOARD)
}

/// Why a form was not saved, shown next to it: every reason in words, and the field at fault.
#[derive(Default, Serialize)]
struct Problems {
    /// `step`, `rollout` or `edit`: which form it concerns.
    form: &'static str,
    messages: Vec<String>,
    field: String,
}

/// A refusal the page can show next to its form, or the error for the general refusal page
/// (forbidden, gone, internal).
fn problems(
    lang: &str,
    snap: &Snapshot,
    form: &'static str,
    e: WriteError,
) -> Result<(StatusCode, Problems), WriteError> {
    let (status, messages, field) = match e {
        e @ (WriteError::GateRefused { .. } | WriteError::Cycle { .. }) => (
            StatusCode::CONFLICT,
            explain(lang, snap, &e.current().unwrap_or_default()),
            if matches!(e, WriteError::Cycle { .. }) { "depends_on" } else { "" }.to_string(),
        ),
        WriteError::VersionConflict { .. } => {
            (StatusCode::CONFLICT, vec![i18n::t(lang, "write.conflict")], String::new())
        }
        WriteError::Invalid { field, message } => {
            (StatusCode::UNPROCESSABLE_ENTITY, vec![i18n::t(lang, message)], field)
        }
        other => return Err(other),
    };
    Ok((status, Problems { form, messages, field }))
}

/// A procedure with its stage, as lists show it.
fn procedure_ref(p: &Procedure) -> Value {
    context! { slug => p.slug.clone(), name => p.name.clone(), kind => p.kind.clone(), stage => p.stage.as_str(), since => p.stage_since.clone() }
}

// ---------------------------------------------------------------------------------------------
// The board

#[derive(Deserialize, Default)]
struct BoardFilter {
    /// District slug; empty for all.
    #[serde(default)]
    kreis: String,
    /// Service area; empty for all.
    #[serde(default)]
    bereich: String,
}

async fn board(State(app): State<Shared>, Query(filter): Query<BoardFilter>, desk: Desk) -> Response {
    let snap = app.snapshot();
    let district = snap.district_by_slug(&filter.kreis);
    let area = if is_service_area(&filter.bereich) { filter.bereich.as_str() } else { "" };
    let all_towns = served_towns(&snap);
    let towns: Vec<&Municipality> =
        all_towns.iter().copied().filter(|m| district.is_none_or(|d| d.ags == m.district_ags)).collect();
    let procedures: Vec<&Procedure> =
        snap.data.procedures.iter().filter(|p| p.kind == "procedure" && (area.is_empty() || p.area == area)).collect();
    let columns: Vec<Value> = procedures
        .iter()
        .map(|p| context! { slug => p.slug.clone(), name => p.name.clone(), stage => p.stage.as_str(), progress => v(Progress::of(&snap, p, &towns)) })
        .collect();
    let rows: Vec<Value> = towns
        .iter()
        .map(|m| {
            let cells: Vec<&str> =
                procedures.iter().map(|p| effective(&snap, p, &m.ags).map_or("", Rollout::as_str)).collect();
            context! { slug => m.slug.clone(), name => m.name.clone(), cells => cells }
        })
        .collect();
    // Per service area: a town counts at the least advanced of the area's procedures there.
    let areas: Vec<Value> = SERVICE_AREAS
        .iter()
        .filter(|a| area.is_empty() || **a == area)
        .filter_map(|a| {
            let of_area: Vec<&&Procedure> = procedures.iter().filter(|p| p.area == *a).collect();
            let mut progress = Progress::default();
            for m in &towns {
                if let Some(least) = of_area.iter().filter_map(|p| effective(&snap, p, &m.ags)).min() {
                    progress.add(least);
                }
            }
            (progress.total > 0).then(|| context! { key => *a, progress => v(progress) })
        })
        .collect();
    let infrastructure: Vec<Value> =
        snap.data.procedures.iter().filter(|p| p.kind == "infrastructure").map(procedure_ref).collect();
    let districts: Vec<Value> = snap
        .districts_with_towns()
        .filter(|d| all_towns.iter().any(|m| m.district_ags == d.ags))
        .map(|d| context! { slug => d.slug.clone(), name => d.name.clone() })
        .collect();
    desk.page(&app, StatusCode::OK,
        "desk/board.html",
        context! {
            columns => columns, rows => rows, areas => areas, infrastructure => infrastructure, districts => districts,
            areas_all => SERVICE_AREAS, kreis => district.map(|d| d.slug.clone()), district_name => district.map(|d| d.name.clone()),
            bereich => area, can_edit => can_edit(&desk),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The restart plan

/// Procedures in the order they can be restarted: each after everything it depends on, and
/// among those that are free, the lower priority number first.
pub fn restart_order(procedures: &[Procedure]) -> Vec<&Procedure> {
    let mut placed: HashSet<&str> = HashSet::new();
    let mut order: Vec<&Procedure> = Vec::new();
    let mut waiting: BTreeSet<(i64, &str, &str)> =
        procedures.iter().map(|p| (p.priority, p.name.as_str(), p.slug.as_str())).collect();
    let known: HashSet<&str> = procedures.iter().map(|p| p.slug.as_str()).collect();
    while !waiting.is_empty() {
        let free = waiting.iter().copied().find(|(_, _, slug)| {
            let p = procedures.iter().find(|p| p.slug == *slug).expect("waiting procedures exist");
            p.depends_on.iter().all(|d| placed.contains(d.as_str()) || !known.contains(d.as_str()))
        });
        // A cycle cannot be saved; should one exist anyway, the rest follows by priority.
        let next = free.unwrap_or_else(|| *waiting.iter().next().expect("not empty"));
        waiting.remove(&next);
        placed.insert(next.2);
        order.extend(procedures.iter().find(|p| p.slug == next.2));
    }
    order
}

async fn plan(State(app): State<Shared>, desk: Desk) -> Response {
    let snap = app.snapshot();
    let towns = served_towns(&snap);
    let today = crate::domain::time::today_utc().format("%Y-%m-%d").to_string();
    let items: Vec<Value> = restart_order(&snap.data.procedures)
        .into_iter()
        .filter_map(|p| {
            let progress = Progress::of(&snap, p, &towns);
            let rollout_open = progress.normal < progress.total;
            if p.stage == Stage::Normal && !rollout_open {
                return None;
            }
            // Before the release, what keeps it from being released; after, the rollout is the work left.
            let blockers: Vec<String> = if p.stage < Stage::Released {
                let states = recovery::states(&snap.data.procedures);
                let unmet: Vec<recovery::Unmet> = recovery::check_step(&states, &p.slug, Stage::Released, "-")
                    .err()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|u| !matches!(u, recovery::Unmet::NotNextStage { .. }))
                    .collect();
                explain(desk.lang, &snap, &serde_json::json!({ "unmet": unmet }))
            } else if p.kind == "procedure" && rollout_open {
                vec![i18n::tf(desk.lang, "board.rollout_remaining", &[("n", (progress.total - progress.normal).to_string())])]
            } else {
                Vec::new()
            };
            let ready = match p.stage {
                Stage::Hardened if blockers.is_empty() => Some(i18n::t(desk.lang, "board.ready_for_release")),
                Stage::Released if blockers.is_empty() => Some(i18n::t(desk.lang, "board.ready_for_normal")),
                _ => None,
            };
            let next_rollout_date = snap
                .data
                .rollouts
                .iter()
                .filter(|r| r.procedure_slug == p.slug && r.stage != Rollout::Normal && r.expected_date >= today)
                .map(|r| r.expected_date.clone())
                .min();
            Some(context! {
                procedure => procedure_ref(p), area => p.area.clone(), priority => p.priority,
                next => next_stage(p.stage).map(Stage::as_str), depends_on => p.depends_on.iter().map(|d| procedure_name(&snap, d)).collect::<Vec<_>>(),
                expected_release => p.expected_release.clone(), expected_normal => p.expected_normal.clone(),
                next_rollout_date => next_rollout_date, progress => v(progress), blockers => blockers, ready => ready,
            })
        })
        .collect();
    desk.page(&app, StatusCode::OK, "desk/plan.html", context! { items => items })
}

// ---------------------------------------------------------------------------------------------
// One procedure

async fn procedure_page(
    State(app): State<Shared>,
    Path(slug): Path<String>,
    Query(notice): Query<Notice>,
    desk: Desk,
) -> Response {
    let content = context! { notice => notice.text_with(desk.lang, "board.saved_towns") };
    procedure_view(&app, &desk, &slug, StatusCode::OK, content).await
}

/// The procedure page; `extra` carries a notice, or the problems of a refused form and what was typed.
async fn procedure_view(app: &Shared, desk: &Desk, slug: &str, status: StatusCode, extra: Value) -> Response {
    let snap = app.snapshot();
    let Some(p) = snap.procedure(slug) else { return not_found(app, desk) };
    let history = async {
        let mut c = app.store.read().await?;
        store::procedure_steps(&mut c, slug).await
    };
    let history = match history.await {
        Ok(h) => h,
        Err(e) => return desk::write_error_page(app, desk, WriteError::Internal(e), BOARD),
    };
    let next = next_stage(p.stage);
    let dependencies: Vec<Value> = p
        .depends_on
        .iter()
        .map(|d| snap.procedure(d).map_or_else(|| context! { slug => d, name => d }, procedure_ref))
        .collect();
    let dependents: Vec<Value> =
        snap.data.procedures.iter().filter(|o| o.depends_on.contains(&p.slug)).map(procedure_ref).collect();
    let services: Vec<Value> = snap
        .data
        .service_procedures
        .iter()
        .filter(|(_, proc)| *proc == p.slug)
        .filter_map(|(s, _)| snap.service(s))
        .map(|s| context! { slug => s.slug.clone(), name => s.name.clone() })
        .collect();
    let towns = served_towns(&snap);
    let districts: Vec<Value> = snap
        .districts_with_towns()
        .filter_map(|d| {
            let list: Vec<Value> = towns
                .iter()
                .filter(|m| m.district_ags == d.ags)
                .map(|m| {
                    let record = snap.rollout(&p.slug, &m.ags);
                    context! {
                        slug => m.slug.clone(), name => m.name.clone(), stage => effective(&snap, p, &m.ags).map(Rollout::as_str),
                        expected_date => record.map(|r| r.expected_date.clone()),
                    }
                })
                .collect();
            (!list.is_empty()).then(|| context! { slug => d.slug.clone(), name => d.name.clone(), towns => list })
        })
        .collect();
    // The step form offers the next stage and every earlier one (a step back, with a reason).
    let step_choices: Vec<&str> =
        next.into_iter().chain(Stage::ALL.into_iter().filter(|s| *s < p.stage).rev()).map(Stage::as_str).collect();
    // A refused description form comes back with what was typed.
    let form = match extra.get_attr("form") {
        Ok(typed) if !typed.is_undefined() => typed,
        _ => edit_form_view(&snap, &procedure_input(p, &snap)),
    };
    desk.page(app, status,
        "desk/procedure.html",
        context! {
            p => v(p), next => next.map(Stage::as_str), gate => next.map(|n| unmet_for(desk.lang, &snap, p, n)).unwrap_or_default(),
            dependencies => dependencies, dependents => dependents, services => services, districts => districts,
            progress => v(Progress::of(&snap, p, &towns)), step_choices => step_choices, rollout_choices => Rollout::ALL.map(Rollout::as_str),
            history => v(history), can_edit => can_edit(desk), form => form,
            overriding => snap.towns_overriding(&p.slug),
            ..extra
        },
    )
}

async fn step(
    State(app): State<Shared>,
    Path(slug): Path<String>,
    desk: Desk,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields(pairs);
    if let Err(r) = desk.check_csrf(f.one("csrf")) {
        return r;
    }
    match write::step_procedure(&app, &desk.principal(), &slug, f.one("to"), f.one("evidence")).await {
        Ok(changed) => {
            Redirect::to(&format!("{BOARD}/{slug}?gespeichert=1&mit={}#stufe", changed.len().saturating_sub(1)))
                .into_response()
        }
        Err(e) => {
            refused(&app, &desk, &slug, "step", e, context! { evidence => f.one("evidence"), to => f.one("to") }).await
        }
    }
}

async fn rollout(
    State(app): State<Shared>,
    Path(slug): Path<String>,
    desk: Desk,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields(pairs);
    if let Err(r) = desk.check_csrf(f.one("csrf")) {
        return r;
    }
    let input = RolloutInput {
        procedure: slug.clone(),
        stage: f.one("stage").to_string(),
        municipalities: f.filled("municipalities"),
        districts: f.filled("districts"),
        expected_date: f.one("expected_date").to_string(),
    };
    match write::set_rollout(&app, &desk.principal(), &input).await {
        Ok(n) => Redirect::to(&format!("{BOARD}/{slug}?gespeichert={n}#rollout")).into_response(),
        Err(e) => {
            refused(
                &app,
                &desk,
                &slug,
                "rollout",
                e,
                context! { rollout_stage => input.stage, expected_date => input.expected_date },
            )
            .await
        }
    }
}

/// A refused form: the procedure page again with every reason next to the form, or the general
/// refusal page when there is no form to show it at (forbidden, gone).
async fn refused(app: &Shared, desk: &Desk, slug: &str, form: &'static str, e: WriteError, typed: Value) -> Response {
    match problems(desk.lang, &app.snapshot(), form, e) {
        Ok((status, problems)) => {
            procedure_view(app, desk, slug, status, context! { problems => v(problems), ..typed }).await
        }
        Err(e) => desk::write_error_page(app, desk, e, &format!("{BOARD}/{slug}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The description: new procedure and edit

/// The form's view of a procedure's description.
fn procedure_input(p: &Procedure, snap: &Snapshot) -> ProcedureInput {
    ProcedureInput {
        slug: p.slug.clone(),
        name: p.name.clone(),
        kind: p.kind.clone(),
        area: p.area.clone(),
        priority: p.priority,
        missing_functions: p.missing_functions.clone(),
        offered_functions: p.offered_functions.clone(),
        depends_on: p.depends_on.clone(),
        expected_release: p.expected_release.clone(),
        expected_normal: p.expected_normal.clone(),
        services: snap
            .data
            .service_procedures
            .iter()
            .filter(|(_, proc)| *proc == p.slug)
            .map(|(s, _)| s.clone())
            .collect(),
    }
}

/// The description form: the values, and the procedures and services to choose from.
fn edit_form_view(snap: &Snapshot, input: &ProcedureInput) -> Value {
    let others: Vec<Value> = snap
        .data
        .procedures
        .iter()
        .filter(|o| o.slug != input.slug)
        .map(|o| context! { slug => o.slug.clone(), name => o.name.clone(), checked => input.depends_on.contains(&o.slug) })
        .collect();
    let service_groups: Vec<Value> = SERVICE_AREAS
        .iter()
        .map(|a| {
            let services: Vec<Value> = snap
                .data
                .services
                .iter()
                .filter(|s| s.area == *a)
                .map(|s| context! { slug => s.slug.clone(), name => s.name.clone(), checked => input.services.contains(&s.slug) })
                .collect();
            let open = input.services.iter().any(|s| snap.service(s).is_some_and(|s| s.area == *a));
            context! { key => *a, services => services, open => open }
        })
        .collect();
    context! {
        input => v(input), missing => input.missing_functions.join("\n"), offered => input.offered_functions.join("\n"),
        others => others, service_groups => service_groups,
        areas => SERVICE_AREAS,
    }
}

/// A textarea's non-empty lines.
fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// The description as submitted; `priority` must be a whole number.
fn submitted_input(f: &Fields, slug: &str) -> Result<ProcedureInput, WriteError> {
    let priority = f.one("priority").trim();
    Ok(ProcedureInput {
        slug: slug.to_string(),
        name: f.one("name").to_string(),
        kind: f.one("kind").to_string(),
        area: f.one("area").to_string(),
        priority: if priority.is_empty() {
            100
        } else {
            priority
                .parse()
                .map_err(|_| WriteError::Invalid { field: "priority".into(), message: "desk_form.invalid_number" })?
        },
        missing_functions: lines(f.one("missing_functions")),
        offered_functions: lines(f.one("offered_functions")),
        depends_on: f.filled("depends_on"),
        expected_release: f.one("expected_release").to_string(),
        expected_normal: f.one("expected_normal").to_string(),
        services: f.filled("services"),
    })
}

async fn new_procedure(State(app): State<Shared>, desk: Desk) -> Response {
    if !can_edit(&desk) {
        return desk::write_error_page(&app, &desk, WriteError::Forbidden, BOARD);
    }
    let input = ProcedureInput { kind: "procedure".into(), priority: 100, ..ProcedureInput::default() };
    desk.page(
        &app,
        StatusCode::OK,
        "desk/procedure_new.html",
        context! { form => edit_form_view(&app.snapshot(), &input) },
    )
}

async fn create_procedure(State(app): State<Shared>, desk: Desk, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let f = Fields(pairs);
    if let Err(r) = desk.check_csrf(f.one("csrf")) {
        return r;
    }
    let slug = f.one("slug").trim().to_string();
    let result = match submitted_input(&f, &slug) {
        Err(e) => Err(e),
        // A new procedure must not silently replace an existing one, nor hide a page of the board.
        Ok(_) if app.snapshot().procedure(&slug).is_some() => {
            Err(WriteError::Invalid { field: "slug".into(), message: "write.exists" })
        }
        Ok(input) => write::save_procedure(&app, &desk.principal(), &input, None).await.map(|_| input),
    };
    match result {
        Ok(_) => Redirect::to(&format!("{BOARD}/{slug}?gespeichert=1")).into_response(),
        Err(e) => {
            let snap = app.snapshot();
            let typed = submitted_input(&f, &slug).unwrap_or_default();
            match problems(desk.lang, &snap, "edit", e) {
                Ok((status, problems)) => desk.page(
                    &app,
                    status,
                    "desk/procedure_new.html",
                    context! { form => edit_form_view(&snap, &typed), problems => v(problems) },
                ),
                Err(e) => desk::write_error_page(&app, &desk, e, BOARD),
            }
        }
    }
}

async fn save_procedure(
    State(app): State<Shared>,
    Path(slug): Path<String>,
    desk: Desk,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields(pairs);
    if let Err(r) = desk.check_csrf(f.one("csrf")) {
        return r;
    }
    if app.snapshot().procedure(&slug).is_none() {
        return not_found(&app, &desk);
    }
    let version = f.one("version").parse::<i64>().ok();
    let result = match submitted_input(&f, &slug) {
        Ok(input) => write::save_procedure(&app, &desk.principal(), &input, version).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to(&format!("{BOARD}/{slug}?gespeichert=1#beschreibung")).into_response(),
        Err(e) => {
            let typed = submitted_input(&f, &slug).unwrap_or_default();
            let form = edit_form_view(&app.snapshot(), &typed);
            refused(&app, &desk, &slug, "edit", e, context! { form => form }).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procedure(slug: &str, priority: i64, depends_on: &[&str]) -> Procedure {
        Procedure {
            slug: slug.into(),
            name: slug.into(),
            kind: "procedure".into(),
            area: String::new(),
            priority,
            stage: Stage::Down,
            stage_since: String::new(),
            missing_functions: vec![],
            offered_functions: vec![],
            expected_release: String::new(),
            expected_normal: String::new(),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            version: 1,
        }
    }

    #[test]
    fn the_restart_order_puts_dependencies_first_then_priority() {
        let all = vec![
            procedure("kfz", 1, &["netz", "melde"]),
            procedure("melde", 5, &["netz"]),
            procedure("netz", 9, &[]),
            procedure("kasse", 2, &[]),
            procedure("gone", 0, &["unknown"]),
        ];
        let order: Vec<&str> = restart_order(&all).iter().map(|p| p.slug.as_str()).collect();
        assert_eq!(order, ["gone", "kasse", "netz", "melde", "kfz"]);
    }

    #[test]
    fn refusals_are_explained_in_words() {
        let snap = Snapshot::build(
            Dataset { procedures: vec![procedure("netz", 0, &[])], ..Dataset::default() },
            String::new(),
            1,
        );
        let refusal = serde_json::json!({ "unmet": [
            { "condition": "not_cleared" },
            { "condition": "dependency_not_released", "dependency": "netz", "stage": "cleared" },
        ] });
        let lines = explain("de", &snap, &refusal);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("netz") && lines[1].contains(&i18n::t("de", "stage.cleared")), "{lines:?}");
        assert!(lines.iter().all(|l| !l.contains('{') && !l.starts_with("gate.")), "{lines:?}");
        let cycle = explain("en", &snap, &serde_json::json!({ "cycle": ["a", "b", "a"] }));
        assert!(cycle[0].contains("a → b → a"), "{cycle:?}");
    }
}
