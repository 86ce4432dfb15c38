//! The desk's webhooks: the ones a user may manage with their state and delivery log, a form to
//! register one (the signing secret is shown once), resume a paused one, remove one. The rules
//! (targets, filters, who may) are `notify::webhooks`'; this only shows and asks.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::{Value, context};
use serde::Serialize;

use crate::domain::authz::Role;
use crate::http::desk::pages::{Fields, Notice};
use crate::http::desk::{self, CsrfForm, Desk};
use crate::notify::{Refusal, webhooks as hooks};
use crate::read::live::Shared;
use crate::read::snapshot::Snapshot;
use crate::site::render::v;
use crate::store::webhooks::Webhook;
use crate::write::WriteError;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show))
        .route("/webhooks/{id}/fortsetzen", post(resume))
        .route("/webhooks/{id}/loeschen", post(remove))
}

/// One webhook as the desk shows it: its filters in words.
#[derive(Serialize)]
struct Row {
    id: String,
    url: String,
    owner: String,
    towns: Vec<String>,
    services: Vec<String>,
    events: Vec<String>,
    state: String,
    state_reason: String,
    created_at: String,
    contact_email: String,
}

fn row(snap: &Snapshot, w: &Webhook) -> Row {
    Row {
        id: w.id.clone(),
        url: w.url.clone(),
        owner: w.owner_name.clone(),
        towns: w
            .municipalities
            .iter()
            .map(|ags| snap.municipality_by_ags(ags).map_or_else(|| ags.clone(), |m| m.name.clone()))
            .collect(),
        services: w
            .services
            .iter()
            .map(|slug| snap.service(slug).map_or_else(|| slug.clone(), |s| s.name.clone()))
            .collect(),
        events: w.events.clone(),
        state: w.state.clone(),
        state_reason: w.state_reason.clone(),
        created_at: w.created_at.clone(),
        contact_email: w.contact_email.clone(),
    }
}

/// What the registration form offers `desk`: the towns they may name (editors: their own, and
/// they must name at least one), every service and every event type.
fn form_choices(app: &Shared, desk: &Desk) -> Value {
    let snap = app.snapshot();
    let p = desk.principal();
    let towns: Vec<Value> = snap
        .data
        .municipalities
        .iter()
        .filter(|m| p.role != Role::Editor || p.scopes.contains(&m.ags))
        .map(|m| context! { slug => m.slug.clone(), name => m.name.clone() })
        .collect();
    let services: Vec<Value> =
        snap.data.services.iter().map(|s| context! { slug => s.slug.clone(), name => s.name.clone() }).collect();
    context! {
        towns => towns, services => services, events => hooks::EVENT_TYPES,
        towns_required => p.role == Role::Editor, can_create => p.role != Role::Viewer,
    }
}

async fn render_list(app: &Shared, desk: &Desk, notice: Option<String>, created: Option<Value>) -> Response {
    let snap = app.snapshot();
    let rows: Vec<Row> = match hooks::visible(app, &desk.principal()).await {
        Ok(all) => all.iter().map(|w| row(&snap, w)).collect(),
        Err(e) => return desk::write_error_page(app, desk, WriteError::Internal(e), "/intern"),
    };
    let everyone = desk.principal().role == Role::Admin;
    desk.page(
        app,
        StatusCode::OK,
        "desk/webhooks.html",
        context! {
            rows => v(&rows), everyone => everyone, notice => notice, created => created,
            ..form_choices(app, desk)
        },
    )
}

async fn list(State(app): State<Shared>, Query(notice): Query<Notice>, desk: Desk) -> Response {
    render_list(&app, &desk, notice.text(desk.lang), None).await
}

async fn create(State(app): State<Shared>, desk: Desk, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    let f = Fields(pairs);
    if let Err(r) = desk.check_csrf(f.one("csrf")) {
        return r;
    }
    let input = hooks::WebhookInput {
        url: f.one("url").to_string(),
        municipalities: f.filled("municipalities"),
        services: f.filled("services"),
        events: f.filled("events"),
        contact_email: f.one("contact_email").to_string(),
    };
    match hooks::register(&app, &desk.principal(), &input).await {
        Ok((webhook, secret)) => {
            let created = context! { url => webhook.url, id => webhook.id, secret => secret };
            // The box with the secret says what was saved; the usual notice speaks of public pages.
            render_list(&app, &desk, None, Some(created)).await
        }
        Err(refusal) => {
            let e = match refusal {
                Refusal::Invalid(field, key) => WriteError::Invalid { field: field.into(), message: key },
                Refusal::Forbidden | Refusal::TooMany => WriteError::Forbidden,
                Refusal::Internal(e) => WriteError::Internal(e),
            };
            desk::write_error_page(&app, &desk, e, "/intern/webhooks")
        }
    }
}

async fn show(State(app): State<Shared>, Path(id): Path<String>, Query(notice): Query<Notice>, desk: Desk) -> Response {
    let found = match hooks::with_attempts(&app, &desk.principal(), &id).await {
        Ok(found) => found,
        Err(e) => return desk::write_error_page(&app, &desk, WriteError::Internal(e), "/intern/webhooks"),
    };
    let Some((webhook, attempts)) = found else {
        return desk::write_error_page(&app, &desk, WriteError::NotFound("webhook"), "/intern/webhooks");
    };
    let snap = app.snapshot();
    let delivered = attempts.iter().filter(|a| (200..300).contains(&a.status)).count();
    desk.page(
        &app,
        StatusCode::OK,
        "desk/webhook.html",
        context! {
            webhook => v(row(&snap, &webhook)), attempts => v(&attempts), delivered => delivered,
            notice => notice.text(desk.lang),
        },
    )
}

async fn resume(State(app): State<Shared>, Path(id): Path<String>, desk: Desk, Form(form): Form<CsrfForm>) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    match hooks::resume(&app, &desk.principal(), &id).await {
        Ok(Some(_)) => desk::see_other(&format!("/intern/webhooks/{id}?gespeichert=1")),
        Ok(None) => desk::write_error_page(&app, &desk, WriteError::NotFound("webhook"), "/intern/webhooks"),
        Err(e) => desk::write_error_page(&app, &desk, WriteError::Internal(e), "/intern/webhooks"),
    }
}

async fn remove(State(app): State<Shared>, Path(id): Path<String>, desk: Desk, Form(form): Form<CsrfForm>) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    match hooks::remove(&app, &desk.principal(), &id).await {
        Ok(true) => desk::see_other("/intern/webhooks?entfernt=1"),
        Ok(false) => desk::write_error_page(&app, &desk, WriteError::NotFound("webhook"), "/intern/webhooks"),
        Err(e) => desk::write_error_page(&app, &desk, WriteError::Internal(e), "/intern/webhooks"),
    }
}
