//! Idempotency keys of the write API: a key is claimed (status 0) before the write acts, settled with the
//! answer in the write's own transaction (`record_answer_with_write`), and forgotten
//! after a while. The rules (what a reused or abandoned key means) are in `http::api::editing`.

use anyhow::Result;
use sqlx::{AnyConnection, Row};

/// A key as stored: `status` 0 while its request is still running.
pub struct StoredKey {
    pub request_hash: String,
    pub status: i64,
    pub response: String,
    pub created_at: String,
}

/// Forgets keys created before `before` (RFC 3339).
pub async fn forget_before(c: &mut AnyConnection, before: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(before).execute(&mut *c).await?;
    Ok(())
}

/// Claims a new key; false when the principal has used it before.
pub async fn claim(c: &mut AnyConnection, principal: &str, key: &str, request_hash: &str, now: &str) -> Result<bool> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (principal, key, request_hash, status, response, created_at)
         VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (principal, key) DO NOTHING",
    )
    .bind(principal)
    .bind(key)
    .bind(request_hash)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

pub async fn stored(c: &mut AnyConnection, principal: &str, key: &str) -> Result<StoredKey> {
    let row = sqlx::query(
        "SELECT request_hash, status, response, created_at FROM idempotency_keys WHERE principal = $1 AND key = $2",
    )
    .bind(principal)
    .bind(key)
    .fetch_one(&mut *c)
    .await?;
    Ok(StoredKey {
        request_hash: row.try_get(0)?,
        status: row.try_get(1)?,
        response: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

/// Takes over an abandoned claim: it counts from `now`.
pub async fn renew_claim(c: &mut AnyConnection, principal: &str, key: &str, now: &str) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET created_at = $1 WHERE principal = $2 AND key = $3")
        .bind(now)
        .bind(principal)
        .bind(key)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Stores the answer as it was sent.
pub async fn store_answer(
    c: &mut AnyConnection,
    principal: &str,
    key: &str,
    status: u16,
    response: &str,
) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET status = $1, response = $2 WHERE principal = $3 AND key = $4")
        .bind(status as i64)
        .bind(response)
        .bind(principal)
        .bind(key)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Releases a claim whose request changed nothing (never one a write settled).
pub async fn release_unsettled(c: &mut AnyConnection, principal: &str, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND status = 0")
        .bind(principal)
        .bind(key)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Stores the answer of a write under its claimed key, in the write's transaction. False when
/// the claim is gone or was settled by another request (the write must then be rolled back).
pub async fn record_answer_with_write(
    c: &mut AnyConnection,
    principal: &str,
    key: &str,
    request_hash: &str,
    status: u16,
    response: &str,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE idempotency_keys SET status = $1, response = $2
         WHERE principal = $3 AND key = $4 AND request_hash = $5 AND status = 0",
    )
    .bind(status as i64)
    .bind(response)
    .bind(principal)
    .bind(key)
    .bind(request_hash)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(n == 1)
}
