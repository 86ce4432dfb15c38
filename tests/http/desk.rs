//! The editing desk over HTTP, as a browser without JavaScript uses it: sign-in (demo and TOTP
//! accounts), lockout, CSRF, bulk and single statements with versions, contact channels and
//! referrals, announcements from draft to correction, scopes per role, sign-out, the journal
//! with its exports, accounts and API tokens.

use serde_json::Value;

use crate::{Engine, Server, Session, element_text, input_value, on_both_engines, totp, unix_now};

on_both_engines!(
    demo_and_totp_accounts_sign_in,
    wrong_passwords_get_one_generic_answer_and_lock_the_account,
    forms_without_the_right_csrf_token_change_nothing,
    a_bulk_change_reaches_the_public_pages_at_once,
    a_stale_version_is_refused_with_the_current_state,
    contact_channels_and_referrals_are_edited_per_town,
    an_announcement_goes_from_draft_to_published_to_corrected,
    editors_stay_inside_their_scope,
    viewers_read_everything_and_change_nothing,
    sign_out_ends_the_session_and_everywhere_ends_all,
    the_journal_lists_changes_verifies_and_exports,
    admins_manage_accounts_and_everyone_their_tokens,
);

const MENDEN: &str = "/intern/kommunen/menden-sauerland";

async fn public_town(s: &Server) -> Value {
    s.json("/api/v1/municipalities/menden-sauerland").await.1
}

fn public_service<'v>(town: &'v Value, slug: &str) -> &'v Value {
    town["services"].as_array().unwrap().iter().find(|x| x["service"]["slug"] == slug).unwrap()
}

async fn demo_and_totp_accounts_sign_in(engine: Engine) {
    let s = Server::demo(engine).await;
    let demo = Session::demo(&s, "menden").await;
    let home = demo.get("/intern").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Menden (Sauerland)"), "{}", home.body);

    // An account outside the demo: set up from the one-time link with TOTP, then sign in.
    let out = s.command(&["user", "add", "anna", "--role", "editor", "--scope", "05962040", "--name", "Anna Beispiel"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let link = stdout.lines().find(|l| l.contains("/intern/einrichten/")).unwrap();
    let path = &link[link.find("/intern/einrichten/").unwrap()..];
    let anna = Session::new(&s);
    let setup = anna.get(path).await;
    assert_eq!(setup.status, 200);
    let secret = element_text(&setup.body, "totp-secret");
    let form = input_value(&setup.body, "form").unwrap();
    let password = "ein langer Satz als Passwort";
    let code = totp(&secret, unix_now());
    let done = anna
        .post(path, &[("password", password), ("password_again", password), ("code", &code), ("form", &form)])
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Wiederherstellungscodes"));

    let first = anna.sign_in("anna", password).await;
    assert_eq!((first.status, first.location.as_str()), (303, "/intern/zweiter-faktor"));
    // Without the second factor the desk stays closed.
    assert_eq!(anna.get(MENDEN).await.location, "/intern/zweiter-faktor");
    // The step used during setup cannot be replayed; the next one is accepted (one step of skew).
    let code = totp(&secret, unix_now() + 30);
    let second = anna.submit("/intern/zweiter-faktor", "/intern/zweiter-faktor", &[("code", &code)]).await;
    assert_eq!((second.status, second.location.as_str()), (303, "/intern"), "{}", second.body);
    let town = anna.get(MENDEN).await;
    assert_eq!(town.status, 200);
    assert!(town.body.contains("Angemeldet: Anna Beispiel"));
}

async fn wrong_passwords_get_one_generic_answer_and_lock_the_account(engine: Engine) {
    let s = Server::demo(engine).await;
    let b = Session::new(&s);
    let unknown = b.sign_in("niemand", "irgendetwas").await;
    let wrong = b.sign_in("menden", "falsches-passwort").await;
    assert_eq!((unknown.status, wrong.status), (401, 401));
    let message = "Anmeldung fehlgeschlagen. Bitte prüfen Sie Benutzername und Passwort.";
    assert!(unknown.body.contains(message) && wrong.body.contains(message));
    assert_eq!(
        unknown.body.replace("niemand", ""),
        wrong.body.replace("menden", ""),
        "nothing tells whether the account exists"
    );
    for _ in 0..4 {
        assert_eq!(b.sign_in("menden", "falsches-passwort").await.status, 401);
    }
    // Five failures: now even the right password is refused, with the same answer.
    let locked = b.sign_in("menden", "demo-menden-passwort").await;
    assert_eq!(locked.status, 401);
    assert!(locked.body.contains(message));
    assert!(b.get("/intern").await.location.ends_with("/intern/anmelden"));
    // Other accounts are not affected.
    Session::demo(&s, "luedenscheid").await;
}

async fn forms_without_the_right_csrf_token_change_nothing(engine: Engine) {
    let s = Server::demo(engine).await;
    let b = Session::demo(&s, "menden").await;
    let form = [("areas", "vehicle"), ("level", "normal"), ("workaround", "CSRF-Probe")];
    assert_eq!(b.post(&format!("{MENDEN}/status"), &form).await.status, 403);
    let mut wrong = vec![("csrf", "falsch")];
    wrong.extend_from_slice(&form);
    assert_eq!(b.post(&format!("{MENDEN}/status"), &wrong).await.status, 403);
    assert_eq!(
        b.post("/intern/meldungen/neu", &[("scope", "municipality:05962040"), ("title", "CSRF-Probe"), ("body", "x")])
            .await
            .status,
        403
    );
    assert_eq!(b.post("/intern/abmelden", &[]).await.status, 403);
    let (_, public) = s.text("/kommunen/menden-sauerland").await;
    assert!(!public.contains("CSRF-Probe"));
    assert_eq!(public_service(&public_town(&s).await, "fahrzeug-zulassen")["level"], "unavailable");
    assert!(!b.get("/intern/journal").await.body.contains("CSRF-Probe"));
    // Still signed in: the refused sign-out did nothing.
    assert_eq!(b.get("/intern").await.status, 200);
}

async fn a_bulk_change_reaches_the_public_pages_at_once(engine: Engine) {
    let s = Server::demo(engine).await;
    let b = Session::demo(&s, "menden").await;
    let page = b.get(MENDEN).await;
    assert!(page.body.contains("<legend>Kfz-Zulassung und Führerschein</legend>"), "{}", page.body);
    // One line per service, what it says in a disclosure, the form's fields before the list.
    println!("desk town page: {} bytes", page.body.len());
    assert!(page.body.len() < 80_000, "the desk's town page stays small: {} bytes", page.body.len());
    let (fields, list) = (page.body.find("id=\"level\"").unwrap(), page.body.find("class=\"desk-services\"").unwrap());
    assert!(fields < list, "what to set comes before the 49 services");
    assert!(page.body.contains("name=\"areas\" value=\"vehicle\""));

    // "Every vehicle service in Menden: unavailable, workaround: district office Iserlohn" in one submit.
    let res = b
        .submit(
            MENDEN,
            &format!("{MENDEN}/status"),
            &[
                ("areas", "vehicle"),
                ("level", "unavailable"),
                ("restrictions", "Keine Zulassungen in Menden."),
                ("workaround", "Kreishaus Iserlohn"),
                ("backlog", ""),
                ("expected_return", "2027-01-15"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let town = public_town(&s).await;
    let vehicle: Vec<&Value> =
        town["services"].as_array().unwrap().iter().filter(|x| x["service"]["area"] == "vehicle").collect();
    assert!(vehicle.len() >= 5);
    assert_eq!(res.location, format!("{MENDEN}?gespeichert={}#leistungen", vehicle.len()));
    for x in &vehicle {
        assert_eq!((x["level"].as_str(), x["source"].as_str()), (Some("unavailable"), Some("municipality")), "{x}");
        assert_eq!(x["workaround"], "Kreishaus Iserlohn");
        assert_eq!(x["expected_return"], "2027-01-15");
    }
    let (_, html) = s.text("/kommunen/menden-sauerland").await;
    // The services that now say the same share one line on the town page, with the workaround.
    assert!(html.contains("Kreishaus Iserlohn"));
    assert!(html.contains(&format!("{} Leistungen:</strong>", vehicle.len())), "one line for the area's services");
    let notice = b.get(&res.location).await;
    assert!(notice.body.contains(&format!("{} Angaben gespeichert", vehicle.len())));

    // Single services by checkbox, and a withdrawal.
    let res = b
        .submit(
            MENDEN,
            &format!("{MENDEN}/status"),
            &[
                ("services", "wohnsitz-anmelden"),
                ("services", "meldebescheinigung"),
                ("level", "emergency"),
                ("restrictions", "Nur Notfälle."),
            ],
        )
        .await;
    assert!(res.location.contains("gespeichert=2"), "{}", res.location);
    let town = public_town(&s).await;
    assert_eq!(public_service(&town, "meldebescheinigung")["level"], "emergency");
    assert_eq!(public_service(&town, "wohnsitz-abmelden")["level"], "limited", "unchecked services stay");
    let service = format!("{MENDEN}/leistungen/meldebescheinigung");
    let version = input_value(&b.get(&service).await.body, "version").unwrap();
    let res = b.submit(&service, &format!("{service}/zuruecknehmen"), &[("version", &version)]).await;
    assert_eq!(res.status, 303);
    assert_ne!(public_service(&public_town(&s).await, "meldebescheinigung")["source"], "municipality");

    // Nothing selected, or a level that does not exist: 422, nothing stored.
    let res = b.submit(MENDEN, &format!("{MENDEN}/status"), &[("level", "unavailable")]).await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("role=\"alert\""));
    let res =
        b.submit(MENDEN, &format!("{MENDEN}/status"), &[("services", "geburtsurkunde"), ("level", "kaputt")]).await;
    assert_eq!(res.status, 422);
    assert_ne!(public_service(&public_town(&s).await, "geburtsurkunde")["level"], "kaputt");
}

async fn a_stale_version_is_refused_with_the_current_state(engine: Engine) {
    let s = Server::demo(engine).await;
    let first = Session::demo(&s, "menden").await;
    let second = Session::demo(&s, "admin").await;
    let page = format!("{MENDEN}/leistungen/geburtsurkunde");
    let seen_by_first = first.get(&page).await.body;
    let seen_by_second = second.get(&page).await.body;
    let version = input_value(&seen_by_first, "version").unwrap();
    assert_eq!(input_value(&seen_by_second, "version").unwrap(), version);
    let csrf = input_value(&seen_by_first, "csrf").unwrap();
    let saved = first
        .post(
            &page,
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("level", "limited"),
                ("restrictions", "Nur beglaubigte Abschriften."),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(saved.location, format!("{MENDEN}?gespeichert=1#leistung-geburtsurkunde"));

    let csrf = input_value(&seen_by_second, "csrf").unwrap();
    let stale =
        second.post(&page, &[("csrf", &csrf), ("version", &version), ("level", "normal"), ("restrictions", "")]).await;
    assert_eq!(stale.status, 409);
    assert!(stale.body.contains("Jemand anderes hat diesen Eintrag inzwischen geändert"));
    assert!(stale.body.contains("Nur beglaubigte Abschriften."), "the current state is shown: {}", stale.body);
    assert_eq!(public_service(&public_town(&s).await, "geburtsurkunde")["level"], "limited");
    // Withdrawing with the stale version is refused the same way.
    let stale = second.post(&format!("{page}/zuruecknehmen"), &[("csrf", &csrf), ("version", &version)]).await;
    assert_eq!(stale.status, 409);
    // With the current version the second save goes through.
    let fresh = second.get(&page).await.body;
    let version = input_value(&fresh, "version").unwrap();
    let saved = second.post(&page, &[("csrf", &csrf), ("version", &version), ("level", "normal")]).await;
    assert_eq!(saved.status, 303);
}

async fn contact_channels_and_referrals_are_edited_per_town(engine: Engine) {
    let s = Server::demo(engine).await;
    let b = Session::demo(&s, "menden").await;
    let page = b.get(MENDEN).await.body;
    let version = input_value(&page, "version").unwrap();
    let contact = [
        ("version", version.as_str()),
        ("phone", "02373 903-0"),
        ("email", "buergerbuero@menden.example"),
        ("website", "https://www.menden.de"),
        ("emergency_website", "https://notfall.menden.example"),
        ("social_media", "https://social.example/@menden"),
    ];
    let res = b.submit(MENDEN, &format!("{MENDEN}/kontakt"), &contact).await;
    assert_eq!(
        (res.status, res.location.as_str()),
        (303, "/intern/kommunen/menden-sauerland?gespeichert=1#kontakt"),
        "{}",
        res.body
    );
    let (_, public) = s.text("/kommunen/menden-sauerland").await;
    assert!(public.contains("02373 903-0") && public.contains("https://notfall.menden.example"));
    // The same form again, with the version it was shown with: someone saved since.
    let stale = b.submit(MENDEN, &format!("{MENDEN}/kontakt"), &contact).await;
    assert_eq!(stale.status, 409);
    let bad = b.submit(MENDEN, &format!("{MENDEN}/kontakt"), &[("website", "javascript:alert(1)")]).await;
    assert_eq!(bad.status, 422);

    let page = b.get(MENDEN).await.body;
    assert!(page.contains("<select id=\"office_slug\" name=\"office_slug\""));
    let options = &page[page.find("id=\"office_slug\"").unwrap()..];
    let office = &options[options.find("<option value=\"").unwrap() + 15..];
    let office = &office[..office.find('"').unwrap()];
    let res = b
        .submit(
            MENDEN,
            &format!("{MENDEN}/ausweichstellen"),
            &[
                ("service_slug", "reisepass-beantragen"),
                ("office_slug", office),
                ("conditions", "Nur mit Termin <b>bitte</b>"),
                ("valid_from", ""),
                ("valid_until", "2099-12-31"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let (_, alternatives) = s.text("/kommunen/menden-sauerland/leistungen/reisepass-beantragen").await;
    assert!(alternatives.contains("Nur mit Termin &lt;b&gt;bitte&lt;/b&gt;"), "{alternatives}");
    let page = b.get(MENDEN).await.body;
    let delete = page
        .split("action=\"")
        .find(|p| p.starts_with(&format!("{MENDEN}/ausweichstellen/{office}-reisepass")))
        .unwrap();
    let delete = &delete[..delete.find('"').unwrap()];
    let res = b.submit(MENDEN, delete, &[]).await;
    assert_eq!(res.status, 303);
    let (_, alternatives) = s.text("/kommunen/menden-sauerland/leistungen/reisepass-beantragen").await;
    assert!(!alternatives.contains("Nur mit Termin"));
}

/// The id of the announcement titled `title` in the desk's list.
fn announcement_id(list: &str, title: &str) -> String {
    let at = list.find(&format!("\">{title}</a>")).unwrap_or_else(|| panic!("{title} not listed: {list}"));
    let start = list[..at].rfind("/intern/meldungen/").unwrap() + "/intern/meldungen/".len();
    list[start..at].to_string()
}

async fn an_announcement_goes_from_draft_to_published_to_corrected(engine: Engine) {
    let s = Server::demo(engine).await;
    let b = Session::demo(&s, "menden").await;
    let body = "Das Bürgerbüro öffnet **ab Montag** wieder.\n\n<script>alert('x')</script><img src=x onerror=alert(1)>\n\n[Mehr](javascript:alert(1))";
    let form = [
        ("scope", "municipality:05962040"),
        ("lang", "de"),
        ("title", "Bürgerbüro wieder offen"),
        ("body", body),
        ("publish", "draft"),
    ];

    // Preview: the sanitised rendering, nothing stored.
    let mut preview = form.to_vec();
    preview.push(("action", "preview"));
    let res = b.submit("/intern/meldungen/neu", "/intern/meldungen/neu", &preview).await;
    assert_eq!(res.status, 200);
    let rendered = &res.body[res.body.find("<article class=\"prose\">").unwrap()..];
    let rendered = &rendered[..rendered.find("</article>").unwrap()];
    assert!(rendered.contains("<strong>ab Montag</strong>"), "{rendered}");
    assert!(
        !rendered.contains("<script") && !rendered.contains("<img") && !rendered.contains("href=\"javascript"),
        "{rendered}"
    );
    assert!(rendered.contains("&lt;img src=x onerror=alert(1)&gt;"), "raw HTML is shown as text: {rendered}");
    assert!(res.body.contains("&lt;script&gt;"), "the form keeps the text as written");
    assert!(!b.get("/intern/meldungen").await.body.contains("Bürgerbüro wieder offen"));

    // Draft: listed on the desk, not public.
    let mut save = form.to_vec();
    save.push(("action", "save"));
    let res = b.submit("/intern/meldungen/neu", "/intern/meldungen/neu", &save).await;
    assert_eq!((res.status, res.location.as_str()), (303, "/intern/meldungen?gespeichert=1"), "{}", res.body);
    let list = b.get("/intern/meldungen").await.body;
    assert!(list.contains("Entwurf"));
    let id = announcement_id(&list, "Bürgerbüro wieder offen");
    assert!(!s.text("/meldungen").await.1.contains("Bürgerbüro wieder offen"));
    assert_eq!(s.text(&format!("/meldungen/{id}")).await.0, 404);

    // Publish now.
    let edit = format!("/intern/meldungen/{id}");
    let version = input_value(&b.get(&edit).await.body, "version").unwrap();
    let mut publish = form.to_vec();
    publish.extend([("publish", "now"), ("version", version.as_str()), ("action", "save")]);
    publish.retain(|(k, v)| !(*k == "publish" && *v == "draft"));
    let res = b.submit(&edit, &edit, &publish).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let (status, public) = s.text(&format!("/meldungen/{id}")).await;
    assert_eq!(status, 200);
    assert!(public.contains("<strong>ab Montag</strong>"));
    assert!(!public.contains("<script>alert") && !public.contains("<img") && !public.contains("javascript:alert"));
    assert!(s.text("/kommunen/menden-sauerland").await.1.contains("Bürgerbüro wieder offen"));
    assert!(!public.contains("aktualisiert am"));

    // A correction stays visible as such ("updated on" needs a later second than publication).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let page = b.get(&edit).await.body;
    assert!(page.contains("als Korrektur"), "{page}");
    let version = input_value(&page, "version").unwrap();
    let corrected = [
        ("scope", "municipality:05962040"),
        ("lang", "de"),
        ("title", "Bürgerbüro wieder offen"),
        ("body", "Das Bürgerbüro öffnet **ab Dienstag** wieder."),
        ("publish", "now"),
        ("version", version.as_str()),
        ("action", "save"),
    ];
    let res = b.submit(&edit, &edit, &corrected).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let public = s.text(&format!("/meldungen/{id}")).await.1;
    assert!(public.contains("ab Dienstag") && public.contains("aktualisiert am"), "{public}");
    // Saving with the version the form was shown with, again, is a conflict.
    assert_eq!(b.submit(&edit, &edit, &corrected).await.status, 409);

    // A scheduled one is not public yet; an invalid time is shown next to the form.
    let scheduled = [
        ("scope", "municipality:05962040"),
        ("title", "Später"),
        ("body", "x"),
        ("publish", "at"),
        ("publish_at", "2099-01-01T08:00"),
        ("action", "save"),
    ];
    assert_eq!(b.submit("/intern/meldungen/neu", "/intern/meldungen/neu", &scheduled).await.status, 303);
    assert!(b.get("/intern/meldungen").await.body.contains("Geplant für 01.01.2099, 08:00 Uhr"));
    assert!(!s.text("/meldungen").await.1.contains("Später"));
    let bad = [
        ("scope", "municipality:05962040"),
        ("title", "Kaputt"),
        ("body", "x"),
        ("publish", "at"),
        ("publish_at", "morgen"),
        ("action", "save"),
    ];
    let res = b.submit("/intern/meldungen/neu", "/intern/meldungen/neu", &bad).await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("role=\"alert\"") && res.body.contains("value=\"Kaputt\""));

    // Withdrawn: gone from the public pages.
    let res = b.submit(&edit, &format!("{edit}/zuruecknehmen"), &[]).await;
    assert_eq!(res.status, 303);
    assert_eq!(s.text(&format!("/meldungen/{id}")).await.0, 404);
}

async fn editors_stay_inside_their_scope(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::demo(&s, "menden").await;
    assert_eq!(menden.get("/intern/kommunen/luedenscheid").await.status, 403);
    assert_eq!(menden.get("/intern/kommunen/luedenscheid/leistungen/geburtsurkunde").await.status, 403);
    assert_eq!(menden.get("/intern/kreise/maerkischer-kreis").await.status, 403);
    assert_eq!(menden.get("/intern/kommunen/gibt-es-nicht").await.status, 404);
    // Even with a valid token, a write for another town is refused by the one authorisation.
    let res = menden
        .submit(
            MENDEN,
            "/intern/kommunen/luedenscheid/status",
            &[("areas", "finance"), ("level", "unavailable"), ("workaround", "Übergriff")],
        )
        .await;
    assert_eq!(res.status, 403);
    assert!(!s.text("/kommunen/luedenscheid").await.1.contains("Übergriff"));

    // The scope select offers only Menden; area-wide is refused anyway.
    let form = menden.get("/intern/meldungen/neu").await.body;
    assert!(form.contains("value=\"municipality:05962040\""));
    assert!(
        !form.contains("value=\"area:\"")
            && !form.contains("value=\"municipality:05962032\"")
            && !form.contains("value=\"service:")
    );
    let res = menden
        .submit(
            "/intern/meldungen/neu",
            "/intern/meldungen/neu",
            &[("scope", "area:"), ("title", "Für alle"), ("body", "x"), ("publish", "now")],
        )
        .await;
    assert_eq!(res.status, 403);
    let res = menden
        .submit(
            "/intern/fragen/neu",
            "/intern/fragen/neu",
            &[("scope", "municipality:05962032"), ("title", "Fremd?"), ("body", "x"), ("publish", "now")],
        )
        .await;
    assert_eq!(res.status, 403);
    assert!(!s.text("/meldungen").await.1.contains("Für alle"));

    // Lüdenscheid's announcement is not Menden's to open.
    let luedenscheid = Session::demo(&s, "luedenscheid").await;
    let res = luedenscheid
        .submit(
            "/intern/meldungen/neu",
            "/intern/meldungen/neu",
            &[("scope", "municipality:05962032"), ("title", "Nur Lüdenscheid"), ("body", "x"), ("publish", "draft")],
        )
        .await;
    assert_eq!(res.status, 303);
    let id = announcement_id(&luedenscheid.get("/intern/meldungen").await.body, "Nur Lüdenscheid");
    assert!(!menden.get("/intern/meldungen").await.body.contains("Nur Lüdenscheid"));
    assert_eq!(menden.get(&format!("/intern/meldungen/{id}")).await.status, 403);
    assert_eq!(menden.submit(MENDEN, &format!("/intern/meldungen/{id}/zuruecknehmen"), &[]).await.status, 403);

    // The crisis team may speak for the whole area.
    let operator = Session::demo(&s, "krisenstab").await;
    let form = operator.get("/intern/meldungen/neu").await.body;
    assert!(form.contains("value=\"area:\"") && form.contains("value=\"service:fahrzeug-zulassen\""));
    let res = operator
        .submit(
            "/intern/meldungen/neu",
            "/intern/meldungen/neu",
            &[("scope", "area:"), ("title", "Lage im Verbandsgebiet"), ("body", "x"), ("publish", "now")],
        )
        .await;
    assert_eq!(res.status, 303);
    assert!(s.text("/meldungen").await.1.contains("Lage im Verbandsgebiet"));
}

async fn viewers_read_everything_and_change_nothing(engine: Engine) {
    let s = Server::demo(engine).await;
    let viewer = Session::demo(&s, "pruefung").await;
    for page in [
        MENDEN,
        "/intern/kommunen/luedenscheid",
        "/intern/kreise/maerkischer-kreis",
        "/intern/meldungen",
        "/intern/fragen",
        "/intern/journal",
        "/intern/tokens",
    ] {
        let res = viewer.get(page).await;
        assert_eq!(res.status, 200, "{page}");
        assert!(
            !res.body.contains("method=\"post\" action=\"/intern/kommunen") && !res.body.contains("/status\""),
            "{page} shows a write form"
        );
    }
    let town = viewer.get(MENDEN).await.body;
    assert!(!town.contains("name=\"services\"") && town.contains("Einzelheiten"));
    assert_eq!(viewer.get("/intern/meldungen/neu").await.status, 403);
    assert_eq!(viewer.get("/intern/benutzer").await.status, 403);
    // Writes attempted anyway (with a valid CSRF token) are refused by the authorisation.
    let res = viewer
        .submit(
            "/intern",
            &format!("{MENDEN}/status"),
            &[("areas", "finance"), ("level", "unavailable"), ("workaround", "Leser")],
        )
        .await;
    assert_eq!(res.status, 403);
    assert!(res.body.contains("Dazu fehlt Ihnen die Berechtigung"));
    let res = viewer
        .submit(
            "/intern",
            "/intern/meldungen/neu",
            &[("scope", "municipality:05962040"), ("title", "Leser"), ("body", "x")],
        )
        .await;
    assert_eq!(res.status, 403);
    let res = viewer.submit("/intern", "/intern/tokens", &[("name", "Leser")]).await;
    assert_eq!(res.status, 403);
    assert!(!s.text("/kommunen/menden-sauerland").await.1.contains("Leser"));
}

async fn sign_out_ends_the_session_and_everywhere_ends_all(engine: Engine) {
    let s = Server::demo(engine).await;
    let a = Session::demo(&s, "menden").await;
    let b = Session::demo(&s, "menden").await;
    let c = Session::demo(&s, "menden").await;
    let a_cookies = a.cookies();
    let res = a.submit("/intern", "/intern/abmelden", &[]).await;
    assert_eq!((res.status, res.location.as_str()), (303, "/intern/anmelden"));
    assert!(!a.cookies().contains_key("nb_session"), "the cookie is cleared");
    // The old cookie no longer works: the session ended on the server.
    a.set_cookies(a_cookies);
    assert_eq!(a.get("/intern").await.location, "/intern/anmelden");
    assert_eq!(b.get("/intern").await.status, 200, "other sessions stay");

    let res = b.submit("/intern", "/intern/ueberall-abmelden", &[]).await;
    assert_eq!(res.status, 303);
    assert_eq!(c.get("/intern").await.location, "/intern/anmelden");
    assert_eq!(c.get(MENDEN).await.location, "/intern/anmelden");
    Session::demo(&s, "menden").await;
}

async fn the_journal_lists_changes_verifies_and_exports(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::demo(&s, "menden").await;
    let res = menden
        .submit(
            MENDEN,
            &format!("{MENDEN}/status"),
            &[
                ("services", "gewerbe-anmelden"),
                ("services", "hundesteuer-anmelden"),
                ("level", "emergency"),
                ("workaround", "Formular per Post"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);

    let journal = menden.get("/intern/journal").await.body;
    assert!(journal.contains("statement.set") && journal.contains("Formular per Post"), "{journal}");
    assert!(journal.contains("Unversehrt"));
    assert!(journal.contains("href=\"/intern/journal.csv?"));
    // Another town's editor does not see Menden's entries; the viewer sees everything.
    let other = Session::demo(&s, "luedenscheid").await;
    assert!(!other.get("/intern/journal").await.body.contains("Formular per Post"));
    let viewer = Session::demo(&s, "pruefung").await;
    assert!(viewer.get("/intern/journal?kind=statement&author=menden").await.body.contains("Formular per Post"));
    assert!(!viewer.get("/intern/journal?kind=announcement").await.body.contains("Formular per Post"));

    let csv = menden.get("/intern/journal.csv?kind=statement.set&author=menden").await;
    assert_eq!(csv.status, 200);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(csv.headers["content-disposition"], "attachment; filename=\"journal.csv\"");
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "seq,at,author,scope,kind,payload,prev_hash,hash");
    assert_eq!(lines.len(), 3, "{}", csv.body);
    assert!(lines[1].contains("05962040") && lines[1].contains("statement.set"));
    let json = menden.get("/intern/journal.json?kind=statement.set&author=menden").await;
    assert_eq!(json.headers["content-disposition"], "attachment; filename=\"journal.json\"");
    let entries: Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 2);
    assert!(entries[0]["seq"].as_i64() < entries[1]["seq"].as_i64(), "oldest first");
    // Exports need a session too.
    assert_eq!(s.get("/intern/journal.csv").await.status(), 303);
}

async fn admins_manage_accounts_and_everyone_their_tokens(engine: Engine) {
    let s = Server::demo(engine).await;
    let admin = Session::demo(&s, "admin").await;
    let res = admin
        .submit(
            "/intern/benutzer",
            "/intern/benutzer",
            &[("username", "berta"), ("display_name", "Berta"), ("role", "editor"), ("scopes", "05962040, 05962")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let link = element_text(&res.body, "setup-link");
    assert!(link.contains("/intern/einrichten/"), "{link}");
    let path = &link[link.find("/intern/einrichten/").unwrap()..];
    assert!(admin.get("/intern/benutzer").await.body.contains("Einrichtung ausstehend"));
    let berta = Session::new(&s);
    assert_eq!(berta.get(path).await.status, 200, "the link opens the setup");
    let duplicate =
        admin.submit("/intern/benutzer", "/intern/benutzer", &[("username", "berta"), ("role", "viewer")]).await;
    assert_eq!(duplicate.status, 422);

    // Edit and reset.
    let users = admin.get("/intern/benutzer").await.body;
    let at = users.find(">berta</a>").unwrap();
    let id = &users[users[..at].rfind("/intern/benutzer/").unwrap() + 17..at - 1];
    let user_page = format!("/intern/benutzer/{id}");
    let res = admin.submit(&user_page, &user_page, &[("role", "viewer"), ("scopes", ""), ("disabled", "1")]).await;
    assert_eq!((res.status, res.location.as_str()), (303, "/intern/benutzer?gespeichert=1"));
    assert!(admin.get(&user_page).await.body.contains("gesperrt"));
    let res = admin.submit(&user_page, &format!("{user_page}/zuruecksetzen"), &[]).await;
    assert_eq!(res.status, 200);
    assert_ne!(element_text(&res.body, "setup-link"), link);
    let menden = Session::demo(&s, "menden").await;
    assert_eq!(menden.get("/intern/benutzer").await.status, 403);
    assert_eq!(
        menden.submit(MENDEN, "/intern/benutzer", &[("username", "mallory"), ("role", "admin")]).await.status,
        403
    );

    // Tokens: the secret is shown once, then only the name; editors get their own scope.
    let res = menden
        .submit("/intern/tokens", "/intern/tokens", &[("name", "Website Menden"), ("expires", "2099-12-31")])
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let secret = element_text(&res.body, "token-secret");
    assert!(secret.starts_with("nb_"));
    let list = menden.get("/intern/tokens").await.body;
    assert!(
        list.contains("Website Menden") && list.contains("Menden (Sauerland) (05962040)") && !list.contains(&secret)
    );
    let all = admin.get("/intern/tokens").await.body;
    assert!(all.contains("Website Menden") && all.contains("Gehört zu"));
    let other = Session::demo(&s, "luedenscheid").await;
    assert!(!other.get("/intern/tokens").await.body.contains("Website Menden"));
    let revoke =
        list.split("action=\"").find(|p| p.starts_with("/intern/tokens/") && p.contains("widerrufen")).unwrap();
    let revoke = &revoke[..revoke.find('"').unwrap()];
    assert_eq!(other.submit("/intern/tokens", revoke, &[]).await.status, 404, "not someone else's token");
    let res = menden.submit("/intern/tokens", revoke, &[]).await;
    assert_eq!((res.status, res.location.as_str()), (303, "/intern/tokens?entfernt=1"));
    assert!(menden.get("/intern/tokens").await.body.contains("Widerrufen am"));
}
