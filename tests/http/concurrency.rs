//! Writes under concurrency: two requests at the same moment for every write kind that has a
//! version or a gate; the loser is refused (409 with the current state or the unmet conditions)
//! and nothing of it is stored or journaled. Two instances on one PostgreSQL, the second with a
//! slow poll, decide on the stored rows, not on their snapshots. A committed write whose
//! snapshot rebuild fails is still done, `/healthz` says so, and a retry with the same
//! Idempotency-Key replays instead of acting again. Reads are answered while another connection
//! holds the database's write lock.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_token as token;
use crate::{Engine, Server, TestDatabase, binary, eventually, on_both_engines};

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

/// A server started here (for options the harness does not take: a slow poll, a test hook).
struct Instance {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Instance {
    fn start(url: &str, poll_ms: &str, env: &[(&str, &str)]) -> Instance {
        Instance::start_with(url, &["--poll-ms", poll_ms], env)
    }

    fn start_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Instance {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--database", url])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start notbetrieb");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("server exited before listening").unwrap();
            if let Some(url) = line.strip_prefix("notbetrieb listening on ") {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Instance { child, base, client: reqwest::Client::new() }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where requests go: the harness's server or one started here.
trait Target {
    fn base(&self) -> &str;
    fn client(&self) -> &reqwest::Client;
}
impl Target for Server {
    fn base(&self) -> &str {
        &self.base
    }
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
}
impl Target for Instance {
    fn base(&self) -> &str {
        &self.base
    }
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// An API request with a bearer token, optional JSON body and extra headers; (status, ETag, body).
async fn send(
    s: &impl Target,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, String, Value) {
    let mut req = s.client().request(method, format!("{}/api/v1{path}", s.base())).bearer_auth(token);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, etag, body)
}

async fn call(s: &impl Target, token: &str, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, _, body) = send(s, token, method, path, body, &[]).await;
    (status, body)
}

/// The journal's length, from the database (and the chain still verifies).
async fn journal_len(s: &impl Target, admin: &str) -> u64 {
    let (status, check) = call(s, admin, Method::GET, "/journal/verify", None).await;
    assert_eq!((status, &check["intact"]), (200, &json!(true)), "{check}");
    check["entries"].as_u64().unwrap()
}

/// Journal entries after `seq`: (kind, payload).
async fn entries_after(s: &impl Target, admin: &str, seq: u64) -> Vec<(String, Value)> {
    let (status, page) = call(s, admin, Method::GET, "/journal?limit=500", None).await;
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

/// Of two answers to competing saves with one version: exactly one 200, the other 409 with the
/// winner's version as `current.version`; returns which one won (0 or 1).
fn one_wins(answers: [&(u16, String, Value); 2], new_version: i64) -> usize {
    let statuses = [answers[0].0, answers[1].0];
    assert!(statuses == [200, 409] || statuses == [409, 200], "{statuses:?}: {:?}", answers);
    let (winner, loser) = if statuses[0] == 200 { (0, 1) } else { (1, 0) };
    assert_eq!(answers[winner].2["version"], new_version, "{:?}", answers[winner]);
    assert_eq!(answers[winner].1, format!("\"{new_version}\""), "the ETag is the version this write produced");
    assert_eq!(answers[loser].2["error"], "conflict", "{:?}", answers[loser]);
    assert_eq!(answers[loser].2["current"]["version"], new_version, "the loser sees the winner's version");
    winner
}

async fn concurrent_statement_saves_with_one_version(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (token(&s, "menden"), token(&s, "admin"));
    let path = format!("/municipalities/{}/services/briefwahl/statement", MENDEN.0);
    let (status, current) = call(&s, &menden, Method::PUT, &path, Some(&json!({"level": "normal"}))).await;
    assert_eq!(status, 200, "{current}");
    let start = current["version"].as_i64().unwrap();
    for (round, version) in (0..ROUNDS).zip(start..) {
        let before = journal_len(&s, &admin).await;
        let if_match = format!("\"{version}\"");
        let levels = ["limited", "unavailable"];
        let (a, b) = both(
            send(&s, &menden, Method::PUT, &path, Some(&json!({"level": levels[0]})), &[("if-match", &if_match)]),
            send(&s, &menden, Method::PUT, &path, Some(&json!({"level": levels[1]})), &[("if-match", &if_match)]),
        )
        .await;
        let winner = one_wins([&a, &b], version + 1);
        assert_eq!(journal_len(&s, &admin).await, before + 1, "round {round}: only the winner is journaled");
        let (_, town) = s.json(&format!("/api/v1/municipalities/{}", MENDEN.0)).await;
        let stored = town["services"].as_array().unwrap().iter().find(|x| x["service"]["slug"] == "briefwahl").unwrap();
        assert_eq!(stored["level"], levels[winner], "round {round}: the winner's save is stored");
    }
}

async fn concurrent_announcement_saves(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (token(&s, "menden"), token(&s, "admin"));
    let draft = |title: &str| json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": title, "body": "Text"});
    let (status, created) = call(&s, &menden, Method::POST, "/announcements", Some(&draft("Anfang"))).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/announcements/{}", created["id"].as_str().unwrap());
    let mut version = 1;
    for round in 0..ROUNDS {
        // With a version: one wins, the other is refused with the stored state.
        let before = journal_len(&s, &admin).await;
        let if_match = format!("\"{version}\"");
        let (a, b) = both(
            send(&s, &menden, Method::PUT, &path, Some(&draft("Eins")), &[("if-match", &if_match)]),
            send(&s, &menden, Method::PUT, &path, Some(&draft("Zwei")), &[("if-match", &if_match)]),
        )
        .await;
        let winner = one_wins([&a, &b], version + 1);
        version += 1;
        let loser = if winner == 0 { &b } else { &a };
        assert_eq!(loser.2["current"]["title"], ["Eins", "Zwei"][winner], "round {round}: {loser:?}");
        assert_eq!(journal_len(&s, &admin).await, before + 1, "round {round}");

        // Blind saves: both are stored one after the other, each answer reports its own version.
        let (a, b) = both(
            send(&s, &menden, Method::PUT, &path, Some(&draft("Blind A")), &[]),
            send(&s, &menden, Method::PUT, &path, Some(&draft("Blind B")), &[]),
        )
        .await;
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
        let mut versions = [a.2["version"].as_i64().unwrap(), b.2["version"].as_i64().unwrap()];
        for (answer, v) in [(&a, versions[0]), (&b, versions[1])] {
            assert_eq!(answer.1, format!("\"{v}\""), "round {round}: the ETag is this write's version");
        }
        versions.sort();
        assert_eq!(versions, [version + 1, version + 2], "round {round}: two saves, two versions");
        version += 2;
    }
}

async fn concurrent_faq_saves_with_one_version(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (token(&s, "menden"), token(&s, "admin"));
    let entry = |q: &str| json!({"scope": "municipality", "scope_ref": MENDEN.1, "question": q, "answer": "Ja."});
    let (status, created) = call(&s, &menden, Method::POST, "/faq", Some(&entry("Frage?"))).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/faq/{}", created["id"].as_str().unwrap());
    for (round, version) in (0..ROUNDS).zip(1..) {
        let before = journal_len(&s, &admin).await;
        let if_match = format!("\"{version}\"");
        let (a, b) = both(
            send(&s, &menden, Method::PUT, &path, Some(&entry("Eins?")), &[("if-match", &if_match)]),
            send(&s, &menden, Method::PUT, &path, Some(&entry("Zwei?")), &[("if-match", &if_match)]),
        )
        .await;
        one_wins([&a, &b], version + 1);
        assert_eq!(journal_len(&s, &admin).await, before + 1, "round {round}");
    }
}

async fn concurrent_contact_saves_with_one_version(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (token(&s, "menden"), token(&s, "admin"));
    let path = format!("/municipalities/{}/contact", MENDEN.0);
    let (status, _, first) = send(&s, &menden, Method::PUT, &path, Some(&json!({"phone": "02373 0"})), &[]).await;
    assert_eq!(status, 200, "{first}");
    let start = first["version"].as_i64().unwrap();
    for (round, version) in (0..ROUNDS).zip(start..) {
        let before = journal_len(&s, &admin).await;
        let if_match = format!("\"{version}\"");
        let (a, b) = both(
            send(&s, &menden, Method::PUT, &path, Some(&json!({"phone": "02373 1"})), &[("if-match", &if_match)]),
            send(&s, &menden, Method::PUT, &path, Some(&json!({"phone": "02373 2"})), &[("if-match", &if_match)]),
        )
        .await;
        let winner = one_wins([&a, &b], version + 1);
        assert_eq!([&a, &b][winner].2["phone"], ["02373 1", "02373 2"][winner]);
        assert_eq!(journal_len(&s, &admin).await, before + 1, "round {round}");
    }
}

fn description(name: &str, depends_on: &[&str]) -> Value {
    json!({"slug": "kfz", "name": name, "area": "vehicle", "depends_on": depends_on, "services": ["fahrzeug-zulassen"]})
}

async fn concurrent_description_saves_with_one_version(engine: Engine) {
    let s = Server::demo(engine).await;
    let (t, admin) = (token(&s, "krisenstab"), token(&s, "admin"));
    let (_, kfz) = call(&s, &t, Method::GET, "/procedures/kfz", None).await;
    let deps: Vec<String> =
        kfz["depends_on"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    let mut version = kfz["version"].as_i64().unwrap();
    for round in 0..ROUNDS {
        let before = journal_len(&s, &admin).await;
        let if_match = format!("\"{version}\"");
        let (a, b) = both(
            send(
                &s,
                &t,
                Method::PUT,
                "/procedures/kfz",
                Some(&description("Kfz A", &deps)),
                &[("if-match", &if_match)],
            ),
            send(
                &s,
                &t,
                Method::PUT,
                "/procedures/kfz",
                Some(&description("Kfz B", &deps)),
                &[("if-match", &if_match)],
            ),
        )
        .await;
        let winner = one_wins([&a, &b], version + 1);
        version += 1;
        assert_eq!(journal_len(&s, &admin).await, before + 1, "round {round}");
        let (_, kfz) = call(&s, &t, Method::GET, "/procedures/kfz", None).await;
        assert_eq!((kfz["name"].as_str(), kfz["version"].as_i64()), (Some(["Kfz A", "Kfz B"][winner]), Some(version)));
    }
}

async fn dependencies_from_both_sides_never_store_a_cycle(engine: Engine) {
    let s = Server::demo(engine).await;
    let (t, admin) = (token(&s, "krisenstab"), token(&s, "admin"));
    for round in 0..ROUNDS {
        let (x, y) = (format!("x-{round}"), format!("y-{round}"));
        for slug in [&x, &y] {
            let (status, out) =
                call(&s, &t, Method::POST, "/procedures", Some(&json!({"slug": slug, "name": slug}))).await;
            assert_eq!(status, 201, "{out}");
        }
        let before = journal_len(&s, &admin).await;
        let (a, b) = both(
            send(
                &s,
                &t,
                Method::PUT,
                &format!("/procedures/{x}"),
                Some(&json!({"slug": x, "name": x, "depends_on": [y]})),
                &[],
            ),
            send(
                &s,
                &t,
                Method::PUT,
                &format!("/procedures/{y}"),
                Some(&json!({"slug": y, "name": y, "depends_on": [x]})),
                &[],
            ),
        )
        .await;
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {a:?} {b:?}");
        let loser = if a.0 == 409 { &a } else { &b };
        assert_eq!(loser.2["current"]["cycle"].as_array().map(Vec::len), Some(3), "{loser:?}");
        assert_eq!(journal_len(&s, &admin).await, before + 1, "round {round}");
        let (_, px) = call(&s, &t, Method::GET, &format!("/procedures/{x}"), None).await;
        let (_, py) = call(&s, &t, Method::GET, &format!("/procedures/{y}"), None).await;
        let edges = px["depends_on"].as_array().unwrap().len() + py["depends_on"].as_array().unwrap().len();
        assert_eq!(edges, 1, "round {round}: one dependency stored, not a cycle: {px} {py}");
    }
}

async fn stage(s: &impl Target, t: &str, slug: &str) -> String {
    let (status, p) = call(s, t, Method::GET, &format!("/procedures/{slug}"), None).await;
    assert_eq!(status, 200, "{p}");
    p["stage"].as_str().unwrap().to_string()
}

/// Steps a procedure forward, one stage at a time, until it reaches `to`.
async fn forward_to(s: &impl Target, t: &str, slug: &str, to: &str) {
    const ORDER: [&str; 6] = ["down", "under_review", "cleared", "hardened", "released", "normal"];
    let target = ORDER.iter().position(|x| *x == to).unwrap();
    loop {
        let current = stage(s, t, slug).await;
        let now = ORDER.iter().position(|x| *x == current).unwrap();
        if now >= target {
            return;
        }
        let body = json!({"to": ORDER[now + 1], "evidence": "Prüfbericht"});
        let (status, out) = call(s, t, Method::POST, &format!("/procedures/{slug}/steps"), Some(&body)).await;
        assert_eq!(status, 200, "{slug} → {}: {out}", ORDER[now + 1]);
    }
}

async fn a_step_back_and_the_release_of_its_dependent(engine: Engine) {
    let s = Server::demo(engine).await;
    let (t, admin) = (token(&s, "krisenstab"), token(&s, "admin"));
    for round in 0..ROUNDS {
        forward_to(&s, &t, "fernzugang", "released").await;
        forward_to(&s, &t, "fahrerlaubnis", "hardened").await;
        let seq = journal_len(&s, &admin).await;
        let back = json!({"to": "cleared", "evidence": "Auffälligkeit im Protokoll"});
        let release = json!({"to": "released", "evidence": "Freigabe"});
        let (b, r) = both(
            send(&s, &t, Method::POST, "/procedures/fernzugang/steps", Some(&back), &[]),
            send(&s, &t, Method::POST, "/procedures/fahrerlaubnis/steps", Some(&release), &[]),
        )
        .await;
        assert_eq!(b.0, 200, "round {round}: the step back is always allowed: {b:?}");
        let journaled = entries_after(&s, &admin, seq).await;
        let released = journaled
            .iter()
            .any(|(kind, p)| kind == "procedure.step" && p["procedure"] == "fahrerlaubnis" && p["to"] == "released");
        match r.0 {
            // The release came second: refused because the dependency is no longer released.
            409 => {
                let unmet: Vec<&str> = r.2["current"]["unmet"]
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
        assert_eq!(stage(&s, &t, "fernzugang").await, "cleared");
        assert_ne!(
            stage(&s, &t, "fahrerlaubnis").await,
            "released",
            "round {round}: released on an unreleased dependency"
        );
    }
}

async fn a_rollout_and_a_step_back(engine: Engine) {
    let s = Server::demo(engine).await;
    let (t, admin) = (token(&s, "krisenstab"), token(&s, "admin"));
    forward_to(&s, &t, "fernzugang", "released").await;
    for round in 0..ROUNDS {
        forward_to(&s, &t, "fahrerlaubnis", "released").await;
        let seq = journal_len(&s, &admin).await;
        let back = json!({"to": "hardened", "evidence": "Nachprüfung"});
        let rollout = json!({"procedure": "fahrerlaubnis", "stage": "pilot", "districts": ["hochsauerlandkreis"]});
        let (b, r) = both(
            send(&s, &t, Method::POST, "/procedures/fahrerlaubnis/steps", Some(&back), &[]),
            send(&s, &t, Method::POST, "/procedures/fahrerlaubnis/rollout", Some(&rollout), &[]),
        )
        .await;
        assert_eq!(b.0, 200, "round {round}: {b:?}");
        let journaled = entries_after(&s, &admin, seq).await;
        match r.0 {
            409 => {
                assert_eq!(r.2["current"]["unmet"][0]["condition"], "procedure_not_released", "round {round}: {r:?}");
                assert!(
                    !journaled.iter().any(|(kind, _)| kind == "rollout.set"),
                    "round {round}: a refused rollout is not journaled"
                );
            }
            200 => assert!(journaled.iter().any(|(kind, _)| kind == "rollout.pulled_back"), "round {round}"),
            other => panic!("round {round}: {other} {r:?}"),
        }
        let (_, p) = call(&s, &t, Method::GET, "/procedures/fahrerlaubnis", None).await;
        assert_eq!(p["stage"], "hardened");
        assert_eq!(p["rollout"]["live"], 0, "round {round}: no town runs an unreleased procedure: {p}");
    }
}

/// A database seeded with the demo (by a server that is stopped again once it listens).
fn demo_database(engine: Engine) -> TestDatabase {
    let db = TestDatabase::new(engine);
    drop(Instance::start_with(&db.url, &["--demo"], &[]));
    db
}

fn token_for(db: &TestDatabase, user: &str) -> String {
    let out = Command::new(binary())
        .args(["token", "add", "--user", user, "--name", &format!("test-{user}"), "--database", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn rollout_on_a_stale_instance() {
    let db = demo_database(Engine::Postgres);
    let (t, admin) = (token_for(&db, "krisenstab"), token_for(&db, "admin"));
    let first = Instance::start(&db.url, "100", &[]);
    forward_to(&first, &t, "fernzugang", "released").await;
    forward_to(&first, &t, "fahrerlaubnis", "released").await;
    let second = Instance::start(&db.url, "60000", &[]);
    for round in 0..ROUNDS {
        forward_to(&first, &t, "fahrerlaubnis", "released").await;
        // The second instance must know the release before the step back, to be stale after it.
        let restarted;
        let second = if round == 0 {
            &second
        } else {
            restarted = Instance::start(&db.url, "60000", &[]);
            &restarted
        };
        assert_eq!(stage(second, &t, "fahrerlaubnis").await, "released");
        let back = json!({"to": "hardened", "evidence": "Nachprüfung"});
        let (status, out) = call(&first, &t, Method::POST, "/procedures/fahrerlaubnis/steps", Some(&back)).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(stage(second, &t, "fahrerlaubnis").await, "released", "the second instance is stale");
        let seq = journal_len(&first, &admin).await;
        let rollout = json!({"procedure": "fahrerlaubnis", "stage": "basic", "districts": ["hochsauerlandkreis"]});
        let (status, refusal) =
            call(second, &t, Method::POST, "/procedures/fahrerlaubnis/rollout", Some(&rollout)).await;
        assert_eq!(status, 409, "round {round}: decided on the stored stage, not the stale snapshot: {refusal}");
        assert_eq!(refusal["current"]["unmet"][0]["condition"], "procedure_not_released", "{refusal}");
        assert_eq!(journal_len(&first, &admin).await, seq, "nothing journaled");
        let (_, p) = call(&first, &t, Method::GET, "/procedures/fahrerlaubnis", None).await;
        assert_eq!(p["rollout"]["live"], 0, "{p}");
    }
}

async fn description_on_a_stale_instance() {
    let db = demo_database(Engine::Postgres);
    let (t, admin) = (token_for(&db, "krisenstab"), token_for(&db, "admin"));
    let first = Instance::start(&db.url, "100", &[]);
    let second = Instance::start(&db.url, "60000", &[]);
    let (_, kfz) = call(&second, &t, Method::GET, "/procedures/kfz", None).await;
    let deps: Vec<String> =
        kfz["depends_on"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    let version = kfz["version"].as_i64().unwrap();
    for round in 0..ROUNDS as i64 {
        let if_match = format!("\"{version}\"");
        let v = version + round;
        let current = format!("\"{v}\"");
        let (status, _, out) = send(
            &first,
            &t,
            Method::PUT,
            "/procedures/kfz",
            Some(&description(&format!("Kfz {round}"), &deps)),
            &[("if-match", &current)],
        )
        .await;
        assert_eq!(status, 200, "{out}");
        let seq = journal_len(&first, &admin).await;
        // The second instance still shows the first version; saving from it is refused.
        let (_, stale) = call(&second, &t, Method::GET, "/procedures/kfz", None).await;
        assert_eq!(stale["version"].as_i64(), Some(version), "the second instance is stale");
        let (status, _, refusal) = send(
            &second,
            &t,
            Method::PUT,
            "/procedures/kfz",
            Some(&description("Verloren", &deps)),
            &[("if-match", &if_match)],
        )
        .await;
        assert_eq!((status, refusal["current"]["version"].as_i64()), (409, Some(v + 1)), "round {round}: {refusal}");
        assert_eq!(journal_len(&first, &admin).await, seq, "nothing journaled");
    }
}

async fn a_committed_write_is_done_although_the_rebuild_fails(engine: Engine) {
    let db = demo_database(engine);
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("fail-rebuild");
    let hook_env = hook.to_str().unwrap().to_string();
    let (menden, admin) = (token_for(&db, "menden"), token_for(&db, "admin"));
    let s = Instance::start(&db.url, "100", &[("NOTBETRIEB_TEST_FAIL_REBUILD_WHILE_EXISTS", &hook_env)]);
    let health = || async { s.client.get(format!("{}/healthz", s.base)).send().await.unwrap() };
    assert_eq!(health().await.status(), 200);

    std::fs::write(&hook, "").unwrap();
    let before = journal_len(&s, &admin).await;
    let body = json!({"scope": "municipality", "scope_ref": MENDEN.1, "title": "Nur einmal", "body": "Text"});
    let (status, _, first) =
        send(&s, &menden, Method::POST, "/announcements", Some(&body), &[("idempotency-key", "k-1")]).await;
    assert_eq!(status, 201, "a committed write is done: {first}");
    let res = health().await;
    assert_eq!(res.status(), 503, "the snapshot is behind the database");
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["status"], "unhealthy", "{report}");
    assert!(report["reason"].as_str().unwrap().contains("rebuild"), "{report}");
    for _ in 0..3 {
        let (status, _, again) =
            send(&s, &menden, Method::POST, "/announcements", Some(&body), &[("idempotency-key", "k-1")]).await;
        assert_eq!((status, &again), (201, &first), "a retry answers the first result");
    }
    assert_eq!(journal_len(&s, &admin).await, before + 1, "acted once");

    std::fs::remove_file(&hook).unwrap();
    assert!(eventually(|| async { health().await.status() == 200 }).await, "healthy again once a rebuild succeeds");
    let (_, news) = call(&s, &admin, Method::GET, "/announcements", None).await;
    let count = news["announcements"].as_array().unwrap().iter().filter(|a| a["title"] == "Nur einmal").count();
    assert_eq!(count, 1, "one announcement, on the public side too");
}

async fn reads_are_answered_while_another_connection_holds_the_write_lock(engine: Engine) {
    let s = Server::demo(engine).await;
    let (menden, admin) = (token(&s, "menden"), token(&s, "admin"));
    // A signed-in desk session, made before the lock is taken (signing in writes).
    let login = s.client.get(s.url("/intern/anmelden")).send().await.unwrap();
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let page = login.text().await.unwrap();
    let form = hidden(&page, "form");
    let body = format!("username=menden&password=demo-menden-passwort&form={form}");
    let res = s
        .client
        .post(s.url("/intern/anmelden"))
        .header("cookie", cookies.join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let mut jar = cookies.clone();
    for set in res.headers().get_all("set-cookie") {
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
        let name = pair.split('=').next().unwrap().to_string();
        jar.retain(|c| !c.starts_with(&format!("{name}=")));
        jar.push(pair);
    }
    let cookie = jar.join("; ");

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
    let write = {
        let (client, url, token) = (s.client.clone(), s.url("/api/v1/statements"), menden.clone());
        tokio::spawn(async move {
            let body = json!({"municipalities": ["menden-sauerland"], "services": ["briefwahl"], "level": "limited"});
            client.post(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16()
        })
    };
    // ... while reads are answered promptly.
    let prompt = Duration::from_secs(3);
    let reads: [(&str, Option<&str>, Option<&str>); 6] = [
        ("/kommunen/menden-sauerland", None, None),
        ("/api/v1/municipalities/menden-sauerland", None, None),
        ("/api/v1/tokens", Some(&menden), None),
        ("/api/v1/journal/verify", Some(&admin), None),
        ("/intern", None, Some(&cookie)),
        ("/intern/journal", None, Some(&cookie)),
    ];
    for (path, bearer, cookie) in reads {
        let mut req = s.client.get(s.url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let res =
            tokio::time::timeout(prompt, req.send()).await.unwrap_or_else(|_| panic!("{path} waited for the lock"));
        assert_eq!(res.unwrap().status(), 200, "{path}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!write.is_finished(), "the write waits for the lock");
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(write.await.unwrap(), 200, "and is done once the lock is free");
}

/// Every POST that takes an Idempotency-Key records its answer in the write's transaction:
/// the first answer is 2xx, a retry replays it and does not act again.
async fn every_idempotent_route_stores_its_answer_with_the_write(engine: Engine) {
    let s = Server::demo(engine).await;
    let (admin, t) = (token(&s, "admin"), token(&s, "krisenstab"));
    let office = "buergerbuero-menden-sauerland";
    let requests: Vec<(&str, &str, Value)> = vec![
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
    for (n, (secret, path, body)) in requests.iter().enumerate() {
        let key = format!("key-{n}");
        let before = journal_len(&s, &admin).await;
        let (status, _, first) = send(&s, secret, Method::POST, path, Some(body), &[("idempotency-key", &key)]).await;
        assert!((200..300).contains(&status), "{path}: {status} {first}");
        let after = journal_len(&s, &admin).await;
        assert!(after > before, "{path} acted");
        let res = s
            .client
            .post(s.url(&format!("/api/v1{path}")))
            .bearer_auth(secret)
            .header("idempotency-key", &key)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!((res.status().as_u16(), res.headers()["idempotent-replayed"].to_str().unwrap()), (status, "true"));
        let mut replayed: Value = res.json().await.unwrap();
        let mut first = first;
        for secret_field in ["secret", "setup_path", "setup_url"] {
            first.as_object_mut().unwrap().remove(secret_field);
            replayed.as_object_mut().unwrap().remove(secret_field);
        }
        assert_eq!(replayed, first, "{path}: the first answer again");
        assert_eq!(journal_len(&s, &admin).await, after, "{path}: a retry does not act");
    }
}

/// The value of a hidden form field.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker).unwrap_or_else(|| panic!("no hidden {name}")) + marker.len();
    html[at..at + html[at..].find('"').unwrap()].to_string()
}
