//! Webhooks: signed POSTs to other systems for every change in their scope, as the Standard
//! Webhooks specification describes (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, the key being the base64 after `whsec_`).
//!
//! The messages go through the outbox like mails: written by the notifier with the batch that
//! causes them, claimed and sent by `deliver_forever`, retried with backoff for about a day
//! (then the webhook is paused), a `410 Gone` disables the webhook. Private, loopback and
//! link-local targets are refused unless `serve --webhook-allow-private`, both when a webhook is
//! registered and when each message is sent (the name could resolve elsewhere by then);
//! redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::Refusal;
use crate::auth;
use crate::domain::authz::{Action, Principal, authorize};
use crate::domain::*;
use crate::read::live::{App, Shared};
use crate::read::snapshot::Snapshot;
use crate::store::outbox::{self, Message};
use crate::store::webhooks::{self, Attempt, Webhook};

pub const WEBHOOK: &str = "webhook";

pub use crate::domain::events::WEBHOOK_EVENTS as EVENT_TYPES;

/// How long a receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_URL: usize = 2000;

/// What someone registers.
#[derive(Clone, Debug, Default)]
pub struct WebhookInput {
    pub url: String,
    pub municipalities: Vec<String>,
    pub services: Vec<String>,
    pub events: Vec<String>,
    /// Whom to tell by mail when the webhook is paused or disabled; empty: nobody but the desk.
    pub contact_email: String,
}

/// Whether an address may be a webhook's target: not loopback, private, link-local, unspecified,
/// multicast or otherwise not reachable on the internet.
pub fn public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1])))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The host and port of an http(s) URL, or why it cannot be a target.
fn target(url: &str) -> Result<(String, u16), &'static str> {
    if url.len() > MAX_URL || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("webhook.url_invalid");
    }
    let parsed = url::Url::parse(url).map_err(|_| "webhook.url_invalid")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("webhook.url_scheme");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("webhook.url_invalid");
    }
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or("webhook.url_invalid")?;
    let port = parsed.port_or_known_default().ok_or("webhook.url_invalid")?;
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// Resolves a target and checks every address it has; the addresses to connect to.
async fn resolve(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, &'static str> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| "webhook.url_unresolvable")?
            .map_err(|_| "webhook.url_unresolvable")?
            .collect(),
    };
    if addrs.is_empty() {
        return Err("webhook.url_unresolvable");
    }
    if !allow_private && addrs.iter().any(|a| !public_address(a.ip())) {
        return Err("webhook.url_private");
    }
    Ok(addrs)
}

/// A new signing secret: `whsec_` and 24 random bytes in base64.
fn new_secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(auth::random_bytes::<24>()))
}

/// The signature of one message as the `webhook-signature` header carries it.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap_or_default();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// Registers a webhook after checking the target, the filters and who asks; returns it with its
/// secret, which is shown this once.
pub async fn register(app: &App, who: &Principal, input: &WebhookInput) -> Result<(Webhook, String), Refusal> {
    let snap = app.snapshot();
    let (host, port) = target(input.url.trim()).map_err(|key| Refusal::Invalid("url", key))?;
    let mut municipalities = Vec::new();
    for slug in &input.municipalities {
        let m = snap.municipality(slug).ok_or(Refusal::Invalid("municipalities", "subscribe.unknown_municipality"))?;
        municipalities.push(m.ags.clone());
    }
    for slug in &input.services {
        snap.service(slug).ok_or(Refusal::Invalid("services", "subscribe.unknown_service"))?;
    }
    if let Some(_unknown) = input.events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(Refusal::Invalid("events", "webhook.unknown_event"));
    }
    let contact_email = match input.contact_email.trim() {
        "" => String::new(),
        given => super::check_email(given).map_err(|refusal| match refusal {
            Refusal::Invalid(_, key) => Refusal::Invalid("contact_email", key),
            other => other,
        })?,
    };
    authorize(who, &Action::ManageWebhooks { owner: who.user_id, municipalities: &municipalities })
        .map_err(|_| Refusal::Forbidden)?;
    resolve(&host, port, app.notify_status().allow_private_webhooks)
        .await
        .map_err(|key| Refusal::Invalid("url", key))?;
    let secret = new_secret();
    let webhook = Webhook {
        id: format!("wh_{}", hex::encode(auth::random_bytes::<12>())),
        owner_id: who.user_id,
        owner_name: who.name.clone(),
        url: input.url.trim().to_string(),
        municipalities,
        services: input.services.clone(),
        events: input.events.clone(),
        secret: secret.clone(),
        state: "active".into(),
        created_at: time::now_rfc3339(),
        state_reason: String::new(),
        contact_email,
    };
    let mut tx = app.store.begin().await?;
    webhooks::insert(&mut tx, &webhook).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    tracing::info!(webhook = %webhook.id, owner = %who.name, "webhook registered");
    Ok((webhook, secret))
}

/// The webhooks `who` may see: all for admins, their own for everyone else.
pub async fn visible(app: &App, who: &Principal) -> Result<Vec<Webhook>> {
    let mut c = app.store.read().await?;
    let all = webhooks::all(&mut c).await?;
    Ok(all.into_iter().filter(|w| may_manage(who, w)).collect())
}

fn may_manage(who: &Principal, w: &Webhook) -> bool {
    authorize(who, &Action::ManageWebhooks { owner: w.owner_id, municipalities: &w.municipalities }).is_ok()
}

/// One webhook with its latest delivery attempts, if `who` may see it.
pub async fn with_attempts(app: &App, who: &Principal, id: &str) -> Result<Option<(Webhook, Vec<Attempt>)>> {
    let mut c = app.store.read().await?;
    let Some(w) = webhooks::get(&mut c, id).await?.filter(|w| may_manage(who, w)) else { return Ok(None) };
    let attempts = webhooks::attempts(&mut c, id, 100).await?;
    Ok(Some((w, attempts)))
}

/// Sends to a paused or disabled webhook again (its owner fixed the receiver); the webhook as it
/// is now, `None` when there is none that `who` may manage. Messages given up meanwhile are not
/// sent again.
pub async fn resume(app: &App, who: &Principal, id: &str) -> Result<Option<Webhook>> {
    let mut tx = app.store.begin().await?;
    let Some(mut w) = webhooks::get(&mut tx, id).await?.filter(|w| may_manage(who, w)) else { return Ok(None) };
    webhooks::set_state(&mut tx, &w.id, "active", "").await?;
    tx.commit().await?;
    tracing::info!(webhook = %w.id, by = %who.name, "webhook resumed");
    (w.state, w.state_reason) = ("active".into(), String::new());
    Ok(Some(w))
}

/// Removes a webhook; `false` when there is none that `who` may manage.
pub async fn remove(app: &App, who: &Principal, id: &str) -> Result<bool> {
    let mut tx = app.store.begin().await?;
    let Some(w) = webhooks::get(&mut tx, id).await?.filter(|w| may_manage(who, w)) else { return Ok(false) };
    webhooks::delete(&mut tx, &w.id).await?;
    tx.commit().await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Fan-out (called by the notifier inside its batch transaction)

/// One event as webhooks receive it, with what decides who gets it.
pub struct Item {
    pub kind: &'static str,
    /// The town it is about (AGS), or `None` for area-wide news.
    pub municipality: Option<String>,
    pub service: Option<String>,
    /// A key unique within the batch, for the message id.
    pub key: String,
    pub data: Value,
}

fn wants(w: &Webhook, item: &Item) -> bool {
    w.state == "active"
        && (w.events.is_empty() || w.events.iter().any(|e| e == item.kind))
        && (w.municipalities.is_empty() || item.municipality.as_ref().is_none_or(|m| w.municipalities.contains(m)))
        && (w.services.is_empty() || item.service.as_ref().is_none_or(|s| w.services.contains(s)))
}

/// Queues one message per webhook and item it wants; how many.
pub async fn fan_out(c: &mut sqlx::AnyConnection, items: &[Item], batch: &str, now: &str) -> Result<usize> {
    if items.is_empty() {
        return Ok(0);
    }
    let mut queued = 0;
    for w in webhooks::all(c).await? {
        for item in items.iter().filter(|i| wants(&w, i)) {
            use sha2::Digest;
            let id = format!(
                "msg_{}",
                hex::encode(&sha2::Sha256::digest(format!("{}:{batch}:{}", w.id, item.key).as_bytes())[..12])
            );
            let body = json!({ "type": item.kind, "timestamp": now, "data": item.data }).to_string();
            let message = Message {
                id,
                channel: WEBHOOK.into(),
                recipient: w.id.clone(),
                subject: item.kind.into(),
                body_text: body,
                ..Default::default()
            };
            outbox::enqueue(c, &message, now).await?;
            queued += 1;
        }
    }
    Ok(queued)
}

#[derive(Serialize)]
struct PlaceRef<'a> {
    slug: &'a str,
    name: &'a str,
    ags: &'a str,
}

/// The event of a changed availability.
pub fn availability_item(
    snap: &Snapshot,
    public_url: &str,
    m: &Municipality,
    s: &Service,
    previous: Option<&(String, String)>,
) -> Item {
    let a = snap.availability(m, s);
    let d = snap.details(m, s, &a);
    Item {
        kind: "availability.changed",
        municipality: Some(m.ags.clone()),
        service: Some(s.slug.clone()),
        key: format!("{}/{}", m.ags, s.slug),
        data: json!({
            "municipality": PlaceRef { slug: &m.slug, name: &m.name, ags: &m.ags },
            "service": { "slug": s.slug, "name": s.name, "area": s.area },
            "level": a.level.as_str(),
            "previous_level": previous.map_or("normal", |p| p.0.as_str()),
            "expected_return": (!d.expected_return.is_empty()).then_some(&d.expected_return),
            "restrictions": (!d.restrictions.is_empty()).then_some(&d.restrictions),
            "workaround": (!d.workaround.is_empty()).then_some(&d.workaround),
            "html_url": format!("{public_url}/kommunen/{}/leistungen/{}", m.slug, s.slug),
        }),
    }
}

/// The event of an announcement published, corrected or withdrawn.
pub fn announcement_item(public_url: &str, kind: &'static str, a: &crate::domain::events::AnnouncementState) -> Item {
    let municipality = match a.scope {
        ScopeKind::Municipality => Some(a.scope_ref.clone()),
        _ => None,
    };
    let service = match a.scope {
        ScopeKind::Service => Some(a.scope_ref.clone()),
        _ => None,
    };
    Item {
        kind,
        municipality,
        service,
        key: format!("announcement/{}/{}", a.id, a.version),
        data: json!({
            "id": a.id, "scope": a.scope, "scope_ref": a.scope_ref, "lang": a.lang, "title": a.title,
            "body_markdown": a.body, "published_at": a.published_at, "version": a.version,
            "html_url": format!("{public_url}/meldungen/{}", a.id),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery

/// Sends due webhook messages for as long as the server runs.
pub async fn deliver_forever(app: Shared) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    super::drain_forever("webhooks", || deliver_due(&app)).await
}

/// What one attempt came to.
enum Outcome {
    Delivered,
    /// 410 Gone: the receiver wants no more.
    Gone,
    Failed,
}

async fn deliver_due(app: &App) -> Result<usize> {
    let now = time::now();
    let claimed = {
        let mut tx = app.store.begin().await?;
        let until = time::format_rfc3339(now + super::mail::claim());
        let claimed =
            outbox::claim_due(&mut tx, app.store.engine(), WEBHOOK, &time::format_rfc3339(now), &until, 50).await?;
        tx.commit().await?;
        claimed
    };
    let count = claimed.len();
    let allow_private = app.notify_status().allow_private_webhooks;
    let mut sending = tokio::task::JoinSet::new();
    for m in claimed {
        let webhook = {
            let mut c = app.store.read().await?;
            webhooks::get(&mut c, &m.recipient).await?
        };
        sending.spawn(async move {
            let started = std::time::Instant::now();
            let (status, error) = match &webhook {
                None => (0, "the webhook was removed".to_string()),
                Some(w) if w.state != "active" => (0, format!("the webhook is {}", w.state)),
                Some(w) => send(w, &m, allow_private).await,
            };
            let attempt = Attempt {
                message_id: m.id.clone(),
                at: time::now_rfc3339(),
                status,
                error,
                duration_ms: started.elapsed().as_millis() as i64,
            };
            (m, webhook, attempt)
        });
    }
    while let Some(done) = sending.join_next().await {
        let (m, webhook, attempt) = done?;
        let outcome = match attempt.status {
            200..=299 => Outcome::Delivered,
            410 => Outcome::Gone,
            _ => Outcome::Failed,
        };
        let mut tx = app.store.begin().await?;
        if let Some(w) = &webhook {
            webhooks::record_attempt(&mut tx, &w.id, &attempt).await?;
        }
        let reason = if attempt.error.is_empty() { format!("HTTP {}", attempt.status) } else { attempt.error.clone() };
        match (outcome, &webhook) {
            (Outcome::Delivered, _) => outbox::delivered(&mut tx, &m.id, &attempt.at).await?,
            (Outcome::Gone, Some(w)) => {
                webhooks::set_state(&mut tx, &w.id, "disabled", "410 Gone").await?;
                tell_owner(app, &mut tx, w, "disabled", "410 Gone").await?;
                outbox::attempt_failed(&mut tx, &m.id, &reason, None).await?;
                tracing::warn!(webhook = %w.id, "a webhook answered 410 Gone and is disabled");
            }
            (_, Some(w)) if w.state == "active" => {
                let attempts = m.attempts + 1;
                let next = (attempts < super::mail::MAX_ATTEMPTS).then(|| super::mail::retry_at(attempts));
                if next.is_none() {
                    webhooks::set_state(&mut tx, &w.id, "paused", &format!("failing for about a day: {reason}"))
                        .await?;
                    tell_owner(app, &mut tx, w, "paused", &reason).await?;
                    tracing::warn!(webhook = %w.id, owner = %w.owner_name, "a webhook failed throughout and is paused");
                }
                outbox::attempt_failed(&mut tx, &m.id, &reason, next.as_deref()).await?;
            }
            // Removed, paused or disabled meanwhile: given up, not retried.
            _ => outbox::attempt_failed(&mut tx, &m.id, &reason, None).await?,
        }
        tx.commit().await?;
    }
    Ok(count)
}

/// Queues a mail to a webhook's contact address saying that it was paused or disabled, in the
/// transaction that stops it (the desk shows it either way).
async fn tell_owner(app: &App, c: &mut sqlx::AnyConnection, w: &Webhook, state: &str, reason: &str) -> Result<()> {
    if w.contact_email.is_empty() {
        return Ok(());
    }
    let snap = app.snapshot();
    let lang = crate::i18n::DEFAULT_LANG;
    let ctx = minijinja::context! {
        lang => lang,
        site => crate::site::render::v(&snap.data.area_name),
        url => &w.url,
        state => state,
        reason => reason,
        desk_url => format!("{}/intern/webhooks/{}", app.public_url, w.id),
    };
    let mail = Message {
        // One mail per webhook and stop: a repeat after a crash is the same message.
        id: format!("{}-{state}-{}", w.id, time::now().timestamp() / 60),
        channel: super::EMAIL.into(),
        recipient: w.contact_email.clone(),
        subject: crate::i18n::tf(lang, &format!("mail.webhook_{state}_subject"), &[("url", w.url.clone())]),
        body_text: crate::site::render::render_template("mail/webhook_stopped.txt", ctx.clone())?,
        body_html: crate::site::render::render_template("mail/webhook_stopped.html", ctx)?,
        ..Default::default()
    };
    outbox::enqueue(c, &mail, &time::now_rfc3339()).await
}

/// One POST: the HTTP status (0 without an answer) and what went wrong.
async fn send(w: &Webhook, m: &Message, allow_private: bool) -> (i64, String) {
    let (host, port) = match target(&w.url) {
        Ok(t) => t,
        Err(key) => return (0, key.into()),
    };
    let addrs = match resolve(&host, port, allow_private).await {
        Ok(addrs) => addrs,
        Err(key) => return (0, key.into()),
    };
    // Connect to the addresses just checked, not to whatever the name resolves to a moment later.
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .resolve_to_addrs(&host, &addrs)
        .build()
    {
        Ok(client) => client,
        Err(e) => return (0, e.to_string()),
    };
    let timestamp = time::now().timestamp();
    let request = client
        .post(&w.url)
        .header("content-type", "application/json")
        .header("user-agent", "notbetrieb-webhooks")
        .header("webhook-id", &m.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(&w.secret, &m.id, timestamp, &m.body_text))
        .body(m.body_text.clone());
    match request.send().await {
        Ok(res) => (i64::from(res.status().as_u16()), String::new()),
        Err(e) if e.is_timeout() => (0, "no answer within 10 s".into()),
        Err(e) if e.is_connect() => (0, "connection refused or unreachable".into()),
        Err(e) => (0, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_targets() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!public_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2a00:1450:4001:82a::200e"] {
            assert!(public_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_must_be_http_without_credentials() {
        assert!(target("https://example.org/hook").is_ok());
        assert_eq!(target("ftp://example.org/").unwrap_err(), "webhook.url_scheme");
        assert_eq!(target("javascript:alert(1)").unwrap_err(), "webhook.url_scheme");
        assert_eq!(target("https://user:pw@example.org/").unwrap_err(), "webhook.url_invalid");
        assert_eq!(target("https://example.org/a b").unwrap_err(), "webhook.url_invalid");
        assert_eq!(target(&format!("https://example.org/{}", "a".repeat(2000))).unwrap_err(), "webhook.url_invalid");
    }

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
