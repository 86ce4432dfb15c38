//! The static export: the whole public site of a snapshot as plain files that any web server or
//! object store can serve without notbetrieb. Every page comes from `site::paths`, the list and
//! renderer the live server uses; a page at URL path `P` is `P/index.html`, a JSON answer
//! `P/index.json`, a file-like path (`/fahrplan.ics`) the file itself, each text file with a
//! `.gz` beside it.
//!
//! The site is rendered part by part (`site::paths::Part`: the area, each town, each service …),
//! by as many threads as there are cores, and each file is written as it is rendered (never the
//! whole site in memory). A full export goes into a temporary directory next to the target,
//! which replaces the target only at the end: an interrupted export leaves the previous copy (or
//! nothing), never half of one. An [`Export`] kept by a running server is brought up to date
//! part by part instead: only the parts a change touches are rendered again, and only files
//! whose bytes differ are written.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::http::api;
use crate::i18n;
use crate::read::snapshot::Snapshot;
use crate::site::cap::escape as xml_escape;
use crate::site::paths::{self, Localized, Part};
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

/// An export on disk together with the files of each of its parts, so that it can be brought up
/// to date part by part ([`Export::update`]).
pub struct Export {
    pub dir: PathBuf,
    /// Part → its files (relative paths, `.gz` variants included).
    files_of: HashMap<Part, Vec<String>>,
}

/// What [`Export::update`] changed: relative paths, `.gz` variants included.
#[derive(Debug, Default)]
pub struct Changes {
    pub written: Vec<String>,
    pub deleted: Vec<String>,
    /// Files rendered again whose bytes had not changed.
    pub unchanged: usize,
}

/// Writes the site of `snap` to `out`, replacing what was there once everything is written.
/// `public_url` (no trailing slash) makes the absolute links of feeds and the sitemap.
pub fn export(snap: &Snapshot, public_url: &str, out: &Path) -> Result<Summary> {
    export_indexed(snap, public_url, out).map(|(summary, _)| summary)
}

/// [`export`], keeping the list of each part's files for later updates.
pub fn export_indexed(snap: &Snapshot, public_url: &str, out: &Path) -> Result<(Summary, Export)> {
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
    let written = write_parts(snap, public_url, &tmp, paths::parts(snap), false);
    let written = match written {
        Ok(written) => written,
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
    let summary = Summary { files: written.files, bytes: written.bytes };
    Ok((summary, Export { dir: out.to_path_buf(), files_of: written.files_of }))
}

impl Export {
    /// Renders `parts` of `snap` again and writes the files whose bytes changed; removes the
    /// files those parts had before and no longer have (a withdrawn announcement's page).
    pub fn update(&mut self, snap: &Snapshot, public_url: &str, parts: &BTreeSet<Part>) -> Result<Changes> {
        let cannot = || format!("cannot update the export in {}", self.dir.display());
        let mut written = write_parts(snap, public_url, &self.dir, parts.iter().cloned(), true).with_context(cannot)?;
        let mut changes = Changes { written: written.changed, deleted: Vec::new(), unchanged: 0 };
        changes.unchanged = written.files as usize - changes.written.len();
        for part in parts {
            let now = written.files_of.remove(part).unwrap_or_default();
            let keep: HashSet<&str> = now.iter().map(String::as_str).collect();
            for gone in self.files_of.remove(part).unwrap_or_default() {
                if keep.contains(gone.as_str()) {
                    continue;
                }
                let path = self.dir.join(&gone);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(anyhow::Error::from(e).context(format!("removing {}", path.display()))),
                }
                // The page's directory goes with its last file (`meldungen/<id>/`).
                if let Some(parent) = path.parent()
                    && parent != self.dir
                {
                    let _ = std::fs::remove_dir(parent);
                }
                changes.deleted.push(gone);
            }
            if !now.is_empty() {
                self.files_of.insert(part.clone(), now);
            }
        }
        changes.written.sort();
        changes.deleted.sort();
        Ok(changes)
    }
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

/// What writing some parts did.
#[derive(Default)]
struct Written {
    files: u64,
    bytes: u64,
    files_of: HashMap<Part, Vec<String>>,
    /// Files whose bytes differ from what was there (all of them in a fresh directory).
    changed: Vec<String>,
}

/// What writing one part did.
#[derive(Default)]
struct PartWritten {
    files: Vec<String>,
    changed: Vec<String>,
    bytes: u64,
}

/// Renders `parts` into `dir`, a part per thread at a time. With `compare`, a file whose bytes
/// are already there is left alone (and so is its `.gz`).
fn write_parts(
    snap: &Snapshot,
    public_url: &str,
    dir: &Path,
    parts: impl Iterator<Item = Part> + Send,
    compare: bool,
) -> Result<Written> {
    let parts = Mutex::new(parts);
    let total = Mutex::new(Written::default());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let Some(part) = parts.lock().unwrap_or_else(|e| e.into_inner()).next() else { return Ok(()) };
                        let mut mine = PartWritten::default();
                        part_files(snap, public_url, &part, &mut |relative, body| {
                            write_file(dir, &relative, body, compare, &mut mine)
                        })?;
                        let mut total = total.lock().unwrap_or_else(|e| e.into_inner());
                        total.files += mine.files.len() as u64;
                        total.bytes += mine.bytes;
                        total.changed.append(&mut mine.changed);
                        total.files_of.insert(part, mine.files);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("an export thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(total.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Writes `body` at `relative` (a URL path without the leading slash) and its `.gz`, recording
/// both in `into`.
fn write_file(dir: &Path, relative: &str, body: &[u8], compare: bool, into: &mut PartWritten) -> Result<()> {
    let path = dir.join(relative);
    let gz_relative = format!("{relative}.gz");
    into.files.push(relative.to_string());
    into.files.push(gz_relative.clone());
    if compare && std::fs::read(&path).is_ok_and(|there| there == body) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let gz = crate::read::snapshot::gzip(body);
    // The compressed variant first: a server that prefers it never finds it older than the file.
    let gz_path = dir.join(&gz_relative);
    std::fs::write(&gz_path, &gz).with_context(|| format!("writing {}", gz_path.display()))?;
    std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    into.bytes += (body.len() + gz.len()) as u64;
    into.changed.push(relative.to_string());
    into.changed.push(gz_relative);
    Ok(())
}

/// The file a URL path is exported as: `P/index.html` (or `index.json`), a file-like path as
/// itself; relative to the export's root.
fn file_name(url_path: &str, index: Option<&str>) -> String {
    let trimmed = url_path.trim_start_matches('/');
    match index {
        None => trimmed.to_string(),
        Some(index) if trimmed.is_empty() => index.to_string(),
        Some(index) => format!("{trimmed}/{index}"),
    }
}

/// Renders every file of one part and hands each to `each` (relative path, bytes).
fn part_files(
    snap: &Snapshot,
    public_url: &str,
    part: &Part,
    each: &mut dyn FnMut(String, &[u8]) -> Result<()>,
) -> Result<()> {
    for page in part.pages(snap) {
        let url = page.url_path();
        let rendered = paths::render(snap, page.lang, public_url, &page.page, true)
            .with_context(|| format!("{url}: listed but not in the snapshot"))?
            .with_context(|| format!("rendering {url}"))?;
        let index = if page.page.is_file() { None } else { Some("index.html") };
        each(file_name(&url, index), rendered.body.as_bytes())?;
    }
    for (path, body) in api::static_answers(snap, public_url, part) {
        let index = if path.ends_with(".json") { None } else { Some("index.json") };
        each(file_name(&path, index), body.with_context(|| format!("rendering {path}"))?.as_bytes())?;
    }
    // CAP alerts and their index, at the live server's paths (`/cap/…`).
    for (path, body) in crate::site::cap::files(snap, public_url, part) {
        each(file_name(&path, None), body.as_bytes())?;
    }
    match part {
        Part::Area => {
            // The search needs the server; where links or bookmarks lead to it, the copy's search
            // page says so and offers the lists (a query string is ignored by a static server).
            for language in i18n::languages() {
                let outcome = crate::read::search::SearchOutcome::default();
                let html = render::search(snap, &language.code, &outcome, true)?;
                each(file_name(&render::lang_url(&language.code, "/suche"), Some("index.html")), html.as_bytes())?;
            }
            each("static/style.css".into(), crate::http::STYLE.as_bytes())?;
            let not_found = render::error(snap, i18n::DEFAULT_LANG, 404, "error.not_found", true)?;
            each("404.html".into(), not_found.as_bytes())?;
            let robots = format!("User-agent: *\nDisallow: /intern/\nSitemap: {public_url}/sitemap.xml\n");
            each("robots.txt".into(), robots.as_bytes())?;
        }
        Part::Sitemap => {
            for (name, xml) in sitemaps(snap, public_url) {
                each(name, xml.as_bytes())?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `sitemap.xml` with every HTML page; past 50,000 an index of `sitemap-N.xml` files.
fn sitemaps(snap: &Snapshot, public_url: &str) -> Vec<(String, String)> {
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
        return vec![("sitemap.xml".into(), urlset(&mut html()))];
    }
    let mut out = Vec::new();
    let mut index = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    index.push_str("<sitemapindex xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n");
    let mut all = html();
    for n in 1..=count.div_ceil(SITEMAP_LIMIT) {
        out.push((format!("sitemap-{n}.xml"), urlset(&mut all.by_ref().take(SITEMAP_LIMIT))));
        index.push_str(&format!("<sitemap><loc>{}/sitemap-{n}.xml</loc></sitemap>\n", xml_escape(public_url)));
    }
    index.push_str("</sitemapindex>\n");
    out.push(("sitemap.xml".into(), index));
    out
}
