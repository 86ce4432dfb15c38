//! Storage: the one module that talks SQL. Portable SQL over sqlx's `Any` driver, so the same
//! statements run on SQLite (default, one file) and PostgreSQL. Handlers never see the engine.

pub mod accounts;
pub mod changes;
pub mod idempotency;
pub mod journal;
pub mod outbox;
pub mod subscriptions;
pub mod webhooks;

use std::borrow::Cow;

use anyhow::{Context, Result, bail};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::domain::*;

/// Versioned migrations, embedded in the binary. Append only; never edit a released one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/0001_initial.sql")),
    (2, "editors and journal", include_str!("../../migrations/0002_editors_and_journal.sql")),
    (3, "recovery", include_str!("../../migrations/0003_recovery.sql")),
    (4, "ids from the database", include_str!("../../migrations/0004_ids_from_the_database.sql")),
    (5, "sign-in attempts", include_str!("../../migrations/0005_sign_in_attempts.sql")),
    (6, "subscriptions and outbox", include_str!("../../migrations/0006_subscriptions_and_outbox.sql")),
    (7, "webhooks", include_str!("../../migrations/0007_webhooks.sql")),
    (
        8,
        "announcements told and webhook contacts",
        include_str!("../../migrations/0008_announcements_told_and_webhook_contacts.sql"),
    ),
    (9, "procedures offer", include_str!("../../migrations/0009_procedures_offer.sql")),
    (10, "statements review on", include_str!("../../migrations/0010_statements_review_on.sql")),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
}

/// Turns what the user typed (`sqlite:PATH`, `sqlite://PATH`, `postgres://…`) into a URL for sqlx.
pub fn normalise_url(url: &str) -> Result<(String, Engine)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_string(), Engine::Postgres));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        if path.is_empty() {
            bail!("the database URL `sqlite:` needs a file path, for example sqlite:notbetrieb.sqlite");
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let with_mode = if path.contains("mode=") { path.to_string() } else { format!("{path}{sep}mode=rwc") };
        return Ok((format!("sqlite://{with_mode}"), Engine::Sqlite));
    }
    bail!("unsupported database URL; use sqlite:PATH or postgres://USER@HOST/DB")
}

impl Store {
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (url, engine) = normalise_url(url)?;
        let options: AnyConnectOptions = url.parse().context("invalid database URL")?;
        let max = if engine == Engine::Sqlite { 4 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL lets the server read while an import writes.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .context("cannot open the database")?;
        let store = Store { pool, engine };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations).run(&self.pool).await.context("database migration failed")?;
        Ok(())
    }

    /// A write transaction. On SQLite it takes the write lock at once (BEGIN IMMEDIATE): a
    /// deferred transaction that reads and then writes can fail with "database is locked" when
    /// another writer got in between, instead of waiting its turn. On PostgreSQL it is READ
    /// COMMITTED whatever the server's default, so each statement after `journal::lock_head`
    /// sees what the writer before committed (see `writes`).
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::Postgres => self.pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await?,
        })
    }

    /// A read-only transaction for requests that only read (token and session lookups, journal
    /// listing and verification, desk pages). It never takes SQLite's write lock: a deferred
    /// `BEGIN` reads from a WAL snapshot while a writer holds the lock. On PostgreSQL it is
    /// `REPEATABLE READ READ ONLY`, so several statements (the journal and its head) see one state.
    pub async fn read(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN DEFERRED").await?,
            Engine::Postgres => self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?,
        })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub async fn is_empty(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM municipalities").fetch_one(&self.pool).await?;
        Ok(n == 0)
    }

    /// A counter bumped by every committed write; servers poll it to notice changes made by
    /// other processes (an import, another instance behind the load balancer).
    pub async fn data_version(&self) -> Result<i64> {
        let v: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'data_version'").fetch_optional(&self.pool).await?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The journal's last entry (0 when it is empty). Read before the data a snapshot is built
    /// from, every event up to it is in that snapshot: writers take the journal's head in
    /// their transaction, so entries commit in the order of their numbers.
    pub async fn journal_seq(&self) -> Result<i64> {
        let mut c = self.pool.acquire().await?;
        Ok(journal::head(&mut c).await?.0)
    }

    /// The typed events after `seq`, at most `limit` (see `journal::events_since`).
    pub async fn events_since(&self, seq: i64, limit: i64) -> Result<Vec<journal::StoredEvent>> {
        let mut c = self.read().await?;
        journal::events_since(&mut c, seq, limit).await
    }

    /// When the data last changed (RFC 3339); the epoch when never.
    pub async fn changed_at(&self) -> Result<String> {
        let v: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'changed_at'").fetch_optional(&self.pool).await?;
        Ok(v.unwrap_or_else(|| "1970-01-01T00:00:00Z".into()))
    }

    pub async fn load_dataset(&self) -> Result<Dataset> {
        let mut c = self.pool.acquire().await?;
        load_dataset(&mut c).await
    }

    /// Loads only what changes often, sharing the places of `previous`.
    pub async fn load_changing(&self, previous: &Dataset) -> Result<Dataset> {
        let mut c = self.pool.acquire().await?;
        let mut ds = Dataset {
            districts: previous.districts.clone(),
            municipalities: previous.municipalities.clone(),
            postal_codes: previous.postal_codes.clone(),
            services: previous.services.clone(),
            offices: previous.offices.clone(),
            announcement_history: previous.announcement_history.clone(),
            status_history: previous.status_history.clone(),
            ..Dataset::default()
        };
        load_changing(&mut c, &mut ds).await?;
        Ok(ds)
    }

    /// Bumped whenever towns, districts, postal codes, services or offices change.
    pub async fn places_version(&self) -> Result<i64> {
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'places_version'")
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }
}

// ---------------------------------------------------------------------------------------------
// Writes. All take a connection inside a transaction chosen by the caller, so an import or a
// demo seed commits as a whole or not at all.

pub async fn set_meta(c: &mut AnyConnection, key: &str, value: &str) -> Result<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn get_meta(c: &mut AnyConnection, key: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(&mut *c).await?)
}

/// Marks the places (towns, districts, postal codes, services, offices) as changed, so servers
/// reload them too; call in addition to `bump_data_version`.
pub async fn bump_places_version(c: &mut AnyConnection) -> Result<()> {
    let current = get_meta(c, "places_version").await?.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    set_meta(c, "places_version", &(current + 1).to_string()).await
}

/// Marks the data as changed; call once in every write transaction.
pub async fn bump_data_version(c: &mut AnyConnection) -> Result<()> {
    let current = get_meta(c, "data_version").await?.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    set_meta(c, "data_version", &(current + 1).to_string()).await?;
    set_meta(c, "changed_at", &crate::domain::time::now_rfc3339()).await
}

fn b(v: bool) -> i64 {
    v as i64
}

pub async fn upsert_district(c: &mut AnyConnection, d: &District) -> Result<()> {
    sqlx::query(
        "INSERT INTO districts (ags, slug, name, member, lat, lon, phone, email, website, emergency_website, social_media)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (ags) DO UPDATE SET slug = excluded.slug, name = excluded.name, member = excluded.member,
         lat = excluded.lat, lon = excluded.lon, phone = excluded.phone, email = excluded.email,
         website = excluded.website, emergency_website = excluded.emergency_website, social_media = excluded.social_media",
    )
    .bind(&d.ags)
    .bind(&d.slug)
    .bind(&d.name)
    .bind(b(d.member))
    .bind(d.lat)
    .bind(d.lon)
    .bind(&d.contact.phone)
    .bind(&d.contact.email)
    .bind(&d.contact.website)
    .bind(&d.contact.emergency_website)
    .bind(&d.contact.social_media)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn upsert_municipality(c: &mut AnyConnection, m: &Municipality) -> Result<()> {
    sqlx::query(
        "INSERT INTO municipalities (ags, slug, name, district_ags, member, population, lat, lon, phone, email, website,
         emergency_website, social_media) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (ags) DO UPDATE SET slug = excluded.slug, name = excluded.name, district_ags = excluded.district_ags,
         member = excluded.member, population = excluded.population, lat = excluded.lat, lon = excluded.lon,
         phone = excluded.phone, email = excluded.email, website = excluded.website,
         emergency_website = excluded.emergency_website, social_media = excluded.social_media",
    )
    .bind(&m.ags)
    .bind(&m.slug)
    .bind(&m.name)
    .bind(&m.district_ags)
    .bind(b(m.member))
    .bind(m.population)
    .bind(m.lat)
    .bind(m.lon)
    .bind(&m.contact.phone)
    .bind(&m.contact.email)
    .bind(&m.contact.website)
    .bind(&m.contact.emergency_website)
    .bind(&m.contact.social_media)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn upsert_postal_code(c: &mut AnyConnection, p: &PostalCode) -> Result<()> {
    sqlx::query(
        "INSERT INTO postal_codes (postal_code, municipality_ags, place) VALUES ($1, $2, $3)
         ON CONFLICT (postal_code, municipality_ags) DO UPDATE SET place = excluded.place",
    )
    .bind(&p.postal_code)
    .bind(&p.municipality_ags)
    .bind(&p.place)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn upsert_service(c: &mut AnyConnection, s: &Service) -> Result<()> {
    sqlx::query(
        "INSERT INTO services (slug, name, area, responsibility, leika_key, synonyms, description, sort_order)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (slug) DO UPDATE SET name = excluded.name, area = excluded.area,
         responsibility = excluded.responsibility, leika_key = excluded.leika_key, synonyms = excluded.synonyms,
         description = excluded.description, sort_order = excluded.sort_order",
    )
    .bind(&s.slug)
    .bind(&s.name)
    .bind(&s.area)
    .bind(s.responsibility.as_str())
    .bind(&s.leika_key)
    .bind(s.synonyms.join("|"))
    .bind(&s.description)
    .bind(s.sort_order)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn upsert_office(c: &mut AnyConnection, o: &Office) -> Result<()> {
    sqlx::query(
        "INSERT INTO offices (slug, name, owner_ags, street, postal_code, city, lat, lon, phone, email, website,
         opening_hours) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (slug) DO UPDATE SET name = excluded.name, owner_ags = excluded.owner_ags,
         street = excluded.street, postal_code = excluded.postal_code, city = excluded.city, lat = excluded.lat,
         lon = excluded.lon, phone = excluded.phone, email = excluded.email, website = excluded.website,
         opening_hours = excluded.opening_hours",
    )
    .bind(&o.slug)
    .bind(&o.name)
    .bind(&o.owner_ags)
    .bind(&o.street)
    .bind(&o.postal_code)
    .bind(&o.city)
    .bind(o.lat)
    .bind(o.lon)
    .bind(&o.phone)
    .bind(&o.email)
    .bind(&o.website)
    .bind(&o.opening_hours)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Stores a statement; replacing an existing one increments its version.
pub async fn upsert_statement(c: &mut AnyConnection, s: &Statement) -> Result<()> {
    sqlx::query(
        "INSERT INTO statements (scope_ags, service_slug, level, restrictions, workaround, backlog, expected_return,
         author, stated_at, version, review_on) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10)
         ON CONFLICT (scope_ags, service_slug) DO UPDATE SET level = excluded.level,
         restrictions = excluded.restrictions, workaround = excluded.workaround, backlog = excluded.backlog,
         expected_return = excluded.expected_return, author = excluded.author, stated_at = excluded.stated_at,
         version = statements.version + 1, review_on = excluded.review_on",
    )
    .bind(&s.scope_ags)
    .bind(&s.service_slug)
    .bind(s.level.as_str())
    .bind(&s.restrictions)
    .bind(&s.workaround)
    .bind(&s.backlog)
    .bind(&s.expected_return)
    .bind(&s.author)
    .bind(&s.stated_at)
    .bind(&s.review_on)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn upsert_referral(c: &mut AnyConnection, r: &Referral) -> Result<()> {
    sqlx::query(
        "INSERT INTO referrals (id, office_slug, service_slug, for_ags, conditions, valid_from, valid_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET office_slug = excluded.office_slug, service_slug = excluded.service_slug,
         for_ags = excluded.for_ags, conditions = excluded.conditions, valid_from = excluded.valid_from,
         valid_until = excluded.valid_until",
    )
    .bind(&r.id)
    .bind(&r.office_slug)
    .bind(&r.service_slug)
    .bind(&r.for_ags)
    .bind(&r.conditions)
    .bind(&r.valid_from)
    .bind(&r.valid_until)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Inserts or replaces the places, catalogue, offices, statements and referrals of `ds`
/// (imports and demos); nothing is deleted.
pub async fn upsert_dataset(c: &mut AnyConnection, ds: &Dataset) -> Result<()> {
    for d in ds.districts.iter() {
        upsert_district(c, d).await?;
    }
    for m in ds.municipalities.iter() {
        upsert_municipality(c, m).await?;
    }
    for p in ds.postal_codes.iter() {
        upsert_postal_code(c, p).await?;
    }
    for s in ds.services.iter() {
        upsert_service(c, s).await?;
    }
    for o in ds.offices.iter() {
        upsert_office(c, o).await?;
    }
    for s in &ds.statements {
        upsert_statement(c, s).await?;
    }
    for r in &ds.referrals {
        upsert_referral(c, r).await?;
    }
    Ok(())
}

pub async fn insert_announcement(c: &mut AnyConnection, a: &Announcement) -> Result<()> {
    sqlx::query(
        "INSERT INTO announcements (id, scope_kind, scope_ref, lang, title, body, author, published_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&a.id)
    .bind(a.scope_kind.as_str())
    .bind(&a.scope_ref)
    .bind(&a.lang)
    .bind(&a.title)
    .bind(&a.body)
    .bind(&a.author)
    .bind(&a.published_at)
    .bind(&a.updated_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn insert_faq(c: &mut AnyConnection, f: &FaqEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO faq_entries (id, scope_kind, scope_ref, lang, question, answer, sort_order, published_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&f.id)
    .bind(f.scope_kind.as_str())
    .bind(&f.scope_ref)
    .bind(&f.lang)
    .bind(&f.question)
    .bind(&f.answer)
    .bind(f.sort_order)
    .bind(&f.published_at)
    .bind(&f.updated_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads.

fn contact(row: &sqlx::any::AnyRow) -> Result<Contact> {
    Ok(Contact {
        phone: row.try_get("phone")?,
        email: row.try_get("email")?,
        website: row.try_get("website")?,
        emergency_website: row.try_get("emergency_website")?,
        social_media: row.try_get("social_media")?,
    })
}

pub async fn load_dataset(c: &mut AnyConnection) -> Result<Dataset> {
    let mut ds = Dataset::default();
    load_places(c, &mut ds).await?;
    load_changing(c, &mut ds).await?;
    Ok(ds)
}

/// Towns, districts, postal codes, services and offices: what changes only by import or a
/// contact edit (see `bump_places_version`).
pub async fn load_places(c: &mut AnyConnection, ds: &mut Dataset) -> Result<()> {
    for row in sqlx::query("SELECT * FROM districts ORDER BY name").fetch_all(&mut *c).await? {
        std::sync::Arc::make_mut(&mut ds.districts).push(District {
            ags: row.try_get("ags")?,
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            member: row.try_get::<i64, _>("member")? != 0,
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
            contact: contact(&row)?,
        });
    }
    for row in sqlx::query("SELECT * FROM municipalities ORDER BY name").fetch_all(&mut *c).await? {
        std::sync::Arc::make_mut(&mut ds.municipalities).push(Municipality {
            ags: row.try_get("ags")?,
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            district_ags: row.try_get("district_ags")?,
            member: row.try_get::<i64, _>("member")? != 0,
            population: row.try_get("population")?,
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
            contact: contact(&row)?,
        });
    }
    for row in sqlx::query("SELECT postal_code, municipality_ags, place FROM postal_codes ORDER BY postal_code")
        .fetch_all(&mut *c)
        .await?
    {
        std::sync::Arc::make_mut(&mut ds.postal_codes).push(PostalCode {
            postal_code: row.try_get(0)?,
            municipality_ags: row.try_get(1)?,
            place: row.try_get(2)?,
        });
    }
    for row in sqlx::query("SELECT * FROM services ORDER BY sort_order, name").fetch_all(&mut *c).await? {
        let synonyms: String = row.try_get("synonyms")?;
        let responsibility: String = row.try_get("responsibility")?;
        std::sync::Arc::make_mut(&mut ds.services).push(Service {
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            area: row.try_get("area")?,
            responsibility: Responsibility::parse(&responsibility).unwrap_or(Responsibility::Municipality),
            leika_key: row.try_get("leika_key")?,
            synonyms: synonyms.split('|').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            description: row.try_get("description")?,
            sort_order: row.try_get("sort_order")?,
        });
    }
    for row in sqlx::query("SELECT * FROM offices ORDER BY name").fetch_all(&mut *c).await? {
        std::sync::Arc::make_mut(&mut ds.offices).push(row_to_office(&row)?);
    }
    Ok(())
}

fn row_to_office(row: &sqlx::any::AnyRow) -> Result<Office> {
    Ok(Office {
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        owner_ags: row.try_get("owner_ags")?,
        street: row.try_get("street")?,
        postal_code: row.try_get("postal_code")?,
        city: row.try_get("city")?,
        lat: row.try_get("lat")?,
        lon: row.try_get("lon")?,
        phone: row.try_get("phone")?,
        email: row.try_get("email")?,
        website: row.try_get("website")?,
        opening_hours: row.try_get("opening_hours")?,
    })
}

/// Everything else: names, statements, referrals, announcements, FAQ and the recovery.
pub async fn load_changing(c: &mut AnyConnection, ds: &mut Dataset) -> Result<()> {
    ds.area_name = get_meta(c, "area_name").await?.unwrap_or_default();
    ds.provider_name = get_meta(c, "provider_name").await?.unwrap_or_default();
    ds.demo = get_meta(c, "demo").await?.is_some();
    for row in sqlx::query("SELECT * FROM statements").fetch_all(&mut *c).await? {
        let level: String = row.try_get("level")?;
        ds.statements.push(Statement {
            scope_ags: row.try_get("scope_ags")?,
            service_slug: row.try_get("service_slug")?,
            level: Level::parse(&level).with_context(|| format!("unknown level {level:?} in statements"))?,
            restrictions: row.try_get("restrictions")?,
            workaround: row.try_get("workaround")?,
            backlog: row.try_get("backlog")?,
            expected_return: row.try_get("expected_return")?,
            author: row.try_get("author")?,
            stated_at: row.try_get("stated_at")?,
            version: row.try_get("version")?,
            review_on: row.try_get("review_on")?,
        });
    }
    for row in sqlx::query("SELECT * FROM referrals ORDER BY id").fetch_all(&mut *c).await? {
        ds.referrals.push(Referral {
            id: row.try_get("id")?,
            office_slug: row.try_get("office_slug")?,
            service_slug: row.try_get("service_slug")?,
            for_ags: row.try_get("for_ags")?,
            conditions: row.try_get("conditions")?,
            valid_from: row.try_get("valid_from")?,
            valid_until: row.try_get("valid_until")?,
        });
    }
    for row in sqlx::query("SELECT * FROM announcements ORDER BY published_at DESC, id").fetch_all(&mut *c).await? {
        ds.announcements.push(row_to_announcement(&row)?);
    }
    // Only the journal entries after the ones already kept (the journal is append-only).
    let after = ds.announcement_history.last().map(|r| r.seq).unwrap_or(0);
    let newer = journal::announcement_events_since(c, after).await?;
    if !newer.is_empty() {
        std::sync::Arc::make_mut(&mut ds.announcement_history).extend(newer);
    }
    let after = ds.status_history.last().map(|r| r.seq).unwrap_or(0);
    let newer = journal::status_events_since(c, after).await?;
    if !newer.is_empty() {
        std::sync::Arc::make_mut(&mut ds.status_history).extend(newer);
    }
    load_recovery(c, ds).await?;
    for row in sqlx::query("SELECT * FROM faq_entries ORDER BY sort_order, id").fetch_all(&mut *c).await? {
        let kind: String = row.try_get("scope_kind")?;
        ds.faq.push(FaqEntry {
            id: row.try_get("id")?,
            scope_kind: ScopeKind::parse(&kind).unwrap_or(ScopeKind::Area),
            scope_ref: row.try_get("scope_ref")?,
            lang: row.try_get("lang")?,
            question: row.try_get("question")?,
            answer: row.try_get("answer")?,
            sort_order: row.try_get("sort_order")?,
            published_at: row.try_get("published_at")?,
            updated_at: row.try_get("updated_at")?,
        });
    }
    Ok(())
}

pub fn row_to_announcement(row: &sqlx::any::AnyRow) -> Result<Announcement> {
    let kind: String = row.try_get("scope_kind")?;
    Ok(Announcement {
        id: row.try_get("id")?,
        scope_kind: ScopeKind::parse(&kind).unwrap_or(ScopeKind::Area),
        scope_ref: row.try_get("scope_ref")?,
        lang: row.try_get("lang")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        author: row.try_get("author")?,
        published_at: row.try_get("published_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

async fn load_recovery(c: &mut AnyConnection, ds: &mut Dataset) -> Result<()> {
    use crate::domain::recovery::{Procedure, Rollout, RolloutRecord, Stage};
    let mut deps: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for row in sqlx::query("SELECT procedure_slug, depends_on FROM procedure_dependencies ORDER BY depends_on")
        .fetch_all(&mut *c)
        .await?
    {
        deps.entry(row.try_get(0)?).or_default().push(row.try_get(1)?);
    }
    for row in sqlx::query("SELECT * FROM procedures ORDER BY priority, name").fetch_all(&mut *c).await? {
        let slug: String = row.try_get("slug")?;
        let stage: String = row.try_get("stage")?;
        let missing: String = row.try_get("missing_functions")?;
        let offered: String = row.try_get("offered_functions")?;
        ds.procedures.push(Procedure {
            depends_on: deps.remove(&slug).unwrap_or_default(),
            slug,
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            area: row.try_get("area")?,
            priority: row.try_get("priority")?,
            stage: Stage::parse(&stage).with_context(|| format!("unknown stage {stage:?}"))?,
            stage_since: row.try_get("stage_since")?,
            missing_functions: missing.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect(),
            offered_functions: offered.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect(),
            expected_release: row.try_get("expected_release")?,
            expected_normal: row.try_get("expected_normal")?,
            version: row.try_get("version")?,
        });
    }
    for row in sqlx::query("SELECT * FROM rollouts").fetch_all(&mut *c).await? {
        let stage: String = row.try_get("stage")?;
        ds.rollouts.push(RolloutRecord {
            procedure_slug: row.try_get("procedure_slug")?,
            municipality_ags: row.try_get("municipality_ags")?,
            stage: Rollout::parse(&stage).with_context(|| format!("unknown rollout stage {stage:?}"))?,
            since: row.try_get("since")?,
            expected_date: row.try_get("expected_date")?,
            author: row.try_get("author")?,
        });
    }
    for row in sqlx::query("SELECT service_slug, procedure_slug FROM service_procedures").fetch_all(&mut *c).await? {
        ds.service_procedures.push((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(())
}

pub async fn upsert_procedure(c: &mut AnyConnection, p: &crate::domain::recovery::Procedure) -> Result<()> {
    sqlx::query(
        "INSERT INTO procedures (slug, name, kind, area, priority, stage, stage_since, missing_functions, expected_release,
         expected_normal, version, offered_functions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (slug) DO UPDATE SET name = excluded.name, kind = excluded.kind, area = excluded.area,
         priority = excluded.priority, stage = excluded.stage, stage_since = excluded.stage_since,
         missing_functions = excluded.missing_functions, expected_release = excluded.expected_release,
         expected_normal = excluded.expected_normal, version = excluded.version,
         offered_functions = excluded.offered_functions",
    )
    .bind(&p.slug)
    .bind(&p.name)
    .bind(&p.kind)
    .bind(&p.area)
    .bind(p.priority)
    .bind(p.stage.as_str())
    .bind(&p.stage_since)
    .bind(p.missing_functions.join("\n"))
    .bind(&p.expected_release)
    .bind(&p.expected_normal)
    .bind(p.version)
    .bind(p.offered_functions.join("\n"))
    .execute(&mut *c)
    .await?;
    sqlx::query("DELETE FROM procedure_dependencies WHERE procedure_slug = $1").bind(&p.slug).execute(&mut *c).await?;
    for d in &p.depends_on {
        sqlx::query("INSERT INTO procedure_dependencies (procedure_slug, depends_on) VALUES ($1, $2)")
            .bind(&p.slug)
            .bind(d)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

pub async fn upsert_rollout(c: &mut AnyConnection, r: &crate::domain::recovery::RolloutRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO rollouts (procedure_slug, municipality_ags, stage, since, expected_date, author) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (procedure_slug, municipality_ags) DO UPDATE SET stage = excluded.stage, since = excluded.since,
         expected_date = excluded.expected_date, author = excluded.author",
    )
    .bind(&r.procedure_slug)
    .bind(&r.municipality_ags)
    .bind(r.stage.as_str())
    .bind(&r.since)
    .bind(&r.expected_date)
    .bind(&r.author)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn link_service_procedure(c: &mut AnyConnection, service: &str, procedure: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO service_procedures (service_slug, procedure_slug) VALUES ($1, $2)
         ON CONFLICT (service_slug, procedure_slug) DO NOTHING",
    )
    .bind(service)
    .bind(procedure)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn insert_procedure_step(
    c: &mut AnyConnection,
    procedure: &str,
    from: &str,
    to: &str,
    at: &str,
    author: &str,
    evidence: &str,
) -> Result<()> {
    let id = next_id(c, "procedure_steps").await?;
    sqlx::query(
        "INSERT INTO procedure_steps (id, procedure_slug, from_stage, to_stage, at, author, evidence) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(procedure)
    .bind(from)
    .bind(to)
    .bind(at)
    .bind(author)
    .bind(evidence)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// One recorded stage change of a procedure, with its evidence (the board's history).
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProcedureStep {
    pub from_stage: String,
    pub to_stage: String,
    /// RFC 3339, UTC.
    pub at: String,
    pub author: String,
    pub evidence: String,
}

/// A procedure's stage history, newest first.
pub async fn procedure_steps(c: &mut AnyConnection, procedure: &str) -> Result<Vec<ProcedureStep>> {
    let rows = sqlx::query("SELECT from_stage, to_stage, at, author, evidence FROM procedure_steps WHERE procedure_slug = $1 ORDER BY id DESC")
        .bind(procedure)
        .fetch_all(&mut *c)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ProcedureStep {
                from_stage: r.try_get(0)?,
                to_stage: r.try_get(1)?,
                at: r.try_get(2)?,
                author: r.try_get(3)?,
                evidence: r.try_get(4)?,
            })
        })
        .collect()
}

/// A statement's content as its events carry it (`None`: there is none).
pub async fn stated(c: &mut AnyConnection, ags: &str, service: &str) -> Result<Option<crate::domain::events::Stated>> {
    let row = sqlx::query(
        "SELECT level, restrictions, workaround, backlog, expected_return, version FROM statements
         WHERE scope_ags = $1 AND service_slug = $2",
    )
    .bind(ags)
    .bind(service)
    .fetch_optional(&mut *c)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(crate::domain::events::Stated {
        level: Level::parse(&r.try_get::<String, _>(0)?).unwrap_or(Level::Normal),
        restrictions: r.try_get(1)?,
        workaround: r.try_get(2)?,
        backlog: r.try_get(3)?,
        expected_return: r.try_get(4)?,
        version: r.try_get(5)?,
    }))
}

// ---------------------------------------------------------------------------------------------
// Small lookups for forms and imports

/// A row that carries a version, for forms that must not overwrite someone else's change.
#[derive(Clone, Copy, Debug)]
pub enum VersionedRow {
    Municipality,
    District,
    Announcement,
    Faq,
}

/// The stored version of one row (0 when it does not exist).
pub async fn stored_version(c: &mut AnyConnection, row: VersionedRow, key: &str) -> Result<i64> {
    let sql = match row {
        VersionedRow::Municipality => "SELECT version FROM municipalities WHERE ags = $1",
        VersionedRow::District => "SELECT version FROM districts WHERE ags = $1",
        VersionedRow::Announcement => "SELECT version FROM announcements WHERE id = $1",
        VersionedRow::Faq => "SELECT version FROM faq_entries WHERE id = $1",
    };
    Ok(sqlx::query_scalar(sql).bind(key).fetch_optional(&mut *c).await?.unwrap_or(0))
}

/// The keys an import refers to or may clash with, as stored.
#[derive(Default)]
pub struct StoredKeys {
    /// (AGS, slug).
    pub districts: Vec<(String, String)>,
    pub municipalities: Vec<(String, String)>,
    /// (slug, responsibility, sort order).
    pub services: Vec<(String, String, i64)>,
    /// (slug, owner AGS).
    pub offices: Vec<(String, String)>,
    /// Referral ids.
    pub referrals: Vec<String>,
    /// (postal code, AGS).
    pub postal_codes: Vec<(String, String)>,
    /// (scope AGS, service slug).
    pub statements: Vec<(String, String)>,
}

async fn pairs(c: &mut AnyConnection, sql: &'static str) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(sql).fetch_all(&mut *c).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

pub async fn stored_keys(c: &mut AnyConnection) -> Result<StoredKeys> {
    let mut services = Vec::new();
    for r in sqlx::query("SELECT slug, responsibility, sort_order FROM services").fetch_all(&mut *c).await? {
        services.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
    }
    Ok(StoredKeys {
        districts: pairs(c, "SELECT ags, slug FROM districts").await?,
        municipalities: pairs(c, "SELECT ags, slug FROM municipalities").await?,
        services,
        offices: pairs(c, "SELECT slug, owner_ags FROM offices").await?,
        referrals: pairs(c, "SELECT id, office_slug FROM referrals").await?.into_iter().map(|(id, _)| id).collect(),
        postal_codes: pairs(c, "SELECT postal_code, municipality_ags FROM postal_codes").await?,
        statements: pairs(c, "SELECT scope_ags, service_slug FROM statements").await?,
    })
}

/// The next id for `table` (`users`, `api_tokens`, `procedure_steps`), from the database's
/// counter; call inside the inserting transaction (see migration 0004).
pub async fn next_id(c: &mut AnyConnection, table: &'static str) -> Result<i64> {
    let id: Option<i64> =
        sqlx::query_scalar("UPDATE id_counters SET value = value + 1 WHERE name = $1 RETURNING value")
            .bind(table)
            .fetch_optional(&mut *c)
            .await?;
    id.with_context(|| format!("no id counter for {table}"))
}

// ---------------------------------------------------------------------------------------------
// What writes decide on, read inside their transaction (after `journal::lock_head`).

/// Whether an AGS names a town (`Some(false)`), a district (`Some(true)`) or nothing.
pub async fn place_is_district(c: &mut AnyConnection, ags: &str) -> Result<Option<bool>> {
    let town: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM municipalities WHERE ags = $1").bind(ags).fetch_optional(&mut *c).await?;
    if town.is_some() {
        return Ok(Some(false));
    }
    let district: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM districts WHERE ags = $1").bind(ags).fetch_optional(&mut *c).await?;
    Ok(district.map(|_| true))
}

/// A service's responsibility, if the service exists.
pub async fn service_responsibility(c: &mut AnyConnection, slug: &str) -> Result<Option<Responsibility>> {
    let r: Option<String> = sqlx::query_scalar("SELECT responsibility FROM services WHERE slug = $1")
        .bind(slug)
        .fetch_optional(&mut *c)
        .await?;
    Ok(r.and_then(|r| Responsibility::parse(&r)))
}

/// The office with this slug, if there is one.
pub async fn office(c: &mut AnyConnection, slug: &str) -> Result<Option<Office>> {
    let row = sqlx::query("SELECT * FROM offices WHERE slug = $1").bind(slug).fetch_optional(&mut *c).await?;
    row.as_ref().map(row_to_office).transpose()
}

/// Where a town is, or a district's first town (for a new office without coordinates).
pub async fn place_position(c: &mut AnyConnection, ags: &str) -> Result<Option<(f64, f64)>> {
    let row =
        sqlx::query("SELECT lat, lon FROM municipalities WHERE ags = $1 OR district_ags = $1 ORDER BY ags LIMIT 1")
            .bind(ags)
            .fetch_optional(&mut *c)
            .await?;
    Ok(match row {
        Some(r) => Some((r.try_get("lat")?, r.try_get("lon")?)),
        None => None,
    })
}

pub async fn office_exists(c: &mut AnyConnection, slug: &str) -> Result<bool> {
    let r: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM offices WHERE slug = $1").bind(slug).fetch_optional(&mut *c).await?;
    Ok(r.is_some())
}

/// A town's AGS by its slug.
pub async fn town_ags_by_slug(c: &mut AnyConnection, slug: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT ags FROM municipalities WHERE slug = $1").bind(slug).fetch_optional(&mut *c).await?)
}

/// The AGS of every town of the district with this slug; `None` if there is no such district.
pub async fn district_towns_by_slug(c: &mut AnyConnection, slug: &str) -> Result<Option<Vec<String>>> {
    let ags: Option<String> =
        sqlx::query_scalar("SELECT ags FROM districts WHERE slug = $1").bind(slug).fetch_optional(&mut *c).await?;
    let Some(ags) = ags else { return Ok(None) };
    let towns = sqlx::query_scalar("SELECT ags FROM municipalities WHERE district_ags = $1 ORDER BY ags")
        .bind(&ags)
        .fetch_all(&mut *c)
        .await?;
    Ok(Some(towns))
}

/// The recovery as stored: procedures with dependencies and stages, rollouts, and which
/// services need which procedure (the same loader as the snapshot's).
pub async fn load_recovery_state(c: &mut AnyConnection) -> Result<Dataset> {
    let mut ds = Dataset::default();
    load_recovery(c, &mut ds).await?;
    Ok(ds)
}
