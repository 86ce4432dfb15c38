//! Who is acting: accounts, passwords (argon2id), second factors (TOTP, RFC 6238; recovery
//! codes), server-side sessions and API tokens. What they may do is decided in `authz`.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::time;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The provider's administrators: everything.
    Admin,
    /// The provider's crisis team: recovery work and area-wide announcements.
    Operator,
    /// A town's (or district's) press or citizens' office: only their scope.
    Editor,
    /// Crisis staff and auditors: read the internal pages and the journal.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Editor, Role::Viewer];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The one who acts: a signed-in user or an API token, with the scope it carries.
#[derive(Clone, Debug, Serialize)]
pub struct Principal {
    pub user_id: i64,
    /// Shown in the journal: the user name, or `token:<name>` for API tokens.
    pub name: String,
    pub role: Role,
    /// AGS of the towns and districts an editor may change.
    pub scopes: Vec<String>,
}

impl Principal {
    /// The command line acts with full rights, journaled as `cli`.
    pub fn cli() -> Principal {
        Principal { user_id: 0, name: "cli".into(), role: Role::Admin, scopes: Vec::new() }
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    buf
}

/// A random token for URLs and cookies: 32 bytes, base64url.
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Tokens are stored only as SHA-256; they are long and random, so no salt or slow hash is needed.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// Passwords

pub const MIN_PASSWORD_CHARS: usize = 12;

pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::PasswordHasher;
    let hash =
        argon2::Argon2::default().hash_password(password.as_bytes()).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    Ok(hash.to_string())
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    match argon2::password_hash::phc::PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spends the same time as a real check, so an unknown user name is not revealed by timing.
pub fn verify_password_dummy(password: &str) {
    use std::sync::OnceLock;
    static DUMMY: OnceLock<String> = OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("not a real password at all").unwrap());
    let _ = verify_password(hash, password);
}

/// Why a new password is not good enough, as a message key; `None` when it is.
pub fn password_problem(username: &str, password: &str) -> Option<&'static str> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Some("auth.password_too_short");
    }
    if password.chars().count() > 200 {
        return Some("auth.password_too_long");
    }
    if password.to_lowercase().contains(&username.to_lowercase()) {
        return Some("auth.password_contains_name");
    }
    None
}

// ---------------------------------------------------------------------------------------------
// TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps, one step of clock skew either way)

pub fn new_totp_secret() -> String {
    base32_encode(&random_bytes::<20>())
}

fn base32_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for &b in bytes {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

fn totp(secret_base32: &str) -> Option<totp_rs::Totp> {
    let secret = base32_decode(secret_base32)?;
    totp_rs::Builder::new().with_secret(secret).build().ok()
}

/// The time step a valid code belongs to, if `code` is valid now.
pub fn check_totp(secret_base32: &str, code: &str, now_unix: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    totp(secret_base32)?.check(&code, now_unix)
}

/// The current code (tests).
#[cfg(test)]
pub fn current_totp(secret_base32: &str, now_unix: u64) -> String {
    totp(secret_base32).map(|t| t.generate(now_unix).to_string()).unwrap_or_default()
}

/// The `otpauth://` address authenticator apps read from the QR code.
pub fn otpauth_url(issuer: &str, username: &str, secret_base32: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(issuer),
        enc(username),
        secret_base32,
        enc(issuer)
    )
}

/// The enrolment QR code as inline SVG (no script, no external image).
pub fn qr_svg(data: &str) -> String {
    match qrcode::QrCode::new(data.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build()
            .replacen("<?xml version=\"1.0\" standalone=\"yes\"?>", "", 1),
        Err(_) => String::new(),
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Users

#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub password_hash: String,
    pub totp_secret: String,
    pub demo: bool,
    pub disabled: bool,
    pub failed_logins: i64,
    pub locked_until: String,
    pub scopes: Vec<String>,
}

impl User {
    pub fn principal(&self) -> Principal {
        Principal { user_id: self.id, name: self.username.clone(), role: self.role, scopes: self.scopes.clone() }
    }
    /// Demo accounts may skip the second factor; every other account must have one.
    pub fn needs_second_factor(&self) -> bool {
        !self.demo
    }
}

pub fn valid_username(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_')
}

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

// ---------------------------------------------------------------------------------------------
// Sign-in throttling

/// After this many failures in a row an account is locked for LOCK_MINUTES.
pub const LOCK_AFTER_FAILURES: i64 = 5;
pub const LOCK_MINUTES: i64 = 15;
/// Failures from one address within the window before it is refused outright.
pub const ADDRESS_FAILURE_LIMIT: i64 = 20;

pub async fn recent_failures_from(c: &mut AnyConnection, address: &str) -> Result<i64> {
    let since = time::format_rfc3339(chrono::Utc::now() - chrono::Duration::minutes(LOCK_MINUTES));
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM login_failures WHERE address = $1 AND at > $2")
        .bind(address)
        .bind(since)
        .fetch_one(&mut *c)
        .await?)
}

/// Records a failed attempt; returns true when this failure locked the account (a burst worth journaling).
pub async fn record_failure(c: &mut AnyConnection, address: &str, user: Option<&User>) -> Result<bool> {
    sqlx::query("INSERT INTO login_failures (address, at) VALUES ($1, $2)")
        .bind(address)
        .bind(time::now_rfc3339())
        .execute(&mut *c)
        .await?;
    let Some(user) = user else { return Ok(false) };
    let failures = user.failed_logins + 1;
    let lock = failures % LOCK_AFTER_FAILURES == 0;
    let locked_until = if lock {
        time::format_rfc3339(chrono::Utc::now() + chrono::Duration::minutes(LOCK_MINUTES))
    } else {
        user.locked_until.clone()
    };
    sqlx::query("UPDATE users SET failed_logins = $1, locked_until = $2 WHERE id = $3")
        .bind(failures)
        .bind(locked_until)
        .bind(user.id)
        .execute(&mut *c)
        .await?;
    Ok(lock)
}

pub async fn clear_failures(c: &mut AnyConnection, user_id: i64) -> Result<()> {
    sqlx::query("UPDATE users SET failed_logins = 0, locked_until = '' WHERE id = $1")
        .bind(user_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub fn is_locked(user: &User) -> bool {
    !user.locked_until.is_empty() && user.locked_until > time::now_rfc3339()
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// Absolute lifetime of a session; a shift, not a week.
pub const SESSION_HOURS: i64 = 12;
/// A session unused this long ends.
pub const SESSION_IDLE_MINUTES: i64 = 120;

#[derive(Clone, Debug)]
pub struct Session {
    pub id_hash: String,
    pub user_id: i64,
    pub csrf_token: String,
    pub second_factor: bool,
    /// `last_seen_at` is older than SESSION_TOUCH_SECONDS: record the visit with `touch_session`.
    pub needs_touch: bool,
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

pub async fn mark_second_factor(c: &mut AnyConnection, id_hash: &str) -> Result<()> {
    sqlx::query("UPDATE sessions SET second_factor = 1 WHERE id_hash = $1").bind(id_hash).execute(&mut *c).await?;
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// API tokens

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub user_id: i64,
    pub role: Role,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: String,
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

fn rank(r: Role) -> u8 {
    match r {
        Role::Admin => 3,
        Role::Operator => 2,
        Role::Editor => 1,
        Role::Viewer => 0,
    }
}

/// The role with fewer rights. Operator and editor are not ordered in scope, so an operator
/// token of an editor is an editor.
pub fn weaker(a: Role, b: Role) -> Role {
    if rank(a) <= rank(b) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery staple"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("garbage", "x"));
        assert_eq!(password_problem("anna", "kurz"), Some("auth.password_too_short"));
        assert_eq!(password_problem("anna", "anna-ist-mein-passwort"), Some("auth.password_contains_name"));
        assert_eq!(password_problem("anna", "ein ganz langes Passwort"), None);
    }

    #[test]
    fn totp_matches_rfc_6238_test_vectors() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", 8 digits there; we use 6 (the last six).
        let secret = base32_encode(b"12345678901234567890");
        assert_eq!(secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(current_totp(&secret, 59), "287082");
        assert_eq!(current_totp(&secret, 1111111109), "081804");
        assert_eq!(current_totp(&secret, 2000000000), "279037");
        assert!(check_totp(&secret, "287082", 59).is_some());
        assert!(check_totp(&secret, "287 082", 59 + 30).is_some(), "one step of skew, spaces ignored");
        assert!(check_totp(&secret, "287082", 59 + 90).is_none());
        assert!(check_totp(&secret, "abc", 59).is_none());
        assert_eq!(base32_decode(&secret).unwrap(), b"12345678901234567890");
    }

    #[test]
    fn enrolment_qr_code_is_inline_svg() {
        let url = otpauth_url("Notbetrieb Südwestfalen", "anna", "GEZDGNBV");
        assert!(url.starts_with("otpauth://totp/Notbetrieb%20S%C3%BCdwestfalen:anna?secret=GEZDGNBV"));
        let svg = qr_svg(&url);
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn tokens_never_carry_more_than_their_user() {
        assert_eq!(weaker(Role::Admin, Role::Editor), Role::Editor);
        assert_eq!(weaker(Role::Viewer, Role::Admin), Role::Viewer);
        assert_eq!(weaker(Role::Operator, Role::Editor), Role::Editor);
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
