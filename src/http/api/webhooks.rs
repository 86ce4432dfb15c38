//! The webhook routes under /api/v1: register (the secret is shown once), list, look at one
//! with its delivery log, resume, remove. Admins, operators and editors (editors only about towns of
//! their scope); the rules are in `notify::webhooks`.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::api::editing::{Body, BodyErrors, Caller, Refusals, body_bytes, check_id, parse, reply, respond};
use crate::http::api::error::{ApiError, Fail};
use crate::notify::webhooks::{self as hooks, WebhookInput};
use crate::read::live::Shared;
use crate::store::webhooks::{Attempt, Webhook};
use crate::write::formats;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).delete(remove))
        .route("/webhooks/{id}/resume", post(resume))
}

/// A webhook to register. Empty or missing filters mean "every".
#[derive(Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where to POST: `http://` or `https://`, not a private, loopback or link-local address.
    #[schema(value_type = formats::WebAddress, example = "https://www.menden.de/notbetrieb-hook")]
    pub url: String,
    /// Town slugs (editors must name towns of their scope).
    #[schema(value_type = Vec<formats::Slug>)]
    pub municipalities: Vec<String>,
    /// Service slugs.
    #[schema(value_type = Vec<formats::Slug>)]
    pub services: Vec<String>,
    /// `availability.changed`, `announcement.published`, `announcement.corrected`, `announcement.withdrawn`.
    #[schema(value_type = Vec<formats::WebhookEvent>)]
    pub events: Vec<String>,
    /// Whom to tell by mail when the webhook is paused (failing for about a day) or disabled.
    #[schema(value_type = formats::ContactEmail, example = "webmaster@menden.de")]
    pub contact_email: String,
}

/// A registered webhook; `secret` only in the answer that registered it.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    #[schema(example = "wh_3f2a…")]
    id: String,
    url: String,
    owner: String,
    /// Town AGS (empty: every town).
    municipalities: Vec<String>,
    services: Vec<String>,
    events: Vec<String>,
    /// `active`, `paused` (failing for about a day) or `disabled` (answered 410 Gone).
    state: String,
    state_reason: String,
    created_at: String,
    /// Whom a pause or a disabling is mailed to; empty: nobody (the desk shows it).
    contact_email: String,
    /// The signing key (`whsec_…`), shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn view(w: &Webhook, secret: Option<String>) -> WebhookView {
    WebhookView {
        id: w.id.clone(),
        url: w.url.clone(),
        owner: w.owner_name.clone(),
        municipalities: w.municipalities.clone(),
        services: w.services.clone(),
        events: w.events.clone(),
        state: w.state.clone(),
        state_reason: w.state_reason.clone(),
        created_at: w.created_at.clone(),
        contact_email: w.contact_email.clone(),
        secret,
    }
}

/// A webhook with its latest delivery attempts, newest first.
#[derive(Serialize, ToSchema)]
pub struct WebhookWithLog {
    #[serde(flatten)]
    webhook: WebhookView,
    #[schema(value_type = Vec<Object>)]
    attempts: Vec<Attempt>,
}

#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    summary = "Register a webhook",
    description = "Every event in scope is POSTed as `{\"type\", \"timestamp\", \"data\"}`, signed as Standard Webhooks describes (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of \"id.timestamp.body\">` with the base64 key after `whsec_`). Failures are retried with backoff for about a day; `410 Gone` disables the webhook. The answer carries the secret once.",
    request_body = WebhookRequest,
    responses(
        (status = 201, description = "Registered; `secret` is shown this once.", body = WebhookView),
        Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn create(State(app): State<Shared>, Caller(who): Caller, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let bytes = body_bytes(&headers, body)?;
        let request: WebhookRequest = parse(&bytes)?;
        let input = WebhookInput {
            url: request.url,
            municipalities: request.municipalities,
            services: request.services,
            events: request.events,
            contact_email: request.contact_email,
        };
        let (webhook, secret) =
            hooks::register(&app, &who, &input).await.map_err(crate::http::subscriptions::refused)?;
        reply(StatusCode::CREATED, &view(&webhook, Some(secret)))
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    summary = "The webhooks the token may manage",
    description = "Admins see every webhook, everyone else their own.",
    responses((status = 200, description = "The webhooks, oldest first, without secrets.", body = Vec<WebhookView>), Refusals),
    security(("bearer" = []))
)]
async fn list(State(app): State<Shared>, Caller(who): Caller, headers: HeaderMap) -> Response {
    let result = async {
        let all = hooks::visible(&app, &who).await.map_err(Fail::internal)?;
        reply(StatusCode::OK, &all.iter().map(|w| view(w, None)).collect::<Vec<_>>())
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "webhooks",
    summary = "One webhook with its delivery log",
    params(("id" = formats::Id, Path, description = "The webhook's id.")),
    responses(
        (status = 200, description = "The webhook and its latest 100 attempts.", body = WebhookWithLog),
        (status = 400, description = "A malformed id.", body = ApiError),
        (status = 404, description = "No webhook with this id that the token may manage.", body = ApiError),
        Refusals,
    ),
    security(("bearer" = []))
)]
async fn show(
    State(app): State<Shared>,
    Caller(who): Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        let id = check_id(path)?;
        let (w, attempts) = hooks::with_attempts(&app, &who, &id)
            .await
            .map_err(Fail::internal)?
            .ok_or_else(|| Fail::not_found("webhook.not_found"))?;
        reply(StatusCode::OK, &WebhookWithLog { webhook: view(&w, None), attempts })
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    summary = "Remove a webhook",
    params(("id" = formats::Id, Path, description = "The webhook's id.")),
    responses(
        (status = 204, description = "Removed; messages still waiting for it are not sent."),
        (status = 400, description = "A malformed id.", body = ApiError),
        (status = 404, description = "No webhook with this id that the token may manage.", body = ApiError),
        Refusals,
    ),
    security(("bearer" = []))
)]
async fn remove(
    State(app): State<Shared>,
    Caller(who): Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        let id = check_id(path)?;
        if hooks::remove(&app, &who, &id).await.map_err(Fail::internal)? {
            Ok(())
        } else {
            Err(Fail::not_found("webhook.not_found"))
        }
    };
    match result.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => f.response(&headers),
    }
}

#[utoipa::path(
    post,
    path = "/webhooks/{id}/resume",
    tag = "webhooks",
    summary = "Resume a paused or disabled webhook",
    description = "For when the receiver works again. Messages given up while it was paused are not sent again; the next events are.",
    params(("id" = formats::Id, Path, description = "The webhook's id.")),
    responses(
        (status = 200, description = "Active again.", body = WebhookView),
        (status = 400, description = "A malformed id.", body = ApiError),
        (status = 404, description = "No webhook with this id that the token may manage.", body = ApiError),
        Refusals,
    ),
    security(("bearer" = []))
)]
async fn resume(
    State(app): State<Shared>,
    Caller(who): Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        let id = check_id(path)?;
        let w = hooks::resume(&app, &who, &id)
            .await
            .map_err(Fail::internal)?
            .ok_or_else(|| Fail::not_found("webhook.not_found"))?;
        reply(StatusCode::OK, &view(&w, None))
    };
    respond(&headers, result.await)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create, list, show, remove, resume),
    components(schemas(WebhookRequest, WebhookView, WebhookWithLog)),
    tags((name = "webhooks", description = "Signed notifications to other systems"))
)]
struct WebhooksDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    WebhooksDoc::openapi()
}
