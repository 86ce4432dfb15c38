//! The journal: every write appends a chained entry in the same transaction; `journal verify`
//! names the first entry that was altered, removed or reordered, here proven by tampering with
//! the database directly.

use crate::{Engine, Server, on_both_engines};

on_both_engines!(tampering_is_detected_and_named, a_failing_journal_append_stores_nothing);

async fn sql(s: &Server, statement: &'static str) {
    sqlx::any::install_default_drivers();
    let url = if s.db.url.starts_with("sqlite:") {
        format!("sqlite://{}", &s.db.url["sqlite:".len()..])
    } else {
        s.db.url.clone()
    };
    let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query(statement).execute(&mut c).await.unwrap();
}

fn verify(s: &Server) -> (bool, String) {
    let out = s.command(&["journal", "verify"]);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn add_users(s: &Server, names: &[&str]) {
    for name in names {
        let out = s.command(&["user", "add", name, "--role", "viewer"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

async fn tampering_is_detected_and_named(engine: Engine) {
    let s = Server::demo(engine).await;
    // The demo journals its history; count what it wrote, then four more.
    let (ok, text) = verify(&s);
    assert!(ok, "{text}");
    let seeded: usize = text["journal intact: ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(seeded > 100, "{text}");
    add_users(&s, &["eins", "zwei", "drei", "vier"]);
    let (ok, text) = verify(&s);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("journal intact: {} entries", seeded + 4)), "{text}");

    let export = s.command(&["journal", "export", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&export.stdout);
    assert_eq!(csv.lines().count(), seeded + 5, "header and every entry:\n{csv}");
    assert!(csv.contains("user.create") && csv.contains("demo.seed"));

    // Someone edits the payload of entry 3 directly in the database.
    sql(&s, "UPDATE journal SET payload = '{\"username\":\"mallory\"}' WHERE seq = 3").await;
    let (ok, text) = verify(&s);
    assert!(!ok);
    assert!(text.contains("entry 3 was altered"), "{text}");
}

#[tokio::test]
async fn removal_and_reordering_are_named() {
    let s = Server::demo(Engine::Sqlite).await;
    add_users(&s, &["eins", "zwei", "drei", "vier"]);
    sql(&s, "DELETE FROM journal WHERE seq = 2").await;
    let (ok, text) = verify(&s);
    assert!(!ok);
    assert!(text.contains("entry 2 was removed"), "{text}");

    let s = Server::demo(Engine::Sqlite).await;
    add_users(&s, &["eins", "zwei", "drei", "vier"]);
    // Swap entries 3 and 4 by renumbering them.
    sql(&s, "UPDATE journal SET seq = 1000000 WHERE seq = 3").await;
    sql(&s, "UPDATE journal SET seq = 3 WHERE seq = 4").await;
    sql(&s, "UPDATE journal SET seq = 4 WHERE seq = 1000000").await;
    let (ok, text) = verify(&s);
    assert!(!ok);
    assert!(text.contains("entry 3"), "{text}");

    let s = Server::demo(Engine::Sqlite).await;
    add_users(&s, &["eins", "zwei"]);
    // The last entry (the demo journals its history first).
    sql(&s, "DELETE FROM journal WHERE seq = (SELECT seq FROM journal_head WHERE id = 1)").await;
    let (ok, text) = verify(&s);
    assert!(!ok);
    assert!(text.contains("the last entries were removed"), "{text}");
}

async fn a_failing_journal_append_stores_nothing(engine: Engine) {
    let s = Server::demo(engine).await;
    // Occupy the next journal number so the next append fails.
    sql(
        &s,
        "INSERT INTO journal (seq, at, author, scope, kind, payload, prev_hash, hash)
         SELECT seq + 1, 'x', 'x', 'x', 'x', '{}', 'x', 'x' FROM journal_head WHERE id = 1",
    )
    .await;
    let out = s.command(&["user", "add", "geist", "--role", "viewer"]);
    assert!(!out.status.success(), "the write must fail with its journal entry");
    let list = s.command(&["user", "list"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("geist"),
        "the change was rolled back with the journal entry"
    );
}
