//! Typed events: every write journals what happened in domain words, readable back in order
//! (`notbetrieb journal events`), and the demo journals its month of history.

use serde_json::Value;

use crate::{Engine, Server, on_both_engines};

on_both_engines!(a_fresh_demo_journals_its_history_as_typed_events);

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
