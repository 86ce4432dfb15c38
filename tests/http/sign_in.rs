//! Sign-in limits under parallel attempts and behind a proxy, and the session id: every failed
//! attempt counts (password and second factor alike), a lock set meanwhile holds, a slow
//! password check holds up no write, an address's limit holds for parallel attempts and is per
//! client behind a trusted proxy only, and a session gets a new id when it gains a factor.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;
use sqlx::Row;

use crate::{Answer, Engine, Server, Session, TestDatabase, element_text, form_encode, input_value, on_both_engines};
use crate::{totp, unix_now};

on_both_engines!(
    parallel_wrong_passwords_all_count_and_lock,
    parallel_wrong_codes_all_count_and_lock,
    a_lock_set_during_a_slow_password_check_holds,
    a_slow_password_check_holds_up_no_write,
    parallel_attempts_from_one_address_stay_within_its_limit_whatever_they_forward,
    behind_a_trusted_proxy_each_client_has_its_own_limit,
    the_session_gets_a_new_id_with_the_second_factor_and_at_sign_in,
);

const RIGHT: &str = "demo-menden-passwort";

/// A direct connection to the server's database, to look at what the HTTP side cannot show.
async fn database(s: &Server) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = match s.db.url.strip_prefix("sqlite:") {
        Some(path) => format!("sqlite://{path}"),
        None => s.db.url.clone(),
    };
    sqlx::AnyConnection::connect(&url).await.unwrap()
}

/// (failed_logins, locked_until) of an account.
async fn failures_of(s: &Server, username: &str) -> (i64, String) {
    let row = sqlx::query("SELECT failed_logins, locked_until FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(&mut database(s).await)
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The sign-in form's token (its cookie is kept by the session).
async fn form_token(b: &Session<'_>) -> String {
    input_value(&b.get("/intern/anmelden").await.body, "form").expect("sign-in form token")
}

/// A password sign-in with the form token from `form_token`, optionally as forwarded by a proxy.
async fn sign_in(b: &Session<'_>, form: &str, forwarded_for: Option<&str>, username: &str, password: &str) -> Answer {
    let mut req = b
        .request(Method::POST, "/intern/anmelden")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(&[("username", username), ("password", password), ("form", form)]));
    if let Some(address) = forwarded_for {
        req = req.header("x-forwarded-for", address);
    }
    b.send(req).await
}

/// An account with a second factor, set up from its one-time link; returns the TOTP secret.
/// The setup used the current step, so the next valid code is the one of the next step.
async fn totp_account(s: &Server, username: &str, password: &str) -> String {
    let out = s.command(&["user", "add", username, "--role", "editor", "--scope", "05962040"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let link = stdout.lines().find(|l| l.contains("/intern/einrichten/")).unwrap();
    let path = &link[link.find("/intern/einrichten/").unwrap()..];
    let b = Session::new(s);
    let setup = b.get(path).await;
    let secret = element_text(&setup.body, "totp-secret");
    let form = input_value(&setup.body, "form").unwrap();
    let code = totp(&secret, unix_now());
    let done =
        b.post(path, &[("password", password), ("password_again", password), ("code", &code), ("form", &form)]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    secret
}

async fn parallel_wrong_passwords_all_count_and_lock(engine: Engine) {
    let s = Server::demo(engine).await;
    let b = Session::new(&s);
    let form = form_token(&b).await;
    let answers = join_all((0..9).map(|_| sign_in(&b, &form, None, "menden", "falsches-passwort"))).await;
    assert!(answers.iter().all(|a| a.status == 401), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    let (failures, locked_until) = failures_of(&s, "menden").await;
    assert_eq!(failures, 9, "every parallel failure is counted");
    assert!(!locked_until.is_empty(), "five failures lock the account");
    assert_eq!(sign_in(&b, &form, None, "menden", RIGHT).await.status, 401, "locked: the right password too");
    assert_eq!(failures_of(&s, "menden").await.0, 10);
}

async fn parallel_wrong_codes_all_count_and_lock(engine: Engine) {
    let s = Server::demo(engine).await;
    let password = "ein langer Satz als Passwort";
    let secret = totp_account(&s, "anna", password).await;
    let b = Session::new(&s);
    let first = b.sign_in("anna", password).await;
    assert_eq!((first.status, first.location.as_str()), (303, "/intern/zweiter-faktor"));
    let page = b.get("/intern/zweiter-faktor").await;
    let csrf = input_value(&page.body, "csrf").unwrap();
    let wrong = [("csrf", csrf.as_str()), ("code", "falsch")];
    let answers = join_all((0..8).map(|_| b.post("/intern/zweiter-faktor", &wrong))).await;
    assert!(answers.iter().all(|a| a.status == 401), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    let (failures, locked_until) = failures_of(&s, "anna").await;
    assert_eq!(failures, 8, "every parallel wrong code is counted");
    assert!(!locked_until.is_empty(), "five failures lock the account");
    // Locked: even the right code is refused, and the desk stays closed.
    let code = totp(&secret, unix_now() + 30);
    let right = b.post("/intern/zweiter-faktor", &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(right.status, 401);
    assert_eq!(b.get("/intern").await.location, "/intern/zweiter-faktor");
}

async fn a_lock_set_during_a_slow_password_check_holds(engine: Engine) {
    let s = Server::demo_with_env(engine, &[("NOTBETRIEB_TEST_SLOW_PASSWORD_CHECK_MS", "2500")]).await;
    let password = "ein langer Satz als Passwort";
    totp_account(&s, "anna", password).await;
    // Anna's first browser is at the second factor.
    let a = Session::new(&s);
    assert_eq!(a.sign_in("anna", password).await.location, "/intern/zweiter-faktor");
    let csrf = input_value(&a.get("/intern/zweiter-faktor").await.body, "csrf").unwrap();
    // A second browser sends the right password; while it is being checked (slowly), five wrong
    // codes in the first browser lock the account.
    let b = Session::new(&s);
    let form = form_token(&b).await;
    let lock = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..5 {
            let res = a.post("/intern/zweiter-faktor", &[("csrf", &csrf), ("code", "falsch")]).await;
            assert_eq!(res.status, 401);
        }
        failures_of(&s, "anna").await
    };
    let (right, (failures, locked_until)) = tokio::join!(sign_in(&b, &form, None, "anna", password), lock);
    assert_eq!((failures, locked_until.is_empty()), (5, false), "locked before the password check ends");
    assert_eq!(right.status, 401, "a check begun before the lock does not sign in: {}", right.location);
    let (failures, locked_until) = failures_of(&s, "anna").await;
    assert_eq!(failures, 6, "and counts as a failure");
    assert!(!locked_until.is_empty(), "the lock was not cleared by the stale check");
}

async fn a_slow_password_check_holds_up_no_write(engine: Engine) {
    let s = Server::demo_with_env(engine, &[("NOTBETRIEB_TEST_SLOW_PASSWORD_CHECK_MS", "3000")]).await;
    let menden = Session::api(&s, "menden");
    let b = Session::new(&s);
    let form = form_token(&b).await;
    let write = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let body = json!({"level": "limited"});
        let path = "/municipalities/menden-sauerland/services/briefwahl/statement";
        let (status, out) = menden.call(Method::PUT, path, Some(&body)).await;
        assert_eq!(status, 200, "{out}");
        started.elapsed()
    };
    let (signed_in, took) = tokio::join!(sign_in(&b, &form, None, "menden", RIGHT), write);
    assert_eq!((signed_in.status, signed_in.location.as_str()), (303, "/intern"));
    assert!(took < Duration::from_millis(1500), "the write waited {took:?} for a password check");
}

async fn parallel_attempts_from_one_address_stay_within_its_limit_whatever_they_forward(engine: Engine) {
    // No --trusted-proxy: forwarding headers are the client's own words and change nothing.
    let s = Server::demo(engine).await;
    let b = Session::new(&s);
    let form = form_token(&b).await;
    let spoofed: Vec<String> = (0..25).map(|i| format!("203.0.113.{i}")).collect();
    let answers = join_all(spoofed.iter().map(|ip| sign_in(&b, &form, Some(ip), "niemand", "irgendetwas"))).await;
    let checked = answers.iter().filter(|a| a.status == 401).count();
    let blocked = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!(checked + blocked, 25);
    assert!(checked <= 20 && blocked >= 5, "at most the limit of 20 is checked: {checked} checked, {blocked} blocked");
    // Attempts refused at once are not failures: the rest of the twenty may still be used up
    // (in parallel too: together they do not exceed the limit).
    let rest = join_all((checked..20).map(|_| sign_in(&b, &form, None, "niemand", "irgendetwas"))).await;
    assert!(rest.iter().all(|a| a.status == 401), "{:?}", rest.iter().map(|a| a.status).collect::<Vec<_>>());
    // Now a fresh forwarded address does not escape the block, not even with the right password.
    let escape = sign_in(&b, &form, Some("198.51.100.7"), "menden", RIGHT).await;
    assert_eq!(escape.status, 429);
    let forwarded = b
        .request(Method::POST, "/intern/anmelden")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("forwarded", "for=198.51.100.8")
        .body(form_encode(&[("username", "menden"), ("password", RIGHT), ("form", &form)]));
    assert_eq!(b.send(forwarded).await.status, 429);
}

async fn behind_a_trusted_proxy_each_client_has_its_own_limit(engine: Engine) {
    let s = Server::start(TestDatabase::new(engine), &["--demo", "--trusted-proxy", "127.0.0.1/32"]);
    let b = Session::new(&s);
    let form = form_token(&b).await;
    let attacker = "203.0.113.5";
    // What the client itself wrote is left of what the proxy appended: it is not believed.
    let forwarded = |i: usize| format!("192.0.2.{i}, {attacker}");
    let forwarded: Vec<String> = (0..20).map(forwarded).collect();
    let answers = join_all(forwarded.iter().map(|f| sign_in(&b, &form, Some(f), "niemand", "irgendetwas"))).await;
    assert!(answers.iter().all(|a| a.status == 401), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    let blocked = sign_in(&b, &form, Some(attacker), "menden", RIGHT).await;
    assert_eq!(blocked.status, 429, "twenty failures block the client's address");
    let other = sign_in(&b, &form, Some("198.51.100.7"), "menden", RIGHT).await;
    assert_eq!((other.status, other.location.as_str()), (303, "/intern"), "but nobody else behind the proxy");
    let counted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM login_failures WHERE address = $1")
        .bind(attacker)
        .fetch_one(&mut database(&s).await)
        .await
        .unwrap();
    assert_eq!(counted, 20, "the failures are recorded for the client, not the proxy");
}

async fn the_session_gets_a_new_id_with_the_second_factor_and_at_sign_in(engine: Engine) {
    let s = Server::demo(engine).await;
    let password = "ein langer Satz als Passwort";
    let secret = totp_account(&s, "anna", password).await;
    let b = Session::new(&s);
    assert_eq!(b.sign_in("anna", password).await.location, "/intern/zweiter-faktor");
    let half = b.cookies();
    let code = totp(&secret, unix_now() + 30);
    let second = b.submit("/intern/zweiter-faktor", "/intern/zweiter-faktor", &[("code", &code)]).await;
    assert_eq!((second.status, second.location.as_str()), (303, "/intern"), "{}", second.body);
    assert!(second.headers.get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with("nb_session=")));
    let full = b.cookies();
    assert_ne!(full["nb_session"], half["nb_session"], "a new session id with the second factor");
    assert_eq!(b.get("/intern").await.status, 200, "the new id is signed in");
    b.set_cookies(half);
    assert_eq!(b.get("/intern").await.location, "/intern/anmelden", "the id from before the second factor is void");

    // A new sign-in ends the session the browser had.
    let menden = Session::demo(&s, "menden").await;
    let before = menden.cookies();
    let again = menden.sign_in("menden", RIGHT).await;
    assert_eq!(again.location, "/intern");
    assert_ne!(menden.cookies()["nb_session"], before["nb_session"]);
    assert_eq!(menden.get("/intern").await.status, 200);
    menden.set_cookies(before);
    assert_eq!(menden.get("/intern").await.location, "/intern/anmelden", "the old session ended");
}
