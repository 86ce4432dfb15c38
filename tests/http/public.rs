//! The public site: pages, search, alternatives, feeds, caching, hostile input.

use crate::{Engine, Server, Session, on_both_engines};

on_both_engines!(
    a_service_that_is_back_never_promises_a_date,
    home_page_asks_what_and_where,
    municipality_page_shows_every_service,
    search_by_synonym_and_postal_code_shows_the_towns_status,
    search_with_place_only_goes_to_the_town,
    ambiguous_place_asks_which_town,
    unknown_place_and_nonsense_get_clear_answers,
    alternatives_are_sorted_by_distance_with_their_own_status,
    service_page_covers_every_town,
    district_page_lists_towns,
    announcements_faq_and_drafts,
    atom_feeds_are_valid,
    english_interface,
    fahrplan_lists_expected_returns_with_a_calendar,
    no_service_is_left_with_nothing_to_do,
    expected_returns_are_as_precise_as_anyone_can_say,
    a_card_never_shows_two_levels_and_a_contradicted_statement_is_flagged,
    each_service_in_town_has_a_public_history_and_status_feeds,
    the_responsible_office_is_named_with_every_way_to_reach_it,
    a_derived_card_says_what_works_first_in_plain_words,
    offices_are_added_and_edited_in_the_api_and_the_desk,
);

async fn home_page_asks_what_and_where(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/").await;
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"de\">"));
    assert!(html.contains("Was möchten Sie erledigen?"));
    assert!(html.contains("Wo wohnen Sie?"));
    assert!(html.contains("Menden (Sauerland)"));
    assert!(html.contains("Stand:"));
    assert!(html.contains("Demonstration"), "demo banner");
    assert!(!html.contains("<script"), "public pages need no script");
}

async fn municipality_page_shows_every_service(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/kommunen/menden-sauerland").await;
    assert_eq!(status, 200);
    assert!(html.contains("<h1>Menden (Sauerland)</h1>"));
    for word in ["Regelbetrieb", "Basisbetrieb (eingeschränkt)", "Notbetrieb", "Ausfall"] {
        assert!(html.contains(word), "{word}");
    }
    // Every service of the catalogue appears, linked to its page: on a line of its own or on one
    // with the services that say exactly the same.
    let linked: std::collections::BTreeSet<&str> = html
        .split("href=\"/kommunen/menden-sauerland/leistungen/")
        .skip(1)
        .map(|rest| &rest[..rest.find(['"', '#']).unwrap()])
        .collect();
    assert_eq!(linked.len(), 49, "{linked:?}");
    let lines = html.matches("class=\"service-card").count();
    assert!(lines < 49, "services that say the same share a line: {lines} lines");
    assert!(html.contains("Leistungen:</strong>"), "a shared line says how many");
    // The first things on the page: the search for this town and how to reach someone.
    let search = html.find("role=\"search\"").expect("a search form");
    let phone = html.find("href=\"tel:").expect("a phone number");
    let services = html.find("class=\"service-card").unwrap();
    assert!(search < services && phone < services, "search and contacts before the services");
    assert!(html.contains("Fahrzeug zulassen"));
    // The town's own statement, and the district's for district-level services.
    assert!(html.contains("Das Bürgerbüro ist wieder geöffnet, aber nur mit Termin."));
    assert!(html.contains("Märkischer Kreis (für alle Kommunen des Kreises)"));
    assert!(html.contains("Voraussichtlich wieder verfügbar"));
    assert!(html.contains("www.stadtverwaltung-menden.de"));
    // Status is never colour alone: every level badge carries an icon and a word.
    assert_eq!(html.matches("class=\"level level-").count(), html.matches("class=\"level-word\"").count());
    assert!(html.contains("/kommunen/menden-sauerland/meldungen.atom"));
    assert!(html.contains("Menden: So erreichen Sie uns"));

    let (status, _) = s.text("/kommunen/gibt-es-nicht").await;
    assert_eq!(status, 404);
}

async fn search_by_synonym_and_postal_code_shows_the_towns_status(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/suche?q=Auto+anmelden&ort=58706").await;
    assert_eq!(status, 200);
    assert!(html.contains("Passende Leistungen in Menden (Sauerland)"));
    let first = html.find("Fahrzeug zulassen").expect("vehicle registration found");
    assert!(html[first..].contains("Ausfall"));
    assert!(html.contains("/kommunen/menden-sauerland/leistungen/fahrzeug-zulassen#ausweichstellen"));
    // Umlauts typed as ae/oe/ue, capitals and a typo.
    for q in ["Fuehrerschein", "FÜHRERSCHEIN", "Geburtsurkunte", "ummelden"] {
        let (status, html) = s.text(&format!("/suche?q={q}")).await;
        assert_eq!(status, 200, "{q}");
        assert!(html.contains("class=\"results\""), "{q} found nothing");
    }
    let (_, html) = s.text("/suche?q=ummelden").await;
    assert!(html.contains("Wohnsitz anmelden"));
}

async fn search_with_place_only_goes_to_the_town(engine: Engine) {
    let s = Server::demo(engine).await;
    for place in ["Menden", "menden", "58706", "Mneden (Sauerland)"] {
        let res = s.get(&format!("/suche?ort={place}")).await;
        assert_eq!(res.status().as_u16(), 303, "{place}");
        assert_eq!(res.headers()["location"], "/kommunen/menden-sauerland", "{place}");
    }
    let res = s.get("/suche?ort=L%C3%BCdenscheid").await;
    assert_eq!(res.headers()["location"], "/kommunen/luedenscheid");
    let res = s.get("/suche?ort=Luedenscheid").await;
    assert_eq!(res.headers()["location"], "/kommunen/luedenscheid");
}

async fn ambiguous_place_asks_which_town(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/suche?q=Hund&ort=Bad").await;
    assert_eq!(status, 200);
    assert!(html.contains("Welche Kommune meinen Sie?"));
    for town in ["Bad Berleburg", "Bad Laasphe", "Bad Sassendorf"] {
        assert!(html.contains(town), "{town}");
    }
}

async fn unknown_place_and_nonsense_get_clear_answers(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/suche?q=Auto&ort=10115").await;
    assert_eq!(status, 200);
    assert!(html.contains("keine Kommune in unserem Gebiet"));
    let (status, html) = s.text("/suche?q=xyzzyqq").await;
    assert_eq!(status, 200);
    assert!(html.contains("keine Leistung gefunden"));
    let res = s.get("/suche").await;
    assert_eq!(res.status().as_u16(), 303);
}

async fn alternatives_are_sorted_by_distance_with_their_own_status(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/kommunen/soest/leistungen/fahrzeug-zulassen").await;
    assert_eq!(status, 200);
    let steinfurt = html.find("Zulassungsstelle des Kreises Steinfurt").expect("Steinfurt");
    let minden = html.find("Zulassungsstelle des Kreises Minden-Lübbecke").expect("Minden-Lübbecke");
    assert!(steinfurt < minden, "nearest first");
    assert!(html.contains("km entfernt"));
    // Kreis Olpe's residents are sent to the Hochsauerlandkreis, whose own office is in emergency operation.
    let (_, html) = s.text("/kommunen/olpe/leistungen/fahrzeug-zulassen").await;
    let office = html.find("Straßenverkehrsamt des Hochsauerlandkreises").expect("HSK office");
    assert!(html[office..].contains("Notbetrieb"), "the office's own status");
    // No referral: an honest answer.
    let (_, html) = s.text("/kommunen/siegen/leistungen/fahrzeug-zulassen").await;
    assert!(html.contains("keine Ausweichstelle bekannt"));
    let (status, _) = s.text("/kommunen/soest/leistungen/gibt-es-nicht").await;
    assert_eq!(status, 404);
}

async fn service_page_covers_every_town(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/leistungen/fahrzeug-zulassen").await;
    assert_eq!(status, 200);
    for town in ["Menden (Sauerland)", "Soest", "Olpe", "Schwerte", "Bergisch Gladbach"] {
        assert!(html.contains(town), "{town}");
    }
    // Schwerte belongs to Kreis Unna, which reported nothing.
    assert!(html.contains("Keine Einschränkung gemeldet in 1 Kommunen"));
    let (status, html) = s.text("/leistungen").await;
    assert_eq!(status, 200);
    assert!(html.contains("Standesamt"));
}

async fn district_page_lists_towns(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/kreise/maerkischer-kreis").await;
    assert_eq!(status, 200);
    assert!(html.contains("Iserlohn"));
    assert!(html.contains("Fahrzeug zulassen"));
    let (status, _) = s.text("/kreise/nirgendwo").await;
    assert_eq!(status, 404);
}

async fn announcements_faq_and_drafts(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/meldungen").await;
    assert_eq!(status, 200);
    assert!(html.contains("Basisbetrieb der priorisierten Fachverfahren beginnt"));
    assert!(html.contains("<strong>Basisbetrieb</strong>"), "Markdown rendered");
    assert!(html.contains("aktualisiert am"), "a correction stays visible");
    assert!(!html.contains("Entwurf"), "drafts are not public");
    let (status, _) = s.text("/meldungen/menden-entwurf").await;
    assert_eq!(status, 404);
    let (status, html) = s.text("/meldungen/basisbetrieb-startet").await;
    assert_eq!(status, 200);
    assert!(html.contains("<h1>Basisbetrieb der priorisierten Fachverfahren beginnt</h1>"));
    let (status, html) = s.text("/fragen").await;
    assert_eq!(status, 200);
    assert!(html.contains("Kann ich mich an eine Verwaltung in der Nähe wenden?"));
    let (status, html) = s.text("/quellen").await;
    assert_eq!(status, 200);
    assert!(html.contains("Datenlizenz Deutschland"));
    assert!(html.contains("OpenStreetMap"));
}

async fn atom_feeds_are_valid(engine: Engine) {
    let s = Server::demo(engine).await;
    let res = s.get("/feeds/meldungen.atom").await;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/atom+xml"));
    let feed: atom_syndication::Feed = res.text().await.unwrap().parse().expect("valid Atom");
    assert!(feed.entries().len() >= 6);
    assert!(feed.entries().iter().all(|e| !e.title().as_str().contains("Entwurf")));
    assert!(feed.links().iter().any(|l| l.rel() == "self"));
    let menden: atom_syndication::Feed = s.text("/kommunen/menden-sauerland/meldungen.atom").await.1.parse().unwrap();
    let titles: Vec<_> = menden.entries().iter().map(|e| e.title().as_str().to_string()).collect();
    assert!(titles.iter().any(|t| t.contains("Menden")), "{titles:?}");
    assert!(titles.iter().any(|t| t.contains("Dortmund")), "district announcement: {titles:?}");
    assert!(!titles.iter().any(|t| t.contains("Lüdenscheid")), "another town's: {titles:?}");
}

async fn english_interface(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/en/kommunen/menden-sauerland").await;
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("Basic operation (limited)"));
    assert!(html.contains("href=\"/en/kommunen/menden-sauerland/leistungen/"));
    let res = s.get("/en/").await;
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(res.headers()["location"], "/en");
    let (status, html) = s.text("/en").await;
    assert_eq!(status, 200);
    assert!(html.contains("What do you want to do?"));
}

// Engine-independent HTTP behaviour: runs on SQLite only.

#[tokio::test]
async fn conditional_requests_and_compression() {
    let s = Server::demo(Engine::Sqlite).await;
    let res = s.get("/kommunen/menden-sauerland").await;
    assert_eq!(res.status().as_u16(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert!(res.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let res = s.client.get(s.url("/kommunen/menden-sauerland")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 304);
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    let res = s.client.get(s.url("/kommunen/menden-sauerland")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["vary"], "accept-encoding");
    let compressed = res.bytes().await.unwrap();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut plain).unwrap();
    assert!(plain.contains("<h1>Menden (Sauerland)</h1>"));
    let res =
        s.client.get(s.url("/kommunen/menden-sauerland")).header("accept-encoding", "gzip;q=0").send().await.unwrap();
    assert!(res.headers().get("content-encoding").is_none());
    let res = s.get("/healthz").await;
    assert_eq!(res.status().as_u16(), 200);
    let res = s.get("/static/style.css").await;
    assert_eq!(res.status().as_u16(), 200);
}

#[tokio::test]
async fn hostile_input_gets_clean_errors_and_is_never_reflected_as_markup() {
    let s = Server::demo(Engine::Sqlite).await;
    for path in [
        "/kommunen/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/kommunen/..%2F..%2Fetc%2Fpasswd",
        "/leistungen/%00",
        "/kommunen/menden-sauerland/leistungen/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
        "/meldungen/'%20OR%201%3D1",
        "/gibt/es/nicht",
        "/en/gibt-es-nicht",
    ] {
        let (status, html) = s.text(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{path} reflected");
        assert!(html.contains("Fehler 404") || html.contains("Error 404"), "{path}: friendly page");
    }
    let (status, html) = s.text("/suche?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E&ort=%3Cb%3Ex%3C%2Fb%3E").await;
    assert_eq!(status, 200);
    assert!(!html.contains("<script>alert(1)"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;") || html.contains("&lt;script&gt;"));
    assert!(!html.contains("<b>x</b>"));
    let long = "a".repeat(5000);
    let (status, html) = s.text(&format!("/suche?q={long}")).await;
    assert_eq!(status, 400);
    assert!(html.contains("zu lang"));
    // Bytes that are not UTF-8 are read as replacement characters: a plain search, no error.
    let (status, _) = s.text("/suche?q=%FF%FE").await;
    assert_eq!(status, 200);
    // A repeated parameter is ambiguous: refused with the friendly error page.
    let (status, html) = s.text("/suche?q=a&q=b").await;
    assert_eq!(status, 400);
    assert!(html.contains("Fehler 400"));
}

async fn fahrplan_lists_expected_returns_with_a_calendar(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/fahrplan").await;
    assert_eq!(status, 200);
    assert!(html.contains("Fahrplan: Wann geht was wieder?"));
    assert!(html.contains("Fahrzeug zulassen"));
    let res = s.get("/fahrplan.ics").await;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/calendar"));
    let ics = res.text().await.unwrap();
    assert!(ics.starts_with("BEGIN:VCALENDAR"));
    assert!(ics.contains("BEGIN:VEVENT") && ics.contains("DTSTART;VALUE=DATE:"));
    assert!(ics.trim_end().ends_with("END:VCALENDAR"));
    // Dates in the calendar are the same as on the page.
    let first = ics.split("DTSTART;VALUE=DATE:").nth(1).unwrap()[..8].to_string();
    let german = format!("{}.{}.{}", &first[6..8], &first[4..6], &first[..4]);
    assert!(html.contains(&german), "{german}");
    let (status, html) = s.text("/kommunen/menden-sauerland/fahrplan").await;
    assert_eq!(status, 200);
    assert!(html.contains("Fahrplan für Menden (Sauerland)"));
    assert!(html.contains("Wohnsitz anmelden"), "Menden's appointment-only registration has an expected date");
    let (status, _) = s.text("/kommunen/atlantis/fahrplan.ics").await;
    assert_eq!(status, 404);
}

/// A service in normal operation shows no "expected back on …" (issue 11: never for the past),
/// even when its statement still carries the date.
async fn a_service_that_is_back_never_promises_a_date(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let path = "/municipalities/menden-sauerland/services/meldebescheinigung/statement";
    let body = serde_json::json!({"level": "normal", "expected_return": "2026-11-02"});
    let (status, answer) = menden.call(reqwest::Method::PUT, path, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    for page in ["/kommunen/menden-sauerland/leistungen/meldebescheinigung", "/leistungen/meldebescheinigung"] {
        let (status, html) = s.text(page).await;
        assert_eq!(status, 200, "{page}");
        assert!(!html.contains("02.11.2026"), "{page} shows the date of a service that is back");
    }
    // A service that is not back still shows its date.
    let body = serde_json::json!({"level": "limited", "expected_return": "2026-11-02"});
    let (status, _) = menden.call(reqwest::Method::PUT, path, Some(&body)).await;
    assert_eq!(status, 200);
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/meldebescheinigung").await;
    assert!(html.contains("02.11.2026"));
}

/// Every service worse than normal shows a workaround, a referral, or says in words that there
/// is none yet, with when that was checked; the Fahrplan lists what has no date instead of leaving
/// it out; the desk lists the gaps of the editor's own towns (issue 11, the newborn case).
async fn no_service_is_left_with_nothing_to_do(engine: Engine) {
    let s = Server::demo(engine).await;
    let page = "/kommunen/menden-sauerland/leistungen/geburtsurkunde";
    let (_, html) = s.text(page).await;
    assert!(html.contains("Ausfall"), "the demo's Menden has no birth certificates");
    assert!(html.contains("Noch keine Behelfslösung und keine Ausweichstelle. Zuletzt geprüft: "), "{html}");
    let (_, html) = s.text("/en/kommunen/menden-sauerland/leistungen/geburtsurkunde").await;
    assert!(html.contains("No workaround and no other office yet. Last checked: "));
    // A service with a referral says where else to go instead.
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/fahrzeug-zulassen").await;
    assert!(html.contains("Ausfall") && !html.contains("Noch keine Behelfslösung"), "vehicles have a referral");

    // The Fahrplan: what is not back and has no date is "noch ohne Termin".
    let (_, plan) = s.json("/api/v1/fahrplan?municipality=menden-sauerland").await;
    let undated: Vec<&str> =
        plan["without_date"].as_array().unwrap().iter().map(|r| r["service"]["slug"].as_str().unwrap()).collect();
    assert!(undated.contains(&"geburtsurkunde"), "{undated:?}");
    let dated: Vec<&str> =
        plan["returns"].as_array().unwrap().iter().map(|r| r["service"]["slug"].as_str().unwrap()).collect();
    assert!(undated.iter().all(|u| !dated.contains(u)), "a service is dated or not, never both");
    let (_, html) = s.text("/kommunen/menden-sauerland/fahrplan").await;
    let section = &html[html.find("Noch ohne Termin").expect("the undated section")..];
    assert!(section.contains("/kommunen/menden-sauerland/leistungen/geburtsurkunde"), "{section}");

    // The editor of Menden sees the gap on the desk's overview; the editor of another town does not.
    let desk = Session::demo(&s, "menden").await;
    let overview = desk.get("/intern").await;
    assert!(overview.body.contains("Ohne Behelfslösung"), "{}", overview.body);
    assert!(overview.body.contains("href=\"/intern/kommunen/menden-sauerland#leistung-geburtsurkunde\""));
    let other = Session::demo(&s, "luedenscheid").await;
    assert!(!other.get("/intern").await.body.contains("#leistung-geburtsurkunde\">Menden"));

    // A workaround ends it, on the page, in the Fahrplan's sense of "nothing to do", and on the desk.
    let menden = Session::api(&s, "menden");
    let body = serde_json::json!({"level": "unavailable", "workaround": "Vorläufige Bescheinigung im Bürgerbüro"});
    let (status, answer) = menden
        .call(reqwest::Method::PUT, "/municipalities/menden-sauerland/services/geburtsurkunde/statement", Some(&body))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (_, html) = s.text(page).await;
    assert!(html.contains("Vorläufige Bescheinigung im Bürgerbüro") && !html.contains("Noch keine Behelfslösung"));
    assert!(!desk.get("/intern").await.body.contains("#leistung-geburtsurkunde\""));
}

/// "Ab Mitte Dezember": an expected return can be a day, a week, half a month, a month or "noch
/// nicht absehbar", shown as such on the pages, in the API (with its first and last day), in the
/// Fahrplan and the calendar (an event spanning the period), and set from the desk's form.
async fn expected_returns_are_as_precise_as_anyone_can_say(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let put = |service: &'static str, expected: &'static str| {
        let menden = &menden;
        async move {
            let body = serde_json::json!({"level": "emergency", "workaround": "Papier", "expected_return": expected});
            let path = format!("/municipalities/menden-sauerland/services/{service}/statement");
            menden.call(reqwest::Method::PUT, &path, Some(&body)).await
        }
    };
    // The second half of a month four years ahead, so that it never lies in the past.
    let (status, answer) = put("wohngeld", "2030-12-H2").await;
    assert_eq!(status, 200, "{answer}");
    let (_, town) = s.json("/api/v1/municipalities/menden-sauerland").await;
    let wohngeld = town["services"].as_array().unwrap().iter().find(|x| x["service"]["slug"] == "wohngeld").unwrap();
    assert_eq!(wohngeld["expected_return"], "2030-12-H2");
    assert_eq!(
        wohngeld["expected_return_span"],
        serde_json::json!({"precision": "second_half", "earliest": "2030-12-16", "latest": "2030-12-31", "text": "Mitte bis Ende Dezember 2030"})
    );
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/wohngeld").await;
    assert!(html.contains("Mitte bis Ende Dezember 2030"), "{html}");
    let (_, html) = s.text("/en/kommunen/menden-sauerland/leistungen/wohngeld").await;
    assert!(html.contains("mid to late December 2030"));
    let (_, html) = s.text("/kommunen/menden-sauerland/fahrplan").await;
    assert!(html.contains(">Mitte bis Ende Dezember 2030</h2>"), "a heading of its own, no <time> for a period");
    let ics = s.get("/kommunen/menden-sauerland/fahrplan.ics").await.text().await.unwrap();
    let event = ics.split("BEGIN:VEVENT").find(|e| e.contains("Wohngeld")).expect("an event for Wohngeld");
    assert!(event.contains("DTSTART;VALUE=DATE:20301216") && event.contains("DTEND;VALUE=DATE:20310101"), "{event}");

    // A week, and "noch nicht absehbar" (listed as "noch ohne Termin", not in the calendar).
    assert_eq!(put("grundsicherung", "2030-W02").await.0, 200);
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/grundsicherung").await;
    assert!(html.contains("KW 2/2030 (07.01.2030–13.01.2030)"), "{html}");
    assert_eq!(put("elterngeld", "unknown").await.0, 200);
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/elterngeld").await;
    assert!(html.contains("noch nicht absehbar"));
    let (_, plan) = s.json("/api/v1/fahrplan?municipality=menden-sauerland").await;
    let undated: Vec<&str> =
        plan["without_date"].as_array().unwrap().iter().map(|r| r["service"]["slug"].as_str().unwrap()).collect();
    assert!(undated.contains(&"elterngeld"), "{undated:?}");
    let firsts: Vec<&str> =
        plan["returns"].as_array().unwrap().iter().map(|r| r["expected"]["earliest"].as_str().unwrap()).collect();
    assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "ordered by the first day: {firsts:?}");

    // Anything else is refused with the field's name, and nothing changes.
    for bad in ["Mitte Dezember", "2030-13", "2030-W54", "2030-12-H3", "<script>"] {
        let (status, answer) = put("wohngeld", bad).await;
        assert_eq!(status, 422, "{bad}: {answer}");
        assert_eq!(answer["field"], "expected_return", "{bad}: {answer}");
    }
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/wohngeld").await;
    assert!(html.contains("Mitte bis Ende Dezember 2030"));

    // The desk's form: a precision and a day in it.
    let desk = Session::demo(&s, "menden").await;
    let page = "/intern/kommunen/menden-sauerland";
    let form = desk.get(page).await.body;
    assert!(form.contains("name=\"expected_precision\"") && form.contains("in der zweiten Hälfte dieses Monats"));
    let res = desk
        .submit(
            page,
            &format!("{page}/status"),
            &[
                ("services", "wohngeld"),
                ("level", "limited"),
                ("expected_precision", "week"),
                ("expected_return", "2030-12-18"),
            ],
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let (_, town) = s.json("/api/v1/municipalities/menden-sauerland").await;
    let wohngeld = town["services"].as_array().unwrap().iter().find(|x| x["service"]["slug"] == "wohngeld").unwrap();
    assert_eq!(wohngeld["expected_return"], "2030-W51");
    let res = desk
        .submit(
            page,
            &format!("{page}/status"),
            &[("services", "wohngeld"), ("level", "limited"), ("expected_precision", "month"), ("expected_return", "")],
        )
        .await;
    assert_eq!(res.status, 422, "a month needs a day in it");
}

/// A statement decides its card: one level, one sentence; the recovery is a fact without a level
/// word, and when it moves past the statement a dated note says so, the rollout's answer counts
/// the towns whose statements decide instead, and the statement's editors see it flagged.
async fn a_card_never_shows_two_levels_and_a_contradicted_statement_is_flagged(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let body = serde_json::json!({"level": "unavailable", "restrictions": "Keine Anträge bis auf Weiteres."});
    let path = "/municipalities/menden-sauerland/services/wohngeld/statement";
    assert_eq!(menden.call(reqwest::Method::PUT, path, Some(&body)).await.0, 200);
    let card = |html: &str| {
        let start = html.find("<div class=\"availability\">").expect("a card");
        html[start..start + html[start..].find("</div>").unwrap()].to_string()
    };
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/wohngeld").await;
    assert!(!card(&html).contains("Hinweis: Am"), "no note before the recovery moves");

    // The recovery moves on: basic operation for Menden, which would be "Basisbetrieb (eingeschränkt)".
    let krisenstab = Session::api(&s, "krisenstab");
    let rollout =
        serde_json::json!({"procedure": "sozialwesen", "stage": "basic", "municipalities": ["menden-sauerland"]});
    let (status, answer) =
        krisenstab.call(reqwest::Method::POST, "/procedures/sozialwesen/rollout", Some(&rollout)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["municipalities_overridden"].as_u64().unwrap() >= 1, "{answer}");

    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/wohngeld").await;
    let card = card(&html);
    assert!(card.contains("Ausfall") && card.contains("Keine Anträge bis auf Weiteres."), "{card}");
    for other in ["Regelbetrieb", "Basisbetrieb", "Notbetrieb", "Pilotbetrieb"] {
        assert!(!card.contains(other), "one level only, found {other:?}: {card}");
    }
    assert!(card.contains("Hinweis: Am "), "a dated note: {card}");
    assert!(card.contains("Sozialleistungsverfahren: für diese Kommune wieder bereitgestellt seit"), "{card}");

    // The statement's editors see it flagged; confirming it again does not hide the contradiction.
    let desk = Session::demo(&s, "menden").await;
    let overview = desk.get("/intern").await.body;
    assert!(overview.contains("Angaben prüfen"), "{overview}");
    let item = &overview[overview.find("/intern/kommunen/menden-sauerland/leistungen/wohngeld").expect("listed")..];
    assert!(item[..400.min(item.len())].contains("Ihre Angabe widerspricht dem Wiederanlauf seit"), "{item}");
    // A town without such a statement is not flagged for it.
    let other = Session::demo(&s, "luedenscheid").await;
    assert!(!other.get("/intern").await.body.contains("/intern/kommunen/menden-sauerland/leistungen/wohngeld"));

    // The procedure's desk page counts the towns that decide themselves.
    let board = Session::demo(&s, "admin").await;
    let page = board.get("/intern/wiederanlauf/sozialwesen").await.body;
    assert!(page.contains("entscheidet eine eigene Angabe"), "{page}");

    // A statement carries its review day: one that has passed puts it on the list, one ahead
    // keeps it off (without one, 14 days after it was stated).
    let path = "/municipalities/menden-sauerland/services/hundesteuer-anmelden/statement";
    let body = serde_json::json!({"level": "limited", "workaround": "Per Post", "review_on": "2026-01-15"});
    let (status, answer) = menden.call(reqwest::Method::PUT, path, Some(&body)).await;
    assert_eq!((status, answer["review_on"].as_str()), (200, Some("2026-01-15")), "{answer}");
    let overview = desk.get("/intern").await.body;
    let item =
        &overview[overview.find("/intern/kommunen/menden-sauerland/leistungen/hundesteuer-anmelden").expect("due")..];
    assert!(item[..300.min(item.len())].contains("zur Prüfung fällig"), "{item}");
    let body = serde_json::json!({"level": "limited", "workaround": "Per Post", "review_on": "2099-01-15"});
    assert_eq!(menden.call(reqwest::Method::PUT, path, Some(&body)).await.0, 200);
    assert!(!desk.get("/intern").await.body.contains("/leistungen/hundesteuer-anmelden\""), "not due yet");
    let body = serde_json::json!({"level": "limited", "review_on": "übermorgen"});
    let (status, answer) = menden.call(reqwest::Method::PUT, path, Some(&body)).await;
    assert_eq!((status, answer["field"].as_str()), (422, Some("review_on")), "{answer}");
}

/// What happened, publicly: every statement, withdrawal and rollout step of a service in a town,
/// newest first with the sentence of its time, on its page and in the town's and the area's
/// status feeds.
async fn each_service_in_town_has_a_public_history_and_status_feeds(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let path = "/municipalities/menden-sauerland/services/wohngeld/statement";
    let first = serde_json::json!({"level": "unavailable", "restrictions": "Erster Satz: nichts geht."});
    assert_eq!(menden.call(reqwest::Method::PUT, path, Some(&first)).await.0, 200);
    let krisenstab = Session::api(&s, "krisenstab");
    let rollout =
        serde_json::json!({"procedure": "sozialwesen", "stage": "basic", "municipalities": ["menden-sauerland"]});
    assert_eq!(krisenstab.call(reqwest::Method::POST, "/procedures/sozialwesen/rollout", Some(&rollout)).await.0, 200);
    let second = serde_json::json!({"level": "limited", "restrictions": "Zweiter Satz: Anträge nur mit Termin."});
    let (status, answer) = menden.call(reqwest::Method::PUT, path, Some(&second)).await;
    assert_eq!(status, 200, "{answer}");

    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/wohngeld").await;
    let history = &html[html.find("<h2 id=\"verlauf\">").expect("a history")..];
    let history = &history[..history.find("</section>").unwrap()];
    let (newest, rollout_step, oldest) = (
        history.find("Zweiter Satz").expect("the second statement"),
        history
            .find("Wiederanlauf: Sozialleistungsverfahren für diese Kommune im Basisbetrieb")
            .expect("the rollout step"),
        history.find("Erster Satz").expect("the first statement, as it was said"),
    );
    assert!(newest < rollout_step && rollout_step < oldest, "newest first: {history}");
    assert!(history.contains("Angabe von Menden (Sauerland)") && history.contains("<time datetime="));
    // Another town's page does not show Menden's history.
    let (_, other) = s.text("/kommunen/luedenscheid/leistungen/wohngeld").await;
    assert!(!other.contains("Erster Satz"));

    // The town's status feed: valid Atom, newest first, each entry linking its page.
    let res = s.get("/kommunen/menden-sauerland/status.atom").await;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/atom+xml"));
    let feed: atom_syndication::Feed = res.text().await.unwrap().parse().expect("valid Atom");
    let first_entry = &feed.entries()[0];
    assert_eq!(first_entry.title().as_str(), "Wohngeld beantragen: Basisbetrieb (eingeschränkt)");
    assert!(first_entry.summary().unwrap().as_str().contains("Zweiter Satz"));
    assert!(first_entry.links()[0].href().ends_with("/kommunen/menden-sauerland/leistungen/wohngeld"));
    let ids: std::collections::BTreeSet<&str> = feed.entries().iter().map(|e| e.id()).collect();
    assert_eq!(ids.len(), feed.entries().len(), "every entry has its own id");
    // The area's status feed has it too; the English one speaks English.
    let area: atom_syndication::Feed =
        s.get("/feeds/status.atom").await.text().await.unwrap().parse().expect("valid Atom");
    assert!(area.entries().iter().any(|e| e.summary().is_some_and(|t| t.as_str().contains("Zweiter Satz"))));
    let english: atom_syndication::Feed =
        s.get("/en/kommunen/menden-sauerland/status.atom").await.text().await.unwrap().parse().expect("valid Atom");
    assert!(english.title().as_str().starts_with("Status changes in"), "{}", english.title().as_str());
    assert_eq!(s.get("/kommunen/atlantis/status.atom").await.status().as_u16(), 404);
}

/// A district service names the district's office, not the town's citizens' office; a town
/// service names the town's; districts have a contact block of their own.
async fn the_responsible_office_is_named_with_every_way_to_reach_it(engine: Engine) {
    let s = Server::demo(engine).await;
    let section = |html: &str| {
        let start = html.find("<h2 id=\"kontakt\">").expect("a contact section");
        html[start..start + html[start..].find("</section>").unwrap()].to_string()
    };
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/fahrzeug-zulassen").await;
    let contact = section(&html);
    assert!(contact.contains("Zuständig: Märkischer Kreis"), "{contact}");
    assert!(contact.contains("Straßenverkehrsamt Märkischer Kreis") && contact.contains("Öffnungszeiten"), "{contact}");
    assert!(contact.contains("href=\"tel:"), "a phone number to call: {contact}");
    assert!(!contact.contains("Bürgerbüro Menden"), "not the town's office for a district service: {contact}");
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/personalausweis-beantragen").await;
    let contact = section(&html);
    assert!(
        contact.contains("Zuständig: Menden (Sauerland)") && contact.contains("Bürgerbüro Menden (Sauerland)"),
        "{contact}"
    );
    assert!(contact.contains("Musterstraße 1") && contact.contains("href=\"tel:"), "{contact}");
    let (_, html) = s.text("/kreise/maerkischer-kreis").await;
    let contact = section(&html);
    assert!(contact.contains("Kontakt: Märkischer Kreis") && contact.contains("href=\"tel:"), "{contact}");
    let (_, html) = s.text("/en/kommunen/menden-sauerland/leistungen/fahrzeug-zulassen").await;
    assert!(section(&html).contains("Responsible: Märkischer Kreis"));
}

/// Derived from the recovery, a card says what residents can do first, then what not yet, in the
/// operators' plain words; the procedure names and stages stay in a closed disclosure.
async fn a_derived_card_says_what_works_first_in_plain_words(engine: Engine) {
    let s = Server::demo(engine).await;
    let card = |html: &str| {
        let start = html.find("<div class=\"availability\">").expect("a card");
        html[start..start + html[start..].find("</div>").unwrap()].to_string()
    };
    // Menden's social services follow the recovery (the demo's Sozialleistungsverfahren in pilot).
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/wohngeld").await;
    let card = card(&html);
    let (can, cannot) = (
        card.find("Das können Sie schon: Anträge stellen").expect("what works"),
        card.find("Das geht noch nicht: Neuberechnungen im Stapel").expect("what does not yet"),
    );
    assert!(can < cannot, "what works comes first: {card}");
    let details = card.find("<details class=\"derivation\">").expect("the derivation, closed, for the curious");
    assert!(can < details && card[details..].contains("Sozialleistungsverfahren"), "{card}");

    // Operators write what basic operation offers through the API; the API and the pages say it.
    let t = Session::api(&s, "krisenstab");
    let (_, current) = t.call(reqwest::Method::GET, "/procedures/sozialwesen", None).await;
    assert_eq!(current["offered_functions"][0], "Anträge stellen", "{current}");
    let services: Vec<String> = s.json("/api/v1/services").await.1["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["area"] == "social")
        .map(|x| x["slug"].as_str().unwrap().to_string())
        .collect();
    let body = serde_json::json!({
        "slug": "sozialwesen", "name": current["name"], "kind": "procedure", "area": "social", "priority": current["priority"],
        "depends_on": current["depends_on"], "services": services,
        "missing_functions": ["Neuberechnungen im Stapel"], "offered_functions": ["Wohngeld beantragen und Bescheide erhalten"],
    });
    let (status, saved) = t.call(reqwest::Method::PUT, "/procedures/sozialwesen", Some(&body)).await;
    assert_eq!(status, 200, "{saved}");
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/wohngeld").await;
    assert!(html.contains("Das können Sie schon: Wohngeld beantragen und Bescheide erhalten."), "{html}");
}

/// Offices are the towns' and districts' own: added and changed through the API and the desk by
/// those who speak for their owner, checked like every input, and shown where they are responsible.
async fn offices_are_added_and_edited_in_the_api_and_the_desk(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let body = serde_json::json!({
        "owner_ags": "05962040", "name": "Bürgerbüro Menden-Lendringsen <script>alert(1)</script>",
        "street": "Musterweg 2", "postal_code": "58710", "city": "Menden", "phone": "0221 4710 999",
        "email": "lendringsen@menden.example", "opening_hours": "Di 8–12 Uhr",
    });
    let (status, saved) = menden.call(reqwest::Method::PUT, "/offices/buergerbuero-lendringsen", Some(&body)).await;
    assert_eq!(status, 200, "{saved}");
    assert!(saved["lat"].as_f64().unwrap() > 50.0, "a new office takes its owner's place: {saved}");
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/personalausweis-beantragen").await;
    assert!(html.contains("Bürgerbüro Menden-Lendringsen &lt;script&gt;"), "shown, and escaped");
    assert!(!html.contains("<script>alert(1)"));
    assert!(html.contains("href=\"tel:02214710999\"") && html.contains("Di 8–12 Uhr"));

    // Refused: another town's office, an unknown owner, a bad address, no name; nothing changes.
    let luedenscheid = Session::api(&s, "luedenscheid");
    let (status, _) = luedenscheid.call(reqwest::Method::PUT, "/offices/buergerbuero-lendringsen", Some(&body)).await;
    assert_eq!(status, 403, "only who speaks for the owner");
    for (field, value) in
        [("owner_ags", "99999999"), ("email", "kein-mail"), ("name", " "), ("website", "javascript:alert(1)")]
    {
        let mut bad = body.clone();
        bad[field] = serde_json::json!(value);
        let (status, answer) = menden.call(reqwest::Method::PUT, "/offices/buergerbuero-lendringsen", Some(&bad)).await;
        assert_eq!((status, answer["field"].as_str()), (422, Some(field)), "{field}: {answer}");
    }
    let mut unknown = body.clone();
    unknown["fax"] = serde_json::json!("1");
    assert_eq!(menden.call(reqwest::Method::PUT, "/offices/buergerbuero-lendringsen", Some(&unknown)).await.0, 422);
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/personalausweis-beantragen").await;
    assert!(html.contains("lendringsen@menden.example"), "the refused writes changed nothing");

    // The desk: the town's editor changes it in a form; a missing CSRF token is refused.
    let desk = Session::demo(&s, "menden").await;
    let page = "/intern/kommunen/menden-sauerland";
    assert!(desk.get(page).await.body.contains("id=\"dienststellen\""));
    let form = [
        ("slug", "buergerbuero-lendringsen"),
        ("name", "Bürgerbüro Lendringsen"),
        ("street", "Musterweg 2"),
        ("postal_code", "58710"),
        ("city", "Menden"),
        ("phone", "0221 4710 998"),
        ("email", "lendringsen@menden.example"),
        ("website", "https://termine.menden.example"),
        ("opening_hours", "Di und Do 8–12 Uhr"),
    ];
    let res = desk.submit(page, &format!("{page}/dienststellen"), &form).await;
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(desk.post(&format!("{page}/dienststellen"), &form).await.status, 403, "no CSRF token");
    let (_, html) = s.text("/kommunen/menden-sauerland/leistungen/personalausweis-beantragen").await;
    assert!(html.contains("Bürgerbüro Lendringsen") && html.contains("Di und Do 8–12 Uhr"));
    assert!(html.contains("href=\"https://termine.menden.example\""), "the appointment link");
    let res = desk.submit(page, &format!("{page}/dienststellen"), &[("slug", "Kein Slug!"), ("name", "X")]).await;
    assert_eq!(res.status, 422, "a malformed short name is refused");
}
