//! The static export: the whole public site of a snapshot as plain files that any web server or
//! object store can serve without notbetrieb. Every page comes from `site::paths`, the list and
//! renderer the live server uses; a page at URL path `P` is `P/index.html`, a JSON answer
//! `P/index.json`, a file-like path (`/fahrplan.ics`) the file itself, each text file with a
//! `.gz` beside it.
//!
//! Files are written as they are rendered (never the whole site in memory) into a temporary
//! directory next to the target, which replaces the target only at the end: an interrupted
//! export leaves the previous copy (or nothing), never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use crate::http::api;
use crate::i18n;
use crate::read::snapshot::Snapshot;
use crate::site::cap::escape as xml_escape;
use crate::site::paths::{self, Localized};
use crate::site::render;

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Summary {
    /// Files including the `.gz` variants.
    pub files: u64,
    pub bytes: u64,
}

/// Sitemaps hold at most this many URLs (sitemaps.org); beyond, `sitemap.xml` is an index.
const SITEMAP_LIMIT: usize = 50_000;

/// Writes the site of `snap` to `out`, replacing what was there once everything is written.
/// `public_url` (no trailing slash) makes the absolute links of feeds and the sitemap.
pub fn export(snap: &Snapshot, public_url: &str, out: &Path) -> Result<Summary> {
    let name = out.file_name().with_context(|| format!("--out {}: not a directory name", out.display()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(".{}.export-{}", name.to_string_lossy(), std::process::id()));
    let cannot = || format!("cannot write the export to {}", out.display());
    remove_abandoned(&parent, &name.to_string_lossy());
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(cannot)?;
    }
    std::fs::create_dir_all(&tmp).with_context(cannot)?;
    let written = write_site(snap, public_url, &tmp);
    let summary = match written {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context(cannot()));
        }
    };
    // Swap: the old copy moves aside, the new one takes its name, the old one goes.
    let old = parent.join(format!(".{}.old-{}", name.to_string_lossy(), std::process::id()));
    if out.exists() {
        std::fs::rename(out, &old).with_context(cannot)?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::rename(&old, out);
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(anyhow::Error::from(e).context(cannot()));
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove the previous copy {}", old.display()))?;
    }
    Ok(summary)
}

/// Removes the temporary directories of earlier exports to the same target whose process is
/// gone (killed mid-way); those of a running export stay. Linux only: elsewhere they are left.
fn remove_abandoned(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let pid = file_name
            .strip_prefix(&format!(".{name}."))
            .and_then(|rest| rest.strip_prefix("export-").or_else(|| rest.strip_prefix("old-")))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The files of the export, written below `dir`.
struct Writer<'a> {
    dir: &'a Path,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Writer<'_> {
    /// Writes `body` at `relative` (a URL path without the leading slash) and its `.gz`.
    fn file(&self, relative: &str, body: &[u8]) -> Result<()> {
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
        gz.write_all(body)?;
        let gz = gz.finish()?;
        let gz_path = self.dir.join(format!("{relative}.gz"));
        std::fs::write(&gz_path, &gz).with_context(|| format!("writing {}", gz_path.display()))?;
        self.files.fetch_add(2, Ordering::Relaxed);
        self.bytes.fetch_add((body.len() + gz.len()) as u64, Ordering::Relaxed);
        Ok(())
    }

    /// A page at URL path `url_path`: `P/index.html` (or `index.json`), a file-like path as itself.
    fn page(&self, url_path: &str, index: Option<&str>, body: &[u8]) -> Result<()> {
        let trimmed = url_path.trim_start_matches('/');
        match index {
            None => self.file(trimmed, body),
            Some(index) if trimmed.is_empty() => self.file(index, body),
            Some(index) => self.file(&format!("{trimmed}/{index}"), body),
        }
    }
}

fn write_site(snap: &Snapshot, public_url: &str, dir: &Path) -> Result<Summary> {
    // The copy is dated by the state it shows, not by the moment it was written: exporting the
    // same state twice gives the same bytes, so an incremental publish of it writes nothing.
    let made_at = snap.changed_at.clone();
    let w = Writer { dir, files: AtomicU64::new(0), bytes: AtomicU64::new(0) };

    // Pages, rendered by as many threads as there are cores, taken one by one from the lazy list.
    let pages = Mutex::new(paths::all(snap));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some(page) = pages.lock().unwrap_or_else(|e| e.into_inner()).next() else { return Ok(()) };
                        let url = page.url_path();
                        let rendered = paths::render(snap, page.lang, public_url, &page.page, Some(&made_at))
                            .with_context(|| format!("{url}: listed but not in the snapshot"))?
                            .with_context(|| format!("rendering {url}"))?;
                        let index = if page.page.is_file() { None } else { Some("index.html") };
                        w.page(&url, index, rendered.body.as_bytes())?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("an export thread panicked"))??;
        }
        Ok(())
    })?;

    for (path, body) in api::static_answers(snap, public_url) {
        let index = if path.ends_with(".json") { None } else { Some("index.json") };
        w.page(&path, index, body?.as_bytes())?;
    }
    // The search needs the server; where links or bookmarks lead to it, the copy's search page
    // says so and offers the lists (a query string is ignored by a static server).
    for language in i18n::languages() {
        let outcome = render::SearchOutcome {
            query: String::new(),
            place: String::new(),
            towns: Vec::new(),
            services: Vec::new(),
            place_unknown: false,
        };
        let html = render::search(snap, &language.code, &outcome, Some(&made_at))?;
        w.page(&render::lang_url(&language.code, "/suche"), Some("index.html"), html.as_bytes())?;
    }
    // CAP alerts and their index, at the live server's paths (`/cap/…`).
    for (path, body) in crate::site::cap::files(snap, public_url) {
        w.page(&path, None, body.as_bytes())?;
    }
    w.file("static/style.css", crate::http::STYLE.as_bytes())?;
    let not_found = render::error(snap, i18n::DEFAULT_LANG, 404, "error.not_found", Some(&made_at))?;
    w.file("404.html", not_found.as_bytes())?;
    w.file("robots.txt", format!("User-agent: *\nDisallow: /intern/\nSitemap: {public_url}/sitemap.xml\n").as_bytes())?;
    sitemaps(snap, public_url, &w)?;
    Ok(Summary { files: w.files.load(Ordering::Relaxed), bytes: w.bytes.load(Ordering::Relaxed) })
}

/// `sitemap.xml` with every HTML page; past 50,000 an index of `sitemap-N.xml` files.
fn sitemaps(snap: &Snapshot, public_url: &str, w: &Writer) -> Result<()> {
    let html = || paths::all(snap).filter(|p| !p.page.is_file());
    let urlset = |pages: &mut dyn Iterator<Item = Localized>| {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        xml.push_str("<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n");
        for p in pages {
            xml.push_str(&format!("<url><loc>{}</loc></url>\n", xml_escape(&format!("{public_url}{}", p.url_path()))));
        }
        xml.push_str("</urlset>\n");
        xml
    };
    let count = html().count();
    if count <= SITEMAP_LIMIT {
        return w.file("sitemap.xml", urlset(&mut html()).as_bytes());
    }
    let mut index = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    index.push_str("<sitemapindex xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n");
    let mut all = html();
    for n in 1..=count.div_ceil(SITEMAP_LIMIT) {
        w.file(&format!("sitemap-{n}.xml"), urlset(&mut all.by_ref().take(SITEMAP_LIMIT)).as_bytes())?;
        index.push_str(&format!("<sitemap><loc>{}/sitemap-{n}.xml</loc></sitemap>\n", xml_escape(public_url)));
    }
    index.push_str("</sitemapindex>\n");
    w.file("sitemap.xml", index.as_bytes())
}
