//! `serve --publish-to`: the server keeps mirrors of the public site current by itself. After
//! every kind of public change (a town's and a district's statement, area and town
//! announcements with a correction and a withdrawal, contacts, a referral, an FAQ entry, the
//! recovery advanced by another process) the mirror catches up, and in the end it holds exactly
//! what a fresh full export holds: the incremental path renders what the events touch and no
//! less. A mirror that fails (an S3 bucket that does not exist yet) leaves `/healthz` healthy,
//! shows the error in the desk, and is retried until it succeeds.

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Engine, Server, Session, TestDatabase, api_token, on_both_engines};

on_both_engines!(a_mirror_follows_every_kind_of_change_and_ends_equal_to_a_full_export);

const PUBLIC_URL: &str = "https://notfall.example.de";

/// Every file below `dir` with its bytes, the manifest left out.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            if relative.starts_with(".notbetrieb-manifest") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The first mirror's status as `/healthz` reports it, once the server says it is healthy.
async fn mirror(s: &Server) -> (i64, Value) {
    let (status, health) = s.json("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")), "{health}");
    (health["data_version"].as_i64().unwrap(), health["mirrors"][0].clone())
}

/// Waits until the mirror shows the live data version; its status then.
async fn caught_up(s: &Server, within_s: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(within_s);
    loop {
        let (version, m) = mirror(s).await;
        if m["published_version"].as_i64() == Some(version) && m["behind_since"].is_null() {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "the mirror did not catch up with version {version}: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn assert_same(mirror: &Path, export: &Path) {
    let (mirrored, exported) = (tree(mirror), tree(export));
    let missing: Vec<_> = exported.keys().filter(|p| !mirrored.contains_key(*p)).take(5).collect();
    let extra: Vec<_> = mirrored.keys().filter(|p| !exported.contains_key(*p)).take(5).collect();
    let differ: Vec<_> =
        exported.iter().filter(|(p, b)| mirrored.get(*p).is_some_and(|m| m != *b)).map(|(p, _)| p).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "mirror ≠ export: missing {missing:?}, extra {extra:?}, different {differ:?}"
    );
}

async fn a_mirror_follows_every_kind_of_change_and_ends_equal_to_a_full_export(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    let target = format!("file://{}", www.display());
    let s = Server::start(
        TestDatabase::new(engine),
        &["--demo", "--public-url", PUBLIC_URL, "--publish-to", &target, "--publish-debounce-ms", "100"],
    );
    let first = caught_up(&s, 120).await;
    assert!(first["last_written"].as_u64().unwrap() > 10_000, "the first publish writes the whole site: {first}");
    let total = tree(&www).len() as u64;
    assert!(www.join("kommunen/menden-sauerland/index.html").exists());

    let admin = Session::bearer(&s, &api_token(&s, "admin"));
    let call = |method: Method, path: &'static str, body: Option<Value>| {
        let admin = &admin;
        async move {
            let (status, out) = admin.call(method, path, body.as_ref()).await;
            assert!((200..300).contains(&status), "{path}: {status} {out}");
            out
        }
    };

    // One town's statement: the mirror is current within seconds, and only a few files changed.
    call(
        Method::PUT,
        "/municipalities/menden-sauerland/services/fahrzeug-zulassen/statement",
        Some(json!({"level": "emergency", "restrictions": "Nur Abmeldungen"})),
    )
    .await;
    let after = caught_up(&s, 90).await;
    let written = after["last_written"].as_u64().unwrap();
    assert!(written > 0 && written < total / 10, "a statement rewrites {written} of {total} files: {after}");
    let page =
        std::fs::read_to_string(www.join("kommunen/menden-sauerland/leistungen/fahrzeug-zulassen/index.html")).unwrap();
    assert!(page.contains("Nur Abmeldungen"), "the mirror shows the change");

    // Every other kind of public change, each followed until the mirror has it.
    call(
        Method::PUT,
        "/districts/maerkischer-kreis/services/fahrzeug-zulassen/statement",
        Some(json!({"level": "limited"})),
    )
    .await;
    caught_up(&s, 90).await;
    let area = call(
        Method::POST,
        "/announcements",
        Some(json!({"scope": "area", "title": "Hinweis für alle", "body": "Text"})),
    )
    .await;
    caught_up(&s, 90).await;
    let id = area["id"].as_str().unwrap().to_string();
    assert!(www.join(format!("meldungen/{id}/index.html")).exists(), "the new announcement's page");
    let town = call(
        Method::POST,
        "/announcements",
        Some(json!({"scope": "municipality", "scope_ref": "05962032", "title": "Lüdenscheid", "body": "Text"})),
    )
    .await;
    caught_up(&s, 90).await;
    let town_id = town["id"].as_str().unwrap().to_string();
    let (status, out) = admin
        .call(
            Method::PUT,
            &format!("/announcements/{town_id}"),
            Some(&json!({"scope": "municipality", "scope_ref": "05962032", "title": "Lüdenscheid, berichtigt", "body": "Text"})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    caught_up(&s, 90).await;
    let (status, out) = admin.call(Method::DELETE, &format!("/announcements/{id}"), None).await;
    assert!((200..300).contains(&status), "{out}");
    caught_up(&s, 90).await;
    assert!(!www.join(format!("meldungen/{id}/index.html")).exists(), "the withdrawn announcement's page is gone");
    call(Method::PUT, "/municipalities/menden-sauerland/contact", Some(json!({"phone": "02373 900-0"}))).await;
    caught_up(&s, 90).await;
    call(
        Method::POST,
        "/referrals",
        Some(json!({"office_slug": "buergerbuero-menden-sauerland", "service_slug": "reisepass-beantragen", "for_ags": "05962032"})),
    )
    .await;
    caught_up(&s, 90).await;
    call(Method::POST, "/faq", Some(json!({"scope": "area", "question": "Wann geht es wieder?", "answer": "Bald."})))
        .await;
    caught_up(&s, 90).await;
    // Another process advances the recovery; the server sees it by polling, the mirror follows.
    let out = s.command(&["demo", "advance", "--steps", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    caught_up(&s, 90).await;

    // The mirror holds exactly what a full export of the same state holds.
    let export = tmp.path().join("export");
    let out = s.command(&["export", "--out", export.to_str().unwrap(), "--public-url", PUBLIC_URL]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same(&www, &export);
}

/// A mirror that cannot be written (its directory replaced by a file) leaves the server
/// healthy, shows the error to the operator, and is retried with backoff until it succeeds.
/// (Publishing the whole demo to moto takes minutes, so this uses a directory; the S3 path is
/// the same code, tested in publish.rs.)
#[tokio::test]
async fn a_failing_mirror_is_retried_and_the_server_stays_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    let target = format!("file://{}", www.display());
    let s = Server::start(
        TestDatabase::new(Engine::Sqlite),
        &["--demo", "--publish-to", &target, "--publish-debounce-ms", "100"],
    );
    caught_up(&s, 120).await;
    std::fs::remove_dir_all(&www).unwrap();
    std::fs::write(&www, "in the way").unwrap();
    let admin = Session::bearer(&s, &api_token(&s, "admin"));
    let (status, out) = admin
        .call(
            Method::PUT,
            "/municipalities/menden-sauerland/services/fahrzeug-zulassen/statement",
            Some(&json!({"level": "unavailable"})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let failed = loop {
        let (_, m) = mirror(&s).await;
        if m["failures"].as_u64().unwrap_or(0) >= 1 {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "the mirror never failed: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains(&target), "the error names the target: {error}");
    assert!(failed["next_attempt_at"].is_string() && failed["behind_since"].is_string(), "{failed}");

    // The operator sees it in the desk, in words; an editor does not.
    let desk = Session::demo(&s, "krisenstab").await;
    let page = desk.get("/intern").await;
    assert!(page.body.contains("Notfall-Spiegel") && page.body.contains(&target), "{}", page.body);
    assert!(page.body.contains("Fehler"), "the state in words");
    let editor = Session::demo(&s, "menden").await;
    assert!(!editor.get("/intern").await.body.contains(&target));

    // Once the way is clear, a retry publishes everything again.
    std::fs::remove_file(&www).unwrap();
    let m = caught_up(&s, 120).await;
    assert!(m["last_written"].as_u64().unwrap() > 10_000, "{m}");
    assert_eq!(m["failures"], 0);
    let page =
        std::fs::read_to_string(www.join("kommunen/menden-sauerland/leistungen/fahrzeug-zulassen/index.html")).unwrap();
    assert!(page.contains("Ausfall"), "the change is there");
}

/// A target that cannot be a mirror stops the server at start, naming it.
#[tokio::test]
async fn a_wrong_target_stops_the_server_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    for target in
        ["ftp://example.org/www".to_string(), format!("file://{}/www", file.display()), "file://relative".into()]
    {
        let out = std::process::Command::new(crate::binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--demo", "--publish-to", &target])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{target}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&target), "{target}: {stderr}");
    }
}
