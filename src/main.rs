//! notbetrieb: tells citizens, per town and per service, what works while their
//! administration's IT is down, and where else to go.

mod api;
mod demo;
mod domain;
mod feeds;
mod i18n;
mod import;
mod render;
mod search;
mod snapshot;
mod store;
mod time;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "notbetrieb", version, about = "Status of municipal services during an IT outage: public site, API and feeds.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DatabaseArgs {
    /// Database URL: sqlite:PATH (default sqlite:notbetrieb.sqlite) or postgres://USER@HOST/DB.
    #[arg(long = "database", env = "NOTBETRIEB_DATABASE_URL", value_name = "URL")]
    database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server (public site, API, feeds).
    Serve {
        /// Address and port to listen on; port 0 picks a free port (the chosen address is printed).
        #[arg(long, env = "NOTBETRIEB_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
        listen: SocketAddr,
        #[command(flatten)]
        db: DatabaseArgs,
        /// Seed a built-in demo into the database if it is empty; without --database a fresh
        /// temporary database is used.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "suedwestfalen", value_name = "DEMO")]
        demo: Option<demo::Demo>,
        /// The public address of the site, for absolute links in feeds (default: http://LISTEN).
        #[arg(long, env = "NOTBETRIEB_PUBLIC_URL", value_name = "URL")]
        public_url: Option<String>,
        /// How often to look for changes written by other processes, in milliseconds.
        #[arg(long, default_value_t = 500, value_name = "MS")]
        poll_ms: u64,
    },
    /// Load towns, districts, services, offices, referrals, postal codes or statements from CSV
    /// or JSON files, all or nothing.
    Import {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Files to import; the kind is taken from the file name (municipalities.csv, services.json, …).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// What the files hold, when their names do not say it.
        #[arg(long, value_enum, value_name = "KIND")]
        kind: Option<import::Kind>,
    },
}

fn database_url(db: &DatabaseArgs) -> String {
    db.database.clone().unwrap_or_else(|| "sqlite:notbetrieb.sqlite".into())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { listen, db, demo, public_url, poll_ms } => serve(listen, db, demo, public_url, poll_ms).await,
        Command::Import { db, files, kind } => {
            let store = store::Store::connect(&database_url(&db)).await?;
            import::run(&store, &files, kind).await
        }
    }
}

async fn serve(
    listen: SocketAddr,
    db: DatabaseArgs,
    demo: Option<demo::Demo>,
    public_url: Option<String>,
    poll_ms: u64,
) -> Result<()> {
    let started = std::time::Instant::now();
    // A demo without a database gets a temporary one that lives as long as the server.
    let mut _temp_dir = None;
    let url = match (&db.database, demo) {
        (None, Some(_)) => {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite:{}", dir.path().join("demo.sqlite").display());
            _temp_dir = Some(dir);
            url
        }
        _ => database_url(&db),
    };
    let store = store::Store::connect(&url).await?;
    if let Some(demo) = demo {
        if store.is_empty().await? {
            demo::seed(&store, demo).await.context("seeding the demo")?;
            tracing::info!(?demo, "demo data seeded");
        } else {
            tracing::info!("database already holds data; the demo is not seeded again");
        }
    }

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let public_url = public_url.unwrap_or_else(|| format!("http://{local}")).trim_end_matches('/').to_string();
    let data = store.load_dataset().await?;
    let snap = snapshot::Snapshot::build(data, store.changed_at().await?, store.data_version().await?);
    let app = Arc::new(web::App { snapshot: ArcSwap::from_pointee(snap), store, public_url });

    // Changes written by other processes (an import, another instance) become visible within poll_ms.
    let watcher = app.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(poll_ms.max(50)));
        loop {
            interval.tick().await;
            match watcher.store.data_version().await {
                Ok(v) if v != watcher.snapshot().data_version => {
                    if let Err(e) = watcher.refresh().await {
                        tracing::error!(error = %e, "refreshing the snapshot failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the data version"),
            }
        }
    });

    println!("notbetrieb listening on http://{local}");
    if demo.is_some() {
        println!("demo ready in {} ms", started.elapsed().as_millis());
    }
    axum::serve(listener, web::router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
