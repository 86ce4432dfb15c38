//! `notbetrieb publish`: mirroring an exported site to a directory and to a real S3 API (moto's
//! server, started here on a free loopback port from NOTBETRIEB_TEST_MOTO_SERVER, which
//! scripts/test installs), read back over HTTP: contents, types, encodings, deletions, an
//! idempotent second run, a killed publish followed by a completing one, `--verify` finding a
//! tampered object, and clear errors for targets that cannot be written.

use std::path::Path;
use std::process::{Command, Output};

use crate::{binary, create_bucket, http_client, start_s3, start_s3_with};

fn write(dir: &Path, path: &str, content: &[u8]) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A small exported site: a page with its .gz, a feed, a stylesheet, JSON.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let page = "<!doctype html><title>Menden</title><link rel=stylesheet href=/static/style.css>".as_bytes();
    write(dir.path(), "kommunen/menden-sauerland/index.html", page);
    write(dir.path(), "kommunen/menden-sauerland/index.html.gz", &gzip(page));
    write(dir.path(), "feeds/meldungen.atom", b"<feed/>");
    write(dir.path(), "static/style.css", b"body{}");
    write(dir.path(), "api/v1/services/index.json", b"{}");
    dir
}

fn publish(from: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary())
        .args(["publish", "--from", from.to_str().unwrap()])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "eu-central-1")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn publishing_to_s3_writes_what_changed_with_types_and_deletes_what_is_gone() {
    let Some(s3) = start_s3().await else { return };
    let http = http_client();
    assert!(create_bucket(&s3, "notfall").await);
    let site = site();
    let target = "s3://notfall/site";
    let args = ["--to", target, "--s3-endpoint", s3.endpoint.as_str()];

    let first = publish(site.path(), &args, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("5 written, 0 deleted"), "{}", stdout(&first));
    let object = |path: &str| http.get(format!("{}/notfall/site/{path}", s3.endpoint)).send();
    let page = object("kommunen/menden-sauerland/index.html").await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    assert!(page.text().await.unwrap().contains("<title>Menden</title>"));
    let gz = object("kommunen/menden-sauerland/index.html.gz").await.unwrap();
    assert_eq!(gz.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let feed = object("feeds/meldungen.atom").await.unwrap();
    assert_eq!(feed.headers()["content-type"], "application/atom+xml; charset=utf-8");
    // The manifest, in shards: the town's files, and the rest.
    let shard = |name: &str| object(&format!(".notbetrieb-manifest/{name}.json"));
    let town: serde_json::Value = shard("kommunen.menden-sauerland").await.unwrap().json().await.unwrap();
    assert_eq!(town["files"].as_object().unwrap().len(), 2, "{town}");
    let rest: serde_json::Value = shard("site").await.unwrap().json().await.unwrap();
    assert_eq!(rest["files"].as_object().unwrap().len(), 3, "{rest}");
    assert_eq!(shard("_pending").await.unwrap().status(), 404, "nothing is pending after a publish");

    let again = publish(site.path(), &args, &[]);
    assert!(stdout(&again).contains("0 written, 0 deleted"), "{}", stdout(&again));

    // A changed page and a removed stylesheet: one written, one deleted.
    write(site.path(), "kommunen/menden-sauerland/index.html", b"<!doctype html><title>Menden 2</title>");
    std::fs::remove_file(site.path().join("static/style.css")).unwrap();
    let third = publish(site.path(), &args, &[]);
    assert!(stdout(&third).contains("1 written, 1 deleted"), "{}", stdout(&third));
    assert_eq!(object("static/style.css").await.unwrap().status(), 404);
    assert!(object("kommunen/menden-sauerland/index.html").await.unwrap().text().await.unwrap().contains("Menden 2"));

    // --verify: clean, then an object changed behind our back is found (exit code 1).
    let verify = publish(site.path(), &[&args[..], &["--verify"]].concat(), &[]);
    assert!(verify.status.success(), "{}{}", stdout(&verify), stderr(&verify));
    assert!(stdout(&verify).contains("0 differences"));
    let tampered = http.put(format!("{}/notfall/site/feeds/meldungen.atom", s3.endpoint)).body("<evil/>").send();
    assert!(tampered.await.unwrap().status().is_success());
    let verify = publish(site.path(), &[&args[..], &["--verify"]].concat(), &[]);
    assert_eq!(verify.status.code(), Some(1), "{}", stdout(&verify));
    assert!(stdout(&verify).contains("changed  feeds/meldungen.atom"), "{}", stdout(&verify));
}

#[tokio::test]
async fn a_killed_publish_leaves_a_readable_target_and_the_next_run_completes_it() {
    let Some(s3) = start_s3().await else { return };
    let http = http_client();
    assert!(create_bucket(&s3, "notfall").await);
    let site = site();
    let args = ["--to", "s3://notfall", "--s3-endpoint", s3.endpoint.as_str()];
    assert!(publish(site.path(), &args, &[]).status.success());
    write(site.path(), "kommunen/menden-sauerland/index.html", b"neu");
    write(site.path(), "static/style.css", b"body{color:black}");
    write(site.path(), "feeds/meldungen.atom", b"<feed>neu</feed>");

    let killed = publish(site.path(), &args, &[("NOTBETRIEB_TEST_PUBLISH_EXIT_AFTER", "1")]);
    assert_eq!(killed.status.code(), Some(137), "{}", stderr(&killed));
    // Every object is whole, old or new; the site is still served.
    let page = http.get(format!("{}/notfall/kommunen/menden-sauerland/index.html", s3.endpoint)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let verify = publish(site.path(), &[&args[..], &["--verify"]].concat(), &[]);
    assert_eq!(verify.status.code(), Some(1), "the interrupted publish is incomplete: {}", stdout(&verify));

    let completing = publish(site.path(), &args, &[]);
    assert!(completing.status.success(), "{}", stderr(&completing));
    // All three changed files: the one the killed run wrote is written again, because the
    // killed run had named it pending and never got to the manifest.
    assert!(stdout(&completing).contains("3 written, 0 deleted"), "{}", stdout(&completing));
    let verify = publish(site.path(), &[&args[..], &["--verify"]].concat(), &[]);
    assert!(verify.status.success() && stdout(&verify).contains("0 differences"), "{}", stdout(&verify));
}

#[tokio::test]
async fn publishing_to_a_directory_mirrors_the_site() {
    let site = site();
    let mirror = tempfile::tempdir().unwrap();
    let target = format!("file://{}", mirror.path().join("www").display());
    let first = publish(site.path(), &["--to", &target], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("5 written, 0 deleted"), "{}", stdout(&first));
    let copied = std::fs::read(mirror.path().join("www/kommunen/menden-sauerland/index.html.gz")).unwrap();
    assert_eq!(copied, std::fs::read(site.path().join("kommunen/menden-sauerland/index.html.gz")).unwrap());
    assert!(stdout(&publish(site.path(), &["--to", &target], &[])).contains("0 written, 0 deleted"));
}

#[tokio::test]
async fn targets_that_cannot_be_written_fail_clearly_and_write_nothing() {
    let site = site();
    let readonly = tempfile::tempdir().unwrap();
    let mut perms = std::fs::metadata(readonly.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o500);
    std::fs::set_permissions(readonly.path(), perms).unwrap();
    let running_as_root = Command::new("id").arg("-u").output().map(|o| stdout(&o).trim() == "0").unwrap_or(false);
    let cases: Vec<(String, Vec<String>)> = vec![
        ("ftp://example.org/x".into(), vec![]),
        ("file://relative".into(), vec![]),
        // Nothing listens there: the endpoint is down.
        ("s3://notfall".into(), vec!["--s3-endpoint".into(), "http://127.0.0.1:9".into()]),
    ];
    for (target, extra) in cases {
        let mut args = vec!["--to".to_string(), target.clone()];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = publish(site.path(), &args, &[]);
        assert!(!out.status.success(), "{target}");
        assert!(stderr(&out).contains(&target), "the error names the target: {}", stderr(&out));
    }
    if !running_as_root {
        let target = format!("file://{}", readonly.path().join("www").display());
        let out = publish(site.path(), &["--to", &target], &[]);
        assert!(!out.status.success() && stderr(&out).contains(&target), "{}", stderr(&out));
    }
    if let Some(s3) = start_s3().await {
        // A bucket that does not exist: refused before anything is written.
        let out = publish(site.path(), &["--to", "s3://fehlt/site", "--s3-endpoint", &s3.endpoint], &[]);
        assert!(!out.status.success() && stderr(&out).contains("s3://fehlt/site"), "{}", stderr(&out));
    }
    if let Some(s3) = start_s3_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await {
        // Credentials the store does not know: refused on the first read, the store's reason
        // said once (not once per nested cause), nothing written.
        let out = publish(site.path(), &["--to", "s3://notfall/site", "--s3-endpoint", &s3.endpoint], &[]);
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains("s3://notfall/site"), "{err}");
        assert_eq!(err.matches("InvalidAccessKeyId").count(), 1, "{err}");
        assert!(!stdout(&out).contains("written"), "{}", stdout(&out));
    }
    let missing = publish(Path::new("/nonexistent/export"), &["--to", "file:///tmp/x"], &[]);
    assert!(!missing.status.success() && stderr(&missing).contains("/nonexistent/export"));
}

#[tokio::test]
async fn publishing_the_database_exports_it_and_a_second_run_writes_nothing() {
    let s = crate::Server::demo(crate::Engine::Sqlite).await;
    let mirror = tempfile::tempdir().unwrap();
    let target = format!("file://{}", mirror.path().join("www").display());
    let first = s.command(&["publish", "--to", &target]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(mirror.path().join("www/kommunen/menden-sauerland/index.html.gz").exists());
    assert!(mirror.path().join("www/cap/index.atom").exists());
    // The copy is dated by the state it shows, so the same state exports to the same bytes.
    let second = s.command(&["publish", "--to", &target]);
    assert!(stdout(&second).contains("0 written, 0 deleted"), "{}", stdout(&second));
}
