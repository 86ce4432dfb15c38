//! The static export: every page of the demo in every language, every internal link resolving
//! to an exported file, `.gz` twins, the copy banner, pages equal to the live server's, a clear
//! refusal of an unwritable target, and (where nginx is installed) the export served by nginx.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Engine, Server, binary, on_both_engines};

on_both_engines!(export_of_the_demo_is_complete_linked_and_equal_to_the_live_site);

/// Every file below `dir`, as paths relative to it with `/` separators.
fn files(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn export(s: &Server, out: &Path) -> std::process::Output {
    s.command(&["export", "--out", out.to_str().unwrap(), "--public-url", &s.base])
}

/// How nginx resolves a URL path in the export (`try_files $uri $uri/index.html $uri/index.json`).
fn resolves(files: &BTreeSet<String>, url_path: &str) -> bool {
    let p = url_path.trim_start_matches('/').trim_end_matches('/');
    let candidates = if p.is_empty() {
        vec!["index.html".to_string()]
    } else {
        vec![p.to_string(), format!("{p}/index.html"), format!("{p}/index.json")]
    };
    candidates.iter().any(|c| files.contains(c))
}

/// The page without the parts only the copy has: its banner and the stand-ins of the search and
/// the subscription forms.
fn without_copy_parts(html: &str) -> String {
    let banner = regex_lite::Regex::new(r#"(?s)\n  <div class="demo-banner copy-banner">.*?</div>"#).unwrap();
    let search_copy = regex_lite::Regex::new(r#"(?s)<div class="search-form search-unavailable">.*?</div>\n"#).unwrap();
    let search_live = regex_lite::Regex::new(r#"(?s)<form class="search-form[^"]*".*?</form>\n"#).unwrap();
    // Subscribing needs the server too: the copy says so where the live page has the form.
    let subscribe = regex_lite::Regex::new(r#"(?s)<section class="subscribe".*?</section>"#).unwrap();
    let html = subscribe.replace_all(html, "");
    let html = banner.replace_all(&html, "");
    let html = search_copy.replace_all(&html, "");
    search_live.replace_all(&html, "").into_owned()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

async fn export_of_the_demo_is_complete_linked_and_equal_to_the_live_site(engine: Engine) {
    let s = Server::demo(engine).await;
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    let out = export(&s, &site);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("exported"));
    let all = files(&site);

    // Every town, service and language is there, and nothing is left of the temporary directory.
    for path in [
        "index.html",
        "en/index.html",
        "kommunen/index.html",
        "kommunen/menden-sauerland/index.html",
        "en/kommunen/menden-sauerland/leistungen/fahrzeug-zulassen/index.html",
        "kommunen/menden-sauerland/meldungen.atom",
        "kommunen/menden-sauerland/fahrplan/index.html",
        "kommunen/menden-sauerland/fahrplan.ics",
        "fahrplan.ics",
        "feeds/meldungen.atom",
        "en/feeds/meldungen.atom",
        "static/style.css",
        "sitemap.xml",
        "robots.txt",
        "404.html",
        "api/v1/openapi.json",
        "api/v1/municipalities/index.json",
        "api/v1/municipalities/menden-sauerland/index.json",
        "api/v1/services/index.json",
        "api/v1/announcements/index.json",
    ] {
        assert!(all.contains(path), "{path} missing from the export");
        assert!(all.contains(&format!("{path}.gz")), "{path}.gz missing from the export");
    }
    let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, ["site"], "only the export is left next to it");

    // File kinds by suffix, and each `.gz` holds the same bytes as the file beside it.
    let plain: Vec<&String> = all.iter().filter(|f| !f.ends_with(".gz")).collect();
    for f in &plain {
        let suffix = f.rsplit('.').next().unwrap();
        assert!(["html", "atom", "ics", "css", "json", "xml", "txt"].contains(&suffix), "unexpected file {f}");
        let bytes = std::fs::read(site.join(f)).unwrap();
        assert!(std::str::from_utf8(&bytes).is_ok(), "{f} is not UTF-8");
        match suffix {
            "json" => drop(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|e| panic!("{f}: {e}"))),
            "atom" => drop(atom_syndication::Feed::read_from(&bytes[..]).unwrap_or_else(|e| panic!("{f}: {e}"))),
            "ics" => assert!(bytes.starts_with(b"BEGIN:VCALENDAR"), "{f}"),
            _ => {}
        }
        let gz = std::fs::read(site.join(format!("{f}.gz"))).unwrap_or_else(|_| panic!("{f}.gz missing"));
        assert_eq!(gunzip(&gz), bytes, "{f}.gz");
    }
    assert_eq!(all.len(), plain.len() * 2, "every file has exactly one .gz beside it");

    // Every internal link of every page resolves to an exported file; every page is a copy.
    let link = regex_lite::Regex::new(r#"(?:href|src|action)="(/[^"]*)""#).unwrap();
    let mut broken = BTreeSet::new();
    let pages: Vec<&&String> = plain.iter().filter(|f| f.ends_with(".html")).collect();
    for f in &pages {
        let html = std::fs::read_to_string(site.join(f)).unwrap();
        let banner = if f.starts_with("en/") { "This is an emergency copy" } else { "Dies ist eine Notfall-Kopie" };
        assert!(html.contains("copy-banner") && html.contains(banner), "{f} lacks the copy banner");
        assert!(!html.contains("<form") && !html.contains("action="), "{f} has a form, which needs the server");
        for c in link.captures_iter(&html) {
            let target = c[1].replace("&amp;", "&");
            let target = target.split('#').next().unwrap();
            if target.starts_with("//") || !resolves(&all, target) {
                broken.insert(format!("{f} → {target}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken links, first: {:?}",
        broken.len(),
        broken.iter().take(10).collect::<Vec<_>>()
    );
    let home = std::fs::read_to_string(site.join("index.html")).unwrap();
    assert!(home.contains("Die Suche gibt es in dieser Kopie nicht"), "the home page says the search is missing");
    let search = std::fs::read_to_string(site.join("en/suche/index.html")).unwrap();
    assert!(search.contains("Search is not available in this copy"), "so does the search page");
    assert!(search.contains("href=\"/en/leistungen\"") && search.contains("href=\"/en/kommunen\""));

    // The sitemap lists every HTML page but the 404 page and the search, with the public address.
    let sitemap = std::fs::read_to_string(site.join("sitemap.xml")).unwrap();
    let searches = pages.iter().filter(|f| f.ends_with("suche/index.html")).count();
    assert_eq!(searches, 2, "German and English");
    assert_eq!(sitemap.matches("<loc>").count(), pages.len() - 1 - searches);
    assert!(sitemap.contains(&format!("<loc>{}/en/kommunen/menden-sauerland</loc>", s.base)));

    // Pages equal the live server's, but for the copy's own parts.
    for (path, file) in [
        ("/", "index.html"),
        ("/en", "en/index.html"),
        ("/kommunen/menden-sauerland", "kommunen/menden-sauerland/index.html"),
        ("/en/leistungen/fahrzeug-zulassen", "en/leistungen/fahrzeug-zulassen/index.html"),
        ("/meldungen", "meldungen/index.html"),
    ] {
        let (status, live) = s.text(path).await;
        assert_eq!(status, 200, "{path}");
        let copy = std::fs::read_to_string(site.join(file)).unwrap();
        assert_eq!(without_copy_parts(&copy), without_copy_parts(&live), "{path}");
        assert_ne!(copy, live, "{path}: the copy has its banner");
    }
    for (path, file) in [
        ("/feeds/meldungen.atom", "feeds/meldungen.atom"),
        ("/kommunen/menden-sauerland/fahrplan.ics", "kommunen/menden-sauerland/fahrplan.ics"),
        ("/static/style.css", "static/style.css"),
        ("/api/v1/municipalities/menden-sauerland", "api/v1/municipalities/menden-sauerland/index.json"),
        ("/api/v1/services", "api/v1/services/index.json"),
        ("/api/v1/openapi.json", "api/v1/openapi.json"),
        ("/cap/index.atom", "cap/index.atom"),
    ] {
        let (status, live) = s.text(path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(std::fs::read_to_string(site.join(file)).unwrap(), live, "{path}");
    }

    // A second export replaces the first as a whole: a stray file does not survive.
    std::fs::write(site.join("stray.html"), "old").unwrap();
    let out = export(&s, &site);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!site.join("stray.html").exists());
    assert_eq!(files(&site).len(), all.len());

    served_by_nginx(&site).await;
}

/// An export killed mid-way leaves the previous copy as it was; the next export completes and
/// clears what the killed one left.
#[tokio::test]
async fn a_killed_export_leaves_the_previous_copy() {
    let s = Server::demo(Engine::Sqlite).await;
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    // The previous copy: one file is enough to see that it stays as it was.
    std::fs::create_dir_all(site.join("kommunen")).unwrap();
    std::fs::write(site.join("kommunen/index.html"), "previous copy").unwrap();
    let before = files(&site);
    let mut child = std::process::Command::new(binary())
        .args(["export", "--out", site.to_str().unwrap(), "--database", &s.db.url])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has begun writing its temporary directory.
    let started = std::time::Instant::now();
    let partial = loop {
        let tmp_dir = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(".site.export-"));
        if let Some(dir) = tmp_dir
            && dir.join("kommunen").exists()
        {
            break dir;
        }
        assert!(started.elapsed().as_secs() < 60 && child.try_wait().unwrap().is_none(), "the export ended too soon");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(files(&site), before, "the previous copy is untouched");
    assert_eq!(std::fs::read_to_string(site.join("kommunen/index.html")).unwrap(), "previous copy");
    let out = export(&s, &site);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!partial.exists(), "the killed export's directory is removed");
    assert_ne!(std::fs::read_to_string(site.join("kommunen/index.html")).unwrap(), "previous copy");
    assert!(site.join("sitemap.xml").exists());
    let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, ["site"]);
}

/// A language added with `--messages-dir` is exported too, under its prefix.
#[tokio::test]
async fn a_catalogue_from_messages_dir_is_exported_too() {
    let s = Server::demo(Engine::Sqlite).await;
    let tmp = tempfile::tempdir().unwrap();
    let messages = tmp.path().join("messages");
    std::fs::create_dir(&messages).unwrap();
    std::fs::write(messages.join("ar.toml"), "[language]\ncode = \"ar\"\nname = \"العربية\"\ndir = \"rtl\"\n").unwrap();
    let site = tmp.path().join("site");
    let out = s.command(&["export", "--out", site.to_str().unwrap(), "--messages-dir", messages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(site.join("ar/kommunen/menden-sauerland/index.html")).unwrap();
    assert!(html.contains("<html lang=\"ar\" dir=\"rtl\">"));
    assert!(html.contains("Dies ist eine Notfall-Kopie"), "German where the catalogue has no copy line");
    assert!(site.join("ar/fahrplan.ics.gz").exists());
}

/// An unwritable target: a clear error naming it, a non-zero exit, nothing written.
#[tokio::test]
async fn an_unwritable_out_is_refused_naming_it() {
    let s = Server::demo(Engine::Sqlite).await;
    let tmp = tempfile::tempdir().unwrap();
    // Below a regular file no directory can be made, whoever runs the test (root included).
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let target = blocker.join("site");
    let out = export(&s, &target);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot write the export to {}", target.display())), "{stderr}");
    let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, ["a-file"]);
    // Without --out the command says what it needs.
    let out = std::process::Command::new(binary()).args(["export", "--database", &s.db.url]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}

/// The README's nginx configuration serves the export at the live site's URLs with the right
/// types, pre-compressed files and the 404 page. Skipped where nginx is not installed
/// (scripts/test installs it).
async fn served_by_nginx(site: &Path) {
    let nginx = PathBuf::from("/usr/sbin/nginx");
    if !nginx.exists() {
        eprintln!("SKIPPED: /usr/sbin/nginx not installed (scripts/test installs Debian's nginx)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let w = work.path().display();
    let conf = format!(
        r#"daemon off;
master_process off;
pid {w}/nginx.pid;
error_log {w}/error.log;
events {{}}
http {{
    include /etc/nginx/mime.types;
    types {{ text/calendar ics; }}
    charset utf-8;
    charset_types text/css application/atom+xml text/calendar application/json application/xml application/cap+xml text/plain;
    access_log off;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {site};
        gzip_static on;
        location / {{ try_files $uri $uri/index.html $uri/index.json =404; }}
        error_page 404 /404.html;
        location /cap/ {{ types {{ application/cap+xml xml; application/atom+xml atom; }} }}
    }}
}}
"#,
        site = site.display()
    );
    let conf_path = work.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = std::process::Command::new(&nginx)
        .args(["-p", &w.to_string(), "-e", &format!("{w}/error.log"), "-c", conf_path.to_str().unwrap()])
        .spawn()
        .expect("start nginx");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "nginx exited ({status}): {}",
                std::fs::read_to_string(work.path().join("error.log")).unwrap_or_default()
            );
        }
        assert!(started.elapsed().as_secs() < 10, "nginx did not listen");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _nginx = Kill(child);
    let alert = std::fs::read_dir(site.join("cap"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|name| name.ends_with(".xml"))
        .map(|name| format!("/cap/{name}"))
        .expect("the demo has CAP alerts");
    let client = crate::http_client();
    let base = format!("http://127.0.0.1:{port}");
    for (path, status, content_type, file) in [
        ("/", 200, "text/html", "index.html"),
        ("/en", 200, "text/html", "en/index.html"),
        ("/kommunen/menden-sauerland", 200, "text/html", "kommunen/menden-sauerland/index.html"),
        ("/fahrplan.ics", 200, "text/calendar", "fahrplan.ics"),
        ("/feeds/meldungen.atom", 200, "application/atom+xml", "feeds/meldungen.atom"),
        ("/static/style.css", 200, "text/css", "static/style.css"),
        ("/api/v1/municipalities", 200, "application/json", "api/v1/municipalities/index.json"),
        ("/api/v1/openapi.json", 200, "application/json", "api/v1/openapi.json"),
        ("/kommunen/atlantis", 404, "text/html", "404.html"),
        ("/cap/index.atom", 200, "application/atom+xml", "cap/index.atom"),
        (alert.as_str(), 200, "application/cap+xml", &alert[1..]),
    ] {
        let res = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        let ct = res.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(ct.starts_with(content_type) && ct.contains("charset=utf-8"), "{path}: {ct}");
        assert_eq!(res.bytes().await.unwrap(), std::fs::read(site.join(file)).unwrap(), "{path}");
        // With gzip accepted, the pre-compressed twin is sent as it is.
        let res = client.get(format!("{base}{path}")).header("accept-encoding", "gzip").send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        assert_eq!(res.headers().get(reqwest::header::CONTENT_ENCODING).map(|v| v.to_str().unwrap()), Some("gzip"));
        assert_eq!(res.bytes().await.unwrap(), std::fs::read(site.join(format!("{file}.gz"))).unwrap(), "{path}");
    }
}
