//! Publishing an exported site (a directory of files) to mirrors: local directories
//! (`file:///path`) and S3-compatible object storage (`s3://bucket/prefix`), both through the
//! `object_store` crate.
//!
//! Incremental: each target keeps a manifest (every path with its SHA-256), and a publish writes
//! only what differs from it (or is missing, or has another size), deletes what the site no
//! longer has, and updates the manifest last. The manifest is kept in shards under
//! `.notbetrieb-manifest/`, one per town, district, service and announcement and one for the
//! rest, so that a change to one town rewrites a few small shards, not a manifest of the whole
//! site. Before anything is written, `_pending.json` there names the paths about to change; a
//! run that finds it treats those as unknown. So every object is written whole (a put is
//! atomic), a reader always sees each file either old or new, and a publish killed half-way
//! leaves the previous state readable and the next run completes it. `verify` reads every object
//! back and lists what differs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's directory at the root of every target; never part of the site itself.
pub const MANIFEST: &str = ".notbetrieb-manifest";
/// The shard naming the paths a publish in progress is changing.
const PENDING: &str = "_pending";

/// Where S3 targets are and how to sign in; everything not given comes from the standard
/// `AWS_*` environment variables.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// For stores other than AWS (MinIO, Ceph, a local test server); a plain `http://` endpoint
    /// is allowed because it is given explicitly.
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// One mirror of the site.
pub struct Target {
    /// As given: `file:///srv/notfall` or `s3://bucket/prefix`, for messages.
    pub name: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Object stores keep `Content-Type`, `Content-Encoding` and `Cache-Control` per object; a
    /// directory cannot (its web server derives them from the names).
    has_attributes: bool,
}

impl Target {
    /// Parses `file:///absolute/path` or `s3://bucket[/prefix]`.
    pub fn parse(spec: &str, s3: &S3Options) -> Result<Target> {
        if let Some(path) = spec.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("target {spec}: a file target needs an absolute path (file:///srv/notfall)");
            }
            std::fs::create_dir_all(path).with_context(|| format!("target {spec}: cannot create {path}"))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .with_context(|| format!("target {spec}: cannot use {path}"))?;
            return Ok(Target {
                name: spec.to_string(),
                store: Arc::new(store),
                prefix: String::new(),
                has_attributes: false,
            });
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("target {spec}: no bucket (s3://bucket/prefix)");
            }
            // TLS through rustls with ring (the process-wide choice; a second call is a no-op).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                // Path-style addressing: local and self-hosted stores have no bucket subdomains.
                builder = builder.with_virtual_hosted_style_request(false);
            }
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            let store = builder.build().with_context(|| format!("target {spec}"))?;
            return Ok(Target {
                name: spec.to_string(),
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_string(),
                has_attributes: true,
            });
        }
        bail!("target {spec}: unknown kind; use file:///path or s3://bucket/prefix")
    }

    fn key(&self, path: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(path)
        } else {
            ObjectPath::from(format!("{}/{path}", self.prefix))
        }
    }

    fn relative(&self, key: &ObjectPath) -> String {
        let key = key.as_ref();
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            key.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(key).to_string()
        }
    }

    /// The manifest the last publishes wrote; empty when there is none (a new target). Paths a
    /// publish was changing when it ended are left out, so they are written again.
    async fn manifest(&self) -> Result<Manifest> {
        let prefix = self.key(MANIFEST);
        let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut manifest = Manifest::default();
        let mut pending = Vec::new();
        for meta in listed {
            let relative = self.relative(&meta.location);
            let Some(shard) = relative.strip_prefix(&format!("{MANIFEST}/")).and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            let Ok(shard_file) = serde_json::from_slice::<ShardFile>(&bytes) else { continue };
            if shard == PENDING {
                pending = shard_file.files.into_keys().collect();
            } else {
                manifest.shards.insert(shard.to_string(), shard_file.files);
            }
        }
        for path in pending {
            manifest.remove(&path);
        }
        Ok(manifest)
    }

    async fn write_shard(&self, name: &str, files: &BTreeMap<String, String>) -> Result<()> {
        let key = format!("{MANIFEST}/{name}.json");
        if files.is_empty() {
            return self.delete(&key).await;
        }
        let body = serde_json::to_vec(&ShardFile { files: files.clone() })?;
        self.put(&key, body).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&self.key(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under the prefix with its size, the manifest excluded.
    async fn objects(&self) -> Result<BTreeMap<String, u64>> {
        let prefix = if self.prefix.is_empty() { None } else { Some(ObjectPath::from(self.prefix.as_str())) };
        let listed: Vec<_> = self.store.list(prefix.as_ref()).try_collect().await?;
        Ok(listed
            .into_iter()
            .map(|meta| (self.relative(&meta.location), meta.size))
            .filter(|(path, _)| !path.starts_with(&format!("{MANIFEST}/")))
            .collect())
    }

    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let mut attributes = Attributes::new();
        if self.has_attributes {
            let (content_type, encoding) = content_type(path);
            attributes.insert(Attribute::ContentType, content_type.into());
            if let Some(encoding) = encoding {
                attributes.insert(Attribute::ContentEncoding, encoding.into());
            }
            attributes.insert(Attribute::CacheControl, "no-cache".into());
        }
        let options = PutOptions { attributes, ..Default::default() };
        self.store.put_opts(&self.key(path), PutPayload::from(bytes), options).await?;
        Ok(())
    }
}

/// What a target holds, as its manifest says: shard → path → SHA-256 (hex).
#[derive(Default)]
pub struct Manifest {
    shards: BTreeMap<String, BTreeMap<String, String>>,
}

impl Manifest {
    fn get(&self, path: &str) -> Option<&String> {
        self.shards.get(&shard_of(path))?.get(path)
    }

    fn set(&mut self, path: &str, sha256: String) {
        self.shards.entry(shard_of(path)).or_default().insert(path.to_string(), sha256);
    }

    fn remove(&mut self, path: &str) {
        if let Some(shard) = self.shards.get_mut(&shard_of(path)) {
            shard.remove(path);
        }
    }
}

/// One shard object of the manifest.
#[derive(Serialize, Deserialize)]
struct ShardFile {
    #[serde(default)]
    files: BTreeMap<String, String>,
}

/// The manifest shard a path belongs to: its town, district, service or announcement, whatever
/// the language (`en/kommunen/menden/…` and `api/v1/municipalities/menden/…` are both
/// `kommunen.menden`), and `site` for the rest.
fn shard_of(path: &str) -> String {
    let path = crate::i18n::languages()
        .iter()
        .filter(|l| l.code != crate::i18n::DEFAULT_LANG)
        .find_map(|l| path.strip_prefix(&format!("{}/", l.code)))
        .unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [section @ ("kommunen" | "kreise" | "leistungen" | "meldungen"), key, _, ..] => format!("{section}.{key}"),
        ["api", "v1", "municipalities", key, _, ..] => format!("kommunen.{key}"),
        ["api", "v1", "services", key, _, ..] => format!("leistungen.{key}"),
        _ => "site".to_string(),
    }
}

/// One file of the exported site.
struct LocalFile {
    /// Relative, with `/` separators: `kommunen/menden-sauerland/index.html`.
    path: String,
    size: u64,
    sha256: String,
}

/// Every file under `dir`, hashed.
fn local_files(dir: &Path) -> Result<Vec<LocalFile>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<LocalFile>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let source = entry.path();
            if entry.file_type()?.is_dir() {
                walk(root, &source, out)?;
                continue;
            }
            let relative =
                source.strip_prefix(root)?.to_str().ok_or_else(|| anyhow!("{}: not UTF-8", source.display()))?;
            let path = relative.replace(std::path::MAIN_SEPARATOR, "/");
            if path == MANIFEST {
                continue;
            }
            let bytes = std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
            out.push(LocalFile { path, size: bytes.len() as u64, sha256: hex::encode(Sha256::digest(&bytes)) });
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What a publish did to one target.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub written: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// Test hook, debug builds only: the process ends (as if killed) after this many objects were
/// written, so tests can show that an interrupted publish leaves a readable target and the next
/// run completes it.
const EXIT_AFTER_WRITES: &str = "NOTBETRIEB_TEST_PUBLISH_EXIT_AFTER";

/// Makes `target` hold exactly the files of `dir`, writing only what changed. Returns the
/// target's manifest as it now is, for later [`publish_changes`].
pub async fn publish(dir: &Path, target: &Target) -> Result<(Report, Manifest)> {
    let files = local_files(dir)?;
    // Reading first: wrong credentials, a missing bucket or an endpoint that is down fail here,
    // before anything is written.
    let mut manifest = target.manifest().await.with_context(|| format!("target {}", target.name))?;
    let existing = target.objects().await.with_context(|| format!("target {}", target.name))?;
    let mut unchanged = 0;
    let mut write = Vec::new();
    for file in &files {
        if manifest.get(&file.path) == Some(&file.sha256) && existing.get(&file.path) == Some(&file.size) {
            unchanged += 1;
        } else {
            write.push((file.path.clone(), Change::Write(file.sha256.clone())));
        }
    }
    let wanted: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let delete: Vec<String> = existing.keys().filter(|p| !wanted.contains(p.as_str())).cloned().collect();
    // Entries of files that are neither there nor wanted (an object deleted by hand).
    let stale: Vec<String> = manifest
        .shards
        .values()
        .flat_map(|s| s.keys())
        .filter(|p| !wanted.contains(p.as_str()) && !existing.contains_key(*p))
        .cloned()
        .collect();
    let mut changes: Vec<(String, Change)> = write;
    changes.extend(delete.into_iter().map(|p| (p, Change::Delete)));
    changes.extend(stale.into_iter().map(|p| (p, Change::Forget)));
    let mut report = apply(dir, target, &mut manifest, changes).await?;
    report.unchanged = unchanged;
    Ok((report, manifest))
}

/// Writes the files `written` (read from `dir`) to a target whose manifest is `manifest` and
/// deletes `deleted`: what an incremental export changed, without looking at anything else.
pub async fn publish_changes(
    dir: &Path,
    target: &Target,
    manifest: &mut Manifest,
    written: &[String],
    deleted: &[String],
) -> Result<Report> {
    let mut changes = Vec::with_capacity(written.len() + deleted.len());
    for path in written {
        let source = dir.join(path);
        let bytes = std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        changes.push((path.clone(), Change::Write(hex::encode(Sha256::digest(&bytes)))));
    }
    changes.extend(deleted.iter().map(|p| (p.clone(), Change::Delete)));
    apply(dir, target, manifest, changes).await
}

/// What happens to one path of a target.
enum Change {
    /// Write the file, whose SHA-256 this is.
    Write(String),
    Delete,
    /// Drop the manifest's entry: the object is gone already.
    Forget,
}

/// Carries out `changes` on `target`: the pending list
/// first, then stylesheets, feeds and data before the pages that link to them (so a reader
/// following a new link finds its file), then deletions, then the shards of the manifest that
/// changed, and the pending list goes.
async fn apply(
    dir: &Path,
    target: &Target,
    manifest: &mut Manifest,
    mut changes: Vec<(String, Change)>,
) -> Result<Report> {
    let exit_after: Option<usize> =
        if cfg!(debug_assertions) { std::env::var(EXIT_AFTER_WRITES).ok().and_then(|v| v.parse().ok()) } else { None };
    let mut report = Report::default();
    if changes.is_empty() {
        return Ok(report);
    }
    let context = |what: String| format!("target {}: {what}", target.name);
    let pending: BTreeMap<String, String> = changes.iter().map(|(p, _)| (p.clone(), String::new())).collect();
    target.write_shard(PENDING, &pending).await.with_context(|| context("writing the manifest".into()))?;
    changes.sort_by_key(|(path, change)| (!matches!(change, Change::Write(_)), is_page(path), path.clone()));
    let mut shards = BTreeSet::new();
    for (path, change) in changes {
        shards.insert(shard_of(&path));
        match change {
            Change::Write(sha) => {
                let source = dir.join(&path);
                let bytes = std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
                target.put(&path, bytes).await.with_context(|| context(format!("writing {path}")))?;
                manifest.set(&path, sha);
                report.written += 1;
                if exit_after == Some(report.written) {
                    std::process::exit(137);
                }
            }
            Change::Delete => {
                target.delete(&path).await.with_context(|| context(format!("deleting {path}")))?;
                manifest.remove(&path);
                report.deleted += 1;
            }
            Change::Forget => manifest.remove(&path),
        }
    }
    for shard in shards {
        let files = manifest.shards.get(&shard).cloned().unwrap_or_default();
        target.write_shard(&shard, &files).await.with_context(|| context("writing the manifest".into()))?;
    }
    target
        .delete(&format!("{MANIFEST}/{PENDING}.json"))
        .await
        .with_context(|| context("writing the manifest".into()))?;
    Ok(report)
}

/// One way in which a target differs from the site.
#[derive(Debug, PartialEq, Eq)]
pub enum Difference {
    Missing(String),
    Changed(String),
    Extra(String),
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Missing(p) => write!(f, "missing  {p}"),
            Difference::Changed(p) => write!(f, "changed  {p}"),
            Difference::Extra(p) => write!(f, "extra    {p}"),
        }
    }
}

/// Reads every object of `target` back and compares it with the files of `dir`.
pub async fn verify(dir: &Path, target: &Target) -> Result<Vec<Difference>> {
    let files = local_files(dir)?;
    let existing = target.objects().await.with_context(|| format!("target {}", target.name))?;
    let mut differences = Vec::new();
    for file in &files {
        if !existing.contains_key(&file.path) {
            differences.push(Difference::Missing(file.path.clone()));
            continue;
        }
        let bytes = target
            .store
            .get(&target.key(&file.path))
            .await
            .with_context(|| format!("target {}: reading {}", target.name, file.path))?
            .bytes()
            .await?;
        if hex::encode(Sha256::digest(&bytes)) != file.sha256 {
            differences.push(Difference::Changed(file.path.clone()));
        }
    }
    let wanted: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    differences.extend(existing.keys().filter(|p| !wanted.contains(p.as_str())).map(|p| Difference::Extra(p.clone())));
    Ok(differences)
}

fn is_page(path: &str) -> bool {
    let base = path.strip_suffix(".gz").unwrap_or(path);
    base.ends_with(".html")
}

/// An error with its causes, for people: `object_store`'s errors already carry their sources in
/// their own text, so a cause whose text the message before it contains is left out instead of
/// repeating the store's answer four times.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !last.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        last = part;
    }
    text
}

/// The `Content-Type` (and, for the pre-compressed variants, `Content-Encoding`) of a file of
/// the export, by its name.
pub fn content_type(path: &str) -> (&'static str, Option<&'static str>) {
    let (base, encoding) = match path.strip_suffix(".gz") {
        Some(base) => (base, Some("gzip")),
        None => match path.strip_suffix(".br") {
            Some(base) => (base, Some("br")),
            None => (path, None),
        },
    };
    let extension = base.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let content_type = match extension {
        "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        "atom" => "application/atom+xml; charset=utf-8",
        "ics" => "text/calendar; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "xml" if base.starts_with("cap/") && base != "cap/index.xml" => "application/cap+xml",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "application/octet-stream",
    };
    (content_type, encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_leaves_out_causes_the_message_already_says() {
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("403 Forbidden")
            }
        }
        impl std::error::Error for Inner {}
        #[derive(Debug)]
        struct Outer(Inner);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "list failed: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Outer(Inner)).context("target s3://b/site");
        assert_eq!(error_text(&e), "target s3://b/site: list failed: 403 Forbidden");
        let plain = anyhow::anyhow!("disk full").context("writing x");
        assert_eq!(error_text(&plain), "writing x: disk full");
    }

    #[test]
    fn content_types_follow_the_name() {
        assert_eq!(content_type("kommunen/menden/index.html"), ("text/html; charset=utf-8", None));
        assert_eq!(content_type("kommunen/menden/index.html.gz"), ("text/html; charset=utf-8", Some("gzip")));
        assert_eq!(content_type("feeds/meldungen.atom"), ("application/atom+xml; charset=utf-8", None));
        assert_eq!(content_type("cap/abc.xml"), ("application/cap+xml", None));
        assert_eq!(content_type("sitemap.xml"), ("application/xml", None));
        assert_eq!(content_type("api/v1/services/index.json.gz"), ("application/json", Some("gzip")));
    }

    #[test]
    fn a_town_s_files_share_one_manifest_shard_in_every_language() {
        for path in [
            "kommunen/menden/index.html",
            "en/kommunen/menden/leistungen/x/index.html.gz",
            "kommunen/menden/fahrplan.ics",
            "api/v1/municipalities/menden/index.json",
            "api/v1/municipalities/menden/services/x/alternatives/index.json",
        ] {
            assert_eq!(shard_of(path), "kommunen.menden", "{path}");
        }
        assert_eq!(shard_of("api/v1/services/pass/index.json"), "leistungen.pass");
        assert_eq!(shard_of("meldungen/a-1/index.html"), "meldungen.a-1");
        for rest in ["index.html", "kommunen/index.html", "api/v1/municipalities/index.json", "cap/index.atom"] {
            assert_eq!(shard_of(rest), "site", "{rest}");
        }
    }

    #[test]
    fn targets_are_parsed_or_refused_naming_them() {
        let s3 = S3Options::default();
        for bad in ["ftp://x", "file://relative/path", "s3://", "/no/scheme"] {
            let e = Target::parse(bad, &s3).err().unwrap().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[tokio::test]
    async fn a_directory_target_gets_what_changed_and_loses_what_is_gone() {
        let site = tempfile::tempdir().unwrap();
        let mirror = tempfile::tempdir().unwrap();
        let write = |p: &str, s: &str| {
            let path = site.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, s).unwrap();
        };
        write("index.html", "start");
        write("kommunen/a/index.html", "a");
        write("static/style.css", "css");
        let target = Target::parse(&format!("file://{}", mirror.path().display()), &S3Options::default()).unwrap();
        assert_eq!(publish(site.path(), &target).await.unwrap().0, Report { written: 3, deleted: 0, unchanged: 0 });
        assert_eq!(publish(site.path(), &target).await.unwrap().0, Report { written: 0, deleted: 0, unchanged: 3 });
        write("kommunen/a/index.html", "a2");
        std::fs::remove_file(site.path().join("static/style.css")).unwrap();
        assert_eq!(publish(site.path(), &target).await.unwrap().0, Report { written: 1, deleted: 1, unchanged: 1 });
        assert_eq!(std::fs::read_to_string(mirror.path().join("kommunen/a/index.html")).unwrap(), "a2");
        assert!(!mirror.path().join("static/style.css").exists());
        assert!(verify(site.path(), &target).await.unwrap().is_empty());
        std::fs::write(mirror.path().join("index.html"), "tampered").unwrap();
        std::fs::write(mirror.path().join("extra.html"), "x").unwrap();
        assert_eq!(
            verify(site.path(), &target).await.unwrap(),
            vec![Difference::Changed("index.html".into()), Difference::Extra("extra.html".into())]
        );
    }
}
