//! Typed events: every write journals what happened in domain words, readable back in order
//! (`notbetrieb journal events`), and the demo journals its month of history.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Engine, Server, Session, on_both_engines};

on_both_engines!(
    a_fresh_demo_journals_its_history_as_typed_events,
    writes_through_the_api_journal_typed_events,
    an_import_journals_the_statements_it_changes
);

fn head(s: &Server) -> i64 {
    events(s, 0).last().map(|e| e["seq"].as_i64().unwrap()).unwrap_or(0)
}

fn events(s: &Server, since: i64) -> Vec<Value> {
    let out = s.command(&["journal", "events", "--since", &since.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn a_fresh_demo_journals_its_history_as_typed_events(engine: Engine) {
    let s = Server::demo(engine).await;
    let verify = s.command(&["journal", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let all = events(&s, 0);
    assert!(all.len() > 500, "{}", all.len());
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    let kinds: std::collections::BTreeSet<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["import.apply", "demo.seed", "statement.set", "announcement.create", "procedure.step", "rollout.set"] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    // Dated as the story goes: across weeks, never going back in time.
    let at: Vec<&str> = all.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "times follow the order");
    let first = chrono::DateTime::parse_from_rfc3339(at[0]).unwrap();
    let last = chrono::DateTime::parse_from_rfc3339(at[at.len() - 1]).unwrap();
    assert!((last - first).num_days() >= 14, "{first} .. {last}");

    // A gate step carries from, to and evidence; a rollout from and to; a statement its content.
    let step = all.iter().find(|e| e["kind"] == "procedure.step").unwrap();
    assert_eq!(step["event"]["type"], "procedure_stepped");
    assert!(
        step["event"]["from"].is_string() && step["event"]["to"].is_string() && step["event"]["evidence"].is_string()
    );
    let rollout = all.iter().find(|e| e["kind"] == "rollout.set").unwrap();
    assert_eq!(rollout["event"]["from"], "not_started", "{rollout}");
    assert!(rollout["event"]["to"].is_string() && rollout["event"]["municipality"].is_string());
    let st = all.iter().find(|e| e["kind"] == "statement.set").unwrap();
    assert!(st["event"]["level"].is_string() && st["event"]["service"].is_string(), "{st}");
    assert!(st["touches"].as_array().unwrap().iter().any(|t| t["part"] == "service"), "{st}");
    // Reading on from a position gives only what came after it.
    let tail = events(&s, seqs[seqs.len() - 3]);
    assert_eq!(tail.len(), 2);
}

async fn writes_through_the_api_journal_typed_events(engine: Engine) {
    let s = Server::demo(engine).await;
    let since = head(&s);
    let admin = Session::api(&s, "admin");
    let path = "/municipalities/menden-sauerland/services/personalausweis-beantragen/statement";
    let (status, body) =
        admin.call(Method::PUT, path, Some(&json!({"level": "emergency", "workaround": "Reisepass"}))).await;
    assert_eq!(status, 200, "{body}");
    let news =
        json!({"scope": "municipality", "scope_ref": "05962040", "title": "Bürgerbüro", "body": "Nur mit Termin."});
    let (status, body) = admin.call(Method::POST, "/announcements", Some(&news)).await;
    assert_eq!(status, 201, "{body}");
    let step = json!({"to": "cleared", "evidence": "Prüfbericht"});
    let (status, body) = admin.call(Method::POST, "/procedures/gewerbe/steps", Some(&step)).await;
    assert_eq!(status, 200, "{body}");

    let new = events(&s, since);
    let kinds: Vec<&str> = new.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.len() >= 3, "{kinds:?}");
    let st = new.iter().find(|e| e["kind"] == "statement.set").expect("statement event");
    assert_eq!(st["author"], "token:test-admin", "{st}");
    assert_eq!(st["event"]["type"], "statement_changed");
    assert_eq!((st["event"]["scope"].as_str(), st["event"]["level"].as_str()), (Some("05962040"), Some("emergency")));
    assert_eq!(st["event"]["workaround"], "Reisepass");
    // What the town stated before (the demo's statement, or none) is carried as `from`.
    assert!(st["event"].get("from").is_some(), "{st}");
    let a = new.iter().find(|e| e["kind"] == "announcement.create").expect("announcement event");
    assert_eq!(a["event"]["type"], "announcement_published", "{a}");
    assert_eq!(a["event"]["title"], "Bürgerbüro");
    let p = new.iter().find(|e| e["kind"] == "procedure.step").expect("step event");
    assert_eq!((p["event"]["procedure"].as_str(), p["event"]["to"].as_str()), (Some("gewerbe"), Some("cleared")));
    assert_eq!(p["event"]["from"], "under_review");
    // A refused write journals nothing.
    let (status, _) =
        admin.call(Method::POST, "/procedures/gewerbe/steps", Some(&json!({"to": "normal", "evidence": "x"}))).await;
    assert_eq!(status, 409);
    assert_eq!(events(&s, since).len(), new.len());
}

async fn an_import_journals_the_statements_it_changes(engine: Engine) {
    let s = Server::demo(engine).await;
    let since = head(&s);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("statements.csv");
    std::fs::write(
        &file,
        "scope_ags,service_slug,level,restrictions,workaround,backlog,expected_return,author,stated_at\n\
         05962040,personalausweis-beantragen,unavailable,,Reisepass nutzen,,2027-01-15,Bürgerbüro Menden,\n",
    )
    .unwrap();
    let out = s.command(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = events(&s, since);
    let st: Vec<&Value> = new.iter().filter(|e| e["kind"] == "statement.set").collect();
    assert_eq!(st.len(), 1, "{new:?}");
    assert_eq!(st[0]["event"]["service"], "personalausweis-beantragen");
    assert_eq!(
        (st[0]["event"]["scope"].as_str(), st[0]["event"]["level"].as_str()),
        (Some("05962040"), Some("unavailable"))
    );
    // Only the statement changed, and its event says what the town had stated before.
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(st[0]["author"], "cli");
    assert_eq!(st[0]["event"]["from"]["level"], "limited", "{new:?}");
    assert_eq!(st[0]["event"]["version"], st[0]["event"]["from"]["version"].as_i64().unwrap() + 1);
    let verify = s.command(&["journal", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}
