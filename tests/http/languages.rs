//! Languages are files: a catalogue loaded at start-up (`serve --messages-dir`) adds a language
//! with its own prefix, hreflang alternates, language switch, formats and negotiation, and
//! falls back to German for every key it lacks.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Engine, Server, Session, TestDatabase, binary, on_both_engines};

on_both_engines!(a_catalogue_file_adds_a_language);

const UKRAINIAN: &str = r#"
[language]
code = "uk"
name = "Українська"
tag = "uk"
dir = "ltr"
decimal_separator = ","
datetime_format = "%Y-%m-%d %H:%M"

[nav]
home = "Головна"

[page]
updated = "Оновлено: {time}"

[level]
limited = "Базова робота (обмежена)"

[api]
no_such_municipality = "Громади з таким ідентифікатором немає."

[desk]
login_title = "Вхід"
"#;

/// Written right to left; nothing but the table, so every text is German.
const ARABIC: &str = "[language]\ncode = \"ar\"\nname = \"العربية\"\ndir = \"rtl\"\n";

fn catalogues(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

async fn api_message(s: &Server, accept_language: &str) -> String {
    let res = s
        .client
        .get(s.url("/api/v1/municipalities/atlantis"))
        .header("accept-language", accept_language)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let body: Value = res.json().await.unwrap();
    body["message"].as_str().unwrap().to_string()
}

async fn a_catalogue_file_adds_a_language(engine: Engine) {
    let dir = catalogues(&[("uk.toml", UKRAINIAN), ("ar.toml", ARABIC), ("README.txt", "not a catalogue")]);
    let s = Server::start(TestDatabase::new(engine), &["--demo", "--messages-dir", dir.path().to_str().unwrap()]);

    // Its pages, under its prefix: translated keys used, the others in German.
    let (status, html) = s.text("/uk").await;
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"uk\">"), "{html}");
    assert!(html.contains(">Головна</a>"));
    assert!(html.contains("Was möchten Sie erledigen?"), "German where the catalogue has nothing");
    assert!(html.contains("href=\"/uk/kommunen\""));
    // Its own date format.
    let updated = html.split("Оновлено: ").nth(1).expect("translated 'updated' line");
    let stamp: Vec<char> = updated.chars().take(16).collect();
    let shape: String = stamp.iter().map(|c| if c.is_ascii_digit() { 'd' } else { *c }).collect();
    assert_eq!(shape, "dddd-dd-dd dd:dd", "{updated}");

    let (status, html) = s.text("/uk/kommunen/menden-sauerland").await;
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"uk\">"));
    assert!(html.contains("<h1>Menden (Sauerland)</h1>"));
    assert!(html.contains("Базова робота (обмежена)"));
    assert!(html.contains("Notbetrieb"), "German for the levels it lacks");
    assert!(html.contains("href=\"/uk/kommunen/menden-sauerland/leistungen/"));
    let res = s.get("/uk/").await;
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(res.headers()["location"], "/uk");

    let (status, html) = s.text("/ar/kommunen").await;
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"ar\" dir=\"rtl\">"), "text direction from the catalogue");

    // Every page names every language, with x-default; the switch shows each in its own name.
    let (_, home) = s.text("/").await;
    assert!(home.contains("<html lang=\"de\">"));
    for alternate in [
        "<link rel=\"alternate\" hreflang=\"de\" href=\"/\">",
        "<link rel=\"alternate\" hreflang=\"en\" href=\"/en\">",
        "<link rel=\"alternate\" hreflang=\"uk\" href=\"/uk\">",
        "<link rel=\"alternate\" hreflang=\"ar\" href=\"/ar\">",
        "<link rel=\"alternate\" hreflang=\"x-default\" href=\"/\">",
        "<a href=\"/uk\" lang=\"uk\" hreflang=\"uk\">Українська</a>",
        "<a href=\"/en\" lang=\"en\" hreflang=\"en\">English</a>",
        "<a href=\"/ar\" lang=\"ar\" hreflang=\"ar\">العربية</a>",
    ] {
        assert!(home.contains(alternate), "{alternate}");
    }
    assert!(!home.contains("hreflang=\"de\">Deutsch</a>"), "no switch to the page's own language");
    let (_, town) = s.text("/en/kommunen/menden-sauerland").await;
    for alternate in [
        "hreflang=\"de\" href=\"/kommunen/menden-sauerland\"",
        "hreflang=\"uk\" href=\"/uk/kommunen/menden-sauerland\"",
        "hreflang=\"x-default\" href=\"/kommunen/menden-sauerland\"",
        "<a href=\"/kommunen/menden-sauerland\" lang=\"de\" hreflang=\"de\">Deutsch</a>",
    ] {
        assert!(town.contains(alternate), "{alternate}");
    }

    // One negotiation for the API and the desk.
    assert_eq!(api_message(&s, "uk").await, "Громади з таким ідентифікатором немає.");
    assert_eq!(api_message(&s, "uk-UA, en;q=0.5").await, "Громади з таким ідентифікатором немає.");
    assert_eq!(api_message(&s, "fr, uk;q=0.3, en;q=0.5").await, "There is no town with this identifier.");
    assert_eq!(api_message(&s, "uk;q=0, de").await, "Eine Kommune mit dieser Kennung gibt es nicht.");
    let res = s.client.get(s.url("/intern/anmelden")).header("accept-language", "uk-UA,uk;q=0.9").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let desk = res.text().await.unwrap();
    assert!(desk.contains("<html lang=\"uk\">"));
    assert!(desk.contains("<h1>Вхід</h1>"));
    let res = s.client.get(s.url("/intern/anmelden")).header("accept-language", "ar").send().await.unwrap();
    assert!(res.text().await.unwrap().contains("<html lang=\"ar\" dir=\"rtl\">"));

    // Announcements may be written in it: the write API knows the languages of the catalogue.
    let admin = Session::api(&s, "admin");
    let mut a = json!({"scope": "area", "title": "Оголошення", "body": "Текст", "lang": "uk"});
    let (status, created) = admin.call(Method::POST, "/announcements", Some(&a)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["lang"], "uk", "{created}");
    a["lang"] = json!("fr");
    let (status, refused) = admin.call(Method::POST, "/announcements", Some(&a)).await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("lang"), "{refused}");

    // Prefixes of languages we do not have are still unknown.
    for path in ["/xx", "/xx/", "/fr/kommunen", "/uk/gibt-es-nicht", "/uk/kommunen/atlantis"] {
        let (status, _) = s.text(path).await;
        assert_eq!(status, 404, "{path}");
    }
}

// Engine-independent: runs on SQLite only.

#[tokio::test]
async fn without_the_catalogue_the_language_does_not_exist() {
    let s = Server::demo(Engine::Sqlite).await;
    for path in ["/uk", "/uk/kommunen"] {
        let (status, _) = s.text(path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, home) = s.text("/").await;
    assert!(home.contains("<link rel=\"alternate\" hreflang=\"en\" href=\"/en\">"));
    assert!(!home.contains("hreflang=\"uk\""));
    assert_eq!(api_message(&s, "uk, en;q=0.1").await, "There is no town with this identifier.");
}

#[tokio::test]
async fn an_invalid_catalogue_stops_the_start_naming_file_and_line() {
    let broken = "[language]\ncode = \"uk\"\nname = \"Українська\"\n\n[nav]\nhome = 3\n";
    for (file, text, expected) in [
        ("uk.toml", broken, "uk.toml, line 6: message nav.home is not text"),
        ("uk.toml", "[language]\ncode = \"uk\"\nname = \"U\"\n[nav\n", "uk.toml, line 4:"),
        ("tr.toml", "[language]\ncode = \"uk\"\nname = \"U\"\n", "tr.toml, line 2: language.code must be \"tr\""),
    ] {
        let dir = catalogues(&[(file, text)]);
        let db = TestDatabase::new(Engine::Sqlite);
        // The environment variable works like the option.
        let out = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
            .env("NOTBETRIEB_MESSAGES_DIR", dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{file} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(stderr.contains(&dir.path().display().to_string()), "the full path: {stderr}");
    }
    let out = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--messages-dir", "/nonexistent/messages"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/messages"));
}
