//! Finding services and towns from what citizens type: tolerant of synonyms, umlauts written
//! as ae/oe/ue, capitalisation and small typos ("Persnalausweis", "Fuehrerschein").

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::domain::{Municipality, Service};
use crate::i18n;
use crate::read::snapshot::Snapshot;

/// Lower-case, umlauts folded to ae/oe/ue/ss, everything but letters and digits turned into spaces.
pub fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::domain::fold(s).chars() {
        out.push(if c.is_alphanumeric() { c } else { ' ' });
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Words that carry no meaning for finding a service.
const STOPWORDS: &[&str] = &[
    "ich",
    "will",
    "moechte",
    "mein",
    "meine",
    "meinen",
    "meinem",
    "einen",
    "ein",
    "eine",
    "der",
    "die",
    "das",
    "den",
    "dem",
    "und",
    "oder",
    "fuer",
    "mit",
    "wie",
    "wo",
    "kann",
    "zu",
    "zum",
    "zur",
    "in",
    "im",
    "an",
    "am",
    "auf",
    "neu",
    "neue",
    "neuen",
    "bitte",
    "wir",
    "wollen",
    "muss",
    "ist",
    "sind",
    "habe",
    "hat",
    "wurde",
    "was",
    "tun",
    "brauche",
    "benoetige",
    "bekomme",
    "wann",
    "geht",
    "gibt",
    "es",
    "sich",
    "mich",
    "mir",
    "uns",
    "unser",
    "unsere",
    "unseren",
    "vom",
    "von",
    "beim",
    "bei",
    "sie",
    "er",
    "hier",
    "jetzt",
    "noch",
    "schon",
    "wieder", // German above, English below
    "i",
    "my",
    "the",
    "to",
    "for",
    "of",
    "how",
    "do",
    "can",
    "where",
    "is",
    "need",
    "want",
    "get",
    "please",
    "have",
    "has",
    "our",
    "me",
    "we",
    "you",
    "your",
    "it",
    "what",
    "when",
    "am",
    "are",
];

/// The words of `s` that carry meaning; single letters (the "s" of "driver's") carry none.
fn tokens(s: &str) -> Vec<String> {
    normalise(s)
        .split(' ')
        .filter(|t| !STOPWORDS.contains(t) && (t.chars().count() > 1 || t.chars().all(|c| c.is_ascii_digit())))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// How well one typed word matches one indexed word, 0 for not at all.
fn word_score(typed: &str, word: &str) -> f64 {
    if typed == word {
        return 3.0;
    }
    let n = typed.chars().count();
    if n >= 3 && word.starts_with(typed) {
        return 2.2;
    }
    if n >= 4 && word.contains(typed) {
        return 2.0;
    }
    let allowed = match n {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    };
    if allowed > 0 {
        // Compare with the word's start too, so a typo in a prefix still counts ("persnal" ~ "personalausweis").
        let d = strsim::damerau_levenshtein(typed, word);
        if d <= allowed {
            return 1.6;
        }
        let head: String = word.chars().take(n).collect();
        if n >= 5 && strsim::damerau_levenshtein(typed, &head) <= allowed {
            return 1.3;
        }
    }
    0.0
}

/// An index of named things (services, towns) by all the words that describe them.
#[derive(Default)]
pub struct Index {
    /// For each entry: its words (name and synonyms) and the normalised phrases.
    entries: Vec<(Vec<String>, Vec<String>)>,
    /// In how many entries a word occurs; common words ("beantragen") weigh less.
    document_frequency: HashMap<String, usize>,
}

impl Index {
    /// `texts[i]` are the name and synonyms of entry `i`.
    pub fn new(texts: Vec<Vec<String>>) -> Index {
        let mut df: HashMap<String, usize> = HashMap::new();
        let entries: Vec<(Vec<String>, Vec<String>)> = texts
            .iter()
            .map(|phrases| {
                let mut words: Vec<String> = phrases.iter().flat_map(|p| tokens(p)).collect();
                words.sort();
                words.dedup();
                for w in &words {
                    *df.entry(w.clone()).or_default() += 1;
                }
                (words, phrases.iter().map(|p| normalise(p)).collect())
            })
            .collect();
        Index { entries, document_frequency: df }
    }

    /// Entries matching `query`, best first, with their scores; the long tail of weak matches is
    /// dropped once a clearly better one exists.
    pub fn search(&self, query: &str, limit: usize) -> Vec<(usize, f64)> {
        let mut hits: Vec<(usize, f64)> = self.search_all(query).into_iter().map(|h| (h.entry, h.score)).collect();
        if let Some(best) = hits.first().map(|h| h.1) {
            hits.retain(|h| h.1 >= best * 0.35);
        }
        hits.truncate(limit);
        hits
    }

    /// Every entry matching `query` at all, best first.
    pub fn search_all(&self, query: &str) -> Vec<Hit> {
        let typed = tokens(query);
        if typed.is_empty() {
            return Vec::new();
        }
        let phrase = normalise(query);
        let mut hits: Vec<Hit> = Vec::new();
        for (i, (words, phrases)) in self.entries.iter().enumerate() {
            let mut score = 0.0;
            let mut matched = 0;
            let mut exact = 0;
            for t in &typed {
                let best = words
                    .iter()
                    .map(|w| {
                        let df = *self.document_frequency.get(w).unwrap_or(&1) as f64;
                        word_score(t, w) / (1.0 + (df - 1.0) / 3.0)
                    })
                    .fold(0.0, f64::max);
                if best > 0.0 {
                    matched += 1;
                }
                if words.binary_search(t).is_ok() {
                    exact += 1;
                }
                // A word of the entry's own name beats the same word among its synonyms.
                if phrases.first().is_some_and(|name| name.split(' ').any(|w| w == t)) {
                    score += 0.5;
                }
                score += best;
            }
            if matched == 0 {
                continue;
            }
            if phrases.contains(&phrase) {
                score += 10.0;
            } else if phrases.iter().any(|p| p.starts_with(&phrase) && phrase.len() >= 3) {
                score += 4.0;
            }
            // Every typed word should count; a query half of which matches nothing ranks lower.
            score *= matched as f64 / typed.len() as f64;
            hits.push(Hit { entry: i, score, every_word: exact == typed.len() });
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.entry.cmp(&b.entry)));
        hits
    }

    /// Entries one of whose phrases the query contains, word for word (small typos allowed):
    /// "Kindergeld beantragen" contains "Kindergeld", "Kind" does not contain "Kind geboren".
    /// With each, whether the query is nothing but that phrase.
    pub fn contained_in(&self, query: &str) -> Vec<(usize, bool)> {
        let typed = tokens(query);
        let same = |t: &String, w: &String| t == w || (t.len() >= 5 && strsim::damerau_levenshtein(t, w) <= 1);
        let mut found = Vec::new();
        for (i, (_, phrases)) in self.entries.iter().enumerate() {
            let mut contained = false;
            let mut alone = false;
            for words in phrases.iter().map(|p| tokens(p)).filter(|w| !w.is_empty()) {
                if words.iter().all(|w| typed.iter().any(|t| same(t, w))) {
                    contained = true;
                    alone |= typed.iter().all(|t| words.iter().any(|w| same(t, w)));
                }
            }
            if contained {
                found.push((i, alone));
            }
        }
        found
    }
}

/// One entry found by `Index::search_all`.
pub struct Hit {
    pub entry: usize,
    pub score: f64,
    /// Every typed word is one of the entry's words, exactly.
    pub every_word: bool,
}

/// Residents' words beyond the catalogue's synonyms; see the file's own comment.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vocabulary {
    /// Per area, its words by language code.
    areas: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    life_events: BTreeMap<String, LifeEvent>,
    elsewhere: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// English words per service slug.
    english: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct LifeEvent {
    services: Vec<String>,
    #[serde(flatten)]
    words: BTreeMap<String, Vec<String>>,
}

fn vocabulary() -> &'static Vocabulary {
    static VOCABULARY: OnceLock<Vocabulary> = OnceLock::new();
    // Compiled in and parsed by a unit test, so a broken file never reaches a build.
    VOCABULARY.get_or_init(|| toml::from_str(include_str!("search_vocabulary.toml")).expect("search_vocabulary.toml"))
}

/// German words always (the catalogue is German, and visitors of the English pages type German
/// words too), plus the words of `lang`.
fn words_for<'a>(words: &'a BTreeMap<String, Vec<String>>, lang: &str) -> impl Iterator<Item = &'a String> {
    let own = if lang == i18n::DEFAULT_LANG { None } else { words.get(lang) };
    words.get(i18n::DEFAULT_LANG).into_iter().chain(own).flatten()
}

/// Something a search can point to besides services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic {
    /// A life event (`life_event.<key>`): its services are among the results.
    LifeEvent(String),
    /// A matter another authority handles (`elsewhere.<key>` says which).
    Elsewhere(String),
}

impl Topic {
    pub fn key(&self) -> &str {
        match self {
            Topic::LifeEvent(key) | Topic::Elsewhere(key) => key,
        }
    }

    /// The life event's name, or where to go instead, in `lang`.
    pub fn text(&self, lang: &str) -> String {
        match self {
            Topic::LifeEvent(key) => i18n::t(lang, &format!("life_event.{key}")),
            Topic::Elsewhere(key) => i18n::t(lang, &format!("elsewhere.{key}")),
        }
    }
}

/// What a search found: services best first, and the topics the query names.
#[derive(Default)]
pub struct Found {
    pub services: Vec<usize>,
    pub topics: Vec<Topic>,
}

/// Search over one catalogue in one language.
pub struct ServiceSearch {
    services: Index,
    topics: Index,
    topic_keys: Vec<Topic>,
    /// Per life event, its services' positions in the catalogue, in the event's order.
    life_events: HashMap<String, Vec<usize>>,
}

/// Enough for the largest area (11 services) or life event.
const MAX_SERVICES: usize = 15;

impl ServiceSearch {
    pub fn new(services: &[Service], lang: &str) -> ServiceSearch {
        let vocabulary = vocabulary();
        let phrases = services.iter().map(|s| {
            let mut phrases: Vec<String> = std::iter::once(s.name.clone()).chain(s.synonyms.iter().cloned()).collect();
            phrases.push(i18n::t(lang, &format!("area.{}", s.area)));
            if let Some(words) = vocabulary.areas.get(&s.area) {
                phrases.extend(words_for(words, lang).cloned());
            }
            for event in vocabulary.life_events.values().filter(|e| e.services.contains(&s.slug)) {
                phrases.extend(words_for(&event.words, lang).cloned());
            }
            if lang != i18n::DEFAULT_LANG {
                phrases.extend(vocabulary.english.get(&s.slug).into_iter().flatten().cloned());
            }
            phrases
        });
        let mut topic_keys = Vec::new();
        let mut topic_phrases = Vec::new();
        for (key, event) in &vocabulary.life_events {
            // A life event none of whose services exist here is no answer.
            if services.iter().any(|s| event.services.contains(&s.slug)) {
                topic_keys.push(Topic::LifeEvent(key.clone()));
                topic_phrases.push(words_for(&event.words, lang).cloned().collect());
            }
        }
        for (key, words) in &vocabulary.elsewhere {
            topic_keys.push(Topic::Elsewhere(key.clone()));
            topic_phrases.push(words_for(words, lang).cloned().collect());
        }
        let position: HashMap<&str, usize> = services.iter().enumerate().map(|(i, s)| (s.slug.as_str(), i)).collect();
        let life_events = vocabulary
            .life_events
            .iter()
            .map(|(key, e)| {
                (key.clone(), e.services.iter().filter_map(|slug| position.get(slug.as_str()).copied()).collect())
            })
            .collect();
        ServiceSearch {
            services: Index::new(phrases.collect()),
            topics: Index::new(topic_phrases),
            topic_keys,
            life_events,
        }
    }

    pub fn find(&self, query: &str) -> Found {
        let contained = self.topics.contained_in(query);
        // When the query is just a life event ("Kind geboren"), its services come first, in the
        // order a resident needs them (the birth before its certificate); a query that says more
        // ("death certificate") is ranked as usual.
        let mut services: Vec<usize> = Vec::new();
        for (i, alone) in &contained {
            if let (true, Topic::LifeEvent(key)) = (alone, &self.topic_keys[*i]) {
                services.extend(self.life_events[key].iter().filter(|i| !services.contains(i)).collect::<Vec<_>>());
            }
        }
        for (i, _) in self.services.search(query, MAX_SERVICES) {
            if !services.contains(&i) {
                services.push(i);
            }
        }
        services.truncate(MAX_SERVICES);
        Found { services, topics: contained.into_iter().map(|(i, _)| self.topic_keys[i].clone()).collect() }
    }
}

/// Towns shown for an ambiguous place at most; the page says how many there are.
pub const MAX_TOWNS: usize = 20;

/// The answer to one search, for the page and the API alike.
#[derive(Default)]
pub struct SearchOutcome<'a> {
    pub query: String,
    /// The place as typed, or the name of the one town it named.
    pub place: String,
    /// The towns the place may mean, at most `MAX_TOWNS`: largest first among equally good matches.
    pub towns: Vec<&'a Municipality>,
    /// How many towns the place may mean in all.
    pub towns_total: usize,
    pub services: Vec<&'a Service>,
    pub topics: Vec<Topic>,
    /// The place was a postal code or name that matched nothing.
    pub place_unknown: bool,
}

impl SearchOutcome<'_> {
    /// The one town the place names, whose state the services are shown with.
    pub fn town(&self) -> Option<&Municipality> {
        if self.towns.len() == 1 { Some(self.towns[0]) } else { None }
    }
}

/// Search for what a resident typed: a service (`query`) and where they live (`place`).
pub fn find<'a>(snap: &'a Snapshot, lang: &str, query: &str, place: &str) -> SearchOutcome<'a> {
    let (query, place) = (query.trim(), place.trim());
    let (towns, towns_total) = find_towns(snap, place);
    let found = if query.is_empty() { Found::default() } else { snap.places.service_search(lang).find(query) };
    SearchOutcome {
        query: query.to_string(),
        place: match towns.as_slice() {
            [one] => one.name.clone(),
            _ => place.to_string(),
        },
        place_unknown: !place.is_empty() && towns.is_empty(),
        services: found.services.into_iter().map(|i| &snap.data.services[i]).collect(),
        topics: found.topics,
        towns,
        towns_total,
    }
}

/// The towns `place` may mean (a postal code, a name, or a town's slug as the page's own
/// choice links carry it), and how many there are before the cut at `MAX_TOWNS`.
fn find_towns<'a>(snap: &'a Snapshot, place: &str) -> (Vec<&'a Municipality>, usize) {
    if place.is_empty() {
        return (Vec::new(), 0);
    }
    if place.len() == 5 && place.bytes().all(|b| b.is_ascii_digit()) {
        let towns = snap.municipalities_for_postal_code(place);
        let total = towns.len();
        return (towns, total);
    }
    if let Some(m) = snap.municipality(place) {
        return (vec![m], 1);
    }
    let hits = snap.places.municipality_index.search_all(place);
    let Some(best) = hits.first().map(|h| h.score) else { return (Vec::new(), 0) };
    // A town's exact name wins ("Olpe" is also in "Kreis Olpe"); several towns of that name are
    // all listed.
    let typed = normalise(place);
    let exact: Vec<&Hit> =
        hits.iter().filter(|h| normalise(&snap.data.municipalities[h.entry].name) == typed).collect();
    let mut chosen: Vec<&Hit> = if exact.is_empty() {
        // Every town with all the typed words ("Neustadt an der Weinstraße" for "Neustadt"), then
        // close matches.
        hits.iter().filter(|h| h.every_word || h.score >= best * 0.35).collect()
    } else {
        exact
    };
    let population = |h: &Hit| snap.data.municipalities[h.entry].population.unwrap_or(0);
    chosen.sort_by(|a, b| {
        b.every_word.cmp(&a.every_word).then_with(|| match a.every_word {
            true => population(b).cmp(&population(a)),
            false => b.score.total_cmp(&a.score),
        })
    });
    let total = chosen.len();
    (chosen.into_iter().take(MAX_TOWNS).map(|h| &snap.data.municipalities[h.entry]).collect(), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        Index::new(vec![
            vec!["Fahrzeug zulassen".into(), "Auto anmelden".into(), "Kfz-Zulassung".into()],
            vec!["Wohnsitz anmelden".into(), "ummelden".into(), "Umzug".into()],
            vec!["Personalausweis beantragen".into(), "Ausweis".into()],
            vec!["Geburtsurkunde ausstellen".into(), "Geburtsurkunde".into()],
            vec!["Führerschein beantragen".into(), "Fahrerlaubnis".into()],
            vec!["Gewerbe anmelden".into()],
        ])
    }

    fn top(q: &str) -> Option<usize> {
        index().search(q, 5).first().map(|h| h.0)
    }

    #[test]
    fn finds_by_synonym() {
        assert_eq!(top("Auto anmelden"), Some(0));
        assert_eq!(top("ummelden"), Some(1));
        assert_eq!(top("Geburtsurkunde"), Some(3));
        assert_eq!(top("Ich will mein Auto anmelden"), Some(0));
    }

    #[test]
    fn folds_umlauts_and_case() {
        assert_eq!(normalise("Führerschein"), "fuehrerschein");
        assert_eq!(top("fuehrerschein"), Some(4));
        assert_eq!(top("FÜHRERSCHEIN"), Some(4));
    }

    #[test]
    fn tolerates_typos() {
        assert_eq!(top("Persnalausweis"), Some(2));
        assert_eq!(top("Geburtsurkunde"), Some(3));
        assert_eq!(top("Geburtsurkunte"), Some(3));
        assert_eq!(top("Fuehrerschien"), Some(4));
    }

    #[test]
    fn the_vocabulary_parses_and_names_only_known_areas_and_messages() {
        let v = vocabulary();
        let areas = ["registration", "civil_registry", "social", "vehicle", "finance", "trade"];
        assert!(v.areas.keys().all(|a| areas.contains(&a.as_str())), "{:?}", v.areas.keys());
        for lang in i18n::languages() {
            for key in v.life_events.keys() {
                let k = format!("life_event.{key}");
                assert_ne!(i18n::t(&lang.code, &k), k);
            }
            for key in v.elsewhere.keys() {
                let k = format!("elsewhere.{key}");
                assert_ne!(i18n::t(&lang.code, &k), k);
            }
        }
    }

    #[test]
    fn a_query_contains_a_topic_only_word_for_word() {
        let index = Index::new(vec![vec!["Kind geboren".into(), "Baby".into()], vec!["Kindergeld".into()]]);
        assert_eq!(index.contained_in("Unser Kind ist geboren"), vec![(0, true)]);
        assert_eq!(index.contained_in("Kindergeld beantragen"), vec![(1, false)]);
        assert_eq!(index.contained_in("Kindergelt"), vec![(1, true)]);
        assert!(index.contained_in("Kind").is_empty());
        assert!(index.contained_in("Kinder").is_empty());
    }

    #[test]
    fn nonsense_finds_nothing() {
        assert!(index().search("xyzzy", 5).is_empty());
        assert!(index().search("", 5).is_empty());
        assert!(index().search("<script>alert(1)</script>", 5).is_empty());
    }
}
