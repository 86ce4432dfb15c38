//! The editing desk under /intern: sign-in with two factors, account setup, and the pages where
//! editors change what citizens see. Server-rendered, no JavaScript, every form with a CSRF
//! token, every write through `writes` (and so through `authz`).

pub mod board;
pub mod pages;
pub mod webhooks;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::{Value, context};
use serde::Deserialize;

use crate::auth::{self, Session, User};
use crate::domain::authz::{Principal, Role};
use crate::http::client::ClientAddr;
use crate::i18n;
use crate::read::live::Shared;
use crate::site::render;
use crate::store::accounts;
use crate::store::journal;
use crate::write::{self, WriteError};

const SESSION_COOKIE: &str = "nb_session";
/// Double-submit token for forms shown before a session exists (sign-in, setup).
const PRE_COOKIE: &str = "nb_form";

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(dashboard))
        .route("/anmelden", get(login_page).post(login))
        .route("/zweiter-faktor", get(second_factor_page).post(second_factor))
        .route("/einrichten/{token}", get(setup_page).post(setup))
        .route("/abmelden", post(logout))
        .route("/ueberall-abmelden", post(logout_everywhere))
        .merge(crate::http::desk::pages::router())
        .merge(crate::http::desk::board::router())
        .merge(crate::http::desk::webhooks::router())
}

// ---------------------------------------------------------------------------------------------
// Cookies and responses

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Cookies are HttpOnly, SameSite=Lax, limited to /intern, and Secure unless the site itself is
/// plain HTTP on this machine (development and tests).
fn set_cookie(app: &Shared, name: &str, value: &str, max_age_seconds: i64) -> HeaderValue {
    let secure = if insecure_loopback(&app.public_url) { "" } else { "; Secure" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/intern; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}"
    ))
    .expect("cookie is ASCII")
}

fn insecure_loopback(public_url: &str) -> bool {
    ["http://127.", "http://localhost", "http://[::1]"].iter().any(|p| public_url.starts_with(p))
}

/// The language of the desk: the browser's preference among ours (`Accept-Language`), German
/// otherwise.
pub fn desk_lang(headers: &HeaderMap) -> &'static str {
    crate::i18n::negotiate(headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or(""))
}

/// Renders a desk page: never cached, never indexed.
pub fn page(
    app: &Shared,
    lang: &str,
    status: StatusCode,
    template: &str,
    who: Option<&Desk>,
    content: Value,
) -> Response {
    let snap = app.snapshot();
    let ctx = context! {
        lang => lang,
        site_name => snap.data.area_name.clone(),
        demo => snap.data.demo,
        user => who.map(|d| context! {
            username => d.user.username.clone(),
            display_name => d.user.display_name.clone(),
            role => d.user.role.as_str(),
        }),
        // Pages before the second factor pass the half-signed-in session's token themselves.
        csrf => who.map_or_else(|| content.get_attr("csrf").unwrap_or_default(), |d| Value::from(d.session.csrf_token.clone())),
        ..content
    };
    match render::render_template(template, ctx) {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::HeaderName::from_static("x-robots-tag"), HeaderValue::from_static("noindex")),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, template, "desk rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---------------------------------------------------------------------------------------------
// The signed-in editor

/// A signed-in user with both factors done; the extractor redirects to sign-in otherwise.
pub struct Desk {
    pub user: User,
    pub session: Session,
    pub lang: &'static str,
}

impl Desk {
    pub fn principal(&self) -> Principal {
        self.user.principal()
    }

    /// Renders a page of the signed-in desk in the one desk shell (`page`): user, CSRF token,
    /// language and headers come from here; notices and everything else from `content`.
    pub fn page(&self, app: &Shared, status: StatusCode, template: &str, content: Value) -> Response {
        page(app, self.lang, status, template, Some(self), content)
    }

    /// Every form of a signed-in user carries the session's CSRF token.
    pub fn check_csrf(&self, token: &str) -> Result<(), Response> {
        if auth::constant_time_eq(token, &self.session.csrf_token) {
            Ok(())
        } else {
            Err((StatusCode::FORBIDDEN, "CSRF token missing or wrong; reload the form and try again.").into_response())
        }
    }
}

async fn signed_in(app: &Shared, headers: &HeaderMap) -> anyhow::Result<Option<(User, Session)>> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    let mut c = app.store.read().await?;
    let Some(session) = accounts::session(&mut c, &value).await? else { return Ok(None) };
    let Some(user) = accounts::user_by_id(&mut c, session.user_id).await? else { return Ok(None) };
    c.commit().await?;
    if session.needs_touch {
        accounts::touch_session(&app.store, &session).await?;
    }
    if user.disabled {
        return Ok(None);
    }
    Ok(Some((user, session)))
}

impl FromRequestParts<Shared> for Desk {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        let lang = desk_lang(&parts.headers);
        match signed_in(app, &parts.headers).await {
            Ok(Some((user, session))) if session.second_factor => Ok(Desk { user, session, lang }),
            Ok(Some(_)) => Err(see_other("/intern/zweiter-faktor")),
            Ok(None) => Err(see_other("/intern/anmelden")),
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                Err((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response())
            }
        }
    }
}

/// Turns a refused write into a page with the reason; nothing was stored.
pub fn write_error_page(app: &Shared, desk: &Desk, e: WriteError, back: &str) -> Response {
    let (status, key, field, current) = match e {
        WriteError::Forbidden => (StatusCode::FORBIDDEN, "write.forbidden", String::new(), None),
        WriteError::NotFound(_) => (StatusCode::NOT_FOUND, "write.not_found", String::new(), None),
        WriteError::Invalid { field, message } => (StatusCode::UNPROCESSABLE_ENTITY, message, field, None),
        e @ (WriteError::VersionConflict { .. } | WriteError::GateRefused { .. } | WriteError::Cycle { .. }) => {
            (StatusCode::CONFLICT, "write.conflict", String::new(), e.current())
        }
        WriteError::Internal(e) => {
            tracing::error!(error = %e, "write failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "error.internal", String::new(), None)
        }
    };
    let current = current.map(|c| serde_json::to_string_pretty(&c).unwrap_or_default());
    desk.page(
        app,
        status,
        "desk/refused.html",
        context! { message => i18n::t(desk.lang, key), field => field, current => current, back => back },
    )
}

// ---------------------------------------------------------------------------------------------
// Sign-in

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    form: String,
}

fn pre_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, PRE_COOKIE).filter(|v| v.len() >= 20 && v.len() <= 100)
}

/// A page with a pre-session form: reuses or sets the double-submit cookie.
fn pre_session_page(app: &Shared, headers: &HeaderMap, status: StatusCode, template: &str, content: Value) -> Response {
    let token = pre_token(headers).unwrap_or_else(auth::random_token);
    let mut res =
        page(app, desk_lang(headers), status, template, None, context! { form_token => token.clone(), ..content });
    res.headers_mut().append(header::SET_COOKIE, set_cookie(app, PRE_COOKIE, &token, 3600));
    res
}

fn pre_token_ok(headers: &HeaderMap, submitted: &str) -> bool {
    pre_token(headers).is_some_and(|t| auth::constant_time_eq(&t, submitted))
}

async fn login_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    pre_session_page(&app, &headers, StatusCode::OK, "desk/login.html", context! {})
}

async fn login(
    State(app): State<Shared>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = desk_lang(&headers);
    if !pre_token_ok(&headers, &form.form) {
        return pre_session_page(
            &app,
            &headers,
            StatusCode::FORBIDDEN,
            "desk/login.html",
            context! { error => i18n::t(lang, "desk.form_expired") },
        );
    }
    match attempt_login(&app, &client.to_string(), cookie(&headers, SESSION_COOKIE), &form).await {
        Ok(LoginOutcome::Success { cookie_value, second_factor_needed }) => {
            let mut res = see_other(if second_factor_needed { "/intern/zweiter-faktor" } else { "/intern" });
            res.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&app, SESSION_COOKIE, &cookie_value, auth::SESSION_HOURS * 3600),
            );
            res
        }
        Ok(LoginOutcome::Failed) => pre_session_page(
            &app,
            &headers,
            StatusCode::UNAUTHORIZED,
            "desk/login.html",
            context! { error => i18n::t(lang, "desk.login_failed") },
        ),
        Ok(LoginOutcome::AddressBlocked) => pre_session_page(
            &app,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            "desk/login.html",
            context! { error => i18n::t(lang, "desk.too_many_attempts") },
        ),
        Err(e) => {
            tracing::error!(error = %e, "sign-in failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

enum LoginOutcome {
    Success {
        cookie_value: String,
        second_factor_needed: bool,
    },
    /// Wrong name, wrong password, locked or disabled: the same answer for all.
    Failed,
    AddressBlocked,
}

/// Test hook, debug builds only: every password check takes this many milliseconds longer, so
/// tests can show that a slow hash holds up no write and that what happens meanwhile counts.
const SLOW_PASSWORD_CHECK_MS: &str = "NOTBETRIEB_TEST_SLOW_PASSWORD_CHECK_MS";

/// A password sign-in from `address`. The attempt first claims its place among the address's
/// recent failures (`accounts::claim_attempt`), so parallel attempts cannot all slip under the
/// limit. The password hash (argon2, the slow part) is checked outside any write transaction
/// and off the async threads: on SQLite a write transaction holds the database's one write
/// lock, which no sign-in may keep for a hash. The outcome is then recorded in a short write
/// transaction whose statements decide on the rows as they are at that moment (a lock set by a
/// parallel attempt meanwhile holds), never on the user read before the hash.
/// `previous_session` is the session cookie the browser had: a sign-in ends that session.
async fn attempt_login(
    app: &Shared,
    address: &str,
    previous_session: Option<String>,
    form: &LoginForm,
) -> anyhow::Result<LoginOutcome> {
    let mut tx = app.store.begin().await?;
    let attempt = accounts::claim_attempt(&mut tx, address).await?;
    tx.commit().await?;
    let mut c = app.store.read().await?;
    // This attempt's own claim included.
    let failures = accounts::recent_failures_from(&mut c, address).await?;
    if failures > auth::ADDRESS_FAILURE_LIMIT {
        drop(c);
        let mut tx = app.store.begin().await?;
        accounts::release_attempt(&mut tx, &attempt).await?;
        tx.commit().await?;
        return Ok(LoginOutcome::AddressBlocked);
    }
    let username = form.username.trim().to_lowercase();
    let user = if auth::valid_username(&username) { accounts::user_by_name(&mut c, &username).await? } else { None };
    drop(c);
    let (hash, password) = (user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_default(), form.password.clone());
    let password_ok = tokio::task::spawn_blocking(move || {
        if cfg!(debug_assertions)
            && let Some(ms) = std::env::var(SLOW_PASSWORD_CHECK_MS).ok().and_then(|v| v.parse().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if hash.is_empty() {
            // The same time as a real check: an unknown user name is not revealed by timing.
            auth::verify_password_dummy(&password);
            false
        } else {
            auth::verify_password(&hash, &password)
        }
    })
    .await?;

    let mut tx = app.store.begin().await?;
    if let (true, Some(user)) = (password_ok, &user)
        && accounts::clear_failures_if_usable(&mut tx, user).await?
    {
        accounts::release_attempt(&mut tx, &attempt).await?;
        if let Some(previous) = previous_session {
            accounts::end_session(&mut tx, &auth::token_hash(&previous)).await?;
        }
        let second_factor_needed = user.needs_second_factor();
        let cookie_value = accounts::create_session(&mut tx, user.id, !second_factor_needed).await?;
        tx.commit().await?;
        return Ok(LoginOutcome::Success { cookie_value, second_factor_needed });
    }
    // The claim stays as this failure; the account's count goes up in the database itself.
    let locked_now = match &user {
        Some(user) => accounts::record_user_failure(&mut tx, user.id).await?,
        None => false,
    };
    tx.commit().await?;
    if locked_now {
        write::journal_login_burst(app, &username, address, "login.locked").await?;
    }
    if failures == auth::ADDRESS_FAILURE_LIMIT {
        write::journal_login_burst(app, &username, address, "login.address_blocked").await?;
    }
    // Each earlier failure from the same address answers more slowly.
    tokio::time::sleep(std::time::Duration::from_millis(150 * (failures.clamp(1, 11) as u64))).await;
    Ok(LoginOutcome::Failed)
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: String,
}

async fn half_signed_in(app: &Shared, headers: &HeaderMap) -> Option<(User, Session)> {
    signed_in(app, headers).await.ok().flatten()
}

async fn second_factor_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    match half_signed_in(&app, &headers).await {
        Some((_, s)) if s.second_factor => see_other("/intern"),
        Some((_, s)) => page(
            &app,
            desk_lang(&headers),
            StatusCode::OK,
            "desk/second_factor.html",
            None,
            context! { csrf => s.csrf_token },
        ),
        None => see_other("/intern/anmelden"),
    }
}

/// The second factor (a TOTP code or a recovery code). On success the session gets a new id:
/// the half-signed-in one ends, so its cookie, known before the second factor, opens nothing.
async fn second_factor(
    State(app): State<Shared>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    let lang = desk_lang(&headers);
    let Some((user, session)) = half_signed_in(&app, &headers).await else { return see_other("/intern/anmelden") };
    if session.second_factor {
        return see_other("/intern");
    }
    if !auth::constant_time_eq(&form.csrf, &session.csrf_token) {
        return (StatusCode::FORBIDDEN, "CSRF token missing or wrong").into_response();
    }
    let address = client.to_string();
    let result: anyhow::Result<Option<String>> = async {
        let mut tx = app.store.begin().await?;
        // The account as it is now; a locked one gets its code not even checked (nor used up).
        let current = accounts::user_by_id(&mut tx, user.id).await?.filter(|u| !u.disabled && !auth::is_locked(u));
        if let Some(current) = &current
            && (accounts::accept_totp(&mut tx, current, &form.code).await?
                || accounts::use_recovery_code(&mut tx, current.id, &form.code).await?)
            && accounts::clear_failures_if_usable(&mut tx, current).await?
            && let Some(cookie_value) = accounts::promote_session(&mut tx, &session.id_hash).await?
        {
            tx.commit().await?;
            return Ok(Some(cookie_value));
        }
        // Counted in the database itself, also while locked, so parallel codes all count.
        accounts::record_address_failure(&mut tx, &address).await?;
        let locked_now = accounts::record_user_failure(&mut tx, user.id).await?;
        tx.commit().await?;
        if locked_now {
            write::journal_login_burst(&app, &user.username, &address, "login.locked").await?;
        }
        Ok(None)
    }
    .await;
    match result {
        Ok(Some(cookie_value)) => {
            let mut res = see_other("/intern");
            res.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&app, SESSION_COOKIE, &cookie_value, auth::SESSION_HOURS * 3600),
            );
            res
        }
        Ok(None) => page(
            &app,
            lang,
            StatusCode::UNAUTHORIZED,
            "desk/second_factor.html",
            None,
            context! { csrf => session.csrf_token, error => i18n::t(lang, "desk.code_wrong") },
        ),
        Err(e) => {
            tracing::error!(error = %e, "second factor failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Account setup: password and second factor from a one-time link

#[derive(Deserialize)]
struct SetupForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_again: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    form: String,
}

/// Shows the enrolment: a fresh TOTP secret as QR code and as text for manual entry.
async fn setup_page(State(app): State<Shared>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let lang = desk_lang(&headers);
    let result: anyhow::Result<Option<(User, String)>> = async {
        let mut c = app.store.begin().await?;
        let Some(user) = accounts::user_by_setup_token(&mut c, &token).await? else { return Ok(None) };
        // The pending secret is kept until the setup is completed; a reload makes a new one.
        let secret = auth::new_totp_secret();
        accounts::set_pending_totp_secret(&mut c, user.id, &secret).await?;
        c.commit().await?;
        Ok(Some((user, secret)))
    }
    .await;
    match result {
        Ok(Some((user, secret))) => {
            let issuer = app.snapshot().data.area_name.clone();
            let url = auth::otpauth_url(&issuer, &user.username, &secret);
            pre_session_page(
                &app,
                &headers,
                StatusCode::OK,
                "desk/setup.html",
                context! {
                    username => user.username, secret => secret, qr => Value::from_safe_string(auth::qr_svg(&url)),
                    min_chars => auth::MIN_PASSWORD_CHARS,
                },
            )
        }
        Ok(None) => page(
            &app,
            lang,
            StatusCode::NOT_FOUND,
            "desk/message.html",
            None,
            context! { message => i18n::t(lang, "desk.setup_link_invalid") },
        ),
        Err(e) => {
            tracing::error!(error = %e, "setup page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// A setup form that cannot be accepted: the account, the pending second-factor secret to show
/// again, and the message key saying why.
type SetupRefusal = (User, String, &'static str);

async fn setup(
    State(app): State<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> Response {
    let lang = desk_lang(&headers);
    if !pre_token_ok(&headers, &form.form) {
        return page(
            &app,
            lang,
            StatusCode::FORBIDDEN,
            "desk/message.html",
            None,
            context! { message => i18n::t(lang, "desk.form_expired") },
        );
    }
    let result: anyhow::Result<Result<Vec<String>, SetupRefusal>> = async {
        let mut c = app.store.begin().await?;
        let Some(user) = accounts::user_by_setup_token(&mut c, &token).await? else {
            return Ok(Err((dummy_user(), String::new(), "desk.setup_link_invalid")));
        };
        let secret = user.totp_secret.clone();
        let problem = if form.password != form.password_again {
            Some("desk.passwords_differ")
        } else {
            auth::password_problem(&user.username, &form.password)
        };
        if let Some(key) = problem {
            return Ok(Err((user, secret, key)));
        }
        let Some(step) = auth::check_totp(&secret, &form.code, auth::now_unix()) else {
            return Ok(Err((user, secret, "desk.code_wrong")));
        };
        accounts::complete_setup(&mut c, user.id, &auth::hash_password(&form.password)?, &secret, step).await?;
        let codes = accounts::new_recovery_codes(&mut c, user.id).await?;
        let event = crate::domain::events::Event::UserSetUp {
            username: user.username.clone(),
            second_factor: "totp".into(),
            recovery_codes: codes.len(),
        };
        journal::append_event(&mut c, &user.username, &event).await?;
        c.commit().await?;
        Ok(Ok(codes))
    }
    .await;
    match result {
        Ok(Ok(codes)) => {
            page(&app, lang, StatusCode::OK, "desk/recovery_codes.html", None, context! { codes => codes })
        }
        Ok(Err((user, secret, key))) if !secret.is_empty() => {
            let issuer = app.snapshot().data.area_name.clone();
            let url = auth::otpauth_url(&issuer, &user.username, &secret);
            pre_session_page(
                &app,
                &headers,
                StatusCode::UNPROCESSABLE_ENTITY,
                "desk/setup.html",
                context! {
                    username => user.username, secret => secret, qr => Value::from_safe_string(auth::qr_svg(&url)),
                    min_chars => auth::MIN_PASSWORD_CHARS, error => i18n::t(lang, key),
                },
            )
        }
        Ok(Err((_, _, key))) => page(
            &app,
            lang,
            StatusCode::NOT_FOUND,
            "desk/message.html",
            None,
            context! { message => i18n::t(lang, key) },
        ),
        Err(e) => {
            tracing::error!(error = %e, "setup failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn dummy_user() -> User {
    User {
        id: 0,
        username: String::new(),
        display_name: String::new(),
        role: Role::Viewer,
        password_hash: String::new(),
        totp_secret: String::new(),
        demo: false,
        disabled: true,
        failed_logins: 0,
        locked_until: String::new(),
        scopes: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-out

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

async fn logout(State(app): State<Shared>, desk: Desk, Form(form): Form<CsrfForm>) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    if let Ok(mut c) = app.store.begin().await {
        let _ = accounts::end_session(&mut c, &desk.session.id_hash).await;
        let _ = c.commit().await;
    }
    let mut res = see_other("/intern/anmelden");
    res.headers_mut().append(header::SET_COOKIE, set_cookie(&app, SESSION_COOKIE, "", 0));
    res
}

async fn logout_everywhere(State(app): State<Shared>, desk: Desk, Form(form): Form<CsrfForm>) -> Response {
    if let Err(r) = desk.check_csrf(&form.csrf) {
        return r;
    }
    let result: anyhow::Result<()> = async {
        let mut c = app.store.begin().await?;
        accounts::end_all_sessions(&mut c, desk.user.id).await?;
        let event = crate::domain::events::Event::UserSignedOutEverywhere { username: desk.user.username.clone() };
        journal::append_event(&mut c, &desk.user.username, &event).await?;
        c.commit().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "sign-out everywhere failed");
    }
    let mut res = see_other("/intern/anmelden");
    res.headers_mut().append(header::SET_COOKIE, set_cookie(&app, SESSION_COOKIE, "", 0));
    res
}

// ---------------------------------------------------------------------------------------------
// Dashboard

async fn dashboard(State(app): State<Shared>, desk: Desk) -> Response {
    let snap = app.snapshot();
    let p = desk.principal();
    let all = matches!(p.role, Role::Admin | Role::Operator | Role::Viewer);
    let towns: Vec<Value> = snap
        .data
        .municipalities
        .iter()
        .filter(|m| all || p.scopes.contains(&m.ags))
        .map(|m| {
            let mut counts = render::LevelCounts::default();
            for s in snap.data.services.iter() {
                counts.add(snap.availability(m, s).level);
            }
            context! { slug => m.slug.clone(), name => m.name.clone(), ags => m.ags.clone(), counts => render::v(&counts) }
        })
        .collect();
    let districts: Vec<Value> = snap
        .data
        .districts
        .iter()
        .filter(|d| all || p.scopes.contains(&d.ags))
        .map(|d| context! { slug => d.slug.clone(), name => d.name.clone(), ags => d.ags.clone() })
        .collect();
    // The mirrors and the outbox are the provider's: admins and operators see them.
    let provider = matches!(p.role, Role::Admin | Role::Operator);
    let mirrors: Vec<Value> = if provider { mirror_views(&app) } else { Vec::new() };
    let outbox = if provider { Some(outbox_view(&app).await) } else { None };
    // Webhooks of this user's that stopped: the owner is told here (and by mail if they gave an address).
    let stopped: Vec<Value> = match crate::notify::webhooks::visible(&app, &p).await {
        Ok(all) => all
            .iter()
            .filter(|w| w.state != "active" && (w.owner_id == p.user_id || p.role == Role::Admin))
            .map(|w| context! { id => w.id.clone(), url => w.url.clone(), state => w.state.clone(), reason => w.state_reason.clone() })
            .collect(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reading the webhooks for the desk failed");
            Vec::new()
        }
    };
    let gaps = gaps(&snap, |ags| all || p.scopes.iter().any(|scope| scope == ags));
    desk.page(
        &app,
        StatusCode::OK,
        "desk/dashboard.html",
        context! {
            towns => towns, districts => districts, can_edit => p.role != Role::Viewer, mirrors => mirrors,
            outbox => outbox, stopped_webhooks => stopped, ..gaps
        },
    )
}

/// Listed at most per list on the overview; the count says how many there are in all.
const MAX_GAPS: usize = 100;

/// What needs the editor's attention in the towns and districts that are `mine` (by AGS; a town
/// counts when it or its district is): services worse than normal with neither a workaround nor
/// a referral, towns without a phone number, towns and districts without an office of their own,
/// and statements to look at again, because the recovery moved past them or their review day
/// has passed.
fn gaps(snap: &crate::read::snapshot::Snapshot, mine: impl Fn(&str) -> bool) -> Value {
    use crate::read::snapshot::Snapshot;
    let now = crate::domain::time::now();
    let (mut lacking, mut lacking_total, mut without_phone) = (Vec::new(), 0, Vec::new());
    // Who has no office of its own: residents would be told to go nowhere in particular.
    let owners: std::collections::HashSet<&str> = snap.data.offices.iter().map(|o| o.owner_ags.as_str()).collect();
    let mut without_office: Vec<Value> = snap
        .data
        .districts
        .iter()
        .filter(|d| d.member && mine(&d.ags) && !owners.contains(d.ags.as_str()))
        .map(|d| context! { kind => "kreise", slug => d.slug.clone(), name => d.name.clone() })
        .collect();
    let (mut review, mut review_total) = (Vec::new(), 0);
    let mut seen = std::collections::HashSet::new();
    for m in snap.data.municipalities.iter().filter(|m| mine(&m.ags) || mine(&m.district_ags)) {
        if m.contact.phone.trim().is_empty() {
            without_phone.push(context! { slug => m.slug.clone(), name => m.name.clone() });
        }
        if mine(&m.ags) && !owners.contains(m.ags.as_str()) {
            without_office.push(context! { kind => "kommunen", slug => m.slug.clone(), name => m.name.clone() });
        }
        for s in snap.data.services.iter() {
            let a = snap.availability(m, s);
            if snap.lacks_workaround(m, s, &a) {
                lacking_total += 1;
                if lacking.len() < MAX_GAPS {
                    lacking.push(context! {
                        town_slug => m.slug.clone(), town => m.name.clone(), service_slug => s.slug.clone(),
                        service => s.name.clone(), level => a.level.as_str(),
                    });
                }
            }
            // A district's statement once, not once per town.
            let Some(st) = a.statement.filter(|st| mine(&st.scope_ags)) else { continue };
            if !seen.insert((st.scope_ags.clone(), s.slug.clone())) {
                continue;
            }
            let contradicted = snap.contradiction(m, s, &a);
            if contradicted.is_some() || Snapshot::review_due(st, now) {
                review_total += 1;
                if review.len() < MAX_GAPS {
                    let (kind, slug, name) = match snap.district(&st.scope_ags).filter(|_| st.scope_ags.len() == 5) {
                        Some(d) => ("kreise", d.slug.clone(), d.name.clone()),
                        None => ("kommunen", m.slug.clone(), m.name.clone()),
                    };
                    review.push(context! {
                        kind => kind, slug => slug, name => name, service_slug => s.slug.clone(),
                        service => s.name.clone(), stated_at => st.stated_at.clone(), contradicted_since => contradicted,
                    });
                }
            }
        }
    }
    context! {
        without_workaround => lacking, without_workaround_total => lacking_total, without_phone => without_phone,
        without_office => without_office,
        to_review => review, to_review_total => review_total,
        review_after_days => crate::read::snapshot::REVIEW_AFTER_DAYS,
    }
}

/// The outbox per channel with the age of its oldest waiting message in whole seconds, the
/// subscriptions, and whether mail can go out at all.
async fn outbox_view(app: &Shared) -> Value {
    let now = chrono::Utc::now();
    match crate::notify::outbox_counts(app).await {
        Ok((channels, (confirmed, pending))) => {
            let channels: Vec<Value> = channels
                .iter()
                .map(|c| {
                    let age = crate::domain::time::parse_rfc3339(&c.oldest_pending)
                        .map(|since| (now - since).num_seconds().max(0));
                    context! { oldest_pending_seconds => age, ..render::v(c) }
                })
                .collect();
            context! {
                channels => channels, confirmed => confirmed, pending => pending,
                smtp_configured => app.notify_status().smtp_configured,
            }
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reading the outbox for the desk failed");
            context! { unreadable => true }
        }
    }
}

/// Each mirror's status with its lag in whole seconds (`None` when it is current).
fn mirror_views(app: &Shared) -> Vec<Value> {
    let now = chrono::Utc::now();
    app.mirror_status()
        .into_iter()
        .map(|s| {
            let lag = s
                .behind_since
                .as_deref()
                .and_then(crate::domain::time::parse_rfc3339)
                .map(|since| (now - since).num_seconds().max(0));
            context! { lag_seconds => lag, ..render::v(&s) }
        })
        .collect()
}
