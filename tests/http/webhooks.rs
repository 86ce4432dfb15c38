//! Webhooks against a real HTTP receiver on loopback that verifies every signature (Standard
//! Webhooks) and fails on purpose: 500s, a time-out, a refused connection, 410 Gone. Scopes,
//! authorisation and refused targets.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::{Engine, Server, Session, TestDatabase, on_both_engines, start_smtp};

on_both_engines!(
    webhooks_are_signed_scoped_retried_and_disabled_by_410,
    webhook_registration_is_checked,
    announcements_reach_subscribers_and_webhooks_when_published_corrected_withdrawn_and_when_due,
    webhooks_are_registered_looked_at_resumed_and_removed_in_the_desk,
    a_webhook_failing_throughout_is_paused_and_its_owner_told,
);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: i64,
    signature: String,
    body: String,
    /// What the receiver answered.
    status: u16,
}

/// How the receiver answers the next requests: a status, or 0 for "answer only after 12 s".
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let answer = state.answers.lock().unwrap().pop_front().unwrap_or(200);
                    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    state.got.lock().unwrap().push(Received {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                        signature: header("webhook-signature"),
                        body,
                        status: if answer == 0 { 200 } else { answer },
                    });
                    if answer == 0 {
                        tokio::time::sleep(Duration::from_secs(12)).await;
                        return StatusCode::OK;
                    }
                    StatusCode::from_u16(answer).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, seconds: u64) -> Vec<Received> {
        for _ in 0..seconds * 20 {
            if self.got().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.got()
    }
}

/// Verifies a request as a receiver following the Standard Webhooks specification would.
fn verified(secret: &str, r: &Received) -> bool {
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let fresh = (crate::unix_now() as i64 - r.timestamp).abs() < 300;
    fresh && r.signature.split(' ').any(|s| s == format!("v1,{expected}"))
}

fn serve_with_private_webhooks(engine: Engine) -> Server {
    Server::start(TestDatabase::new(engine), &["--demo", "--webhook-allow-private", "--notify-window-s", "0"])
}

/// The same with mail going to `smtp_url`.
fn serve_with_webhooks_and_mail(engine: Engine, smtp_url: &str) -> Server {
    Server::start(
        TestDatabase::new(engine),
        &[
            "--demo",
            "--webhook-allow-private",
            "--notify-window-s",
            "0",
            "--smtp-url",
            smtp_url,
            "--mail-from",
            "notbetrieb@example.org",
        ],
    )
}

async fn set_level(session: &Session<'_>, town: &str, level: &str, marker: &str) {
    let body = json!({"level": level, "restrictions": marker});
    let path = format!("/municipalities/{town}/services/fahrzeug-zulassen/statement");
    let (status, answer) = session.call(Method::PUT, &path, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// The webhook with its log as the API shows it, once `until` holds of it (or as it is after
/// `seconds`).
async fn webhook_once(session: &Session<'_>, id: &str, seconds: u64, until: impl Fn(&Value) -> bool) -> Value {
    let mut webhook = Value::Null;
    for _ in 0..seconds * 10 {
        webhook = session.call(Method::GET, &format!("/webhooks/{id}"), None).await.1;
        if until(&webhook) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    webhook
}

fn body(r: &Received) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

async fn webhooks_are_signed_scoped_retried_and_disabled_by_410(engine: Engine) {
    let Some(sink) = start_smtp(0) else { return };
    let (receiver, url) = Receiver::start().await;
    let s = serve_with_webhooks_and_mail(engine, &sink.url());
    let menden = Session::api(&s, "menden");
    let admin = Session::api(&s, "admin");

    let registration =
        json!({"url": url, "municipalities": ["menden-sauerland"], "contact_email": "web@menden.example"});
    let (status, hook) = menden.call(Method::POST, "/webhooks", Some(&registration)).await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{hook}");
    let id = hook["id"].as_str().unwrap().to_string();
    let (_, listed) = menden.call(Method::GET, "/webhooks", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("secret").is_none(), "the secret is shown once: {listed}");

    // A change in scope: one signed event.
    set_level(&menden, "menden-sauerland", "unavailable", "Webhook-Marker-1").await;
    let got = receiver.wait_for(1, 20).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(verified(&secret, &got[0]), "the signature verifies: {:?}", got[0]);
    assert!(!verified("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &got[0]), "and not with another key");
    let event = body(&got[0]);
    assert_eq!(event["type"], "availability.changed", "{event}");
    assert_eq!(event["data"]["municipality"]["slug"], "menden-sauerland");
    assert_eq!(event["data"]["service"]["slug"], "fahrzeug-zulassen");
    assert_eq!(event["data"]["level"], "unavailable");
    assert_eq!(event["data"]["restrictions"], "Webhook-Marker-1");

    // Out of scope (another town): nothing.
    set_level(&admin, "luedenscheid", "emergency", "anderswo").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got().len(), 1, "out of scope: {:?}", receiver.got());

    // A 500 is retried (after about 10 s) with the same id, and then delivered.
    receiver.answers.lock().unwrap().push_back(500);
    set_level(&menden, "menden-sauerland", "emergency", "Webhook-Marker-2").await;
    let got = receiver.wait_for(3, 40).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!((got[1].status, got[2].status), (500, 200));
    assert_eq!(got[1].id, got[2].id, "a retry is recognisably the same message");
    assert!(verified(&secret, &got[2]));
    let log = webhook_once(&menden, &id, 10, |w| w["attempts"].as_array().is_some_and(|a| a.len() == 3)).await;
    let statuses: Vec<i64> =
        log["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, vec![200, 500, 200], "the delivery log, newest first: {log}");

    // 410 Gone disables the webhook: nothing more is sent.
    receiver.answers.lock().unwrap().push_back(410);
    set_level(&menden, "menden-sauerland", "limited", "Webhook-Marker-3").await;
    receiver.wait_for(4, 20).await;
    // The receiver has the request before notbetrieb has its answer: wait for the outcome.
    let log = webhook_once(&menden, &id, 10, |w| w["state"] == "disabled").await;
    assert_eq!(log["state"], "disabled", "{log}");
    set_level(&menden, "menden-sauerland", "normal", "Webhook-Marker-4").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got().len(), 4, "nothing after 410: {:?}", receiver.got());
    // Its owner is told: by mail to the address given, and on the desk's overview.
    let mails = sink.wait_for(1, 20).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["rcpt_tos"], json!(["web@menden.example"]));
    assert!(mails[0]["headers"]["subject"].as_str().unwrap().contains("abgeschaltet"), "{}", mails[0]);
    let text = mails[0]["text"].as_str().unwrap();
    assert!(text.contains(&url) && text.contains(&format!("/intern/webhooks/{id}")), "{text}");
    let desk = Session::demo(&s, "menden").await;
    let overview = desk.get("/intern").await;
    assert!(overview.body.contains(&format!("/intern/webhooks/{id}")), "the desk shows it: {}", overview.body);

    // Resumed (the receiver works again), it gets the next change; what was given up stays so.
    let (status, resumed) = menden.call(Method::POST, &format!("/webhooks/{id}/resume"), None).await;
    assert_eq!((status, resumed["state"].as_str()), (200, Some("active")), "{resumed}");
    set_level(&menden, "menden-sauerland", "emergency", "Webhook-Marker-5").await;
    let got = receiver.wait_for(5, 20).await;
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(body(&got[4])["data"]["restrictions"], "Webhook-Marker-5");
    let (status, _) = admin.call(Method::POST, &format!("/webhooks/{id}/resume"), None).await;
    assert_eq!(status, 200, "admins manage anyone's");
    let (status, _) =
        Session::api(&s, "luedenscheid").call(Method::POST, &format!("/webhooks/{id}/resume"), None).await;
    assert_eq!(status, 404, "another town's editor cannot");

    // A refused connection and a receiver that does not answer in time are logged and retried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_, refused_hook) = admin
        .call(
            Method::POST,
            "/webhooks",
            Some(&json!({"url": format!("http://127.0.0.1:{closed}/x"), "events": ["availability.changed"]})),
        )
        .await;
    let (_, slow_hook) =
        admin.call(Method::POST, "/webhooks", Some(&json!({"url": url, "services": ["fahrzeug-zulassen"]}))).await;
    receiver.answers.lock().unwrap().push_back(0);
    set_level(&admin, "luedenscheid", "unavailable", "langsam").await;
    let mut refused_seen = false;
    let mut slow_seen = false;
    for _ in 0..60 {
        let (_, a) =
            admin.call(Method::GET, &format!("/webhooks/{}", refused_hook["id"].as_str().unwrap()), None).await;
        let (_, b) = admin.call(Method::GET, &format!("/webhooks/{}", slow_hook["id"].as_str().unwrap()), None).await;
        refused_seen = a["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["status"] == 0 && x["error"].as_str().unwrap().contains("refused"));
        slow_seen = b["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["status"] == 0 && x["error"].as_str().unwrap().contains("10 s"));
        if refused_seen && slow_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(refused_seen && slow_seen, "refused {refused_seen}, timed out {slow_seen}");
    let (status, _) =
        admin.call(Method::DELETE, &format!("/webhooks/{}", refused_hook["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 204);
}

async fn announcements_reach_subscribers_and_webhooks_when_published_corrected_withdrawn_and_when_due(engine: Engine) {
    let Some(sink) = start_smtp(0) else { return };
    let (receiver, url) = Receiver::start().await;
    let s = serve_with_webhooks_and_mail(engine, &sink.url());
    let menden = Session::api(&s, "menden");
    let hook = json!({"url": url, "municipalities": ["menden-sauerland"], "events": ["announcement.published", "announcement.corrected", "announcement.withdrawn"]});
    let (status, hook) = menden.call(Method::POST, "/webhooks", Some(&hook)).await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_string();
    // Subscribers of Menden and of Lüdenscheid, confirmed.
    for (email, town) in [("anna@example.org", "menden-sauerland"), ("bert@example.org", "luedenscheid")] {
        let (status, _) = s
            .client
            .post(s.url("/api/v1/subscriptions"))
            .json(&json!({"email": email, "municipality": town}))
            .send()
            .await
            .map(|r| (r.status().as_u16(), ()))
            .unwrap();
        assert_eq!(status, 202);
    }
    let confirmations = sink.wait_for(2, 20).await;
    assert_eq!(confirmations.len(), 2, "{confirmations:?}");
    for mail in &confirmations {
        let text = mail["text"].as_str().unwrap();
        let link = text.split_whitespace().find(|w| w.contains("/abo/bestaetigen/")).unwrap();
        assert_eq!(s.client.post(link).send().await.unwrap().status(), 200);
    }
    let mails_to = |who: &str| -> Vec<Value> {
        sink.mails()
            .into_iter()
            .filter(|m| m["rcpt_tos"][0] == who && m["text"].as_str().is_some_and(|t| !t.contains("/abo/bestaetigen/")))
            .collect()
    };

    // Published now: Menden's subscriber and webhook are told, Lüdenscheid's subscriber is not.
    let a =
        json!({"scope": "municipality", "scope_ref": "05962040", "title": "Meldung-Marker-1", "body": "Erster Stand."});
    let (status, created) = menden.call(Method::POST, "/announcements", Some(&a)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let got = receiver.wait_for(1, 20).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(verified(&secret, &got[0]));
    let event = body(&got[0]);
    assert_eq!(
        (event["type"].as_str(), event["data"]["id"].as_str()),
        (Some("announcement.published"), Some(id.as_str())),
        "{event}"
    );
    assert_eq!(event["data"]["version"], 1);
    let mut anna = Vec::new();
    for _ in 0..100 {
        anna = mails_to("anna@example.org");
        if !anna.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(anna.len(), 1, "{anna:?}");
    assert_eq!(anna[0]["headers"]["subject"], "Meldung-Marker-1");
    assert!(anna[0]["text"].as_str().unwrap().contains(&format!("/meldungen/{id}")), "{}", anna[0]);

    // Corrected: told again, as a correction.
    let corrected = json!({"scope": "municipality", "scope_ref": "05962040", "title": "Meldung-Marker-1", "body": "Korrigierter Stand."});
    let (status, answer) = menden.call(Method::PUT, &format!("/announcements/{id}"), Some(&corrected)).await;
    assert_eq!(status, 200, "{answer}");
    let got = receiver.wait_for(2, 20).await;
    assert_eq!(body(&got[1])["type"], "announcement.corrected", "{got:?}");
    assert_eq!(body(&got[1])["data"]["version"], 2);

    // Scheduled a few seconds ahead: nothing until its time, then both are told.
    let at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now() + chrono::Duration::seconds(4), 0);
    let later = json!({"scope": "municipality", "scope_ref": "05962040", "title": "Meldung-Marker-2", "body": "Später.", "publish": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    let (status, scheduled) = menden.call(Method::POST, "/announcements", Some(&later)).await;
    assert_eq!(status, 201, "{scheduled}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got().len(), 2, "not before its time: {:?}", receiver.got());
    let got = receiver.wait_for(3, 20).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(chrono::Utc::now() >= at, "delivered after its time");
    let event = body(&got[2]);
    assert_eq!(
        (event["type"].as_str(), event["data"]["title"].as_str()),
        (Some("announcement.published"), Some("Meldung-Marker-2")),
        "{event}"
    );
    for _ in 0..100 {
        if mails_to("anna@example.org").len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let anna = mails_to("anna@example.org");
    assert_eq!(anna.len(), 3, "published, corrected, scheduled: {anna:?}");
    assert_eq!(anna[2]["headers"]["subject"], "Meldung-Marker-2");

    // Withdrawn: the webhook is told; subscribers get no mail about it.
    let (status, _) = menden.call(Method::DELETE, &format!("/announcements/{id}"), None).await;
    assert_eq!(status, 204);
    let got = receiver.wait_for(4, 20).await;
    assert_eq!(body(&got[3])["type"], "announcement.withdrawn", "{got:?}");
    assert_eq!(body(&got[3])["data"]["id"], id.as_str());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mails_to("anna@example.org").len(), 3, "no mail about a withdrawal");
    assert_eq!(receiver.got().len(), 4, "each once: {:?}", receiver.got());
    assert!(mails_to("bert@example.org").is_empty(), "Menden's news are not Lüdenscheid's");
    let ids: std::collections::HashSet<String> = receiver.got().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 4, "every message its own id");
}

async fn webhooks_are_registered_looked_at_resumed_and_removed_in_the_desk(engine: Engine) {
    let (receiver, url) = Receiver::start().await;
    let s = serve_with_private_webhooks(engine);
    let desk = Session::demo(&s, "menden").await;
    let page = desk.get("/intern/webhooks").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("name=\"url\""), "the form: {}", page.body);
    assert!(
        page.body.contains("value=\"menden-sauerland\"") && !page.body.contains("value=\"luedenscheid\""),
        "an editor names only their towns"
    );

    // Refused input: the field is named and nothing is stored.
    let refused = desk
        .submit(
            "/intern/webhooks",
            "/intern/webhooks",
            &[("url", "ftp://example.org/"), ("municipalities", "menden-sauerland")],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let refused =
        desk.submit("/intern/webhooks", "/intern/webhooks", &[("url", &url), ("municipalities", "luedenscheid")]).await;
    assert_eq!(refused.status, 403, "another town: {}", refused.body);
    let refused = desk
        .submit(
            "/intern/webhooks",
            "/intern/webhooks",
            &[("url", &url), ("municipalities", "menden-sauerland"), ("contact_email", "x@y\r\nBcc: z@example.org")],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("contact_email"), "{}", refused.body);
    let no_csrf = desk.post("/intern/webhooks", &[("url", &url), ("municipalities", "menden-sauerland")]).await;
    assert_eq!(no_csrf.status, 403);
    let (_, listed) = Session::api(&s, "menden").call(Method::GET, "/webhooks", None).await;
    assert_eq!(listed, json!([]), "nothing stored");

    // Registered: the secret is shown once, and signs what the receiver gets.
    let created = desk
        .submit(
            "/intern/webhooks",
            "/intern/webhooks",
            &[
                ("url", &url),
                ("municipalities", "menden-sauerland"),
                ("events", "availability.changed"),
                ("contact_email", "web@menden.example"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let secret = crate::element_text(&created.body, "webhook-secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let again = desk.get("/intern/webhooks").await;
    assert!(!again.body.contains(&secret), "shown once");
    assert!(again.body.contains(&url), "listed");
    set_level(&Session::api(&s, "menden"), "menden-sauerland", "unavailable", "Desk-Marker").await;
    let got = receiver.wait_for(1, 20).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(verified(&secret, &got[0]));

    // The webhook's page shows the delivery log; another editor cannot open it.
    let (_, listed) = Session::api(&s, "menden").call(Method::GET, "/webhooks", None).await;
    let id = listed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed[0]["contact_email"], "web@menden.example");
    let mut detail = desk.get(&format!("/intern/webhooks/{id}")).await;
    for _ in 0..50 {
        if detail.body.contains("HTTP 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        detail = desk.get(&format!("/intern/webhooks/{id}")).await;
    }
    assert!(detail.body.contains("HTTP 200") && detail.body.contains(&got[0].id), "{}", detail.body);
    let other = Session::demo(&s, "luedenscheid").await;
    assert_eq!(other.get(&format!("/intern/webhooks/{id}")).await.status, 404);
    let refused = other.submit("/intern/webhooks", &format!("/intern/webhooks/{id}/loeschen"), &[]).await;
    assert_eq!(refused.status, 404, "{}", refused.body);

    // Disabled by a 410, it says so and is resumed from its page.
    receiver.answers.lock().unwrap().push_back(410);
    set_level(&Session::api(&s, "menden"), "menden-sauerland", "emergency", "Desk-Marker-2").await;
    let api = Session::api(&s, "menden");
    let state = webhook_once(&api, &id, 10, |w| w["state"] == "disabled").await["state"].clone();
    assert_eq!(state, "disabled");
    let detail = desk.get(&format!("/intern/webhooks/{id}")).await;
    assert!(detail.body.contains("Abgeschaltet") && detail.body.contains("410 Gone"), "{}", detail.body);
    let resumed =
        desk.submit(&format!("/intern/webhooks/{id}"), &format!("/intern/webhooks/{id}/fortsetzen"), &[]).await;
    assert_eq!(resumed.status, 303, "{}", resumed.body);
    assert_eq!(api.call(Method::GET, &format!("/webhooks/{id}"), None).await.1["state"], "active");

    // Removed.
    let removed = desk.submit(&format!("/intern/webhooks/{id}"), &format!("/intern/webhooks/{id}/loeschen"), &[]).await;
    assert_eq!((removed.status, removed.location.as_str()), (303, "/intern/webhooks?entfernt=1"), "{}", removed.body);
    let (_, listed) = Session::api(&s, "menden").call(Method::GET, "/webhooks", None).await;
    assert_eq!(listed, json!([]));
}

async fn refused(session: &Session<'_>, body: Value, status: u16, field: Option<&str>) {
    let (got, answer) = session.call(Method::POST, "/webhooks", Some(&body)).await;
    assert_eq!((got, answer["field"].as_str()), (status, field), "{body}: {answer}");
}

async fn webhook_registration_is_checked(engine: Engine) {
    let s = Server::start(TestDatabase::new(engine), &["--demo", "--notify-window-s", "0"]);
    let menden = Session::api(&s, "menden");
    let operator = Session::api(&s, "krisenstab");
    let town = json!(["menden-sauerland"]);
    refused(&menden, json!({"url": "ftp://example.org/", "municipalities": town}), 422, Some("url")).await;
    refused(&menden, json!({"url": "javascript:alert(1)", "municipalities": town}), 422, Some("url")).await;
    refused(&menden, json!({"url": "http://127.0.0.1:9/", "municipalities": town}), 422, Some("url")).await;
    refused(&menden, json!({"url": "http://10.1.2.3/", "municipalities": town}), 422, Some("url")).await;
    refused(&menden, json!({"url": "http://[::1]/", "municipalities": town}), 422, Some("url")).await;
    refused(&menden, json!({"url": "http://localhost/", "municipalities": town}), 422, Some("url")).await;
    refused(&menden, json!({"url": "https://gibt-es-nicht.invalid/", "municipalities": town}), 422, Some("url")).await;
    refused(
        &menden,
        json!({"url": "https://example.org/", "municipalities": ["atlantis"]}),
        422,
        Some("municipalities"),
    )
    .await;
    refused(
        &menden,
        json!({"url": "https://example.org/", "municipalities": town, "events": ["all"]}),
        422,
        Some("events"),
    )
    .await;
    refused(&menden, json!({"url": "https://example.org/", "municipalities": town, "x": 1}), 422, Some("x")).await;
    // The address told when the webhook stops: no header injection, no nonsense.
    for contact in ["web@menden.example\r\nBcc: x@example.org", "kein-at-zeichen", "<script>@example.org"] {
        let body = json!({"url": "https://example.org/", "municipalities": town, "contact_email": contact});
        refused(&menden, body, 422, Some("contact_email")).await;
    }
    // Editors only about their own towns, never the whole area.
    refused(&menden, json!({"url": "https://example.org/"}), 403, None).await;
    refused(&menden, json!({"url": "https://example.org/", "municipalities": ["luedenscheid"]}), 403, None).await;
    refused(&Session::api(&s, "pruefung"), json!({"url": "https://example.org/"}), 403, None).await;
    let (status, _) =
        Session::new(&s).call(Method::POST, "/webhooks", Some(&json!({"url": "https://example.org/"}))).await;
    assert_eq!(status, 401);
    // Nothing was stored by any of them, and nobody sees another's webhooks.
    let (_, mine) = menden.call(Method::GET, "/webhooks", None).await;
    assert_eq!(mine, json!([]));
    let (_, theirs) = operator.call(Method::GET, "/webhooks", None).await;
    assert_eq!(theirs, json!([]));
}

async fn a_webhook_failing_throughout_is_paused_and_its_owner_told(engine: Engine) {
    let Some(sink) = start_smtp(0) else { return };
    // Retries at once instead of 10 s doubling to an hour: the 30 attempts of about a day take
    // seconds (a hook of debug builds).
    let s = Server::start_with_env(
        TestDatabase::new(engine),
        &[
            "--demo",
            "--webhook-allow-private",
            "--notify-window-s",
            "0",
            "--smtp-url",
            &sink.url(),
            "--mail-from",
            "notbetrieb@example.org",
        ],
        &[("NOTBETRIEB_TEST_RETRY_SECONDS", "0")],
    );
    let menden = Session::api(&s, "menden");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{closed}/nie-erreichbar");
    let registration =
        json!({"url": url, "municipalities": ["menden-sauerland"], "contact_email": "it@menden.example"});
    let (status, hook) = menden.call(Method::POST, "/webhooks", Some(&registration)).await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_str().unwrap().to_string();
    set_level(&menden, "menden-sauerland", "unavailable", "niemand hört zu").await;

    let log = webhook_once(&menden, &id, 60, |w| w["state"] == "paused").await;
    assert_eq!(log["state"], "paused", "{log}");
    assert!(log["state_reason"].as_str().unwrap().contains("refused"), "{log}");
    assert_eq!(log["attempts"].as_array().unwrap().len(), 30, "every attempt is in the log: {log}");
    let mails = sink.wait_for(1, 20).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["rcpt_tos"], json!(["it@menden.example"]));
    assert!(mails[0]["headers"]["subject"].as_str().unwrap().contains("pausiert"), "{}", mails[0]);
    assert!(mails[0]["text"].as_str().unwrap().contains("refused"), "the reason: {}", mails[0]);
    let overview = Session::demo(&s, "menden").await.get("/intern").await;
    assert!(overview.body.contains(&format!("/intern/webhooks/{id}")) && overview.body.contains("Pausiert"));
    // A paused webhook gets nothing more.
    set_level(&menden, "menden-sauerland", "emergency", "noch einmal").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, after) = menden.call(Method::GET, &format!("/webhooks/{id}"), None).await;
    assert_eq!(after["attempts"].as_array().unwrap().len(), 30, "nothing sent while paused: {after}");
}
