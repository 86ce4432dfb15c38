//! E-mail subscriptions: pending until confirmed (double opt-in), found by the hashes of their
//! tokens, never by address from outside. The rules (what may be subscribed, rate limits, what is
//! mailed) are in `notify`.

use anyhow::Result;
use sqlx::{AnyConnection, Row};

/// One subscription as stored.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub id: String,
    pub email: String,
    pub lang: String,
    /// A town's AGS, or empty: every town.
    pub municipality_ags: String,
    /// A service's slug, or empty: every service (of `area`, if given).
    pub service_slug: String,
    /// A service area, or empty: every area.
    pub area: String,
    pub confirmed: bool,
    pub created_at: String,
    pub expires_at: String,
    pub confirmed_at: String,
    pub consent_version: String,
    pub consent_text: String,
}

fn row_to_subscription(r: &sqlx::any::AnyRow) -> Result<Subscription> {
    Ok(Subscription {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        lang: r.try_get("lang")?,
        municipality_ags: r.try_get("municipality_ags")?,
        service_slug: r.try_get("service_slug")?,
        area: r.try_get("area")?,
        confirmed: r.try_get::<i64, _>("confirmed")? != 0,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        confirmed_at: r.try_get("confirmed_at")?,
        consent_version: r.try_get("consent_version")?,
        consent_text: r.try_get("consent_text")?,
    })
}

/// What a new (pending) subscription stores besides its scope.
pub struct NewSubscription<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub lang: &'a str,
    pub municipality_ags: &'a str,
    pub service_slug: &'a str,
    pub area: &'a str,
    pub confirm_token_hash: &'a str,
    pub now: &'a str,
    pub expires_at: &'a str,
    pub consent_version: &'a str,
    pub consent_text: &'a str,
    pub client_hash: &'a str,
}

pub async fn insert(c: &mut AnyConnection, s: &NewSubscription<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO subscriptions (id, email, lang, municipality_ags, service_slug, area, confirmed,
         confirm_token_hash, created_at, expires_at, consent_version, consent_text, client_hash)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $11, $12)",
    )
    .bind(s.id)
    .bind(s.email)
    .bind(s.lang)
    .bind(s.municipality_ags)
    .bind(s.service_slug)
    .bind(s.area)
    .bind(s.confirm_token_hash)
    .bind(s.now)
    .bind(s.expires_at)
    .bind(s.consent_version)
    .bind(s.consent_text)
    .bind(s.client_hash)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The subscription of an address with exactly this scope, if there is one.
pub async fn with_scope(
    c: &mut AnyConnection,
    email: &str,
    municipality_ags: &str,
    service_slug: &str,
    area: &str,
) -> Result<Option<Subscription>> {
    let row = sqlx::query(
        "SELECT * FROM subscriptions WHERE email = $1 AND municipality_ags = $2 AND service_slug = $3 AND area = $4",
    )
    .bind(email)
    .bind(municipality_ags)
    .bind(service_slug)
    .bind(area)
    .fetch_optional(&mut *c)
    .await?;
    row.as_ref().map(row_to_subscription).transpose()
}

/// Every confirmed subscription of an address, oldest first.
pub async fn confirmed_of(c: &mut AnyConnection, email: &str) -> Result<Vec<Subscription>> {
    let rows = sqlx::query("SELECT * FROM subscriptions WHERE email = $1 AND confirmed = 1 ORDER BY created_at, id")
        .bind(email)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(row_to_subscription).collect()
}

/// A pending subscription is asked again: a new confirmation token and a new expiry.
pub async fn renew_pending(c: &mut AnyConnection, id: &str, confirm_token_hash: &str, expires_at: &str) -> Result<()> {
    sqlx::query("UPDATE subscriptions SET confirm_token_hash = $1, expires_at = $2 WHERE id = $3 AND confirmed = 0")
        .bind(confirm_token_hash)
        .bind(expires_at)
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The subscription a confirmation link is for (pending or not yet expired).
pub async fn by_confirm_token(c: &mut AnyConnection, token_hash: &str) -> Result<Option<Subscription>> {
    let row = sqlx::query("SELECT * FROM subscriptions WHERE confirm_token_hash = $1")
        .bind(token_hash)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(row_to_subscription).transpose()
}

pub async fn by_id(c: &mut AnyConnection, id: &str) -> Result<Option<Subscription>> {
    let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1").bind(id).fetch_optional(&mut *c).await?;
    row.as_ref().map(row_to_subscription).transpose()
}

pub async fn confirm(c: &mut AnyConnection, id: &str, now: &str) -> Result<()> {
    sqlx::query("UPDATE subscriptions SET confirmed = 1, confirmed_at = $1 WHERE id = $2 AND confirmed = 0")
        .bind(now)
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn delete(c: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM subscriptions WHERE id = $1").bind(id).execute(&mut *c).await?;
    Ok(())
}

/// Deletes pending subscriptions whose confirmation time ran out; how many.
pub async fn delete_expired(c: &mut AnyConnection, now: &str) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM subscriptions WHERE confirmed = 0 AND expires_at < $1")
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected())
}

/// Every confirmed subscription, in a stable order (the notifier matches them to changes).
/// Up to `limit` confirmed subscriptions with ids after `after`, in id order: a fan-out reads
/// them page by page, so that it never holds every subscriber in memory at once.
pub async fn confirmed_after(c: &mut AnyConnection, after: &str, limit: usize) -> Result<Vec<Subscription>> {
    let rows = sqlx::query("SELECT * FROM subscriptions WHERE confirmed = 1 AND id > $1 ORDER BY id LIMIT $2")
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(row_to_subscription).collect()
}

/// How many subscriptions there are: (confirmed, pending).
pub async fn counts(c: &mut AnyConnection) -> Result<(i64, i64)> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(CASE WHEN confirmed = 1 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN confirmed = 0 THEN 1 ELSE 0 END), 0) FROM subscriptions",
    )
    .fetch_one(&mut *c)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Records a subscription request under `key_hash` and says how many there were since `since`
/// (this one included).
pub async fn count_request(c: &mut AnyConnection, key_hash: &str, now: &str, since: &str) -> Result<i64> {
    sqlx::query("DELETE FROM subscription_requests WHERE at < $1").bind(since).execute(&mut *c).await?;
    sqlx::query("INSERT INTO subscription_requests (key_hash, at) VALUES ($1, $2)")
        .bind(key_hash)
        .bind(now)
        .execute(&mut *c)
        .await?;
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM subscription_requests WHERE key_hash = $1 AND at >= $2")
        .bind(key_hash)
        .bind(since)
        .fetch_one(&mut *c)
        .await?)
}
