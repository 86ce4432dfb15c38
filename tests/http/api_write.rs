//! The write API under /api/v1: bearer tokens, the authorisation matrix over HTTP, immediate
//! visibility, optimistic concurrency, idempotency keys, request errors, an injection corpus
//! through every text field, and the journal.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Answer, Engine, Server, Session, on_both_engines};

on_both_engines!(
    authorisation_matrix_over_http,
    writes_are_public_at_once,
    stale_versions_get_409_with_the_current_state,
    idempotent_retries_act_once,
    missing_garbage_revoked_and_expired_tokens_get_401,
    malformed_requests_get_413_415_400_and_422_naming_the_field,
    injection_corpus_never_executes_on_public_pages,
    journal_is_filtered_exported_scoped_and_verified,
);

/// (slug, AGS) of the two towns with demo editors.
const MENDEN: (&str, &str) = ("menden-sauerland", "05962040");
const LUEDENSCHEID: (&str, &str) = ("luedenscheid", "05962032");
const OFFICE: &str = "buergerbuero-menden-sauerland";

/// What the public sees of a town: its page and JSON, the news, the FAQ and an alternatives page.
async fn public_view(s: &Server, slug: &str) -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        format!("/kommunen/{slug}"),
        format!("/api/v1/municipalities/{slug}"),
        format!("/api/v1/municipalities/{slug}/services/wohnsitz-anmelden/alternatives"),
        "/api/v1/announcements".to_string(),
        "/meldungen".to_string(),
        "/fragen".to_string(),
        "/kreise/maerkischer-kreis".to_string(),
    ] {
        let (status, body) = s.text(&path).await;
        assert_eq!(status, 200, "{path}");
        out.push(body);
    }
    out
}

async fn user_ids(admin: &Session<'_>) -> std::collections::HashMap<String, i64> {
    let (status, list) = admin.call(Method::GET, "/users", None).await;
    assert_eq!(status, 200, "{list}");
    list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap().to_string(), u["id"].as_i64().unwrap()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The authorisation matrix

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    PutStatement,
    DeleteStatement,
    BulkStatements,
    PostAnnouncement,
    PutAnnouncement,
    DeleteAnnouncement,
    AreaAnnouncement,
    PostFaq,
    PutFaq,
    PostReferral,
    PutReferral,
    DeleteReferral,
    PutContact,
    DistrictStatement,
    DistrictContact,
    PostToken,
    DeleteToken,
    PostUser,
    ListUsers,
}

const OPS: [Op; 19] = [
    Op::PutStatement,
    Op::DeleteStatement,
    Op::BulkStatements,
    Op::PostAnnouncement,
    Op::PutAnnouncement,
    Op::DeleteAnnouncement,
    Op::AreaAnnouncement,
    Op::PostFaq,
    Op::PutFaq,
    Op::PostReferral,
    Op::PutReferral,
    Op::DeleteReferral,
    Op::PutContact,
    Op::DistrictStatement,
    Op::DistrictContact,
    Op::PostToken,
    Op::DeleteToken,
    Op::PostUser,
    Op::ListUsers,
];

/// What the issue asks: admins everything; operators everything but accounts (and only their own
/// tokens); editors only inside their scope and never area-wide, district or account matters;
/// viewers nothing. "Inside" for token revocation means one's own token.
fn allowed(role: &str, inside: bool, op: Op) -> bool {
    match role {
        "admin" => true,
        "operator" => !matches!(op, Op::PostUser | Op::ListUsers) && (inside || op != Op::DeleteToken),
        "editor" => {
            inside
                && !matches!(
                    op,
                    Op::PostUser | Op::ListUsers | Op::AreaAnnouncement | Op::DistrictStatement | Op::DistrictContact
                )
        }
        _ => false,
    }
}

/// What a round of the matrix acts on, made fresh by the admin for each actor and town.
struct Fixtures {
    announcement: String,
    faq: String,
    referral: String,
    token: i64,
}

async fn fixtures(
    admin: &Session<'_>,
    town: (&str, &str),
    token_owner: i64,
    owner_role: &str,
    owner_scopes: Value,
) -> Fixtures {
    let (slug, ags) = town;
    let put = |path: String, body: Value| async move {
        let (status, out) = admin.call(Method::PUT, &path, Some(&body)).await;
        assert_eq!(status, 200, "{path}: {out}");
    };
    put(format!("/municipalities/{slug}/services/meldebescheinigung/statement"), json!({"level": "limited"})).await;
    let post = |path: &'static str, body: Value| async move {
        let (status, out) = admin.call(Method::POST, path, Some(&body)).await;
        assert_eq!(status, 201, "{path}: {out}");
        out
    };
    let announcement = post(
        "/announcements",
        json!({"title": "Matrix", "body": "Fixture", "scope": "municipality", "scope_ref": ags}),
    )
    .await;
    let faq =
        post("/faq", json!({"question": "Matrix?", "answer": "Fixture", "scope": "municipality", "scope_ref": ags}))
            .await;
    let referral =
        post("/referrals", json!({"office_slug": OFFICE, "service_slug": "wohnsitz-anmelden", "for_ags": ags})).await;
    let token = post(
        "/tokens",
        json!({"name": "to-revoke", "user_id": token_owner, "role": owner_role, "scopes": owner_scopes}),
    )
    .await;
    Fixtures {
        announcement: announcement["id"].as_str().unwrap().to_string(),
        faq: faq["id"].as_str().unwrap().to_string(),
        referral: referral["id"].as_str().unwrap().to_string(),
        token: token["id"].as_i64().unwrap(),
    }
}

fn request(op: Op, town: (&str, &str), actor: &str, f: &Fixtures) -> (Method, String, Option<Value>) {
    let (slug, ags) = town;
    let statement = json!({"level": "emergency", "restrictions": format!("matrix {actor}")});
    let town_text =
        json!({"scope": "municipality", "scope_ref": ags, "title": format!("Matrix {actor}"), "body": "Text"});
    match op {
        Op::PutStatement => {
            (Method::PUT, format!("/municipalities/{slug}/services/wohnsitz-anmelden/statement"), Some(statement))
        }
        Op::DeleteStatement => {
            (Method::DELETE, format!("/municipalities/{slug}/services/meldebescheinigung/statement"), None)
        }
        Op::BulkStatements => (
            Method::POST,
            "/statements".into(),
            Some(
                json!({"municipalities": [slug], "services": ["reisepass-beantragen", "ausweis-abholen"], "level": "unavailable"}),
            ),
        ),
        Op::PostAnnouncement => (Method::POST, "/announcements".into(), Some(town_text)),
        Op::PutAnnouncement => (Method::PUT, format!("/announcements/{}", f.announcement), Some(town_text)),
        Op::DeleteAnnouncement => (Method::DELETE, format!("/announcements/{}", f.announcement), None),
        Op::AreaAnnouncement => {
            (Method::POST, "/announcements".into(), Some(json!({"scope": "area", "title": "Area", "body": "All"})))
        }
        Op::PostFaq => (
            Method::POST,
            "/faq".into(),
            Some(json!({"scope": "municipality", "scope_ref": ags, "question": format!("{actor}?"), "answer": "A"})),
        ),
        Op::PutFaq => (
            Method::PUT,
            format!("/faq/{}", f.faq),
            Some(json!({"scope": "municipality", "scope_ref": ags, "question": "Q?", "answer": actor})),
        ),
        Op::PostReferral => (
            Method::POST,
            "/referrals".into(),
            Some(json!({"office_slug": OFFICE, "service_slug": "reisepass-beantragen", "for_ags": ags})),
        ),
        Op::PutReferral => (
            Method::PUT,
            format!("/referrals/{}", f.referral),
            Some(
                json!({"office_slug": OFFICE, "service_slug": "wohnsitz-anmelden", "for_ags": ags, "conditions": actor}),
            ),
        ),
        Op::DeleteReferral => (Method::DELETE, format!("/referrals/{}", f.referral), None),
        Op::PutContact => {
            (Method::PUT, format!("/municipalities/{slug}/contact"), Some(json!({"phone": format!("0 {actor}")})))
        }
        Op::DistrictStatement => (
            Method::PUT,
            "/districts/maerkischer-kreis/services/fahrzeug-zulassen/statement".into(),
            Some(json!({"level": "limited"})),
        ),
        Op::DistrictContact => {
            (Method::PUT, "/districts/maerkischer-kreis/contact".into(), Some(json!({"phone": actor})))
        }
        Op::PostToken => (Method::POST, "/tokens".into(), Some(json!({"name": "matrix", "scopes": [ags]}))),
        Op::DeleteToken => (Method::DELETE, format!("/tokens/{}", f.token), None),
        Op::PostUser => (
            Method::POST,
            "/users".into(),
            Some(json!({"username": format!("m-{actor}-{slug}"), "role": "editor", "scopes": [ags]})),
        ),
        Op::ListUsers => (Method::GET, "/users".into(), None),
    }
}

async fn authorisation_matrix_over_http(engine: Engine) {
    let s = Server::demo(engine).await;
    let admin = Session::api(&s, "admin");
    let ids = user_ids(&admin).await;
    let actors = [("admin", "admin"), ("operator", "krisenstab"), ("editor", "menden"), ("viewer", "pruefung")];
    let mut refused = 0;
    for (role, user) in actors {
        let secret = Session::api(&s, user);
        for (town, inside) in [(MENDEN, true), (LUEDENSCHEID, false)] {
            // The token to revoke: the actor's own inside, someone else's outside.
            let owner = if inside {
                user
            } else if user == "pruefung" {
                "menden"
            } else {
                "pruefung"
            };
            let (owner_role, owner_scopes) = match owner {
                "menden" => ("editor", json!([MENDEN.1])),
                "pruefung" => ("viewer", json!([])),
                _ => (role, json!([])),
            };
            let f = fixtures(&admin, town, ids[owner], owner_role, owner_scopes).await;
            for op in OPS {
                let (method, path, body) = request(op, town, user, &f);
                let expected = allowed(role, inside, op);
                let before = (public_view(&s, town.0).await, admin.journal_len().await);
                let (status, out) = secret.call(method.clone(), &path, body.as_ref()).await;
                let what = format!("{role} {op:?} {} ({method} {path})", town.0);
                if expected {
                    assert!((200..300).contains(&status), "{what} should succeed: {status} {out}");
                } else {
                    refused += 1;
                    // Someone else's token is not found rather than forbidden: ids are not probed.
                    let (code, error) =
                        if op == Op::DeleteToken && !inside { (404, "not_found") } else { (403, "forbidden") };
                    assert_eq!(status, code, "{what} should be refused: {out}");
                    assert_eq!(out["error"], error, "{what}");
                    assert_eq!(admin.journal_len().await, before.1, "{what} added a journal entry");
                    assert!(public_view(&s, town.0).await == before.0, "{what} changed the public view");
                }
            }
        }
    }
    assert!(refused > 50, "{refused} refusals checked");
}

// ---------------------------------------------------------------------------------------------

async fn writes_are_public_at_once(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let body = json!({"level": "normal", "workaround": "Sonderöffnung am Samstag", "expected_return": "2026-12-15"});
    let (status, stored) = menden
        .call(Method::PUT, "/municipalities/menden-sauerland/services/fahrzeug-zulassen/statement", Some(&body))
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        (stored["level"].as_str(), stored["scope_ags"].as_str(), stored["author"].as_str()),
        (Some("normal"), Some(MENDEN.1), Some("token:test-menden"))
    );
    // No waiting: the next read already shows it, in the API and on the page.
    let (_, town) = s.json("/api/v1/municipalities/menden-sauerland").await;
    let entry =
        town["services"].as_array().unwrap().iter().find(|e| e["service"]["slug"] == "fahrzeug-zulassen").unwrap();
    assert_eq!((entry["level"].as_str(), entry["source"].as_str()), (Some("normal"), Some("municipality")), "{entry}");
    assert_eq!(entry["workaround"], "Sonderöffnung am Samstag");
    let (_, page) = s.text("/kommunen/menden-sauerland/leistungen/fahrzeug-zulassen").await;
    assert!(page.contains("Sonderöffnung am Samstag"), "service page shows the statement");

    let a = json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Bürgerbüro wieder geöffnet", "body": "Ab **sofort**."});
    let (status, created) = menden.call(Method::POST, "/announcements", Some(&a)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);
    let (_, news) = s.json("/api/v1/announcements?municipality=menden-sauerland").await;
    assert!(
        news["announcements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == created["id"] && n["body_html"].as_str().unwrap().contains("<strong>sofort</strong>"))
    );
    let (status, page) = s.text(&format!("/meldungen/{}", created["id"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    assert!(page.contains("Bürgerbüro wieder geöffnet"));

    let (status, contact) = menden
        .call(
            Method::PUT,
            "/municipalities/menden-sauerland/contact",
            Some(&json!({"phone": "02373 903-0", "website": "https://www.menden.de"})),
        )
        .await;
    assert_eq!(status, 200, "{contact}");
    let (_, town) = s.json("/api/v1/municipalities/menden-sauerland").await;
    assert_eq!(town["contact"]["phone"], "02373 903-0");
    assert_eq!(town["contact"]["email"], Value::Null, "PUT replaces every channel");

    // A bulk statement over a whole service area.
    let bulk = json!({"municipalities": ["menden-sauerland"], "areas": ["registration"], "level": "unavailable", "workaround": "Kreishaus Iserlohn"});
    let (status, out) = menden.call(Method::POST, "/statements", Some(&bulk)).await;
    assert_eq!(status, 200, "{out}");
    let (_, town) = s.json("/api/v1/municipalities/menden-sauerland").await;
    let registration: Vec<&Value> =
        town["services"].as_array().unwrap().iter().filter(|e| e["service"]["area"] == "registration").collect();
    assert_eq!(out["statements"].as_array().unwrap().len(), registration.len());
    assert!(registration.iter().all(|e| e["level"] == "unavailable" && e["workaround"] == "Kreishaus Iserlohn"));

    // Withdrawn: the town falls back to the district's statement.
    let (status, _) = menden
        .call(Method::DELETE, "/municipalities/menden-sauerland/services/fahrzeug-zulassen/statement", None)
        .await;
    assert_eq!(status, 204);
    let (_, town) = s.json("/api/v1/municipalities/menden-sauerland").await;
    let entry =
        town["services"].as_array().unwrap().iter().find(|e| e["service"]["slug"] == "fahrzeug-zulassen").unwrap();
    assert_eq!(entry["source"], "district", "{entry}");
}

async fn stale_versions_get_409_with_the_current_state(engine: Engine) {
    let s = Server::demo(engine).await;
    let (anna, ben) = (Session::api(&s, "menden"), Session::api(&s, "admin"));
    let path = "/municipalities/menden-sauerland/services/geburtsurkunde/statement";
    let res = anna.send(anna.api_request(Method::PUT, path).json(&json!({"level": "limited"}))).await;
    let etag = res.headers["etag"].to_str().unwrap().to_string();
    let first: Value = res.json();
    let v = first["version"].as_i64().unwrap();
    assert_eq!(etag, format!("\"{v}\""));
    // Ben saves on top of that version; Anna, still looking at it, is refused.
    let ben_req = ben.api_request(Method::PUT, path).header("if-match", &etag);
    let (status, second) = ben.json(ben_req.json(&json!({"level": "emergency", "workaround": "Ben's"}))).await;
    assert_eq!((status, second["version"].as_i64()), (200, Some(v + 1)), "{second}");
    let anna_req = anna.api_request(Method::PUT, path).header("if-match", &etag);
    let (status, conflict) = anna.json(anna_req.json(&json!({"level": "normal"}))).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"], "conflict");
    assert_eq!(
        (conflict["current"]["version"].as_i64(), conflict["current"]["workaround"].as_str()),
        (Some(v + 1), Some("Ben's"))
    );
    // The same with the version in the body, and for withdrawal; "0" means "there was none".
    let (status, _) = anna.call(Method::PUT, path, Some(&json!({"level": "normal", "version": v}))).await;
    assert_eq!(status, 409);
    let stale_delete = anna.api_request(Method::DELETE, path).header("if-match", &etag);
    assert_eq!(anna.json(stale_delete).await.0, 409);
    let fresh_path = "/municipalities/menden-sauerland/services/elterngeld/statement";
    let (status, created) = anna.call(Method::PUT, fresh_path, Some(&json!({"level": "limited", "version": 0}))).await;
    assert_eq!((status, created["version"].as_i64()), (200, Some(1)), "{created}");
    assert_eq!(anna.call(Method::PUT, fresh_path, Some(&json!({"level": "limited", "version": 0}))).await.0, 409);
    let (_, town) = s.json("/api/v1/municipalities/menden-sauerland").await;
    let entry = town["services"].as_array().unwrap().iter().find(|e| e["service"]["slug"] == "geburtsurkunde").unwrap();
    assert_eq!(entry["workaround"], "Ben's", "the refused saves changed nothing");

    // Announcements, FAQ entries and contact channels are versioned the same way.
    let text = json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Hinweis", "body": "Eins"});
    let (_, a) = anna.call(Method::POST, "/announcements", Some(&text)).await;
    let a_path = format!("/announcements/{}", a["id"].as_str().unwrap());
    let (status, a2) = ben.call(Method::PUT,
        &a_path,
        Some(
            &json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Hinweis", "body": "Zwei", "version": 1}),
        ),
    )
    .await;
    assert_eq!((status, a2["version"].as_i64()), (200, Some(2)), "{a2}");
    let (status, c) = anna.call(Method::PUT,
        &a_path,
        Some(
            &json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Hinweis", "body": "Drei", "version": 1}),
        ),
    )
    .await;
    assert_eq!(
        (status, c["current"]["body"].as_str(), c["current"]["version"].as_i64()),
        (409, Some("Zwei"), Some(2)),
        "{c}"
    );

    let faq = json!({"scope": "municipality", "scope_ref": MENDEN.1, "question": "Wann?", "answer": "Bald"});
    let (_, f) = anna.call(Method::POST, "/faq", Some(&faq)).await;
    let f_path = format!("/faq/{}", f["id"].as_str().unwrap());
    assert_eq!(ben.call(Method::PUT, &f_path, Some(&json!({"scope": "municipality", "scope_ref": MENDEN.1, "question": "Wann?", "answer": "Morgen", "version": 1}))).await.0, 200);
    assert_eq!(anna.call(Method::PUT, &f_path, Some(&json!({"scope": "municipality", "scope_ref": MENDEN.1, "question": "Wann?", "answer": "Heute", "version": 1}))).await.0, 409);

    let (_, c1) =
        anna.call(Method::PUT, "/municipalities/menden-sauerland/contact", Some(&json!({"phone": "1"}))).await;
    let cv = c1["version"].as_i64().unwrap();
    assert_eq!(
        ben.call(Method::PUT, "/municipalities/menden-sauerland/contact", Some(&json!({"phone": "2", "version": cv})))
            .await
            .0,
        200
    );
    let (status, c) = anna
        .call(Method::PUT, "/municipalities/menden-sauerland/contact", Some(&json!({"phone": "3", "version": cv})))
        .await;
    assert_eq!((status, c["current"]["version"].as_i64()), (409, Some(cv + 1)), "{c}");
    // Header and body must not disagree.
    let both = anna.api_request(Method::PUT, "/municipalities/menden-sauerland/contact").header("if-match", "\"7\"");
    let (status, out) = anna.json(both.json(&json!({"phone": "4", "version": 8}))).await;
    assert_eq!((status, out["field"].as_str()), (422, Some("version")), "{out}");
}

async fn idempotent_retries_act_once(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (Session::api(&s, "menden"), Session::api(&s, "admin"));
    let body = json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Einmal", "body": "Nur einmal."});
    async fn post(key: &str, body: &Value, who: &Session<'_>) -> Answer {
        who.send(who.api_request(Method::POST, "/announcements").header("idempotency-key", key).json(body)).await
    }
    let before = admin.journal_len().await;
    let first = post("retry-1", &body, &menden).await;
    assert_eq!(first.status, 201);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let first: Value = first.json();
    let again = post("retry-1", &body, &menden).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json(), first, "the same answer again");
    assert_eq!(admin.journal_len().await, before + 1, "acted once");
    let (_, news) = s.json("/api/v1/announcements").await;
    assert_eq!(news["announcements"].as_array().unwrap().iter().filter(|a| a["title"] == "Einmal").count(), 1);

    // The same key with another body is an error, and does not act.
    let other = json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Anders", "body": "?"});
    let (status, out) = menden
        .json(menden.api_request(Method::POST, "/announcements").header("idempotency-key", "retry-1").json(&other))
        .await;
    assert_eq!((status, out["error"].as_str()), (422, Some("idempotency_key_reused")), "{out}");
    assert_eq!(admin.journal_len().await, before + 1);

    // Keys belong to their principal: another token's same key acts on its own.
    assert_eq!(post("retry-1", &body, &admin).await.status, 201);
    // A refused request keeps nothing, so the key can be used for the corrected request.
    let outside = json!({"scope": "municipality", "scope_ref": LUEDENSCHEID.1, "title": "Falsch", "body": "x"});
    assert_eq!(post("retry-2", &outside, &menden).await.status, 403);
    let corrected = json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Richtig", "body": "x"});
    assert_eq!(post("retry-2", &corrected, &menden).await.status, 201);

    // Two identical requests at the same time still act once: the second waits its turn (409) or replays.
    let before = admin.journal_len().await;
    let bulk = json!({"municipalities": ["menden-sauerland"], "services": ["briefwahl"], "level": "limited"});
    let send =
        || menden.send(menden.api_request(Method::POST, "/statements").header("idempotency-key", "race").json(&bulk));
    let (a, b) = tokio::join!(send(), send());
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert!(statuses == [200, 200] || statuses == [200, 409], "{statuses:?}");
    assert_eq!(admin.journal_len().await, before + 1);

    // Secrets are not kept for replays: the retried token creation names the same token, without its secret.
    let token_request =
        || menden.api_request(Method::POST, "/tokens").header("idempotency-key", "tok").json(&json!({"name": "cms"}));
    let (status, created) = menden.json(token_request()).await;
    assert_eq!(status, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("nb_"));
    let (status, replayed) = menden.json(token_request()).await;
    assert_eq!((status, &replayed["id"], replayed.get("secret")), (201, &created["id"], None), "{replayed}");

    // Malformed keys are refused before anything happens.
    for key in ["", &"k".repeat(201)] {
        let (status, out) = menden
            .json(menden.api_request(Method::POST, "/statements").header("idempotency-key", key).json(&bulk))
            .await;
        assert_eq!((status, out["error"].as_str()), (400, Some("bad_request")), "{key:?}");
    }
}

async fn missing_garbage_revoked_and_expired_tokens_get_401(engine: Engine) {
    let s = Server::demo(engine).await;
    let admin = Session::api(&s, "admin");
    let body = json!({"level": "unavailable"});
    let path = "/api/v1/municipalities/menden-sauerland/services/wohnsitz-anmelden/statement";
    let before = s.text("/api/v1/municipalities/menden-sauerland").await;
    let anonymous = &Session::new(&s);
    let expect_401 = |req: reqwest::RequestBuilder, what: &'static str| async move {
        let res = anonymous.send(req).await;
        assert_eq!(res.status, 401, "{what}");
        assert!(res.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{what}");
        let out: Value = res.json();
        assert_eq!(out["error"], "unauthorized", "{what}");
    };
    let put = || anonymous.request(Method::PUT, path);
    expect_401(put().json(&body), "no token").await;
    expect_401(put().bearer_auth("nb_garbage").json(&body), "garbage").await;
    expect_401(put().bearer_auth("").json(&body), "empty").await;
    expect_401(put().basic_auth("admin", Some("demo-admin-passwort")).json(&body), "basic auth").await;
    expect_401(anonymous.request(Method::GET, "/api/v1/journal"), "reads of internal data too").await;

    // Revoked: the token's owner revokes it; the next request is refused.
    let menden = Session::api(&s, "menden");
    let (status, tokens) = menden.call(Method::GET, "/tokens", None).await;
    assert_eq!(status, 200);
    let own: Vec<&Value> = tokens["tokens"].as_array().unwrap().iter().collect();
    assert!(own.iter().all(|t| t["name"] == "test-menden") && !own.is_empty(), "only one's own tokens: {tokens}");
    assert!(!tokens.to_string().contains("nb_"), "no secrets in listings");
    let id = own[0]["id"].as_i64().unwrap();
    assert_eq!(menden.call(Method::DELETE, &format!("/tokens/{id}"), None).await.0, 204);
    expect_401(put().bearer_auth(menden.secret()).json(&body), "revoked").await;

    // A token cannot be made expired; this one expires two seconds after it is made.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let out = s.command(&["token", "add", "--user", "menden", "--name", "old", "--expires", &soon]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expired = String::from_utf8(out.stdout).unwrap().trim().to_string();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    expect_401(put().bearer_auth(&expired).json(&body), "expired").await;

    assert_eq!(s.text("/api/v1/municipalities/menden-sauerland").await, before, "nothing changed");
    let (_, all) = admin.call(Method::GET, "/tokens", None).await;
    assert!(all["tokens"].as_array().unwrap().len() >= 3, "admins list every token: {all}");
}

async fn malformed_requests_get_413_415_400_and_422_naming_the_field(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let path = "/municipalities/menden-sauerland/services/wohnsitz-anmelden/statement";
    let put = |content_type: &'static str, body: String| {
        menden.api_request(Method::PUT, path).header("content-type", content_type).body(body)
    };

    let huge = json!({"level": "limited", "workaround": "x".repeat(300 * 1024)}).to_string();
    let (status, out) = menden.json(put("application/json", huge)).await;
    assert_eq!((status, out["error"].as_str()), (413, Some("payload_too_large")), "{out}");
    // The API's limit is 256 KiB, above the site's 64 KiB: a long announcement of four-byte
    // characters (80 KB) is accepted.
    let long = json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Lang", "body": "😀".repeat(19_000)});
    assert!(long.to_string().len() > 64 * 1024);
    assert_eq!(menden.call(Method::POST, "/announcements", Some(&long)).await.0, 201);

    let (status, out) = menden.json(put("text/plain", r#"{"level": "limited"}"#.into())).await;
    assert_eq!((status, out["error"].as_str()), (415, Some("unsupported_media_type")));
    let (status, _) = menden.json(menden.api_request(Method::PUT, path).body(r#"{"level": "limited"}"#)).await;
    assert_eq!(status, 415, "no content type");
    let (status, out) = menden.json(put("application/json", r#"{"level": "limited""#.into())).await;
    assert_eq!((status, out["error"].as_str()), (400, Some("bad_request")));
    assert_eq!(menden.json(put("application/json; charset=utf-8", r#"{"level": "limited"}"#.into())).await.0, 200);

    for (body, field, key) in [
        (r#"{"level": "limited", "colour": "red"}"#, "colour", "unknown"),
        (r#"{"level": "kaputt"}"#, "level", "normal, limited"),
        (r#"{"level": "limited", "backlog": 3}"#, "backlog", "type"),
        (r#"{"restrictions": "x"}"#, "level", ""),
        (r#"{"level": "limited", "expected_return": "bald"}"#, "expected_return", ""),
        (r#"{"level": "limited", "workaround": "a\u0000b"}"#, "workaround", ""),
        (r#"["limited"]"#, "body", ""),
    ] {
        let res = menden
            .api_request(Method::PUT, path)
            .header("accept-language", "en")
            .header("content-type", "application/json")
            .body(body);
        let (status, out) = menden.json(res).await;
        assert_eq!(
            (status, out["error"].as_str(), out["field"].as_str()),
            (422, Some("invalid"), Some(field)),
            "{body}: {out}"
        );
        assert!(out["message"].as_str().unwrap().contains(key), "{body}: {out}");
    }
    // Unknown fields are rejected on every kind of body, nested inputs included.
    for (path, body, field) in [
        (
            "/statements",
            json!({"municipalities": ["menden-sauerland"], "services": ["briefwahl"], "level": "limited", "servcies": []}),
            "servcies",
        ),
        ("/announcements", json!({"scope": "area", "title": "t", "body": "b", "published": true}), "published"),
        (
            "/referrals",
            json!({"office_slug": OFFICE, "service_slug": "briefwahl", "for_ags": MENDEN.1, "note": ""}),
            "note",
        ),
        (
            "/statements",
            json!({"municipalities": ["menden-sauerland"], "areas": ["weather"], "level": "limited"}),
            "areas",
        ),
        (
            "/statements",
            json!({"municipalities": ["atlantis"], "services": ["briefwahl"], "level": "limited"}),
            "municipalities",
        ),
    ] {
        let (status, out) = menden.call(Method::POST, path, Some(&body)).await;
        assert_eq!((status, out["field"].as_str()), (422, Some(field)), "{path}: {out}");
    }
    let (status, out) = menden
        .call(Method::PUT, "/municipalities/atlantis/services/briefwahl/statement", Some(&json!({"level": "limited"})))
        .await;
    assert_eq!((status, out["error"].as_str()), (404, Some("not_found")));
    let (status, _) = menden
        .call(Method::PUT, "/municipalities/Menden!/services/briefwahl/statement", Some(&json!({"level": "limited"})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = menden.call(Method::DELETE, "/tokens/abc", None).await;
    assert_eq!(status, 400);
    let bad_if_match =
        menden.api_request(Method::PUT, path).header("if-match", "soon").json(&json!({"level": "limited"}));
    assert_eq!(menden.json(bad_if_match).await.0, 400);
    // Methods a route does not have get 405 with the real Allow header.
    let res = Session::new(&s).get("/api/v1/statements").await;
    assert_eq!(res.status, 405);
    assert_eq!(res.headers["allow"], "POST");
}

// ---------------------------------------------------------------------------------------------
// Injection corpus

/// Classic script-injection and template payloads; every one goes into every text field.
fn corpus() -> Vec<String> {
    let mut c: Vec<String> = [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(document.cookie)",
        "<svg onload=alert(1)>",
        "<svg><script>alert(1)</script></svg>",
        "{{7*7}}",
        "{% for x in range(3) %}boom{% endfor %}",
        "${7*7} #{7*7} <%= 7*7 %>",
        "'; DROP TABLE statements; --",
        "\" OR 1=1 --",
        "\u{202E}cod.exe\u{202C} rechts-nach-links",
        "<iframe src=\"javascript:alert(1)\"></iframe>",
        "<a href=\"javascript:alert(1)\">klick</a>",
        "[klick](javascript:alert(1)) und ![bild](javascript:alert(2))",
        "<IMG SRC=JaVaScRiPt:alert('XSS')>",
        "<body onload=alert(1)>",
        "</textarea><script>alert(1)</script>",
        "\" onmouseover=\"alert(1)",
        "' onfocus='alert(1)' autofocus='",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>",
        "<style>body{display:none}</style>",
        "<object data=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\"></object>",
        "Zeile 1\r\nSet-Cookie: x=1",
        "nul\u{0}byte",
        "\u{200B}\u{FEFF}unsichtbar",
        "https://example.org/\"><script>alert(1)</script>",
        "https://example.org/?q=<svg/onload=alert(1)>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.push(format!("{}<script>alert(1)</script>", "Sehr lang ".repeat(195)));
    c
}

/// Where a page could run something: a script, frame or object element, an event handler
/// attribute, or a javascript: address. Text that merely looks like markup is escaped and so
/// never starts a tag.
fn executable_markup(page: &str) -> Option<String> {
    let lower = page.to_lowercase();
    for tag in lower.split('<').skip(1).map(|t| t.split('>').next().unwrap_or("")) {
        let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let dangerous = ["script", "iframe", "object", "embed"].contains(&name.as_str())
            || attributes(&tag[name.len()..]).iter().any(|(attr, value)| {
                attr.starts_with("on")
                    || (["href", "src", "action", "formaction", "xlink:href", "data"].contains(&attr.as_str())
                        && value.trim_start().starts_with("javascript:"))
            });
        if dangerous {
            return Some(tag.chars().take(100).collect());
        }
    }
    None
}

/// The attributes of a tag's inside (after its name): name and value, quoted or not.
fn attributes(mut rest: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '/').unwrap_or(rest.len());
        if name_end == 0 {
            return out;
        }
        let name = rest[..name_end].to_string();
        rest = rest[name_end..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (v, tail) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => after[1..].split_once(q).unwrap_or((&after[1..], "")),
                _ => after.split_at(after.find(char::is_whitespace).unwrap_or(after.len())),
            };
            value = v.to_string();
            rest = tail;
        }
        out.push((name, value));
    }
}

#[test]
fn the_checker_finds_what_would_execute_and_passes_escaped_text() {
    for bad in [
        "<p>x</p><SCRIPT src=//x></script>",
        "<img src=x onerror=alert(1)>",
        "<a href='javascript:alert(1)'>x</a>",
        "<a href=JavaScript:alert(1)>x</a>",
        "<svg/onload=alert(1)>",
        "<iframe src=x>",
    ] {
        assert!(executable_markup(bad).is_some(), "{bad}");
    }
    for fine in [
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; onerror=alert(1) javascript:alert(1)</p>",
        "<a href=\"https://example.org/&#34;&gt;&lt;script&gt;\" title=\"x onerror=y\">x</a>",
        "<img src=\"x\" alt=\"javascript:\">",
    ] {
        assert_eq!(executable_markup(fine), None, "{fine}");
    }
}

async fn injection_corpus_never_executes_on_public_pages(engine: Engine) {
    let s = Server::demo(engine).await;
    let admin = Session::api(&s, "admin");
    let (_, towns) = s.json("/api/v1/municipalities").await;
    let towns: Vec<String> =
        towns["municipalities"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap().to_string()).collect();
    let (_, services) = s.json("/api/v1/services").await;
    let services: Vec<String> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["responsibility"] == "municipality")
        .map(|s| s["slug"].as_str().unwrap().to_string())
        .collect();
    let corpus = corpus();
    assert!(corpus.len() >= 15 && services.len() >= corpus.len() && towns.len() >= corpus.len());

    let mut pages = vec![
        "/".to_string(),
        "/meldungen".into(),
        "/fragen".into(),
        "/en/fragen".into(),
        "/kommunen/menden-sauerland".into(),
    ];
    let mut stored = 0;
    for (i, payload) in corpus.iter().enumerate() {
        let (service, town) = (&services[i], &towns[i]);
        // Every write is stored as written or refused naming the field; never a server error.
        let mut write = async |method: Method, path: String, body: Value| -> Value {
            let (status, out) = admin.call(method, &path, Some(&body)).await;
            assert!(
                (200..300).contains(&status) || (status == 422 && out["field"].is_string()),
                "{path} {payload:?}: {status} {out}"
            );
            if status < 300 {
                stored += 1;
            }
            out
        };
        let text = json!({"level": "emergency", "restrictions": payload, "workaround": payload, "backlog": payload});
        let st =
            write(Method::PUT, format!("/municipalities/menden-sauerland/services/{service}/statement"), text).await;
        if st["restrictions"].is_string() {
            assert_eq!(st["restrictions"].as_str().unwrap(), payload.trim().replace("\r\n", "\n"), "stored as written");
        }
        write(
            Method::POST,
            "/referrals".into(),
            json!({"office_slug": OFFICE, "service_slug": service, "for_ags": MENDEN.1, "conditions": payload}),
        )
        .await;
        pages.push(format!("/kommunen/menden-sauerland/leistungen/{service}"));
        pages.push(format!("/en/kommunen/menden-sauerland/leistungen/{service}"));

        let a = write(
            Method::POST,
            "/announcements".into(),
            json!({"scope": "area", "title": format!("Meldung {i} {payload}"), "body": payload}),
        )
        .await;
        if let Some(id) = a["id"].as_str() {
            pages.push(format!("/meldungen/{id}"));
        }
        write(
            Method::POST,
            "/faq".into(),
            json!({"scope": "area", "question": format!("Frage {i} {payload}"), "answer": payload}),
        )
        .await;

        let contact = json!({
            "phone": payload, "email": format!("{payload}@example.org"), "website": payload,
            "emergency_website": format!("https://example.org/{payload}"), "social_media": format!("{payload}\nhttps://social.example/{payload}"),
        });
        let (status, _) = admin.call(Method::PUT, &format!("/municipalities/{town}/contact"), Some(&contact)).await;
        assert!(status == 200 || status == 422, "{status}");
        // Field by field too, so a rejected neighbour does not hide one.
        for field in ["phone", "email", "website", "emergency_website", "social_media"] {
            write(Method::PUT, format!("/municipalities/{town}/contact"), json!({ field: payload })).await;
        }
        write(Method::PUT, format!("/municipalities/{town}/contact"), contact).await;
        pages.push(format!("/kommunen/{town}"));
    }
    assert!(stored > corpus.len() * 5, "most payloads are stored as written ({stored})");

    for path in pages
        .iter()
        .chain(["/feeds/meldungen.atom".to_string(), "/kommunen/menden-sauerland/meldungen.atom".to_string()].iter())
    {
        let (status, page) = s.text(path).await;
        assert_eq!(status, 200, "{path}");
        if !path.ends_with(".atom") {
            assert!(page.trim_end().ends_with("</html>"), "{path} renders completely");
        }
        assert_eq!(executable_markup(&page), None, "{path}");
    }
    let (_, page) = s.text("/fragen").await;
    assert!(page.contains("{{7*7}}") && !page.contains("Frage 6 49"), "templates are not evaluated");

    for path in ["/api/v1/announcements", "/api/v1/municipalities/menden-sauerland", "/api/v1/municipalities"] {
        let (status, body) = s.json(path).await;
        assert_eq!(status, 200, "{path}");
        for a in body["announcements"].as_array().into_iter().flatten() {
            assert_eq!(executable_markup(a["body_html"].as_str().unwrap()), None, "{}", a["body_html"]);
        }
    }
    for town in &towns[..corpus.len()] {
        let (_, t) = s.json(&format!("/api/v1/municipalities/{town}")).await;
        for field in ["website", "emergency_website"] {
            let url = &t["contact"][field];
            assert!(url.is_null() || url.as_str().unwrap().starts_with("https://"), "{town} {field}: {url}");
        }
    }
    for service in &services[..corpus.len()] {
        let (status, alt) =
            s.json(&format!("/api/v1/municipalities/menden-sauerland/services/{service}/alternatives")).await;
        assert_eq!(status, 200, "{alt}");
    }
}

// ---------------------------------------------------------------------------------------------

async fn journal_is_filtered_exported_scoped_and_verified(engine: Engine) {
    let s = Server::demo(engine).await;
    let (admin, menden, luedenscheid, viewer) = (
        Session::api(&s, "admin"),
        Session::api(&s, "menden"),
        Session::api(&s, "luedenscheid"),
        Session::api(&s, "pruefung"),
    );
    for (secret, slug) in [(&menden, MENDEN.0), (&luedenscheid, LUEDENSCHEID.0)] {
        let (status, _) = secret
            .call(
                Method::PUT,
                &format!("/municipalities/{slug}/services/briefwahl/statement"),
                Some(&json!({"level": "limited"})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let area = json!({"scope": "area", "title": "Für alle", "body": "x"});
    assert_eq!(admin.call(Method::POST, "/announcements", Some(&area)).await.0, 201);

    let entries = |body: &Value| body["entries"].as_array().unwrap().clone();
    let (status, all) = viewer.call(Method::GET, "/journal", None).await;
    assert_eq!(status, 200, "viewers read the journal");
    let all = entries(&all);
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {seqs:?}");
    for scope in [MENDEN.1, LUEDENSCHEID.1, "area"] {
        assert!(all.iter().any(|e| e["scope"] == scope), "{scope}");
    }

    let (_, statements) = admin.call(Method::GET, "/journal?kind=statement", None).await;
    assert!(entries(&statements).iter().all(|e| e["kind"].as_str().unwrap().starts_with("statement")));
    let (_, by_author) = admin.call(Method::GET, "/journal?author=token:test-menden", None).await;
    let by_author = entries(&by_author);
    assert_eq!(by_author.len(), 1);
    let payload: Value = serde_json::from_str(by_author[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!((payload["service"].as_str(), payload["level"].as_str()), (Some("briefwahl"), Some("limited")));
    let (_, scoped) =
        admin.call(Method::GET, &format!("/journal?scope={}&kind=statement.set", LUEDENSCHEID.1), None).await;
    assert!(entries(&scoped).iter().all(|e| e["scope"] == LUEDENSCHEID.1) && !entries(&scoped).is_empty());
    let (_, limited) = admin.call(Method::GET, "/journal?limit=2", None).await;
    assert_eq!(entries(&limited).len(), 2);
    let (_, future) = admin.call(Method::GET, "/journal?since=2999-01-01", None).await;
    assert!(entries(&future).is_empty());
    let (_, past) = admin.call(Method::GET, "/journal?until=2000-01-01T00:00:00Z", None).await;
    assert!(entries(&past).is_empty());
    let (_, today) = admin.call(Method::GET, "/journal?since=2000-01-01&until=2999-01-01", None).await;
    assert_eq!(entries(&today).len(), all.len());
    for (query, status, field) in [
        ("since=gestern", 422, Some("since")),
        ("format=xml", 422, Some("format")),
        ("limit=0", 422, Some("limit")),
        ("colour=red", 400, None),
    ] {
        let (got, out) = admin.call(Method::GET, &format!("/journal?{query}"), None).await;
        assert_eq!((got, out["field"].as_str()), (status, field), "{query}: {out}");
    }

    // Editors see only their own towns' entries.
    let (status, own) = menden.call(Method::GET, "/journal", None).await;
    assert_eq!(status, 200);
    let own = entries(&own);
    assert!(!own.is_empty() && own.iter().all(|e| e["scope"] == MENDEN.1), "{own:?}");
    let (_, other) = menden.call(Method::GET, &format!("/journal?scope={}", LUEDENSCHEID.1), None).await;
    assert!(entries(&other).is_empty());

    // CSV export: the same entries with a header line.
    let res = admin.send(admin.api_request(Method::GET, "/journal?format=csv")).await;
    assert_eq!(res.status, 200);
    assert!(res.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = res.body;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("seq,at,author,scope,kind,payload,prev_hash,hash"));
    assert!(csv.contains("token:test-menden") && csv.contains("announcement.create"));
    let records = csv.lines().skip(1).filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit())).count();
    assert_eq!(records, all.len());
    let csv = menden.send(menden.api_request(Method::GET, "/journal?format=csv")).await.body;
    assert!(!csv.contains(LUEDENSCHEID.1) && csv.contains(MENDEN.1), "editors' export is scoped too");

    let (status, check) = menden.call(Method::GET, "/journal/verify", None).await;
    assert_eq!(status, 200);
    assert_eq!(check["intact"], true, "{check}");
    // Every entry from 1 to the newest (the listing above is one page of the demo's long journal).
    assert_eq!(check["entries"].as_u64(), Some(seqs[0] as u64));
    assert_eq!(check["head_seq"].as_i64(), Some(seqs[0]));
    assert_eq!(check["head_hash"], all[0]["hash"]);
}
