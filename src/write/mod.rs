//! Every change to the data, used by the editing desk and the write API alike. Each operation
//! validates its input, asks `authz` once per thing it touches, then in ONE transaction takes the
//! journal lock, checks versions, writes the change and its journal entries and marks the data
//! changed; after the commit the public snapshot is rebuilt before the caller answers.
//!
//! Correct under concurrency: every gate, version, cycle, existence and scope condition is
//! decided on rows read INSIDE the write's transaction, after `journal::lock_head`, never on the
//! in-memory snapshot (which may be stale: another instance, a slow poll). That lock serialises
//! all writers, and reading after it sees the latest commit on both engines:
//! - PostgreSQL: `lock_head` updates the one `journal_head` row, so a second writer blocks on the
//!   row lock until the first commits. `Store::begin` starts READ COMMITTED explicitly (whatever
//!   the server's default), where every statement sees what was committed before it started; so
//!   each statement after the lock sees the first writer's rows. (At REPEATABLE READ the
//!   snapshot would be taken by the locking statement itself, before the wait.)
//! - SQLite: `Store::begin` is `BEGIN IMMEDIATE`, which takes the database's write lock before the
//!   first statement and reads the latest committed state; no other writer can commit until this
//!   one ends.
//!
//! A commit is the truth: once the transaction committed, the write is reported as done. If the
//! snapshot rebuild afterwards fails, `App::refresh_after_commit` logs it, retries in the
//! background and `/healthz` reports unhealthy until a rebuild succeeds.
//!
//! Idempotency: the write API claims an `Idempotency-Key` before acting and runs the operation
//! inside `with_idempotency`; `transaction` then stores the answer with the key in the write's own
//! transaction, so a retry after any crash or failure finds the first answer and never acts twice.

pub mod formats;

use std::any::Any;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::AnyConnection;

use crate::auth;
use crate::domain::authz::{Action, authorize};
use crate::domain::authz::{Principal, Role};
use crate::domain::events::{AnnouncementState, Event, Stated};
use crate::domain::time;
use crate::domain::*;
use crate::read::live::App;
use crate::store;
use crate::store::accounts;
use crate::store::changes;
use crate::store::journal;

/// Why a write did not happen. Nothing was stored in any of these cases.
#[derive(Debug)]
pub enum WriteError {
    Forbidden,
    NotFound(&'static str),
    /// A field's value is not acceptable: the field name and a message key.
    Invalid {
        field: String,
        message: &'static str,
    },
    /// Someone else saved first; `current` is what is stored now, with its `version`
    /// (`{"version": 0}` when nothing is stored).
    VersionConflict {
        current: serde_json::Value,
    },
    /// A recovery gate refused the step or rollout: every unmet condition.
    GateRefused {
        unmet: Vec<Unmet>,
    },
    /// The dependencies would form this cycle (first and last the same procedure).
    Cycle {
        path: Vec<String>,
    },
    Internal(anyhow::Error),
}

impl WriteError {
    /// What a 409 answer carries as `current`: the stored state for a version conflict,
    /// `{"unmet": [...]}` for a gate refusal, `{"cycle": [...]}` for a cycle.
    pub fn current(&self) -> Option<serde_json::Value> {
        match self {
            WriteError::VersionConflict { current } => Some(current.clone()),
            WriteError::GateRefused { unmet } => Some(json!({ "unmet": unmet })),
            WriteError::Cycle { path } => Some(json!({ "cycle": path })),
            _ => None,
        }
    }
}

impl From<anyhow::Error> for WriteError {
    fn from(e: anyhow::Error) -> Self {
        WriteError::Internal(e)
    }
}
impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Internal(e.into())
    }
}

pub type WriteResult<T> = Result<T, WriteError>;

fn allow(who: &Principal, action: Action) -> WriteResult<()> {
    authorize(who, &action).map_err(|_| WriteError::Forbidden)
}

fn invalid(field: &str, message: &'static str) -> WriteError {
    WriteError::Invalid { field: field.into(), message }
}

fn conflict(version: i64) -> WriteError {
    WriteError::VersionConflict { current: json!({ "version": version }) }
}

/// Longest free text we accept in one field (a long announcement fits easily).
pub const MAX_TEXT: usize = 20_000;
pub const MAX_LINE: usize = 2_000;

/// Text as written, but bounded and without control characters other than line breaks and tabs.
fn text(field: &str, value: &str, max: usize) -> WriteResult<String> {
    if value.chars().count() > max {
        return Err(invalid(field, "write.too_long"));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Err(invalid(field, "write.control_characters"));
    }
    Ok(value.trim().replace("\r\n", "\n"))
}

/// Markdown for the public pages: bounded like any text, and within what the renderer may produce
/// (nesting depth, rendered size), so no text can make rendering slow.
fn markdown_text(field: &str, value: &str) -> WriteResult<String> {
    let value = text(field, value, MAX_TEXT)?;
    crate::domain::markdown::check(&value).map_err(|e| invalid(field, e.message_key()))?;
    Ok(value)
}

fn date(field: &str, value: &str) -> WriteResult<String> {
    let v = value.trim();
    if v.is_empty() || time::parse_date(v).is_some() {
        Ok(v.to_string())
    } else {
        Err(invalid(field, "write.invalid_date"))
    }
}

/// A date something is expected (a service back, a procedure released): from 2000 to ten years
/// ahead, so a slip such as `0000-01-01` or `20266-01-01` never reaches citizens.
fn expected_date(field: &str, value: &str) -> WriteResult<String> {
    let v = date(field, value)?;
    if let Some(d) = time::parse_date(&v) {
        let earliest = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date");
        let latest = time::now().date_naive().checked_add_months(chrono::Months::new(12 * 10));
        if d < earliest || latest.is_some_and(|latest| d > latest) {
            return Err(invalid(field, "write.date_out_of_range"));
        }
    }
    Ok(v)
}

/// When a service is expected back: empty (not stated), or one of the forms of
/// `domain::expected` (a day, `2026-W51`, `2026-12-H2`, `2026-12`, `unknown`), stored in its
/// canonical form; the period may not end before 2000 or begin more than ten years ahead.
fn expected_return(field: &str, value: &str) -> WriteResult<String> {
    use crate::domain::expected::Expected;
    let v = value.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    let Some(expected) = Expected::parse(v) else { return Err(invalid(field, "write.invalid_expected_return")) };
    if let Some((first, last)) = expected.span() {
        let earliest = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date");
        let latest = time::now().date_naive().checked_add_months(chrono::Months::new(12 * 10));
        if last < earliest || latest.is_some_and(|latest| first > latest) {
            return Err(invalid(field, "write.date_out_of_range"));
        }
    }
    Ok(expected.canonical())
}

/// An e-mail address `local@domain`, as mail servers accept it: at most 254 characters, a local
/// part of at most 64 without spaces, control characters or quoting, dots only between other
/// characters; a domain of at least two dot-separated labels of letters, digits and inner
/// hyphens (1–63 each), the last not all digits.
pub fn valid_email(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else { return false };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
    address.len() <= 254 && local_ok && domain_ok
}

/// Turns an operation's result (downcast to its type) into the answer stored for replays.
pub type RecordAnswer = Box<dyn FnOnce(&dyn Any) -> anyhow::Result<(u16, String)> + Send>;

/// An `Idempotency-Key` claimed by the write API for the operation it runs: `transaction`
/// stores `answer(result)` under the key in the write's own transaction.
pub struct Idempotency {
    pub principal: String,
    pub key: String,
    pub request_hash: String,
    /// Turns the operation's result (downcast to its type) into the answer to store for
    /// replays: HTTP status and JSON body (empty for none), without secrets.
    pub answer: RecordAnswer,
}

tokio::task_local! {
    static IDEMPOTENCY: Mutex<Option<Idempotency>>;
}

/// Runs `operation` (one `writes` call) so that its transaction records `key`'s answer.
pub async fn with_idempotency<F: std::future::Future>(key: Idempotency, operation: F) -> F::Output {
    IDEMPOTENCY.scope(Mutex::new(Some(key)), operation).await
}

fn take_idempotency() -> Option<Idempotency> {
    IDEMPOTENCY.try_with(|k| k.lock().ok().and_then(|mut k| k.take())).ok().flatten()
}

/// Runs `body` in a transaction that holds the journal lock (and, for the write API, records the
/// idempotency key's answer), commits, and refreshes the snapshot. Once committed, the write is
/// done: a failed rebuild is retried in the background, not reported as a failed write.
async fn transaction<T: 'static, F>(app: &App, body: F) -> WriteResult<T>
where
    F: for<'c> FnOnce(
        &'c mut AnyConnection,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = WriteResult<T>> + Send + 'c>>,
{
    let key = take_idempotency();
    let mut tx = app.store.begin().await?;
    journal::lock_head(&mut tx).await?;
    let out = body(&mut tx).await?;
    if let Some(key) = key {
        let (status, response) = (key.answer)(&out)?;
        if !store::idempotency::record_answer_with_write(
            &mut tx,
            &key.principal,
            &key.key,
            &key.request_hash,
            status,
            &response,
        )
        .await?
        {
            // Another request with this key finished first; this one must not act as well.
            return Err(WriteError::Internal(anyhow::anyhow!("the idempotency key was settled by another request")));
        }
    }
    store::bump_data_version(&mut tx).await?;
    tx.commit().await?;
    if DEFER_REFRESH.try_with(|_| ()).is_err() {
        app.refresh_after_commit().await;
    }
    Ok(out)
}

tokio::task_local! {
    /// Set while a batch of writes (the demo's history) runs: no rebuild after each write.
    static DEFER_REFRESH: ();
}

/// Runs a batch of writes without rebuilding the snapshot after each; the caller refreshes
/// (`App::refresh`) when it needs the new state and once at the end.
pub async fn deferring_refresh<F: std::future::Future>(f: F) -> F::Output {
    DEFER_REFRESH.scope((), f).await
}

// ---------------------------------------------------------------------------------------------
// Availability statements

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementInput {
    #[schema(value_type = Level)]
    pub level: String,
    #[serde(default)]
    #[schema(schema_with = formats::line)]
    pub restrictions: String,
    #[serde(default)]
    #[schema(schema_with = formats::line)]
    pub workaround: String,
    #[serde(default)]
    #[schema(schema_with = formats::line)]
    pub backlog: String,
    /// Expected return to normal operation: a day, week, half-month, month or `unknown`.
    #[serde(default)]
    #[schema(value_type = formats::ExpectedPeriod)]
    pub expected_return: String,
    /// The day to look at the statement again; empty: 14 days after it is saved.
    #[serde(default)]
    #[schema(value_type = formats::DateOrEmpty)]
    pub review_on: String,
}

/// Whether an AGS names a town or district, read in the write's transaction.
async fn scope_exists(c: &mut AnyConnection, ags: &str) -> WriteResult<bool> {
    Ok(store::place_is_district(c, ags).await?.is_some())
}

/// Sets the same statement for every (target, service) pair: one service or many, one town or
/// many. `expected_version` (for a single pair) refuses the save if someone else saved since;
/// 0 means "there was no statement". The statements returned carry the versions this write
/// produced.
pub async fn set_statements(
    app: &App,
    who: &Principal,
    targets: &[String],
    services: &[String],
    input: &StatementInput,
    expected_version: Option<i64>,
) -> WriteResult<Vec<Statement>> {
    if targets.is_empty() {
        return Err(invalid("targets", "write.nothing_selected"));
    }
    if services.is_empty() {
        return Err(invalid("services", "write.nothing_selected"));
    }
    let level = Level::parse(&input.level).ok_or_else(|| invalid("level", "write.invalid_level"))?;
    let (who, targets, services, input) = (who.clone(), targets.to_vec(), services.to_vec(), input.clone());
    transaction(app, move |c| {
        Box::pin(async move {
            for ags in &targets {
                if !scope_exists(c, ags).await? {
                    return Err(WriteError::NotFound("municipality"));
                }
                allow(&who, Action::EditStatement { ags })?;
            }
            for slug in &services {
                let responsibility =
                    store::service_responsibility(c, slug).await?.ok_or(WriteError::NotFound("service"))?;
                // A district speaks only for the services it is responsible for.
                if targets.iter().any(|t| t.len() == 5) && responsibility != Responsibility::District {
                    return Err(invalid("services", "write.district_service_only"));
                }
            }
            let now = time::now_rfc3339();
            let base = Statement {
                scope_ags: String::new(),
                service_slug: String::new(),
                level,
                restrictions: text("restrictions", &input.restrictions, MAX_LINE)?,
                workaround: text("workaround", &input.workaround, MAX_LINE)?,
                backlog: text("backlog", &input.backlog, MAX_LINE)?,
                expected_return: expected_return("expected_return", &input.expected_return)?,
                author: who.name.clone(),
                stated_at: now,
                version: 0,
                review_on: date("review_on", &input.review_on)?,
            };
            let pairs: Vec<(String, String)> =
                targets.iter().flat_map(|t| services.iter().map(move |s| (t.clone(), s.clone()))).collect();
            let mut saved = Vec::new();
            for (ags, service) in &pairs {
                let current = statement_version(c, ags, service).await?;
                if let Some(expected) = expected_version
                    && current != expected
                {
                    return Err(WriteError::VersionConflict {
                        current: current_statement_json(c, ags, service).await?,
                    });
                }
                let st = Statement {
                    scope_ags: ags.clone(),
                    service_slug: service.clone(),
                    version: current + 1,
                    ..base.clone()
                };
                let from = stated_before(c, ags, service).await?;
                store::upsert_statement(c, &st).await?;
                let event =
                    Event::StatementChanged { scope: ags.clone(), service: service.clone(), to: Stated::of(&st), from };
                journal::append_event(c, &who.name, &event).await?;
                saved.push(st);
            }
            Ok(saved)
        })
    })
    .await
}

/// The statement a change replaces, for its event (`None`: there was none).
async fn stated_before(c: &mut AnyConnection, ags: &str, service: &str) -> WriteResult<Option<Stated>> {
    Ok(store::stated(c, ags, service).await?)
}

async fn statement_version(c: &mut AnyConnection, ags: &str, service: &str) -> WriteResult<i64> {
    Ok(changes::statement_version(c, ags, service).await?)
}

async fn current_statement_json(c: &mut AnyConnection, ags: &str, service: &str) -> WriteResult<serde_json::Value> {
    Ok(match changes::statement(c, ags, service).await? {
        None => json!({ "version": 0 }),
        Some(st) => json!({
            "level": st.level.as_str(), "restrictions": st.restrictions, "workaround": st.workaround,
            "backlog": st.backlog, "expected_return": st.expected_return, "author": st.author,
            "stated_at": st.stated_at, "version": st.version,
        }),
    })
}

/// Withdraws a statement: the town's availability falls back to the district's or "no report".
pub async fn withdraw_statement(
    app: &App,
    who: &Principal,
    ags: &str,
    service: &str,
    expected_version: Option<i64>,
) -> WriteResult<()> {
    let (who, ags, service) = (who.clone(), ags.to_string(), service.to_string());
    transaction(app, move |c| {
        Box::pin(async move {
            if !scope_exists(c, &ags).await? {
                return Err(WriteError::NotFound("municipality"));
            }
            store::service_responsibility(c, &service).await?.ok_or(WriteError::NotFound("service"))?;
            allow(&who, Action::EditStatement { ags: &ags })?;
            let current = statement_version(c, &ags, &service).await?;
            if current == 0 {
                return Err(WriteError::NotFound("statement"));
            }
            if let Some(expected) = expected_version
                && current != expected
            {
                return Err(WriteError::VersionConflict { current: current_statement_json(c, &ags, &service).await? });
            }
            let from = stated_before(c, &ags, &service).await?;
            changes::delete_statement(c, &ags, &service).await?;
            let event =
                Event::StatementWithdrawn { scope: ags.clone(), service: service.clone(), version: current, from };
            journal::append_event(c, &who.name, &event).await?;
            Ok(())
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Announcements and FAQ

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementInput {
    #[schema(value_type = formats::ScopeKindName)]
    pub scope: String,
    /// AGS for district/municipality, service slug for service, empty for area.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub scope_ref: String,
    #[serde(default = "default_lang")]
    #[schema(value_type = formats::LanguageCode)]
    pub lang: String,
    #[schema(schema_with = formats::title)]
    pub title: String,
    /// Markdown.
    #[schema(schema_with = formats::long_text)]
    pub body: String,
    #[serde(default = "default_publish")]
    #[schema(value_type = formats::Publication)]
    pub publish: String,
}

fn default_lang() -> String {
    crate::i18n::DEFAULT_LANG.into()
}
fn default_publish() -> String {
    "now".into()
}

/// An announcement's or FAQ entry's scope, checked against the rows in the transaction.
async fn scope_of(c: &mut AnyConnection, scope: &str, scope_ref: &str) -> WriteResult<(ScopeKind, String)> {
    let kind = ScopeKind::parse(scope).ok_or_else(|| invalid("scope", "write.invalid_scope"))?;
    let r = scope_ref.trim().to_string();
    let ok = match kind {
        ScopeKind::Area => r.is_empty(),
        ScopeKind::District => store::place_is_district(c, &r).await? == Some(true),
        ScopeKind::Municipality => store::place_is_district(c, &r).await? == Some(false),
        ScopeKind::Service => store::service_responsibility(c, &r).await?.is_some(),
    };
    if !ok {
        return Err(invalid("scope_ref", "write.invalid_scope"));
    }
    Ok((kind, r))
}

fn publication(value: &str) -> WriteResult<Option<String>> {
    match value.trim() {
        "draft" => Ok(None),
        "" | "now" => Ok(Some(time::now_rfc3339())),
        t => time::parse_rfc3339(t)
            .map(|t| Some(time::format_rfc3339(t)))
            .ok_or_else(|| invalid("publish", "write.invalid_time")),
    }
}

fn lang(value: &str) -> WriteResult<String> {
    if crate::i18n::is_language(value) { Ok(value.to_string()) } else { Err(invalid("lang", "write.invalid_lang")) }
}

fn new_id(title: &str) -> String {
    let mut slug: String = slugify(title).chars().take(60).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    let suffix = hex::encode(auth::random_bytes::<3>());
    if slug.is_empty() { suffix } else { format!("{slug}-{suffix}") }
}

/// The event of saving an announcement that was not public before: published, scheduled or draft.
fn announcement_event(a: &Announcement, created: bool) -> Event {
    let announcement = AnnouncementState::of(a);
    match &a.published_at {
        None => Event::AnnouncementDrafted { announcement, created },
        Some(t) if *t > time::now_rfc3339() => Event::AnnouncementScheduled { announcement, created },
        Some(_) => Event::AnnouncementPublished { announcement, created },
    }
}

fn announcement_payload(a: &Announcement) -> serde_json::Value {
    json!({
        "id": a.id, "scope": a.scope_kind, "scope_ref": a.scope_ref, "lang": a.lang, "title": a.title, "body": a.body,
        "published_at": a.published_at, "version": a.version,
    })
}

pub async fn create_announcement(app: &App, who: &Principal, input: &AnnouncementInput) -> WriteResult<Announcement> {
    create_announcement_as(app, who, input, None).await
}

/// `create_announcement` with a given id instead of one made from the title (the demo's
/// announcements keep their well-known ids).
pub async fn create_announcement_as(
    app: &App,
    who: &Principal,
    input: &AnnouncementInput,
    id: Option<&str>,
) -> WriteResult<Announcement> {
    let (who, input, id) = (who.clone(), input.clone(), id.map(str::to_string));
    transaction(app, move |c| {
        Box::pin(async move {
            let (kind, scope_ref) = scope_of(c, &input.scope, &input.scope_ref).await?;
            allow(&who, Action::EditAnnouncement { scope: &kind, scope_ref: &scope_ref })?;
            let title = text("title", &input.title, 300)?;
            if title.is_empty() {
                return Err(invalid("title", "write.required"));
            }
            let now = time::now_rfc3339();
            let saved = Announcement {
                id: id.clone().unwrap_or_else(|| new_id(&title)),
                scope_kind: kind,
                scope_ref,
                lang: lang(&input.lang)?,
                title,
                body: markdown_text("body", &input.body)?,
                author: who.name.clone(),
                published_at: publication(&input.publish)?,
                updated_at: now,
                version: 1,
            };
            store::insert_announcement(c, &saved).await?;
            journal::append_event(c, &who.name, &announcement_event(&saved, true)).await?;
            Ok(saved)
        })
    })
    .await
}

async fn load_announcement(c: &mut AnyConnection, id: &str) -> WriteResult<Announcement> {
    changes::announcement(c, id).await?.ok_or(WriteError::NotFound("announcement"))
}

/// Edits an announcement. Once published, an edit is a correction: the public sees
/// "updated on …" next to the original publication time.
pub async fn update_announcement(
    app: &App,
    who: &Principal,
    id: &str,
    input: &AnnouncementInput,
    expected_version: Option<i64>,
) -> WriteResult<(Announcement, i64)> {
    let (who, id, input) = (who.clone(), id.to_string(), input.clone());
    transaction(app, move |c| {
        Box::pin(async move {
            let (kind, scope_ref) = scope_of(c, &input.scope, &input.scope_ref).await?;
            let title = text("title", &input.title, 300)?;
            if title.is_empty() {
                return Err(invalid("title", "write.required"));
            }
            let body = markdown_text("body", &input.body)?;
            let lang = lang(&input.lang)?;
            let publish = input.publish.clone();
            let old = load_announcement(c, &id).await?;
            // Both the old and the new scope must be the editor's.
            allow(&who, Action::EditAnnouncement { scope: &old.scope_kind, scope_ref: &old.scope_ref })?;
            allow(&who, Action::EditAnnouncement { scope: &kind, scope_ref: &scope_ref })?;
            if let Some(expected) = expected_version
                && expected != old.version
            {
                return Err(WriteError::VersionConflict { current: announcement_payload(&old) });
            }
            // A published announcement stays published with its original time; a draft follows `publish`.
            // Once public, an announcement keeps its publication time (edits are corrections);
            // a draft or a scheduled one follows `publish` and can be rescheduled.
            let now = time::now_rfc3339();
            let public = old.published_at.as_deref().is_some_and(|p| p <= now.as_str());
            let published_at =
                if public && publish != "draft" { old.published_at.clone() } else { publication(&publish)? };
            let a = Announcement {
                id: id.clone(),
                scope_kind: kind,
                scope_ref,
                lang,
                title,
                body,
                author: old.author.clone(),
                published_at,
                updated_at: time::now_rfc3339(),
                version: old.version + 1,
            };
            changes::update_announcement(c, &a).await?;
            let event = if public {
                Event::AnnouncementCorrected { announcement: AnnouncementState::of(&a) }
            } else {
                announcement_event(&a, false)
            };
            journal::append_event(c, &who.name, &event).await?;
            // The version this write produced, read back in its own transaction.
            let version = store::stored_version(c, store::VersionedRow::Announcement, &a.id).await?;
            Ok((a, version))
        })
    })
    .await
}

/// Takes an announcement off the public pages (it stays in the journal).
pub async fn withdraw_announcement(app: &App, who: &Principal, id: &str) -> WriteResult<()> {
    let (who, id) = (who.clone(), id.to_string());
    transaction(app, move |c| {
        Box::pin(async move {
            let old = load_announcement(c, &id).await?;
            allow(&who, Action::EditAnnouncement { scope: &old.scope_kind, scope_ref: &old.scope_ref })?;
            changes::delete_announcement(c, &id).await?;
            let event = Event::AnnouncementWithdrawn { announcement: AnnouncementState::of(&old) };
            journal::append_event(c, &who.name, &event).await?;
            Ok(())
        })
    })
    .await
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaqInput {
    #[schema(value_type = formats::ScopeKindName)]
    pub scope: String,
    /// AGS for district/municipality, service slug for service, empty for area.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub scope_ref: String,
    #[serde(default = "default_lang")]
    #[schema(value_type = formats::LanguageCode)]
    pub lang: String,
    #[schema(schema_with = formats::question)]
    pub question: String,
    /// Markdown.
    #[schema(schema_with = formats::long_text)]
    pub answer: String,
    #[serde(default)]
    pub sort_order: i64,
    #[serde(default = "default_publish")]
    #[schema(value_type = formats::Publication)]
    pub publish: String,
}

/// Creates (id `None`) or updates an FAQ entry.
pub async fn save_faq(
    app: &App,
    who: &Principal,
    id: Option<&str>,
    input: &FaqInput,
    expected_version: Option<i64>,
) -> WriteResult<(FaqEntry, i64)> {
    let (who, input, id) = (who.clone(), input.clone(), id.map(str::to_string));
    let existing = id.is_some();
    transaction(app, move |c| {
        Box::pin(async move {
            let (kind, scope_ref) = scope_of(c, &input.scope, &input.scope_ref).await?;
            allow(&who, Action::EditAnnouncement { scope: &kind, scope_ref: &scope_ref })?;
            let question = text("question", &input.question, 500)?;
            if question.is_empty() {
                return Err(invalid("question", "write.required"));
            }
            let now = time::now_rfc3339();
            let saved = FaqEntry {
                id: id.unwrap_or_else(|| new_id(&question)),
                scope_kind: kind,
                scope_ref,
                lang: lang(&input.lang)?,
                question,
                answer: markdown_text("answer", &input.answer)?,
                sort_order: input.sort_order,
                published_at: publication(&input.publish)?,
                updated_at: now,
            };
            let stored = changes::faq_scope_and_version(c, &saved.id).await?;
            let version = match (existing, stored) {
                (true, None) => return Err(WriteError::NotFound("faq")),
                (false, Some(_)) => return Err(invalid("id", "write.exists")),
                (false, None) => 0,
                (true, Some((old_kind, old_ref, v))) => {
                    allow(&who, Action::EditAnnouncement { scope: &old_kind, scope_ref: &old_ref })?;
                    if let Some(expected) = expected_version
                        && expected != v
                    {
                        return Err(conflict(v));
                    }
                    changes::delete_faq(c, &saved.id).await?;
                    v
                }
            };
            store::insert_faq(c, &saved).await?;
            changes::set_faq_version(c, &saved.id, version + 1).await?;
            let event = Event::FaqChanged { entry: saved.clone(), version: version + 1, created: !existing };
            journal::append_event(c, &who.name, &event).await?;
            Ok((saved, version + 1))
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Referrals, offices, contact channels

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralInput {
    #[schema(value_type = formats::Slug)]
    pub office_slug: String,
    #[schema(value_type = formats::Slug)]
    pub service_slug: String,
    /// Residents of this town (8 digits) or district (5 digits).
    #[schema(value_type = formats::Ags)]
    pub for_ags: String,
    #[serde(default)]
    #[schema(schema_with = formats::line)]
    pub conditions: String,
    #[serde(default)]
    #[schema(value_type = formats::DateOrEmpty)]
    pub valid_from: String,
    /// Not before `valid_from`.
    #[serde(default)]
    #[schema(value_type = formats::DateOrEmpty)]
    pub valid_until: String,
}

/// Creates (id `None`) or replaces a referral.
pub async fn save_referral(
    app: &App,
    who: &Principal,
    id: Option<&str>,
    input: &ReferralInput,
) -> WriteResult<Referral> {
    let (who, input, id) = (who.clone(), input.clone(), id.map(str::to_string));
    let existing = id.is_some();
    transaction(app, move |c| {
        Box::pin(async move {
            if !scope_exists(c, &input.for_ags).await? {
                return Err(invalid("for_ags", "write.unknown_town"));
            }
            allow(&who, Action::EditReferral { for_ags: &input.for_ags })?;
            if !store::office_exists(c, &input.office_slug).await? {
                return Err(invalid("office_slug", "write.unknown_office"));
            }
            if store::service_responsibility(c, &input.service_slug).await?.is_none() {
                return Err(invalid("service_slug", "write.unknown_service"));
            }
            let saved = Referral {
                id: id.unwrap_or_else(|| format!("{}-{}-{}", input.office_slug, input.service_slug, input.for_ags)),
                office_slug: input.office_slug.clone(),
                service_slug: input.service_slug.clone(),
                for_ags: input.for_ags.clone(),
                conditions: text("conditions", &input.conditions, MAX_LINE)?,
                valid_from: date("valid_from", &input.valid_from)?,
                valid_until: date("valid_until", &input.valid_until)?,
            };
            if !saved.valid_from.is_empty() && !saved.valid_until.is_empty() && saved.valid_until < saved.valid_from {
                return Err(invalid("valid_until", "write.until_before_from"));
            }
            let old = changes::referral_for_ags(c, &saved.id).await?;
            match (&old, existing) {
                (None, true) => return Err(WriteError::NotFound("referral")),
                (Some(old_for), _) => allow(&who, Action::EditReferral { for_ags: old_for })?,
                (None, false) => {}
            }
            store::upsert_referral(c, &saved).await?;
            let event = Event::ReferralChanged { referral: saved.clone(), created: old.is_none() };
            journal::append_event(c, &who.name, &event).await?;
            Ok(saved)
        })
    })
    .await
}

/// Office and service of a referral about to be deleted, for its event.
async fn referral_before(c: &mut AnyConnection, id: &str) -> WriteResult<(String, String)> {
    Ok(changes::referral_office_and_service(c, id).await?)
}

pub async fn delete_referral(app: &App, who: &Principal, id: &str) -> WriteResult<()> {
    let (who, id) = (who.clone(), id.to_string());
    transaction(app, move |c| {
        Box::pin(async move {
            let old = changes::referral_for_ags(c, &id).await?;
            let for_ags = old.ok_or(WriteError::NotFound("referral"))?;
            allow(&who, Action::EditReferral { for_ags: &for_ags })?;
            let (office_slug, service_slug) = referral_before(c, &id).await?;
            changes::delete_referral(c, &id).await?;
            let event = Event::ReferralDeleted { id: id.clone(), for_ags, office_slug, service_slug };
            journal::append_event(c, &who.name, &event).await?;
            Ok(())
        })
    })
    .await
}

/// An office a town or district runs, with every way to reach it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfficeInput {
    /// The town (8 digits) or district (5 digits) running the office.
    #[schema(value_type = formats::Ags)]
    pub owner_ags: String,
    #[schema(schema_with = formats::procedure_name)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = formats::display_name)]
    pub street: String,
    #[serde(default)]
    #[schema(schema_with = formats::phone)]
    pub postal_code: String,
    #[serde(default)]
    #[schema(schema_with = formats::display_name)]
    pub city: String,
    #[serde(default)]
    #[schema(schema_with = formats::phone)]
    pub phone: String,
    #[serde(default)]
    #[schema(value_type = formats::ContactEmail)]
    pub email: String,
    /// Its web page or appointment booking.
    #[serde(default)]
    #[schema(value_type = formats::WebAddress)]
    pub website: String,
    #[serde(default)]
    #[schema(schema_with = formats::line)]
    pub opening_hours: String,
    /// Where it is, for the distances of referrals; without it the office keeps its place, or a
    /// new one takes its owner's.
    #[serde(default)]
    #[schema(minimum = -90.0, maximum = 90.0)]
    pub lat: Option<f64>,
    #[serde(default)]
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub lon: Option<f64>,
}

/// Creates or replaces an office (by slug). The editor must speak for its owner, and for the
/// previous owner when the office changes hands.
pub async fn save_office(app: &App, who: &Principal, slug: &str, input: &OfficeInput) -> WriteResult<Office> {
    let (who, slug, input) = (who.clone(), slug.to_string(), input.clone());
    transaction(app, move |c| {
        Box::pin(async move {
            if store::place_is_district(c, &input.owner_ags).await?.is_none() {
                return Err(invalid("owner_ags", "write.unknown_town"));
            }
            allow(&who, Action::EditContacts { ags: &input.owner_ags })?;
            let old = store::office(c, &slug).await?;
            if let Some(old) = &old {
                allow(&who, Action::EditContacts { ags: &old.owner_ags })?;
            }
            let name = text("name", &input.name, 200)?;
            if name.is_empty() {
                return Err(invalid("name", "write.required"));
            }
            let email = text("email", &input.email, 254)?;
            if !email.is_empty() && !valid_email(&email) {
                return Err(invalid("email", "write.invalid_email"));
            }
            if input.lat.is_some_and(|lat| !(-90.0..=90.0).contains(&lat)) {
                return Err(invalid("lat", "write.invalid_coordinates"));
            }
            if input.lon.is_some_and(|lon| !(-180.0..=180.0).contains(&lon)) {
                return Err(invalid("lon", "write.invalid_coordinates"));
            }
            let (lat, lon) = match (input.lat, input.lon, &old) {
                (Some(lat), Some(lon), _) => (lat, lon),
                (_, _, Some(old)) => (input.lat.unwrap_or(old.lat), input.lon.unwrap_or(old.lon)),
                _ => store::place_position(c, &input.owner_ags).await?.unwrap_or((0.0, 0.0)),
            };
            let saved = Office {
                slug: slug.clone(),
                name,
                owner_ags: input.owner_ags.clone(),
                street: text("street", &input.street, 200)?,
                postal_code: text("postal_code", &input.postal_code, 100)?,
                city: text("city", &input.city, 200)?,
                lat,
                lon,
                phone: text("phone", &input.phone, 100)?,
                email,
                website: url_field("website", &input.website)?,
                opening_hours: text("opening_hours", &input.opening_hours, MAX_LINE)?,
            };
            store::upsert_office(c, &saved).await?;
            let event = Event::OfficeSaved { office: saved.clone(), created: old.is_none() };
            journal::append_event(c, &who.name, &event).await?;
            // Offices are part of the places, which snapshots share until their version moves.
            store::bump_places_version(c).await?;
            Ok(saved)
        })
    })
    .await
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[serde(default)]
    #[schema(schema_with = formats::phone)]
    pub phone: String,
    #[serde(default)]
    #[schema(value_type = formats::ContactEmail)]
    pub email: String,
    #[serde(default)]
    #[schema(value_type = formats::WebAddress)]
    pub website: String,
    #[serde(default)]
    #[schema(value_type = formats::WebAddress)]
    pub emergency_website: String,
    /// One address per line.
    #[serde(default)]
    #[schema(schema_with = formats::line)]
    pub social_media: String,
}

fn url_field(field: &str, value: &str) -> WriteResult<String> {
    let v = text(field, value, 500)?;
    if v.is_empty() || http_url(&v) == v { Ok(v) } else { Err(invalid(field, "write.invalid_url")) }
}

/// Sets the contact channels of a town (8-digit AGS) or district (5-digit AGS).
pub async fn set_contact(
    app: &App,
    who: &Principal,
    ags: &str,
    input: &ContactInput,
    expected_version: Option<i64>,
) -> WriteResult<(Contact, i64)> {
    let (who, ags, input) = (who.clone(), ags.to_string(), input.clone());
    transaction(app, move |c| {
        Box::pin(async move {
            let district = match store::place_is_district(c, &ags).await? {
                Some(district) => district,
                None => return Err(WriteError::NotFound("municipality")),
            };
            allow(&who, Action::EditContacts { ags: &ags })?;
            let email = text("email", &input.email, 254)?;
            if !email.is_empty() && !valid_email(&email) {
                return Err(invalid("email", "write.invalid_email"));
            }
            let contact = Contact {
                phone: text("phone", &input.phone, 100)?,
                email,
                website: url_field("website", &input.website)?,
                emergency_website: url_field("emergency_website", &input.emergency_website)?,
                social_media: text("social_media", &input.social_media, MAX_LINE)?,
            };
            let row = if district { store::VersionedRow::District } else { store::VersionedRow::Municipality };
            let version = store::stored_version(c, row, &ags).await?;
            if let Some(expected) = expected_version
                && expected != version
            {
                return Err(conflict(version));
            }
            changes::update_contact(c, district, &ags, &contact).await?;
            let event = Event::ContactsChanged { ags: ags.clone(), contact: contact.clone(), version: version + 1 };
            journal::append_event(c, &who.name, &event).await?;
            store::bump_places_version(c).await?;
            Ok((contact, version + 1))
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Accounts and tokens

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    #[schema(value_type = formats::Username)]
    pub username: String,
    #[serde(default)]
    #[schema(schema_with = formats::display_name)]
    pub display_name: String,
    #[schema(value_type = Role)]
    pub role: String,
    /// AGS of the towns and districts an editor may change.
    #[serde(default)]
    #[schema(value_type = Vec<formats::Ags>)]
    pub scopes: Vec<String>,
}

async fn checked_scopes(c: &mut AnyConnection, scopes: &[String]) -> WriteResult<Vec<String>> {
    let mut out = Vec::new();
    for s in scopes {
        let s = s.trim();
        if !scope_exists(c, s).await? {
            return Err(invalid("scopes", "write.unknown_town"));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

/// Creates an account and returns it as stored with its one-time setup token.
pub async fn create_user(app: &App, who: &Principal, input: &UserInput) -> WriteResult<(auth::User, String)> {
    allow(who, Action::ManageUsers)?;
    let role = Role::parse(&input.role).ok_or_else(|| invalid("role", "write.invalid_role"))?;
    if !auth::valid_username(&input.username) {
        return Err(invalid("username", "write.invalid_username"));
    }
    let display_name = text("display_name", &input.display_name, 200)?;
    let (who, username, scopes) = (who.clone(), input.username.clone(), input.scopes.clone());
    transaction(app, move |c| {
        Box::pin(async move {
            let scopes = checked_scopes(c, &scopes).await?;
            if accounts::user_by_name(c, &username).await?.is_some() {
                return Err(invalid("username", "write.exists"));
            }
            let id = accounts::insert_user(c, &username, &display_name, role, &scopes).await?;
            let token = accounts::issue_setup_token(c, id).await?;
            let event =
                Event::UserCreated { username: username.clone(), role: role.as_str().into(), scopes: scopes.clone() };
            journal::append_event(c, &who.name, &event).await?;
            let user = accounts::user_by_id(c, id).await?.ok_or_else(|| anyhow::anyhow!("new user not found"))?;
            Ok((user, token))
        })
    })
    .await
}

/// Changes role, scope or the disabled flag; disabling ends the user's sessions.
pub async fn update_user(
    app: &App,
    who: &Principal,
    id: i64,
    role: &str,
    scopes: &[String],
    disabled: bool,
) -> WriteResult<()> {
    allow(who, Action::ManageUsers)?;
    let role = Role::parse(role).ok_or_else(|| invalid("role", "write.invalid_role"))?;
    let (who, scopes) = (who.clone(), scopes.to_vec());
    transaction(app, move |c| {
        Box::pin(async move {
            let scopes = checked_scopes(c, &scopes).await?;
            let user = accounts::user_by_id(c, id).await?.ok_or(WriteError::NotFound("user"))?;
            changes::set_role_and_disabled(c, id, role, disabled).await?;
            accounts::set_scopes(c, id, &scopes).await?;
            if disabled {
                accounts::end_all_sessions(c, id).await?;
            }
            let event = Event::UserChanged {
                username: user.username.clone(),
                role: role.as_str().into(),
                scopes: scopes.clone(),
                disabled,
            };
            journal::append_event(c, &who.name, &event).await?;
            Ok(())
        })
    })
    .await
}

/// A new setup link for someone who lost password or second factor; ends their sessions.
pub async fn reset_user(app: &App, who: &Principal, id: i64) -> WriteResult<String> {
    allow(who, Action::ManageUsers)?;
    let who = who.clone();
    transaction(app, move |c| {
        Box::pin(async move {
            let user = accounts::user_by_id(c, id).await?.ok_or(WriteError::NotFound("user"))?;
            changes::clear_credentials(c, id).await?;
            accounts::end_all_sessions(c, id).await?;
            let token = accounts::issue_setup_token(c, id).await?;
            journal::append_event(c, &who.name, &Event::UserReset { username: user.username.clone() }).await?;
            Ok(token)
        })
    })
    .await
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    #[schema(schema_with = formats::token_name)]
    pub name: String,
    /// Defaults to the creator's own role.
    #[serde(default)]
    #[schema(value_type = formats::RoleOrOwn)]
    pub role: String,
    /// AGS of the towns and districts; defaults to the creator's own scope.
    #[serde(default)]
    #[schema(value_type = Vec<formats::Ags>)]
    pub scopes: Vec<String>,
    /// Whose token; defaults to the creator. Only admins make tokens for others.
    #[serde(default)]
    pub user_id: Option<i64>,
    /// RFC 3339; empty for no expiry.
    #[serde(default)]
    #[schema(value_type = formats::DateTimeOrEmpty)]
    pub expires_at: String,
}

/// Creates an API token; returns it as stored and its secret (shown once).
pub async fn create_token(app: &App, who: &Principal, input: &TokenInput) -> WriteResult<(auth::ApiToken, String)> {
    let name = text("name", &input.name, 100)?;
    if name.is_empty() {
        return Err(invalid("name", "write.required"));
    }
    let role = if input.role.is_empty() {
        who.role
    } else {
        Role::parse(&input.role).ok_or_else(|| invalid("role", "write.invalid_role"))?
    };
    let for_user = input.user_id.unwrap_or(who.user_id);
    let (who, input) = (who.clone(), input.clone());
    transaction(app, move |c| {
        Box::pin(async move {
            let scopes =
                if input.scopes.is_empty() { who.scopes.clone() } else { checked_scopes(c, &input.scopes).await? };
            allow(&who, Action::ManageTokens { for_user, role, scopes: &scopes })?;
            let expires_at = match input.expires_at.trim() {
                "" => String::new(),
                t => {
                    let t = time::parse_rfc3339(t).ok_or_else(|| invalid("expires_at", "write.invalid_time"))?;
                    if t <= time::now() {
                        return Err(invalid("expires_at", "write.expiry_in_past"));
                    }
                    time::format_rfc3339(t)
                }
            };
            let owner = accounts::user_by_id(c, for_user).await?.ok_or(WriteError::NotFound("user"))?;
            let (id, secret) = accounts::create_token(c, for_user, &name, role, &scopes, &expires_at).await?;
            let event = Event::TokenCreated {
                owner: owner.username.clone(),
                id,
                name: name.clone(),
                role: role.as_str().into(),
                scopes: scopes.clone(),
            };
            journal::append_event(c, &who.name, &event).await?;
            let token = accounts::tokens(c, Some(for_user))
                .await?
                .into_iter()
                .find(|t| t.id == id)
                .ok_or_else(|| anyhow::anyhow!("new token not found"))?;
            Ok((token, secret))
        })
    })
    .await
}

pub async fn revoke_token(app: &App, who: &Principal, id: i64) -> WriteResult<()> {
    let who = who.clone();
    transaction(app, move |c| {
        Box::pin(async move {
            let (owner, stored_role) =
                changes::token_owner_and_role(c, id).await?.ok_or(WriteError::NotFound("token"))?;
            // Revoking needs the same right as creating for that user, but any scope.
            let own_scopes = who.scopes.clone();
            let role = Role::parse(&stored_role).unwrap_or(Role::Viewer);
            let may = Action::ManageTokens {
                for_user: owner,
                role: crate::auth::weaker(role, who.role),
                scopes: &own_scopes,
            };
            match allow(&who, may) {
                // Someone else's token the caller may not touch: as unknown as a missing one,
                // so ids of other users' tokens cannot be probed.
                Err(WriteError::Forbidden) if owner != who.user_id => return Err(WriteError::NotFound("token")),
                other => other?,
            }
            if !accounts::revoke_token(c, id).await? {
                return Err(WriteError::NotFound("token"));
            }
            let owner_name =
                accounts::user_by_id(c, owner).await?.map(|u| u.username).unwrap_or_else(|| owner.to_string());
            journal::append_event(c, &who.name, &Event::TokenRevoked { owner: owner_name, id }).await?;
            Ok(())
        })
    })
    .await
}

/// Journals a burst of failed sign-ins (an account locked, an address refused).
pub async fn journal_login_burst(app: &App, username: &str, address: &str, what: &str) -> anyhow::Result<()> {
    let mut tx = app.store.begin().await?;
    let (username, address) = (username.to_string(), address.to_string());
    let event = match what {
        "login.locked" => Event::LoginLocked { username, address },
        _ => Event::LoginAddressBlocked { username, address },
    };
    journal::append_event(&mut tx, "system", &event).await?;
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Recovery: procedures, gates, rollout

use crate::domain::recovery::{self, Procedure, Rollout, RolloutRecord, Stage, Unmet};

/// A refused recovery step names every unmet condition.
pub fn gate_error(unmet: Vec<Unmet>) -> WriteError {
    WriteError::GateRefused { unmet }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcedureInput {
    #[schema(value_type = formats::ProcedureSlug)]
    pub slug: String,
    #[schema(schema_with = formats::procedure_name)]
    pub name: String,
    #[serde(default = "default_kind")]
    #[schema(value_type = formats::ProcedureKind)]
    pub kind: String,
    /// Empty for infrastructure.
    #[serde(default)]
    #[schema(value_type = formats::ServiceAreaOrEmpty)]
    pub area: String,
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// What basic operation lacks, one per entry.
    #[serde(default)]
    #[schema(schema_with = formats::missing_functions)]
    pub missing_functions: Vec<String>,
    /// What basic operation offers, one per entry ("Geburten anmelden"): the public pages say
    /// this first.
    #[serde(default)]
    #[schema(schema_with = formats::missing_functions)]
    pub offered_functions: Vec<String>,
    /// Slugs of the procedures it needs.
    #[serde(default)]
    #[schema(value_type = Vec<formats::Slug>)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    #[schema(value_type = formats::ExpectedDate)]
    pub expected_release: String,
    #[serde(default)]
    #[schema(value_type = formats::ExpectedDate)]
    pub expected_normal: String,
    /// Slugs of the services that need this procedure.
    #[serde(default)]
    #[schema(value_type = Vec<formats::Slug>)]
    pub services: Vec<String>,
}

/// "plan" and "neu" are pages of the board, not procedures.
pub const RESERVED_PROCEDURE_SLUGS: [&str; 2] = ["plan", "neu"];

fn default_kind() -> String {
    "procedure".into()
}
fn default_priority() -> i64 {
    100
}

/// Creates or changes a procedure's description (not its stage). A dependency cycle is refused
/// with the cycle named. Returns the procedure as saved, with the version this write produced.
pub async fn save_procedure(
    app: &App,
    who: &Principal,
    input: &ProcedureInput,
    expected_version: Option<i64>,
) -> WriteResult<Procedure> {
    save_procedure_as(app, who, input, expected_version, false).await
}

/// Adds a procedure; refused (version conflict with the stored version) if the slug exists.
pub async fn create_procedure(app: &App, who: &Principal, input: &ProcedureInput) -> WriteResult<Procedure> {
    save_procedure_as(app, who, input, None, true).await
}

async fn save_procedure_as(
    app: &App,
    who: &Principal,
    input: &ProcedureInput,
    expected_version: Option<i64>,
    must_be_new: bool,
) -> WriteResult<Procedure> {
    allow(who, Action::EditRecovery)?;
    if !is_valid_slug(&input.slug) || RESERVED_PROCEDURE_SLUGS.contains(&input.slug.as_str()) {
        return Err(invalid("slug", "write.invalid_slug"));
    }
    let name = text("name", &input.name, 200)?;
    if name.is_empty() {
        return Err(invalid("name", "write.required"));
    }
    if !recovery::PROCEDURE_KINDS.contains(&input.kind.as_str()) {
        return Err(invalid("kind", "write.invalid_kind"));
    }
    if !input.area.is_empty() && !is_service_area(&input.area) {
        return Err(invalid("area", "write.invalid_area"));
    }
    let (who, input) = (who.clone(), input.clone());
    transaction(app, move |c| {
        Box::pin(async move {
            // The procedures and their dependencies as stored now, under the journal lock.
            let stored = store::load_recovery_state(c).await?.procedures;
            let existing = stored.iter().find(|p| p.slug == input.slug).cloned();
            if must_be_new && let Some(e) = &existing {
                return Err(conflict(e.version));
            }
            for d in &input.depends_on {
                if !stored.iter().any(|p| p.slug == *d) && *d != input.slug {
                    return Err(invalid("depends_on", "write.unknown_procedure"));
                }
            }
            for s in &input.services {
                store::service_responsibility(c, s)
                    .await?
                    .ok_or_else(|| invalid("services", "write.unknown_service"))?;
            }
            let mut graph: std::collections::BTreeMap<String, Vec<String>> =
                stored.iter().map(|p| (p.slug.clone(), p.depends_on.clone())).collect();
            graph.remove(&input.slug);
            if let Some(path) = recovery::find_cycle(&graph, &input.slug, &input.depends_on) {
                return Err(WriteError::Cycle { path });
            }
            let functions = |field: &str, list: &[String]| -> WriteResult<Vec<String>> {
                Ok(list
                    .iter()
                    .map(|f| text(field, f, 300))
                    .collect::<WriteResult<Vec<_>>>()?
                    .into_iter()
                    .filter(|f| !f.is_empty())
                    .collect())
            };
            let missing = functions("missing_functions", &input.missing_functions)?;
            let offered = functions("offered_functions", &input.offered_functions)?;
            let saved = Procedure {
                slug: input.slug.clone(),
                name,
                kind: input.kind.clone(),
                area: input.area.clone(),
                priority: input.priority,
                stage: existing.as_ref().map(|e| e.stage).unwrap_or(Stage::Down),
                stage_since: existing.as_ref().map(|e| e.stage_since.clone()).unwrap_or_else(time::now_rfc3339),
                missing_functions: missing,
                offered_functions: offered,
                expected_release: expected_date("expected_release", &input.expected_release)?,
                expected_normal: expected_date("expected_normal", &input.expected_normal)?,
                depends_on: input.depends_on.clone(),
                version: existing.as_ref().map(|e| e.version + 1).unwrap_or(1),
            };
            if let (Some(expected), Some(e)) = (expected_version, &existing)
                && expected != e.version
            {
                return Err(conflict(e.version));
            }
            let services = input.services.clone();
            store::upsert_procedure(c, &saved).await?;
            changes::unlink_services_from_procedure(c, &saved.slug).await?;
            for s in &services {
                store::link_service_procedure(c, s, &saved.slug).await?;
            }
            let event = Event::ProcedureSaved {
                procedure: saved.clone(),
                services: services.clone(),
                created: saved.version == 1,
            };
            journal::append_event(c, &who.name, &event).await?;
            Ok(saved)
        })
    })
    .await
}

/// Moves a procedure to another stage through the gates. A step back needs a reason and pulls
/// dependent procedures and all their rollouts back with it.
pub async fn step_procedure(
    app: &App,
    who: &Principal,
    slug: &str,
    to: &str,
    evidence: &str,
) -> WriteResult<Vec<(String, Stage)>> {
    allow(who, Action::EditRecovery)?;
    let to_stage = Stage::parse(to);
    let evidence = text("evidence", evidence, MAX_LINE);
    let (who, slug) = (who.clone(), slug.to_string());
    transaction(app, move |c| {
        Box::pin(async move {
            // Stages, dependencies and rollouts as stored now, under the journal lock.
            let stored = store::load_recovery_state(c).await?;
            let p = stored.procedures.iter().find(|p| p.slug == slug).ok_or(WriteError::NotFound("procedure"))?;
            let to = to_stage.ok_or_else(|| invalid("stage", "write.invalid_stage"))?;
            let evidence = evidence?;
            let states = recovery::states(&stored.procedures);
            recovery::check_step(&states, &slug, to, &evidence).map_err(gate_error)?;
            if to > p.stage && evidence.is_empty() {
                return Err(invalid("evidence", "write.evidence_required"));
            }
            let changed: Vec<(String, Stage)> = recovery::cascade_back(&states, &slug, to).into_iter().collect();
            // Rollouts that the new stages no longer allow fall back with them.
            let rollouts: Vec<RolloutRecord> = stored
                .rollouts
                .iter()
                .filter_map(|r| {
                    let stage = changed.iter().find(|(n, _)| *n == r.procedure_slug)?.1;
                    let allowed = recovery::rollout_allowed(stage, r.stage);
                    (allowed != r.stage).then(|| RolloutRecord {
                        stage: allowed,
                        since: time::now_rfc3339(),
                        author: who.name.clone(),
                        ..r.clone()
                    })
                })
                .collect();
            let old: std::collections::HashMap<String, Stage> =
                stored.procedures.iter().map(|p| (p.slug.clone(), p.stage)).collect();
            let now = time::now_rfc3339();
            for (name, stage) in &changed {
                let from = old[name];
                let note = if *name == slug {
                    evidence.clone()
                } else {
                    format!("dependency {slug} stepped back: {evidence}")
                };
                changes::set_procedure_stage(c, name, *stage, &now).await?;
                store::insert_procedure_step(c, name, from.as_str(), stage.as_str(), &now, &who.name, &note).await?;
                let because_of = (*name != slug).then(|| slug.clone());
                let event =
                    Event::ProcedureStepped { procedure: name.clone(), from, to: *stage, evidence: note, because_of };
                journal::append_event(c, &who.name, &event).await?;
            }
            for r in &rollouts {
                let from = rollout_before(c, &r.procedure_slug, &r.municipality_ags).await?;
                store::upsert_rollout(c, r).await?;
                let (procedure, municipality) = (r.procedure_slug.clone(), r.municipality_ags.clone());
                let event = Event::RolloutPulledBack { procedure, municipality, from, to: r.stage };
                journal::append_event(c, &who.name, &event).await?;
            }
            Ok(changed)
        })
    })
    .await
}

/// A town's rollout stage before a change, for its event (no record: not started).
async fn rollout_before(c: &mut AnyConnection, procedure: &str, ags: &str) -> WriteResult<Rollout> {
    Ok(changes::rollout_stage(c, procedure, ags).await?.unwrap_or(Rollout::NotStarted))
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutInput {
    /// The procedure's slug (the path's).
    #[schema(value_type = formats::Slug)]
    pub procedure: String,
    #[schema(value_type = Rollout)]
    pub stage: String,
    /// Town slugs.
    #[serde(default)]
    #[schema(value_type = Vec<formats::Slug>)]
    pub municipalities: Vec<String>,
    /// District slugs: every town of the district.
    #[serde(default)]
    #[schema(value_type = Vec<formats::Slug>)]
    pub districts: Vec<String>,
    /// When the operators expect the next step there.
    #[serde(default)]
    #[schema(value_type = formats::ExpectedDate)]
    pub expected_date: String,
}

/// Rolls a released procedure out (or back) in one town or many at once; every town's step is
/// checked against the gate and journaled.
pub async fn set_rollout(app: &App, who: &Principal, input: &RolloutInput) -> WriteResult<usize> {
    allow(who, Action::EditRecovery)?;
    let (who, input) = (who.clone(), input.clone());
    transaction(app, move |c| {
        Box::pin(async move {
            // The procedure's stage and the towns' rollouts as stored now, under the journal lock.
            let stored = store::load_recovery_state(c).await?;
            let p = stored
                .procedures
                .iter()
                .find(|p| p.slug == input.procedure)
                .ok_or(WriteError::NotFound("procedure"))?;
            let to = Rollout::parse(&input.stage).ok_or_else(|| invalid("stage", "write.invalid_stage"))?;
            let expected_date = expected_date("expected_date", &input.expected_date)?;
            let mut towns: Vec<String> = Vec::new();
            for slug in &input.municipalities {
                towns.push(store::town_ags_by_slug(c, slug).await?.ok_or(WriteError::NotFound("municipality"))?);
            }
            for slug in &input.districts {
                towns.extend(store::district_towns_by_slug(c, slug).await?.ok_or(WriteError::NotFound("district"))?);
            }
            towns.sort();
            towns.dedup();
            if towns.is_empty() {
                return Err(invalid("municipalities", "write.nothing_selected"));
            }
            let current =
                |ags: &str| stored.rollouts.iter().find(|r| r.procedure_slug == p.slug && r.municipality_ags == ags);
            for ags in &towns {
                let from = current(ags).map(|r| r.stage).unwrap_or(Rollout::NotStarted);
                recovery::check_rollout(p.stage, from, to).map_err(gate_error)?;
            }
            let now = time::now_rfc3339();
            let records: Vec<RolloutRecord> = towns
                .iter()
                .map(|ags| RolloutRecord {
                    procedure_slug: p.slug.clone(),
                    municipality_ags: ags.clone(),
                    stage: to,
                    since: current(ags)
                        .filter(|r| r.stage == to)
                        .map(|r| r.since.clone())
                        .unwrap_or_else(|| now.clone()),
                    expected_date: expected_date.clone(),
                    author: who.name.clone(),
                })
                .collect();
            for r in &records {
                let from = rollout_before(c, &r.procedure_slug, &r.municipality_ags).await?;
                store::upsert_rollout(c, r).await?;
                let event = Event::RolloutChanged {
                    procedure: r.procedure_slug.clone(),
                    municipality: r.municipality_ags.clone(),
                    from,
                    to: r.stage,
                    expected_date: r.expected_date.clone(),
                };
                journal::append_event(c, &who.name, &event).await?;
            }
            Ok(records.len())
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_mail_addresses_are_local_at_domain() {
        for good in ["a@b.de", "buerger.buero+wahl@stadt.menden.de", "o'neil@xn--mnden-kva.de", "post@müller.de"] {
            assert!(valid_email(good), "{good}");
        }
        let long_local = format!("{}@b.de", "a".repeat(65));
        let long = format!("a@{}.de", vec!["b".repeat(63); 4].join("."));
        for bad in [
            "",
            "a",
            "@b.de",
            "a@",
            "a@b",
            "a@@b.de",
            "a b@c.de",
            "a@b.de\nx",
            "a\r@b.de",
            "a@-b.de",
            "a@b-.de",
            "a@b..de",
            ".a@b.de",
            "a.@b.de",
            "a..b@c.de",
            "a@b.de.",
            "a@1.2.3.4",
            "a@b_c.de",
            "\"a\"@b.de",
        ]
        .into_iter()
        .chain([long_local.as_str(), long.as_str()])
        {
            assert!(!valid_email(bad), "{bad:?}");
        }
        assert!(valid_email(&format!("{}@b.de", "a".repeat(64))), "64 characters of local part are fine");
    }
}
