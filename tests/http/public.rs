//! The public site: pages, search, alternatives, feeds, caching, hostile input.

use crate::{Engine, Server, on_both_engines};

on_both_engines!(home_page_asks_what_and_where, municipality_page_shows_every_service);

async fn home_page_asks_what_and_where(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/").await;
    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"de\">"));
    assert!(html.contains("Was möchten Sie erledigen?"));
    assert!(html.contains("Wo wohnen Sie?"));
    assert!(html.contains("Menden (Sauerland)"));
    assert!(html.contains("Stand:"));
}

async fn municipality_page_shows_every_service(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, html) = s.text("/kommunen/menden-sauerland").await;
    assert_eq!(status, 200);
    assert!(html.contains("<h1>Menden (Sauerland)</h1>"));
    for word in ["Regelbetrieb", "Basisbetrieb (eingeschränkt)", "Notbetrieb", "Ausfall"] {
        assert!(html.contains(word), "{word}");
    }
    assert!(html.contains("Fahrzeug zulassen"));
    assert!(html.contains("Das Bürgerbüro ist wieder geöffnet, aber nur mit Termin."));
    assert!(html.contains("www.stadtverwaltung-menden.de"));
}
