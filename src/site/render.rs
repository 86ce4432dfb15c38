//! The one renderer: every public page, for the live server and for a static export alike.
//! Functions here turn the snapshot into view models and feed them to the templates in
//! `templates/`; they never touch the database or the HTTP layer.

use std::sync::OnceLock;

use anyhow::Result;
use minijinja::{Environment, State, Value, context};
use serde::Serialize;

use crate::domain::*;
use crate::i18n;
use crate::read::search::{SearchOutcome, Topic};
use crate::read::snapshot::{Availability, Snapshot, Source};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("home.html", include_str!("../../templates/home.html")),
    ("search.html", include_str!("../../templates/search.html")),
    ("municipalities.html", include_str!("../../templates/municipalities.html")),
    ("municipality.html", include_str!("../../templates/municipality.html")),
    ("district.html", include_str!("../../templates/district.html")),
    ("service_in_town.html", include_str!("../../templates/service_in_town.html")),
    ("services.html", include_str!("../../templates/services.html")),
    ("service.html", include_str!("../../templates/service.html")),
    ("announcements.html", include_str!("../../templates/announcements.html")),
    ("fahrplan.html", include_str!("../../templates/fahrplan.html")),
    ("announcement.html", include_str!("../../templates/announcement.html")),
    ("faq.html", include_str!("../../templates/faq.html")),
    ("sources.html", include_str!("../../templates/sources.html")),
    ("error.html", include_str!("../../templates/error.html")),
    ("subscription.html", include_str!("../../templates/subscription.html")),
    ("subscriptions.html", include_str!("../../templates/subscriptions.html")),
    ("mail/manage.txt", include_str!("../../templates/mail/manage.txt")),
    ("mail/manage.html", include_str!("../../templates/mail/manage.html")),
    ("mail/webhook_stopped.txt", include_str!("../../templates/mail/webhook_stopped.txt")),
    ("mail/webhook_stopped.html", include_str!("../../templates/mail/webhook_stopped.html")),
    ("mail/confirm.txt", include_str!("../../templates/mail/confirm.txt")),
    ("mail/confirm.html", include_str!("../../templates/mail/confirm.html")),
    ("mail/changes.txt", include_str!("../../templates/mail/changes.txt")),
    ("mail/changes.html", include_str!("../../templates/mail/changes.html")),
    ("desk/base.html", include_str!("../../templates/desk/base.html")),
    ("desk/login.html", include_str!("../../templates/desk/login.html")),
    ("desk/second_factor.html", include_str!("../../templates/desk/second_factor.html")),
    ("desk/setup.html", include_str!("../../templates/desk/setup.html")),
    ("desk/recovery_codes.html", include_str!("../../templates/desk/recovery_codes.html")),
    ("desk/message.html", include_str!("../../templates/desk/message.html")),
    ("desk/refused.html", include_str!("../../templates/desk/refused.html")),
    ("desk/dashboard.html", include_str!("../../templates/desk/dashboard.html")),
    ("desk/forms.html", include_str!("../../templates/desk/forms.html")),
    ("desk/place.html", include_str!("../../templates/desk/place.html")),
    ("desk/statement.html", include_str!("../../templates/desk/statement.html")),
    ("desk/editorial_list.html", include_str!("../../templates/desk/editorial_list.html")),
    ("desk/editorial.html", include_str!("../../templates/desk/editorial.html")),
    ("desk/journal.html", include_str!("../../templates/desk/journal.html")),
    ("desk/tokens.html", include_str!("../../templates/desk/tokens.html")),
    ("desk/webhooks.html", include_str!("../../templates/desk/webhooks.html")),
    ("desk/webhook.html", include_str!("../../templates/desk/webhook.html")),
    ("desk/users.html", include_str!("../../templates/desk/users.html")),
    ("desk/user_fields.html", include_str!("../../templates/desk/user_fields.html")),
    ("desk/user.html", include_str!("../../templates/desk/user.html")),
    ("desk/recovery.html", include_str!("../../templates/desk/recovery.html")),
    ("desk/board.html", include_str!("../../templates/desk/board.html")),
    ("desk/procedure.html", include_str!("../../templates/desk/procedure.html")),
    ("desk/procedure_new.html", include_str!("../../templates/desk/procedure_new.html")),
    ("desk/plan.html", include_str!("../../templates/desk/plan.html")),
];

/// Renders any template with a prepared context (the editing desk's pages).
pub fn render_template(name: &str, ctx: Value) -> Result<String> {
    Ok(env().get_template(name)?.render(ctx)?)
}

/// Any serialisable value as a template value.
pub fn v<T: Serialize>(t: T) -> Value {
    Value::from(minijinja::value::Serde(t))
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source).unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        // Escape what HTML needs (& < > " '), but leave "/" alone so URLs stay readable.
        env.set_formatter(|out, state, value| {
            if matches!(state.auto_escape(), minijinja::AutoEscape::Html) && !value.is_safe() && !value.is_undefined() {
                let text = value.to_string();
                let mut escaped = String::with_capacity(text.len());
                for c in text.chars() {
                    match c {
                        '&' => escaped.push_str("&amp;"),
                        '<' => escaped.push_str("&lt;"),
                        '>' => escaped.push_str("&gt;"),
                        '"' => escaped.push_str("&quot;"),
                        '\'' => escaped.push_str("&#39;"),
                        c => escaped.push(c),
                    }
                }
                out.write_str(&escaped).map_err(minijinja::Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.add_function("t", template_t);
        env.add_function("language", template_language);
        env.add_function("languages", || v(i18n::languages()));
        env.add_filter("datetime", |state: &State, s: String| i18n::datetime(&page_lang(state), &s));
        env.add_filter("date", |state: &State, s: String| i18n::date(&page_lang(state), &s));
        // An expected return in words: a day, "KW 51/2026 (…)", "Mitte bis Ende Dezember 2026".
        env.add_filter("expected", |state: &State, s: String| i18n::expected_return(&page_lang(state), &s));
        env.add_filter("http_url", |s: String| http_url(&s).to_string());
        // The desk's form shows an expected return as a precision and a day within it.
        env.add_function("expected_parts", |s: String| {
            let e = crate::domain::expected::Expected::parse(&s);
            let day = e.and_then(|e| e.span()).map(|(first, _)| first.format("%Y-%m-%d").to_string());
            context! { precision => e.map(|e| e.precision()), day => day }
        });
        env
    })
}

/// The language of the page being rendered (its `lang` in the context).
fn page_lang(state: &State) -> String {
    state.lookup("lang").map(|v| v.to_string()).unwrap_or_else(|| i18n::DEFAULT_LANG.into())
}

/// `language()` in templates: the page's language (tag, dir, name, …) from its catalogue;
/// `language(code)`: that language, or none when we do not have it.
fn template_language(state: &State, code: Option<String>) -> Value {
    match code {
        None => v(i18n::language(&page_lang(state))),
        Some(code) => i18n::find(&code).map(v).unwrap_or_default(),
    }
}

/// `t("key", name=value, …)` in templates, in the page's language.
fn template_t(state: &State, key: &str, kwargs: minijinja::value::Kwargs) -> Result<String, minijinja::Error> {
    let lang = page_lang(state);
    let mut args = Vec::new();
    for name in kwargs.args() {
        let v: Value = kwargs.get(name)?;
        args.push((name, v.to_string()));
    }
    Ok(i18n::tf(&lang, key, &args))
}

/// The prefix of every public URL in a language: "" for German, "/en" for English.
pub fn base(lang: &str) -> &'static str {
    &i18n::language(lang).base
}

/// The address of a page (its path without prefix) in a language: `/en/kommunen`, and `/en`
/// (not `/en/`) for the home page.
pub fn lang_url(lang: &str, path: &str) -> String {
    let base = base(lang);
    if path == "/" && !base.is_empty() { base.to_string() } else { format!("{base}{path}") }
}

/// A distance in the language's number format with one decimal: 12,3 or 12.3
pub fn km(lang: &str, d: f64) -> String {
    i18n::decimal(lang, d, 1)
}

/// One language of the site, for the `hreflang` alternates and the language switch.
#[derive(Serialize)]
struct LanguageLink {
    code: &'static str,
    /// In its own name.
    name: &'static str,
    tag: &'static str,
    /// This page in that language.
    url: String,
}

#[derive(Serialize)]
struct Site<'a> {
    name: &'a str,
    provider: &'a str,
    demo: bool,
}

/// Everything a page needs besides its own content.
struct Page<'a> {
    snapshot: &'a Snapshot,
    lang: &'a str,
    /// This page's path without the language prefix, for the language switch.
    path: String,
    /// When the information on this page last changed.
    changed_at: String,
    nav: &'static str,
    /// Rendering a static copy (`notbetrieb export`): every page says that it is a copy, as of
    /// the page's own "Stand" (so an unchanged page is the same file in every export and an
    /// incremental publish need not rewrite it), and the search form, which needs a server,
    /// gives way to the lists.
    copy: bool,
}

impl Page<'_> {
    fn render(&self, template: &str, content: Value) -> Result<String> {
        let d = &self.snapshot.data;
        let languages: Vec<LanguageLink> = i18n::languages()
            .iter()
            .map(|l| LanguageLink { code: &l.code, name: &l.name, tag: &l.tag, url: lang_url(&l.code, &self.path) })
            .collect();
        let ctx = context! {
            lang => v(self.lang),
            base => v(base(self.lang)),
            site => v(Site { name: &d.area_name, provider: &d.provider_name, demo: d.demo }),
            changed_at => v(&self.changed_at),
            nav => v(self.nav),
            path => v(&self.path),
            alternates => v(languages),
            default_url => v(lang_url(i18n::DEFAULT_LANG, &self.path)),
            copy => v(self.copy),
            ..content
        };
        Ok(env().get_template(template)?.render(ctx)?)
    }
}

fn page<'a>(snapshot: &'a Snapshot, lang: &'a str, path: impl Into<String>, nav: &'static str, copy: bool) -> Page<'a> {
    Page { snapshot, lang, path: path.into(), changed_at: snapshot.changed_at.clone(), nav, copy }
}

// ---------------------------------------------------------------------------------------------
// View models

#[derive(Serialize)]
pub struct AvailabilityView {
    pub service_slug: String,
    pub service_name: String,
    pub level: &'static str,
    pub source: &'static str,
    /// Who said it: the town or the district.
    pub source_name: String,
    pub restrictions: String,
    pub workaround: String,
    pub backlog: String,
    pub expected_return: String,
    pub stated_at: String,
    pub has_alternatives: bool,
    /// Worse than normal with neither a workaround nor a referral: the page says so in words,
    /// with when that was last checked (the statement, or the data when nobody stated anything).
    pub lacks_workaround: bool,
    pub checked_at: String,
    /// When the recovery moved past the statement (see `Snapshot::contradiction`), or empty.
    pub contradicted_since: String,
    /// Derived from the recovery, in residents' words: what they can do here already, what
    /// not yet, and whether nothing behind it runs again yet (said first, before the details).
    pub can: Vec<String>,
    pub cannot_yet: Vec<String>,
    pub nothing_yet: bool,
    /// The procedures the service needs and how far they are here.
    pub derivation: Vec<DerivationView>,
}

fn availability_view(snap: &Snapshot, m: &Municipality, s: &Service, a: Availability) -> AvailabilityView {
    let source = match a.source {
        Source::Municipality => "municipality",
        Source::District => "district",
        Source::Derived => "derived",
        Source::NoReport => "no_report",
    };
    let source_name = match a.source {
        Source::Municipality => m.name.clone(),
        Source::District => snap.district(&m.district_ags).map(|d| d.name.clone()).unwrap_or_default(),
        Source::Derived => snap.data.provider_name.clone(),
        Source::NoReport => String::new(),
    };
    let d = snap.details(m, s, &a);
    let lacks_workaround = snap.lacks_workaround(m, s, &a);
    let contradicted_since = snap.contradiction(m, s, &a).unwrap_or_default();
    let derived = a.source == Source::Derived;
    let collect = |f: fn(&crate::read::snapshot::Derivation) -> &Vec<String>| -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for x in d.derivation.iter().flat_map(|x| f(x).iter()) {
            if !all.contains(x) {
                all.push(x.clone());
            }
        }
        if derived { all } else { Vec::new() }
    };
    let (can, cannot_yet) = (collect(|x| &x.offered_functions), collect(|x| &x.missing_functions));
    let nothing_yet = derived && d.derivation.iter().all(|x| x.rollout == crate::domain::recovery::Rollout::NotStarted);
    AvailabilityView {
        contradicted_since,
        can,
        cannot_yet,
        nothing_yet,
        lacks_workaround,
        checked_at: if d.stated_at.is_empty() { snap.changed_at_for(m) } else { d.stated_at.clone() },
        service_slug: s.slug.clone(),
        service_name: s.name.clone(),
        level: a.level.as_str(),
        source,
        source_name,
        // Derived: the plain sentences say it (`cannot_yet`), not a list of restrictions.
        restrictions: if derived { String::new() } else { d.restrictions },
        workaround: d.workaround,
        backlog: d.backlog,
        expected_return: d.expected_return,
        stated_at: d.stated_at,
        has_alternatives: snap.has_alternatives(m, s),
        derivation: d
            .derivation
            .into_iter()
            .map(|x| DerivationView {
                name: x.name,
                stage: x.stage.as_str(),
                rollout: x.rollout.as_str(),
                since: x.since,
                expected_date: x.expected_date,
                missing_functions: x.missing_functions,
            })
            .collect(),
    }
}

/// One procedure behind a service, for the sentence "basic operation since …: procedure in pilot".
#[derive(Serialize, PartialEq)]
pub struct DerivationView {
    pub name: String,
    pub stage: &'static str,
    pub rollout: &'static str,
    pub since: String,
    pub expected_date: String,
    pub missing_functions: Vec<String>,
}

#[derive(Serialize)]
struct AreaGroup {
    key: &'static str,
    /// The area's services, those that say exactly the same (level, texts, date, source)
    /// together on one line, in the order of their first.
    lines: Vec<Vec<AvailabilityView>>,
}

impl AvailabilityView {
    /// Whether two services' availabilities say exactly the same, whichever services they are.
    fn says_the_same(&self, other: &AvailabilityView) -> bool {
        fn said(a: &AvailabilityView) -> (&str, &str, &str, &str, &str, &str, &str, &str) {
            (
                a.level,
                a.source,
                &a.source_name,
                &a.restrictions,
                &a.workaround,
                &a.backlog,
                &a.expected_return,
                &a.stated_at,
            )
        }
        said(self) == said(other)
            && self.lacks_workaround == other.lacks_workaround
            && self.checked_at == other.checked_at
            && self.contradicted_since == other.contradicted_since
            && self.derivation == other.derivation
    }
}

/// Groups services that say exactly the same, keeping the order of each group's first.
fn alike(items: Vec<AvailabilityView>) -> Vec<Vec<AvailabilityView>> {
    let mut lines: Vec<Vec<AvailabilityView>> = Vec::new();
    for a in items {
        match lines.iter_mut().find(|line| line[0].says_the_same(&a)) {
            Some(line) => line.push(a),
            None => lines.push(vec![a]),
        }
    }
    lines
}

#[derive(Serialize, Default)]
pub struct LevelCounts {
    pub normal: usize,
    pub limited: usize,
    pub emergency: usize,
    pub unavailable: usize,
}

impl LevelCounts {
    pub fn add(&mut self, l: Level) {
        match l {
            Level::Normal => self.normal += 1,
            Level::Limited => self.limited += 1,
            Level::Emergency => self.emergency += 1,
            Level::Unavailable => self.unavailable += 1,
        }
    }
}

#[derive(Serialize)]
struct TownLink {
    slug: String,
    name: String,
    district: String,
}

fn town_link(snap: &Snapshot, m: &Municipality) -> TownLink {
    TownLink {
        slug: m.slug.clone(),
        name: m.name.clone(),
        district: snap.district(&m.district_ags).map(|d| d.name.clone()).unwrap_or_default(),
    }
}

#[derive(Serialize)]
struct AnnouncementView {
    id: String,
    title: String,
    /// Sanitised HTML, rendered when the snapshot was built.
    body_html: String,
    scope: String,
    published_at: String,
    updated_at: String,
    corrected: bool,
}

fn announcement_view(snap: &Snapshot, lang: &str, a: &Announcement) -> AnnouncementView {
    let published_at = a.published_at.clone().unwrap_or_default();
    AnnouncementView {
        id: a.id.clone(),
        title: a.title.clone(),
        body_html: snap.markdown.html(&a.body),
        scope: scope_name(snap, lang, &a.scope_kind, &a.scope_ref),
        corrected: a.updated_at > published_at,
        published_at,
        updated_at: a.updated_at.clone(),
    }
}

pub fn scope_name(snap: &Snapshot, lang: &str, kind: &ScopeKind, r: &str) -> String {
    match kind {
        ScopeKind::Area => i18n::t(lang, "scope.area"),
        ScopeKind::District => snap.district(r).map(|d| d.name.clone()).unwrap_or_else(|| r.to_string()),
        ScopeKind::Municipality => snap.municipality_by_ags(r).map(|m| m.name.clone()).unwrap_or_else(|| r.to_string()),
        ScopeKind::Service => snap.service(r).map(|s| s.name.clone()).unwrap_or_else(|| r.to_string()),
    }
}

#[derive(Serialize)]
struct DistrictGroup {
    slug: String,
    name: String,
    member: bool,
    town_count: usize,
    /// Empty when the area is too large to list every town on one page.
    towns: Vec<TownLink>,
}

/// Up to this many towns, overview pages list every town; beyond, they link to district pages
/// so that a page stays small on a poor mobile connection.
const LIST_ALL_TOWNS_UP_TO: usize = 250;

fn district_groups(snap: &Snapshot) -> Vec<DistrictGroup> {
    let list_towns = snap.data.municipalities.len() <= LIST_ALL_TOWNS_UP_TO;
    snap.districts_with_towns()
        .map(|d| DistrictGroup {
            slug: d.slug.clone(),
            name: d.name.clone(),
            member: d.member,
            town_count: snap.towns_of_district(&d.ags).count(),
            towns: if list_towns {
                snap.towns_of_district(&d.ags).map(|m| town_link(snap, m)).collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

pub fn district(snap: &Snapshot, lang: &str, d: &District, copy: bool) -> Result<String> {
    let towns: Vec<Value> = snap
        .towns_of_district(&d.ags)
        .map(|m| {
            let mut counts = LevelCounts::default();
            for s in snap.data.services.iter() {
                counts.add(snap.availability(m, s).level);
            }
            context! { town => v(town_link(snap, m)), counts => v(counts) }
        })
        .collect();
    // District-level services (vehicle registration, parental allowance …) as the district states them.
    let district_services: Vec<Value> = snap
        .data
        .services
        .iter()
        .filter(|s| s.responsibility == Responsibility::District)
        .filter_map(|s| {
            let m = snap.towns_of_district(&d.ags).next()?;
            let a = snap.availability(m, s);
            Some(context! { slug => v(&s.slug), name => v(&s.name), level => v(a.level.as_str()) })
        })
        .collect();
    let mut p = page(snap, lang, format!("/kreise/{}", d.slug), "towns", copy);
    // As fresh as its freshest town, so that a change elsewhere leaves the page as it is.
    if let Some(latest) = snap.towns_of_district(&d.ags).map(|m| snap.changed_at_for(m)).max() {
        p.changed_at = latest;
    }
    p.render(
        "district.html",
        context! {
            district => v(d), towns => v(towns), district_services => v(district_services),
            offices => v(snap.data.offices.iter().filter(|o| o.owner_ags == d.ags).map(office_view).collect::<Vec<_>>()),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Pages

pub fn home(snap: &Snapshot, lang: &str, copy: bool) -> Result<String> {
    let mut counts = LevelCounts::default();
    for m in snap.data.municipalities.iter() {
        for s in snap.data.services.iter() {
            counts.add(snap.availability(m, s).level);
        }
    }
    let news: Vec<_> = snap.published_announcements().take(3).map(|a| announcement_view(snap, lang, a)).collect();
    page(snap, lang, "/", "home", copy).render(
        "home.html",
        context! {
            counts => v(counts),
            town_count => v(snap.data.municipalities.len()),
            service_count => v(snap.data.services.len()),
            news => v(news),
            districts => v(district_groups(snap)),
        },
    )
}

pub fn search(snap: &Snapshot, lang: &str, outcome: &SearchOutcome, copy: bool) -> Result<String> {
    // With exactly one town, services are shown with that town's status.
    let town = outcome.town();
    let results: Vec<_> = outcome
        .services
        .iter()
        .map(|s| match town {
            Some(m) => context! { service => v(&s.slug), name => v(&s.name), availability => v(availability_view(snap, m, s, snap.availability(m, s))) },
            None => context! { service => v(&s.slug), name => v(&s.name) },
        })
        .collect();
    let (life_events, elsewhere): (Vec<&Topic>, Vec<&Topic>) =
        outcome.topics.iter().partition(|t| matches!(t, Topic::LifeEvent(_)));
    let life_events: Vec<String> = life_events.iter().map(|t| t.text(lang)).collect();
    let elsewhere: Vec<String> = elsewhere.iter().map(|t| t.text(lang)).collect();
    page(snap, lang, "/suche", "search", copy).render(
        "search.html",
        context! {
            query => v(&outcome.query),
            place => v(&outcome.place),
            place_unknown => v(outcome.place_unknown),
            towns => v(outcome.towns.iter().map(|m| town_link(snap, m)).collect::<Vec<_>>()),
            towns_total => v(outcome.towns_total),
            town => v(town.map(|m| town_link(snap, m))),
            results => v(results),
            life_events => v(life_events),
            elsewhere => v(elsewhere),
        },
    )
}

pub fn municipalities(snap: &Snapshot, lang: &str, copy: bool) -> Result<String> {
    page(snap, lang, "/kommunen", "towns", copy)
        .render("municipalities.html", context! { districts => v(district_groups(snap)) })
}

#[derive(Serialize)]
struct OfficeView {
    slug: String,
    name: String,
    street: String,
    postal_code: String,
    city: String,
    phone: String,
    email: String,
    website: String,
    opening_hours: String,
}

fn office_view(o: &Office) -> OfficeView {
    OfficeView {
        slug: o.slug.clone(),
        name: o.name.clone(),
        street: o.street.clone(),
        postal_code: o.postal_code.clone(),
        city: o.city.clone(),
        phone: o.phone.clone(),
        email: o.email.clone(),
        website: o.website.clone(),
        opening_hours: o.opening_hours.clone(),
    }
}

pub fn municipality(snap: &Snapshot, lang: &str, m: &Municipality, copy: bool) -> Result<String> {
    let mut counts = LevelCounts::default();
    let groups: Vec<AreaGroup> = SERVICE_AREAS
        .iter()
        .map(|area| AreaGroup {
            key: area,
            lines: alike(
                snap.data
                    .services
                    .iter()
                    .filter(|s| s.area == *area)
                    .map(|s| {
                        let a = snap.availability(m, s);
                        counts.add(a.level);
                        availability_view(snap, m, s, a)
                    })
                    .collect(),
            ),
        })
        .filter(|g| !g.lines.is_empty())
        .collect();
    let district = snap.district(&m.district_ags);
    let mut offices: Vec<OfficeView> = snap.offices_of(&m.ags).into_iter().map(office_view).collect();
    offices.extend(snap.offices_of(&m.district_ags).into_iter().map(office_view));
    let news: Vec<_> =
        snap.announcements_for(m).into_iter().take(5).map(|a| announcement_view(snap, lang, a)).collect();
    let mut p = page(snap, lang, format!("/kommunen/{}", m.slug), "towns", copy);
    p.changed_at = snap.changed_at_for(m);
    p.render(
        "municipality.html",
        context! {
            town => v(town_link(snap, m)),
            ags => v(&m.ags),
            population => v(m.population),
            postal_codes => v(snap.postal_codes_of(m)),
            contact => v(&m.contact),
            district_contact => v(district.map(|d| d.contact.clone())),
            social => v(m
                .contact
                .social_media
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| context! { label => l.trim(), url => http_url(l) })
                .collect::<Vec<_>>()),
            counts => v(counts),
            groups => v(groups),
            offices => v(offices),
            news => v(news),
        },
    )
}

#[derive(Serialize)]
struct AlternativeView {
    office: OfficeView,
    distance: String,
    level: &'static str,
    conditions: String,
    valid_until: String,
}

/// One step of a public history, as a sentence of its time.
#[derive(Serialize)]
pub struct HistoryView {
    pub seq: i64,
    pub at: String,
    /// The level stated, for its word and icon; `None` for a withdrawal or a rollout step.
    pub level: Option<&'static str>,
    pub text: String,
    /// The service it is about, when it is about one (statements).
    pub service_slug: Option<String>,
    pub service_name: Option<String>,
    /// The town or district whose statement it was, or the town rolled out to.
    pub place_ags: String,
}

/// The journal's statement and rollout events as residents read them: who said what, when.
pub fn history_view(snap: &Snapshot, lang: &str, item: &crate::read::snapshot::HistoryItem) -> HistoryView {
    use crate::domain::events::Event;
    let place = |ags: &str| {
        snap.municipality_by_ags(ags)
            .map(|m| m.name.clone())
            .or_else(|| snap.district(ags).map(|d| d.name.clone()))
            .unwrap_or_default()
    };
    let procedure = |slug: &str| snap.procedure(slug).map_or_else(|| slug.to_string(), |p| p.name.clone());
    let service_name = |slug: &str| snap.service(slug).map(|s| s.name.clone());
    let (level, text, service, place_ags) = match item.event {
        Event::StatementChanged { scope, service, to, .. } => {
            let mut parts = vec![i18n::tf(lang, "history.stated", &[("who", place(scope))])];
            for (key, value) in
                [("availability.restrictions", &to.restrictions), ("availability.workaround", &to.workaround)]
            {
                if !value.trim().is_empty() {
                    parts.push(format!("{}: {}", i18n::t(lang, key), value.trim()));
                }
            }
            if !to.expected_return.is_empty() && to.level != Level::Normal {
                parts.push(format!(
                    "{}: {}",
                    i18n::t(lang, "availability.expected_return"),
                    i18n::expected_return(lang, &to.expected_return)
                ));
            }
            (Some(to.level.as_str()), parts.join(" · "), Some(service.clone()), scope.clone())
        }
        Event::StatementWithdrawn { scope, service, .. } => {
            (None, i18n::tf(lang, "history.withdrawn", &[("who", place(scope))]), Some(service.clone()), scope.clone())
        }
        Event::RolloutChanged { procedure: p, municipality, to, .. } => (
            None,
            i18n::tf(
                lang,
                "history.rollout",
                &[("procedure", procedure(p)), ("rollout", i18n::t(lang, &format!("rollout.{}", to.as_str())))],
            ),
            None,
            municipality.clone(),
        ),
        Event::RolloutPulledBack { procedure: p, municipality, to, .. } => (
            None,
            i18n::tf(
                lang,
                "history.pulled_back",
                &[("procedure", procedure(p)), ("rollout", i18n::t(lang, &format!("rollout.{}", to.as_str())))],
            ),
            None,
            municipality.clone(),
        ),
        _ => (None, String::new(), None, String::new()),
    };
    HistoryView {
        seq: item.seq,
        at: item.at.to_string(),
        level,
        text,
        service_name: service.as_deref().and_then(service_name),
        service_slug: service,
        place_ags,
    }
}

/// Who handles the service for the town's residents, with every way to reach them.
fn responsible(snap: &Snapshot, m: &Municipality, s: &Service) -> Value {
    let (name, contact, offices) = snap.responsible(m, s);
    context! {
        name => name, contact => v(contact), district => s.responsibility == Responsibility::District,
        offices => v(offices.into_iter().map(office_view).collect::<Vec<_>>()),
    }
}

/// The newest steps shown on a service-in-town page; the status feed has the rest.
const HISTORY_ON_PAGE: usize = 30;

pub fn service_in_town(snap: &Snapshot, lang: &str, m: &Municipality, s: &Service, copy: bool) -> Result<String> {
    let a = snap.availability(m, s);
    let alternatives: Vec<_> = snap
        .alternatives(m, s)
        .into_iter()
        .map(|alt| AlternativeView {
            office: office_view(alt.office),
            distance: km(lang, alt.distance_km),
            level: alt.level.as_str(),
            conditions: alt.referral.conditions.clone(),
            valid_until: alt.referral.valid_until.clone(),
        })
        .collect();
    let mut p = page(snap, lang, format!("/kommunen/{}/leistungen/{}", m.slug, s.slug), "towns", copy);
    p.changed_at = snap.changed_at_for(m);
    p.render(
        "service_in_town.html",
        context! {
            town => v(town_link(snap, m)),
            service => v(s),
            availability => v(availability_view(snap, m, s, a)),
            alternatives => v(alternatives),
            contact => v(&m.contact),
            responsible => v(responsible(snap, m, s)),
            history => v(snap.history(m, s).iter().take(HISTORY_ON_PAGE).map(|h| history_view(snap, lang, h)).collect::<Vec<_>>()),
        },
    )
}

#[derive(Serialize)]
struct ServiceGroup {
    key: &'static str,
    services: Vec<Value>,
}

pub fn services(snap: &Snapshot, lang: &str, copy: bool) -> Result<String> {
    let groups: Vec<ServiceGroup> = SERVICE_AREAS
        .iter()
        .map(|area| ServiceGroup {
            key: area,
            services: snap
                .data
                .services
                .iter()
                .filter(|s| s.area == *area)
                .map(|s| {
                    let mut counts = LevelCounts::default();
                    for m in snap.data.municipalities.iter() {
                        counts.add(snap.availability(m, s).level);
                    }
                    context! { slug => v(&s.slug), name => v(&s.name), synonyms => v(&s.synonyms), counts => v(counts) }
                })
                .collect(),
        })
        .filter(|g| !g.services.is_empty())
        .collect();
    page(snap, lang, "/leistungen", "services", copy).render("services.html", context! { groups => v(groups) })
}

pub fn service(snap: &Snapshot, lang: &str, s: &Service, copy: bool) -> Result<String> {
    let list_towns = snap.data.municipalities.len() <= LIST_ALL_TOWNS_UP_TO;
    let mut counts = LevelCounts::default();
    let districts: Vec<Value> = snap
        .districts_with_towns()
        .map(|d| {
            // Towns with a statement get a row; towns without one are summed up, so the page
            // stays small even for thousands of towns.
            let mut rows = Vec::new();
            let mut quiet = Vec::new();
            for m in snap.towns_of_district(&d.ags) {
                let a = snap.availability(m, s);
                counts.add(a.level);
                if a.source == Source::NoReport {
                    quiet.push(town_link(snap, m));
                } else {
                    rows.push(
                        context! { town => v(town_link(snap, m)), availability => v(availability_view(snap, m, s, a)) },
                    );
                }
            }
            let quiet_count = quiet.len();
            context! {
                slug => v(&d.slug), name => v(&d.name), rows => v(rows), quiet_count => v(quiet_count),
                quiet => v(if list_towns { quiet } else { Vec::new() }),
            }
        })
        .collect();
    let mut p = page(snap, lang, format!("/leistungen/{}", s.slug), "services", copy);
    p.changed_at = snap.changed_at_for_service(s);
    p.render("service.html", context! { service => v(s), counts => v(counts), districts => v(districts) })
}

/// The public "Fahrplan": what is expected back when, for the area or one town.
pub fn fahrplan(snap: &Snapshot, lang: &str, town: Option<&Municipality>, copy: bool) -> Result<String> {
    let mut dates: Vec<Value> = Vec::new();
    let mut current: Option<(String, Vec<Value>)> = None;
    for r in snap.expected_returns(town) {
        if current.as_ref().is_some_and(|(d, _)| *d != r.date) {
            let (d, items) = current.take().unwrap();
            dates.push(context! { date => v(d), items => v(items) });
        }
        let entry = current.get_or_insert_with(|| (r.date.clone(), Vec::new()));
        entry.1.push(fahrplan_item(snap, &r));
    }
    if let Some((d, items)) = current {
        dates.push(context! { date => v(d), items => v(items) });
    }
    let undated: Vec<Value> = snap.undated_returns(town).into_iter().map(|r| fahrplan_item(snap, &r)).collect();
    let path = match town {
        Some(m) => format!("/kommunen/{}/fahrplan", m.slug),
        None => "/fahrplan".to_string(),
    };
    let mut p = page(snap, lang, path, "fahrplan", copy);
    if let Some(m) = town {
        p.changed_at = snap.changed_at_for(m);
    }
    p.render(
        "fahrplan.html",
        context! { dates => v(dates), undated => v(undated), town => v(town.map(|m| town_link(snap, m))) },
    )
}

fn fahrplan_item(snap: &Snapshot, r: &crate::read::snapshot::ExpectedReturn) -> Value {
    context! {
        service => v(&r.service.slug), name => v(&r.service.name), count => v(r.towns.len()),
        towns => v(r.towns.iter().take(LIST_ALL_TOWNS_UP_TO).map(|m| town_link(snap, m)).collect::<Vec<_>>()),
    }
}

pub fn announcements(snap: &Snapshot, lang: &str, copy: bool) -> Result<String> {
    let items: Vec<_> = snap.published_announcements().map(|a| announcement_view(snap, lang, a)).collect();
    page(snap, lang, "/meldungen", "news", copy).render("announcements.html", context! { items => v(items) })
}

pub fn announcement(snap: &Snapshot, lang: &str, a: &Announcement, copy: bool) -> Result<String> {
    let mut p = page(snap, lang, format!("/meldungen/{}", a.id), "news", copy);
    p.changed_at = a.updated_at.clone();
    p.render("announcement.html", context! { item => v(announcement_view(snap, lang, a)) })
}

pub fn faq(snap: &Snapshot, lang: &str, copy: bool) -> Result<String> {
    let items: Vec<Value> = snap
        .published_faq()
        .map(|f| {
            context! {
                id => v(&f.id), question => v(&f.question),
                answer_html => v(snap.markdown.html(&f.answer)),
                scope => v(scope_name(snap, lang, &f.scope_kind, &f.scope_ref)),
            }
        })
        .collect();
    page(snap, lang, "/fragen", "faq", copy).render("faq.html", context! { items => v(items) })
}

pub fn sources(snap: &Snapshot, lang: &str, copy: bool) -> Result<String> {
    page(snap, lang, "/quellen", "sources", copy).render("sources.html", context! {})
}

/// A friendly error page; `message_key` comes from the catalogue, never from the request.
pub fn error(snap: &Snapshot, lang: &str, status: u16, message_key: &str, copy: bool) -> Result<String> {
    page(snap, lang, "/", "", copy)
        .render("error.html", context! { status => v(status), message => v(i18n::t(lang, message_key)) })
}

/// A step of subscribing or unsubscribing (`step`: `pending`, `confirm`, `confirmed`,
/// `unsubscribe`, `unsubscribed`, `unknown`, `too_many`): what it is about (`scope`) and, where
/// the step needs a button, the address it posts to. Never cached: each link is someone's own.
pub struct SubscriptionStep<'a> {
    pub step: &'a str,
    pub scope: &'a str,
    pub action: &'a str,
    pub one_click: bool,
    /// A reason the request was refused, from the catalogue.
    pub error: &'a str,
}

pub fn subscription(snap: &Snapshot, lang: &str, s: &SubscriptionStep) -> Result<String> {
    page(snap, lang, "/", "", false).render(
        "subscription.html",
        context! {
            step => v(s.step),
            scope => v(s.scope),
            action => v(s.action),
            one_click => v(s.one_click),
            error => v(s.error),
        },
    )
}

/// The page of all subscriptions of an address (`mode`: `request` a link, link `sent`, the
/// `list` of `listed` subscriptions with a button each, `unknown` link).
pub fn subscriptions(snap: &Snapshot, lang: &str, mode: &str, listed: Value, error: &str) -> Result<String> {
    page(snap, lang, "/abo/verwalten", "", false)
        .render("subscriptions.html", context! { mode => v(mode), listed => listed, error => v(error) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn km_uses_decimal_comma_in_german() {
        assert_eq!(km("de", 12.34), "12,3");
        assert_eq!(km("en", 12.34), "12.3");
    }
}
