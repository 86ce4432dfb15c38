//! The HTTP layer: routes, conditional and compressed responses, error pages, security headers.
//! Public pages come from the snapshot's render cache; nothing here waits for the database.

pub mod api;
pub mod client;
pub mod desk;
pub mod subscriptions;

use anyhow::Context;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use crate::read::live::Shared;
use crate::read::snapshot::{CachedPage, Snapshot};
use crate::site::paths::{self, Page};
use crate::site::render;

/// The language of a public page, set per router ("/" German, "/<code>" every other language).
#[derive(Clone, Copy)]
pub struct Lang(pub &'static str);

pub use crate::site::paths::{ATOM, HTML, ICS};
pub const JSON: &str = "application/json";
pub const CAP: &str = "application/cap+xml";
pub const STYLE: &str = include_str!("../../static/style.css");

/// The whole site; `proxies` are the peers whose forwarding headers are believed (`client`).
pub fn router(app: Shared, proxies: client::TrustedProxies) -> Router {
    let public = |lang: &'static str| {
        Router::new()
            .route("/", get(home))
            .route("/suche", get(search))
            .route("/kommunen", get(municipalities))
            .route("/kommunen/{slug}", get(municipality))
            .route("/kommunen/{slug}/leistungen/{service}", get(service_in_town))
            .route("/kommunen/{slug}/meldungen.atom", get(municipality_feed))
            .route("/kommunen/{slug}/status.atom", get(municipality_status_feed))
            .route("/kreise/{slug}", get(district))
            .route("/leistungen", get(services))
            .route("/leistungen/{slug}", get(service))
            .route("/meldungen", get(announcements))
            .route("/meldungen/{id}", get(announcement))
            .route("/feeds/meldungen.atom", get(area_feed))
            .route("/feeds/status.atom", get(area_status_feed))
            .route("/fragen", get(faq))
            .route("/fahrplan", get(fahrplan))
            .route("/fahrplan.ics", get(fahrplan_ics))
            .route("/kommunen/{slug}/fahrplan", get(town_fahrplan))
            .route("/kommunen/{slug}/fahrplan.ics", get(town_fahrplan_ics))
            .route("/quellen", get(sources))
            .merge(subscriptions::public_routes())
            .fallback(not_found)
            .layer(Extension(Lang(lang)))
    };
    // German at "/", every other language of the catalogue at "/<code>" ("/<code>/" redirects).
    let mut router = Router::new();
    for language in crate::i18n::languages() {
        let code: &'static str = &language.code;
        if code == crate::i18n::DEFAULT_LANG {
            router = router.merge(public(code));
        } else {
            let base: &'static str = &language.base;
            router = router
                .nest(base, public(code))
                .route(&format!("{base}/"), get(move || async move { Redirect::permanent(base) }));
        }
    }
    router
        .nest("/api/v1", crate::http::api::router())
        .nest("/intern", crate::http::desk::router())
        .route("/healthz", get(healthz))
        .route("/static/style.css", get(style))
        // CAP carries both languages in one message: once, not per language.
        .route("/cap/index.atom", get(cap_index))
        .route("/cap/{file}", get(cap_alert))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(Extension(proxies))
        .with_state(app)
}

/// Headers every response carries. The CSP allows no script at all: public pages need none.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // A refused oversized body was not read to its end: the connection cannot carry another
    // request, so say so rather than let the client reuse it and fail.
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|part| {
            let mut it = part.trim().split(';');
            let coding = it.next().unwrap_or("").trim();
            let refused = it.any(|p| p.trim().replace(' ', "") == "q=0");
            (coding == "gzip" || coding == "*") && !refused
        })
    })
}

/// Answers with a cached page: 304 when the client has it, gzip when the client takes it.
pub fn send(headers: &HeaderMap, page: &CachedPage, status: StatusCode) -> Response {
    let etag = page.etag_header.clone();
    let vary = HeaderValue::from_static("accept-encoding");
    let cache = HeaderValue::from_static("no-cache");
    if status == StatusCode::OK
        && headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == page.etag || t.trim() == "*"))
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::VARY, vary), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    let content_type = HeaderValue::from_static(page.content_type);
    if accepts_gzip(headers) {
        (
            status,
            [
                (header::CONTENT_TYPE, content_type),
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                (header::ETAG, etag),
                (header::VARY, vary),
                (header::CACHE_CONTROL, cache),
            ],
            page.gzip.clone(),
        )
            .into_response()
    } else {
        (
            status,
            [
                (header::CONTENT_TYPE, content_type),
                (header::ETAG, etag),
                (header::VARY, vary),
                (header::CACHE_CONTROL, cache),
            ],
            page.body.clone(),
        )
            .into_response()
    }
}

/// Renders (once per snapshot) and sends a public page, or the 404 page when the snapshot has
/// no such town, service, district or announcement. The rendering is `paths::render`'s, the same
/// as the static export's.
async fn public_page(app: &Shared, headers: &HeaderMap, lang: &str, page: Page) -> Response {
    let snap = app.snapshot();
    let key = format!("{lang}:{}", page.path());
    if !paths::exists(&snap, &page) {
        return not_found_page(headers, &snap, lang).await;
    }
    let rendered = snap
        .cached(&key, page.content_type(), || {
            let rendered = paths::render(&snap, lang, &app.public_url, &page, false);
            Ok(rendered.context("the page went missing")??.body)
        })
        .await;
    send_rendered(headers, &snap, lang, rendered).await
}

pub async fn error_page(headers: &HeaderMap, snap: &Snapshot, lang: &str, status: StatusCode, key: &str) -> Response {
    match snap
        .cached(&format!("{lang}:error:{}:{key}", status.as_u16()), HTML, || {
            render::error(snap, lang, status.as_u16(), key, false)
        })
        .await
    {
        Ok(page) => send(headers, &page, status),
        Err(_) => (status, "error").into_response(),
    }
}

async fn not_found_page(headers: &HeaderMap, snap: &Snapshot, lang: &str) -> Response {
    error_page(headers, snap, lang, StatusCode::NOT_FOUND, "error.not_found").await
}

async fn not_found(State(app): State<Shared>, Extension(Lang(lang)): Extension<Lang>, headers: HeaderMap) -> Response {
    not_found_page(&headers, &app.snapshot(), lang).await
}

/// 200 `{"status": "ok", …}`, or 503 `{"status": "unhealthy", "reason": …}` while the public
/// snapshot is behind a committed write (its rebuild failed and is being retried).
async fn healthz(State(app): State<Shared>) -> Response {
    let snap = app.snapshot();
    // A failing mirror does not make the server unhealthy: it says so here and in the desk.
    let mirrors = app.mirror_status();
    // Nor does a down SMTP server: the outbox says how much waits.
    let notifications = app.notify_status();
    match app.stale_reason() {
        None => {
            let body = serde_json::json!({
                "status": "ok", "data_version": snap.data_version, "changed_at": snap.changed_at, "mirrors": mirrors,
                "notifications": notifications,
            });
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Some(reason) => {
            let body = serde_json::json!({
                "status": "unhealthy", "reason": reason, "data_version": snap.data_version, "changed_at": snap.changed_at,
                "mirrors": mirrors, "notifications": notifications,
            });
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
    }
}

async fn style(headers: HeaderMap) -> Response {
    use std::sync::OnceLock;
    static PAGE: OnceLock<CachedPage> = OnceLock::new();
    let page = PAGE.get_or_init(|| CachedPage::new("text/css; charset=utf-8", STYLE.to_string()));
    send(&headers, page, StatusCode::OK)
}

async fn cap_index(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let snap = app.snapshot();
    let lang = crate::i18n::DEFAULT_LANG;
    let index = snap.cached("cap:index", ATOM, || Ok(crate::site::cap::index_atom(&snap, &app.public_url))).await;
    send_rendered(&headers, &snap, lang, index).await
}

/// Sends what `Snapshot::cached` rendered, or the error page when rendering failed.
async fn send_rendered(
    headers: &HeaderMap,
    snap: &Snapshot,
    lang: &str,
    rendered: anyhow::Result<std::sync::Arc<CachedPage>>,
) -> Response {
    match rendered {
        Ok(page) => send(headers, &page, StatusCode::OK),
        Err(e) => {
            tracing::error!(error = %e, "rendering failed");
            error_page(headers, snap, lang, StatusCode::INTERNAL_SERVER_ERROR, "error.internal").await
        }
    }
}

async fn cap_alert(State(app): State<Shared>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    let snap = app.snapshot();
    let lang = crate::i18n::DEFAULT_LANG;
    // Finding is cheap (one service's towns, or the announcements' history); only a message that
    // exists is rendered and cached, so unknown identifiers cannot fill the cache.
    let found =
        file.strip_suffix(".xml").and_then(|id| crate::read::snapshot::cpu_bound(|| crate::site::cap::find(&snap, id)));
    let Some(m) = found else { return not_found_page(&headers, &snap, lang).await };
    let alert =
        snap.cached(&format!("cap:{file}"), CAP, || Ok(crate::site::cap::alert_xml(&snap, &app.public_url, &m))).await;
    send_rendered(&headers, &snap, lang, alert).await
}

async fn home(State(app): State<Shared>, Extension(Lang(lang)): Extension<Lang>, headers: HeaderMap) -> Response {
    public_page(&app, &headers, lang, Page::Home).await
}

async fn municipalities(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::Towns).await
}

async fn services(State(app): State<Shared>, Extension(Lang(lang)): Extension<Lang>, headers: HeaderMap) -> Response {
    public_page(&app, &headers, lang, Page::Services).await
}

async fn announcements(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::News).await
}

async fn fahrplan(State(app): State<Shared>, Extension(Lang(lang)): Extension<Lang>, headers: HeaderMap) -> Response {
    public_page(&app, &headers, lang, Page::Fahrplan).await
}

async fn fahrplan_ics(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::FahrplanIcs).await
}

async fn faq(State(app): State<Shared>, Extension(Lang(lang)): Extension<Lang>, headers: HeaderMap) -> Response {
    public_page(&app, &headers, lang, Page::Faq).await
}

async fn sources(State(app): State<Shared>, Extension(Lang(lang)): Extension<Lang>, headers: HeaderMap) -> Response {
    public_page(&app, &headers, lang, Page::Sources).await
}

async fn area_feed(State(app): State<Shared>, Extension(Lang(lang)): Extension<Lang>, headers: HeaderMap) -> Response {
    public_page(&app, &headers, lang, Page::Feed).await
}

async fn area_status_feed(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::StatusFeed).await
}

async fn municipality_status_feed(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::TownStatusFeed(slug)).await
}

async fn municipality(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::Town(slug)).await
}

async fn district(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::District(slug)).await
}

async fn service(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::Service(slug)).await
}

async fn announcement(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::Announcement(slug)).await
}

async fn town_fahrplan(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::TownFahrplan(slug)).await
}

async fn town_fahrplan_ics(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::TownFahrplanIcs(slug)).await
}

async fn municipality_feed(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::TownFeed(slug)).await
}

async fn service_in_town(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    Path((town, service)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    public_page(&app, &headers, lang, Page::TownService { town, service }).await
}

#[derive(Deserialize)]
struct SearchParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    ort: String,
}

const MAX_QUERY: usize = 200;
const MAX_PLACE: usize = 100;

async fn search(
    State(app): State<Shared>,
    Extension(Lang(lang)): Extension<Lang>,
    params: Result<Query<SearchParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let snap = app.snapshot();
    let Ok(Query(params)) = params else {
        return error_page(&headers, &snap, lang, StatusCode::BAD_REQUEST, "error.bad_request").await;
    };
    if params.q.chars().count() > MAX_QUERY || params.ort.chars().count() > MAX_PLACE {
        return error_page(&headers, &snap, lang, StatusCode::BAD_REQUEST, "search.too_long").await;
    }
    let base = render::base(lang);
    if params.q.trim().is_empty() && params.ort.trim().is_empty() {
        return Redirect::to(&format!("{base}/")).into_response();
    }
    let outcome = crate::read::search::find(&snap, lang, &params.q, &params.ort);
    if let (true, Some(town)) = (outcome.query.is_empty(), outcome.town()) {
        return Redirect::to(&format!("{base}/kommunen/{}", town.slug)).into_response();
    }
    match crate::read::snapshot::cpu_bound(|| render::search(&snap, lang, &outcome, false)) {
        Ok(html) => ([(header::CONTENT_TYPE, HTML), (header::CACHE_CONTROL, "no-cache")], html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "search rendering failed");
            error_page(&headers, &snap, lang, StatusCode::INTERNAL_SERVER_ERROR, "error.internal").await
        }
    }
}
