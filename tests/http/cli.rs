//! The command line: malformed options get a clear message and a non-zero exit, never a panic.

use std::process::Command;

use crate::{Engine, Server, Session, TestDatabase, binary};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_on_every_command() {
    for args in [vec!["--help"], vec!["serve", "--help"], vec!["import", "--help"]] {
        let (code, text) = run(&args);
        assert_eq!(code, 0, "{args:?}");
        assert!(text.contains("Usage"), "{args:?}: {text}");
    }
    let (_, text) = run(&["serve", "--help"]);
    for option in [
        "--listen",
        "--database",
        "--demo",
        "--trusted-proxy",
        "NOTBETRIEB_DATABASE_URL",
        "NOTBETRIEB_LISTEN",
        "NOTBETRIEB_TRUSTED_PROXIES",
    ] {
        assert!(text.contains(option), "{option}");
    }
}

#[test]
fn malformed_options_are_refused_clearly() {
    let (code, text) = run(&["serve", "--listen", "not-an-address"]);
    assert_ne!(code, 0);
    assert!(text.contains("--listen"), "{text}");
    let (code, text) = run(&["serve", "--demo", "atlantis"]);
    assert_ne!(code, 0);
    assert!(text.contains("suedwestfalen") && text.contains("germany"), "{text}");
    let (code, text) = run(&["serve", "--database", "mysql://localhost/x", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert!(text.contains("unsupported database URL"), "{text}");
    let (code, text) = run(&["serve", "--database", "sqlite:", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert!(text.contains("needs a file path"), "{text}");
    let (code, text) = run(&["serve", "--database", "sqlite:/nonexistent-dir/x/y.sqlite", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert!(text.contains("cannot open the database"), "{text}");
    for network in ["10.0.0.0/33", "proxy.example", "10.0.0/8", ""] {
        let (code, text) = run(&["serve", "--trusted-proxy", network, "--listen", "127.0.0.1:0"]);
        assert_eq!(code, 2, "{network:?}: {text}");
        assert!(text.contains("--trusted-proxy") && text.contains("CIDR"), "{network:?}: {text}");
    }
    let out = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NOTBETRIEB_TRUSTED_PROXIES", "127.0.0.1/32,not-a-network")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "from the environment too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-a-network"));
    let (code, _) = run(&["frobnicate"]);
    assert_ne!(code, 0);
}

#[tokio::test]
async fn a_port_in_use_is_reported() {
    let s = Server::demo(Engine::Sqlite).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let db = TestDatabase::new(Engine::Sqlite);
    let (code, text) = run(&["serve", "--listen", &addr, "--database", &db.url]);
    assert_eq!(code, 1);
    assert!(text.contains("cannot listen on"), "{text}");
}

#[tokio::test]
async fn the_demo_is_not_seeded_twice_and_data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kept.sqlite").display());
    let first = Server::start(TestDatabase::reuse(&url), &["--demo"]);
    let (status, _) = first.text("/kommunen/menden-sauerland").await;
    assert_eq!(status, 200);
    drop(first);
    let db = TestDatabase::reuse(&url);
    let again = Server::start(db, &["--demo"]);
    let (status, html) = again.text("/meldungen").await;
    assert_eq!(status, 200);
    assert_eq!(html.matches("<article").count(), 6, "announcements are not duplicated");
}

#[tokio::test]
async fn the_germany_demo_serves_every_municipality() {
    let s = Server::start(TestDatabase::new(Engine::Sqlite), &["--demo", "germany"]);
    let (status, html) = s.text("/suche?ort=80331").await;
    assert_eq!(status, 303, "{html}");
    let (status, html) = s.text("/kommunen").await;
    assert_eq!(status, 200);
    assert!(html.len() < 200_000, "the towns overview stays small: {} bytes", html.len());
    let (status, html) = s.text("/leistungen/fahrzeug-zulassen").await;
    assert_eq!(status, 200);
    assert!(html.len() < 300_000, "a service page stays small: {} bytes", html.len());
    let (status, _) = s.text("/kommunen/menden-sauerland").await;
    assert_eq!(status, 200);

    // A name many towns share: every one counted, the largest shown with their districts, and
    // the page says that the list is cut.
    let (status, body) = s.json("/api/v1/search?place=Neustadt").await;
    assert_eq!(status, 200);
    let names: Vec<&str> =
        body["municipalities"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    let total = body["municipalities_total"].as_u64().unwrap() as usize;
    assert!(total > names.len() && names.len() == 20, "{total} {names:?}");
    assert!(names.iter().any(|n| n.starts_with("Neustadt an der Weinstra")), "{names:?}");
    assert!(names.iter().all(|n| n.contains("Neustadt")), "{names:?}");
    let (status, html) = s.text("/suche?q=Hund&ort=Neustadt").await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("{total} Kommunen passen zu „Neustadt“")), "{html}");
    // Choosing one from the list names it for certain.
    let link =
        html.split("href=\"").find(|h| h.contains("ort=neustadt-an-der-weinstr")).expect("a link to choose the town");
    let link = link.split('"').next().unwrap().replace("&amp;", "&");
    let (status, html) = s.text(&link).await;
    assert_eq!(status, 200, "{link}");
    assert!(html.contains("Passende Leistungen in Neustadt an der Weinstra"), "{link}: {html}");

    // The desk warns about administrations without an office of their own (the Germany demo
    // has none but the few the scenario refers to) and stays small.
    let admin = Session::demo(&s, "admin").await;
    let overview = admin.get("/intern").await.body;
    assert!(overview.contains("Ohne Dienststelle"), "{}", &overview[..2000.min(overview.len())]);
    assert!(overview.matches("#dienststellen\"").count() <= 100, "the list is cut at 100");
}
