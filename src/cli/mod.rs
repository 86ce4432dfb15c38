//! The command line: parses arguments and runs serve, import, export, user, token, journal and demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::domain::authz::Principal;
use crate::domain::{recovery, time};
use crate::http::desk::board;
use crate::read::live::App;
use crate::read::snapshot;
use crate::store::accounts;
use crate::store::journal;
use crate::{demo, http, i18n, import, mirror, notify, publish, store, write};

#[derive(Parser)]
#[command(
    name = "notbetrieb",
    version,
    about = "Status of municipal services during an IT outage: public site, API and feeds."
)]
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
        /// A directory of further message catalogues (`<code>.toml`, each with a `[language]`
        /// table), served under `/<code>/` next to the built-in languages; keys they lack fall
        /// back to German.
        #[arg(long, env = "NOTBETRIEB_MESSAGES_DIR", value_name = "DIR")]
        messages_dir: Option<PathBuf>,
        /// A reverse proxy in front of the server (address or network, e.g. 127.0.0.1/32 or
        /// 10.0.0.0/8); repeat for more, or separate with commas in the variable. Only from these
        /// peers are X-Forwarded-For and Forwarded believed for the client's address (the
        /// right-most address in them that is not a trusted proxy); from any other peer, and
        /// without this option, the peer's own address counts.
        #[arg(
            long = "trusted-proxy",
            env = "NOTBETRIEB_TRUSTED_PROXIES",
            value_name = "CIDR",
            value_delimiter = ',',
            value_parser = parse_network
        )]
        trusted_proxies: Vec<ipnet::IpNet>,
        /// Keep a mirror of the public site current: `file:///absolute/path` or
        /// `s3://bucket/prefix`; repeat for more. Published in full at start, then after every
        /// change only the files it changed; a failing mirror is retried with backoff.
        #[arg(long = "publish-to", value_name = "TARGET")]
        publish_to: Vec<String>,
        /// How long to wait after a change for further ones before publishing, in milliseconds.
        #[arg(long, default_value_t = 500, value_name = "MS")]
        publish_debounce_ms: u64,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        mail: MailArgs,
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
    /// Manage accounts: add prints a one-time setup link (never a password).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API tokens for the write API: add prints the secret once.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The tamper-evident journal of every change.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Write the whole public site as static files (HTML, JSON API, feeds, sitemap), every
    /// language, for any web server or object store; replaces DIR only once complete.
    Export {
        #[command(flatten)]
        db: DatabaseArgs,
        /// The directory to write; an existing one is replaced at the end.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The public address of the copy, for absolute links in feeds and the sitemap.
        #[arg(long, env = "NOTBETRIEB_PUBLIC_URL", default_value = "http://127.0.0.1:8080", value_name = "URL")]
        public_url: String,
        /// Further message catalogues, as for serve: their languages are exported too.
        #[arg(long, env = "NOTBETRIEB_MESSAGES_DIR", value_name = "DIR")]
        messages_dir: Option<PathBuf>,
    },
    /// The built-in demo's scripted scenario.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Mirror an exported site to directories and S3-compatible storage, writing only what
    /// changed (`0 written, 0 deleted` when nothing did); with --verify, compare instead.
    Publish {
        /// The database to export and publish (the default), unless --from names an export.
        #[command(flatten)]
        db: DatabaseArgs,
        /// Publish this directory (written by `notbetrieb export`) instead of exporting now.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// The public address of the copy, as for export.
        #[arg(long, env = "NOTBETRIEB_PUBLIC_URL", default_value = "http://127.0.0.1:8080", value_name = "URL")]
        public_url: String,
        /// `file:///absolute/path` or `s3://bucket/prefix`; repeat for more targets.
        #[arg(long = "to", value_name = "TARGET", required = true)]
        targets: Vec<String>,
        /// Read every object of each target back and list what differs (exit code 1 if anything).
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        s3: S3Args,
    },
}

/// Where S3 targets are; credentials come from the standard `AWS_*` environment variables.
#[derive(Args)]
struct S3Args {
    /// S3 endpoint for stores other than AWS (a plain http:// endpoint is allowed when given).
    #[arg(long, env = "NOTBETRIEB_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION / AWS_DEFAULT_REGION).
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
}

impl S3Args {
    fn options(self) -> publish::S3Options {
        publish::S3Options { endpoint: self.s3_endpoint, region: self.s3_region }
    }
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Walk the South Westphalia demo's recovery the next steps forward (gated and journaled as
    /// the CLI); a running server shows them within its poll interval.
    Advance {
        #[command(flatten)]
        db: DatabaseArgs,
        /// How many steps of the script to take.
        #[arg(long, default_value_t = 1, value_name = "N")]
        steps: usize,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account and print its one-time setup link (password and second factor).
    Add {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Sign-in name: 2–64 characters a-z, 0-9, '.', '-', '_'.
        username: String,
        /// admin, operator, editor or viewer.
        #[arg(long, value_parser = ["admin", "operator", "editor", "viewer"])]
        role: String,
        /// AGS of a town (8 digits) or district (5 digits) an editor may change; repeat for more.
        #[arg(long = "scope", value_name = "AGS")]
        scopes: Vec<String>,
        /// Full name shown in the journal and the desk.
        #[arg(long, default_value = "")]
        name: String,
        /// The site's public address, for the link.
        #[arg(long, env = "NOTBETRIEB_PUBLIC_URL", default_value = "http://127.0.0.1:8080", value_name = "URL")]
        public_url: String,
    },
    /// Issue a new setup link (lost password or second factor); ends the user's sessions.
    Reset {
        #[command(flatten)]
        db: DatabaseArgs,
        username: String,
        #[arg(long, env = "NOTBETRIEB_PUBLIC_URL", default_value = "http://127.0.0.1:8080", value_name = "URL")]
        public_url: String,
    },
    /// List accounts with role and scope.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a user and print its secret (shown only this once).
    Add {
        #[command(flatten)]
        db: DatabaseArgs,
        /// The user the token acts for.
        #[arg(long, value_name = "NAME")]
        user: String,
        /// A name to recognise the token by, shown in the journal as token:NAME.
        #[arg(long, value_name = "TOKENNAME")]
        name: String,
        /// The token's role (default: the user's); it never acts with more than its user has.
        #[arg(long, value_parser = ["admin", "operator", "editor", "viewer"])]
        role: Option<String>,
        /// AGS a token with the editor role may change (default: the user's scope); repeat for more.
        #[arg(long = "scope", value_name = "AGS")]
        scopes: Vec<String>,
        /// Expiry time, RFC 3339 (default: none).
        #[arg(long, value_name = "TIME")]
        expires: Option<String>,
    },
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Check the hash chain; names the first entry that was altered, removed or reordered.
    Verify {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Write the whole journal to standard output.
    Export {
        #[command(flatten)]
        db: DatabaseArgs,
        #[arg(long, value_parser = ["csv", "json"], default_value = "json")]
        format: String,
    },
    /// Print the typed events after entry SINCE in order, one JSON object a line (what the
    /// outbox and the export consume); entries from before typed events are left out.
    Events {
        #[command(flatten)]
        db: DatabaseArgs,
        #[arg(long, default_value_t = 0)]
        since: i64,
        #[arg(long, default_value_t = 100_000)]
        limit: i64,
    },
}

/// A network in CIDR notation, or a single address (as /32 or /128).
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| "not an address or network in CIDR notation (like 10.0.0.0/8 or 2001:db8::/32)".to_string())
}

fn database_url(db: &DatabaseArgs) -> String {
    db.database.clone().unwrap_or_else(|| "sqlite:notbetrieb.sqlite".into())
}

/// The program: parses the command line, runs the command, exits non-zero with the error.
pub async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            db,
            demo,
            public_url,
            poll_ms,
            messages_dir,
            trusted_proxies,
            publish_to,
            publish_debounce_ms,
            s3,
            mail,
        } => {
            if let Some(dir) = messages_dir {
                i18n::load_extra(&dir)?;
            }
            let proxies = http::client::TrustedProxies(Arc::new(trusted_proxies));
            // A wrong target stops the server at start, before anything is served.
            let mirrors = mirror::targets(&publish_to, &s3.options())?;
            let publishing = Publishing { targets: mirrors, debounce: Duration::from_millis(publish_debounce_ms) };
            // A wrong SMTP address or sender stops the server at start too.
            let notifying = mail.settings()?;
            serve(listen, db, demo, public_url, poll_ms, proxies, Background { publishing, notifying }).await
        }
        Command::Import { db, files, kind } => {
            let store = store::Store::connect(&database_url(&db)).await?;
            import::run(&store, &files, kind).await
        }
        Command::User { command } => user_command(command).await,
        Command::Token { command } => token_command(command).await,
        Command::Journal { command } => journal_command(command).await,
        Command::Export { db, out, public_url, messages_dir } => {
            if let Some(dir) = messages_dir {
                i18n::load_extra(&dir)?;
            }
            export_command(&db, &out, &public_url).await
        }
        Command::Demo { command: DemoCommand::Advance { db, steps } } => demo_advance(&db, steps).await,
        Command::Publish { db, from, public_url, targets, verify, s3 } => {
            let s3 = s3.options();
            match from {
                Some(dir) => publish_command(&dir, &targets, verify, &s3).await,
                None => {
                    // Exported into a temporary directory, published from there, then removed.
                    let work = tempfile::tempdir()?;
                    let dir = work.path().join("site");
                    export_command(&db, &dir, &public_url).await?;
                    publish_command(&dir, &targets, verify, &s3).await
                }
            }
        }
    }
}

/// Publishes (or verifies) every target in turn; one failing target does not stop the others,
/// but makes the exit code non-zero.
async fn publish_command(
    from: &std::path::Path,
    targets: &[String],
    verify: bool,
    s3: &publish::S3Options,
) -> Result<()> {
    if !from.is_dir() {
        anyhow::bail!("--from {}: not a directory (write one with `notbetrieb export`)", from.display());
    }
    let (mut failed, mut differ) = (0, 0);
    for spec in targets {
        let result = async {
            let target = publish::Target::parse(spec, s3)?;
            if verify {
                let differences = publish::verify(from, &target).await?;
                for d in &differences {
                    println!("{spec}: {d}");
                }
                println!("{spec}: {} differences", differences.len());
                differ += differences.len();
            } else {
                let (report, _) = publish::publish(from, &target).await?;
                println!(
                    "{spec}: {} written, {} deleted, {} unchanged",
                    report.written, report.deleted, report.unchanged
                );
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("error: {}", publish::error_text(&e));
            failed += 1;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} targets failed", targets.len());
    }
    if differ > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn cli_app(db: &DatabaseArgs, public_url: &str) -> Result<App> {
    let store = store::Store::connect(&database_url(db)).await?;
    App::load(store, public_url.trim_end_matches('/').to_string()).await
}

fn write_error(e: write::WriteError) -> anyhow::Error {
    match e {
        write::WriteError::Internal(e) => e,
        write::WriteError::Invalid { field, message } => anyhow::anyhow!("{field}: {}", i18n::t("en", message)),
        other => anyhow::anyhow!("{other:?}"),
    }
}

async fn export_command(db: &DatabaseArgs, out: &std::path::Path, public_url: &str) -> Result<()> {
    let app = cli_app(db, public_url).await?;
    let snap = app.snapshot();
    let started = std::time::Instant::now();
    let public_url = app.public_url.clone();
    let out_dir = out.to_path_buf();
    let summary = tokio::task::spawn_blocking(move || crate::export::export(&snap, &public_url, &out_dir)).await??;
    println!(
        "exported {} files ({} bytes) to {} in {:.1} s",
        summary.files,
        summary.bytes,
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn user_command(command: UserCommand) -> Result<()> {
    let cli = Principal::cli();
    match command {
        UserCommand::Add { db, username, role, scopes, name, public_url } => {
            let app = cli_app(&db, &public_url).await?;
            let input = write::UserInput { username: username.clone(), display_name: name, role, scopes };
            let (_, token) = write::create_user(&app, &cli, &input).await.map_err(write_error)?;
            println!("created {username}; one-time setup link (valid 3 days):");
            println!("{}/intern/einrichten/{token}", app.public_url);
        }
        UserCommand::Reset { db, username, public_url } => {
            let app = cli_app(&db, &public_url).await?;
            let mut c = app.store.begin().await?;
            let user =
                accounts::user_by_name(&mut c, &username).await?.with_context(|| format!("no user {username}"))?;
            drop(c);
            let token = write::reset_user(&app, &cli, user.id).await.map_err(write_error)?;
            println!("new one-time setup link for {username} (valid 3 days):");
            println!("{}/intern/einrichten/{token}", app.public_url);
        }
        UserCommand::List { db } => {
            let store = store::Store::connect(&database_url(&db)).await?;
            let mut c = store.read().await?;
            for u in accounts::all_users(&mut c).await? {
                let state = if u.disabled {
                    "disabled"
                } else if u.password_hash.is_empty() {
                    "setup pending"
                } else {
                    "active"
                };
                println!("{}\t{}\t{}\t{}", u.username, u.role.as_str(), u.scopes.join(","), state);
            }
        }
    }
    Ok(())
}

async fn token_command(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Add { db, user, name, role, scopes, expires } => {
            let app = cli_app(&db, "").await?;
            let mut c = app.store.begin().await?;
            let owner = accounts::user_by_name(&mut c, &user).await?.with_context(|| format!("no user {user}"))?;
            drop(c);
            let input = write::TokenInput {
                name,
                role: role.unwrap_or_else(|| owner.role.as_str().to_string()),
                scopes: if scopes.is_empty() { owner.scopes.clone() } else { scopes },
                user_id: Some(owner.id),
                expires_at: expires.unwrap_or_default(),
            };
            let (_, secret) = write::create_token(&app, &Principal::cli(), &input).await.map_err(write_error)?;
            eprintln!("token created; its secret (shown only now) follows on standard output");
            println!("{secret}");
        }
    }
    Ok(())
}

async fn journal_command(command: JournalCommand) -> Result<()> {
    match command {
        JournalCommand::Verify { db } => {
            let store = store::Store::connect(&database_url(&db)).await?;
            let mut c = store.read().await?;
            let checked = journal::verify_stored(&mut c).await?;
            match checked.verdict {
                Ok(()) => {
                    println!("journal intact: {} entries, head {}", checked.entries, checked.head_hash);
                    Ok(())
                }
                Err(problem) => anyhow::bail!("journal damaged: {problem}"),
            }
        }
        JournalCommand::Export { db, format } => {
            let store = store::Store::connect(&database_url(&db)).await?;
            let mut c = store.read().await?;
            let entries = journal::all(&mut c).await?;
            print!("{}", journal::export(&entries, &format)?);
            Ok(())
        }
        JournalCommand::Events { db, since, limit } => {
            let store = store::Store::connect(&database_url(&db)).await?;
            let mut c = store.read().await?;
            for e in journal::events_since(&mut c, since, limit).await? {
                let line = serde_json::json!({
                    "seq": e.seq, "at": e.at, "author": e.author, "kind": e.event.kind(), "scope": e.event.scope(),
                    "touches": e.event.touches(), "event": e.event,
                });
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// One move of the demo's scripted recovery.
enum Move {
    /// A procedure passes its next gate (or any step) with this evidence.
    Step { procedure: &'static str, to: recovery::Stage, evidence: &'static str },
    /// A procedure is rolled out to every town of these districts (AGS), next step expected in some days.
    Rollout {
        procedure: &'static str,
        districts: &'static [&'static str],
        to: recovery::Rollout,
        expected_in_days: i64,
    },
}

/// The scenario `demo advance` walks, a step per call: later steps rely on earlier ones, so
/// every one passes the gates. A move counts as done once the state has reached it.
const SCRIPT: [Move; 11] = {
    use recovery::{Rollout as R, Stage as S};
    [
        Move::Step {
            procedure: "fahrerlaubnis",
            to: S::Cleared,
            evidence: "Forensische Prüfung ohne Hinweise auf Kompromittierung abgeschlossen",
        },
        Move::Step {
            procedure: "fernzugang",
            to: S::Released,
            evidence: "Fernzugang nur noch mit zweitem Faktor; Abnahme durch den Krisenstab",
        },
        Move::Rollout { procedure: "kfz", districts: &["05974"], to: R::Pilot, expected_in_days: 7 },
        Move::Rollout { procedure: "meldewesen", districts: &["05962"], to: R::Pilot, expected_in_days: 10 },
        Move::Step {
            procedure: "fahrerlaubnis",
            to: S::Hardened,
            evidence: "Neue Sicherheitsrichtlinien umgesetzt und abgenommen",
        },
        Move::Step {
            procedure: "fahrerlaubnis",
            to: S::Released,
            evidence: "Freigabe für den Basisbetrieb durch den Krisenstab",
        },
        Move::Rollout { procedure: "fahrerlaubnis", districts: &["05958"], to: R::Pilot, expected_in_days: 10 },
        Move::Step {
            procedure: "personenstand",
            to: S::Normal,
            evidence: "Alle Funktionen wiederhergestellt, Altregister angebunden",
        },
        Move::Rollout { procedure: "personenstand", districts: &["05958"], to: R::Normal, expected_in_days: 0 },
        Move::Step {
            procedure: "gewerbe",
            to: S::Cleared,
            evidence: "Forensische Prüfung ohne Hinweise auf Kompromittierung abgeschlossen",
        },
        Move::Rollout { procedure: "meldewesen", districts: &["05962"], to: R::Basic, expected_in_days: 21 },
    ]
};

impl Move {
    fn done(&self, snap: &snapshot::Snapshot) -> bool {
        match self {
            Move::Step { procedure, to, .. } => snap.procedure(procedure).is_some_and(|p| p.stage >= *to),
            Move::Rollout { procedure, districts, to, .. } => snap.procedure(procedure).is_some_and(|p| {
                districts
                    .iter()
                    .flat_map(|d| snap.towns_of_district(d))
                    .all(|m| board::effective(snap, p, &m.ags).is_some_and(|r| r >= *to))
            }),
        }
    }
}

/// A refused move, with every unmet gate condition in words.
fn refused(snap: &snapshot::Snapshot, e: write::WriteError) -> anyhow::Error {
    match e {
        e @ (write::WriteError::VersionConflict { .. }
        | write::WriteError::GateRefused { .. }
        | write::WriteError::Cycle { .. }) => {
            anyhow::anyhow!("refused: {}", board::explain("en", snap, &e.current().unwrap_or_default()).join(" "))
        }
        other => write_error(other),
    }
}

/// Takes the next `steps` moves of the demo script through `writes`, as the CLI.
async fn demo_advance(db: &DatabaseArgs, steps: usize) -> Result<()> {
    let app = cli_app(db, "").await?;
    let cli = Principal::cli();
    for _ in 0..steps {
        let snap = app.snapshot();
        let Some((n, next)) = SCRIPT.iter().enumerate().find(|(_, m)| !m.done(&snap)) else {
            println!("the demo scenario is complete: nothing left to advance");
            return Ok(());
        };
        let name = |slug: &str| snap.procedure(slug).map_or_else(|| slug.to_string(), |p| p.name.clone());
        match next {
            Move::Step { procedure, to, evidence } => {
                let from =
                    snap.procedure(procedure).with_context(|| format!("the demo has no procedure {procedure}"))?.stage;
                write::step_procedure(&app, &cli, procedure, to.as_str(), evidence)
                    .await
                    .map_err(|e| refused(&snap, e))?;
                println!(
                    "step {}/{}: {} ({procedure}) {} -> {}",
                    n + 1,
                    SCRIPT.len(),
                    name(procedure),
                    from.as_str(),
                    to.as_str()
                );
            }
            Move::Rollout { procedure, districts, to, expected_in_days } => {
                let slugs: Vec<String> =
                    districts.iter().filter_map(|d| snap.district(d)).map(|d| d.slug.clone()).collect();
                let expected_date = if *expected_in_days > 0 {
                    (time::today_utc() + chrono::Duration::days(*expected_in_days)).format("%Y-%m-%d").to_string()
                } else {
                    String::new()
                };
                let input = write::RolloutInput {
                    procedure: procedure.to_string(),
                    stage: to.as_str().into(),
                    municipalities: Vec::new(),
                    districts: slugs.clone(),
                    expected_date,
                };
                let towns = write::set_rollout(&app, &cli, &input).await.map_err(|e| refused(&snap, e))?;
                println!(
                    "step {}/{}: {} ({procedure}) rolled out to {} ({towns} towns): {}",
                    n + 1,
                    SCRIPT.len(),
                    name(procedure),
                    slugs.join(", "),
                    to.as_str()
                );
            }
        }
    }
    if SCRIPT.iter().all(|m| m.done(&app.snapshot())) {
        println!("the demo scenario is complete: nothing left to advance");
    }
    Ok(())
}

/// How `serve` sends mail.
#[derive(clap::Args)]
struct MailArgs {
    /// The SMTP server for notifications: `smtp://host:port` (plain, a local relay),
    /// `smtp://host:port?tls=required` (STARTTLS), `smtps://host:port` (TLS), with
    /// `user:password@` if it needs them. Without it mails wait in the outbox (the desk shows them).
    #[arg(long, env = "NOTBETRIEB_SMTP_URL", value_name = "URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// The SMTP password from a file instead of the URL (the user stays in the URL).
    #[arg(long, env = "NOTBETRIEB_SMTP_PASSWORD_FILE", value_name = "FILE")]
    smtp_password_file: Option<PathBuf>,
    /// The sender of every mail.
    #[arg(long, env = "NOTBETRIEB_MAIL_FROM", default_value = "notbetrieb@localhost", value_name = "ADDRESS")]
    mail_from: String,
    /// Changes that arrive within this many seconds of the first go out as one mail per subscription.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    notify_window_s: u64,
    /// Let webhooks target private, loopback and link-local addresses (refused otherwise).
    #[arg(long)]
    webhook_allow_private: bool,
}

impl MailArgs {
    fn settings(&self) -> Result<notify::Settings> {
        let mailer = match &self.smtp_url {
            Some(url) => Some(notify::mail::Mailer::new(url, self.smtp_password_file.as_deref(), &self.mail_from)?),
            None => None,
        };
        Ok(notify::Settings {
            mailer,
            window: Duration::from_secs(self.notify_window_s),
            allow_private_webhooks: self.webhook_allow_private,
        })
    }
}

/// What `serve` runs beside the web server: the mirrors and the notifications.
struct Background {
    publishing: Publishing,
    notifying: notify::Settings,
}

/// The mirrors `serve` keeps current.
struct Publishing {
    targets: Vec<publish::Target>,
    debounce: Duration,
}

async fn serve(
    listen: SocketAddr,
    db: DatabaseArgs,
    demo: Option<demo::Demo>,
    public_url: Option<String>,
    poll_ms: u64,
    proxies: http::client::TrustedProxies,
    background: Background,
) -> Result<()> {
    let Background { publishing, notifying } = background;
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
    let seed = match demo {
        Some(demo) if store.is_empty().await? => Some(demo),
        Some(_) => {
            tracing::info!("database already holds data; the demo is not seeded again");
            None
        }
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let public_url = public_url.unwrap_or_else(|| format!("http://{local}")).trim_end_matches('/').to_string();
    let app = Arc::new(App::load(store, public_url).await?);
    if let Some(demo) = seed {
        // Through the same write operations as everyone else, so the journal tells the story.
        demo::seed(&app, demo).await.context("seeding the demo")?;
        tracing::info!(?demo, "demo data seeded");
    }

    // Changes written by other processes (an import, another instance) become visible within poll_ms.
    let watcher = app.clone();
    tokio::spawn(async move {
        // The first look is one period after the start: the snapshot was just loaded (an
        // immediate first tick could come late under load and make a deliberately slow poll look
        // fast, as the stale-instance tests found).
        let period = Duration::from_millis(poll_ms.max(50));
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            interval.tick().await;
            let snap = watcher.snapshot();
            // Scheduled announcements appear when their time comes.
            let scheduled_due = snap.next_publication.as_deref().is_some_and(|t| t <= time::now_rfc3339().as_str());
            match watcher.store.data_version().await {
                Ok(v) if v != snap.data_version || scheduled_due => {
                    if let Err(e) = watcher.refresh().await {
                        tracing::error!(error = %e, "refreshing the snapshot failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the data version"),
            }
        }
    });

    if !publishing.targets.is_empty() {
        mirror::start(app.clone(), publishing.targets, publishing.debounce);
    }
    notify::start(app.clone(), notifying);

    println!("notbetrieb listening on http://{local}");
    if demo.is_some() {
        println!("demo ready in {} ms", started.elapsed().as_millis());
        println!("demo accounts (for this demonstration only, no second factor), sign in at http://{local}/intern:");
        for (username, password, what) in demo::DEMO_ACCOUNTS {
            println!("  {username:<14} {password:<24} {what}");
        }
    }
    axum::serve(listener, http::router(app, proxies).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
