//! Writes under concurrency: two requests at the same moment for every write kind that has a
//! version or a gate; the loser is refused (409 with the current state or the unmet conditions)
//! and nothing of it is stored or journaled. Two instances on one PostgreSQL, the second with a
//! slow poll, decide on the stored rows, not on their snapshots. A committed write whose
//! snapshot rebuild fails is still done, `/healthz` says so, and a retry with the same
//! Idempotency-Key replays instead of acting again. Reads are answered while another connection
//! holds the database's write lock.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Answer, Engine, Server, Session, eventually, on_both_engines};

on_both_engines!(
    concurrent_statement_saves_with_one_version,
    concurrent_announcement_saves,
    concurrent_faq_saves_with_one_version,
    concurrent_contact_saves_with_one_version,
    concurrent_description_saves_with_one_version,
    dependencies_from_both_sides_never_store_a_cycle,
    a_step_back_and_the_release_of_its_dependent,
    a_rollout_and_a_step_back,
    a_committed_write_is_done_although_the_rebuild_fails,
    every_idempotent_route_stores_its_answer_with_the_write,
    reads_are_answered_while_another_connection_holds_the_write_lock,
);

mod two_instances {
    #[tokio::test]
    async fn a_rollout_on_a_stale_instance_is_refused() {
        if crate::postgres_base_url().is_none() {
            eprintln!("SKIPPED: set NOTBETRIEB_TEST_POSTGRES_URL to run the two-instance tests");
            return;
        }
        super::rollout_on_a_stale_instance().await
    }
    #[tokio::test]
    async fn a_description_save_on_a_stale_instance_is_refused() {
        if crate::postgres_base_url().is_none() {
            eprintln!("SKIPPED: set NOTBETRIEB_TEST_POSTGRES_URL to run the two-instance tests");
            return;
        }
        super::description_on_a_stale_instance().await
    }
}

const ROUNDS: usize = 8;
const MENDEN: (&str, &str) = ("menden-sauerland", "05962040");

/// Journal entries after `seq`: (kind, payload).
async fn entries_after(admin: &Session<'_>, seq: u64) -> Vec<(String, Value)> {
    let (status, page) = admin.call(Method::GET, "/journal?limit=500", None).await;
    assert_eq!(status, 200, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() > seq)
        .map(|e| {
            (e["kind"].as_str().unwrap().to_string(), serde_json::from_str(e["payload"].as_str().unwrap()).unwrap())
        })
        .collect()
}

/// Two requests sent at the same moment.
async fn both<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future,
    B: std::future::Future,
{
    tokio::join!(a, b)
}

/// A PUT of `body` to /api/v1`path` with `If-Match: if_match`.
fn put_if_match(who: &Session<'_>, path: &str, body: &Value, if_match: &str) -> reqwest::RequestBuilder {
    who.api_request(Method::PUT, path).header("if-match", if_match).json(body)
}

/// Of two answers to competing saves with one version: exactly one 200, the other 409 with the
/// winner's version as `current.version`; returns which one won (0 or 1).
fn one_wins(answers: [&Answer; 2], new_version: i64) -> usize {
    let statuses = [answers[0].status, answers[1].status];
    assert!(statuses == [200, 409] || statuses == [409, 200], "{statuses:?}: {:?}", answers);
    let (winner, loser) = if statuses[0] == 200 { (0, 1) } else { (1, 0) };
    assert_eq!(answers[winner].json()["version"], new_version, "{:?}", answers[winner]);
    assert_eq!(
        answers[winner].headers["etag"],
        format!("\"{new_version}\""),
        "the ETag is the version this write produced"
    );
    assert_eq!(answers[loser].json()["error"], "conflict", "{:?}", answers[loser]);
    assert_eq!(answers[loser].json()["current"]["version"], new_version, "the loser sees the winner's version");
    winner
}

async fn concurrent_statement_saves_with_one_version(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (Session::api(&s, "menden"), Session::api(&s, "admin"));
    let path = format!("/municipalities/{}/services/briefwahl/statement", MENDEN.0);
    let (status, current) = menden.call(Method::PUT, &path, Some(&json!({"level": "normal"}))).await;
    assert_eq!(status, 200, "{current}");
    let start = current["version"].as_i64().unwrap();
    for (round, version) in (0..ROUNDS).zip(start..) {
        let before = admin.journal_len().await;
        let if_match = format!("\"{version}\"");
        let levels = ["limited", "unavailable"];
        let (a, b) = both(
            menden.send(put_if_match(&menden, &path, &json!({"level": levels[0]}), &if_match)),
            menden.send(put_if_match(&menden, &path, &json!({"level": levels[1]}), &if_match)),
        )
        .await;
        let winner = one_wins([&a, &b], version + 1);
        assert_eq!(admin.journal_len().await, before + 1, "round {round}: only the winner is journaled");
        let (_, town) = s.json(&format!("/api/v1/municipalities/{}", MENDEN.0)).await;
        let stored = town["services"].as_array().unwrap().iter().find(|x| x["service"]["slug"] == "briefwahl").unwrap();
        assert_eq!(stored["level"], levels[winner], "round {round}: the winner's save is stored");
    }
}

async fn concurrent_announcement_saves(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (Session::api(&s, "menden"), Session::api(&s, "admin"));
    let draft = |title: &str| json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": title, "body": "Text"});
    let (status, created) = menden.call(Method::POST, "/announcements", Some(&draft("Anfang"))).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/announcements/{}", created["id"].as_str().unwrap());
    let mut version = 1;
    for round in 0..ROUNDS {
        // With a version: one wins, the other is refused with the stored state.
        let before = admin.journal_len().await;
        let if_match = format!("\"{version}\"");
        let (a, b) = both(
            menden.send(put_if_match(&menden, &path, &draft("Eins"), &if_match)),
            menden.send(put_if_match(&menden, &path, &draft("Zwei"), &if_match)),
        )
        .await;
        let winner = one_wins([&a, &b], version + 1);
        version += 1;
        let loser = if winner == 0 { &b } else { &a };
        assert_eq!(loser.json()["current"]["title"], ["Eins", "Zwei"][winner], "round {round}: {loser:?}");
        assert_eq!(admin.journal_len().await, before + 1, "round {round}");

        // Blind saves: both are stored one after the other, each answer reports its own version.
        let (a, b) = both(
            menden.send(menden.api_request(Method::PUT, &path).json(&draft("Blind A"))),
            menden.send(menden.api_request(Method::PUT, &path).json(&draft("Blind B"))),
        )
        .await;
        assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
        let mut versions = [a.json()["version"].as_i64().unwrap(), b.json()["version"].as_i64().unwrap()];
        for (answer, v) in [(&a, versions[0]), (&b, versions[1])] {
            assert_eq!(answer.headers["etag"], format!("\"{v}\""), "round {round}: the ETag is this write's version");
        }
        versions.sort();
        assert_eq!(versions, [version + 1, version + 2], "round {round}: two saves, two versions");
        version += 2;
    }
}

async fn concurrent_faq_saves_with_one_version(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (Session::api(&s, "menden"), Session::api(&s, "admin"));
    let entry = |q: &str| json!({"scope": "municipality", "scope_ref": MENDEN.1, "question": q, "answer": "Ja."});
    let (status, created) = menden.call(Method::POST, "/faq", Some(&entry("Frage?"))).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/faq/{}", created["id"].as_str().unwrap());
    for (round, version) in (0..ROUNDS).zip(1..) {
        let before = admin.journal_len().await;
        let if_match = format!("\"{version}\"");
        let (a, b) = both(
            menden.send(put_if_match(&menden, &path, &entry("Eins?"), &if_match)),
            menden.send(put_if_match(&menden, &path, &entry("Zwei?"), &if_match)),
        )
        .await;
        one_wins([&a, &b], version + 1);
        assert_eq!(admin.journal_len().await, before + 1, "round {round}");
    }
}

async fn concurrent_contact_saves_with_one_version(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (Session::api(&s, "menden"), Session::api(&s, "admin"));
    let path = format!("/municipalities/{}/contact", MENDEN.0);
    let (status, first) = menden.call(Method::PUT, &path, Some(&json!({"phone": "02373 0"}))).await;
    assert_eq!(status, 200, "{first}");
    let start = first["version"].as_i64().unwrap();
    for (round, version) in (0..ROUNDS).zip(start..) {
        let before = admin.journal_len().await;
        let if_match = format!("\"{version}\"");
        let (a, b) = both(
            menden.send(put_if_match(&menden, &path, &json!({"phone": "02373 1"}), &if_match)),
            menden.send(put_if_match(&menden, &path, &json!({"phone": "02373 2"}), &if_match)),
        )
        .await;
        let winner = one_wins([&a, &b], version + 1);
        assert_eq!([&a, &b][winner].json()["phone"], ["02373 1", "02373 2"][winner]);
        assert_eq!(admin.journal_len().await, before + 1, "round {round}");
    }
}

fn description(name: &str, depends_on: &[&str]) -> Value {
    json!({"slug": "kfz", "name": name, "area": "vehicle", "depends_on": depends_on, "services": ["fahrzeug-zulassen"]})
}

async fn concurrent_description_saves_with_one_version(engine: Engine) {
    let s = Server::demo(engine).await;
    let (t, admin) = (Session::api(&s, "krisenstab"), Session::api(&s, "admin"));
    let (_, kfz) = t.call(Method::GET, "/procedures/kfz", None).await;
    let deps: Vec<String> =
        kfz["depends_on"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    let mut version = kfz["version"].as_i64().unwrap();
    for round in 0..ROUNDS {
        let before = admin.journal_len().await;
        let if_match = format!("\"{version}\"");
        let (a, b) = both(
            t.send(put_if_match(&t, "/procedures/kfz", &description("Kfz A", &deps), &if_match)),
            t.send(put_if_match(&t, "/procedures/kfz", &description("Kfz B", &deps), &if_match)),
        )
        .await;
        let winner = one_wins([&a, &b], version + 1);
        version += 1;
        assert_eq!(admin.journal_len().await, before + 1, "round {round}");
        let (_, kfz) = t.call(Method::GET, "/procedures/kfz", None).await;
        assert_eq!((kfz["name"].as_str(), kfz["version"].as_i64()), (Some(["Kfz A", "Kfz B"][winner]), Some(version)));
    }
}

async fn dependencies_from_both_sides_never_store_a_cycle(engine: Engine) {
    let s = Server::demo(engine).await;
    let (t, admin) = (Session::api(&s, "krisenstab"), Session::api(&s, "admin"));
    for round in 0..ROUNDS {
        let (x, y) = (format!("x-{round}"), format!("y-{round}"));
        for slug in [&x, &y] {
            let (status, out) = t.call(Method::POST, "/procedures", Some(&json!({"slug": slug, "name": slug}))).await;
            assert_eq!(status, 201, "{out}");
        }
        let before = admin.journal_len().await;
        let (a, b) = both(
            t.call(Method::PUT, &format!("/procedures/{x}"), Some(&json!({"slug": x, "name": x, "depends_on": [y]}))),
            t.call(Method::PUT, &format!("/procedures/{y}"), Some(&json!({"slug": y, "name": y, "depends_on": [x]}))),
        )
        .await;
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {a:?} {b:?}");
        let loser = if a.0 == 409 { &a } else { &b };
        assert_eq!(loser.1["current"]["cycle"].as_array().map(Vec::len), Some(3), "{loser:?}");
        assert_eq!(admin.journal_len().await, before + 1, "round {round}");
        let (_, px) = t.call(Method::GET, &format!("/procedures/{x}"), None).await;
        let (_, py) = t.call(Method::GET, &format!("/procedures/{y}"), None).await;
        let edges = px["depends_on"].as_array().unwrap().len() + py["depends_on"].as_array().unwrap().len();
        assert_eq!(edges, 1, "round {round}: one dependency stored, not a cycle: {px} {py}");
    }
}

async fn stage(t: &Session<'_>, slug: &str) -> String {
    let (status, p) = t.call(Method::GET, &format!("/procedures/{slug}"), None).await;
    assert_eq!(status, 200, "{p}");
    p["stage"].as_str().unwrap().to_string()
}

/// Steps a procedure forward, one stage at a time, until it reaches `to`.
async fn forward_to(t: &Session<'_>, slug: &str, to: &str) {
    const ORDER: [&str; 6] = ["down", "under_review", "cleared", "hardened", "released", "normal"];
    let target = ORDER.iter().position(|x| *x == to).unwrap();
    loop {
        let current = stage(t, slug).await;
        let now = ORDER.iter().position(|x| *x == current).unwrap();
        if now >= target {
            return;
        }
        let body = json!({"to": ORDER[now + 1], "evidence": "Prüfbericht"});
        let (status, out) = t.call(Method::POST, &format!("/procedures/{slug}/steps"), Some(&body)).await;
        assert_eq!(status, 200, "{slug} → {}: {out}", ORDER[now + 1]);
    }
}

async fn a_step_back_and_the_release_of_its_dependent(engine: Engine) {
    let s = Server::demo(engine).await;
    let (t, admin) = (Session::api(&s, "krisenstab"), Session::api(&s, "admin"));
    for round in 0..ROUNDS {
        forward_to(&t, "fernzugang", "released").await;
        forward_to(&t, "fahrerlaubnis", "hardened").await;
        let seq = admin.journal_len().await;
        let back = json!({"to": "cleared", "evidence": "Auffälligkeit im Protokoll"});
        let release = json!({"to": "released", "evidence": "Freigabe"});
        let (b, r) = both(
            t.call(Method::POST, "/procedures/fernzugang/steps", Some(&back)),
            t.call(Method::POST, "/procedures/fahrerlaubnis/steps", Some(&release)),
        )
        .await;
        assert_eq!(b.0, 200, "round {round}: the step back is always allowed: {b:?}");
        let journaled = entries_after(&admin, seq).await;
        let released = journaled
            .iter()
            .any(|(kind, p)| kind == "procedure.step" && p["procedure"] == "fahrerlaubnis" && p["to"] == "released");
        match r.0 {
            // The release came second: refused because the dependency is no longer released.
            409 => {
                let unmet: Vec<&str> = r.1["current"]["unmet"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u["condition"].as_str().unwrap())
                    .collect();
                assert_eq!(unmet, ["dependency_not_released"], "round {round}: {r:?}");
                assert!(!released, "round {round}: a refused release is not journaled: {journaled:?}");
            }
            // The release came first: the step back then pulled it back to hardened.
            200 => assert!(released, "round {round}"),
            other => panic!("round {round}: {other} {r:?}"),
        }
        assert_eq!(stage(&t, "fernzugang").await, "cleared");
        assert_ne!(stage(&t, "fahrerlaubnis").await, "released", "round {round}: released on an unreleased dependency");
    }
}

async fn a_rollout_and_a_step_back(engine: Engine) {
    let s = Server::demo(engine).await;
    let (t, admin) = (Session::api(&s, "krisenstab"), Session::api(&s, "admin"));
    forward_to(&t, "fernzugang", "released").await;
    for round in 0..ROUNDS {
        forward_to(&t, "fahrerlaubnis", "released").await;
        let seq = admin.journal_len().await;
        let back = json!({"to": "hardened", "evidence": "Nachprüfung"});
        let rollout = json!({"procedure": "fahrerlaubnis", "stage": "pilot", "districts": ["hochsauerlandkreis"]});
        let (b, r) = both(
            t.call(Method::POST, "/procedures/fahrerlaubnis/steps", Some(&back)),
            t.call(Method::POST, "/procedures/fahrerlaubnis/rollout", Some(&rollout)),
        )
        .await;
        assert_eq!(b.0, 200, "round {round}: {b:?}");
        let journaled = entries_after(&admin, seq).await;
        match r.0 {
            409 => {
                assert_eq!(r.1["current"]["unmet"][0]["condition"], "procedure_not_released", "round {round}: {r:?}");
                assert!(
                    !journaled.iter().any(|(kind, _)| kind == "rollout.set"),
                    "round {round}: a refused rollout is not journaled"
                );
            }
            200 => assert!(journaled.iter().any(|(kind, _)| kind == "rollout.pulled_back"), "round {round}"),
            other => panic!("round {round}: {other} {r:?}"),
        }
        let (_, p) = t.call(Method::GET, "/procedures/fahrerlaubnis", None).await;
        assert_eq!(p["stage"], "hardened");
        assert_eq!(p["rollout"]["live"], 0, "round {round}: no town runs an unreleased procedure: {p}");
    }
}

async fn rollout_on_a_stale_instance() {
    let first = Server::demo(Engine::Postgres).await;
    let (t, admin) = (Session::api(&first, "krisenstab"), Session::api(&first, "admin"));
    forward_to(&t, "fernzugang", "released").await;
    forward_to(&t, "fahrerlaubnis", "released").await;
    let second = first.second_instance("60000");
    for round in 0..ROUNDS {
        forward_to(&t, "fahrerlaubnis", "released").await;
        // The second instance must know the release before the step back, to be stale after it.
        let restarted;
        let second = if round == 0 {
            &second
        } else {
            restarted = first.second_instance("60000");
            &restarted
        };
        let on_second = Session::bearer(second, t.secret());
        assert_eq!(stage(&on_second, "fahrerlaubnis").await, "released");
        let back = json!({"to": "hardened", "evidence": "Nachprüfung"});
        let (status, out) = t.call(Method::POST, "/procedures/fahrerlaubnis/steps", Some(&back)).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(stage(&on_second, "fahrerlaubnis").await, "released", "the second instance is stale");
        let seq = admin.journal_len().await;
        let rollout = json!({"procedure": "fahrerlaubnis", "stage": "basic", "districts": ["hochsauerlandkreis"]});
        let (status, refusal) = on_second.call(Method::POST, "/procedures/fahrerlaubnis/rollout", Some(&rollout)).await;
        assert_eq!(status, 409, "round {round}: decided on the stored stage, not the stale snapshot: {refusal}");
        assert_eq!(refusal["current"]["unmet"][0]["condition"], "procedure_not_released", "{refusal}");
        assert_eq!(admin.journal_len().await, seq, "nothing journaled");
        let (_, p) = t.call(Method::GET, "/procedures/fahrerlaubnis", None).await;
        assert_eq!(p["rollout"]["live"], 0, "{p}");
    }
}

async fn description_on_a_stale_instance() {
    let first = Server::demo(Engine::Postgres).await;
    let (t, admin) = (Session::api(&first, "krisenstab"), Session::api(&first, "admin"));
    let second = first.second_instance("60000");
    let on_second = Session::bearer(&second, t.secret());
    let (_, kfz) = on_second.call(Method::GET, "/procedures/kfz", None).await;
    let deps: Vec<String> =
        kfz["depends_on"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    let version = kfz["version"].as_i64().unwrap();
    for round in 0..ROUNDS as i64 {
        let if_match = format!("\"{version}\"");
        let v = version + round;
        let current = format!("\"{v}\"");
        let (status, out) =
            t.json(put_if_match(&t, "/procedures/kfz", &description(&format!("Kfz {round}"), &deps), &current)).await;
        assert_eq!(status, 200, "{out}");
        let seq = admin.journal_len().await;
        // The second instance still shows the first version; saving from it is refused.
        let (_, stale) = on_second.call(Method::GET, "/procedures/kfz", None).await;
        assert_eq!(stale["version"].as_i64(), Some(version), "the second instance is stale");
        let (status, refusal) = on_second
            .json(put_if_match(&on_second, "/procedures/kfz", &description("Verloren", &deps), &if_match))
            .await;
        assert_eq!((status, refusal["current"]["version"].as_i64()), (409, Some(v + 1)), "round {round}: {refusal}");
        assert_eq!(admin.journal_len().await, seq, "nothing journaled");
    }
}

async fn a_committed_write_is_done_although_the_rebuild_fails(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("fail-rebuild");
    let hook_env = hook.to_str().unwrap().to_string();
    let s = Server::demo_with_env(engine, &[("NOTBETRIEB_TEST_FAIL_REBUILD_WHILE_EXISTS", &hook_env)]).await;
    let (menden, admin) = (Session::api(&s, "menden"), Session::api(&s, "admin"));
    let anonymous = Session::new(&s);
    let health = || anonymous.get("/healthz");
    assert_eq!(health().await.status, 200);

    std::fs::write(&hook, "").unwrap();
    let before = admin.journal_len().await;
    let body = json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Nur einmal", "body": "Text"});
    let post =
        || menden.json(menden.api_request(Method::POST, "/announcements").header("idempotency-key", "k-1").json(&body));
    let (status, first) = post().await;
    assert_eq!(status, 201, "a committed write is done: {first}");
    let res = health().await;
    assert_eq!(res.status, 503, "the snapshot is behind the database");
    let report: Value = res.json();
    assert_eq!(report["status"], "unhealthy", "{report}");
    assert!(report["reason"].as_str().unwrap().contains("rebuild"), "{report}");
    for _ in 0..3 {
        let (status, again) = post().await;
        assert_eq!((status, &again), (201, &first), "a retry answers the first result");
    }
    assert_eq!(admin.journal_len().await, before + 1, "acted once");

    std::fs::remove_file(&hook).unwrap();
    assert!(eventually(|| async { health().await.status == 200 }).await, "healthy again once a rebuild succeeds");
    let (_, news) = admin.call(Method::GET, "/announcements", None).await;
    let count = news["announcements"].as_array().unwrap().iter().filter(|a| a["title"] == "Nur einmal").count();
    assert_eq!(count, 1, "one announcement, on the public side too");
}

async fn reads_are_answered_while_another_connection_holds_the_write_lock(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (Session::api(&s, "menden"), Session::api(&s, "admin"));
    // A signed-in desk session, made before the lock is taken (signing in writes).
    let desk = Session::demo(&s, "menden").await;
    let anonymous = Session::new(&s);

    // Another connection takes the write lock and holds it.
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = match engine {
        Engine::Sqlite => format!("sqlite://{}", s.db.url.trim_start_matches("sqlite:")),
        Engine::Postgres => s.db.url.clone(),
    };
    let mut other = sqlx::AnyConnection::connect(&url).await.unwrap();
    match engine {
        Engine::Sqlite => {
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
        }
        Engine::Postgres => {
            sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
            sqlx::raw_sql("UPDATE journal_head SET seq = seq WHERE id = 1").execute(&mut other).await.unwrap();
        }
    }
    // A write now waits for the lock (so the lock is real) ...
    let body = json!({"municipalities": ["menden-sauerland"], "services": ["briefwahl"], "level": "limited"});
    let mut write = std::pin::pin!(menden.call(Method::POST, "/statements", Some(&body)));
    // ... while reads are answered promptly.
    let prompt = Duration::from_secs(3);
    let reads: [(&str, &Session<'_>); 6] = [
        ("/kommunen/menden-sauerland", &anonymous),
        ("/api/v1/municipalities/menden-sauerland", &anonymous),
        ("/api/v1/tokens", &menden),
        ("/api/v1/journal/verify", &admin),
        ("/intern", &desk),
        ("/intern/journal", &desk),
    ];
    let reads = async {
        for (path, who) in reads {
            let res = tokio::time::timeout(prompt, who.get(path))
                .await
                .unwrap_or_else(|_| panic!("{path} waited for the lock"));
            assert_eq!(res.status, 200, "{path}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The write is sent alongside the reads and must not be done before they are.
    tokio::select! {
        biased;
        () = reads => {}
        _ = &mut write => panic!("the write waits for the lock"),
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(write.await.0, 200, "and is done once the lock is free");
}

/// Every POST that takes an Idempotency-Key records its answer in the write's transaction:
/// the first answer is 2xx, a retry replays it and does not act again.
async fn every_idempotent_route_stores_its_answer_with_the_write(engine: Engine) {
    let s = Server::demo(engine).await;
    let (admin, t) = (Session::api(&s, "admin"), Session::api(&s, "krisenstab"));
    let office = "buergerbuero-menden-sauerland";
    let requests: Vec<(&Session<'_>, &str, Value)> = vec![
        (&admin, "/statements", json!({"municipalities": [MENDEN.0], "services": ["briefwahl"], "level": "limited"})),
        (&admin, "/announcements", json!({"scope": "area", "title": "Hinweis", "body": "Text"})),
        (&admin, "/faq", json!({"scope": "area", "question": "Wann?", "answer": "Bald."})),
        (
            &admin,
            "/referrals",
            json!({"office_slug": office, "service_slug": "wohnsitz-anmelden", "for_ags": MENDEN.1}),
        ),
        (&admin, "/tokens", json!({"name": "cms"})),
        (&admin, "/users", json!({"username": "neu", "role": "viewer"})),
        (&t, "/procedures", json!({"slug": "e-akte", "name": "E-Akte"})),
        (&t, "/procedures/fernzugang/steps", json!({"to": "released", "evidence": "Prüfbericht"})),
        (
            &t,
            "/procedures/sozialwesen/rollout",
            json!({"procedure": "sozialwesen", "stage": "basic", "municipalities": [MENDEN.0]}),
        ),
    ];
    for (n, (who, path, body)) in requests.iter().enumerate() {
        let key = format!("key-{n}");
        let post = || who.api_request(Method::POST, path).header("idempotency-key", &key).json(body);
        let before = admin.journal_len().await;
        let (status, first) = who.json(post()).await;
        assert!((200..300).contains(&status), "{path}: {status} {first}");
        let after = admin.journal_len().await;
        assert!(after > before, "{path} acted");
        let res = who.send(post()).await;
        assert_eq!((res.status, res.headers["idempotent-replayed"].to_str().unwrap()), (status, "true"));
        let mut replayed: Value = res.json();
        let mut first = first;
        for secret_field in ["secret", "setup_path", "setup_url"] {
            first.as_object_mut().unwrap().remove(secret_field);
            replayed.as_object_mut().unwrap().remove(secret_field);
        }
        assert_eq!(replayed, first, "{path}: the first answer again");
        assert_eq!(admin.journal_len().await, after, "{path}: a retry does not act");
    }
}
