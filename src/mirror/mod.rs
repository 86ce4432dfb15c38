//! Keeping mirrors of the public site current while the server runs (`serve --publish-to`).
//!
//! One task owns a static export of the current snapshot in a private directory. After every
//! committed change (a new snapshot) it waits a moment for further changes (the debounce), reads
//! the journal's events since the last round, turns their touches into the parts of the site
//! they change (`site::paths::touched_parts`), renders only those parts again
//! (`export::Export::update`) and writes only the files whose bytes changed to every target
//! (`publish::publish_changes`). A target that fails is retried with a full, incremental
//! publish (`publish::publish`, which compares every file with the target's manifest) after a
//! backoff that doubles from one second to five minutes, with jitter; the live site and
//! `/healthz` do not depend on it. The status of every target is in `App::mirrors`, for the
//! desk and `/healthz`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::domain::ScopeKind;
use crate::domain::events::Touch;
use crate::domain::time;
use crate::export::{self, Export};
use crate::publish::{self, Manifest, Target};
use crate::read::live::{MirrorStatus, Shared};
use crate::read::snapshot::Snapshot;
use crate::site::paths;

/// The longest wait before retrying a failing target.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the task looks for a new snapshot.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// One target and what the task knows about it.
struct Mirror {
    target: Target,
    /// The target's manifest after the last successful publish; `None` until the first one and
    /// after a failure (the next attempt compares everything).
    manifest: Option<Manifest>,
    status: MirrorStatus,
    next_attempt: Option<tokio::time::Instant>,
}

/// Starts the mirror task in the background: it exports the current snapshot, publishes it to
/// every target, and from then on follows the changes.
pub fn start(app: Shared, targets: Vec<Target>, debounce: Duration) {
    let mut mirrors: Vec<Mirror> = targets
        .into_iter()
        .map(|target| Mirror {
            status: MirrorStatus {
                target: target.name.clone(),
                behind_since: Some(time::now_rfc3339()),
                ..Default::default()
            },
            target,
            manifest: None,
            next_attempt: None,
        })
        .collect();
    report(&app, &mirrors);
    tokio::spawn(async move {
        let mut failures = 0;
        loop {
            // A full export into a new private directory; again after anything went wrong.
            match first_export(&app).await {
                Ok((work, export, snap)) => {
                    failures = 0;
                    let outcome = run(&app, export, snap, &mut mirrors, debounce).await;
                    drop(work);
                    if let Err(e) = outcome {
                        record_failure(&mut mirrors, &format!("export: {e:#}"));
                    }
                }
                Err(e) => record_failure(&mut mirrors, &format!("export: {e:#}")),
            }
            report(&app, &mirrors);
            failures += 1;
            tokio::time::sleep(backoff(failures)).await;
        }
    });
}

/// The mirrors' export of the current snapshot, in a new private directory (removed when the
/// returned guard is dropped).
async fn first_export(app: &Shared) -> Result<(tempfile::TempDir, Export, Arc<Snapshot>)> {
    let work = tempfile::Builder::new()
        .prefix("notbetrieb-mirror-")
        .tempdir()
        .context("creating the mirrors' export directory")?;
    let dir = work.path().join("site");
    let snap = app.snapshot();
    let (s, url) = (snap.clone(), app.public_url.clone());
    let export = tokio::task::spawn_blocking(move || export::export_indexed(&s, &url, &dir)).await??.1;
    Ok((work, export, snap))
}

fn record_failure(mirrors: &mut [Mirror], error: &str) {
    tracing::error!(error, "the mirrors' export failed; starting over");
    for m in mirrors {
        m.status.last_error = Some(error.to_string());
        m.status.last_error_at = Some(time::now_rfc3339());
        m.manifest = None;
    }
}

/// Follows the changes until updating the export fails (then the caller starts over).
async fn run(
    app: &Shared,
    mut export: Export,
    mut shown: Arc<Snapshot>,
    mirrors: &mut [Mirror],
    debounce: Duration,
) -> Result<()> {
    let public_url = app.public_url.clone();
    // Every target starts with a full comparison against its manifest.
    for m in mirrors.iter_mut() {
        publish_to(m, &export.dir, None, &shown).await;
    }
    report(app, mirrors);
    let mut day = time::today_utc();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let current = app.snapshot();
        let changed = current.data_version != shown.data_version
            || current.journal_seq != shown.journal_seq
            || current.built_at != shown.built_at && published_set(&current) != published_set(&shown);
        if changed {
            let since = time::now_rfc3339();
            for m in mirrors.iter_mut() {
                m.status.behind_since.get_or_insert_with(|| since.clone());
            }
            report(app, mirrors);
            // Changes that come together are published together.
            tokio::time::sleep(debounce).await;
            let next = app.snapshot();
            // Referrals and the CAP index depend on the date: a new day renders everything.
            let today = time::today_utc();
            let parts = if today != day {
                day = today;
                None
            } else {
                match touches_between(app, &shown, &next).await {
                    Ok(touches) => paths::touched_parts(&shown, &next, &touches),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "reading the journal for the mirrors failed; exporting everything");
                        None
                    }
                }
            };
            let started = std::time::Instant::now();
            let updated = {
                let (snap, url) = (next.clone(), public_url.clone());
                let dir = export.dir.clone();
                tokio::task::spawn_blocking(move || -> Result<(Export, Option<export::Changes>)> {
                    match parts {
                        Some(parts) => {
                            let changes = export.update(&snap, &url, &parts)?;
                            Ok((export, Some(changes)))
                        }
                        None => Ok((export::export_indexed(&snap, &url, &dir)?.1, None)),
                    }
                })
                .await
            };
            let (updated, changes) = updated.context("the export task ended")??;
            export = updated;
            let export_ms = started.elapsed().as_millis() as u64;
            shown = next;
            for m in mirrors.iter_mut() {
                publish_to(m, &export.dir, changes.as_ref(), &shown).await;
            }
            // One line per change with what it cost: bench/mirror.py reads it.
            if let Some(c) = &changes {
                tracing::info!(
                    written = c.written.len(),
                    deleted = c.deleted.len(),
                    unchanged = c.unchanged,
                    export_ms,
                    publish_ms = started.elapsed().as_millis() as u64 - export_ms,
                    "mirrors updated incrementally"
                );
            }
            report(app, mirrors);
            continue;
        }
        // Failed targets, when their time has come.
        let now = tokio::time::Instant::now();
        let mut retried = false;
        for m in mirrors.iter_mut().filter(|m| m.next_attempt.is_some_and(|t| t <= now)) {
            publish_to(m, &export.dir, None, &shown).await;
            retried = true;
        }
        if retried {
            report(app, mirrors);
        }
    }
}

/// The published announcements of a snapshot: one whose scheduled time came has no event of its
/// own at that moment.
fn published_set(snap: &Snapshot) -> BTreeSet<&str> {
    snap.published_announcements().map(|a| a.id.as_str()).collect()
}

/// What changed from `before` to `after`: the touches of the journal's events in between, and
/// of the announcements whose scheduled time came.
async fn touches_between(app: &Shared, before: &Snapshot, after: &Snapshot) -> Result<Vec<Touch>> {
    let mut touches = Vec::new();
    let mut seq = before.journal_seq;
    while seq < after.journal_seq {
        let events = app.store.events_since(seq, 1000).await?;
        // Entries written before typed events are skipped by `events_since`; if none is left,
        // the rest of the range holds no typed event.
        let Some(last) = events.last().map(|e| e.seq) else { break };
        touches.extend(events.iter().filter(|e| e.seq <= after.journal_seq).flat_map(|e| e.event.touches()));
        seq = last;
    }
    let (old, new) = (published_set(before), published_set(after));
    for id in old.symmetric_difference(&new) {
        touches.extend([Touch::Area, Touch::Announcement(id.to_string())]);
        if let Some(a) = after.data.announcements.iter().find(|a| a.id == *id) {
            touches.push(match a.scope_kind {
                ScopeKind::Area => Touch::AllTowns,
                ScopeKind::District => Touch::District(a.scope_ref.clone()),
                ScopeKind::Municipality => Touch::Municipality(a.scope_ref.clone()),
                ScopeKind::Service => Touch::Service(a.scope_ref.clone()),
            });
        }
    }
    Ok(touches)
}

/// Publishes to one target: just `changes` when the target is known to hold the previous export,
/// everything that differs otherwise. Records the outcome in the target's status.
async fn publish_to(m: &mut Mirror, dir: &std::path::Path, changes: Option<&export::Changes>, shown: &Snapshot) {
    if m.next_attempt.is_some_and(|t| t > tokio::time::Instant::now()) {
        // Waiting for its retry, which compares everything anyway.
        return;
    }
    let result = match (changes, m.manifest.as_mut()) {
        (Some(c), Some(manifest)) => {
            publish::publish_changes(dir, &m.target, manifest, &c.written, &c.deleted).await.map(|r| (r, None))
        }
        _ => publish::publish(dir, &m.target).await.map(|(r, manifest)| (r, Some(manifest))),
    };
    let now = time::now_rfc3339();
    match result {
        Ok((report, manifest)) => {
            if let Some(manifest) = manifest {
                m.manifest = Some(manifest);
            }
            m.status.published_version = Some(shown.data_version);
            m.status.last_success_at = Some(now);
            m.status.behind_since = None;
            m.status.last_written = report.written;
            m.status.last_deleted = report.deleted;
            m.status.failures = 0;
            m.status.next_attempt_at = None;
            m.next_attempt = None;
            if report.written > 0 || report.deleted > 0 {
                tracing::info!(target = %m.target.name, written = report.written, deleted = report.deleted, "mirror updated");
            }
        }
        Err(e) => {
            m.manifest = None;
            m.status.failures += 1;
            let wait = backoff(m.status.failures);
            m.next_attempt = Some(tokio::time::Instant::now() + wait);
            m.status.next_attempt_at = Some(time::format_rfc3339(
                chrono::Utc::now() + chrono::Duration::milliseconds(wait.as_millis() as i64),
            ));
            m.status.last_error = Some(publish::error_text(&e));
            m.status.last_error_at = Some(now);
            m.status.behind_since.get_or_insert_with(time::now_rfc3339);
            tracing::warn!(target = %m.target.name, error = %publish::error_text(&e), retry_in_ms = wait.as_millis() as u64, "publishing to the mirror failed");
        }
    }
}

/// One second, doubling with every failure up to five minutes, with jitter.
fn backoff(failures: u32) -> Duration {
    crate::domain::time::backoff(Duration::from_secs(1), failures, MAX_BACKOFF)
}

fn report(app: &Shared, mirrors: &[Mirror]) {
    *app.mirrors.lock().unwrap_or_else(|e| e.into_inner()) = mirrors.iter().map(|m| m.status.clone()).collect();
}

/// Parses the `--publish-to` targets, so that a wrong one stops the server at start.
pub fn targets(specs: &[String], s3: &publish::S3Options) -> Result<Vec<Target>> {
    specs.iter().map(|spec| Target::parse(spec, s3)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes_with_jitter() {
        for (failures, base) in [(1, 1), (2, 2), (3, 4), (10, 300), (40, 300)] {
            let wait = backoff(failures);
            let base = Duration::from_secs(base);
            assert!(wait >= base && wait <= base.mul_f64(1.25), "{failures}: {wait:?}");
        }
    }
}
