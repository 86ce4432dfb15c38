//! Subscribing by e-mail on the public pages and in the API, confirming, and unsubscribing.
//! The rules are in `notify`; here are the forms, pages and answers.
//!
//! The public forms carry no CSRF token: they need no session, and a forged request can do no
//! more than the form itself (ask for a confirmation mail, rate-limited). Links in mails only
//! show a page with a button; only the button's POST (or a mail client's RFC 8058 one-click
//! POST) changes anything, since mail scanners open links.

use axum::Form;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FormRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Lang;
use super::client::ClientAddr;
use crate::http::api::editing::{body_bytes, parse};
use crate::http::api::error::Fail;
use crate::notify::{self, Refusal, SubscribeInput};
use crate::read::live::Shared;
use crate::site::render::{self, SubscriptionStep};
use crate::write::formats;

/// The public routes, per language.
pub fn public_routes() -> Router<Shared> {
    Router::new()
        .route("/abonnieren", post(subscribe_form))
        .route("/abo/bestaetigen/{token}", axum::routing::get(confirm_page).post(confirm_post))
        .route("/abo/abmelden/{token}", axum::routing::get(unsubscribe_page).post(unsubscribe_post))
        .route("/abo/verwalten", axum::routing::get(manage_request_page).post(manage_request))
        .route("/abo/verwalten/{token}", axum::routing::get(manage_list))
}

/// The API route, under /api/v1.
pub fn api_routes() -> Router<Shared> {
    Router::new().route("/subscriptions", post(subscribe_api))
}

/// The longest token a link can carry (ours are 43 or 65 characters).
const MAX_TOKEN: usize = 100;

fn page(app: &Shared, lang: &str, status: StatusCode, step: &SubscriptionStep) -> Response {
    personal_page(status, render::subscription(&app.snapshot(), lang, step))
}

/// A page made for one person's link or request: never cached, never indexed.
fn personal_page(status: StatusCode, rendered: anyhow::Result<String>) -> Response {
    match rendered {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(super::HTML)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::HeaderName::from_static("x-robots-tag"), HeaderValue::from_static("noindex")),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a subscription page failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn step<'a>(step: &'a str, scope: &'a str, action: &'a str) -> SubscriptionStep<'a> {
    SubscriptionStep { step, scope, action, one_click: false, error: "" }
}

#[derive(Deserialize)]
struct SubscribeForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    municipality: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    area: String,
}

async fn subscribe_form(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    ClientAddr(client): ClientAddr,
    form: Result<Form<SubscribeForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return page(&app, lang, StatusCode::BAD_REQUEST, &step("invalid", "", ""));
    };
    let input = SubscribeInput {
        email: form.email,
        municipality: Some(form.municipality),
        service: Some(form.service),
        area: Some(form.area),
        lang: Some(lang.to_string()),
    };
    match notify::subscribe(&app, &input, client).await {
        Ok(()) => page(&app, lang, StatusCode::OK, &step("pending", "", "")),
        Err(Refusal::Invalid(_, key)) => {
            let error = crate::i18n::t(lang, key);
            page(
                &app,
                lang,
                StatusCode::UNPROCESSABLE_ENTITY,
                &SubscriptionStep { error: &error, ..step("invalid", "", "") },
            )
        }
        Err(Refusal::TooMany) => page(&app, lang, StatusCode::TOO_MANY_REQUESTS, &step("too_many", "", "")),
        Err(Refusal::Forbidden) => page(&app, lang, StatusCode::FORBIDDEN, &step("invalid", "", "")),
        Err(Refusal::Internal(e)) => {
            tracing::error!(error = %format!("{e:#}"), "subscribing failed");
            page(&app, lang, StatusCode::INTERNAL_SERVER_ERROR, &step("invalid", "", ""))
        }
    }
}

fn token_ok(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn unknown(app: &Shared, lang: &str) -> Response {
    page(app, lang, StatusCode::NOT_FOUND, &step("unknown", "", ""))
}

async fn confirm_page(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(token): Path<String>,
) -> Response {
    if !token_ok(&token) {
        return unknown(&app, lang);
    }
    match notify::find_by_confirm_token(&app, &token).await {
        Ok(Some(found)) if found.subscription.confirmed => {
            page(&app, lang, StatusCode::OK, &step("confirmed", &found.scope, ""))
        }
        Ok(Some(found)) => {
            let action = render::lang_url(lang, &notify::confirm_path(&token));
            page(&app, lang, StatusCode::OK, &step("confirm", &found.scope, &action))
        }
        Ok(None) => unknown(&app, lang),
        Err(e) => internal(&app, lang, e),
    }
}

async fn confirm_post(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(token): Path<String>,
) -> Response {
    if !token_ok(&token) {
        return unknown(&app, lang);
    }
    let found = match notify::find_by_confirm_token(&app, &token).await {
        Ok(Some(found)) => found,
        Ok(None) => return unknown(&app, lang),
        Err(e) => return internal(&app, lang, e),
    };
    match notify::confirm(&app, &token).await {
        Ok(true) => page(&app, lang, StatusCode::OK, &step("confirmed", &found.scope, "")),
        Ok(false) => unknown(&app, lang),
        Err(e) => internal(&app, lang, e),
    }
}

async fn unsubscribe_page(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(token): Path<String>,
) -> Response {
    if !token_ok(&token) {
        return unknown(&app, lang);
    }
    match notify::find_by_unsubscribe_token(&app, &token).await {
        Ok(Some(found)) => {
            let action = render::lang_url(lang, &notify::unsubscribe_path(&token));
            page(
                &app,
                lang,
                StatusCode::OK,
                &SubscriptionStep { one_click: true, ..step("unsubscribe", &found.scope, &action) },
            )
        }
        Ok(None) => unknown(&app, lang),
        Err(e) => internal(&app, lang, e),
    }
}

/// The button of the unsubscribe page, and a mail client's one-click POST
/// (`List-Unsubscribe=One-Click`, RFC 8058): either ends the subscription at once.
async fn unsubscribe_post(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(token): Path<String>,
    _body: Result<Bytes, BytesRejection>,
) -> Response {
    if !token_ok(&token) {
        return unknown(&app, lang);
    }
    match notify::unsubscribe(&app, &token).await {
        Ok(true) => page(&app, lang, StatusCode::OK, &step("unsubscribed", "", "")),
        Ok(false) => unknown(&app, lang),
        Err(e) => internal(&app, lang, e),
    }
}

fn manage_page(
    app: &Shared,
    lang: &str,
    status: StatusCode,
    mode: &str,
    listed: minijinja::Value,
    error: &str,
) -> Response {
    personal_page(status, render::subscriptions(&app.snapshot(), lang, mode, listed, error))
}

async fn manage_request_page(State(app): State<Shared>, Extension(Lang(lang)): Extension<Lang>) -> Response {
    manage_page(&app, lang, StatusCode::OK, "request", minijinja::Value::UNDEFINED, "")
}

#[derive(Deserialize)]
struct ManageForm {
    #[serde(default)]
    email: String,
}

/// Mails a link to the list of the address's subscriptions; the same page whether or not it has any.
async fn manage_request(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    ClientAddr(client): ClientAddr,
    form: Result<Form<ManageForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return manage_page(&app, lang, StatusCode::BAD_REQUEST, "request", minijinja::Value::UNDEFINED, "");
    };
    match notify::request_manage_link(&app, &form.email, lang, client).await {
        Ok(()) => manage_page(&app, lang, StatusCode::OK, "sent", minijinja::Value::UNDEFINED, ""),
        Err(Refusal::Invalid(_, key)) => {
            let error = crate::i18n::t(lang, key);
            manage_page(&app, lang, StatusCode::UNPROCESSABLE_ENTITY, "request", minijinja::Value::UNDEFINED, &error)
        }
        Err(Refusal::TooMany) => page(&app, lang, StatusCode::TOO_MANY_REQUESTS, &step("too_many", "", "")),
        Err(Refusal::Forbidden | Refusal::Internal(_)) => {
            manage_page(&app, lang, StatusCode::INTERNAL_SERVER_ERROR, "request", minijinja::Value::UNDEFINED, "")
        }
    }
}

async fn manage_list(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(token): Path<String>,
) -> Response {
    if token.len() > 600 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return manage_page(&app, lang, StatusCode::NOT_FOUND, "unknown", minijinja::Value::UNDEFINED, "");
    }
    match notify::subscriptions_of_link(&app, &token).await {
        Ok(Some(listed)) => manage_page(&app, lang, StatusCode::OK, "list", render::v(&listed), ""),
        Ok(None) => manage_page(&app, lang, StatusCode::NOT_FOUND, "unknown", minijinja::Value::UNDEFINED, ""),
        Err(e) => internal(&app, lang, e),
    }
}

fn internal(app: &Shared, lang: &str, e: anyhow::Error) -> Response {
    tracing::error!(error = %format!("{e:#}"), "a subscription page failed");
    page(app, lang, StatusCode::INTERNAL_SERVER_ERROR, &step("invalid", "", ""))
}

/// A request to be notified by e-mail. Without `municipality`, `service` and `area`: about
/// everything in the area.
#[derive(Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// Required: an empty address is refused (422).
    #[schema(value_type = formats::ContactEmail)]
    pub email: String,
    /// A town's slug: only that town.
    #[schema(value_type = Option<formats::Slug>)]
    pub municipality: Option<String>,
    /// A service's slug: only that service.
    #[schema(value_type = Option<formats::Slug>)]
    pub service: Option<String>,
    /// A service area: only its services.
    #[schema(value_type = Option<formats::ServiceAreaOrEmpty>)]
    pub area: Option<String>,
    /// The language of the mails; German when not given.
    #[schema(value_type = Option<formats::LanguageCode>)]
    pub lang: Option<String>,
}

/// The one answer to every accepted request, whether or not the address was known.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionPending {
    #[schema(example = "pending")]
    status: &'static str,
}

/// Ask to be notified by e-mail
///
/// Sends a confirmation mail; nothing else is sent before the link in it is confirmed, and an
/// unconfirmed request is deleted after 72 hours. The answer is the same whether or not the
/// address is known or already subscribed.
#[utoipa::path(
    post,
    path = "/subscriptions",
    tag = "subscriptions",
    request_body = SubscriptionRequest,
    responses(
        (status = 202, description = "A confirmation mail is on its way (if the address can receive one)", body = SubscriptionPending),
        (status = 400, description = "Not JSON", body = crate::http::api::error::ApiError),
        (status = 413, description = "Body too large", body = crate::http::api::error::ApiError),
        (status = 415, description = "Not application/json", body = crate::http::api::error::ApiError),
        (status = 422, description = "A field is missing, unknown or not acceptable (`field` names it)", body = crate::http::api::error::ApiError),
        (status = 429, description = "Too many requests from this client; try again later", body = crate::http::api::error::ApiError),
    )
)]
pub(crate) async fn subscribe_api(
    State(app): State<Shared>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let bytes = body_bytes(&headers, body)?;
        let request: SubscriptionRequest = parse(&bytes)?;
        let input = SubscribeInput {
            email: request.email,
            municipality: request.municipality,
            service: request.service,
            area: request.area,
            lang: request.lang,
        };
        notify::subscribe(&app, &input, client).await.map_err(refused)
    };
    match result.await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(SubscriptionPending { status: "pending" }),
        )
            .into_response(),
        Err(fail) => fail.response(&headers),
    }
}

/// A refusal of `notify` as the API's error answer.
pub(crate) fn refused(r: Refusal) -> Fail {
    match r {
        Refusal::Invalid(field, key) => Fail::invalid(field, key),
        Refusal::TooMany => Fail::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "subscribe.too_many_text"),
        Refusal::Forbidden => Fail::forbidden(),
        Refusal::Internal(e) => Fail::internal(format!("{e:#}")),
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(subscribe_api),
    components(schemas(SubscriptionRequest, SubscriptionPending)),
    tags((name = "subscriptions", description = "E-mail notifications with double opt-in"))
)]
struct SubscriptionsDoc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    SubscriptionsDoc::openapi()
}
