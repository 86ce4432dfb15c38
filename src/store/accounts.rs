//! Storage of accounts: users and their scopes, setup links, recovery codes, sign-in failures,
//! sessions and API tokens. Secrets are stored only as hashes (`auth::token_hash`); what the
//! rules are (lockout, second factor, a token never above its user) is in `auth`.

use anyhow::{Context, Result, bail};
use sqlx::{AnyConnection, Row};

use crate::auth::{
    ApiToken, LOCK_AFTER_FAILURES, LOCK_MINUTES, SESSION_HOURS, SESSION_IDLE_MINUTES, Session, User, base32_encode,
    check_totp, now_unix, random_bytes, random_token, token_hash, valid_username, weaker,
};
use crate::domain::authz::{Principal, Role};
use crate::domain::time;

async fn load_scopes(c: &mut AnyConnection, user_id: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT ags FROM user_scopes WHERE user_id = $1 ORDER BY ags")
        .bind(user_id)
        .fetch_all(&mut *c)
        .await?)
}

fn row_to_user(row: &sqlx::any::AnyRow) -> Result<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        role: Role::parse(&role).with_context(|| format!("unknown role {role}"))?,
        password_hash: row.try_get("password_hash")?,
        totp_secret: row.try_get("totp_secret")?,
        demo: row.try_get::<i64, _>("demo")? != 0,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        failed_logins: row.try_get("failed_logins")?,
        locked_until: row.try_get("locked_until")?,
        scopes: Vec::new(),
    })
}

/// The user a row describes, with the scopes stored beside it.
async fn user_with_scopes(c: &mut AnyConnection, row: Option<sqlx::any::AnyRow>) -> Result<Option<User>> {
    let Some(row) = row else { return Ok(None) };
    let mut u = row_to_user(&row)?;
    u.scopes = load_scopes(c, u.id).await?;
    Ok(Some(u))
}

pub async fn user_by_name(c: &mut AnyConnection, username: &str) -> Result<Option<User>> {
    let row = sqlx::query("SELECT * FROM users WHERE username = $1").bind(username).fetch_optional(&mut *c).await?;
    user_with_scopes(c, row).await
}

pub async fn user_by_id(c: &mut AnyConnection, id: i64) -> Result<Option<User>> {
    let row = sqlx::query("SELECT * FROM users WHERE id = $1").bind(id).fetch_optional(&mut *c).await?;
    user_with_scopes(c, row).await
}

pub async fn all_users(c: &mut AnyConnection) -> Result<Vec<User>> {
    let rows = sqlx::query("SELECT * FROM users ORDER BY username").fetch_all(&mut *c).await?;
    let mut users = Vec::new();
    for row in rows {
        users.extend(user_with_scopes(c, Some(row)).await?);
    }
    Ok(users)
}

/// Creates an account without password; returns its id. The caller journals it.
pub async fn insert_user(
    c: &mut AnyConnection,
    username: &str,
    display_name: &str,
    role: Role,
    scopes: &[String],
) -> Result<i64> {
    if !valid_username(username) {
        bail!("invalid user name {username:?}: 2–64 characters a-z, 0-9, '.', '-', '_'");
    }
    if user_by_name(c, username).await?.is_some() {
        bail!("the user {username} exists already");
    }
    let id = crate::store::next_id(c, "users").await?;
    sqlx::query("INSERT INTO users (id, username, display_name, role, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(username)
        .bind(display_name)
        .bind(role.as_str())
        .bind(time::now_rfc3339())
        .execute(&mut *c)
        .await?;
    set_scopes(c, id, scopes).await?;
    Ok(id)
}

pub async fn set_scopes(c: &mut AnyConnection, user_id: i64, scopes: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM user_scopes WHERE user_id = $1").bind(user_id).execute(&mut *c).await?;
    for ags in scopes {
        sqlx::query("INSERT INTO user_scopes (user_id, ags) VALUES ($1, $2)")
            .bind(user_id)
            .bind(ags)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// A one-time link to set the password and enrol the second factor, valid for three days.
pub async fn issue_setup_token(c: &mut AnyConnection, user_id: i64) -> Result<String> {
    let token = random_token();
    let expires = time::format_rfc3339(chrono::Utc::now() + chrono::Duration::days(3));
    sqlx::query("UPDATE users SET setup_token_hash = $1, setup_expires_at = $2 WHERE id = $3")
        .bind(token_hash(&token))
        .bind(expires)
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    Ok(token)
}

pub async fn user_by_setup_token(c: &mut AnyConnection, token: &str) -> Result<Option<User>> {
    if token.is_empty() || token.len() > 100 {
        return Ok(None);
    }
    let id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE setup_token_hash = $1 AND setup_expires_at > $2")
            .bind(token_hash(token))
            .bind(time::now_rfc3339())
            .fetch_optional(&mut *c)
            .await?;
    match id {
        Some(id) => user_by_id(c, id).await,
        None => Ok(None),
    }
}

/// Finishes the setup: password and second factor together; the link is used up.
pub async fn complete_setup(
    c: &mut AnyConnection,
    user_id: i64,
    password_hash: &str,
    totp_secret: &str,
    step: u64,
) -> Result<()> {
    sqlx::query(
        "UPDATE users SET password_hash = $1, totp_secret = $2, totp_last_step = $3, setup_token_hash = '',
         setup_expires_at = '', failed_logins = 0, locked_until = '' WHERE id = $4",
    )
    .bind(password_hash)
    .bind(totp_secret)
    .bind(step as i64)
    .bind(user_id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// New recovery codes (shown once), replacing the old ones.
pub async fn new_recovery_codes(c: &mut AnyConnection, user_id: i64) -> Result<Vec<String>> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *c).await?;
    let mut codes = Vec::new();
    for _ in 0..10 {
        let raw = base32_encode(&random_bytes::<5>()).to_lowercase();
        let code = format!("{}-{}", &raw[..4], &raw[4..8]);
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user_id)
            .bind(token_hash(&code))
            .execute(&mut *c)
            .await?;
        codes.push(code);
    }
    Ok(codes)
}

/// Uses up a recovery code; true if it was valid and unused.
pub async fn use_recovery_code(c: &mut AnyConnection, user_id: i64, code: &str) -> Result<bool> {
    let code = code.trim().to_lowercase();
    let n =
        sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at = ''")
            .bind(time::now_rfc3339())
            .bind(user_id)
            .bind(token_hash(&code))
            .execute(&mut *c)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// Accepts a TOTP code once: a replayed code of an already used step is refused.
pub async fn accept_totp(c: &mut AnyConnection, user: &User, code: &str) -> Result<bool> {
    let Some(step) = check_totp(&user.totp_secret, code, now_unix()) else { return Ok(false) };
    let n = sqlx::query("UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1")
        .bind(step as i64)
        .bind(user.id)
        .execute(&mut *c)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Failures (and attempts still being checked) from `address` within the lock window.
pub async fn recent_failures_from(c: &mut AnyConnection, address: &str) -> Result<i64> {
    let since = time::format_rfc3339(chrono::Utc::now() - chrono::Duration::minutes(LOCK_MINUTES));
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM login_failures WHERE address = $1 AND at > $2")
        .bind(address)
        .bind(since)
        .fetch_one(&mut *c)
        .await?)
}

/// Claims a row for a sign-in attempt from `address` before its password is checked; returns
/// the claim's id. Commit it before counting: every attempt then counts all claims committed
/// before its own, so of any number of parallel attempts at most the limit get past the count.
/// The claim stays as the failure if the attempt fails; `release_attempt` removes it otherwise.
pub async fn claim_attempt(c: &mut AnyConnection, address: &str) -> Result<String> {
    let attempt = random_token();
    sqlx::query("INSERT INTO login_failures (address, at, attempt) VALUES ($1, $2, $3)")
        .bind(address)
        .bind(time::now_rfc3339())
        .bind(&attempt)
        .execute(&mut *c)
        .await?;
    Ok(attempt)
}

/// Removes the claim of an attempt that turned out not to be a failure (signed in, or refused
/// because the address was blocked already, which does not prolong the block).
pub async fn release_attempt(c: &mut AnyConnection, attempt: &str) -> Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE attempt = $1").bind(attempt).execute(&mut *c).await?;
    Ok(())
}

/// Records a failure from `address` outside a claimed attempt (a wrong second factor).
pub async fn record_address_failure(c: &mut AnyConnection, address: &str) -> Result<()> {
    sqlx::query("INSERT INTO login_failures (address, at) VALUES ($1, $2)")
        .bind(address)
        .bind(time::now_rfc3339())
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Counts a failed sign-in of a user in one statement (never from a `User` read earlier, which
/// parallel attempts would overwrite); every LOCK_AFTER_FAILURES-th failure locks the account
/// for LOCK_MINUTES. Returns true when this failure locked it (a burst worth journaling).
pub async fn record_user_failure(c: &mut AnyConnection, user_id: i64) -> Result<bool> {
    let until = time::format_rfc3339(chrono::Utc::now() + chrono::Duration::minutes(LOCK_MINUTES));
    let failures: i64 = sqlx::query_scalar(
        "UPDATE users SET failed_logins = failed_logins + 1,
         locked_until = CASE WHEN (failed_logins + 1) % $1 = 0 THEN $2 ELSE locked_until END
         WHERE id = $3 RETURNING failed_logins",
    )
    .bind(LOCK_AFTER_FAILURES)
    .bind(until)
    .bind(user_id)
    .fetch_one(&mut *c)
    .await?;
    Ok(failures % LOCK_AFTER_FAILURES == 0)
}

/// Clears the failures of a user who just proved a factor, in one statement that only matches
/// while the account is still as it was checked: not disabled, not locked, same password and
/// second-factor secret. False means it changed meanwhile (a parallel attempt locked it, an
/// admin reset or disabled it): the sign-in must fail, and no lock is lifted by a stale check.
pub async fn clear_failures_if_usable(c: &mut AnyConnection, user: &User) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE users SET failed_logins = 0, locked_until = ''
         WHERE id = $1 AND disabled = 0 AND password_hash = $2 AND totp_secret = $3 AND locked_until <= $4",
    )
    .bind(user.id)
    .bind(&user.password_hash)
    .bind(&user.totp_secret)
    .bind(time::now_rfc3339())
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Starts a session; returns the cookie value (the only place the raw id exists).
pub async fn create_session(c: &mut AnyConnection, user_id: i64, second_factor: bool) -> Result<String> {
    let id = random_token();
    let now = chrono::Utc::now();
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, second_factor, created_at, expires_at, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $5)",
    )
    .bind(token_hash(&id))
    .bind(user_id)
    .bind(random_token())
    .bind(second_factor as i64)
    .bind(time::format_rfc3339(now))
    .bind(time::format_rfc3339(now + chrono::Duration::hours(SESSION_HOURS)))
    .execute(&mut *c)
    .await?;
    Ok(id)
}

/// How stale `last_seen_at` may get before a page load records it (idle sessions expire after
/// SESSION_IDLE_MINUTES, so a minute's precision is plenty).
const SESSION_TOUCH_SECONDS: i64 = 60;

/// Records that a session was seen now; in a write transaction of its own, after the read.
pub async fn touch_session(store: &crate::store::Store, session: &Session) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
        .bind(time::now_rfc3339())
        .bind(&session.id_hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The session behind a cookie, read on `c` (a read transaction is enough: nothing is written;
/// see `Session::needs_touch`).
pub async fn session(c: &mut AnyConnection, cookie_value: &str) -> Result<Option<Session>> {
    if cookie_value.is_empty() || cookie_value.len() > 100 {
        return Ok(None);
    }
    let now = chrono::Utc::now();
    let idle_since = time::format_rfc3339(now - chrono::Duration::minutes(SESSION_IDLE_MINUTES));
    let hash = token_hash(cookie_value);
    let row = sqlx::query(
        "SELECT id_hash, user_id, csrf_token, second_factor, last_seen_at FROM sessions
         WHERE id_hash = $1 AND expires_at > $2 AND last_seen_at > $3",
    )
    .bind(&hash)
    .bind(time::format_rfc3339(now))
    .bind(idle_since)
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let last_seen: String = row.try_get(4)?;
    // Only a session idle for a while is written to: a page load within a minute of the last
    // one is a pure read and never waits for the write lock.
    let needs_touch = last_seen < time::format_rfc3339(now - chrono::Duration::seconds(SESSION_TOUCH_SECONDS));
    Ok(Some(Session {
        needs_touch,
        id_hash: row.try_get(0)?,
        user_id: row.try_get(1)?,
        csrf_token: row.try_get(2)?,
        second_factor: row.try_get::<i64, _>(3)? != 0,
    }))
}

/// The session gains the second factor under a new id (and CSRF token): the half-signed-in
/// one is deleted, so a cookie that was known before (planted, or seen on the way) is worthless
/// afterwards. Returns the new cookie value, or None if the old session is gone or had it already.
pub async fn promote_session(c: &mut AnyConnection, id_hash: &str) -> Result<Option<String>> {
    let user_id: Option<i64> =
        sqlx::query_scalar("DELETE FROM sessions WHERE id_hash = $1 AND second_factor = 0 RETURNING user_id")
            .bind(id_hash)
            .fetch_optional(&mut *c)
            .await?;
    match user_id {
        Some(user_id) => Ok(Some(create_session(c, user_id, true).await?)),
        None => Ok(None),
    }
}

pub async fn end_session(c: &mut AnyConnection, id_hash: &str) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash).execute(&mut *c).await?;
    Ok(())
}

/// "Sign out everywhere".
pub async fn end_all_sessions(c: &mut AnyConnection, user_id: i64) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *c).await?;
    Ok(())
}

/// Creates a token; returns (id, secret). The secret is shown once and stored only hashed.
pub async fn create_token(
    c: &mut AnyConnection,
    user_id: i64,
    name: &str,
    role: Role,
    scopes: &[String],
    expires_at: &str,
) -> Result<(i64, String)> {
    let secret = format!("nb_{}", random_token());
    let id = crate::store::next_id(c, "api_tokens").await?;
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, user_id, role, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(token_hash(&secret))
    .bind(name)
    .bind(user_id)
    .bind(role.as_str())
    .bind(time::now_rfc3339())
    .bind(expires_at)
    .execute(&mut *c)
    .await?;
    for ags in scopes {
        sqlx::query("INSERT INTO api_token_scopes (token_id, ags) VALUES ($1, $2)")
            .bind(id)
            .bind(ags)
            .execute(&mut *c)
            .await?;
    }
    Ok((id, secret))
}

fn row_to_token(row: &sqlx::any::AnyRow) -> Result<ApiToken> {
    let role: String = row.try_get("role")?;
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        user_id: row.try_get("user_id")?,
        role: Role::parse(&role).context("token role")?,
        scopes: Vec::new(),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub async fn tokens(c: &mut AnyConnection, user_id: Option<i64>) -> Result<Vec<ApiToken>> {
    let rows = sqlx::query("SELECT * FROM api_tokens WHERE ($1 = 0 OR user_id = $1) ORDER BY id")
        .bind(user_id.unwrap_or(0))
        .fetch_all(&mut *c)
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let mut t = row_to_token(&row)?;
        t.scopes = sqlx::query_scalar("SELECT ags FROM api_token_scopes WHERE token_id = $1 ORDER BY ags")
            .bind(t.id)
            .fetch_all(&mut *c)
            .await?;
        out.push(t);
    }
    Ok(out)
}

pub async fn revoke_token(c: &mut AnyConnection, id: i64) -> Result<bool> {
    let n = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at = ''")
        .bind(time::now_rfc3339())
        .bind(id)
        .execute(&mut *c)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// The principal behind a bearer token, if it is valid, unrevoked, unexpired and its user active.
/// A token never carries more than its user has now.
pub async fn principal_for_token(c: &mut AnyConnection, secret: &str) -> Result<Option<Principal>> {
    if !secret.starts_with("nb_") || secret.len() > 100 {
        return Ok(None);
    }
    let now = time::now_rfc3339();
    let Some(row) = sqlx::query(
        "SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at = '' AND (expires_at = '' OR expires_at > $2)",
    )
    .bind(token_hash(secret))
    .bind(&now)
    .fetch_optional(&mut *c)
    .await?
    else {
        return Ok(None);
    };
    let token = row_to_token(&row)?;
    let Some(user) = user_by_id(c, token.user_id).await? else { return Ok(None) };
    if user.disabled {
        return Ok(None);
    }
    let token_scopes: Vec<String> = sqlx::query_scalar("SELECT ags FROM api_token_scopes WHERE token_id = $1")
        .bind(token.id)
        .fetch_all(&mut *c)
        .await?;
    // The weaker of token and user: a token made by an admin for an editor role stays an editor.
    let role = weaker(token.role, user.role);
    let scopes = if role == Role::Editor {
        let user_scopes = if user.role == Role::Editor { Some(&user.scopes) } else { None };
        token_scopes.into_iter().filter(|s| user_scopes.is_none_or(|u| u.contains(s))).collect()
    } else {
        Vec::new()
    };
    Ok(Some(Principal { user_id: user.id, name: format!("token:{}", token.name), role, scopes }))
}

/// Makes a demo account: a known password and no second factor (only demo accounts may skip it).
pub async fn make_demo_account(c: &mut AnyConnection, user_id: i64, password_hash: &str) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = $1, demo = 1 WHERE id = $2")
        .bind(password_hash)
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Keeps the second-factor secret offered during setup until the setup is completed.
pub async fn set_pending_totp_secret(c: &mut AnyConnection, user_id: i64, secret: &str) -> Result<()> {
    sqlx::query("UPDATE users SET totp_secret = $1 WHERE id = $2").bind(secret).bind(user_id).execute(&mut *c).await?;
    Ok(())
}
