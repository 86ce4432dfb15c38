//! The write JSON API under /api/v1: the editing desk's operations for programs, with bearer API
//! tokens. Handlers here only translate HTTP into calls of `writes` (which validates, asks `authz`
//! and writes the change with its journal entry in one transaction) and the result back into
//! HTTP; nothing is decided here that the desk would decide differently.
//!
//! The same rules on every route, in this order:
//! - `Authorization: Bearer nb_…`, else 401 with `WWW-Authenticate: Bearer`;
//! - a body is JSON (`Content-Type: application/json`, else 415) of at most `BODY_LIMIT` (else
//!   413), well-formed (else 400), an object with known fields only and values of the right type
//!   (else 422 naming the first unknown or wrong field), with acceptable values (else 422 naming
//!   the field, from `writes`);
//! - PUT and DELETE may name the version they started from (`If-Match: "3"` or `"version": 3`);
//!   when someone saved in between, 409 with the current state;
//! - POST may carry an `Idempotency-Key`: see `idempotent`.

use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, OpenApi, ToSchema};

use crate::auth::{self, ApiToken};
use crate::domain::authz::{Action, authorize};
use crate::domain::authz::{Principal, Role};
use crate::domain::time;
use crate::domain::*;
use crate::http::api::error::{ApiError, Fail};
use crate::read::live::{App, Shared};
use crate::read::snapshot::Snapshot;
use crate::store::journal::{self, Entry};
use crate::store::{accounts, idempotency};
use crate::write::formats::{Id, IdempotencyKeyValue, IfMatch, ServiceArea, Slug, TimeBound};
use crate::write::{
    self, AnnouncementInput, ContactInput, FaqInput, OfficeInput, ReferralInput, StatementInput, TokenInput, UserInput,
};

/// Largest request body on these routes. A maximal announcement (20,000 characters, which may be
/// 80,000 bytes of UTF-8 and more once JSON-escaped) fits with room to spare; everything else
/// the site accepts (forms) keeps the global 64 KiB of `http::router`.
pub const BODY_LIMIT: usize = 256 * 1024;

/// How long an idempotency key is remembered.
const IDEMPOTENCY_HOURS: i64 = 24;
/// A key claimed this long ago whose request never finished (the server stopped) may be taken over.
const ABANDONED_CLAIM_SECONDS: i64 = 60;

/// Journal entries per request: default and most.
const JOURNAL_LIMIT: i64 = 1_000;
const JOURNAL_LIMIT_MAX: i64 = 100_000;

pub fn router() -> Router<Shared> {
    Router::new()
        .route(
            "/municipalities/{slug}/services/{service}/statement",
            put(put_statement::<TOWN>).delete(delete_statement::<TOWN>),
        )
        .route(
            "/districts/{slug}/services/{service}/statement",
            put(put_statement::<DISTRICT>).delete(delete_statement::<DISTRICT>),
        )
        .route("/statements", post(post_statements))
        .route("/announcements", post(post_announcement))
        .route("/announcements/{id}", put(put_announcement).delete(delete_announcement))
        .route("/faq", post(post_faq))
        .route("/faq/{id}", put(put_faq))
        .route("/referrals", post(post_referral))
        .route("/referrals/{id}", put(put_referral).delete(delete_referral))
        .route("/municipalities/{slug}/contact", put(put_contact::<TOWN>))
        .route("/offices/{slug}", put(put_office))
        .route("/districts/{slug}/contact", put(put_contact::<DISTRICT>))
        .route("/tokens", get(list_tokens).post(post_token))
        .route("/tokens/{id}", delete(delete_token))
        .route("/users", get(list_users).post(post_user))
        .route("/journal", get(journal))
        .route("/journal/verify", get(journal_verify))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Which administration a `{slug}` in the path names: routes under `/municipalities/…` and their
/// twins under `/districts/…` share one handler.
const TOWN: bool = false;
const DISTRICT: bool = true;

/// The refusals every route may answer, for the OpenAPI document.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Refusals {
    /// No token, or one that is unknown, revoked or expired (`unauthorized`); comes with `WWW-Authenticate: Bearer`.
    #[response(status = 401)]
    Unauthorized(ApiError),
    /// The token's role and scope do not allow this (`forbidden`). Nothing was changed.
    #[response(status = 403)]
    Forbidden(ApiError),
}

/// The header every POST takes, for the OpenAPI document.
#[derive(IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct IdempotencyKey(
    /// 1–200 printable ASCII characters. A retry with the same key and the same body gets the
    /// first answer again (with `Idempotent-Replayed: true`) instead of acting twice; keys are
    /// remembered for 24 hours.
    #[param(value_type = Option<IdempotencyKeyValue>)]
    Option<String>,
);

/// A request with this Idempotency-Key is still running (`idempotency_key_in_use`); retry shortly.
#[derive(IntoResponses)]
#[response(status = 409)]
#[allow(dead_code)]
pub(crate) struct KeyInUse(ApiError);

/// The answers of every DELETE, for the OpenAPI document.
#[derive(IntoResponses)]
#[allow(dead_code)]
enum Removal {
    /// Withdrawn, removed or revoked; the answer has no body.
    #[response(status = 204)]
    Done,
    /// Nothing with this id (or slug), or it is gone already (`not_found`).
    #[response(status = 404)]
    NotFound(ApiError),
}

/// What a request body can be refused for, for the OpenAPI document.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum BodyErrors {
    /// The body is not well-formed JSON, or a slug or id in the path or a header (`If-Match`,
    /// `Idempotency-Key`) is malformed (`bad_request`).
    #[response(status = 400)]
    BadRequest(ApiError),
    /// The body is larger than 256 KiB (`payload_too_large`).
    #[response(status = 413)]
    TooLarge(ApiError),
    /// The body is not sent as `Content-Type: application/json` (`unsupported_media_type`).
    #[response(status = 415)]
    NotJson(ApiError),
    /// A field is unknown (unknown fields are rejected, not ignored), has a value of the wrong type,
    /// is missing or not acceptable (`invalid`, `field` names it); or an `Idempotency-Key` was
    /// used before for a different request (`idempotency_key_reused`).
    #[response(status = 422)]
    Invalid(ApiError),
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// The principal behind the request's bearer token.
pub struct Caller(pub(crate) Principal);

impl FromRequestParts<Shared> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Caller, Response> {
        caller(&parts.headers, app).await.map(Caller).map_err(|f| f.response(&parts.headers))
    }
}

async fn caller(headers: &HeaderMap, app: &App) -> Result<Principal, Fail> {
    let unauthorized = |key| Fail::new(StatusCode::UNAUTHORIZED, "unauthorized", key);
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Err(unauthorized("api.token_missing")) };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim())
        .ok_or_else(|| unauthorized("api.token_invalid"))?;
    let mut c = app.store.read().await?;
    accounts::principal_for_token(&mut c, secret).await?.ok_or_else(|| unauthorized("api.token_invalid"))
}

// ---------------------------------------------------------------------------------------------
// Reading requests

pub(crate) type Body = Result<Bytes, BytesRejection>;

/// What a JSON body can be read into: `Default` and `Serialize` tell which fields exist.
pub(crate) trait Input: DeserializeOwned + Serialize + Default {}
impl<T: DeserializeOwned + Serialize + Default> Input for T {}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The body's bytes, if it is JSON and not too large.
pub(crate) fn body_bytes(headers: &HeaderMap, body: Body) -> Result<Bytes, Fail> {
    if !is_json(headers) {
        return Err(Fail::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "api.json_required"));
    }
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Fail::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "api.body_too_large")
        } else {
            Fail::bad_request("api.malformed_json")
        }
    })
}

/// Reads a JSON object into `T`. Unknown fields are rejected (not ignored), so a misspelt field
/// never silently does nothing; the answer names the first unknown or ill-typed field.
pub(crate) fn parse<T: Input>(bytes: &[u8]) -> Result<T, Fail> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| Fail::bad_request("api.malformed_json"))?;
    let Value::Object(given) = &value else { return Err(Fail::invalid("body", "api.object_expected")) };
    let Value::Object(known) = serde_json::to_value(T::default()).map_err(Fail::internal)? else {
        return Err(Fail::internal("an input type is not an object"));
    };
    if let Some(unknown) = given.keys().find(|k| !known.contains_key(*k)) {
        return Err(Fail::invalid(unknown, "api.unknown_field"));
    }
    serde_json::from_value(value.clone()).map_err(|_| {
        let (field, key) = culprit::<T>(&known, given);
        Fail::invalid(&field, key)
    })
}

/// Which field makes `given` unreadable as `T`: a given field that fails even among defaults has
/// the wrong type; otherwise a field without default is missing.
fn culprit<T: Input>(defaults: &Map<String, Value>, given: &Map<String, Value>) -> (String, &'static str) {
    let fails = |fields: Map<String, Value>| serde_json::from_value::<T>(Value::Object(fields)).is_err();
    for (name, value) in given {
        let mut one = defaults.clone();
        one.insert(name.clone(), value.clone());
        if fails(one) {
            return (name.clone(), "api.wrong_type");
        }
    }
    for name in defaults.keys().filter(|k| !given.contains_key(*k)) {
        let mut without = defaults.clone();
        without.remove(name);
        if fails(without) {
            return (name.clone(), "write.required");
        }
    }
    ("body".into(), "api.object_expected")
}

/// A body that may name the version the change starts from.
#[derive(Default, Deserialize, Serialize, ToSchema)]
pub struct Versioned<T> {
    #[serde(flatten)]
    input: T,
    /// The version this change starts from, as the last answer gave it (the same as `If-Match`);
    /// omit it to save regardless of changes by others.
    #[serde(default)]
    #[schema(minimum = 0)]
    version: Option<i64>,
}

/// `If-Match: "3"` (quotes and `W/` optional; `*` means any version).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Fail> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| Fail::bad_request("api.invalid_if_match"))?.trim();
    if text == "*" {
        return Ok(None);
    }
    // Exactly `formats::IF_MATCH_PATTERN`: an optional `W/`, then digits with or without quotes.
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let digits = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(tag);
    if !(1..=18).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (tag != text && tag == digits)
    {
        return Err(Fail::bad_request("api.invalid_if_match"));
    }
    digits.parse::<i64>().map(Some).map_err(|_| Fail::bad_request("api.invalid_if_match"))
}

/// The version a PUT or DELETE starts from: from `If-Match` or the body, which must agree.
fn expected_version(headers: &HeaderMap, in_body: Option<i64>) -> Result<Option<i64>, Fail> {
    match (if_match(headers)?, in_body) {
        (Some(a), Some(b)) if a != b => Err(Fail::invalid("version", "api.version_mismatch")),
        (header, body) => Ok(header.or(body)),
    }
}

pub(crate) fn check_slug(slug: &str) -> Result<&str, Fail> {
    parse_slug(slug).map_err(|_| Fail::bad_request("api.invalid_slug"))
}

/// Ids of announcements, FAQ entries and referrals are slugs, but imported ones may be freer.
pub(crate) fn check_id(path: Result<Path<String>, PathRejection>) -> Result<String, Fail> {
    let Ok(Path(id)) = path else { return Err(Fail::bad_request("api.invalid_id")) };
    if id.is_empty() || id.chars().count() > 200 || id.chars().any(char::is_control) {
        return Err(Fail::bad_request("api.invalid_id"));
    }
    Ok(id)
}

/// The AGS of the town (or, for `DISTRICT` routes, the district) a slug names.
fn place_ags<const D: bool>(snap: &Snapshot, slug: &str) -> Result<String, Fail> {
    let slug = check_slug(slug)?;
    if D {
        snap.district_by_slug(slug).map(|d| d.ags.clone()).ok_or_else(|| Fail::not_found("api.no_such_district"))
    } else {
        snap.municipality(slug).map(|m| m.ags.clone()).ok_or_else(|| Fail::not_found("api.no_such_municipality"))
    }
}

/// The AGS and service slug a statement path names.
fn statement_path<const D: bool>(
    snap: &Snapshot,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), Fail> {
    let Ok(Path((slug, service))) = path else { return Err(Fail::bad_request("api.invalid_slug")) };
    let ags = place_ags::<D>(snap, &slug)?;
    let service = snap.service(check_slug(&service)?).ok_or_else(|| Fail::not_found("api.no_such_service"))?;
    Ok((ags, service.slug.clone()))
}

// ---------------------------------------------------------------------------------------------
// Answering

/// A successful answer: its status and JSON body (none for 204).
pub(crate) struct Reply {
    status: StatusCode,
    body: Option<Value>,
    /// Replayed from an earlier request with the same Idempotency-Key.
    replayed: bool,
}

pub(crate) fn reply<T: Serialize>(status: StatusCode, value: &T) -> Result<Reply, Fail> {
    Ok(Reply { status, body: Some(serde_json::to_value(value).map_err(Fail::internal)?), replayed: false })
}

fn no_content() -> Result<Reply, Fail> {
    Ok(Reply { status: StatusCode::NO_CONTENT, body: None, replayed: false })
}

/// Sends a result. Answers with a `version` carry it as ETag, ready for the next `If-Match`.
pub(crate) fn respond(headers: &HeaderMap, result: Result<Reply, Fail>) -> Response {
    let r = match result {
        Ok(r) => r,
        Err(f) => return f.response(headers),
    };
    let mut res = match &r.body {
        Some(body) => (r.status, [(header::CONTENT_TYPE, crate::http::JSON)], body.to_string()).into_response(),
        None => r.status.into_response(),
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(version) = r.body.as_ref().and_then(|b| b.get("version")).and_then(Value::as_i64) {
        h.insert(header::ETAG, HeaderValue::from_str(&format!("\"{version}\"")).expect("digits"));
    }
    if r.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}

/// A stored object with its version.
#[derive(Serialize, ToSchema)]
pub struct Stored<T> {
    #[serde(flatten)]
    item: T,
    /// Name it in `If-Match` (or `version`) when changing this object again.
    version: i64,
}

// ---------------------------------------------------------------------------------------------
// The shapes of write requests

/// A POST: reads the body as `T`, acts once per Idempotency-Key, and answers `answer(result)`.
/// `act` makes one `writes` call and returns its result; `answer` turns that result into the
/// reply, also inside the write's transaction, where it is stored with the key for replays.
pub(crate) async fn post_json<T: Input + Send + Sync + 'static, O: Send + 'static, Fut>(
    app: &App,
    who: &Principal,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
    act: impl FnOnce(T) -> Fut,
    answer: impl Fn(&T, &O) -> Result<Reply, Fail> + Clone + Send + 'static,
) -> Response
where
    Fut: Future<Output = Result<O, Fail>>,
{
    let result = async {
        let key = idempotency_key(headers)?;
        let bytes = body_bytes(headers, body)?;
        let input = parse::<T>(&bytes)?;
        // The request once more, for the answer (`act` takes the first).
        let request = std::sync::Arc::new(parse::<T>(&bytes)?);
        let answer = move |out: &O| answer(&request, out);
        match key {
            None => answer(&act(input).await?),
            Some(key) => idempotent(app, who, key, &request_hash(uri, &bytes), act(input), answer).await,
        }
    };
    respond(headers, result.await)
}

/// A PUT: reads the body as `T` with an optional version, which `If-Match` may give instead.
pub(crate) async fn put_json<T: Input, Fut>(
    headers: &HeaderMap,
    body: Body,
    act: impl FnOnce(T, Option<i64>) -> Fut,
) -> Result<Reply, Fail>
where
    Fut: Future<Output = Result<Reply, Fail>>,
{
    let bytes = body_bytes(headers, body)?;
    let Versioned { input, version } = parse::<Versioned<T>>(&bytes)?;
    act(input, expected_version(headers, version)?).await
}

// ---------------------------------------------------------------------------------------------
// Idempotency

/// `Idempotency-Key`: 1–200 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Fail> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map_err(|_| Fail::bad_request("api.invalid_idempotency_key"))?;
    if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Fail::bad_request("api.invalid_idempotency_key"));
    }
    Ok(Some(key))
}

/// SHA-256 of method, path and body: what "the same request" means.
fn request_hash(uri: &Uri, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(format!("POST {}\n", uri.path()).as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

enum Claim {
    /// First use: act, then record.
    New,
    /// Done before: send this again.
    Done(Reply),
    Reused,
    InUse,
}

/// Runs `act` once per (principal, key); a retry of the same request gets the first answer
/// again (without SECRET_FIELDS), with `Idempotent-Replayed: true`.
///
/// The key is claimed in its own short transaction before acting (so a concurrent retry is
/// answered 409 `idempotency_key_in_use` instead of acting too); then the write runs inside
/// `write::with_idempotency`, and its own transaction stores the answer with the key. A commit
/// and its record are one: after any crash or failure a retry finds the answer and does not act
/// again. A claim whose request never finished (no commit) may be taken over after
/// ABANDONED_CLAIM_SECONDS; if the first request still commits, it does so only while the key
/// is unsettled, so at most one of them acts. After the commit the answer is stored once more
/// as it was sent (for the recovery routes this adds what the rebuilt snapshot shows). Only
/// successes are kept; a refused request changed nothing, so its key is released and a
/// corrected retry may act. Keys are forgotten after IDEMPOTENCY_HOURS.
async fn idempotent<O: Send + 'static>(
    app: &App,
    who: &Principal,
    key: &str,
    hash: &str,
    act: impl Future<Output = Result<O, Fail>>,
    answer: impl Fn(&O) -> Result<Reply, Fail> + Clone + Send + 'static,
) -> Result<Reply, Fail> {
    let principal = format!("{}:{}", who.user_id, who.name);
    match claim(app, &principal, key, hash).await? {
        Claim::Done(reply) => Ok(reply),
        Claim::Reused => {
            Err(Fail::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", "api.idempotency_key_reused"))
        }
        Claim::InUse => Err(Fail::new(StatusCode::CONFLICT, "idempotency_key_in_use", "api.idempotency_key_in_use")),
        Claim::New => {
            let in_transaction = answer.clone();
            let record = write::Idempotency {
                principal: principal.clone(),
                key: key.to_string(),
                request_hash: hash.to_string(),
                answer: Box::new(move |out: &dyn std::any::Any| {
                    let out = out
                        .downcast_ref::<O>()
                        .ok_or_else(|| anyhow::anyhow!("the write's result is not what the route answers"))?;
                    let reply = in_transaction(out).map_err(|f| anyhow::anyhow!("answering failed: {f:?}"))?;
                    Ok(stored_answer(&reply))
                }),
            };
            let result = match write::with_idempotency(record, act).await {
                Ok(out) => answer(&out),
                Err(f) => Err(f),
            };
            if let Err(e) = settle(app, &principal, key, &result).await {
                tracing::error!(error = %e, "recording an idempotency key failed");
            }
            result
        }
    }
}

async fn claim(app: &App, principal: &str, key: &str, hash: &str) -> anyhow::Result<Claim> {
    let now = chrono::Utc::now();
    let mut tx = app.store.begin().await?;
    idempotency::forget_before(&mut tx, &time::format_rfc3339(now - chrono::Duration::hours(IDEMPOTENCY_HOURS)))
        .await?;
    let outcome = if idempotency::claim(&mut tx, principal, key, hash, &time::format_rfc3339(now)).await? {
        Claim::New
    } else {
        let stored = idempotency::stored(&mut tx, principal, key).await?;
        let abandoned =
            stored.created_at < time::format_rfc3339(now - chrono::Duration::seconds(ABANDONED_CLAIM_SECONDS));
        if stored.request_hash != hash {
            Claim::Reused
        } else if stored.status == 0 && abandoned {
            idempotency::renew_claim(&mut tx, principal, key, &time::format_rfc3339(now)).await?;
            Claim::New
        } else if stored.status == 0 {
            Claim::InUse
        } else {
            let body = if stored.response.is_empty() { None } else { Some(serde_json::from_str(&stored.response)?) };
            Claim::Done(Reply { status: StatusCode::from_u16(stored.status as u16)?, body, replayed: true })
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Fields of answers that are never stored in clear (a token's secret, a setup link): a replay
/// comes without them.
const SECRET_FIELDS: [&str; 3] = ["secret", "setup_path", "setup_url"];

/// What is stored for a replay: the status and the body without SECRET_FIELDS.
fn stored_answer(r: &Reply) -> (u16, String) {
    let mut body = r.body.clone();
    if let Some(Value::Object(fields)) = &mut body {
        fields.retain(|name, _| !SECRET_FIELDS.contains(&name.as_str()));
    }
    (r.status.as_u16(), body.as_ref().map(Value::to_string).unwrap_or_default())
}

/// After the write: stores the answer as sent; releases a key whose request changed nothing
/// (never one the write's transaction settled).
async fn settle(app: &App, principal: &str, key: &str, result: &Result<Reply, Fail>) -> anyhow::Result<()> {
    let mut tx = app.store.begin().await?;
    match result {
        Ok(r) => {
            let (status, response) = stored_answer(r);
            idempotency::store_answer(&mut tx, principal, key, status, &response).await?;
        }
        Err(_) => idempotency::release_unsettled(&mut tx, principal, key).await?,
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statements

#[utoipa::path(
    put,
    path = "/municipalities/{slug}/services/{service}/statement",
    tag = "editing",
    summary = "State a service's availability in a town",
    description = "Sets (creates or replaces) the town's statement about the service; it is on the public pages and in the read API as soon as the answer arrives. \
        The same route exists for districts, `/districts/{slug}/services/{service}/statement`, for services the district is responsible for. \
        Give the version you started from (`If-Match: \"3\"` or `\"version\": 3`; `0` means \"there was no statement\") to be refused with 409 if someone saved in between. \
        Unknown fields are rejected with 422.",
    params(
        ("slug" = Slug, Path, description = "The town's (on /districts/…: the district's) slug.", example = "menden-sauerland"),
        ("service" = Slug, Path, description = "The service's slug.", example = "fahrzeug-zulassen"),
        ("If-Match" = Option<IfMatch>, Header, description = "The version the change starts from, e.g. `\"3\"`."),
    ),
    request_body = Versioned<StatementInput>,
    responses(
        (status = 200, description = "The stored statement with its new version (also as ETag).", body = Statement),
        (status = 404, description = "No such town, district or service.", body = ApiError),
        (status = 409, description = "Someone saved since the given version (`conflict`); `current` is the stored statement.", body = ApiError),
        Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn put_statement<const D: bool>(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    let result = async {
        let (ags, service) = statement_path::<D>(&app.snapshot(), path)?;
        put_json(&headers, body, |input: StatementInput, version| async move {
            let saved = write::set_statements(app, who, &[ags], &[service], &input, version).await?;
            reply(StatusCode::OK, &saved.first().ok_or_else(|| Fail::internal("no statement saved"))?)
        })
        .await
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    delete,
    path = "/municipalities/{slug}/services/{service}/statement",
    tag = "editing",
    summary = "Withdraw a town's statement about a service",
    description = "The town's availability falls back to the district's statement or to \"no report\". The same route exists under `/districts/{slug}/…`. \
        With `If-Match`, refused with 409 if the statement changed since.",
    params(
        ("slug" = Slug, Path, description = "The town's (on /districts/…: the district's) slug.", example = "menden-sauerland"),
        ("service" = Slug, Path, description = "The service's slug.", example = "fahrzeug-zulassen"),
        ("If-Match" = Option<IfMatch>, Header, description = "The version being withdrawn, e.g. `\"3\"`."),
    ),
    responses(
        (status = 400, description = "A slug or `If-Match` is malformed.", body = ApiError),
        (status = 409, description = "The statement changed since the given version (`conflict`), with `current`.", body = ApiError),
        Removal, Refusals,
    ),
    security(("bearer" = []))
)]
async fn delete_statement<const D: bool>(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (ags, service) = statement_path::<D>(&app.snapshot(), path)?;
        write::withdraw_statement(&app, &who, &ags, &service, if_match(&headers)?).await?;
        no_content()
    };
    respond(&headers, result.await)
}

/// Body of POST /statements: where, for which services, and the statement for all of them.
#[derive(Default, Deserialize, Serialize, ToSchema)]
pub struct BulkStatements {
    /// Slugs of the towns.
    #[serde(default)]
    #[schema(value_type = Vec<Slug>, example = json!(["menden-sauerland"]))]
    municipalities: Vec<String>,
    /// Slugs of the districts (only for services districts are responsible for).
    #[serde(default)]
    #[schema(value_type = Vec<Slug>)]
    districts: Vec<String>,
    /// Slugs of the services.
    #[serde(default)]
    #[schema(value_type = Vec<Slug>)]
    services: Vec<String>,
    /// Service areas (`registration`, `civil_registry`, `social`, `vehicle`, `finance`, `trade`):
    /// every service of these areas, in addition to `services`.
    #[serde(default)]
    #[schema(value_type = Vec<ServiceArea>, example = json!(["vehicle"]))]
    areas: Vec<String>,
    #[serde(flatten)]
    statement: StatementInput,
}

#[derive(Serialize, ToSchema)]
pub struct StatementList {
    /// One per town or district and service, each with its new version.
    statements: Vec<Statement>,
}

#[utoipa::path(
    post,
    path = "/statements",
    tag = "editing",
    summary = "State the same availability for many services and places at once",
    description = "For example every vehicle service in Menden: `{\"municipalities\": [\"menden-sauerland\"], \"areas\": [\"vehicle\"], \"level\": \"unavailable\", \"workaround\": \"Kreishaus Iserlohn\"}`. \
        All or nothing: if one pair is not allowed, nothing is stored. Unknown fields are rejected with 422. Takes an `Idempotency-Key`.",
    params(IdempotencyKey),
    request_body = BulkStatements,
    responses(
        (status = 200, description = "The stored statements.", body = StatementList),
        (status = 404, description = "A service or town vanished while saving.", body = ApiError),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_statements(
    State(app): State<Shared>,
    Caller(who): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    post_json(
        app,
        who,
        &headers,
        &uri,
        body,
        |bulk: BulkStatements| async move {
            let snap = app.snapshot();
            let (targets, services) = selection(&snap, &bulk)?;
            Ok(write::set_statements(app, who, &targets, &services, &bulk.statement, None).await?)
        },
        |_, statements: &Vec<Statement>| reply(StatusCode::OK, &StatementList { statements: statements.clone() }),
    )
    .await
}

/// The AGS and service slugs a bulk request names.
fn selection(snap: &Snapshot, bulk: &BulkStatements) -> Result<(Vec<String>, Vec<String>), Fail> {
    let mut targets = Vec::new();
    for slug in &bulk.municipalities {
        targets.push(
            snap.municipality(slug).ok_or_else(|| Fail::invalid("municipalities", "write.unknown_town"))?.ags.clone(),
        );
    }
    for slug in &bulk.districts {
        targets.push(
            snap.district_by_slug(slug).ok_or_else(|| Fail::invalid("districts", "write.unknown_town"))?.ags.clone(),
        );
    }
    if targets.is_empty() {
        return Err(Fail::invalid("municipalities", "write.nothing_selected"));
    }
    let mut services = Vec::new();
    for slug in &bulk.services {
        services
            .push(snap.service(slug).ok_or_else(|| Fail::invalid("services", "write.unknown_service"))?.slug.clone());
    }
    for area in &bulk.areas {
        if !is_service_area(area) {
            return Err(Fail::invalid("areas", "api.unknown_area"));
        }
        services.extend(snap.data.services.iter().filter(|s| &s.area == area).map(|s| s.slug.clone()));
    }
    Ok((unique(targets), unique(services)))
}

/// The list without repetitions, in first-seen order.
fn unique(mut list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    list.retain(|s| seen.insert(s.clone()));
    list
}

// ---------------------------------------------------------------------------------------------
// Announcements and FAQ

#[utoipa::path(
    post,
    path = "/announcements",
    tag = "editing",
    summary = "Publish an announcement (or save a draft, or schedule it)",
    description = "The body is Markdown, rendered through a sanitiser on the public pages. `publish` is `now` (default), `draft`, or an RFC 3339 time for scheduled publication. \
        Editors may announce for their towns and districts only; area-wide and service announcements are the provider's. Unknown fields are rejected with 422. Takes an `Idempotency-Key`.",
    params(IdempotencyKey),
    request_body = AnnouncementInput,
    responses(
        (status = 201, description = "The stored announcement, version 1.", body = Stored<Announcement>),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_announcement(
    State(app): State<Shared>,
    Caller(who): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    post_json(
        app,
        who,
        &headers,
        &uri,
        body,
        |input: AnnouncementInput| async move { Ok(write::create_announcement(app, who, &input).await?) },
        |_, item: &Announcement| reply(StatusCode::CREATED, &Stored { item: item.clone(), version: 1 }),
    )
    .await
}

#[utoipa::path(
    put,
    path = "/announcements/{id}",
    tag = "editing",
    summary = "Change an announcement",
    description = "Once published, a change is a correction: the public sees \"updated on …\" next to the original time. \
        With a version (`If-Match` or `version`), refused with 409 if someone saved in between. Unknown fields are rejected with 422.",
    params(
        ("id" = Id, Path, description = "The announcement's id."),
        ("If-Match" = Option<IfMatch>, Header, description = "The version the change starts from, e.g. `\"1\"`."),
    ),
    request_body = Versioned<AnnouncementInput>,
    responses(
        (status = 200, description = "The stored announcement with its new version.", body = Stored<Announcement>),
        (status = 404, description = "No announcement with this id.", body = ApiError),
        (status = 409, description = "Someone saved since the given version (`conflict`), with `current`.", body = ApiError),
        Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn put_announcement(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    let result = async {
        let id = check_id(path)?;
        put_json(&headers, body, |input: AnnouncementInput, expected| async move {
            let (item, version) = write::update_announcement(app, who, &id, &input, expected).await?;
            reply(StatusCode::OK, &Stored { item, version })
        })
        .await
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    delete,
    path = "/announcements/{id}",
    tag = "editing",
    summary = "Withdraw an announcement",
    description = "Takes it off the public pages; the journal keeps it.",
    params(("id" = Id, Path, description = "The announcement's id.")),
    responses((status = 400, description = "The id is malformed (`bad_request`).", body = ApiError), Removal, Refusals),
    security(("bearer" = []))
)]
async fn delete_announcement(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        write::withdraw_announcement(&app, &who, &check_id(path)?).await?;
        no_content()
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    post,
    path = "/faq",
    tag = "editing",
    summary = "Add a question and answer",
    description = "Scoped like announcements. `publish` is `now` (default) or `draft`. Unknown fields are rejected with 422. Takes an `Idempotency-Key`.",
    params(IdempotencyKey),
    request_body = FaqInput,
    responses(
        (status = 201, description = "The stored entry, version 1.", body = Stored<FaqEntry>),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_faq(
    State(app): State<Shared>,
    Caller(who): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    post_json(
        app,
        who,
        &headers,
        &uri,
        body,
        |input: FaqInput| async move { Ok(write::save_faq(app, who, None, &input, None).await?) },
        |_, (item, version): &(FaqEntry, i64)| {
            reply(StatusCode::CREATED, &Stored { item: item.clone(), version: *version })
        },
    )
    .await
}

#[utoipa::path(
    put,
    path = "/faq/{id}",
    tag = "editing",
    summary = "Change a question and answer",
    description = "With a version (`If-Match` or `version`), refused with 409 if someone saved in between. Unknown fields are rejected with 422.",
    params(
        ("id" = Id, Path, description = "The entry's id."),
        ("If-Match" = Option<IfMatch>, Header, description = "The version the change starts from, e.g. `\"1\"`."),
    ),
    request_body = Versioned<FaqInput>,
    responses(
        (status = 200, description = "The stored entry with its new version.", body = Stored<FaqEntry>),
        (status = 404, description = "No entry with this id.", body = ApiError),
        (status = 409, description = "Someone saved since the given version (`conflict`), with `current`.", body = ApiError),
        Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn put_faq(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    let result = async {
        let id = check_id(path)?;
        put_json(&headers, body, |input: FaqInput, expected| async move {
            let (item, version) = write::save_faq(app, who, Some(&id), &input, expected).await?;
            reply(StatusCode::OK, &Stored { item, version })
        })
        .await
    };
    respond(&headers, result.await)
}

// ---------------------------------------------------------------------------------------------
// Referrals and contact channels

#[utoipa::path(
    post,
    path = "/referrals",
    tag = "editing",
    summary = "Name another office that accepts a service from a town's (or district's) residents",
    description = "The id is `{office_slug}-{service_slug}-{for_ags}`; posting the same triple again replaces it. Unknown fields are rejected with 422. Takes an `Idempotency-Key`.",
    params(IdempotencyKey),
    request_body = ReferralInput,
    responses(
        (status = 201, description = "The stored referral.", body = Referral),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_referral(
    State(app): State<Shared>,
    Caller(who): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    post_json(
        app,
        who,
        &headers,
        &uri,
        body,
        |input: ReferralInput| async move { Ok(write::save_referral(app, who, None, &input).await?) },
        |_, saved: &Referral| reply(StatusCode::CREATED, saved),
    )
    .await
}

#[utoipa::path(
    put,
    path = "/referrals/{id}",
    tag = "editing",
    summary = "Replace a referral",
    description = "The last save wins (referrals have no version). Both the old and the new residents' town must be in the token's scope. Unknown fields are rejected with 422.",
    params(("id" = Id, Path, description = "The referral's id.")),
    request_body = ReferralInput,
    responses(
        (status = 200, description = "The stored referral.", body = Referral),
        (status = 404, description = "No referral with this id.", body = ApiError),
        Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn put_referral(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let id = check_id(path)?;
        let input = parse::<ReferralInput>(&body_bytes(&headers, body)?)?;
        reply(StatusCode::OK, &write::save_referral(&app, &who, Some(&id), &input).await?)
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    delete,
    path = "/referrals/{id}",
    tag = "editing",
    summary = "Remove a referral",
    params(("id" = Id, Path, description = "The referral's id.")),
    responses((status = 400, description = "The id is malformed (`bad_request`).", body = ApiError), Removal, Refusals),
    security(("bearer" = []))
)]
async fn delete_referral(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        write::delete_referral(&app, &who, &check_id(path)?).await?;
        no_content()
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    put,
    path = "/municipalities/{slug}/contact",
    tag = "editing",
    summary = "Set a town's contact channels",
    description = "Replaces phone, e-mail, website, emergency website and social media (one per line) of the town; the same route exists for districts, `/districts/{slug}/contact`. \
        Web addresses must start with https:// or http://. With a version (`If-Match` or `version`), refused with 409 if someone saved in between. Unknown fields are rejected with 422.",
    params(
        ("slug" = Slug, Path, description = "The town's (on /districts/…: the district's) slug.", example = "menden-sauerland"),
        ("If-Match" = Option<IfMatch>, Header, description = "The version the change starts from, e.g. `\"1\"`."),
    ),
    request_body = Versioned<ContactInput>,
    responses(
        (status = 200, description = "The stored contact channels with their new version.", body = Stored<Contact>),
        (status = 404, description = "No such town or district.", body = ApiError),
        (status = 409, description = "Someone saved since the given version (`conflict`), with `current`.", body = ApiError),
        Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn put_contact<const D: bool>(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    let result = async {
        let Ok(Path(slug)) = path else { return Err(Fail::bad_request("api.invalid_slug")) };
        let ags = place_ags::<D>(&app.snapshot(), &slug)?;
        put_json(&headers, body, |input: ContactInput, expected| async move {
            let (item, version) = write::set_contact(app, who, &ags, &input, expected).await?;
            reply(StatusCode::OK, &Stored { item, version })
        })
        .await
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    put,
    path = "/offices/{slug}",
    tag = "editing",
    summary = "Create or replace an office a town or district runs",
    description = "Name, address, opening hours, phone, e-mail and web page (or appointment booking) of an office; the service-in-town pages name it for the services its owner is responsible for, and referrals point to it. \
        The token must speak for the owner (and for the previous owner when the office changes hands). Without `lat`/`lon` an office keeps its place, a new one takes its owner's. Unknown fields are rejected with 422.",
    params(("slug" = Slug, Path, description = "The office's slug.", example = "buergerbuero-menden-sauerland")),
    request_body = OfficeInput,
    responses(
        (status = 200, description = "The stored office.", body = OfficeOut),
        Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn put_office(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let Ok(Path(slug)) = path else { return Err(Fail::bad_request("api.invalid_slug")) };
        let slug = check_slug(&slug)?.to_string();
        let input = parse::<OfficeInput>(&body_bytes(&headers, body)?)?;
        reply(StatusCode::OK, &OfficeOut::from(write::save_office(&app, &who, &slug, &input).await?))
    };
    respond(&headers, result.await)
}

/// An office as stored.
#[derive(Serialize, ToSchema)]
pub struct OfficeOut {
    slug: String,
    name: String,
    owner_ags: String,
    street: String,
    postal_code: String,
    city: String,
    lat: f64,
    lon: f64,
    phone: String,
    email: String,
    website: String,
    opening_hours: String,
}

impl From<Office> for OfficeOut {
    fn from(o: Office) -> OfficeOut {
        OfficeOut {
            slug: o.slug,
            name: o.name,
            owner_ags: o.owner_ags,
            street: o.street,
            postal_code: o.postal_code,
            city: o.city,
            lat: o.lat,
            lon: o.lon,
            phone: o.phone,
            email: o.email,
            website: o.website,
            opening_hours: o.opening_hours,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens and accounts

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    tokens: Vec<ApiToken>,
}

/// A new token: the secret is shown this once and stored only as a hash.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    token: ApiToken,
    /// `Authorization: Bearer <secret>`. Absent when the answer is a replay of an earlier request
    /// with the same `Idempotency-Key` (`Idempotent-Replayed: true`): secrets are shown once.
    #[schema(example = "nb_…", required = false)]
    secret: String,
}

#[utoipa::path(
    get,
    path = "/tokens",
    tag = "accounts",
    summary = "API tokens: one's own, or every token for admins",
    description = "Never includes secrets.",
    responses((status = 200, description = "The tokens, oldest first, with revocation and expiry times (empty when none).", body = TokenList), Refusals),
    security(("bearer" = []))
)]
async fn list_tokens(State(app): State<Shared>, Caller(who): Caller, headers: HeaderMap) -> Response {
    let result = async {
        let whose = if authorize(&who, &Action::ManageUsers).is_ok() { None } else { Some(who.user_id) };
        let mut c = app.store.read().await?;
        reply(StatusCode::OK, &TokenList { tokens: accounts::tokens(&mut c, whose).await? })
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    post,
    path = "/tokens",
    tag = "accounts",
    summary = "Create an API token",
    description = "For oneself, with a role and scope within one's own (role and scope default to one's own); admins may create tokens for others (`user_id`). \
        A token never acts with more than its user has at the time of the request. Unknown fields are rejected with 422. Takes an `Idempotency-Key`; a replayed answer does not repeat the secret, which is never stored in clear.",
    params(IdempotencyKey),
    request_body = TokenInput,
    responses(
        (status = 201, description = "The token and its secret, shown only now.", body = CreatedToken),
        (status = 404, description = "No user with this `user_id`.", body = ApiError),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_token(
    State(app): State<Shared>,
    Caller(who): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    post_json(
        app,
        who,
        &headers,
        &uri,
        body,
        |input: TokenInput| async move { Ok(write::create_token(app, who, &input).await?) },
        |_, (token, secret): &(ApiToken, String)| {
            reply(StatusCode::CREATED, &CreatedToken { token: token.clone(), secret: secret.clone() })
        },
    )
    .await
}

#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "accounts",
    summary = "Revoke an API token",
    description = "One's own, or anyone's for admins. Takes effect with the next request. Someone else's \
                   token answers 404 to a non-admin, as an unknown id does, so ids reveal nothing.",
    params(("id" = i64, Path, description = "The token's id.")),
    responses((status = 400, description = "The id is not a number.", body = ApiError), Removal, Refusals),
    security(("bearer" = []))
)]
async fn delete_token(
    State(app): State<Shared>,
    Caller(who): Caller,
    path: Result<Path<i64>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Ok(Path(id)) = path else { return Err(Fail::bad_request("api.invalid_id")) };
        write::revoke_token(&app, &who, id).await?;
        no_content()
    };
    respond(&headers, result.await)
}

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    id: i64,
    #[schema(example = "menden")]
    username: String,
    display_name: String,
    role: Role,
    /// AGS of the towns and districts an editor may change.
    scopes: Vec<String>,
    /// `active`, `setup_pending` (the setup link was not used yet) or `disabled`.
    state: &'static str,
}

impl From<auth::User> for UserOut {
    fn from(u: auth::User) -> UserOut {
        let state = if u.disabled {
            "disabled"
        } else if u.password_hash.is_empty() {
            "setup_pending"
        } else {
            "active"
        };
        UserOut { id: u.id, username: u.username, display_name: u.display_name, role: u.role, scopes: u.scopes, state }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    users: Vec<UserOut>,
}

/// A new account: the person sets password and second factor through the setup link.
#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    user: UserOut,
    /// Path of the one-time setup link, valid for three days; send it to the person, not through
    /// the journal. Absent in a replay (`Idempotent-Replayed: true`): the link is shown once.
    #[schema(example = "/intern/einrichten/…", required = false)]
    setup_path: String,
    /// The same as an absolute address (absent in a replay, too).
    #[schema(required = false)]
    setup_url: String,
}

#[utoipa::path(
    get,
    path = "/users",
    tag = "accounts",
    summary = "Every account (admins only)",
    responses((status = 200, description = "The accounts in name order.", body = UserList), Refusals),
    security(("bearer" = []))
)]
async fn list_users(State(app): State<Shared>, Caller(who): Caller, headers: HeaderMap) -> Response {
    let result = async {
        authorize(&who, &Action::ManageUsers).map_err(|_| Fail::forbidden())?;
        let mut c = app.store.read().await?;
        reply(
            StatusCode::OK,
            &UserList { users: accounts::all_users(&mut c).await?.into_iter().map(UserOut::from).collect() },
        )
    };
    respond(&headers, result.await)
}

#[utoipa::path(
    post,
    path = "/users",
    tag = "accounts",
    summary = "Create an account (admins only)",
    description = "Returns the one-time setup link where the person sets a password and enrols the second factor; no password is ever sent or stored in clear. Unknown fields are rejected with 422. Takes an `Idempotency-Key`; a replayed answer does not repeat the setup link, which is never stored in clear.",
    params(IdempotencyKey),
    request_body = UserInput,
    responses(
        (status = 201, description = "The account and its setup link.", body = CreatedUser),
        KeyInUse, Refusals, BodyErrors,
    ),
    security(("bearer" = []))
)]
async fn post_user(
    State(app): State<Shared>,
    Caller(who): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (app, who) = (&app, &who);
    let public_url = app.public_url.clone();
    post_json(
        app,
        who,
        &headers,
        &uri,
        body,
        |input: UserInput| async move { Ok(write::create_user(app, who, &input).await?) },
        move |_, (user, token): &(auth::User, String)| {
            let setup_path = format!("/intern/einrichten/{token}");
            let setup_url = format!("{public_url}{setup_path}");
            reply(StatusCode::CREATED, &CreatedUser { user: user.clone().into(), setup_path, setup_url })
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The journal

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct JournalParams {
    /// Entries whose kind starts with this, e.g. `statement` or `announcement.create`.
    #[param(max_length = 200)]
    kind: Option<String>,
    /// Exactly this author: a user name, `token:<name>`, `cli` or `system`.
    #[param(max_length = 200)]
    author: Option<String>,
    /// Exactly this scope: an AGS, `area`, `service:<slug>` or `user:<name>`.
    #[param(max_length = 200)]
    scope: Option<String>,
    /// Entries at or after this time (RFC 3339, or YYYY-MM-DD for the start of that day, UTC).
    #[param(value_type = Option<TimeBound>)]
    since: Option<String>,
    /// Entries before this time (RFC 3339, or YYYY-MM-DD for the start of that day, UTC).
    #[param(value_type = Option<TimeBound>)]
    until: Option<String>,
    /// At most this many entries, newest first: 1 to 100000, default 1000.
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<i64>,
    /// `json` (default) or `csv`.
    #[param(value_type = Option<JournalFormat>)]
    format: Option<String>,
}

/// How the journal is sent.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum JournalFormat {
    Json,
    Csv,
}

#[derive(Serialize, ToSchema)]
pub struct JournalPage {
    /// Newest first. `payload` is the JSON text exactly as hashed, so the chain can be checked independently.
    entries: Vec<Entry>,
}

/// A time bound for the journal filter, normalised to compare with entry times.
fn time_bound(field: &str, value: Option<String>) -> Result<String, Fail> {
    let v = value.unwrap_or_default();
    let v = v.trim();
    if v.is_empty() || time::parse_date(v).is_some() {
        Ok(v.to_string())
    } else {
        time::parse_rfc3339(v).map(time::format_rfc3339).ok_or_else(|| Fail::invalid(field, "api.invalid_date_or_time"))
    }
}

/// A text filter: bounded, like every other parameter.
fn text_filter(field: &str, value: Option<String>) -> Result<String, Fail> {
    let v = value.unwrap_or_default();
    if v.chars().count() > 200 { Err(Fail::invalid(field, "write.too_long")) } else { Ok(v.trim().to_string()) }
}

#[utoipa::path(
    get,
    path = "/journal",
    tag = "journal",
    summary = "Read and filter the journal, as JSON or CSV",
    description = "Every signed-in role may read it; editors see only the entries about their towns and districts.",
    params(JournalParams),
    responses(
        (status = 200, description = "The matching entries, newest first; with `format=csv` as CSV with the same columns.",
            content((JournalPage = "application/json"), (String = "text/csv"))),
        (status = 400, description = "An unknown or malformed parameter.", body = ApiError),
        (status = 422, description = "A parameter's value is not acceptable (`invalid`, `field` names it).", body = ApiError),
        Refusals,
    ),
    security(("bearer" = []))
)]
async fn journal(
    State(app): State<Shared>,
    Caller(who): Caller,
    params: Result<Query<JournalParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(&who, &Action::ReadInternal).map_err(|_| Fail::forbidden())?;
        let Ok(Query(p)) = params else { return Err(Fail::bad_request("api.invalid_parameters")) };
        let csv = match p.format.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(_) => return Err(Fail::invalid("format", "api.invalid_format")),
        };
        let limit = p.limit.unwrap_or(JOURNAL_LIMIT);
        if !(1..=JOURNAL_LIMIT_MAX).contains(&limit) {
            return Err(Fail::invalid("limit", "api.invalid_limit"));
        }
        let filter = journal::Filter {
            kind: text_filter("kind", p.kind)?,
            author: text_filter("author", p.author)?,
            scope: text_filter("scope", p.scope)?,
            since: time_bound("since", p.since)?,
            until: time_bound("until", p.until)?,
        };
        Ok((csv, visible_entries(&app, &who, filter, limit).await?))
    };
    match result.await {
        Err(f) => f.response(&headers),
        Ok((true, entries)) => match journal::export(&entries, "csv") {
            Ok(text) => {
                ([(header::CONTENT_TYPE, "text/csv; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], text)
                    .into_response()
            }
            Err(e) => Fail::internal(e).response(&headers),
        },
        Ok((false, entries)) => respond(&headers, reply(StatusCode::OK, &JournalPage { entries })),
    }
}

/// The entries `who` may read: everything, except for editors, who see their scopes' entries.
async fn visible_entries(app: &App, who: &Principal, filter: journal::Filter, limit: i64) -> Result<Vec<Entry>, Fail> {
    let mut c = app.store.read().await?;
    if who.role != Role::Editor {
        return Ok(journal::list(&mut c, &filter, limit).await?);
    }
    let scopes: Vec<&String> = who.scopes.iter().filter(|s| filter.scope.is_empty() || **s == filter.scope).collect();
    let mut entries = Vec::new();
    for scope in scopes {
        entries
            .extend(journal::list(&mut c, &journal::Filter { scope: scope.clone(), ..filter.clone() }, limit).await?);
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
    entries.truncate(limit as usize);
    Ok(entries)
}

#[derive(Serialize, ToSchema)]
pub struct JournalCheck {
    /// Whether every entry matches its hash and follows its predecessor, up to the recorded head.
    intact: bool,
    entries: usize,
    head_seq: i64,
    head_hash: String,
    /// When not intact: the first entry that was altered, removed or reordered.
    problem: Option<String>,
}

#[utoipa::path(
    get,
    path = "/journal/verify",
    tag = "journal",
    summary = "Check the journal's hash chain",
    description = "The same check as `notbetrieb journal verify`.",
    responses((status = 200, description = "The result; `intact` is false and `problem` names the first bad entry when it was tampered with.", body = JournalCheck), Refusals),
    security(("bearer" = []))
)]
async fn journal_verify(State(app): State<Shared>, Caller(who): Caller, headers: HeaderMap) -> Response {
    let result = async {
        authorize(&who, &Action::ReadInternal).map_err(|_| Fail::forbidden())?;
        let mut c = app.store.read().await?;
        let journal::Verified { entries, head_seq, head_hash, verdict } = journal::verify_stored(&mut c).await?;
        let problem = verdict.err().map(|p| p.to_string());
        reply(StatusCode::OK, &JournalCheck { intact: problem.is_none(), entries, head_seq, head_hash, problem })
    };
    respond(&headers, result.await)
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document (merged into the read API's by `api::openapi`)

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("nb_…")
            .description(Some("An API token from `POST /api/v1/tokens`, the editing desk, or `notbetrieb token add`."))
            .build();
        doc.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(
        put_statement, delete_statement, post_statements, post_announcement, put_announcement, delete_announcement, post_faq, put_faq,
        post_referral, put_referral, delete_referral, put_contact, put_office, list_tokens, post_token, delete_token, list_users, post_user,
        journal, journal_verify,
    ),
    components(schemas(ApiError, JournalFormat)),
    modifiers(&BearerAuth),
    tags(
        (name = "editing", description = "Statements, announcements, FAQ, referrals and contact channels; needs a bearer token with the right role and scope"),
        (name = "accounts", description = "API tokens and accounts"),
        (name = "journal", description = "The tamper-evident record of every change"),
    )
)]
struct WriteDoc;

/// District twins of town routes: the same handler and documentation under another path.
const DISTRICT_TWINS: [(&str, &str); 2] = [
    ("/municipalities/{slug}/services/{service}/statement", "/districts/{slug}/services/{service}/statement"),
    ("/municipalities/{slug}/contact", "/districts/{slug}/contact"),
];

/// utoipa documents `#[serde(flatten)]` as `allOf` of the parts, and a part whose type denies
/// unknown fields then forbids the other parts' fields to strict validators. One object with
/// every field (and the parts' `additionalProperties: false`) says exactly what is accepted.
pub(crate) fn merge_flattened(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Object, Schema};
    let Some(components) = doc.components.as_mut() else { return };
    let named = components.schemas.clone();
    let object = |item: &RefOr<Schema>| -> Option<Object> {
        let schema = match item {
            RefOr::T(schema) => schema,
            RefOr::Ref(r) => match named.get(r.ref_location.trim_start_matches("#/components/schemas/"))? {
                RefOr::T(schema) => schema,
                RefOr::Ref(_) => return None,
            },
        };
        if let Schema::Object(o) = schema { Some(o.clone()) } else { None }
    };
    for schema in components.schemas.values_mut() {
        let RefOr::T(Schema::AllOf(all)) = schema else { continue };
        let Some(parts) = all.items.iter().map(&object).collect::<Option<Vec<Object>>>() else { continue };
        let Some((first, rest)) = parts.split_first() else { continue };
        let mut merged = first.clone();
        for part in rest {
            merged.properties.extend(part.properties.clone());
            merged.required.extend(part.required.clone());
            merged.additional_properties = merged.additional_properties.or_else(|| part.additional_properties.clone());
        }
        merged.description = all.description.clone();
        *schema = RefOr::T(Schema::Object(merged));
    }
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = WriteDoc::openapi();
    merge_flattened(&mut doc);
    for (town, district) in DISTRICT_TWINS {
        let Some(mut item) = doc.paths.paths.get(town).cloned() else { continue };
        for op in [&mut item.put, &mut item.delete].into_iter().flatten() {
            op.operation_id = op.operation_id.take().map(|id| format!("{id}_district"));
        }
        doc.paths.paths.insert(district.to_string(), item);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n;

    #[test]
    fn every_message_key_exists() {
        // The API's message keys, in this file, the read API and the one error type.
        let source = [include_str!("editing.rs"), include_str!("mod.rs"), include_str!("error.rs")].concat();
        for (at, _) in source.match_indices("\"api.").chain(source.match_indices("\"write.")) {
            let key = source[at + 1..].split('"').next().unwrap();
            if key.ends_with('.') || key.contains(' ') {
                continue;
            }
            assert!(i18n::has("de", key) && i18n::has("en", key), "message key {key} missing");
        }
    }

    #[test]
    fn bodies_name_the_unknown_or_wrong_field() {
        let err = |body: &str| parse::<Versioned<StatementInput>>(body.as_bytes()).map(|_| ()).unwrap_err();
        assert!(parse::<Versioned<StatementInput>>(br#"{"level": "limited", "version": 2}"#).is_ok());
        let e = err(r#"{"level": "limited", "colour": "red"}"#);
        assert_eq!(
            (e.status, e.field.as_deref(), e.key),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("colour"), "api.unknown_field")
        );
        let e = err(r#"{"level": "limited", "backlog": 3}"#);
        assert_eq!((e.field.as_deref(), e.key), (Some("backlog"), "api.wrong_type"));
        let e = err(r#"{"workaround": "x"}"#);
        assert_eq!((e.field.as_deref(), e.key), (Some("level"), "write.required"));
        assert_eq!(err(r#"{"level": "#).status, StatusCode::BAD_REQUEST);
        assert_eq!(err("[1, 2]").field.as_deref(), Some("body"));
        let e = parse::<BulkStatements>(br#"{"municipalities": ["a"], "level": "limited", "servics": []}"#)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("servics"));
    }

    #[test]
    fn versions_come_from_if_match_or_the_body() {
        let mut h = HeaderMap::new();
        assert_eq!(expected_version(&h, Some(2)).unwrap(), Some(2));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(expected_version(&h, None).unwrap(), Some(3));
        assert_eq!(expected_version(&h, Some(3)).unwrap(), Some(3));
        assert_eq!(expected_version(&h, Some(2)).unwrap_err().field.as_deref(), Some("version"));
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"0\""));
        assert_eq!(if_match(&h).unwrap(), Some(0));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("7"));
        assert_eq!(if_match(&h).unwrap(), Some(7));
        // Only what the document's pattern allows: no sign, no stray quotes, no empty tag.
        for bad in ["\"abc\"", "+3", "\"-1\"", "\"3", "W/3", "\"\"", "W/\"\"", "\"\"3\"\"", "1234567890123456789"] {
            h.insert(header::IF_MATCH, HeaderValue::from_static(bad));
            assert_eq!(if_match(&h).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(!regex_lite::Regex::new(crate::write::formats::IF_MATCH_PATTERN).unwrap().is_match(bad), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_are_printable_ascii() {
        let key = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", HeaderValue::from_str(v).unwrap());
            idempotency_key(&h).map(|k| k.map(str::to_string)).map_err(|e| e.status)
        };
        assert_eq!(key("retry-1 of 2026-11-01"), Ok(Some("retry-1 of 2026-11-01".into())));
        assert_eq!(key(""), Err(StatusCode::BAD_REQUEST));
        assert_eq!(key(&"k".repeat(201)), Err(StatusCode::BAD_REQUEST));
        assert_eq!(key("tab\there"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn openapi_documents_every_write_route_with_bearer_auth() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        for (path, method) in [
            ("/municipalities/{slug}/services/{service}/statement", "put"),
            ("/districts/{slug}/services/{service}/statement", "delete"),
            ("/statements", "post"),
            ("/announcements/{id}", "put"),
            ("/districts/{slug}/contact", "put"),
            ("/tokens", "get"),
            ("/users", "post"),
            ("/journal/verify", "get"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} missing");
            assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{method} {path}");
            assert!(op["responses"]["401"].is_object() && op["responses"]["403"].is_object(), "{method} {path}");
        }
        let bulk = &doc["components"]["schemas"]["BulkStatements"];
        assert_eq!(bulk["additionalProperties"], false, "{bulk}");
        assert!(bulk["properties"]["municipalities"].is_object() && bulk["properties"]["level"].is_object(), "{bulk}");
        assert_eq!(
            doc["components"]["schemas"]["Versioned_StatementInput"]["properties"]["version"]["format"],
            "int64"
        );
        assert_ne!(
            doc["paths"]["/districts/{slug}/contact"]["put"]["operationId"],
            doc["paths"]["/municipalities/{slug}/contact"]["put"]["operationId"]
        );
    }
}
