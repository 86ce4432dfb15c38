//! The built-in demos, seeded from data files compiled into the binary (nothing is downloaded):
//! `suedwestfalen`, the real members of the South Westphalia provider in a mid-recovery state,
//! and `germany`, every German municipality with the same catalogue, for measuring scale.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result, bail};
use chrono::Duration;
use serde::Deserialize;
use sqlx::AnyConnection;

use crate::domain::authz::Principal;
use crate::domain::events::{Event, ImportCount};
use crate::domain::time;
use crate::domain::*;
use crate::read::live::App;
use crate::store;
use crate::store::accounts;
use crate::write;

const GEMEINDEN: &str = include_str!("../../data/gemeinden-de.csv");
const POSTLEITZAHLEN: &str = include_str!("../../data/postleitzahlen-de.csv");
const AREA: &str = include_str!("../../data/demo-area-suedwestfalen.csv");
const SERVICES: &str = include_str!("../../data/demo/services.csv");
const SCENARIO: &str = include_str!("../../data/demo/suedwestfalen.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Demo {
    /// The South Westphalia provider's 72 towns and districts, mid-recovery.
    Suedwestfalen,
    /// All 10,796 German municipalities with the same catalogue (scale tests).
    Germany,
    /// The 396 municipalities of North Rhine-Westphalia, as for `germany`: one federal state,
    /// the middle scale of the benchmarks.
    Nrw,
}

#[derive(Deserialize)]
struct GemeindeRow {
    ags: String,
    name: String,
    district_ags: String,
    district: String,
    population: Option<i64>,
    postal_code: String,
    lat: f64,
    lon: f64,
}

#[derive(Deserialize)]
struct AreaRow {
    ags: String,
    name: String,
    kind: String,
    membership: String,
}

#[derive(Deserialize)]
struct PostalRow {
    postal_code: String,
    ags: String,
    place: String,
}

#[derive(Deserialize)]
pub struct ServiceRow {
    pub slug: String,
    pub name: String,
    pub area: String,
    pub responsibility: String,
    pub leika_key: String,
    pub synonyms: String,
    pub description: String,
}

#[derive(Deserialize)]
struct Scenario {
    area_name: String,
    provider_name: String,
    rule: Vec<Rule>,
    office: Vec<OfficeDef>,
    referral: Vec<ReferralDef>,
    contact: Vec<ContactDef>,
    announcement: Vec<AnnouncementDef>,
    faq: Vec<FaqDef>,
    procedure: Vec<ProcedureDef>,
    rollout: Vec<RolloutDef>,
}

#[derive(Deserialize)]
struct ProcedureDef {
    slug: String,
    name: String,
    #[serde(default = "procedure_kind")]
    kind: String,
    #[serde(default)]
    area: String,
    priority: i64,
    stage: String,
    days_ago: i64,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    missing: Vec<String>,
    /// What basic operation offers, in residents' words.
    #[serde(default)]
    offers: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    /// Runs only for towns of member districts (district-level services).
    #[serde(default)]
    member_districts_only: bool,
    expected_release_in_days: Option<i64>,
    expected_normal_in_days: Option<i64>,
}

fn procedure_kind() -> String {
    "procedure".into()
}

#[derive(Deserialize)]
struct RolloutDef {
    procedure: String,
    #[serde(default)]
    districts: Vec<String>,
    #[serde(default)]
    towns: Vec<String>,
    stage: String,
    days_ago: i64,
    expected_in_days: Option<i64>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(default)]
    districts: Vec<String>,
    #[serde(default)]
    towns: Vec<String>,
    #[serde(default)]
    areas: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    level: String,
    #[serde(default)]
    restrictions: String,
    #[serde(default)]
    workaround: String,
    #[serde(default)]
    backlog: String,
    return_in_days: Option<i64>,
    /// How precisely the return is said (`domain::expected`): the period of this precision
    /// around the day `return_in_days` ahead; a day when not given.
    #[serde(default)]
    return_precision: Option<String>,
    days_ago: i64,
}

#[derive(Deserialize)]
struct OfficeDef {
    slug: String,
    name: String,
    owner_ags: String,
    city: String,
    postal_code: String,
    lat: f64,
    lon: f64,
    opening_hours: String,
}

#[derive(Deserialize)]
struct ReferralDef {
    office: String,
    #[serde(rename = "for")]
    for_ags: Vec<String>,
    services: Vec<String>,
    conditions: String,
    valid_for_days: i64,
}

#[derive(Deserialize)]
struct ContactDef {
    ags: String,
    #[serde(default)]
    emergency_website: String,
    #[serde(default)]
    social_media: String,
}

#[derive(Deserialize)]
struct AnnouncementDef {
    id: String,
    scope: String,
    #[serde(default, rename = "ref")]
    scope_ref: String,
    days_ago: i64,
    corrected_days_ago: Option<i64>,
    #[serde(default)]
    draft: bool,
    title: String,
    body: String,
}

#[derive(Deserialize)]
struct FaqDef {
    id: String,
    question: String,
    answer: String,
}

fn csv_rows<T: for<'de> Deserialize<'de>>(name: &str, text: &str) -> Result<Vec<T>> {
    csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{name}: line {}", i + 2)))
        .collect()
}

/// "Menden (Sauerland), Stadt" → "Menden (Sauerland)"; the official suffix is not how people say it.
fn clean_name(official: &str) -> String {
    official.split(", ").next().unwrap_or(official).trim().to_string()
}

pub fn services() -> Result<Vec<Service>> {
    let rows: Vec<ServiceRow> = csv_rows("services.csv", SERVICES)?;
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(Service {
                responsibility: Responsibility::parse(&r.responsibility)
                    .with_context(|| format!("services.csv line {}: responsibility", i + 2))?,
                synonyms: r.synonyms.split('|').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                slug: r.slug,
                name: r.name,
                area: r.area,
                leika_key: r.leika_key,
                description: r.description,
                sort_order: i as i64,
            })
        })
        .collect()
}

/// Demo accounts: (user name, password, what they may do). Demo accounts are the only ones that
/// may sign in without a second factor; the flag cannot be set any other way.
pub const DEMO_ACCOUNTS: [(&str, &str, &str); 5] = [
    ("admin", "demo-admin-passwort", "admin: everything"),
    ("krisenstab", "demo-krisenstab-passwort", "operator: recovery, area-wide announcements"),
    ("menden", "demo-menden-passwort", "editor: Menden (Sauerland)"),
    ("luedenscheid", "demo-luedenscheid-passwort", "editor: Lüdenscheid"),
    ("pruefung", "demo-pruefung-passwort", "viewer: internal pages and journal"),
];

async fn seed_accounts(c: &mut AnyConnection) -> Result<()> {
    use crate::auth;
    use crate::domain::authz::Role;
    let roles = [
        (Role::Admin, vec![]),
        (Role::Operator, vec![]),
        (Role::Editor, vec!["05962040".to_string()]),
        (Role::Editor, vec!["05962032".to_string()]),
        (Role::Viewer, vec![]),
    ];
    for ((username, password, _), (role, scopes)) in DEMO_ACCOUNTS.iter().zip(roles) {
        let id = accounts::insert_user(c, username, &format!("Demo {username}"), role, &scopes).await?;
        accounts::make_demo_account(c, id, &auth::hash_password(password)?).await?;
    }
    Ok(())
}

fn demo_name(demo: Demo) -> &'static str {
    match demo {
        Demo::Suedwestfalen => "suedwestfalen",
        Demo::Germany => "germany",
        Demo::Nrw => "nrw",
    }
}

/// Seeds `demo` into an empty database. The places and the catalogue (towns, districts, postal
/// codes, services, offices, referrals, FAQ, the procedures' descriptions and their rollout
/// plan) go in directly, in one transaction journaled as one `ImportApplied`; then the month of
/// history (statements, announcements and their corrections, gate steps, rollouts) is replayed
/// in story order through the write operations of `writes`, with the clock set to each
/// moment, so the journal tells the story. The snapshot is rebuilt once after the catalogue and
/// once at the end (the write operations decide on the stored rows, not on the snapshot).
pub async fn seed(app: &App, demo: Demo) -> Result<()> {
    let ds = build(demo)?;
    let story = story(&ds)?;
    let mut tx = app.store.begin().await?;
    crate::store::journal::lock_head(&mut tx).await?;
    write_catalogue(&mut tx, &ds).await?;
    seed_accounts(&mut tx).await?;
    store::set_meta(&mut tx, "demo", demo_name(demo)).await?;
    let counts = [
        ("districts", ds.districts.len()),
        ("municipalities", ds.municipalities.len()),
        ("postal_codes", ds.postal_codes.len()),
        ("services", ds.services.len()),
        ("offices", ds.offices.len()),
        ("referrals", ds.referrals.len()),
        ("faq", ds.faq.len()),
        ("procedures", ds.procedures.len()),
        ("rollouts", ds.rollouts.len()),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), ImportCount { new: n, updated: 0 }))
    .collect();
    let source = vec![format!("demo:{}", demo_name(demo))];
    let start = story.first().map(|(t, _)| *t - Duration::hours(1)).unwrap_or_else(chrono::Utc::now);
    time::with_clock(async {
        time::set_clock(start);
        crate::store::journal::append_event(&mut tx, "system", &Event::ImportApplied { source, counts }).await?;
        let accounts = DEMO_ACCOUNTS.iter().map(|a| a.0.to_string()).collect();
        crate::store::journal::append_event(
            &mut tx,
            "system",
            &Event::DemoSeeded { demo: demo_name(demo).into(), accounts },
        )
        .await?;
        store::bump_places_version(&mut tx).await?;
        store::bump_data_version(&mut tx).await?;
        tx.commit().await?;
        app.refresh().await?;
        write::deferring_refresh(replay(app, &ds, story)).await?;
        app.refresh().await
    })
    .await
}

/// One move of the story.
enum Move {
    Statements { targets: Vec<String>, services: Vec<String>, input: write::StatementInput },
    Announce { input: write::AnnouncementInput, id: String },
    Correct { input: write::AnnouncementInput, id: String },
    Step { procedure: String, to: crate::domain::recovery::Stage, evidence: &'static str },
    Rollout(write::RolloutInput),
}

async fn replay(app: &App, _ds: &Dataset, story: Vec<(chrono::DateTime<chrono::Utc>, Move)>) -> Result<()> {
    let who =
        Principal { user_id: 0, name: "Demo".into(), role: crate::domain::authz::Role::Admin, scopes: Vec::new() };
    let fail = |what: String| move |e: write::WriteError| anyhow::anyhow!("demo: {what}: {e:?}");
    for (at, m) in story {
        time::set_clock(at);
        match m {
            Move::Statements { targets, services, input } => {
                write::set_statements(app, &who, &targets, &services, &input, None)
                    .await
                    .map_err(fail(format!("statements {services:?}")))?;
            }
            Move::Announce { input, id } => {
                write::create_announcement_as(app, &who, &input, Some(&id)).await.map_err(fail(id))?;
            }
            Move::Correct { input, id } => {
                write::update_announcement(app, &who, &id, &input, None).await.map_err(fail(id))?;
            }
            Move::Step { procedure, to, evidence } => {
                write::step_procedure(app, &who, &procedure, to.as_str(), evidence)
                    .await
                    .map_err(fail(format!("{procedure} to {to:?}")))?;
            }
            Move::Rollout(input) => {
                let what = format!("rollout of {} to {}", input.procedure, input.stage);
                write::set_rollout(app, &who, &input).await.map_err(fail(what))?;
            }
        }
    }
    Ok(())
}

/// What the statements of one write share: time, author and the statement's five texts.
type StatementGroup = (String, String, String, String, String, String, String);

/// The history behind the demo's current state, in story order. Everything ends where `build`
/// says; moves that the gates would refuse at their scenario time (a rollout before its
/// release) happen a minute after the step that allows them.
fn story(ds: &Dataset) -> Result<Vec<(chrono::DateTime<chrono::Utc>, Move)>> {
    use crate::domain::recovery::{Rollout, Stage};
    let t = |s: &str| time::parse_rfc3339(s).with_context(|| format!("demo time {s}"));
    let mut moves: Vec<(chrono::DateTime<chrono::Utc>, u8, Move)> = Vec::new();

    // Statements, as they stand in the end: one write per time, content and set of towns.
    let mut groups: BTreeMap<StatementGroup, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for st in &ds.statements {
        let key = (
            st.stated_at.clone(),
            st.level.as_str().to_string(),
            st.restrictions.clone(),
            st.workaround.clone(),
            st.backlog.clone(),
            st.expected_return.clone(),
            String::new(),
        );
        groups.entry(key).or_default().entry(st.service_slug.clone()).or_default().push(st.scope_ags.clone());
    }
    for ((at, level, restrictions, workaround, backlog, expected_return, _), by_service) in groups {
        let mut by_targets: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        for (service, mut targets) in by_service {
            targets.sort();
            by_targets.entry(targets).or_default().push(service);
        }
        for (targets, services) in by_targets {
            let input = write::StatementInput {
                level: level.clone(),
                restrictions: restrictions.clone(),
                workaround: workaround.clone(),
                backlog: backlog.clone(),
                expected_return: expected_return.clone(),
                review_on: String::new(),
            };
            moves.push((t(&at)?, 2, Move::Statements { targets, services, input }));
        }
    }

    // Gate steps, a few days apart, the last at the procedure's `stage_since`; dependencies first.
    let evidence = |to: Stage| match to {
        Stage::UnderReview => "Forensische Prüfung begonnen",
        Stage::Cleared => "Forensische Prüfung ohne Hinweise auf Kompromittierung abgeschlossen",
        Stage::Hardened => "Neue Sicherheitsrichtlinien umgesetzt und abgenommen",
        Stage::Released => "Freigabe für den Basisbetrieb durch den Krisenstab",
        Stage::Normal => "Regelbetrieb wiederhergestellt",
        Stage::Down => "",
    };
    let mut reached: HashMap<String, BTreeMap<Stage, chrono::DateTime<chrono::Utc>>> = HashMap::new();
    let mut pending: Vec<&crate::domain::recovery::Procedure> = ds.procedures.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for p in pending {
            if p.depends_on.iter().any(|d| !reached.contains_key(d) && *d != p.slug) {
                rest.push(p);
                continue;
            }
            let stages: Vec<Stage> = Stage::ALL.into_iter().filter(|s| *s > Stage::Down && *s <= p.stage).collect();
            let last = t(&p.stage_since)?;
            let mut times = BTreeMap::new();
            let mut prev: Option<chrono::DateTime<chrono::Utc>> = None;
            for (i, to) in stages.iter().enumerate() {
                let mut at = last - Duration::days(2 * (stages.len() - 1 - i) as i64);
                if *to >= Stage::Released {
                    for d in &p.depends_on {
                        if let Some(dep) = reached.get(d).and_then(|r| r.get(&Stage::Released)) {
                            at = at.max(*dep + Duration::minutes(1));
                        }
                    }
                }
                if let Some(prev) = prev {
                    at = at.max(prev + Duration::minutes(1));
                }
                prev = Some(at);
                times.insert(*to, at);
                moves.push((at, 0, Move::Step { procedure: p.slug.clone(), to: *to, evidence: evidence(*to) }));
            }
            reached.insert(p.slug.clone(), times);
        }
        if rest.len() == before {
            bail!("demo procedures depend on each other in a circle");
        }
        pending = rest;
    }

    // Rollouts as they stand in the end: one write per procedure, stage, time and expectation.
    let slug_of: HashMap<&str, &str> = ds.municipalities.iter().map(|m| (m.ags.as_str(), m.slug.as_str())).collect();
    let mut rollouts: BTreeMap<(String, String, String, String), Vec<String>> = BTreeMap::new();
    for r in ds.rollouts.iter().filter(|r| r.stage != Rollout::NotStarted) {
        let key = (r.since.clone(), r.procedure_slug.clone(), r.stage.as_str().to_string(), r.expected_date.clone());
        rollouts.entry(key).or_default().push(slug_of[r.municipality_ags.as_str()].to_string());
    }
    for ((since, procedure, stage, expected_date), municipalities) in rollouts {
        let needs = if stage == Rollout::Normal.as_str() { Stage::Normal } else { Stage::Released };
        let mut at = t(&since)?;
        if let Some(ready) = reached.get(&procedure).and_then(|r| r.get(&needs)) {
            at = at.max(*ready + Duration::minutes(1));
        }
        let input = write::RolloutInput { procedure, stage, municipalities, districts: Vec::new(), expected_date };
        moves.push((at, 1, Move::Rollout(input)));
    }

    // Announcements: published (or drafted) when the scenario says, corrections later.
    for a in &ds.announcements {
        let input = write::AnnouncementInput {
            scope: a.scope_kind.as_str().into(),
            scope_ref: a.scope_ref.clone(),
            lang: a.lang.clone(),
            title: a.title.clone(),
            body: a.body.clone(),
            publish: if a.published_at.is_some() { "now".into() } else { "draft".into() },
        };
        let created = t(a.published_at.as_deref().unwrap_or(&a.updated_at))?;
        moves.push((created, 3, Move::Announce { input: input.clone(), id: a.id.clone() }));
        let updated = t(&a.updated_at)?;
        if updated > created {
            moves.push((updated, 3, Move::Correct { input, id: a.id.clone() }));
        }
    }
    moves.sort_by_key(|(at, order, _)| (*at, *order));
    Ok(moves.into_iter().map(|(at, _, m)| (at, m)).collect())
}

/// Places, catalogue, FAQ, referrals, the procedures' descriptions (not yet stepped) and their
/// rollout plan (every served town not started).
async fn write_catalogue(c: &mut AnyConnection, ds: &Dataset) -> Result<()> {
    use crate::domain::recovery::{Procedure, Rollout, RolloutRecord, Stage};
    store::set_meta(c, "area_name", &ds.area_name).await?;
    store::set_meta(c, "provider_name", &ds.provider_name).await?;
    let places = Dataset { statements: Vec::new(), ..ds.clone() };
    store::upsert_dataset(c, &places).await?;
    for f in &ds.faq {
        store::insert_faq(c, f).await?;
    }
    for p in &ds.procedures {
        store::upsert_procedure(c, &Procedure { stage: Stage::Down, ..p.clone() }).await?;
    }
    for (service, procedure) in &ds.service_procedures {
        store::link_service_procedure(c, service, procedure).await?;
    }
    for r in &ds.rollouts {
        let since = ds.procedures.iter().find(|p| p.slug == r.procedure_slug).map(|p| p.stage_since.clone());
        let plan = RolloutRecord {
            stage: Rollout::NotStarted,
            since: if r.stage == Rollout::NotStarted { r.since.clone() } else { since.unwrap_or_default() },
            expected_date: if r.stage == Rollout::NotStarted { r.expected_date.clone() } else { String::new() },
            ..r.clone()
        };
        store::upsert_rollout(c, &plan).await?;
    }
    Ok(())
}

/// A time `days` before `now`, a little off the full hour so the demo reads like real life.
/// The `n`-th demo town's phone number, from the range kept free for fiction (0221 4710 xxx).
fn demo_phone(n: usize) -> String {
    format!("0221 4710 {:03}", 100 + n % 900)
}

fn days_ago(now: chrono::DateTime<chrono::Utc>, days: i64) -> String {
    time::format_rfc3339(now - Duration::days(days) - Duration::minutes(37 * days))
}

/// The demo's expected return: the period of `precision` around the day `days` ahead.
fn expected_in(today: chrono::NaiveDate, days: Option<i64>, precision: Option<&str>) -> String {
    use crate::domain::expected::Expected;
    let expected = match precision {
        Some(p) => Expected::around(p, days.map(|d| today + Duration::days(d))),
        None => days.map(|d| Expected::Day(today + Duration::days(d))),
    };
    expected.map(|e| e.canonical()).unwrap_or_default()
}

/// The date `days` after `today` (negative: before), as YYYY-MM-DD.
fn date_in(today: chrono::NaiveDate, days: i64) -> String {
    (today + Duration::days(days)).format("%Y-%m-%d").to_string()
}

/// Builds the demo dataset in memory.
pub fn build(demo: Demo) -> Result<Dataset> {
    let gemeinden: Vec<GemeindeRow> = csv_rows("gemeinden-de.csv", GEMEINDEN)?;
    let area: Vec<AreaRow> = csv_rows("demo-area-suedwestfalen.csv", AREA)?;
    let scenario: Scenario = toml::from_str(SCENARIO).context("suedwestfalen.toml")?;
    let by_ags: HashMap<&str, &GemeindeRow> = gemeinden.iter().map(|g| (g.ags.as_str(), g)).collect();
    let area_names: HashMap<&str, &AreaRow> = area.iter().map(|a| (a.ags.as_str(), a)).collect();

    // Which towns, and under which names.
    let towns: Vec<(&GemeindeRow, String, bool)> = match demo {
        Demo::Suedwestfalen => area
            .iter()
            .filter(|a| a.kind == "municipality")
            .map(|a| {
                let g = by_ags.get(a.ags.as_str()).with_context(|| format!("{} missing in gemeinden-de.csv", a.ags))?;
                Ok((*g, a.name.clone(), a.membership == "member"))
            })
            .collect::<Result<_>>()?,
        Demo::Germany => gemeinden.iter().map(|g| (g, clean_name(&g.name), true)).collect(),
        // The first two digits of the key are the state's; 05 is North Rhine-Westphalia.
        Demo::Nrw => {
            gemeinden.iter().filter(|g| g.ags.starts_with("05")).map(|g| (g, clean_name(&g.name), true)).collect()
        }
    };

    let mut ds = Dataset {
        area_name: match demo {
            Demo::Suedwestfalen => scenario.area_name.clone(),
            Demo::Germany => "Notbetrieb Deutschland (Skalierungsdemo)".into(),
            Demo::Nrw => "Notbetrieb Nordrhein-Westfalen (Skalierungsdemo)".into(),
        },
        provider_name: scenario.provider_name.clone(),
        demo: true,
        ..Dataset::default()
    };

    // Districts: named as in the area file where known, with coordinates at the mean of their towns.
    let mut district_towns: BTreeMap<&str, Vec<&GemeindeRow>> = BTreeMap::new();
    for (g, _, _) in &towns {
        district_towns.entry(g.district_ags.as_str()).or_default().push(g);
    }
    let mut district_slugs = HashSet::new();
    for (ags, members) in &district_towns {
        let name = match area_names.get(ags) {
            Some(a) => a.name.clone(),
            None if demo == Demo::Suedwestfalen => format!("Kreis {}", clean_name(&members[0].district)),
            None => clean_name(&members[0].district),
        };
        let mut slug = slugify(&name);
        if !district_slugs.insert(slug.clone()) {
            slug = format!("{slug}-{ags}");
            district_slugs.insert(slug.clone());
        }
        let n = members.len() as f64;
        let (phone, email) = (demo_phone(500 + ds.districts.len()), format!("kreishaus@{}.example", slugify(&name)));
        std::sync::Arc::make_mut(&mut ds.districts).push(District {
            ags: ags.to_string(),
            slug,
            name,
            member: area_names.get(ags).is_some_and(|a| a.membership == "member") || demo != Demo::Suedwestfalen,
            lat: Some(members.iter().map(|g| g.lat).sum::<f64>() / n),
            lon: Some(members.iter().map(|g| g.lon).sum::<f64>() / n),
            // Invented like the towns' (see below), in the range's upper half.
            contact: if demo == Demo::Suedwestfalen {
                Contact { phone, email, ..Contact::default() }
            } else {
                Contact::default()
            },
        });
    }
    let district_slug: HashMap<String, String> = ds.districts.iter().map(|d| (d.ags.clone(), d.slug.clone())).collect();

    // Town slugs: plain where unique, else with the district, else with the key.
    let mut slug_count: HashMap<String, usize> = HashMap::new();
    for (_, name, _) in &towns {
        *slug_count.entry(slugify(name)).or_default() += 1;
    }
    let mut used = HashSet::new();
    for (g, name, member) in &towns {
        let mut slug = slugify(name);
        if slug_count[&slug] > 1 {
            slug = format!("{slug}-{}", district_slug[&g.district_ags]);
        }
        if !used.insert(slug.clone()) {
            slug = format!("{}-{}", slugify(name), g.ags);
            used.insert(slug.clone());
        }
        // Invented, and recognisably so: addresses under .example and phone numbers from the
        // range the Bundesnetzagentur keeps free for films and books (0221 4710 000 to 999).
        let contact = if demo == Demo::Suedwestfalen {
            Contact {
                email: format!("buergerbuero@{}.example", slugify(name)),
                phone: demo_phone(ds.municipalities.len()),
                ..Contact::default()
            }
        } else {
            Contact::default()
        };
        std::sync::Arc::make_mut(&mut ds.municipalities).push(Municipality {
            ags: g.ags.clone(),
            slug,
            name: name.clone(),
            district_ags: g.district_ags.clone(),
            member: *member,
            population: g.population,
            lat: g.lat,
            lon: g.lon,
            contact,
        });
    }
    for c in &scenario.contact {
        if let Some(m) = std::sync::Arc::make_mut(&mut ds.municipalities).iter_mut().find(|m| m.ags == c.ags) {
            m.contact.emergency_website = c.emergency_website.clone();
            m.contact.social_media = c.social_media.clone();
        }
    }

    let town_set: HashSet<&str> = ds.municipalities.iter().map(|m| m.ags.as_str()).collect();
    let postal: Vec<PostalRow> = csv_rows("postleitzahlen-de.csv", POSTLEITZAHLEN)?;
    ds.postal_codes = std::sync::Arc::new(
        postal
            .into_iter()
            .filter(|p| town_set.contains(p.ags.as_str()))
            .map(|p| PostalCode { postal_code: p.postal_code, municipality_ags: p.ags, place: p.place })
            .collect(),
    );
    // Every town gets at least the postal code of its seat.
    let with_code: HashSet<String> = ds.postal_codes.iter().map(|p| p.municipality_ags.clone()).collect();
    for (g, name, _) in &towns {
        if !with_code.contains(&g.ags) && g.postal_code.len() == 5 {
            std::sync::Arc::make_mut(&mut ds.postal_codes).push(PostalCode {
                postal_code: g.postal_code.clone(),
                municipality_ags: g.ags.clone(),
                place: name.clone(),
            });
        }
    }

    ds.services = std::sync::Arc::new(services()?);
    let service_by_slug: HashMap<&str, &Service> = ds.services.iter().map(|s| (s.slug.as_str(), s)).collect();

    let now = chrono::Utc::now();
    let today = now.date_naive();
    let ago = |days: i64| days_ago(now, days);

    // Offices: each town's citizens' office (South Westphalia only) and the scenario's offices.
    if demo == Demo::Suedwestfalen {
        for m in ds.municipalities.iter() {
            std::sync::Arc::make_mut(&mut ds.offices).push(Office {
                slug: format!("buergerbuero-{}", m.slug),
                name: format!("Bürgerbüro {}", m.name),
                owner_ags: m.ags.clone(),
                street: "Musterstraße 1".into(),
                postal_code: ds
                    .postal_codes
                    .iter()
                    .find(|p| p.municipality_ags == m.ags)
                    .map(|p| p.postal_code.clone())
                    .unwrap_or_default(),
                city: m.name.clone(),
                lat: m.lat,
                lon: m.lon,
                phone: m.contact.phone.clone(),
                email: m.contact.email.clone(),
                website: String::new(),
                opening_hours: "Mo–Fr 8:00–12:30, Do 14:00–17:30".into(),
            });
        }
    }
    // Each district of the area runs a vehicle registration office (the scenario names the real
    // ones it refers residents to; this one is invented like the contacts).
    if demo == Demo::Suedwestfalen {
        let districts: Vec<District> = ds.districts.iter().filter(|d| d.member).cloned().collect();
        for d in districts {
            if scenario.office.iter().any(|o| o.owner_ags == d.ags) {
                continue;
            }
            let seat = ds.municipalities.iter().filter(|m| m.district_ags == d.ags).max_by_key(|m| m.population);
            let Some(seat) = seat else { continue };
            std::sync::Arc::make_mut(&mut ds.offices).push(Office {
                slug: format!("strassenverkehrsamt-{}", d.slug),
                name: format!("Straßenverkehrsamt {}", d.name),
                owner_ags: d.ags.clone(),
                street: "Musterstraße 1".into(),
                postal_code: ds
                    .postal_codes
                    .iter()
                    .find(|p| p.municipality_ags == seat.ags)
                    .map(|p| p.postal_code.clone())
                    .unwrap_or_default(),
                city: seat.name.clone(),
                lat: seat.lat,
                lon: seat.lon,
                phone: d.contact.phone.clone(),
                email: format!("zulassung@{}.example", slugify(&d.name)),
                website: String::new(),
                opening_hours: "Mo–Fr 7:30–12:00, Do 14:00–17:30, nur mit Termin".into(),
            });
        }
    }
    for (scenario_office, o) in scenario.office.iter().enumerate() {
        std::sync::Arc::make_mut(&mut ds.offices).push(Office {
            slug: o.slug.clone(),
            name: o.name.clone(),
            owner_ags: o.owner_ags.clone(),
            // The offices' names and places are real; street, phone and e-mail are invented.
            street: if demo == Demo::Suedwestfalen { "Musterstraße 1".into() } else { String::new() },
            postal_code: o.postal_code.clone(),
            city: o.city.clone(),
            lat: o.lat,
            lon: o.lon,
            phone: if demo == Demo::Suedwestfalen { demo_phone(800 + scenario_office) } else { String::new() },
            email: if demo == Demo::Suedwestfalen { format!("zulassung@{}.example", o.slug) } else { String::new() },
            website: String::new(),
            opening_hours: o.opening_hours.clone(),
        });
    }

    // Statements: later rules override earlier ones.
    let mut statements: BTreeMap<(String, String), Statement> = BTreeMap::new();
    for (i, rule) in scenario.rule.iter().enumerate() {
        let level = Level::parse(&rule.level).with_context(|| format!("rule {}: level {}", i + 1, rule.level))?;
        let chosen: Vec<&Service> =
            ds.services.iter().filter(|s| rule.areas.contains(&s.area) || rule.services.contains(&s.slug)).collect();
        for s in &rule.services {
            if !service_by_slug.contains_key(s.as_str()) {
                bail!("rule {}: unknown service {s}", i + 1);
            }
        }
        let statement = |scope: &str, s: &Service| Statement {
            scope_ags: scope.to_string(),
            service_slug: s.slug.clone(),
            level,
            restrictions: rule.restrictions.clone(),
            workaround: rule.workaround.clone(),
            backlog: rule.backlog.clone(),
            expected_return: expected_in(today, rule.return_in_days, rule.return_precision.as_deref()),
            author: "Demo".into(),
            stated_at: ago(rule.days_ago),
            version: 1,
            review_on: String::new(),
        };
        for s in &chosen {
            for d in &rule.districts {
                if !district_towns.contains_key(d.as_str()) {
                    continue;
                }
                match s.responsibility {
                    Responsibility::District => {
                        statements.insert((d.clone(), s.slug.clone()), statement(d, s));
                    }
                    Responsibility::Municipality => {
                        for g in &district_towns[d.as_str()] {
                            statements.insert((g.ags.clone(), s.slug.clone()), statement(&g.ags, s));
                        }
                    }
                }
            }
            for t in &rule.towns {
                if town_set.contains(t.as_str()) {
                    statements.insert((t.clone(), s.slug.clone()), statement(t, s));
                }
            }
        }
    }
    ds.statements = statements.into_values().collect();

    for r in &scenario.referral {
        for target in &r.for_ags {
            for s in &r.services {
                ds.referrals.push(Referral {
                    id: format!("{}-{}-{}", r.office, s, target),
                    office_slug: r.office.clone(),
                    service_slug: s.clone(),
                    for_ags: target.clone(),
                    conditions: r.conditions.clone(),
                    valid_from: date_in(today, -10),
                    valid_until: date_in(today, r.valid_for_days),
                });
            }
        }
    }

    build_recovery(&scenario, &mut ds, &district_towns, &area_names, now)?;

    for a in &scenario.announcement {
        let published = ago(a.days_ago);
        ds.announcements.push(Announcement {
            id: a.id.clone(),
            scope_kind: ScopeKind::parse(&a.scope).with_context(|| format!("announcement {}: scope", a.id))?,
            scope_ref: a.scope_ref.clone(),
            lang: "de".into(),
            title: a.title.clone(),
            body: a.body.trim().to_string(),
            author: "Demo".into(),
            published_at: if a.draft { None } else { Some(published.clone()) },
            updated_at: a.corrected_days_ago.map(ago).unwrap_or(published),
            version: 1,
        });
    }
    for (i, f) in scenario.faq.iter().enumerate() {
        ds.faq.push(FaqEntry {
            id: f.id.clone(),
            scope_kind: ScopeKind::Area,
            scope_ref: String::new(),
            lang: "de".into(),
            question: f.question.clone(),
            answer: f.answer.trim().to_string(),
            sort_order: i as i64,
            published_at: Some(ago(14)),
            updated_at: ago(14),
        });
    }
    Ok(ds)
}

/// Procedures with their stage history, and a rollout record for every town the provider serves.
fn build_recovery(
    scenario: &Scenario,
    ds: &mut Dataset,
    district_towns: &BTreeMap<&str, Vec<&GemeindeRow>>,
    area: &HashMap<&str, &AreaRow>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    use crate::domain::recovery::{Procedure, Rollout, RolloutRecord, Stage};
    let today = now.date_naive();
    let ago = |days: i64| days_ago(now, days);
    let in_days = |d: Option<i64>| d.map(|d| date_in(today, d)).unwrap_or_default();
    // The provider serves its members' towns and its affected customers, not the whole country.
    let served: Vec<&Municipality> = ds.municipalities.iter().filter(|m| area.contains_key(m.ags.as_str())).collect();
    let member_district = |ags: &str| area.get(ags).is_some_and(|a| a.kind == "district" && a.membership == "member");
    for def in &scenario.procedure {
        let stage = Stage::parse(&def.stage).with_context(|| format!("procedure {}: stage", def.slug))?;
        ds.procedures.push(Procedure {
            slug: def.slug.clone(),
            name: def.name.clone(),
            kind: def.kind.clone(),
            area: def.area.clone(),
            priority: def.priority,
            stage,
            stage_since: ago(def.days_ago),
            missing_functions: def.missing.clone(),
            offered_functions: def.offers.clone(),
            expected_release: in_days(def.expected_release_in_days),
            expected_normal: in_days(def.expected_normal_in_days),
            depends_on: def.depends_on.clone(),
            version: 1,
        });
        for s in &def.services {
            if !ds.services.iter().any(|x| x.slug == *s) {
                bail!("procedure {}: unknown service {s}", def.slug);
            }
            ds.service_procedures.push((s.clone(), def.slug.clone()));
        }
        if def.kind == "procedure" {
            for m in &served {
                if def.member_districts_only && !member_district(&m.district_ags) {
                    continue;
                }
                ds.rollouts.push(RolloutRecord {
                    procedure_slug: def.slug.clone(),
                    municipality_ags: m.ags.clone(),
                    stage: Rollout::NotStarted,
                    since: ago(def.days_ago),
                    expected_date: String::new(),
                    author: "Demo".into(),
                });
            }
        }
    }
    for def in &scenario.rollout {
        let stage = Rollout::parse(&def.stage).with_context(|| format!("rollout of {}: stage", def.procedure))?;
        let mut towns: Vec<String> = def.towns.clone();
        for d in &def.districts {
            towns.extend(district_towns.get(d.as_str()).into_iter().flatten().map(|g| g.ags.clone()));
        }
        for r in
            ds.rollouts.iter_mut().filter(|r| r.procedure_slug == def.procedure && towns.contains(&r.municipality_ags))
        {
            r.stage = stage;
            r.since = ago(def.days_ago);
            r.expected_date = in_days(def.expected_in_days);
        }
    }
    // Every demo rollout must pass the gates it would have to pass in real life.
    for r in &ds.rollouts {
        let p = ds.procedures.iter().find(|p| p.slug == r.procedure_slug).context("rollout of an unknown procedure")?;
        crate::domain::recovery::check_rollout(p.stage, Rollout::NotStarted, r.stage)
            .map_err(|u| anyhow::anyhow!("demo rollout of {} breaks a gate: {u:?}", p.slug))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suedwestfalen_demo_is_complete() {
        let ds = build(Demo::Suedwestfalen).unwrap();
        assert_eq!(ds.municipalities.len(), 68);
        assert!(ds.municipalities.iter().any(|m| m.slug == "menden-sauerland" && m.ags == "05962040"));
        assert!(ds.services.len() >= 40);
        assert!(ds.services.iter().filter(|s| !s.leika_key.is_empty()).count() >= 8);
        for area in SERVICE_AREAS {
            assert!(ds.services.iter().any(|s| s.area == area), "{area}");
        }
        // Mid-recovery: every level occurs, stated or derived from the rollout.
        let snap = crate::read::snapshot::Snapshot::build(ds.clone(), String::new(), 1);
        for level in Level::ALL {
            let occurs = snap
                .data
                .municipalities
                .iter()
                .any(|m| snap.data.services.iter().any(|s| snap.availability(m, s).level == level));
            assert!(occurs, "{level:?}");
        }
        let menden = snap.municipality("menden-sauerland").unwrap();
        let wohngeld = snap.service("wohngeld").unwrap();
        assert_eq!(snap.availability(menden, wohngeld).source, crate::read::snapshot::Source::Derived);
        assert!(ds.referrals.iter().any(|r| r.for_ags == "05962" && r.service_slug == "fahrzeug-zulassen"));
        assert!(ds.postal_codes.iter().any(|p| p.postal_code == "58706"));
    }

    #[test]
    fn germany_demo_has_every_municipality_with_unique_slugs() {
        let ds = build(Demo::Germany).unwrap();
        assert_eq!(ds.municipalities.len(), 10796);
        let slugs: HashSet<_> = ds.municipalities.iter().map(|m| &m.slug).collect();
        assert_eq!(slugs.len(), 10796);
        assert!(ds.municipalities.iter().all(|m| is_valid_slug(&m.slug)));
    }

    #[test]
    fn nrw_demo_has_the_states_municipalities_and_districts() {
        let ds = build(Demo::Nrw).unwrap();
        assert_eq!(ds.municipalities.len(), 396);
        assert!(ds.municipalities.iter().all(|m| m.ags.starts_with("05")));
        assert!(ds.districts.iter().all(|d| d.ags.starts_with("05")));
        assert!(ds.municipalities.iter().any(|m| m.slug == "menden-sauerland"));
    }
}
