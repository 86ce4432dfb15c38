//! `notbetrieb import`: all or nothing, visible on a running server without restart, and every
//! problem named by file, line and field.

use std::process::Output;

use crate::{Engine, Server, TestDatabase, eventually, on_both_engines};

on_both_engines!(
    import_is_visible_on_a_running_server,
    examples_import_into_an_empty_database,
    error_in_one_line_stores_nothing,
    wrong_encodings_are_rejected,
    duplicates_are_rejected_naming_both_lines,
    unknown_column_is_rejected,
    unknown_references_are_rejected,
    invalid_level_is_rejected,
    second_bad_file_stores_nothing_from_the_first,
    unusable_files_are_refused,
);

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/import/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn import(s: &Server, files: &[&str]) -> Output {
    let mut args = vec!["import".to_string()];
    // Relative file names are fixtures; options, their values and absolute paths pass through.
    args.extend(files.iter().map(|f| if f.contains('.') && !f.starts_with('/') { fixture(f) } else { f.to_string() }));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.command(&args)
}

fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "import failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    stdout
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "import should fail: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    stderr
}

async fn page_contains(s: &Server, path: &str, text: &str) -> bool {
    let (status, html) = s.text(path).await;
    status == 200 && html.contains(text)
}

/// Imports a known statement and waits until the server shows it: anything committed before
/// (such as the remains of a failed import) would be visible by then too.
async fn settle(s: &Server) {
    succeeded(&import(s, &["marker/statements.csv"]));
    assert!(
        eventually(|| page_contains(s, "/kommunen/menden-sauerland", "Markierung: dieser Import ist angekommen."))
            .await,
        "the marker import never became visible"
    );
}

async fn import_is_visible_on_a_running_server(engine: Engine) {
    let s = Server::demo(engine).await;
    let (_, before) = s.text("/kommunen/menden-sauerland").await;
    assert!(!before.contains("Importtest"));

    // --kind lets a file be named freely (stand.json holds statements too).
    let out = import(&s, &["--kind", "statements", "visible/statements.csv", "visible/stand.json"]);
    let summary = succeeded(&out);
    assert!(summary.starts_with("imported 2 statements"), "{summary}");

    assert!(eventually(|| page_contains(&s, "/kommunen/menden-sauerland", "Importtest:")).await, "statement not shown");
    let (_, html) = s.text("/kommunen/menden-sauerland").await;
    // Hostile text is stored as written and escaped on the page.
    assert!(html.contains("Importtest: &lt;script&gt;alert("), "{html}");
    assert!(html.contains("&lt;b&gt;fett&lt;"), "{html}");
    assert!(!html.contains("<script>alert") && !html.contains("<b>fett"));
    assert!(html.contains("Bitte Reisepass nutzen."));
    assert!(page_contains(&s, "/kommunen/hemer", "Hemer meldet per JSON: nur Notfälle.").await);
}

async fn examples_import_into_an_empty_database(engine: Engine) {
    let s = Server::start(TestDatabase::new(engine), &[]);
    let dir = format!("{}/examples/import", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    files.sort();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();

    let summary = succeeded(&import(&s, &files));
    assert_eq!(
        summary.trim(),
        "imported 1 district (new), 3 municipalities (new), 5 postal codes (new), 2 services (new), \
         2 offices (new), 2 statements (new), 1 referral (new)"
    );
    assert!(eventually(|| page_contains(&s, "/kommunen/menden-sauerland", "Anmeldungen nur mit Termin")).await);
    assert!(page_contains(&s, "/kommunen/hemer", "Hemer").await, "slug derived from the name");
    assert!(
        page_contains(&s, "/kommunen/altena/leistungen/fahrzeug-zulassen", "Straßenverkehrsamt der Stadt Dortmund")
            .await,
        "district statement and referral apply to the district's towns"
    );

    // Importing the same files again replaces rather than duplicates.
    let again = succeeded(&import(&s, &files));
    assert!(again.starts_with("imported 1 district (updated), 3 municipalities (updated)"), "{again}");
}

async fn error_in_one_line_stores_nothing(engine: Engine) {
    let s = Server::demo(engine).await;
    let (_, list_before) = s.text("/kommunen").await;
    let err = failed(&import(&s, &["bad-line/municipalities.csv"]));
    assert!(err.contains("municipalities.csv, line 7, field \"lat\": not a number: \"abc\""), "{err}");
    // Every problem is listed, not just the first.
    assert!(err.contains("municipalities.csv, line 4, field \"district_ags\": not a 5-digit district key"), "{err}");
    assert!(err.contains("2 problems"), "{err}");

    settle(&s).await;
    assert_eq!(s.get("/kommunen/testdorf").await.status().as_u16(), 404);
    let (_, list_after) = s.text("/kommunen").await;
    assert!(!list_after.contains("Teststadt"));
    assert_eq!(list_before.matches("/kommunen/").count(), list_after.matches("/kommunen/").count());
}

async fn wrong_encodings_are_rejected(engine: Engine) {
    let s = Server::demo(engine).await;
    let err = failed(&import(&s, &["encoding/latin1/municipalities.csv"]));
    assert!(err.contains("municipalities.csv, line 3: not valid UTF-8"), "{err}");
    assert!(err.contains("the file must be UTF-8"), "{err}");

    let err = failed(&import(&s, &["encoding/utf16/municipalities.csv"]));
    assert!(err.contains("municipalities.csv: the file is UTF-16 encoded; save it as UTF-8"), "{err}");

    // A UTF-8 byte order mark is fine, and so are semicolons as separators.
    succeeded(&import(&s, &["encoding/bom/municipalities.csv"]));
    assert!(eventually(|| page_contains(&s, "/kommunen/boemmelsdorf", "<h1>Bömmelsdorf</h1>")).await);
    assert_eq!(s.get("/kommunen/testdorf").await.status().as_u16(), 404);
}

async fn duplicates_are_rejected_naming_both_lines(engine: Engine) {
    let s = Server::demo(engine).await;
    let err = failed(&import(&s, &["duplicates/services.csv", "duplicates/municipalities.csv"]));
    assert!(
        err.contains(
            "services.csv, line 4, field \"slug\": duplicate: service \"testleistung\" already appears in line 2"
        ),
        "{err}"
    );
    assert!(
        err.contains("municipalities.csv, line 3, field \"slug\": slug \"testdorf\" is also used by municipality 05962901 in line 2"),
        "{err}"
    );
    assert!(
        err.contains("municipalities.csv, line 4, field \"slug\": slug \"hemer\" already belongs to municipality 05962016 in the database"),
        "{err}"
    );
}

async fn unknown_column_is_rejected(engine: Engine) {
    let s = Server::demo(engine).await;
    let err = failed(&import(&s, &["unknown-column/offices.csv"]));
    assert!(
        err.contains("offices.csv, line 1, field \"fax\": unknown column \"fax\" (columns of offices: slug, name,"),
        "{err}"
    );
}

async fn unknown_references_are_rejected(engine: Engine) {
    let s = Server::demo(engine).await;
    let err = failed(&import(&s, &["unknown-reference/referrals.json", "unknown-reference/municipalities.csv"]));
    assert!(err.contains("municipalities.csv, line 2, field \"district_ags\": unknown district 05999"), "{err}");
    // JSON problems point at the line of the field.
    assert!(err.contains("referrals.json, line 8, field \"office_slug\": unknown office \"gibt-es-nicht\""), "{err}");
    assert!(
        err.contains("referrals.json, line 14, field \"service_slug\": unknown service \"raumschiff-zulassen\""),
        "{err}"
    );
    assert!(err.contains("3 problems"), "{err}");
}

async fn invalid_level_is_rejected(engine: Engine) {
    let s = Server::demo(engine).await;
    let err = failed(&import(&s, &["invalid-level/statements.csv"]));
    let expected = "(expected exactly normal, limited, emergency or unavailable)";
    assert!(
        err.contains(&format!("statements.csv, line 3, field \"level\": not a level: \"Notbetrieb\" {expected}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("statements.csv, line 4, field \"level\": not a level: \"NORMAL\" {expected}")),
        "{err}"
    );
    settle(&s).await;
    assert!(!page_contains(&s, "/kommunen/menden-sauerland", "Dieser Satz darf nicht erscheinen.").await);
}

async fn second_bad_file_stores_nothing_from_the_first(engine: Engine) {
    let s = Server::demo(engine).await;
    let err = failed(&import(&s, &["multi/municipalities.csv", "multi/statements.csv"]));
    assert!(
        err.contains(
            "statements.csv, line 3, field \"expected_return\": not an expected return: \"1.1.2027\" (expected a day YYYY-MM-DD"
        ),
        "{err}"
    );
    assert!(err.contains("1 problem found"), "{err}");
    settle(&s).await;
    assert_eq!(s.get("/kommunen/testdorf").await.status().as_u16(), 404);

    // The same town alone imports fine, so it really was the second file that stopped it.
    succeeded(&import(&s, &["multi/municipalities.csv"]));
    assert!(eventually(|| page_contains(&s, "/kommunen/testdorf", "<h1>Testdorf</h1>")).await);
}

async fn unusable_files_are_refused(engine: Engine) {
    let s = Server::demo(engine).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();

    let long = "x".repeat(10_001);
    std::fs::write(
        path("statements.csv"),
        format!("scope_ags,service_slug,level,restrictions\n05962040,wohnsitz-anmelden,limited,{long}\n"),
    )
    .unwrap();
    let err = failed(&import(&s, &[&path("statements.csv")]));
    assert!(
        err.contains("statements.csv, line 2, field \"restrictions\": too long (10001 characters, at most 10000)"),
        "{err}"
    );

    // Sparse: the size is refused before anything is read.
    let big = std::fs::File::create(path("municipalities.csv")).unwrap();
    big.set_len(51 * 1024 * 1024).unwrap();
    let err = failed(&import(&s, &[&path("municipalities.csv")]));
    assert!(err.contains("municipalities.csv: the file is too large (51 MB, at most 50 MB)"), "{err}");

    std::fs::write(path("notes.csv"), "a,b\n").unwrap();
    let err = failed(&import(&s, &[&path("notes.csv")]));
    assert!(err.contains("notes.csv: cannot tell what the file holds"), "{err}");

    std::fs::write(path("districts.json"), "{\"ags\": \"05962\"}").unwrap();
    let err = failed(&import(&s, &[&path("districts.json")]));
    assert!(err.contains("districts.json, line 1: expected an array of objects"), "{err}");
}
