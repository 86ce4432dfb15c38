//! Who is acting: accounts, passwords (argon2id), second factors (TOTP, RFC 6238; recovery
//! codes), server-side sessions and API tokens. What they may do is decided in `authz`.

use anyhow::Result;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::authz::{Principal, Role};
use crate::domain::time;

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

pub fn base32_encode(bytes: &[u8]) -> String {
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

// ---------------------------------------------------------------------------------------------
// Sign-in throttling

/// After this many failures in a row an account is locked for LOCK_MINUTES.
pub const LOCK_AFTER_FAILURES: i64 = 5;
pub const LOCK_MINUTES: i64 = 15;
/// Failures from one address within the window before it is refused outright.
pub const ADDRESS_FAILURE_LIMIT: i64 = 20;

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
