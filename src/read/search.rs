//! Finding services and towns from what citizens type: tolerant of synonyms, umlauts written
//! as ae/oe/ue, capitalisation and small typos ("Persnalausweis", "Fuehrerschein").

use std::collections::HashMap;

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
    "ich", "will", "moechte", "mein", "meine", "meinen", "meinem", "einen", "ein", "eine", "der", "die", "das", "den",
    "dem", "und", "oder", "fuer", "mit", "wie", "wo", "kann", "zu", "zum", "zur", "in", "im", "an", "am", "auf", "neu",
    "neue", "neuen", "bitte", "wir", "wollen", "muss",
];

fn tokens(s: &str) -> Vec<String> {
    normalise(s).split(' ').filter(|t| !t.is_empty() && !STOPWORDS.contains(t)).map(str::to_string).collect()
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

    /// Entries matching `query`, best first, with their scores.
    pub fn search(&self, query: &str, limit: usize) -> Vec<(usize, f64)> {
        let typed = tokens(query);
        if typed.is_empty() {
            return Vec::new();
        }
        let phrase = normalise(query);
        let mut hits: Vec<(usize, f64)> = Vec::new();
        for (i, (words, phrases)) in self.entries.iter().enumerate() {
            let mut score = 0.0;
            let mut matched = 0;
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
            hits.push((i, score));
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(best) = hits.first().map(|h| h.1) {
            // Drop the long tail of weak matches once a clearly better one exists.
            hits.retain(|h| h.1 >= best * 0.35);
        }
        hits.truncate(limit);
        hits
    }
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
    fn nonsense_finds_nothing() {
        assert!(index().search("xyzzy", 5).is_empty());
        assert!(index().search("", 5).is_empty());
        assert!(index().search("<script>alert(1)</script>", 5).is_empty());
    }
}
