//! Telling people: e-mail subscriptions with double opt-in, the notifier that turns committed
//! changes into mails in the outbox, and the mailer that delivers them (`mail`).
//!
//! Nothing acknowledged is lost: a change's journal entry commits with the change; the notifier
//! reads the journal from its cursor and writes the mails of a batch, the new cursor and what
//! subscribers have now been told in one transaction; the mailer claims due mails, sends them
//! and marks them delivered. A crash repeats at most the mails in flight, with the same
//! Message-ID. Addresses never go into the journal.
//!
//! What counts as a change is a difference between what subscribers were last told about a
//! service in a town (`notify_state`) and the current snapshot: a level or an expected return
//! that changed, whether stated or derived from a rollout. Published or corrected announcements
//! in a subscription's scope are changes too. Changes that arrive together are one mail per
//! subscription: the notifier waits until the oldest unhandled change is `window` old.

pub mod mail;
pub mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use minijinja::context;
use serde::Serialize;
use sha2::Digest;

use crate::auth;
use crate::domain::events::{AnnouncementState, Event};
use crate::domain::*;
use crate::i18n;
use crate::read::live::App;
use crate::read::snapshot::Snapshot;
use crate::site::render::{self, v};
use crate::store::journal;
use crate::store::outbox::{self, Message};
use crate::store::subscriptions::{self, NewSubscription, Subscription};

/// The wording a subscriber agrees to is versioned; the version and the text are stored with
/// each subscription as proof of consent.
pub const CONSENT_VERSION: &str = "2026-12-03";
/// How long a confirmation link is valid; then the pending subscription is deleted.
const PENDING_HOURS: i64 = 72;
/// Subscription requests per address (confirmation mails sent) and per client, per hour.
const PER_ADDRESS_PER_HOUR: i64 = 3;
const PER_CLIENT_PER_HOUR: i64 = 20;
/// Subscriptions whose mails are written in one transaction.
const FAN_OUT_CHUNK: usize = 500;
/// The notifier's name in `notify_cursor`.
const CURSOR: &str = "email";
pub const EMAIL: &str = "email";

// ---------------------------------------------------------------------------------------------
// Subscribing

/// What someone asks to be told about; `None` scopes mean "any".
#[derive(Clone, Debug, Default)]
pub struct SubscribeInput {
    pub email: String,
    pub municipality: Option<String>,
    pub service: Option<String>,
    pub area: Option<String>,
    pub lang: Option<String>,
}

/// Why a subscription request was refused.
#[derive(Debug)]
pub enum Refusal {
    /// The field and the catalogue key of the reason.
    Invalid(&'static str, &'static str),
    /// Too many requests from this client; try again later.
    TooMany,
    /// Not allowed for who asks.
    Forbidden,
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Refusal {
        Refusal::Internal(e)
    }
}

/// A subscription's scope, checked against the snapshot.
#[derive(Clone, Debug)]
pub struct Scope {
    pub municipality_ags: String,
    pub service_slug: String,
    pub area: String,
}

/// Checks an address: what `write::valid_email` accepts, and nothing a mail header could be
/// bent with (line breaks, control characters, angle brackets).
pub fn check_email(email: &str) -> Result<String, Refusal> {
    let email = email.trim();
    if email.is_empty() {
        return Err(Refusal::Invalid("email", "subscribe.email_missing"));
    }
    if email.len() > 254 || email.chars().any(|c| c.is_control() || c == '<' || c == '>' || c == ',') {
        return Err(Refusal::Invalid("email", "subscribe.email_invalid"));
    }
    if !crate::write::valid_email(email) || email.parse::<lettre::Address>().is_err() {
        return Err(Refusal::Invalid("email", "subscribe.email_invalid"));
    }
    Ok(email.to_string())
}

/// The scope named by slugs, each checked against the snapshot.
pub fn check_scope(snap: &Snapshot, input: &SubscribeInput) -> Result<Scope, Refusal> {
    let given = |o: &Option<String>| o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let municipality_ags = match given(&input.municipality) {
        None => String::new(),
        Some(slug) => snap
            .municipality(&slug)
            .map(|m| m.ags.clone())
            .ok_or(Refusal::Invalid("municipality", "subscribe.unknown_municipality"))?,
    };
    let service_slug = match given(&input.service) {
        None => String::new(),
        Some(slug) => snap
            .service(&slug)
            .map(|s| s.slug.clone())
            .ok_or(Refusal::Invalid("service", "subscribe.unknown_service"))?,
    };
    let area = match given(&input.area) {
        None => String::new(),
        Some(area) if is_service_area(&area) => area,
        Some(_) => return Err(Refusal::Invalid("area", "subscribe.unknown_area")),
    };
    Ok(Scope { municipality_ags, service_slug, area })
}

fn check_lang(lang: &Option<String>) -> Result<&'static str, Refusal> {
    match lang.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(i18n::DEFAULT_LANG),
        Some(code) => i18n::find(code)
            .map(|l| -> &'static str { &l.code })
            .ok_or(Refusal::Invalid("lang", "subscribe.unknown_lang")),
    }
}

/// A hash that identifies a client or an address for the rate limits and the consent record
/// without storing it.
fn hashed(kind: &str, value: &str) -> String {
    hex::encode(&sha2::Sha256::digest(format!("notbetrieb {kind} {value}").as_bytes())[..16])
}

/// Asks for a subscription: stores it pending and queues the confirmation mail, in one
/// transaction. The same answer whether or not the address is known or already subscribed;
/// an address asked for too often gets no further mail for a while (silently), a client that
/// asks too often is refused.
pub async fn subscribe(app: &App, input: &SubscribeInput, client: IpAddr) -> Result<(), Refusal> {
    let email = check_email(&input.email)?;
    let snap = app.snapshot();
    let scope = check_scope(&snap, input)?;
    let lang = check_lang(&input.lang)?;
    let now = time::now();
    let now_text = time::format_rfc3339(now);
    let hour_ago = time::format_rfc3339(now - chrono::Duration::hours(1));
    let client_hash = hashed("client", &client.to_string());

    let mut tx = app.store.begin().await?;
    if subscriptions::count_request(&mut tx, &client_hash, &now_text, &hour_ago).await? > PER_CLIENT_PER_HOUR {
        return Err(Refusal::TooMany);
    }
    let address_hash = hashed("address", &email.to_lowercase());
    if subscriptions::count_request(&mut tx, &address_hash, &now_text, &hour_ago).await? > PER_ADDRESS_PER_HOUR {
        tx.commit().await.map_err(anyhow::Error::from)?;
        return Ok(());
    }
    let existing =
        subscriptions::with_scope(&mut tx, &email, &scope.municipality_ags, &scope.service_slug, &scope.area).await?;
    if existing.as_ref().is_some_and(|s| s.confirmed) {
        // Already subscribed: nothing to confirm, and nothing said about it.
        tx.commit().await.map_err(anyhow::Error::from)?;
        return Ok(());
    }
    let confirm_token = auth::random_token();
    let expires_at = time::format_rfc3339(now + chrono::Duration::hours(PENDING_HOURS));
    let consent = consent_text(&snap, lang, &scope);
    let id = match &existing {
        Some(pending) => {
            subscriptions::renew_pending(&mut tx, &pending.id, &auth::token_hash(&confirm_token), &expires_at).await?;
            pending.id.clone()
        }
        None => {
            let id = hex::encode(auth::random_bytes::<16>());
            subscriptions::insert(
                &mut tx,
                &NewSubscription {
                    id: &id,
                    email: &email,
                    lang,
                    municipality_ags: &scope.municipality_ags,
                    service_slug: &scope.service_slug,
                    area: &scope.area,
                    confirm_token_hash: &auth::token_hash(&confirm_token),
                    now: &now_text,
                    expires_at: &expires_at,
                    consent_version: CONSENT_VERSION,
                    consent_text: &consent,
                    client_hash: &client_hash,
                },
            )
            .await?;
            id
        }
    };
    let mail = confirmation_mail(app, &snap, lang, &email, &scope, &confirm_token)?;
    outbox::enqueue(&mut tx, &mail, &now_text).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    tracing::info!(subscription = %id, "subscription requested; confirmation mail queued");
    Ok(())
}

/// What is being subscribed, in words: "Fahrzeugzulassung in Menden (Sauerland)".
pub fn scope_words(snap: &Snapshot, lang: &str, scope: &Scope) -> String {
    let town = snap.municipality_by_ags(&scope.municipality_ags).map(|m| m.name.clone());
    let what = if let Some(service) = snap.service(&scope.service_slug) {
        service.name.clone()
    } else if !scope.area.is_empty() {
        i18n::t(lang, &format!("area.{}", scope.area))
    } else {
        i18n::t(lang, "subscribe.all_services")
    };
    match town {
        Some(town) => i18n::tf(lang, "subscribe.scope_in_town", &[("what", what), ("town", town)]),
        None => i18n::tf(lang, "subscribe.scope_in_area", &[("what", what), ("area", snap.data.area_name.clone())]),
    }
}

fn consent_text(snap: &Snapshot, lang: &str, scope: &Scope) -> String {
    i18n::tf(lang, "subscribe.consent", &[("scope", scope_words(snap, lang, scope))])
}

fn scope_of(s: &Subscription) -> Scope {
    Scope { municipality_ags: s.municipality_ags.clone(), service_slug: s.service_slug.clone(), area: s.area.clone() }
}

/// A public page's address in a language, absolute.
fn page_url(app: &App, lang: &str, path: &str) -> String {
    format!("{}{}", app.public_url, render::lang_url(lang, path))
}

pub fn confirm_path(token: &str) -> String {
    format!("/abo/bestaetigen/{token}")
}

pub fn unsubscribe_path(token: &str) -> String {
    format!("/abo/abmelden/{token}")
}

fn confirmation_mail(
    app: &App,
    snap: &Snapshot,
    lang: &str,
    email: &str,
    scope: &Scope,
    token: &str,
) -> Result<Message> {
    let ctx = context! {
        lang => lang,
        site => v(&snap.data.area_name),
        scope => scope_words(snap, lang, scope),
        confirm_url => page_url(app, lang, &confirm_path(token)),
        hours => PENDING_HOURS,
    };
    Ok(Message {
        id: hex::encode(auth::random_bytes::<16>()),
        channel: EMAIL.into(),
        recipient: email.into(),
        subject: i18n::tf(lang, "mail.confirm_subject", &[("site", snap.data.area_name.clone())]),
        body_text: render::render_template("mail/confirm.txt", ctx.clone())?,
        body_html: render::render_template("mail/confirm.html", ctx)?,
        unsubscribe_url: String::new(),
        attempts: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// Seeing all subscriptions of an address

/// How long a link to the list of one's subscriptions is valid.
const MANAGE_HOURS: i64 = 24;

pub const MANAGE_PATH: &str = "/abo/verwalten";

/// Mails a link to the list of an address's subscriptions, if it has any. The same answer
/// either way, and the same rate limits as subscribing.
pub async fn request_manage_link(app: &App, email: &str, lang: &str, client: IpAddr) -> Result<(), Refusal> {
    let email = check_email(email)?;
    let snap = app.snapshot();
    let now = time::now();
    let now_text = time::format_rfc3339(now);
    let hour_ago = time::format_rfc3339(now - chrono::Duration::hours(1));
    let mut tx = app.store.begin().await?;
    if subscriptions::count_request(&mut tx, &hashed("client", &client.to_string()), &now_text, &hour_ago).await?
        > PER_CLIENT_PER_HOUR
    {
        return Err(Refusal::TooMany);
    }
    let limited =
        subscriptions::count_request(&mut tx, &hashed("address", &email.to_lowercase()), &now_text, &hour_ago).await?
            > PER_ADDRESS_PER_HOUR;
    if !limited && !subscriptions::confirmed_of(&mut tx, &email).await?.is_empty() {
        let key = secret(&mut tx, true).await?.unwrap_or_default();
        let expires = (now + chrono::Duration::hours(MANAGE_HOURS)).timestamp();
        let token = manage_token(&key, &email, expires);
        let ctx = context! {
            lang => lang,
            site => v(&snap.data.area_name),
            manage_url => page_url(app, lang, &format!("{MANAGE_PATH}/{token}")),
            hours => MANAGE_HOURS,
        };
        let mail = Message {
            id: hex::encode(auth::random_bytes::<16>()),
            channel: EMAIL.into(),
            recipient: email.clone(),
            subject: i18n::tf(lang, "mail.manage_subject", &[("site", snap.data.area_name.clone())]),
            body_text: render::render_template("mail/manage.txt", ctx.clone())?,
            body_html: render::render_template("mail/manage.html", ctx)?,
            unsubscribe_url: String::new(),
            attempts: 0,
        };
        outbox::enqueue(&mut tx, &mail, &now_text).await?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(())
}

/// The token of a link to an address's subscriptions: expiry, the address, and an HMAC of both.
fn manage_token(key: &[u8], email: &str, expires: i64) -> String {
    use base64::Engine as _;
    let address = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(email);
    format!("{expires}.{address}.{}", mac(key, &format!("manage {expires} {email}")))
}

/// One subscription on the list, with the address its button posts to.
#[derive(Serialize)]
pub struct Listed {
    pub scope: String,
    pub since: String,
    pub unsubscribe_path: String,
}

/// The subscriptions a manage link shows; `None` when the link is wrong or ran out.
pub async fn subscriptions_of_link(app: &App, token: &str) -> Result<Option<Vec<Listed>>> {
    use base64::Engine as _;
    let mut parts = token.splitn(3, '.');
    let (Some(expires), Some(address), Some(given)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let Ok(expires) = expires.parse::<i64>() else { return Ok(None) };
    let Some(email) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(address).ok().and_then(|b| String::from_utf8(b).ok())
    else {
        return Ok(None);
    };
    if expires < time::now().timestamp() {
        return Ok(None);
    }
    let mut c = app.store.read().await?;
    let Some(key) = secret(&mut c, false).await? else { return Ok(None) };
    if !auth::constant_time_eq(&mac(&key, &format!("manage {expires} {email}")), given) {
        return Ok(None);
    }
    let snap = app.snapshot();
    let listed = subscriptions::confirmed_of(&mut c, &email)
        .await?
        .into_iter()
        .map(|s| Listed {
            scope: scope_words(&snap, &s.lang, &scope_of(&s)),
            since: s.confirmed_at.clone(),
            unsubscribe_path: unsubscribe_path(&unsubscribe_token(&key, &s.id)),
        })
        .collect();
    Ok(Some(listed))
}

/// What a confirmation or unsubscribe link leads to.
pub struct Found {
    pub subscription: Subscription,
    /// "Fahrzeugzulassung in Menden", in the subscription's language.
    pub scope: String,
}

pub async fn find_by_confirm_token(app: &App, token: &str) -> Result<Option<Found>> {
    let mut c = app.store.read().await?;
    let found = subscriptions::by_confirm_token(&mut c, &auth::token_hash(token)).await?;
    let now = time::now_rfc3339();
    Ok(found.filter(|s| s.confirmed || s.expires_at >= now).map(|s| found_of(app, s)))
}

pub async fn find_by_unsubscribe_token(app: &App, token: &str) -> Result<Option<Found>> {
    let mut c = app.store.read().await?;
    let Some(id) = unsubscribe_id(&mut c, token).await? else { return Ok(None) };
    let found = subscriptions::by_id(&mut c, &id).await?;
    Ok(found.map(|s| found_of(app, s)))
}

/// The key of the unsubscribe links' HMAC, made on first use.
async fn secret(c: &mut sqlx::AnyConnection, create: bool) -> Result<Option<Vec<u8>>> {
    if let Some(hex_key) = crate::store::get_meta(c, "notify_secret").await? {
        return Ok(hex::decode(hex_key).ok());
    }
    if !create {
        return Ok(None);
    }
    let key = auth::random_bytes::<32>();
    crate::store::set_meta(c, "notify_secret", &hex::encode(key)).await?;
    Ok(Some(key.to_vec()))
}

fn mac(key: &[u8], id: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    m.update(format!("unsubscribe {id}").as_bytes());
    hex::encode(&m.finalize().into_bytes()[..16])
}

/// The token of a subscription's unsubscribe link: its id and the HMAC of it.
fn unsubscribe_token(key: &[u8], id: &str) -> String {
    format!("{id}.{}", mac(key, id))
}

/// The subscription id an unsubscribe token names, if its HMAC is right.
async fn unsubscribe_id(c: &mut sqlx::AnyConnection, token: &str) -> Result<Option<String>> {
    let Some((id, given)) = token.split_once('.') else { return Ok(None) };
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let Some(key) = secret(c, false).await? else { return Ok(None) };
    Ok(auth::constant_time_eq(&mac(&key, id), given).then(|| id.to_string()))
}

fn found_of(app: &App, subscription: Subscription) -> Found {
    let scope = scope_words(&app.snapshot(), &subscription.lang, &scope_of(&subscription));
    Found { subscription, scope }
}

/// Confirms the subscription of a confirmation link; `false` when the link is unknown or ran out.
pub async fn confirm(app: &App, token: &str) -> Result<bool> {
    let mut tx = app.store.begin().await?;
    let Some(s) = subscriptions::by_confirm_token(&mut tx, &auth::token_hash(token)).await? else { return Ok(false) };
    let now = time::now_rfc3339();
    if !s.confirmed && s.expires_at < now {
        return Ok(false);
    }
    subscriptions::confirm(&mut tx, &s.id, &now).await?;
    tx.commit().await?;
    tracing::info!(subscription = %s.id, "subscription confirmed");
    Ok(true)
}

/// Ends the subscription of an unsubscribe link at once; `false` when there is none (any more).
pub async fn unsubscribe(app: &App, token: &str) -> Result<bool> {
    let mut tx = app.store.begin().await?;
    let Some(id) = unsubscribe_id(&mut tx, token).await? else { return Ok(false) };
    let Some(s) = subscriptions::by_id(&mut tx, &id).await? else { return Ok(false) };
    subscriptions::delete(&mut tx, &s.id).await?;
    tx.commit().await?;
    tracing::info!(subscription = %s.id, "subscription ended");
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// The notifier: journal → outbox

/// The availability of one service in one town as subscribers are told it: level and expected
/// return; `None` for normal operation without a date.
fn told_state(snap: &Snapshot, m: &Municipality, s: &Service) -> Option<(String, String)> {
    let a = snap.availability(m, s);
    let expected = a.statement.map(|st| st.expected_return.clone()).unwrap_or_default();
    let expected =
        if expected.is_empty() && a.level != Level::Normal { snap.details(m, s, &a).expected_return } else { expected };
    (a.level != Level::Normal || !expected.is_empty()).then(|| (a.level.as_str().to_string(), expected))
}

/// Every service in every town whose availability is worth telling (not normal, or with a date).
fn current_states(snap: &Snapshot) -> outbox::Told {
    let mut out = outbox::Told::new();
    for m in snap.data.municipalities.iter() {
        for s in snap.data.services.iter() {
            if let Some(state) = told_state(snap, m, s) {
                out.insert((m.ags.clone(), s.slug.clone()), state);
            }
        }
    }
    out
}

/// One service in one town whose availability changed.
#[derive(Clone, Debug)]
struct Change {
    ags: String,
    service: String,
}

fn in_scope(sub: &Subscription, snap: &Snapshot, ags: &str, service: &Service) -> bool {
    (sub.municipality_ags.is_empty() || sub.municipality_ags == ags)
        && (sub.service_slug.is_empty() || sub.service_slug == service.slug)
        && (sub.area.is_empty() || sub.area == service.area)
        && snap.municipality_by_ags(ags).is_some()
}

/// Whether an announcement is about what a subscription covers.
fn announcement_in_scope(sub: &Subscription, snap: &Snapshot, a: &Announcement) -> bool {
    let town = snap.municipality_by_ags(&sub.municipality_ags);
    match a.scope_kind {
        ScopeKind::Area => true,
        ScopeKind::District => town.is_none_or(|m| m.district_ags == a.scope_ref),
        ScopeKind::Municipality => town.is_none_or(|m| m.ags == a.scope_ref),
        ScopeKind::Service => {
            sub.service_slug == a.scope_ref
                || (sub.service_slug.is_empty()
                    && snap.service(&a.scope_ref).is_some_and(|s| sub.area.is_empty() || s.area == sub.area))
        }
    }
}

/// Looks for changes to tell: when the oldest unhandled journal entry is `window` old, or an
/// announcement's scheduled time has come, writes a mail for every subscription with changes in
/// its scope, the webhooks' messages, what subscribers have now been told, and the new cursor.
/// Returns how many mails it queued.
pub async fn notify_once(app: &App, window: Duration) -> Result<usize> {
    let snap = app.snapshot();
    let engine = app.store.engine();
    let public = public_announcements(&snap);
    // Nothing new (the usual case): a read, no write lock.
    {
        let mut c = app.store.read().await?;
        if outbox::cursor(&mut c, CURSOR).await?.is_some_and(|cursor| cursor >= snap.journal_seq)
            && outbox::told_announcements(&mut c).await? == public
        {
            return Ok(0);
        }
    }
    let mut tx = app.store.begin().await?;
    let cursor = outbox::lock_cursor(&mut tx, engine, CURSOR).await?;
    let announcements_known = outbox::cursor(&mut tx, ANNOUNCEMENTS_CURSOR).await?.is_some();
    let Some(cursor) = cursor.filter(|_| announcements_known) else {
        // The first start (or the first since announcements were recorded): what is now is what
        // everybody knows; only later changes are news.
        if cursor.is_none() {
            for ((ags, service), (level, expected)) in current_states(&snap) {
                outbox::set_told(&mut tx, &ags, &service, Some((&level, &expected))).await?;
            }
            outbox::set_cursor(&mut tx, CURSOR, snap.journal_seq).await?;
        }
        for (id, version) in &public {
            outbox::set_told_announcement(&mut tx, id, Some(*version)).await?;
        }
        outbox::set_cursor(&mut tx, ANNOUNCEMENTS_CURSOR, 0).await?;
        tx.commit().await?;
        return Ok(0);
    };
    let told_announcements = outbox::told_announcements(&mut tx).await?;
    if cursor >= snap.journal_seq && told_announcements == public {
        return Ok(0);
    }
    let mut events = Vec::new();
    let mut from = cursor;
    while from < snap.journal_seq {
        let page = journal::events_since(&mut tx, from, 1000).await?;
        let Some(last) = page.last() else { break };
        from = last.seq;
        let full = page.len() == 1000;
        events.extend(page.into_iter().filter(|e| e.seq <= snap.journal_seq));
        if !full {
            break;
        }
    }
    // A burst is over when its first change is `window` old. An announcement whose scheduled
    // time came has no change of its own to wait for.
    let now = time::now();
    if let Some(first) = events.first().and_then(|e| time::parse_rfc3339(&e.at))
        && now - first < chrono::Duration::from_std(window).unwrap_or_default()
    {
        return Ok(0);
    }

    let told = outbox::told(&mut tx).await?;
    let current = current_states(&snap);
    let mut changes: Vec<Change> = Vec::new();
    for key in told.keys().chain(current.keys().filter(|k| !told.contains_key(*k))) {
        if told.get(key) != current.get(key) {
            changes.push(Change { ags: key.0.clone(), service: key.1.clone() });
        }
    }
    changes.sort_by(|a, b| (&a.ags, &a.service).cmp(&(&b.ags, &b.service)));
    let news = announcement_news(&snap, &public, &told_announcements, &events);
    // Mails tell of what is public now; a withdrawal is for the webhooks only.
    let announcements: Vec<&Announcement> = news
        .iter()
        .filter(|(kind, _)| *kind != "announcement.withdrawn")
        .filter_map(|(_, a)| snap.announcement(&a.id))
        .collect();
    // Ids are stable per subscription and batch: the journal position and, since a scheduled
    // announcement can come due without a journal entry, the announcement versions it tells.
    let batch = std::iter::once(snap.journal_seq.to_string())
        .chain(news.iter().map(|(kind, a)| format!("{kind}/{}/{}", a.id, a.version)))
        .collect::<Vec<_>>()
        .join(",");

    let key = if changes.is_empty() && announcements.is_empty() {
        None
    } else {
        Some(secret(&mut tx, true).await?.unwrap_or_default())
    };
    tx.commit().await?;

    // The mails page by page of subscribers, each page's written in its own short transaction,
    // so that a fan-out to many never holds the database's write lock for long nor every
    // subscriber in memory. A crash part-way repeats the batch, and the mails already queued are
    // not queued again.
    let now_text = time::format_rfc3339(now);
    let mut queued = 0;
    let mut after = String::new();
    while let Some(key) = &key {
        let page = {
            let mut c = app.store.read().await?;
            subscriptions::confirmed_after(&mut c, &after, FAN_OUT_CHUNK).await?
        };
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        let mails = crate::read::snapshot::cpu_bound(|| -> Result<Vec<Message>> {
            let mut mails = Vec::new();
            for sub in &page {
                let mine: Vec<&Change> = changes
                    .iter()
                    .filter(|c| snap.service(&c.service).is_some_and(|s| in_scope(sub, &snap, &c.ags, s)))
                    .collect();
                let news: Vec<&Announcement> =
                    announcements.iter().copied().filter(|a| announcement_in_scope(sub, &snap, a)).collect();
                if mine.is_empty() && news.is_empty() {
                    continue;
                }
                let token = unsubscribe_token(key, &sub.id);
                mails.push(changes_mail(app, &snap, sub, &mine, &news, &token, &batch)?);
            }
            Ok(mails)
        })?;
        let mut tx = app.store.begin().await?;
        for mail in &mails {
            outbox::enqueue(&mut tx, mail, &now_text).await?;
        }
        tx.commit().await?;
        queued += mails.len();
        if page.len() < FAN_OUT_CHUNK {
            break;
        }
    }

    // Last, the webhooks, what subscribers have now been told, and the cursor: unless another
    // instance finished this batch meanwhile (its messages had the same ids).
    let mut tx = app.store.begin().await?;
    if outbox::lock_cursor(&mut tx, engine, CURSOR).await? != Some(cursor)
        || outbox::told_announcements(&mut tx).await? != told_announcements
    {
        return Ok(0);
    }
    let mut items: Vec<webhooks::Item> = changes
        .iter()
        .filter_map(|c| {
            let m = snap.municipality_by_ags(&c.ags)?;
            let s = snap.service(&c.service)?;
            Some(webhooks::availability_item(
                &snap,
                &app.public_url,
                m,
                s,
                told.get(&(c.ags.clone(), c.service.clone())),
            ))
        })
        .collect();
    items.extend(news.iter().map(|(kind, a)| webhooks::announcement_item(&app.public_url, kind, a)));
    let hooks = webhooks::fan_out(&mut tx, &items, &batch, &now_text).await?;
    for change in &changes {
        let state = current.get(&(change.ags.clone(), change.service.clone()));
        outbox::set_told(&mut tx, &change.ags, &change.service, state.map(|(l, e)| (l.as_str(), e.as_str()))).await?;
    }
    for (kind, a) in &news {
        let version = (*kind != "announcement.withdrawn").then_some(a.version);
        outbox::set_told_announcement(&mut tx, &a.id, version).await?;
    }
    // Told but gone without a trace (no withdrawal found): no longer told either.
    for id in
        told_announcements.keys().filter(|id| !public.contains_key(*id) && !news.iter().any(|(_, a)| &a.id == *id))
    {
        outbox::set_told_announcement(&mut tx, id, None).await?;
    }
    outbox::set_cursor(&mut tx, CURSOR, snap.journal_seq).await?;
    tx.commit().await?;
    if queued > 0 || hooks > 0 || !changes.is_empty() || !news.is_empty() {
        tracing::info!(
            changes = changes.len(),
            announcements = news.len(),
            mails = queued,
            webhooks = hooks,
            "notifications queued"
        );
    }
    Ok(queued)
}

/// The notifier's marker that it records the announcements it told of (`notify_announcements`).
const ANNOUNCEMENTS_CURSOR: &str = "email-announcements";

/// The public announcements and their versions.
fn public_announcements(snap: &Snapshot) -> HashMap<String, i64> {
    snap.published_announcements().map(|a| (a.id.clone(), a.version)).collect()
}

/// What is news about announcements, oldest first: published (public and not told of before),
/// corrected (public in a newer version than told) and withdrawn (told of and no longer public;
/// its last state from the data if it went back to being a draft, or from its withdrawal in
/// `events`).
fn announcement_news(
    snap: &Snapshot,
    public: &HashMap<String, i64>,
    told: &HashMap<String, i64>,
    events: &[journal::StoredEvent],
) -> Vec<(&'static str, AnnouncementState)> {
    let mut news: Vec<(&'static str, AnnouncementState)> = Vec::new();
    for a in snap.published_announcements() {
        let kind = match told.get(&a.id) {
            None => "announcement.published",
            Some(&version) if version != a.version => "announcement.corrected",
            Some(_) => continue,
        };
        news.push((kind, AnnouncementState::of(a)));
    }
    news.reverse();
    let mut gone: Vec<&String> = told.keys().filter(|id| !public.contains_key(*id)).collect();
    gone.sort();
    for id in gone {
        let state = snap.data.announcements.iter().find(|a| a.id == *id).map(AnnouncementState::of).or_else(|| {
            events.iter().rev().find_map(|e| match &e.event {
                Event::AnnouncementWithdrawn { announcement } if announcement.id == *id => Some(announcement.clone()),
                _ => None,
            })
        });
        if let Some(state) = state {
            news.push(("announcement.withdrawn", state));
        }
    }
    news
}

/// One change as a mail shows it.
#[derive(Serialize)]
struct ChangeView {
    service: String,
    town: String,
    level: &'static str,
    level_text: String,
    expected_return: String,
    restrictions: String,
    workaround: String,
    url: String,
    back: bool,
    alternatives: Vec<String>,
}

#[derive(Serialize)]
struct AnnouncementView {
    title: String,
    url: String,
}

#[derive(Serialize)]
struct ContactView {
    town: String,
    lines: Vec<String>,
}

fn changes_mail(
    app: &App,
    snap: &Snapshot,
    sub: &Subscription,
    changes: &[&Change],
    news: &[&Announcement],
    unsubscribe: &str,
    batch: &str,
) -> Result<Message> {
    let lang: &str = i18n::find(&sub.lang).map_or(i18n::DEFAULT_LANG, |l| &l.code);
    let mut contacts: BTreeMap<String, ContactView> = BTreeMap::new();
    let views: Vec<ChangeView> = changes
        .iter()
        .filter_map(|c| {
            let m = snap.municipality_by_ags(&c.ags)?;
            let s = snap.service(&c.service)?;
            let a = snap.availability(m, s);
            let d = snap.details(m, s, &a);
            let back = a.level == Level::Normal;
            if !back {
                let lines: Vec<String> =
                    [&m.contact.phone, &m.contact.email, &m.contact.website, &m.contact.emergency_website]
                        .into_iter()
                        .filter(|l| !l.is_empty())
                        .cloned()
                        .collect();
                if !lines.is_empty() {
                    contacts.insert(m.ags.clone(), ContactView { town: m.name.clone(), lines });
                }
            }
            Some(ChangeView {
                service: s.name.clone(),
                town: m.name.clone(),
                level: a.level.as_str(),
                level_text: i18n::t(lang, &format!("level.{}", a.level.as_str())),
                expected_return: if d.expected_return.is_empty() || back {
                    String::new()
                } else {
                    crate::i18n::expected_return(lang, &d.expected_return)
                },
                restrictions: if back { String::new() } else { d.restrictions.clone() },
                workaround: if back { String::new() } else { d.workaround.clone() },
                url: page_url(app, lang, &format!("/kommunen/{}/leistungen/{}", m.slug, s.slug)),
                back,
                alternatives: if back {
                    Vec::new()
                } else {
                    snap.alternatives(m, s)
                        .iter()
                        .map(|alt| {
                            i18n::tf(
                                lang,
                                "mail.alternative",
                                &[("office", alt.office.name.clone()), ("km", render::km(lang, alt.distance_km))],
                            )
                        })
                        .collect()
                },
            })
        })
        .collect();
    let news: Vec<AnnouncementView> = news
        .iter()
        .map(|a| AnnouncementView { title: a.title.clone(), url: page_url(app, lang, &format!("/meldungen/{}", a.id)) })
        .collect();
    let unsubscribe_url = format!("{}{}", app.public_url, render::lang_url(lang, &unsubscribe_path(unsubscribe)));
    let scope = scope_words(snap, lang, &scope_of(sub));
    let ctx = context! {
        lang => lang,
        site => v(&snap.data.area_name),
        scope => scope,
        manage_url => page_url(app, lang, MANAGE_PATH),
        changes => v(&views),
        news => v(&news),
        contacts => v(contacts.into_values().collect::<Vec<_>>()),
        unsubscribe_url => unsubscribe_url.clone(),
    };
    let subject = match (views.as_slice(), news.as_slice()) {
        ([one], []) => i18n::tf(
            lang,
            "mail.changes_subject_one",
            &[("service", one.service.clone()), ("town", one.town.clone()), ("level", one.level_text.clone())],
        ),
        ([], [one]) => one.title.clone(),
        _ => i18n::tf(lang, "mail.changes_subject", &[("scope", scope_words(snap, lang, &scope_of(sub)))]),
    };
    // Stable per subscription and batch: a retry after a crash is the same message.
    let id = hex::encode(&sha2::Sha256::digest(format!("{}:{batch}", sub.id).as_bytes())[..16]);
    Ok(Message {
        id,
        channel: EMAIL.into(),
        recipient: sub.email.clone(),
        subject,
        body_text: render::render_template("mail/changes.txt", ctx.clone())?,
        body_html: render::render_template("mail/changes.html", ctx)?,
        unsubscribe_url,
        attempts: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// Running in the server

/// What `serve` is told about mail.
#[derive(Clone)]
pub struct Settings {
    /// `None`: no SMTP server; mails wait in the outbox.
    pub mailer: Option<mail::Mailer>,
    pub window: Duration,
    /// Webhooks may target private, loopback and link-local addresses (tests, closed networks).
    pub allow_private_webhooks: bool,
}

/// Starts the notifier and the mailer in the background.
pub fn start(app: crate::read::live::Shared, settings: Settings) {
    {
        let mut status = app.notifications.lock().unwrap_or_else(|e| e.into_inner());
        status.smtp_configured = settings.mailer.is_some();
        status.allow_private_webhooks = settings.allow_private_webhooks;
    }
    let notifier = app.clone();
    let window = settings.window;
    tokio::spawn(async move {
        let mut failures = 0u32;
        let mut counted = std::time::Instant::now() - COUNT_EVERY;
        let mut expired = std::time::Instant::now() - EXPIRE_EVERY;
        loop {
            if counted.elapsed() >= COUNT_EVERY {
                counted = std::time::Instant::now();
                if let Err(e) = count_waiting(&notifier).await {
                    tracing::warn!(error = %format!("{e:#}"), "counting the outbox failed");
                }
            }
            // A round of its own task: should it panic (a template that does not render), the
            // notifier logs it and tries again instead of ending for good.
            let round = notifier.clone();
            let outcome = tokio::spawn(async move { notify_once(&round, window).await })
                .await
                .unwrap_or_else(|panic| Err(anyhow::anyhow!("the notifier's round panicked: {panic}")));
            let pause = match outcome {
                Ok(_) => {
                    failures = 0;
                    Duration::from_millis(500)
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %format!("{e:#}"), "notifying failed; trying again");
                    backoff(failures)
                }
            };
            if expired.elapsed() >= EXPIRE_EVERY {
                expired = std::time::Instant::now();
                if let Err(e) = expire(&notifier).await {
                    tracing::warn!(error = %format!("{e:#}"), "deleting expired subscriptions failed");
                }
            }
            tokio::time::sleep(pause).await;
        }
    });
    tokio::spawn(webhooks::deliver_forever(app.clone()));
    if let Some(mailer) = settings.mailer {
        for _ in 0..mail::WORKERS {
            tokio::spawn(mail::deliver_forever(app.clone(), mailer.clone()));
        }
    } else {
        tracing::warn!("no SMTP server (--smtp-url): mails wait in the outbox");
    }
}

/// How often unconfirmed subscriptions past their 72 hours are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// How often the outbox is counted for `/healthz` and the log.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Counts what waits in the outbox; logs the metric line `outbox waiting` when it changed.
async fn count_waiting(app: &App) -> Result<()> {
    let (counts, _) = outbox_counts(app).await?;
    let waiting = waiting(&counts);
    let mut status = app.notifications.lock().unwrap_or_else(|e| e.into_inner());
    if status.waiting != waiting {
        for (channel, n) in &waiting {
            tracing::info!(channel = %channel, waiting = n, "outbox waiting");
        }
        status.waiting = waiting;
    }
    Ok(())
}

async fn expire(app: &App) -> Result<()> {
    let mut tx = app.store.begin().await?;
    let gone = subscriptions::delete_expired(&mut tx, &time::now_rfc3339()).await?;
    tx.commit().await?;
    if gone > 0 {
        tracing::info!(deleted = gone, "unconfirmed subscriptions expired");
    }
    Ok(())
}

/// Runs `round` for as long as the server runs: again at once while it finds work (it returns
/// how much it did), after 200 ms when there was none, after a growing pause when it failed.
pub(crate) async fn drain_forever<F, Fut>(what: &str, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let mut failures = 0;
    loop {
        match round().await {
            Ok(0) => {
                failures = 0;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %format!("{e:#}"), "delivering {what} failed; trying again");
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

/// Doubling from one second up to five minutes, with up to 20 % jitter.
pub fn backoff(failures: u32) -> Duration {
    time::backoff(Duration::from_secs(1), failures, Duration::from_secs(300))
}

/// The outbox as the desk shows it.
pub async fn outbox_counts(app: &App) -> Result<(Vec<outbox::Counts>, (i64, i64))> {
    let mut c = app.store.read().await?;
    Ok((outbox::counts(&mut c).await?, subscriptions::counts(&mut c).await?))
}

/// How many messages of each kind wait, for the metric line.
pub fn waiting(counts: &[outbox::Counts]) -> std::collections::BTreeMap<String, i64> {
    counts.iter().map(|c| (c.channel.clone(), c.pending + c.retrying)).collect()
}
