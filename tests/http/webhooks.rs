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

use crate::{Engine, Server, Session, TestDatabase, on_both_engines};

on_both_engines!(webhooks_are_signed_scoped_retried_and_disabled_by_410, webhook_registration_is_checked);

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

async fn set_level(session: &Session<'_>, town: &str, level: &str, marker: &str) {
    let body = json!({"level": level, "restrictions": marker});
    let path = format!("/municipalities/{town}/services/fahrzeug-zulassen/statement");
    let (status, answer) = session.call(Method::PUT, &path, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
}

fn body(r: &Received) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

async fn webhooks_are_signed_scoped_retried_and_disabled_by_410(engine: Engine) {
    let (receiver, url) = Receiver::start().await;
    let s = serve_with_private_webhooks(engine);
    let menden = Session::api(&s, "menden");
    let admin = Session::api(&s, "admin");

    let (status, hook) = menden
        .call(Method::POST, "/webhooks", Some(&json!({"url": url, "municipalities": ["menden-sauerland"]})))
        .await;
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
    let mut log = Value::Null;
    for _ in 0..100 {
        log = menden.call(Method::GET, &format!("/webhooks/{id}"), None).await.1;
        if log["attempts"].as_array().is_some_and(|a| a.len() == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses: Vec<i64> =
        log["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, vec![200, 500, 200], "the delivery log, newest first: {log}");

    // 410 Gone disables the webhook: nothing more is sent.
    receiver.answers.lock().unwrap().push_back(410);
    set_level(&menden, "menden-sauerland", "limited", "Webhook-Marker-3").await;
    receiver.wait_for(4, 20).await;
    // The receiver has the request before notbetrieb has its answer: wait for the outcome.
    for _ in 0..100 {
        log = menden.call(Method::GET, &format!("/webhooks/{id}"), None).await.1;
        if log["state"] == "disabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log["state"], "disabled", "{log}");
    set_level(&menden, "menden-sauerland", "normal", "Webhook-Marker-4").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got().len(), 4, "nothing after 410: {:?}", receiver.got());

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
