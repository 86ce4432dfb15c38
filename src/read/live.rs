//! The live public state: the current snapshot, swapped atomically after every committed
//! change, and the store it is rebuilt from. Shared by the HTTP handlers, the write operations
//! and the command line.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::read::snapshot::Snapshot;
use crate::store::Store;

pub struct App {
    pub snapshot: ArcSwap<Snapshot>,
    pub store: Store,
    /// Absolute base URL for feeds and links that leave the site, without trailing slash.
    pub public_url: String,
    /// Serialises snapshot rebuilds so an older one never replaces a newer one.
    refresh_lock: tokio::sync::Mutex<()>,
}

pub type Shared = Arc<App>;

impl App {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Loads the public state from the database.
    pub async fn load(store: Store, public_url: String) -> anyhow::Result<App> {
        let mut snap =
            Snapshot::build(store.load_dataset().await?, store.changed_at().await?, store.data_version().await?);
        snap.places_version = store.places_version().await?;
        Ok(App { snapshot: ArcSwap::from_pointee(snap), store, public_url, refresh_lock: tokio::sync::Mutex::new(()) })
    }

    /// Reloads the public state from the database and swaps it in.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.refresh_lock.lock().await;
        let started = std::time::Instant::now();
        let version = self.store.data_version().await?;
        let places_version = self.store.places_version().await?;
        let changed_at = self.store.changed_at().await?;
        let current = self.snapshot();
        // A status change reloads only what changes often; towns and catalogue stay shared.
        let reuse = places_version == current.places_version;
        let mut snap = if reuse {
            let data = self.store.load_changing(&current.data).await?;
            Snapshot::build_with_places(data, changed_at, version, current.places.clone())
        } else {
            Snapshot::build(self.store.load_dataset().await?, changed_at, version)
        };
        snap.places_version = places_version;
        self.snapshot.store(Arc::new(snap));
        tracing::info!(
            version,
            places_reused = reuse,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot rebuilt"
        );
        Ok(())
    }
}
