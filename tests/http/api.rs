//! The JSON API under /api/v1: content against the demo, caching, errors, the OpenAPI document.

use serde_json::Value;

use crate::{Engine, Server, on_both_engines};

on_both_engines!(
    municipalities_list_every_town_with_counts,
    municipality_has_every_service_with_its_availability,
    service_shows_availability_in_every_town,
    alternatives_are_sorted_by_distance_with_their_own_level,
    announcements_are_published_only_and_filtered_by_town,
    search_finds_services_and_towns,
    responses_carry_etag_gzip_and_cors,
    errors_are_json_with_stable_codes,
    hostile_and_over_long_input_gives_400_without_reflection,
    openapi_document_describes_every_served_path,
);

const LEVELS: [&str; 4] = ["normal", "limited", "emergency", "unavailable"];

fn slugs(list: &Value, field: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|v| v[field].as_str().unwrap().to_string()).collect()
}

fn count_sum(counts: &Value) -> u64 {
    assert_eq!(counts.as_object().unwrap().len(), 4, "{counts}");
    LEVELS.iter().map(|l| counts[l].as_u64().unwrap()).sum()
}

/// The entry of `list` whose `key` (a JSON pointer) is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v.pointer(key).and_then(Value::as_str) == Some(value))
        .unwrap_or_else(|| panic!("no entry with {key} = {value}"))
}

async fn municipalities_list_every_town_with_counts(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, body) = s.json("/api/v1/municipalities").await;
    assert_eq!(status, 200);
    let (_, services) = s.json("/api/v1/services").await;
    let service_count = services["services"].as_array().unwrap().len() as u64;
    let towns = body["municipalities"].as_array().unwrap();
    assert!(towns.len() >= 60, "{} towns", towns.len());
    assert!(body["changed_at"].as_str().unwrap().ends_with('Z'));
    for t in towns {
        assert_eq!(count_sum(&t["counts"]), service_count, "{}", t["slug"]);
        assert_eq!(t["ags"].as_str().unwrap().len(), 8);
    }
    let menden = find(&body["municipalities"], "/slug", "menden-sauerland");
    assert_eq!(menden["name"], "Menden (Sauerland)");
    assert_eq!(menden["ags"], "05962040");
    assert_eq!(menden["district"]["slug"], "maerkischer-kreis");
    assert_eq!(menden["district"]["ags"], "05962");
    assert!(menden["postal_codes"].as_array().unwrap().iter().any(|c| c == "58706"));
    assert_eq!(menden["member"], true);
    assert!(menden["population"].as_i64().unwrap() > 40_000);
    assert!((51.0..52.0).contains(&menden["lat"].as_f64().unwrap()));
    assert!((7.0..8.5).contains(&menden["lon"].as_f64().unwrap()));
    assert!(menden["html_url"].as_str().unwrap().ends_with("/kommunen/menden-sauerland"));
}

async fn municipality_has_every_service_with_its_availability(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, town) = s.json("/api/v1/municipalities/menden-sauerland").await;
    assert_eq!(status, 200);
    let (_, catalogue) = s.json("/api/v1/services").await;
    assert_eq!(slugs(&catalogue["services"], "slug").len(), town["services"].as_array().unwrap().len());
    let service_slugs: Vec<String> = town["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["service"]["slug"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(service_slugs, slugs(&catalogue["services"], "slug"), "every service, in catalogue order");
    for entry in town["services"].as_array().unwrap() {
        assert!(LEVELS.contains(&entry["level"].as_str().unwrap()), "{entry}");
        assert!(
            ["municipality", "district", "derived", "no_report"].contains(&entry["source"].as_str().unwrap()),
            "{entry}"
        );
        assert!(entry["has_alternatives"].is_boolean());
    }
    assert_eq!(count_sum(&town["counts"]), service_slugs.len() as u64);

    // Registration: stated by the town itself.
    let reg = find(&town["services"], "/service/slug", "wohnsitz-anmelden");
    assert_eq!(reg["service"]["area"], "registration");
    assert_eq!(reg["level"], "limited");
    assert_eq!(reg["source"], "municipality");
    assert_eq!(reg["stated_by"], "Menden (Sauerland)");
    assert!(reg["restrictions"].as_str().unwrap().contains("nur mit Termin"));
    assert!(reg["stated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(reg["expected_return"].as_str().unwrap().len(), 10);

    // Social affairs: derived from the pilot rollout of the procedure in Menden.
    let social = find(&town["services"], "/service/slug", "wohngeld");
    assert_eq!(social["level"], "limited");
    assert_eq!(social["source"], "derived");
    assert_eq!(social["derivation"][0]["procedure"], "sozialwesen");
    assert_eq!(social["derivation"][0]["rollout"], "pilot");
    assert!(social["restrictions"].as_str().unwrap().contains("Neuberechnungen im Stapel"));

    // Vehicle registration: the district's statement, with other offices.
    let car = find(&town["services"], "/service/slug", "fahrzeug-zulassen");
    assert_eq!(car["level"], "unavailable");
    assert_eq!(car["source"], "district");
    assert_eq!(car["stated_by"], "Märkischer Kreis");
    assert_eq!(car["has_alternatives"], true);

    assert_eq!(town["contact"]["emergency_website"], "https://www.stadtverwaltung-menden.de");
    assert!(town["contact"]["social_media"].as_array().unwrap().iter().any(|v| v == "Facebook: Stadt Menden"));
    assert!(!town["offices"].as_array().unwrap().is_empty());
    assert!(town["changed_at"].as_str().unwrap().ends_with('Z'));
}

async fn service_shows_availability_in_every_town(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, catalogue) = s.json("/api/v1/services").await;
    assert_eq!(status, 200);
    let list = catalogue["services"].as_array().unwrap();
    assert!(list.len() >= 40);
    let car = find(&catalogue["services"], "/slug", "fahrzeug-zulassen");
    assert_eq!(car["area"], "vehicle");
    assert_eq!(car["responsibility"], "district");
    assert!(car["synonyms"].as_array().unwrap().iter().any(|v| v == "Auto anmelden"));
    assert!(list.iter().any(|s| s["leika_key"].is_string()), "leika keys where known");

    let (_, towns) = s.json("/api/v1/municipalities").await;
    let town_count = towns["municipalities"].as_array().unwrap().len();
    let (status, detail) = s.json("/api/v1/services/fahrzeug-zulassen").await;
    assert_eq!(status, 200);
    assert_eq!(detail["slug"], "fahrzeug-zulassen");
    assert_eq!(detail["municipalities"].as_array().unwrap().len(), town_count);
    assert_eq!(count_sum(&detail["counts"]), town_count as u64);
    assert_eq!(detail["counts"], car["counts"], "list and detail agree");
    let menden = find(&detail["municipalities"], "/municipality/slug", "menden-sauerland");
    assert_eq!(menden["municipality"]["district"]["name"], "Märkischer Kreis");
    assert_eq!(menden["level"], "unavailable");
    assert_eq!(menden["source"], "district");
    let soest = find(&detail["municipalities"], "/municipality/slug", "soest");
    assert_eq!(soest["has_alternatives"], true);
}

async fn alternatives_are_sorted_by_distance_with_their_own_level(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, body) =
        s.json("/api/v1/municipalities/menden-sauerland/services/fahrzeug-zulassen/alternatives").await;
    assert_eq!(status, 200);
    assert_eq!(body["municipality"]["slug"], "menden-sauerland");
    assert_eq!(body["service"]["slug"], "fahrzeug-zulassen");
    assert_eq!(body["availability"]["level"], "unavailable");
    assert_eq!(body["availability"]["source"], "district");
    let alts = body["alternatives"].as_array().unwrap();
    assert!(alts.iter().any(|a| a["office"]["slug"] == "strassenverkehrsamt-dortmund"), "{body}");
    let distances: Vec<f64> = alts.iter().map(|a| a["distance_km"].as_f64().unwrap()).collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{distances:?}");
    for a in alts {
        assert!(LEVELS.contains(&a["level"].as_str().unwrap()));
        assert!(a["office"]["name"].is_string());
        assert!(a["office"]["lat"].is_number());
        assert!(a["conditions"].is_string() || a["conditions"].is_null());
    }
    let dortmund = find(&body["alternatives"], "/office/slug", "strassenverkehrsamt-dortmund");
    assert!((15.0..40.0).contains(&dortmund["distance_km"].as_f64().unwrap()), "{dortmund}");

    // Kreis Soest: two district offices further away, nearest first.
    let (status, soest) = s.json("/api/v1/municipalities/soest/services/fahrzeug-zulassen/alternatives").await;
    assert_eq!(status, 200);
    let offices: Vec<String> = soest["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["office"]["slug"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(offices.len(), 2, "{offices:?}");
    assert!(offices[0].contains("steinfurt") && offices[1].contains("minden-luebbecke"), "{offices:?}");

    // A service nobody refers: an empty list, not an error.
    let (status, none) =
        s.json("/api/v1/municipalities/menden-sauerland/services/wohnsitz-anmelden/alternatives").await;
    assert_eq!(status, 200);
    assert_eq!(none["alternatives"], serde_json::json!([]));
    assert_eq!(none["availability"]["has_alternatives"], false);
}

async fn announcements_are_published_only_and_filtered_by_town(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, all) = s.json("/api/v1/announcements").await;
    assert_eq!(status, 200);
    let ids = slugs(&all["announcements"], "id");
    assert!(ids.contains(&"basisbetrieb-startet".to_string()));
    assert!(!ids.contains(&"menden-entwurf".to_string()), "drafts stay hidden");
    for a in all["announcements"].as_array().unwrap() {
        assert!(a["published_at"].as_str().unwrap().ends_with('Z'));
        assert!(!a["body_html"].as_str().unwrap().contains("<script"));
    }
    let published: Vec<&str> =
        all["announcements"].as_array().unwrap().iter().map(|a| a["published_at"].as_str().unwrap()).collect();
    assert!(published.windows(2).all(|w| w[0] >= w[1]), "newest first: {published:?}");

    let menden = find(&all["announcements"], "/id", "menden-erreichbarkeit");
    assert_eq!(menden["scope"]["kind"], "municipality");
    assert_eq!(menden["scope"]["ref"], "05962040");
    assert_eq!(menden["scope"]["name"], "Menden (Sauerland)");
    assert!(menden["body_markdown"].as_str().unwrap().contains("**nur mit Termin**"));
    assert!(menden["body_html"].as_str().unwrap().contains("<strong>nur mit Termin</strong>"));
    assert!(menden["body_html"].as_str().unwrap().contains("href=\"https://www.stadtverwaltung-menden.de\""));
    assert!(menden["updated_at"].as_str().unwrap() > menden["published_at"].as_str().unwrap(), "corrected");
    assert_eq!(find(&all["announcements"], "/id", "basisbetrieb-startet")["scope"]["ref"], Value::Null);

    let (status, for_menden) = s.json("/api/v1/announcements?municipality=menden-sauerland").await;
    assert_eq!(status, 200);
    let ids = slugs(&for_menden["announcements"], "id");
    for id in ["menden-erreichbarkeit", "kfz-maerkischer-kreis-dortmund", "basisbetrieb-startet"] {
        assert!(ids.contains(&id.to_string()), "{id} in {ids:?}");
    }
    assert!(!ids.contains(&"kfz-kreis-soest".to_string()));
    let (_, for_soest) = s.json("/api/v1/announcements?municipality=soest").await;
    let ids = slugs(&for_soest["announcements"], "id");
    assert!(ids.contains(&"kfz-kreis-soest".to_string()));
    assert!(!ids.contains(&"menden-erreichbarkeit".to_string()));

    // An empty filter, as a form sends it, is no filter.
    let (status, unfiltered) = s.json("/api/v1/announcements?municipality=").await;
    assert_eq!(status, 200);
    assert_eq!(unfiltered, all);
    let (status, err) = s.json("/api/v1/announcements?municipality=atlantis").await;
    assert_eq!((status, err["error"].as_str()), (404, Some("not_found")));
}

async fn search_finds_services_and_towns(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, body) = s.json("/api/v1/search?q=Auto%20anmelden&place=58706").await;
    assert_eq!(status, 200);
    assert_eq!(slugs(&body["municipalities"], "slug"), ["menden-sauerland"]);
    let first = &body["services"][0];
    assert_eq!(first["service"]["slug"], "fahrzeug-zulassen");
    assert_eq!(first["availability"]["level"], "unavailable");
    assert_eq!(first["availability"]["has_alternatives"], true);

    // Typos and umlauts written out, without a place: services without a town's status.
    let (status, body) = s.json("/api/v1/search?q=Fuehrerschein").await;
    assert_eq!(status, 200);
    assert!(!body["services"].as_array().unwrap().is_empty());
    assert!(body["services"][0]["availability"].is_null());
    assert_eq!(body["place_unknown"], false);

    let (status, body) = s.json("/api/v1/search?place=99999").await;
    assert_eq!(status, 200);
    assert_eq!(body["place_unknown"], true);
    assert_eq!(body["municipalities"], serde_json::json!([]));

    let (status, body) = s.json("/api/v1/search").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
}

async fn responses_carry_etag_gzip_and_cors(engine: Engine) {
    let s = Server::demo(engine).await;
    let path = "/api/v1/municipalities/menden-sauerland";
    let res = s.get(path).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    let plain = res.bytes().await.unwrap();

    // The same snapshot gives the same bytes and the same ETag.
    let again = s.get(path).await;
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);

    let res = s.client.get(s.url(path)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert!(res.bytes().await.unwrap().is_empty());

    let res = s.client.get(s.url(path)).header("if-none-match", "\"stale\"").send().await.unwrap();
    assert_eq!(res.status(), 200);

    let res = s.client.get(s.url(path)).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
    let gz = res.bytes().await.unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    assert!(gz.len() * 3 < plain.len(), "compressed {} of {}", gz.len(), plain.len());

    // Every kind of answer is readable from other sites, errors too.
    for p in
        ["/api/v1/services", "/api/v1/announcements", "/api/v1/openapi.json", "/api/v1/search?q=Pass", "/api/v1/nope"]
    {
        let res = s.get(p).await;
        assert_eq!(res.headers()["access-control-allow-origin"], "*", "{p}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{p}");
    }
    let res = s.client.request(reqwest::Method::OPTIONS, s.url("/api/v1/services")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert!(res.headers()["access-control-allow-headers"].to_str().unwrap().contains("if-none-match"));

    let res = s.client.head(s.url("/api/v1/services")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("etag"));
}

async fn errors_are_json_with_stable_codes(engine: Engine) {
    let s = Server::demo(engine).await;
    for (path, status, code) in [
        ("/api/v1/municipalities/atlantis", 404, "not_found"),
        ("/api/v1/services/zeitreise-beantragen", 404, "not_found"),
        ("/api/v1/municipalities/atlantis/services/fahrzeug-zulassen/alternatives", 404, "not_found"),
        ("/api/v1/municipalities/menden-sauerland/services/zeitreise/alternatives", 404, "not_found"),
        ("/api/v1/nope", 404, "not_found"),
        ("/api/v1", 404, "not_found"),
        ("/api/v1/municipalities/menden-sauerland/extra", 404, "not_found"),
        ("/api/v1/Municipalities", 404, "not_found"),
        ("/api/v1/municipalities/Menden", 400, "bad_request"),
    ] {
        let (got, body) = s.json(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"], code, "{path}");
        assert!(body["message"].as_str().unwrap().len() > 10, "{path}");
        assert_eq!(body.as_object().unwrap().len(), 2, "{path}: only error and message");
    }
    let (_, de) = s.json("/api/v1/municipalities/atlantis").await;
    assert_eq!(de["message"], "Eine Kommune mit dieser Kennung gibt es nicht.");
    let res = s
        .client
        .get(s.url("/api/v1/municipalities/atlantis"))
        .header("accept-language", "en-GB,en;q=0.9")
        .send()
        .await
        .unwrap();
    let en: Value = res.json().await.unwrap();
    assert_eq!(en["message"], "There is no town with this identifier.");

    // Read-only: writes are refused with JSON, not an empty 405.
    let res = s.client.post(s.url("/api/v1/municipalities")).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.headers()["allow"].to_str().unwrap().contains("GET"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

async fn hostile_and_over_long_input_gives_400_without_reflection(engine: Engine) {
    let s = Server::demo(engine).await;
    let long = "a".repeat(5000);
    let paths = [
        "/api/v1/municipalities/%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_string(),
        "/api/v1/services/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/api/v1/municipalities/menden-sauerland/services/%22%3E%3Cimg%20src%3Dx%3E/alternatives".to_string(),
        "/api/v1/municipalities/%FF%FE".to_string(),
        "/api/v1/municipalities/menden%00sauerland".to_string(),
        format!("/api/v1/municipalities/{}", "a".repeat(101)),
        format!("/api/v1/services/{long}"),
        "/api/v1/announcements?municipality=%3Cscript%3E".to_string(),
        format!("/api/v1/announcements?municipality={long}"),
        "/api/v1/announcements?municipality=soest&municipality=menden-sauerland".to_string(),
        format!("/api/v1/search?q={long}"),
        format!("/api/v1/search?q=Pass&place={}", "1".repeat(101)),
        "/api/v1/search?q=%3Cscript%3E&q=x".to_string(),
    ];
    for path in &paths {
        let (status, text) = s.text(path).await;
        assert_eq!(status, 400, "{path}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        assert_eq!(body["error"], "bad_request", "{path}");
        for bad in ["<script", "<img", "passwd", "aaaaaaaaaa"] {
            assert!(!text.contains(bad), "{path} reflects {bad}: {text}");
        }
    }
    // Markup in a search is just words that find nothing; it is not echoed.
    let (status, text) = s.text("/api/v1/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E&place=%3Cb%3E").await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("<script") && !text.contains("<b>"), "{text}");
}

async fn openapi_document_describes_every_served_path(engine: Engine) {
    let s = Server::demo(engine).await;
    let (status, doc) = s.json("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    // The public, read-only paths; the write API's (with a bearer `security`) are tested in api_write.rs.
    let paths: serde_json::Map<String, Value> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, item)| item["get"].is_object() && item["get"]["security"].is_null())
        .map(|(path, item)| (path.clone(), item.clone()))
        .collect();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort();
    assert_eq!(
        documented,
        [
            "/announcements",
            "/fahrplan",
            "/municipalities",
            "/municipalities/{slug}",
            "/municipalities/{slug}/services/{service}/alternatives",
            "/openapi.json",
            "/search",
            "/services",
            "/services/{slug}",
        ]
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Level"]["enum"], serde_json::json!(LEVELS));
    assert_eq!(schemas["Source"]["enum"], serde_json::json!(["municipality", "district", "derived", "no_report"]));
    assert_eq!(schemas["ApiError"]["required"], serde_json::json!(["error", "message"]));

    for (path, item) in &paths {
        let op = &item["get"];
        assert!(op.is_object(), "{path} has a GET operation");
        assert!(op["responses"]["200"]["description"].is_string(), "{path}");
        let refs = |status: &str| op["responses"][status]["content"]["application/json"]["schema"]["$ref"].clone();
        if path != "/openapi.json" {
            assert!(refs("200").as_str().unwrap().starts_with("#/components/schemas/"), "{path}");
            assert!(op["responses"]["304"].is_object(), "{path} documents 304");
        }
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .map(|a| a.iter().map(|p| p["name"].as_str().unwrap()).collect())
            .unwrap_or_default();
        if path.contains('{') {
            for status in ["400", "404"] {
                assert_eq!(refs(status), "#/components/schemas/ApiError", "{path} documents {status}");
            }
            for name in ["slug", "service"].into_iter().filter(|n| path.contains(&format!("{{{n}}}"))) {
                assert!(params.contains(&name), "{path} documents {name}");
            }
        }
        // Every documented path is served: fill in the demo's slugs and fetch it.
        let concrete = path
            .replace("{slug}", if path.starts_with("/services") { "fahrzeug-zulassen" } else { "menden-sauerland" });
        let concrete = concrete.replace("{service}", "fahrzeug-zulassen");
        let query = if path == "/search" { "?q=Pass" } else { "" };
        let (status, body) = s.json(&format!("/api/v1{concrete}{query}")).await;
        assert_eq!(status, 200, "{concrete}: {body}");
    }
    assert_eq!(
        paths["/search"]["get"]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ApiError"
    );
    let search_params: Vec<&str> =
        paths["/search"]["get"]["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(search_params.contains(&"q") && search_params.contains(&"place"));
    let announcement_params = &paths["/announcements"]["get"]["parameters"];
    assert_eq!(announcement_params[0]["name"], "municipality");
    assert_eq!(announcement_params[0]["in"], "query");
}
