//! Editors' Markdown on the way to the public: what the renderer refuses (texts that would make
//! rendering slow), and that the HTML in pages, feeds and the API loads nothing from elsewhere.

use reqwest::Method;
use serde_json::json;

use crate::{Engine, Server, Session, on_both_engines};

on_both_engines!(
    markdown_that_would_stall_the_renderer_is_refused_naming_the_field,
    published_html_loads_nothing_from_elsewhere,
);

const MENDEN_AGS: &str = "05962040";

async fn markdown_that_would_stall_the_renderer_is_refused_naming_the_field(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let journal_before = menden.journal_len().await;
    let deep = ">".repeat(20_000);
    let long_link = format!("[x]: https://example.org/{}\n\n{}", "a".repeat(1_000), "[x] ".repeat(2_000));
    for (text, key) in [(deep.as_str(), "nested"), (long_link.as_str(), "large")] {
        let announcement =
            json!({"scope": "municipality", "scope_ref": MENDEN_AGS, "title": "Feindlich", "body": text});
        let faq = json!({"scope": "municipality", "scope_ref": MENDEN_AGS, "question": "Feindlich?", "answer": text});
        for (path, body, field) in [("/announcements", announcement, "body"), ("/faq", faq, "answer")] {
            let req = menden.api_request(Method::POST, path).header("accept-language", "en").json(&body);
            let (status, out) = menden.json(req).await;
            assert_eq!(
                (status, out["error"].as_str(), out["field"].as_str()),
                (422, Some("invalid"), Some(field)),
                "{path}: {out}"
            );
            assert!(out["message"].as_str().unwrap().contains(key), "{out}");
        }
    }
    assert_eq!(menden.journal_len().await, journal_before, "nothing refused is journaled");
    let (_, news) = s.json("/api/v1/announcements").await;
    assert!(!news.to_string().contains("Feindlich"), "nothing refused is published");

    // The same bound in the desk's preview, with the message next to the field.
    let desk = Session::demo(&s, "menden").await;
    let form = [
        ("scope", "municipality:05962040"),
        ("lang", "de"),
        ("title", "Feindlich"),
        ("body", deep.as_str()),
        ("publish", "draft"),
        ("action", "preview"),
    ];
    let res = desk.submit("/intern/meldungen/neu", "/intern/meldungen/neu", &form).await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert!(res.body.contains("zu tief verschachtelt"), "{}", res.body);

    // Sixteen levels, as deep as the limit, are fine.
    let ok =
        json!({"scope": "municipality", "scope_ref": MENDEN_AGS, "title": "Tief", "body": "> ".repeat(16) + "Text"});
    assert_eq!(menden.call(Method::POST, "/announcements", Some(&ok)).await.0, 201);
}

async fn published_html_loads_nothing_from_elsewhere(engine: Engine) {
    let s = Server::demo(engine).await;
    let menden = Session::api(&s, "menden");
    let body = "Plan: ![Lageplan](/static/lageplan.png)\n\n![Zähler](https://tracker.example/pixel.gif) \
                ![Auch](//tracker.example/p2.gif) [Termine](//amt.example/termine) \
                <img src=\"https://tracker.example/raw.gif\">";
    let new = json!({"scope": "municipality", "scope_ref": MENDEN_AGS, "title": "Bilder und Verweise", "body": body});
    let (status, out) = menden.call(Method::POST, "/announcements", Some(&new)).await;
    assert_eq!(status, 201, "{out}");
    let id = out["id"].as_str().unwrap().to_string();

    let (_, api) = s.json("/api/v1/announcements").await;
    let item = api["announcements"].as_array().unwrap().iter().find(|a| a["id"] == id.as_str()).unwrap().clone();
    let (_, feed) = s.text("/feeds/meldungen.atom").await;
    let (_, page) = s.text(&format!("/meldungen/{id}")).await;
    let (_, town_feed) = s.text("/kommunen/menden-sauerland/meldungen.atom").await;
    let feed = feed.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"");
    let town_feed = town_feed.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"");
    for (name, html) in
        [("API", item["body_html"].as_str().unwrap()), ("feed", &feed), ("town feed", &town_feed), ("page", &page)]
    {
        assert!(html.contains(r#"<img src="/static/lageplan.png" alt="Lageplan">"#), "{name}: {html}");
        for loads in ["<img src=\"https:", "<img src=\"//", "<img src=\"http:", "href=\"//"] {
            assert!(!html.contains(loads), "{name} has {loads}: {html}");
        }
        assert!(
            html.contains(r#"href="https://tracker.example/pixel.gif""#),
            "{name}: an outside image becomes a link"
        );
        assert!(html.contains(r#"href="https://amt.example/termine""#), "{name}: protocol-relative made https");
    }
}
