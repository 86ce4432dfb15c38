//! The recovery board over HTTP: the security gates refuse with every unmet condition, a valid
//! sequence passes them, a step back cascades to dependents and their towns' public pages, a
//! district rollout changes every town page at once, no rollout before release, cycles are named,
//! editors may look but not change, the board and plan pages, the Fahrplan JSON, and the scripted
//! `demo advance`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Answer, Engine, Server, Session, eventually, input_value, on_both_engines};

on_both_engines!(
    a_refused_release_lists_every_unmet_condition,
    a_valid_sequence_passes_the_gates_and_is_recorded,
    a_step_back_cascades_to_dependents_and_their_towns,
    a_district_rollout_changes_every_town_page_at_once,
    no_rollout_before_release,
    a_dependency_cycle_is_refused_with_the_cycle_named,
    editors_may_look_but_not_change,
    the_board_shows_the_matrix_counts_and_the_plan,
    the_fahrplan_is_public_json,
    demo_advance_walks_the_script_forward,
);

/// Posts a form of a procedure page (`action` relative to it), with the page's CSRF token.
async fn submit(desk: &Session<'_>, procedure: &str, action: &str, form: &[(&str, &str)]) -> Answer {
    let page = format!("/intern/wiederanlauf/{procedure}");
    desk.submit(&page, &format!("{page}{action}"), form).await
}

async fn procedure(t: &Session<'_>, slug: &str) -> Value {
    let (status, p) = t.call(Method::GET, &format!("/procedures/{slug}"), None).await;
    assert_eq!(status, 200, "{p}");
    p
}

async fn step(t: &Session<'_>, slug: &str, to: &str, evidence: &str) -> (u16, Value) {
    t.call(Method::POST, &format!("/procedures/{slug}/steps"), Some(&json!({ "to": to, "evidence": evidence }))).await
}

fn conditions(refusal: &Value) -> Vec<String> {
    refusal["current"]["unmet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["condition"].as_str().unwrap().to_string())
        .collect()
}

/// The level word citizens see for a service in a town.
async fn public_level(s: &Server, town: &str, service: &str) -> String {
    let (status, page) = s.text(&format!("/kommunen/{town}/leistungen/{service}")).await;
    assert_eq!(status, 200);
    let at = page.find("class=\"level-word\">").expect("a level word") + 19;
    page[at..at + page[at..].find('<').unwrap()].to_string()
}

async fn a_refused_release_lists_every_unmet_condition(engine: Engine) {
    let s = Server::demo(engine).await;
    let t = Session::api(&s, "krisenstab");
    // Fahrerlaubnis is under review and needs the remote access, which is only hardened.
    let (status, refusal) = step(&t, "fahrerlaubnis", "released", "Freigabe").await;
    assert_eq!(status, 409, "{refusal}");
    assert_eq!(refusal["error"], "conflict");
    assert_eq!(
        conditions(&refusal),
        ["not_next_stage", "not_cleared", "not_hardened", "dependency_not_released"],
        "{refusal}"
    );
    assert_eq!(refusal["current"]["unmet"][3]["dependency"], "fernzugang");
    assert_eq!(refusal["current"]["messages"].as_array().unwrap().len(), 4, "{refusal}");
    assert_eq!(procedure(&t, "fahrerlaubnis").await["stage"], "under_review", "nothing changed");

    let desk = Session::demo(&s, "krisenstab").await;
    let res = submit(&desk, "fahrerlaubnis", "/schritt", &[("to", "released"), ("evidence", "Freigabe")]).await;
    assert_eq!(res.status, 409);
    for sentence in [
        "nur eine Stufe nach der anderen",
        "noch nicht geprüft und als unbedenklich eingestuft",
        "Sicherheitsrichtlinien sind noch nicht in Kraft",
        "„Fernzugang mit zweitem Faktor“ ist noch nicht freigegeben",
    ] {
        assert!(res.body.contains(sentence), "{sentence} missing: {}", res.body);
    }
    assert!(res.body.contains(">Freigabe</textarea>"), "what was typed is kept");
    // The gate status says the same before anyone tries.
    let page = desk.get("/intern/wiederanlauf/fernzugang").await;
    assert!(page.body.contains("ist möglich"), "{}", page.body);
}

async fn a_valid_sequence_passes_the_gates_and_is_recorded(engine: Engine) {
    let s = Server::demo(engine).await;
    let t = Session::api(&s, "krisenstab");
    let desk = Session::demo(&s, "krisenstab").await;
    let res = submit(&desk, "fahrerlaubnis", "/schritt", &[("to", "cleared"), ("evidence", "")]).await;
    assert_eq!(res.status, 422, "a forward step needs evidence");
    assert!(res.body.contains("Bitte einen kurzen Nachweis angeben"), "{}", res.body);
    for (slug, to) in [
        ("fernzugang", "released"),
        ("fahrerlaubnis", "cleared"),
        ("fahrerlaubnis", "hardened"),
        ("fahrerlaubnis", "released"),
    ] {
        let res =
            submit(&desk, slug, "/schritt", &[("to", to), ("evidence", &format!("Prüfbericht {slug} {to}"))]).await;
        assert_eq!(
            (res.status, res.location.as_str()),
            (303, format!("/intern/wiederanlauf/{slug}?gespeichert=1&mit=0#stufe").as_str()),
            "{slug} → {to}: {}",
            res.body
        );
    }
    let res = submit(
        &desk,
        "fahrerlaubnis",
        "/rollout",
        &[("districts", "hochsauerlandkreis"), ("stage", "pilot"), ("expected_date", "2030-01-15")],
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let page = desk.get(&res.location).await;
    assert!(page.body.contains("Für 12 Kommunen gespeichert"), "{}", page.body);

    let p = procedure(&t, "fahrerlaubnis").await;
    assert_eq!(p["stage"], "released");
    assert_eq!((p["rollout"]["pilot"].as_u64(), p["rollout"]["live"].as_u64()), (Some(12), Some(12)), "{p}");
    assert_eq!(p["gate"]["next_stage"], "normal");
    let history: Vec<&str> = p["history"].as_array().unwrap().iter().map(|h| h["evidence"].as_str().unwrap()).collect();
    assert_eq!(
        history[..3],
        [
            "Prüfbericht fahrerlaubnis released",
            "Prüfbericht fahrerlaubnis hardened",
            "Prüfbericht fahrerlaubnis cleared"
        ]
    );
    assert_eq!(p["history"][0]["author"], "krisenstab");
    // The demo journaled its own history of steps; this test's four are the crisis team's.
    let (_, journal) = t.call(Method::GET, "/journal?kind=procedure.step", None).await;
    let ours = journal["entries"].as_array().unwrap().iter().filter(|e| e["author"] == "krisenstab").count();
    assert_eq!(ours, 4, "{journal}");

    // Through the API, once per Idempotency-Key.
    let req = |key: &str| {
        t.api_request(Method::POST, "/procedures/gewerbe/steps")
            .header("idempotency-key", key)
            .json(&json!({ "to": "cleared", "evidence": "Forensik ohne Befund" }))
    };
    let first = t.send(req("k1")).await;
    assert_eq!(first.status, 200);
    let again = t.send(req("k1")).await;
    assert_eq!((again.status, again.headers["idempotent-replayed"].to_str().unwrap()), (200, "true"));
    let body: Value = again.json();
    assert_eq!(body["changed"], json!([{ "procedure": "gewerbe", "stage": "cleared" }]));
    assert_eq!(procedure(&t, "gewerbe").await["history"][1]["to_stage"], "under_review", "acted once");
}

async fn a_step_back_cascades_to_dependents_and_their_towns(engine: Engine) {
    let s = Server::demo(engine).await;
    let t = Session::api(&s, "krisenstab");
    // Arnsberg's social services follow the rollout (no statement): basic operation.
    assert_eq!(public_level(&s, "arnsberg", "wohngeld").await, "Basisbetrieb (eingeschränkt)");
    let (status, refusal) = step(&t, "verzeichnisdienst", "under_review", " ").await;
    assert_eq!((status, conditions(&refusal)), (409, vec!["reason_missing".to_string()]), "{refusal}");

    let (status, result) =
        step(&t, "verzeichnisdienst", "under_review", "Neue Indikatoren im Verzeichnisdienst gefunden").await;
    assert_eq!(status, 200, "{result}");
    let changed: Vec<(&str, &str)> = result["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["procedure"].as_str().unwrap(), c["stage"].as_str().unwrap()))
        .collect();
    for dependent in ["meldewesen", "ausweise", "meldeauskunft", "personenstand", "kfz", "sozialwesen", "finanzwesen"] {
        assert!(changed.contains(&(dependent, "hardened")), "{dependent} did not fall back: {changed:?}");
    }
    assert!(changed.contains(&("verzeichnisdienst", "under_review")));
    assert!(!changed.iter().any(|(p, _)| *p == "gewerbe"), "not released, so not pulled back");
    let social = procedure(&t, "sozialwesen").await;
    assert_eq!((social["stage"].as_str(), social["rollout"]["live"].as_u64()), (Some("hardened"), Some(0)), "{social}");
    assert!(social["history"][0]["evidence"].as_str().unwrap().contains("verzeichnisdienst"), "{social}");
    assert_eq!(public_level(&s, "arnsberg", "wohngeld").await, "Ausfall");
    let (_, journal) = t.call(Method::GET, "/journal?kind=rollout.pulled_back", None).await;
    assert!(journal["entries"].as_array().unwrap().len() > 50, "every town's rollout journaled");
}

async fn a_district_rollout_changes_every_town_page_at_once(engine: Engine) {
    let s = Server::demo(engine).await;
    let t = Session::api(&s, "krisenstab");
    let (_, list) = s.json("/api/v1/municipalities").await;
    let olpe: Vec<String> = list["municipalities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["district"]["slug"] == "kreis-olpe")
        .map(|m| m["slug"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(olpe.len(), 7);
    for town in &olpe {
        assert_eq!(public_level(&s, town, "wohngeld").await, "Ausfall", "{town} before");
    }
    let body = json!({ "procedure": "sozialwesen", "stage": "basic", "districts": ["kreis-olpe"], "expected_date": "2030-02-01" });
    let (status, result) = t.call(Method::POST, "/procedures/sozialwesen/rollout", Some(&body)).await;
    assert_eq!((status, result["municipalities"].as_u64()), (200, Some(7)), "{result}");
    for town in &olpe {
        assert_eq!(public_level(&s, town, "wohngeld").await, "Basisbetrieb (eingeschränkt)", "{town} after");
        let (_, json) = s.json(&format!("/api/v1/municipalities/{town}")).await;
        let wohngeld =
            json["services"].as_array().unwrap().iter().find(|x| x["service"]["slug"] == "wohngeld").unwrap();
        assert_eq!(
            (wohngeld["level"].as_str(), wohngeld["source"].as_str()),
            (Some("limited"), Some("derived")),
            "{wohngeld}"
        );
    }
    let (status, wrong) = t.call(Method::POST, "/procedures/kfz/rollout", Some(&body)).await;
    assert_eq!((status, wrong["field"].as_str()), (422, Some("procedure")), "the body names the path's procedure");
}

async fn no_rollout_before_release(engine: Engine) {
    let s = Server::demo(engine).await;
    let t = Session::api(&s, "krisenstab");
    let body = json!({ "procedure": "gewerbe", "stage": "pilot", "municipalities": ["menden-sauerland"] });
    let (status, refusal) = t.call(Method::POST, "/procedures/gewerbe/rollout", Some(&body)).await;
    assert_eq!((status, conditions(&refusal)), (409, vec!["procedure_not_released".to_string()]), "{refusal}");
    let body = json!({ "procedure": "kfz", "stage": "normal", "districts": ["hochsauerlandkreis"] });
    let (status, refusal) = t.call(Method::POST, "/procedures/kfz/rollout", Some(&body)).await;
    assert_eq!((status, conditions(&refusal)), (409, vec!["procedure_not_normal".to_string()]), "{refusal}");

    let desk = Session::demo(&s, "krisenstab").await;
    let res = submit(&desk, "gewerbe", "/rollout", &[("municipalities", "menden-sauerland"), ("stage", "pilot")]).await;
    assert_eq!(res.status, 409);
    assert!(res.body.contains("Keine Einführung vor der Freigabe"), "{}", res.body);
    assert_eq!(procedure(&t, "gewerbe").await["rollout"]["live"], 0);
}

async fn a_dependency_cycle_is_refused_with_the_cycle_named(engine: Engine) {
    let s = Server::demo(engine).await;
    let t = Session::api(&s, "krisenstab");
    let mut infra = json!({ "slug": "verzeichnisdienst", "name": "Verzeichnisdienst", "kind": "infrastructure", "priority": 0, "depends_on": ["meldewesen"] });
    let (status, refusal) = t.call(Method::PUT, "/procedures/verzeichnisdienst", Some(&infra)).await;
    assert_eq!(status, 409, "{refusal}");
    assert_eq!(refusal["current"]["cycle"], json!(["verzeichnisdienst", "meldewesen", "verzeichnisdienst"]));
    assert!(
        refusal["current"]["messages"][0]
            .as_str()
            .unwrap()
            .contains("verzeichnisdienst → meldewesen → verzeichnisdienst"),
        "{refusal}"
    );
    infra["depends_on"] = json!([]);
    infra["slug"] = json!("netz");
    let (status, wrong) = t.call(Method::PUT, "/procedures/verzeichnisdienst", Some(&infra)).await;
    assert_eq!((status, wrong["field"].as_str()), (422, Some("slug")));

    // A new procedure, then one that would close a cycle through it.
    let new = json!({ "slug": "e-akte", "name": "E-Akte", "area": "finance", "depends_on": ["finanzwesen"], "services": ["zahlungen"] });
    let (status, created) = t.call(Method::POST, "/procedures", Some(&new)).await;
    assert_eq!(
        (status, created["stage"].as_str(), created["version"].as_u64()),
        (201, Some("down"), Some(1)),
        "{created}"
    );
    let (status, _) = t.call(Method::POST, "/procedures", Some(&new)).await;
    assert_eq!(status, 409, "no second procedure with the same slug");
    let desk = Session::demo(&s, "krisenstab").await;
    // The demo's history stepped the procedure through its gates: each step is a version.
    let version = procedure(&t, "finanzwesen").await["version"].as_u64().unwrap();
    let version = version.to_string();
    let res = submit(
        &desk,
        "finanzwesen",
        "",
        &[
            ("version", version.as_str()),
            ("name", "Finanzverfahren und Kasse"),
            ("kind", "procedure"),
            ("area", "finance"),
            ("priority", "7"),
            ("depends_on", "netz"),
            ("depends_on", "e-akte"),
        ],
    )
    .await;
    assert_eq!(res.status, 409);
    assert!(res.body.contains("finanzwesen → e-akte → finanzwesen"), "{}", res.body);
    let res = submit(
        &desk,
        "finanzwesen",
        "",
        &[
            ("version", version.as_str()),
            ("name", "Finanzen"),
            ("kind", "procedure"),
            ("area", "finance"),
            ("priority", "7"),
            ("depends_on", "netz"),
        ],
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let finance = procedure(&t, "finanzwesen").await;
    assert_eq!(
        (finance["name"].as_str(), finance["version"].as_u64(), finance["depends_on"].clone()),
        (Some("Finanzen"), Some(version.parse::<u64>().unwrap() + 1), json!(["netz"]))
    );
}

async fn editors_may_look_but_not_change(engine: Engine) {
    let s = Server::demo(engine).await;
    let desk = Session::demo(&s, "menden").await;
    let page = desk.get("/intern/wiederanlauf/kfz").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Kfz-Zulassungsverfahren") && !page.body.contains("/schritt\""), "no forms for editors");
    let csrf = input_value(&page.body, "csrf").expect("no field csrf");
    let res =
        desk.post("/intern/wiederanlauf/kfz/schritt", &[("csrf", &csrf), ("to", "normal"), ("evidence", "x")]).await;
    assert_eq!(res.status, 403, "{}", res.body);
    let res = desk
        .post(
            "/intern/wiederanlauf/kfz/rollout",
            &[("csrf", &csrf), ("stage", "basic"), ("municipalities", "menden-sauerland")],
        )
        .await;
    assert_eq!(res.status, 403);
    assert_eq!(desk.get("/intern/wiederanlauf/neu").await.status, 403);

    let t = Session::api(&s, "menden");
    let (status, _) = t.call(Method::GET, "/procedures/kfz", None).await;
    assert_eq!(status, 200, "reading is allowed");
    let (status, refusal) = step(&t, "kfz", "normal", "x").await;
    assert_eq!((status, refusal["error"].as_str()), (403, Some("forbidden")));
    let (status, _) = Session::bearer(&s, "nb_wrong").call(Method::GET, "/procedures", None).await;
    assert_eq!(status, 401);
    let krisenstab = Session::api(&s, "krisenstab");
    assert_eq!(procedure(&krisenstab, "kfz").await["stage"], "released", "nothing changed");
}

async fn the_board_shows_the_matrix_counts_and_the_plan(engine: Engine) {
    let s = Server::demo(engine).await;
    let desk = Session::demo(&s, "krisenstab").await;
    let board = desk.get("/intern/wiederanlauf").await;
    assert_eq!(board.status, 200);
    assert!(
        board.body.contains("<table class=\"board-table\">") && board.body.contains("<caption"),
        "matrix with caption"
    );
    assert!(board.body.contains("Einwohnermeldeverfahren: Basisbetrieb in 39 von 68 Kommunen"), "{}", board.body);
    assert!(board.body.contains("Netz und Firewalls"), "infrastructure listed");
    assert!(board.body.contains("<span class=\"rollout rollout-pilot\">"), "stages as icon and word");
    let olpe = desk.get("/intern/wiederanlauf?kreis=kreis-olpe&bereich=social").await;
    assert!(olpe.body.contains("Sozialleistungsverfahren: Basisbetrieb in 0 von 7 Kommunen"), "{}", olpe.body);
    assert!(!olpe.body.contains(">Einwohnermeldeverfahren</a>") && !olpe.body.contains(">Arnsberg</a>"), "filtered");
    let plan = desk.get("/intern/wiederanlauf/plan").await;
    assert_eq!(plan.status, 200);
    let (network, registration, licence) = (
        plan.body.find(">Netz und Firewalls<").unwrap(),
        plan.body.find(">Einwohnermeldeverfahren<").unwrap(),
        plan.body.find(">Fahrerlaubnisverfahren<").unwrap(),
    );
    assert!(network < registration && registration < licence, "dependencies first, then priority");
    assert!(plan.body.contains("„Fernzugang mit zweitem Faktor“ ist noch nicht freigegeben"), "what blocks it");
    assert_eq!(desk.get("/intern/wiederanlauf/neu").await.status, 200);
    assert_eq!(desk.get("/intern/wiederanlauf/gibt-es-nicht").await.status, 404);
    let viewer_board = Session::demo(&s, "menden").await.get("/intern/wiederanlauf").await;
    assert!(viewer_board.status == 200 && !viewer_board.body.contains("/intern/wiederanlauf/neu"));
}

async fn the_fahrplan_is_public_json(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, plan) = s.json("/api/v1/fahrplan").await;
    assert_eq!(status, 200, "{plan}");
    let returns = plan["returns"].as_array().unwrap();
    assert!(!returns.is_empty());
    // Ordered by the first day each may be ("2026-12-H2" begins on the 16th).
    let dates: Vec<&str> = returns.iter().map(|r| r["expected"]["earliest"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|w| w[0] <= w[1]), "earliest first: {dates:?}");
    assert!(returns[0]["service"]["slug"].is_string() && !returns[0]["municipalities"].as_array().unwrap().is_empty());
    let (status, menden) = s.json("/api/v1/fahrplan?municipality=menden-sauerland").await;
    assert_eq!((status, menden["municipality"]["slug"].as_str()), (200, Some("menden-sauerland")));
    assert!(menden["returns"].as_array().unwrap().iter().all(|r| r["municipalities"].as_array().unwrap().len() == 1));
    assert_eq!(s.json("/api/v1/fahrplan?municipality=nirgendwo").await.0, 404);
    let res = s.get("/api/v1/fahrplan").await;
    let etag = res.headers()["etag"].clone();
    let again = s.client.get(s.url("/api/v1/fahrplan")).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
}

async fn demo_advance_walks_the_script_forward(engine: Engine) {
    let s = Server::demo(engine).await;
    let t = Session::api(&s, "krisenstab");
    let out = s.command(&["demo", "advance", "--steps", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("step 1/11: Fahrerlaubnisverfahren (fahrerlaubnis) under_review -> cleared"), "{stdout}");
    assert!(stdout.contains("step 2/11: Fernzugang"), "{stdout}");
    // The running server sees the change within its poll interval.
    let api = &t;
    assert!(eventually(|| async move { procedure(api, "fernzugang").await["stage"] == "released" }).await);
    let out = s.command(&["demo", "advance", "--steps", "20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("step 11/11")
            && stdout.trim_end().ends_with("the demo scenario is complete: nothing left to advance"),
        "{stdout}"
    );
    let out = s.command(&["demo", "advance"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "the demo scenario is complete: nothing left to advance");
    assert!(eventually(|| async move { procedure(api, "personenstand").await["stage"] == "normal" }).await);
    let licence = procedure(&t, "fahrerlaubnis").await;
    assert_eq!(
        (licence["stage"].as_str(), licence["rollout"]["pilot"].as_u64()),
        (Some("released"), Some(12)),
        "{licence}"
    );
    let (_, journal) = t.call(Method::GET, "/journal?author=cli&kind=procedure.step", None).await;
    assert_eq!(journal["entries"].as_array().unwrap().len(), 6, "every step journaled as the CLI");
}
