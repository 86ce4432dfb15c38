//! Small holes from the security review: a token cannot be born expired, someone else's token is
//! as unknown as a missing one, e-mail addresses are parsed, expected dates stay in a sensible
//! range. Through the API and the desk, each refusal a 422 naming the field.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Engine, Server, Session, input_value, on_both_engines};

on_both_engines!(
    a_token_cannot_be_created_expired,
    someone_elses_token_is_as_unknown_as_a_missing_one,
    e_mail_addresses_are_parsed,
    expected_dates_stay_in_a_sensible_range,
);

fn rfc3339_in(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds)).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn a_token_cannot_be_created_expired(engine: Engine) {
    let s = Server::demo(engine).await;
    let admin = Session::api(&s, "admin");
    let ids: Value = admin.call(Method::GET, "/users", None).await.1;
    let menden = ids["users"].as_array().unwrap().iter().find(|u| u["username"] == "menden").unwrap()["id"].clone();
    for expires_at in ["2020-01-01T00:00:00Z".to_string(), rfc3339_in(-1)] {
        let body = json!({"name": "old", "user_id": menden, "expires_at": expires_at});
        let (status, out) = admin.call(Method::POST, "/tokens", Some(&body)).await;
        assert_eq!((status, out["field"].as_str()), (422, Some("expires_at")), "{expires_at}: {out}");
    }
    let body = json!({"name": "new", "user_id": menden, "expires_at": rfc3339_in(3600)});
    assert_eq!(admin.call(Method::POST, "/tokens", Some(&body)).await.0, 201);

    // The desk: the form's day, yesterday, is refused naming the form's field.
    let desk = Session::demo(&s, "admin").await;
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(2)).format("%Y-%m-%d").to_string();
    let res =
        desk.submit("/intern/tokens", "/intern/tokens", &[("name", "Abgelaufen-Test"), ("expires", &yesterday)]).await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(res.body.contains("<code>expires</code>"), "{}", res.body);
    assert!(!desk.get("/intern/tokens").await.body.contains("Abgelaufen-Test"), "nothing stored");

    // The command line refuses it too.
    let out = s.command(&["token", "add", "--user", "menden", "--name", "old", "--expires", "2020-01-01T00:00:00Z"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expires_at"));
}

async fn someone_elses_token_is_as_unknown_as_a_missing_one(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, other) = (Session::api(&s, "menden"), Session::api(&s, "luedenscheid"));
    let (_, tokens) = menden.call(Method::GET, "/tokens", None).await;
    let id = tokens["tokens"][0]["id"].as_i64().unwrap();
    let (status, theirs) = other.call(Method::DELETE, &format!("/tokens/{id}"), None).await;
    let (missing_status, missing) = other.call(Method::DELETE, "/tokens/999999", None).await;
    assert_eq!((status, missing_status), (404, 404), "{theirs}");
    assert_eq!(theirs, missing, "the same answer: nothing tells that the id exists");
    assert_eq!(menden.call(Method::GET, "/tokens", None).await.1, tokens, "and the token still works");

    // The desk answers the same way.
    let desk = Session::demo(&s, "luedenscheid").await;
    let page = desk.get("/intern/tokens").await;
    let csrf = input_value(&page.body, "csrf").unwrap();
    let theirs = desk.post(&format!("/intern/tokens/{id}/widerrufen"), &[("csrf", &csrf)]).await;
    let missing = desk.post("/intern/tokens/999999/widerrufen", &[("csrf", &csrf)]).await;
    assert_eq!((theirs.status, missing.status), (404, 404));
    assert_eq!(theirs.body, missing.body);
}

async fn e_mail_addresses_are_parsed(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let path = "/municipalities/menden-sauerland/contact";
    let long_local = format!("{}@menden.de", "a".repeat(65));
    // 263 characters in labels of 63: over the 254 a mail server takes.
    let long_address = format!("info@{}.de", vec!["a".repeat(63); 4].join("."));
    for bad in [
        "info",
        "@menden.de",
        "info@",
        "info@menden",
        "info@@menden.de",
        "in fo@menden.de",
        "info@menden.de\r\nBcc: x@evil.example",
        "info@menden.de\nx",
        "info@-menden.de",
        "info@menden-.de",
        "info@menden..de",
        ".info@menden.de",
        "in..fo@menden.de",
        "info@menden.de.",
        "info@127.0.0.1",
        "\"info\"@menden.de",
        "info@men_den.de",
        long_local.as_str(),
        long_address.as_str(),
    ] {
        let (status, out) = menden.call(Method::PUT, path, Some(&json!({"email": bad}))).await;
        assert_eq!((status, out["field"].as_str()), (422, Some("email")), "{bad:?}: {out}");
    }
    for good in ["info@menden.de", "buerger.buero+wahl@stadt.menden.de", "o'neil@xn--mnden-kva.de", "post@müller.de"] {
        let (status, out) = menden.call(Method::PUT, path, Some(&json!({"email": good}))).await;
        assert_eq!(status, 200, "{good}: {out}");
        assert_eq!(out["email"].as_str(), Some(good), "{out}");
    }
}

async fn expected_dates_stay_in_a_sensible_range(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let path = "/municipalities/menden-sauerland/services/fahrzeug-zulassen/statement";
    let today = chrono::Utc::now().date_naive();
    let too_far = (today + chrono::Duration::days(11 * 366)).to_string();
    for bad in ["0000-01-01", "1999-12-31", too_far.as_str()] {
        let body = json!({"level": "limited", "expected_return": bad});
        let (status, out) = menden.call(Method::PUT, path, Some(&body)).await;
        assert_eq!((status, out["field"].as_str()), (422, Some("expected_return")), "{bad}: {out}");
    }
    let next_year = (today + chrono::Duration::days(365)).to_string();
    for good in ["2000-01-01", next_year.as_str(), ""] {
        let body = json!({"level": "limited", "expected_return": good});
        let (status, out) = menden.call(Method::PUT, path, Some(&body)).await;
        assert_eq!(status, 200, "{good}: {out}");
    }
}
