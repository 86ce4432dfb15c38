//! The outbox: every message to deliver, written in the transaction that causes it, claimed and
//! settled by the delivery worker (`notify`). Also the notifier's place in the journal and the
//! availabilities subscribers were last told.

use anyhow::Result;
use sqlx::{AnyConnection, Row};

use super::Engine;

/// A message to deliver. `id` is its idempotency key (a mail's Message-ID).
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub id: String,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    /// The one-click unsubscribe address (RFC 8058), empty for mails that have none.
    pub unsubscribe_url: String,
    pub attempts: i64,
}

/// Queues a message; a message with the same id is already queued and stays as it is.
pub async fn enqueue(c: &mut AnyConnection, m: &Message, now: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (id, channel, recipient, subject, body_text, body_html, unsubscribe_url, state,
         attempts, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&m.id)
    .bind(&m.channel)
    .bind(&m.recipient)
    .bind(&m.subject)
    .bind(&m.body_text)
    .bind(&m.body_html)
    .bind(&m.unsubscribe_url)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Claims up to `limit` due messages of `channel` until `until`: no other worker takes them
/// meanwhile. On PostgreSQL rows another instance is claiming are skipped, not waited for; on
/// SQLite the write lock does the same.
pub async fn claim_due(
    c: &mut AnyConnection,
    engine: Engine,
    channel: &str,
    now: &str,
    until: &str,
    limit: i64,
) -> Result<Vec<Message>> {
    let sql = match engine {
        Engine::Postgres => {
            "UPDATE outbox SET claimed_until = $1 WHERE id IN (
               SELECT id FROM outbox WHERE state = 'pending' AND channel = $2 AND next_attempt_at <= $3
               AND claimed_until < $3 ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING id, channel, recipient, subject, body_text, body_html, unsubscribe_url, attempts"
        }
        Engine::Sqlite => {
            "UPDATE outbox SET claimed_until = $1 WHERE id IN (
               SELECT id FROM outbox WHERE state = 'pending' AND channel = $2 AND next_attempt_at <= $3
               AND claimed_until < $3 ORDER BY next_attempt_at, id LIMIT $4)
             RETURNING id, channel, recipient, subject, body_text, body_html, unsubscribe_url, attempts"
        }
    };
    let rows = sqlx::query(sql).bind(until).bind(channel).bind(now).bind(limit).fetch_all(&mut *c).await?;
    rows.iter()
        .map(|r| {
            Ok(Message {
                id: r.try_get(0)?,
                channel: r.try_get(1)?,
                recipient: r.try_get(2)?,
                subject: r.try_get(3)?,
                body_text: r.try_get(4)?,
                body_html: r.try_get(5)?,
                unsubscribe_url: r.try_get(6)?,
                attempts: r.try_get(7)?,
            })
        })
        .collect()
}

pub async fn delivered(c: &mut AnyConnection, id: &str, now: &str) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET state = 'delivered', delivered_at = $1, attempts = attempts + 1, claimed_until = '',
         last_error = '' WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// A failed attempt: tried again at `next_attempt_at`, or given up (`failed`) when that is `None`.
pub async fn attempt_failed(c: &mut AnyConnection, id: &str, error: &str, next_attempt_at: Option<&str>) -> Result<()> {
    let (state, next) = match next_attempt_at {
        Some(at) => ("pending", at),
        None => ("failed", ""),
    };
    sqlx::query(
        "UPDATE outbox SET state = $1, next_attempt_at = CASE WHEN $2 = '' THEN next_attempt_at ELSE $2 END,
         attempts = attempts + 1, claimed_until = '', last_error = $3 WHERE id = $4",
    )
    .bind(state)
    .bind(next)
    .bind(error)
    .bind(id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The outbox at a glance, per channel and state.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub channel: String,
    pub pending: i64,
    /// Pending after at least one failed attempt.
    pub retrying: i64,
    pub failed: i64,
    pub delivered: i64,
    /// When the oldest pending message was queued, empty when none is.
    pub oldest_pending: String,
}

pub async fn counts(c: &mut AnyConnection) -> Result<Vec<Counts>> {
    let rows = sqlx::query(
        "SELECT channel,
           COALESCE(SUM(CASE WHEN state = 'pending' AND attempts = 0 THEN 1 ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN state = 'pending' AND attempts > 0 THEN 1 ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0),
           COALESCE(SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END), 0),
           COALESCE(MIN(CASE WHEN state = 'pending' THEN created_at END), '')
         FROM outbox GROUP BY channel ORDER BY channel",
    )
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Counts {
                channel: r.try_get(0)?,
                pending: r.try_get(1)?,
                retrying: r.try_get(2)?,
                failed: r.try_get(3)?,
                delivered: r.try_get(4)?,
                oldest_pending: r.try_get(5)?,
            })
        })
        .collect()
}

/// The last journal entry the notifier `name` has handled (0: none).
pub async fn cursor(c: &mut AnyConnection, name: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT seq FROM notify_cursor WHERE name = $1").bind(name).fetch_optional(&mut *c).await?)
}

/// Locks the cursor row for this transaction (PostgreSQL; SQLite's write lock is held already):
/// one instance fans out a batch, another waits and then sees the advanced cursor.
pub async fn lock_cursor(c: &mut AnyConnection, engine: Engine, name: &str) -> Result<Option<i64>> {
    if engine == Engine::Postgres {
        Ok(sqlx::query_scalar("SELECT seq FROM notify_cursor WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *c)
            .await?)
    } else {
        cursor(c, name).await
    }
}

pub async fn set_cursor(c: &mut AnyConnection, name: &str, seq: i64) -> Result<()> {
    sqlx::query("INSERT INTO notify_cursor (name, seq) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET seq = $2")
        .bind(name)
        .bind(seq)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// An availability as subscribers were last told: (town AGS, service slug) → (level, expected return).
pub type Told = std::collections::HashMap<(String, String), (String, String)>;

pub async fn told(c: &mut AnyConnection) -> Result<Told> {
    let rows = sqlx::query("SELECT municipality_ags, service_slug, level, expected_return FROM notify_state")
        .fetch_all(&mut *c)
        .await?;
    let mut out = Told::new();
    for r in &rows {
        out.insert((r.try_get(0)?, r.try_get(1)?), (r.try_get(2)?, r.try_get(3)?));
    }
    Ok(out)
}

/// Records what subscribers are now told about one service in one town; `None`: normal operation
/// without a date (no row).
pub async fn set_told(c: &mut AnyConnection, ags: &str, service: &str, state: Option<(&str, &str)>) -> Result<()> {
    match state {
        None => {
            sqlx::query("DELETE FROM notify_state WHERE municipality_ags = $1 AND service_slug = $2")
                .bind(ags)
                .bind(service)
                .execute(&mut *c)
                .await?;
        }
        Some((level, expected_return)) => {
            sqlx::query(
                "INSERT INTO notify_state (municipality_ags, service_slug, level, expected_return) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (municipality_ags, service_slug) DO UPDATE SET level = $3, expected_return = $4",
            )
            .bind(ags)
            .bind(service)
            .bind(level)
            .bind(expected_return)
            .execute(&mut *c)
            .await?;
        }
    }
    Ok(())
}

/// The announcements subscribers and webhooks were last told of: id → version.
pub async fn told_announcements(c: &mut AnyConnection) -> Result<std::collections::HashMap<String, i64>> {
    let rows = sqlx::query("SELECT id, version FROM notify_announcements").fetch_all(&mut *c).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// Records the version of an announcement subscribers are now told of; `None`: not public.
pub async fn set_told_announcement(c: &mut AnyConnection, id: &str, version: Option<i64>) -> Result<()> {
    match version {
        None => sqlx::query("DELETE FROM notify_announcements WHERE id = $1").bind(id).execute(&mut *c).await?,
        Some(version) => {
            sqlx::query(
                "INSERT INTO notify_announcements (id, version) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET version = $2",
            )
            .bind(id)
            .bind(version)
            .execute(&mut *c)
            .await?
        }
    };
    Ok(())
}
