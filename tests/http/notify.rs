//! E-mail subscriptions end to end, against a real SMTP server (aiosmtpd): subscribe, the
//! confirmation mail, confirming by button (not by opening the link), the notification after a
//! change, RFC 8058 one-click unsubscribe, and nothing after that; refused input; mail that
//! waits while the SMTP server is down, and while the database is locked; a server killed in
//! the middle of a large fan-out.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Engine, Server, Session, SmtpSink, TestDatabase, on_both_engines, start_smtp};

on_both_engines!(
    a_resident_subscribes_confirms_is_told_and_leaves_with_one_click,
    subscription_requests_are_checked_and_answered_alike,
    mail_waits_while_the_smtp_server_is_down_and_goes_out_when_it_is_back,
    a_server_killed_during_a_large_fan_out_loses_no_mail_and_repeats_only_those_in_flight,
    a_briefly_locked_database_delays_the_mail_and_loses_none,
);

const SERVICE: &str = "fahrzeug-zulassen";
const STATEMENT: &str = "/municipalities/menden-sauerland/services/fahrzeug-zulassen/statement";

fn serve_with_mail(engine: Engine, smtp_url: &str) -> Server {
    Server::start(
        TestDatabase::new(engine),
        &["--demo", "--smtp-url", smtp_url, "--mail-from", "notbetrieb@example.org", "--notify-window-s", "0"],
    )
}

async fn subscribe(s: &Server, body: &Value) -> (u16, String) {
    let res = s.client.post(s.url("/api/v1/subscriptions")).json(body).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The first link in a mail's text that leads to `path_part`.
fn link(mail: &Value, path_part: &str) -> String {
    let text = mail["text"].as_str().unwrap();
    text.split_whitespace()
        .find(|w| w.contains(path_part))
        .unwrap_or_else(|| panic!("no {path_part} link in {text}"))
        .to_string()
}

fn mails_to<'a>(mails: &'a [Value], to: &str) -> Vec<&'a Value> {
    mails.iter().filter(|m| m["rcpt_tos"][0] == to).collect()
}

async fn set_level(menden: &Session<'_>, level: &str, marker: &str) {
    let body = json!({"level": level, "restrictions": marker, "workaround": "Zulassung per Post beim Kreis"});
    let (status, answer) = menden.call(Method::PUT, STATEMENT, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
}

async fn a_resident_subscribes_confirms_is_told_and_leaves_with_one_click(engine: Engine) {
    let Some(sink) = start_smtp(0) else { return };
    let s = serve_with_mail(engine, &sink.url());
    let menden = Session::api(&s, "menden");

    let request = json!({"email": "anna@example.org", "municipality": "menden-sauerland", "service": SERVICE});
    let (status, answer) = subscribe(&s, &request).await;
    assert_eq!((status, answer.as_str()), (202, r#"{"status":"pending"}"#));

    let mails = sink.wait_for(1, 20).await;
    assert_eq!(mails.len(), 1, "one confirmation mail: {mails:?}");
    let confirmation = &mails[0];
    assert_eq!(confirmation["rcpt_tos"], json!(["anna@example.org"]));
    assert_eq!(confirmation["mail_from"], "notbetrieb@example.org");
    assert!(confirmation["headers"]["subject"].as_str().unwrap().contains("bestätigen"), "{confirmation}");
    assert!(confirmation["headers"]["message-id"].as_str().unwrap().ends_with("@example.org>"), "{confirmation}");
    assert!(confirmation["text"].as_str().unwrap().contains("Fahrzeug"), "says what is subscribed: {confirmation}");
    assert!(confirmation["html"].as_str().unwrap().contains("<a href="), "an HTML part too");
    let confirm_url = link(confirmation, "/abo/bestaetigen/");

    // Before confirmation nothing else is sent, and opening the link (as a mail scanner would)
    // confirms nothing.
    let page = s.client.get(&confirm_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\""), "a button confirms: {html}");
    set_level(&menden, "emergency", "vor der Bestätigung").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(sink.mails().len(), 1, "nothing before confirmation: {:?}", sink.mails());

    let confirmed = s.client.post(&confirm_url).send().await.unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.text().await.unwrap().contains("bestätigt"));

    // A change in scope: one mail, with the page, the workaround and the one-click headers.
    set_level(&menden, "unavailable", "Marker-nach-Bestätigung").await;
    let mails = sink.wait_for(2, 20).await;
    assert_eq!(mails.len(), 2, "{mails:?}");
    let told = &mails[1];
    let text = told["text"].as_str().unwrap();
    assert!(told["headers"]["subject"].as_str().unwrap().contains("Menden"), "{told}");
    assert!(text.contains("Marker-nach-Bestätigung") && text.contains("Zulassung per Post beim Kreis"), "{text}");
    assert!(text.contains(&format!("/kommunen/menden-sauerland/leistungen/{SERVICE}")), "{text}");
    let unsubscribe = told["headers"]["list-unsubscribe"].as_str().unwrap();
    assert_eq!(told["headers"]["list-unsubscribe-post"], "List-Unsubscribe=One-Click");
    let unsubscribe_url = unsubscribe.trim_start_matches('<').trim_end_matches('>').to_string();
    assert!(unsubscribe_url.starts_with(&s.base), "{unsubscribe_url}");

    // Every mail links the page that mails a link to all of the address's subscriptions.
    assert!(text.contains("/abo/verwalten"), "{text}");
    let form = |body: &str| {
        s.client
            .post(s.url("/abo/verwalten"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
    };
    let asked = form("email=anna%40example.org").await.unwrap();
    assert_eq!(asked.status(), 200);
    let unknown = form("email=niemand%40example.org").await.unwrap();
    assert_eq!(unknown.status(), 200, "the same answer for an address without subscriptions");
    let mails = sink.wait_for(3, 20).await;
    assert_eq!(mails.len(), 3, "a link only for the address that has subscriptions: {mails:?}");
    let manage_url = link(&mails[2], "/abo/verwalten/");
    let list = s.client.get(&manage_url).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let html = list.text().await.unwrap();
    assert!(html.contains("Fahrzeug") && html.contains("/abo/abmelden/"), "the subscription with its button: {html}");
    let tampered = manage_url.replacen("/abo/verwalten/", "/abo/verwalten/1", 1);
    assert_eq!(s.client.get(&tampered).send().await.unwrap().status(), 404);

    // A change outside the scope tells this subscriber nothing.
    let other = json!({"level": "emergency"});
    let (status, _) = menden
        .call(Method::PUT, "/municipalities/menden-sauerland/services/meldebescheinigung/statement", Some(&other))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(sink.mails().len(), 3, "out of scope: {:?}", sink.mails());

    // Opening the unsubscribe link shows a button; the one-click POST ends it at once.
    let page = s.client.get(&unsubscribe_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("List-Unsubscribe"), "the page's button posts one-click too");
    let gone = s
        .client
        .post(&unsubscribe_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    let again = s.client.get(&unsubscribe_url).send().await.unwrap();
    assert_eq!(again.status(), 404, "the link is spent");

    set_level(&menden, "normal", "wieder da").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(sink.mails().len(), 3, "nothing after unsubscribing: {:?}", sink.mails());
}

async fn subscription_requests_are_checked_and_answered_alike(engine: Engine) {
    let Some(sink) = start_smtp(0) else { return };
    let s = serve_with_mail(engine, &sink.url());
    let refused = |body: Value, field: &'static str| {
        let s = &s;
        async move {
            let (status, answer) = subscribe(s, &body).await;
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!((status, answer["field"].as_str()), (422, Some(field)), "{body}: {answer}");
        }
    };
    refused(json!({}), "email").await;
    refused(json!({"email": "anna@example.org\r\nBcc: everyone@example.org"}), "email").await;
    refused(json!({"email": "<script>alert(1)</script>@example.org"}), "email").await;
    refused(json!({"email": format!("{}@example.org", "a".repeat(250))}), "email").await;
    refused(json!({"email": "anna@example.org", "municipality": "atlantis"}), "municipality").await;
    refused(json!({"email": "anna@example.org", "service": "zauberei"}), "service").await;
    refused(json!({"email": "anna@example.org", "area": "magic"}), "area").await;
    refused(json!({"email": "anna@example.org", "lang": "tlh"}), "lang").await;
    refused(json!({"email": "anna@example.org", "admin": true}), "admin").await;
    let res = s.client.post(s.url("/api/v1/subscriptions")).body("email=a@b.de").send().await.unwrap();
    assert_eq!(res.status(), 415);

    // The same answer for a new address, a repeated one and an internationalised domain.
    for email in ["bert@example.org", "bert@example.org", "carla@bücher.example"] {
        let (status, answer) = subscribe(&s, &json!({"email": email, "lang": "en"})).await;
        assert_eq!((status, answer.as_str()), (202, r#"{"status":"pending"}"#), "{email}");
    }
    let mails = sink.wait_for(3, 20).await;
    assert_eq!(mails_to(&mails, "bert@example.org").len(), 2, "asked twice, mailed twice: {mails:?}");
    assert!(mails[0]["headers"]["subject"].as_str().unwrap().contains("confirm"), "in English: {}", mails[0]);

    // The form on the pages answers with a page, not JSON; refused input names the problem.
    let res = s
        .client
        .post(s.url("/abonnieren"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=kein-at-zeichen&municipality=menden-sauerland")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("E-Mail-Adresse"));

    // Nobody stored or mailed for refused requests; after 20 requests a client must wait.
    let mut last = 0;
    for n in 0..25 {
        let (status, _) = subscribe(&s, &json!({"email": format!("viele{n}@example.org")})).await;
        last = status;
    }
    assert_eq!(last, 429, "the client is slowed down");
    let mails = sink.wait_for(100, 3).await;
    assert!(mails.iter().all(|m| !m["rcpt_tos"][0].as_str().unwrap().contains("script")), "{mails:?}");
    assert!(mails.len() < 3 + 25, "not every request of a flooding client is mailed: {}", mails.len());
}

async fn mail_waits_while_the_smtp_server_is_down_and_goes_out_when_it_is_back(engine: Engine) {
    // Nothing listens on the port yet: the mail waits in the outbox and the server stays healthy.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    if std::env::var("NOTBETRIEB_TEST_AIOSMTPD_PYTHON").is_err() && std::env::var("CI").is_err() {
        eprintln!("SKIPPED: set NOTBETRIEB_TEST_AIOSMTPD_PYTHON");
        return;
    }
    let s = serve_with_mail(engine, &format!("smtp://127.0.0.1:{port}"));
    let (status, _) = subscribe(&s, &json!({"email": "dora@example.org"})).await;
    assert_eq!(status, 202);
    // The server stays healthy and says how much waits; the desk shows operators the outbox.
    let mut waiting = Value::Null;
    for _ in 0..100 {
        let (health, body) = s.json("/healthz").await;
        assert_eq!(health, 200, "a down SMTP server does not make the site unhealthy: {body}");
        assert_eq!(body["notifications"]["smtp_configured"], true, "{body}");
        waiting = body["notifications"]["waiting"]["email"].clone();
        if waiting == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(waiting, 1, "the confirmation mail waits");
    let operator = Session::demo(&s, "krisenstab").await;
    let desk = operator.get("/intern").await;
    assert!(desk.body.contains("Benachrichtigungen") && desk.body.contains("noch nicht bestätigt: 1"), "{}", desk.body);
    let editor = Session::demo(&s, "menden").await;
    assert!(!editor.get("/intern").await.body.contains("id=\"benachrichtigungen\""), "editors do not see the outbox");

    let sink: SmtpSink = crate::harness::start_smtp_on(port, 1).expect("aiosmtpd");
    // The first attempt after it is back is answered 451 (busy); the next one is delivered.
    let mails = sink.wait_for(1, 60).await;
    assert_eq!(mails_to(&mails, "dora@example.org").len(), 1, "delivered once it is back: {mails:?}");
}

fn database_url(s: &Server, engine: Engine) -> String {
    match engine {
        Engine::Sqlite => format!("sqlite://{}", s.db.url.trim_start_matches("sqlite:")),
        Engine::Postgres => s.db.url.clone(),
    }
}

/// Mails of the outbox that took more than one attempt.
async fn outbox_retried(s: &Server, engine: Engine) -> usize {
    use sqlx::Connection;
    let mut c = sqlx::AnyConnection::connect(&database_url(s, engine)).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE attempts > 1").fetch_one(&mut c).await.unwrap();
    n as usize
}

/// Mails of the outbox claimed by a worker and not yet settled: in flight.
async fn outbox_claimed(s: &Server, engine: Engine) -> usize {
    use sqlx::Connection;
    let mut c = sqlx::AnyConnection::connect(&database_url(s, engine)).await.unwrap();
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND claimed_until > $1")
        .bind(now)
        .fetch_one(&mut c)
        .await
        .unwrap();
    n as usize
}

/// Confirmed subscriptions written straight into the database, as if each had been confirmed.
async fn add_confirmed_subscribers(s: &Server, engine: Engine, n: usize) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&database_url(s, engine)).await.unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "('{i:032x}', 'viele-{i}@example.org', 'de', '05962040', '{SERVICE}', '', 1, 'token-{i}', \
                     '2026-12-01T00:00:00Z', '2026-12-04T00:00:00Z', '2026-12-01T00:00:00Z', 'test', 'test', '')"
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO subscriptions (id, email, lang, municipality_ags, service_slug, area, confirmed, \
             confirm_token_hash, created_at, expires_at, confirmed_at, consent_version, consent_text, client_hash) VALUES {}",
            rows.join(", ")
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.unwrap();
    }
}

async fn a_server_killed_during_a_large_fan_out_loses_no_mail_and_repeats_only_those_in_flight(engine: Engine) {
    let Some(sink) = start_smtp(0) else { return };
    const N: usize = 2000;
    let args = ["--smtp-url", &sink.url(), "--mail-from", "notbetrieb@example.org", "--notify-window-s", "0"];
    // Claims run out after 30 s instead of 2 minutes: longer than a batch takes on a busy
    // machine, short enough for the test to wait for the killed server's.
    let env = [("NOTBETRIEB_TEST_CLAIM_SECONDS", "30")];
    let demo_args: Vec<&str> = std::iter::once("--demo").chain(args.iter().copied()).collect();
    let mut s = Server::start_with_env(TestDatabase::new(engine), &demo_args, &env);
    add_confirmed_subscribers(&s, engine, N).await;
    set_level(&Session::api(&s, "menden"), "unavailable", "Massenversand").await;

    // Killed hard once a part of the mails is out.
    let started = std::time::Instant::now();
    while sink.mails().len() < 200 {
        assert!(started.elapsed().as_secs() < 120, "the fan-out did not start: {} mails", sink.mails().len());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.kill();
    let at_kill = sink.mails().len();
    assert!(at_kill < N, "killed before the end ({at_kill} of {N})");
    let in_flight = outbox_claimed(&s, engine).await;

    // Two instances take over on the same database; together they send the rest, once.
    let second = s.another_on_same_database(&args, &env);
    let third = s.another_on_same_database(&args, &env);
    for _ in 0..600 {
        let mails = sink.mails();
        let recipients: std::collections::BTreeSet<&str> =
            mails.iter().map(|m| m["rcpt_tos"][0].as_str().unwrap()).filter(|r| r.starts_with("viele-")).collect();
        if recipients.len() == N {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mails = sink.mails();
    let mass: Vec<&Value> = mails.iter().filter(|m| m["rcpt_tos"][0].as_str().unwrap().starts_with("viele-")).collect();
    let mut by_id: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for m in &mass {
        by_id.entry(m["headers"]["message-id"].as_str().unwrap()).or_default().push(m["rcpt_tos"][0].as_str().unwrap());
    }
    let recipients: std::collections::BTreeSet<&str> =
        mass.iter().map(|m| m["rcpt_tos"][0].as_str().unwrap()).collect();
    assert_eq!(recipients.len(), N, "every subscriber got the mail ({at_kill} before the kill)");
    assert_eq!(by_id.len(), N, "one Message-ID per subscriber");
    assert!(
        by_id.values().all(|to| to.iter().all(|r| *r == to[0])),
        "a repeated id is the same mail to the same address"
    );
    let repeated = mass.len() - N;
    // In flight: the mails the killed server had claimed and not yet settled (its workers'
    // batches: at most 4 × 50), and mails the sink took whose answer a sender did not get (it
    // tried them again: more than one attempt).
    let retried = outbox_retried(&s, engine).await;
    eprintln!(
        "fan-out to {N}: {at_kill} mails before the kill, {in_flight} in flight, {repeated} sent again after it, {retried} retried"
    );
    assert!(in_flight <= 4 * 50, "no more in flight than the workers' batches: {in_flight}");
    assert!(repeated <= in_flight + retried, "only the mails in flight are repeated: {repeated}");
    drop((second, third));
}

async fn a_briefly_locked_database_delays_the_mail_and_loses_none(engine: Engine) {
    use sqlx::Connection;
    let Some(sink) = start_smtp(0) else { return };
    const N: usize = 300;
    let s = serve_with_mail(engine, &sink.url());
    add_confirmed_subscribers(&s, engine, N).await;
    set_level(&Session::api(&s, "menden"), "unavailable", "Gesperrt").await;

    // Right after the change is acknowledged, another client locks the outbox (PostgreSQL) or
    // the whole database (SQLite) for four seconds: the notifier and the mailer must wait or
    // fail and try again, and lose nothing.
    let mut locker = sqlx::AnyConnection::connect(&database_url(&s, engine)).await.unwrap();
    let lock = match engine {
        Engine::Sqlite => "BEGIN EXCLUSIVE",
        Engine::Postgres => "BEGIN; LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE",
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(lock.to_string())).execute(&mut locker).await.unwrap();
    let at_lock = sink.mails().len();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let during = sink.mails().len() - at_lock;
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();

    let mails = sink.wait_for(N, 60).await;
    let mass: Vec<&Value> = mails.iter().filter(|m| m["rcpt_tos"][0].as_str().unwrap().starts_with("viele-")).collect();
    let ids: std::collections::BTreeSet<&str> =
        mass.iter().map(|m| m["headers"]["message-id"].as_str().unwrap()).collect();
    let recipients: std::collections::BTreeSet<&str> =
        mass.iter().map(|m| m["rcpt_tos"][0].as_str().unwrap()).collect();
    eprintln!("locked database: {at_lock} mails before the lock, {during} during it, {} in all", mass.len());
    assert_eq!(recipients.len(), N, "every subscriber got the mail");
    assert_eq!((ids.len(), mass.len()), (N, N), "each once");
    assert!(during <= 4 * 50, "nothing but what was in flight went out while the outbox was locked: {during}");
    let (status, health) = s.json("/healthz").await;
    assert_eq!(status, 200, "{health}");
}
