//! The live public state: the current snapshot, swapped atomically after every committed
//! change, and the store it is rebuilt from. Shared by the HTTP handlers, the write operations
//! and the command line.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::read::snapshot::{Snapshot, cpu_bound};
use crate::store::Store;

pub struct App {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub store: Store,
    /// Absolute base URL for feeds and links that leave the site, without trailing slash.
    pub public_url: String,
    /// Serialises snapshot rebuilds so an older one never replaces a newer one.
    refresh_lock: Arc<tokio::sync::Mutex<()>>,
    /// Why the snapshot is behind the database (a rebuild after a committed write failed and is
    /// being retried); `None` when healthy. `/healthz` answers 503 while it is set.
    stale: Arc<std::sync::Mutex<Option<String>>>,
    /// The mirrors `serve --publish-to` keeps current, as the mirror task last saw them.
    pub mirrors: Arc<std::sync::Mutex<Vec<MirrorStatus>>>,
    /// How notifications stand, as the notifier last saw them.
    pub notifications: Arc<std::sync::Mutex<NotifyStatus>>,
}

/// Notifications at a glance, for the desk and `/healthz`: whether mail can go out at all, and
/// how many messages wait in the outbox (pending or retrying), per channel.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NotifyStatus {
    pub smtp_configured: bool,
    /// `serve --webhook-allow-private`: webhooks may target private and loopback addresses.
    #[serde(skip)]
    pub allow_private_webhooks: bool,
    pub waiting: std::collections::BTreeMap<String, i64>,
}

/// How one mirror of the public site stands (`serve --publish-to`), for the desk and `/healthz`.
/// Times are RFC 3339.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MirrorStatus {
    /// As given: `file:///srv/notfall`, `s3://bucket/prefix`.
    pub target: String,
    /// The data version the mirror shows, once a publish to it succeeded.
    pub published_version: Option<i64>,
    pub last_success_at: Option<String>,
    /// Since when the mirror is behind the live site; `None` when it is current.
    pub behind_since: Option<String>,
    /// Files written and deleted by the last successful publish.
    pub last_written: usize,
    pub last_deleted: usize,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Failures in a row; each waits longer before the next attempt.
    pub failures: u32,
    pub next_attempt_at: Option<String>,
}

pub type Shared = Arc<App>;

/// Test hook, debug builds only: while the file named by this variable exists, every snapshot
/// rebuild fails (as a transient database error would), so tests can show that a committed
/// write is still reported as done and `/healthz` reports the stale snapshot.
const FAIL_REBUILD_WHILE_EXISTS: &str = "NOTBETRIEB_TEST_FAIL_REBUILD_WHILE_EXISTS";

/// Reloads the public state from the database and swaps it in.
async fn rebuild(store: &Store, holder: &ArcSwap<Snapshot>, lock: &tokio::sync::Mutex<()>) -> anyhow::Result<()> {
    let _one_at_a_time = lock.lock().await;
    if cfg!(debug_assertions)
        && let Some(path) = std::env::var_os(FAIL_REBUILD_WHILE_EXISTS)
        && std::path::Path::new(&path).exists()
    {
        anyhow::bail!("snapshot rebuild failed on purpose ({FAIL_REBUILD_WHILE_EXISTS} test hook)");
    }
    let started = std::time::Instant::now();
    let journal_seq = store.journal_seq().await?;
    let version = store.data_version().await?;
    let places_version = store.places_version().await?;
    let changed_at = store.changed_at().await?;
    let current = holder.load_full();
    // A status change reloads only what changes often; towns and catalogue stay shared.
    let reuse = places_version == current.places_version;
    let (data, places) = if reuse {
        (store.load_changing(&current.data).await?, Some(current.places.clone()))
    } else {
        (store.load_dataset().await?, None)
    };
    let mut snap = cpu_bound(|| Snapshot::build_from(data, changed_at, version, places, &current.markdown));
    snap.places_version = places_version;
    snap.journal_seq = journal_seq;
    holder.store(Arc::new(snap));
    tracing::info!(
        version,
        places_reused = reuse,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot rebuilt"
    );
    Ok(())
}

impl App {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Loads the public state from the database.
    pub async fn load(store: Store, public_url: String) -> anyhow::Result<App> {
        let journal_seq = store.journal_seq().await?;
        let mut snap =
            Snapshot::build(store.load_dataset().await?, store.changed_at().await?, store.data_version().await?);
        snap.places_version = store.places_version().await?;
        snap.journal_seq = journal_seq;
        Ok(App {
            snapshot: Arc::new(ArcSwap::from_pointee(snap)),
            store,
            public_url,
            refresh_lock: Arc::new(tokio::sync::Mutex::new(())),
            stale: Arc::new(std::sync::Mutex::new(None)),
            mirrors: Arc::new(std::sync::Mutex::new(Vec::new())),
            notifications: Arc::new(std::sync::Mutex::new(NotifyStatus::default())),
        })
    }

    /// Reloads the public state from the database and swaps it in.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        match rebuild(&self.store, &self.snapshot, &self.refresh_lock).await {
            Ok(()) => {
                *self.stale.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The mirrors' status, as the mirror task last saw them.
    pub fn mirror_status(&self) -> Vec<MirrorStatus> {
        self.mirrors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn notify_status(&self) -> NotifyStatus {
        self.notifications.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the public snapshot is behind the database, if it is.
    pub fn stale_reason(&self) -> Option<String> {
        self.stale.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a committed write: rebuilds the snapshot. A failure does not undo the write: it is
    /// logged, `/healthz` reports it, and the rebuild is retried in the background with backoff
    /// (0.1 s doubling up to 10 s) until it succeeds.
    pub async fn refresh_after_commit(&self) {
        let Err(e) = self.refresh().await else { return };
        tracing::error!(error = %e, "rebuilding the snapshot after a committed write failed; retrying in the background");
        let reason = format!("the public pages are behind the database: rebuilding the snapshot failed ({e:#})");
        let already_retrying = self.stale.lock().unwrap_or_else(|p| p.into_inner()).replace(reason).is_some();
        if already_retrying {
            return;
        }
        let (store, holder, lock, stale) =
            (self.store.clone(), self.snapshot.clone(), self.refresh_lock.clone(), self.stale.clone());
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_millis(100);
            loop {
                tokio::time::sleep(wait).await;
                match rebuild(&store, &holder, &lock).await {
                    Ok(()) => {
                        *stale.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        tracing::info!("snapshot rebuilt after earlier failures; healthy again");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "rebuilding the snapshot failed again");
                        *stale.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                            "the public pages are behind the database: rebuilding the snapshot failed ({e:#})"
                        ));
                        wait = (wait * 2).min(std::time::Duration::from_secs(10));
                    }
                }
            }
        });
    }
}
