//! Search as residents use it: the query corpus of `tests/fixtures/search/corpus.tsv`, topics
//! handled elsewhere, life events, and places many towns share.

use crate::*;

#[tokio::test]
async fn the_query_corpus_finds_what_residents_look_for() {
    let s = Server::demo(Engine::Sqlite).await;
    let corpus = include_str!("../fixtures/search/corpus.tsv");
    let (mut total, mut misses) = (0, Vec::new());
    for (n, line) in corpus.lines().enumerate().filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [lang, query, expected] = cols[..] else { panic!("corpus line {}: three columns expected", n + 1) };
        total += 1;
        let q: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let (status, body) = s.json(&format!("/api/v1/search?q={q}&lang={lang}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        let first = body["services"][0]["service"]["slug"].as_str().unwrap_or("").to_string();
        let keys = |field: &str| -> Vec<String> {
            body[field].as_array().unwrap().iter().map(|t| t["key"].as_str().unwrap().to_string()).collect()
        };
        let hit = if let Some(key) = expected.strip_prefix("elsewhere:") {
            keys("elsewhere").contains(&key.to_string())
        } else if let Some(key) = expected.strip_prefix("event:") {
            keys("life_events").contains(&key.to_string()) && body["services"].as_array().is_some_and(|a| a.len() >= 2)
        } else {
            first == expected
        };
        if !hit {
            misses.push(format!(
                "line {} [{lang}] {query:?}: expected {expected}, first {first:?}, topics {:?} {:?}",
                n + 1,
                keys("life_events"),
                keys("elsewhere")
            ));
        }
    }
    println!(
        "search corpus: {} of {total} queries found what was expected ({:.1} %)",
        total - misses.len(),
        100.0 * (total - misses.len()) as f64 / total as f64
    );
    assert!(total >= 80, "the corpus holds at least 60 German and 20 English queries");
    assert!(misses.is_empty(), "{} misses:\n{}", misses.len(), misses.join("\n"));
}

#[tokio::test]
async fn life_events_list_their_services_in_order_and_other_authorities_are_named() {
    let s = Server::demo(Engine::Sqlite).await;
    let (_, body) = s.json("/api/v1/search?q=Kind+geboren").await;
    let slugs: Vec<&str> =
        body["services"].as_array().unwrap().iter().map(|h| h["service"]["slug"].as_str().unwrap()).collect();
    assert_eq!(&slugs[..3], ["geburt-beurkunden", "geburtsurkunde", "vaterschaft-anerkennen"], "{slugs:?}");
    assert!(slugs.contains(&"elterngeld"), "{slugs:?}");
    assert_eq!(body["life_events"][0]["text"], "Ein Kind ist geboren");

    // The page says it in words: the life event, and who pays Kindergeld.
    let (status, html) = s.text("/suche?q=Kind+geboren&ort=58706").await;
    assert_eq!(status, 200);
    assert!(html.contains("Lebenslage „Ein Kind ist geboren“"), "{html}");
    assert!(html.contains("/kommunen/menden-sauerland/leistungen/geburt-beurkunden"));
    let (_, html) = s.text("/suche?q=Kindergeld").await;
    assert!(html.contains("Familienkasse"), "{html}");
    assert!(!html.contains("Dazu haben wir keine Leistung gefunden"), "an answer is not 'nothing found'");
    let (_, html) = s.text("/en/suche?q=child+benefit").await;
    assert!(html.contains("Familienkasse") && html.contains("Not at your town hall"), "{html}");

    // "Geburtsurkunde" leads to the birth's registration too (the newborn's first certificate).
    let (_, body) = s.json("/api/v1/search?q=Geburtsurkunde").await;
    let slugs: Vec<&str> =
        body["services"].as_array().unwrap().iter().map(|h| h["service"]["slug"].as_str().unwrap()).collect();
    assert_eq!(&slugs[..2], ["geburtsurkunde", "geburt-beurkunden"], "{slugs:?}");

    // English words are for the English interface; the German one does not guess at them.
    let (_, body) = s.json("/api/v1/search?q=register+a+car").await;
    assert_ne!(body["services"][0]["service"]["slug"], "fahrzeug-zulassen", "{body}");
    let (status, body) = s.json("/api/v1/search?q=Kindergeld&lang=xx").await;
    assert_eq!(status, 200, "a language we do not have is answered in German");
    assert!(body["elsewhere"][0]["text"].as_str().unwrap().starts_with("Kindergeld und Kinderzuschlag"), "{body}");
}
