//! Registered webhooks and the log of their delivery attempts. The messages themselves wait in
//! the outbox (channel `webhook`, recipient the webhook's id).

use anyhow::Result;
use sqlx::{AnyConnection, Row};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Webhook {
    pub id: String,
    pub owner_id: i64,
    pub owner_name: String,
    pub url: String,
    /// Town AGS; empty: every town.
    pub municipalities: Vec<String>,
    /// Service slugs; empty: every service.
    pub services: Vec<String>,
    /// Event types; empty: every type.
    pub events: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    /// `active`, `paused` (failing for about a day) or `disabled` (answered 410 Gone).
    pub state: String,
    pub created_at: String,
    pub state_reason: String,
    /// Whom to tell by mail when it is paused or disabled; empty: the desk only.
    pub contact_email: String,
}

fn list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn row_to_webhook(r: &sqlx::any::AnyRow) -> Result<Webhook> {
    Ok(Webhook {
        id: r.try_get("id")?,
        owner_id: r.try_get("owner_id")?,
        owner_name: r.try_get("owner_name")?,
        url: r.try_get("url")?,
        municipalities: list(&r.try_get::<String, _>("municipalities")?),
        services: list(&r.try_get::<String, _>("services")?),
        events: list(&r.try_get::<String, _>("events")?),
        secret: r.try_get("secret")?,
        state: r.try_get("state")?,
        created_at: r.try_get("created_at")?,
        state_reason: r.try_get("state_reason")?,
        contact_email: r.try_get("contact_email")?,
    })
}

pub async fn insert(c: &mut AnyConnection, w: &Webhook) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhooks (id, owner_id, owner_name, url, municipalities, services, events, secret, state, created_at,
         contact_email) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10)",
    )
    .bind(&w.id)
    .bind(w.owner_id)
    .bind(&w.owner_name)
    .bind(&w.url)
    .bind(serde_json::to_string(&w.municipalities)?)
    .bind(serde_json::to_string(&w.services)?)
    .bind(serde_json::to_string(&w.events)?)
    .bind(&w.secret)
    .bind(&w.created_at)
    .bind(&w.contact_email)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Every webhook, oldest first.
pub async fn all(c: &mut AnyConnection) -> Result<Vec<Webhook>> {
    let rows = sqlx::query("SELECT * FROM webhooks ORDER BY created_at, id").fetch_all(&mut *c).await?;
    rows.iter().map(row_to_webhook).collect()
}

pub async fn get(c: &mut AnyConnection, id: &str) -> Result<Option<Webhook>> {
    let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1").bind(id).fetch_optional(&mut *c).await?;
    row.as_ref().map(row_to_webhook).transpose()
}

pub async fn delete(c: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&mut *c).await?;
    sqlx::query("DELETE FROM webhook_attempts WHERE webhook_id = $1").bind(id).execute(&mut *c).await?;
    Ok(())
}

pub async fn set_state(c: &mut AnyConnection, id: &str, state: &str, reason: &str) -> Result<()> {
    sqlx::query("UPDATE webhooks SET state = $1, state_reason = $2 WHERE id = $3")
        .bind(state)
        .bind(reason)
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// One delivery attempt as the log shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attempt {
    pub message_id: String,
    pub at: String,
    /// The HTTP status the receiver answered; 0 when there was no answer.
    pub status: i64,
    pub error: String,
    pub duration_ms: i64,
}

pub async fn record_attempt(c: &mut AnyConnection, webhook_id: &str, a: &Attempt) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_attempts (message_id, webhook_id, at, status, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&a.message_id)
    .bind(webhook_id)
    .bind(&a.at)
    .bind(a.status)
    .bind(&a.error)
    .bind(a.duration_ms)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The latest attempts of a webhook, newest first.
pub async fn attempts(c: &mut AnyConnection, webhook_id: &str, limit: i64) -> Result<Vec<Attempt>> {
    let rows = sqlx::query(
        "SELECT message_id, at, status, error, duration_ms FROM webhook_attempts WHERE webhook_id = $1
         ORDER BY at DESC LIMIT $2",
    )
    .bind(webhook_id)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Attempt {
                message_id: r.try_get(0)?,
                at: r.try_get(1)?,
                status: r.try_get(2)?,
                error: r.try_get(3)?,
                duration_ms: r.try_get(4)?,
            })
        })
        .collect()
}
