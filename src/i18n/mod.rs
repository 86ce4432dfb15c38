//! The message catalogue: every user-visible string of the interface, per language, in
//! `messages/<lang>.toml`. German is complete and the default; adding a language is a new file.

use std::collections::HashMap;
use std::sync::OnceLock;

pub const DEFAULT_LANG: &str = "de";
pub const LANGS: [&str; 2] = ["de", "en"];

const SOURCES: [(&str, &str); 2] =
    [("de", include_str!("../../messages/de.toml")), ("en", include_str!("../../messages/en.toml"))];

type Messages = HashMap<String, String>;

fn catalogue() -> &'static HashMap<&'static str, Messages> {
    static CATALOGUE: OnceLock<HashMap<&'static str, Messages>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(lang, text)| {
                let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("messages/{lang}.toml: {e}"));
                let mut flat = Messages::new();
                flatten("", &table, &mut flat);
                (*lang, flat)
            })
            .collect()
    })
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Messages) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            other => panic!("message {key} is not text: {other:?}"),
        }
    }
}

/// A language we have, from a user's choice; anything else falls back to German.
#[cfg(test)]
pub fn lang(requested: &str) -> &'static str {
    LANGS.iter().find(|l| **l == requested).copied().unwrap_or(DEFAULT_LANG)
}

/// The message `key` in `lang`, falling back to German, then to the key itself (a test makes
/// sure no key is missing).
pub fn t(lang: &str, key: &str) -> String {
    let cat = catalogue();
    cat.get(lang)
        .and_then(|m| m.get(key))
        .or_else(|| cat[DEFAULT_LANG].get(key))
        .cloned()
        .unwrap_or_else(|| key.to_string())
}

/// `t` with `{name}` placeholders filled in.
pub fn tf(lang: &str, key: &str, args: &[(&str, String)]) -> String {
    let mut s = t(lang, key);
    for (name, value) in args {
        s = s.replace(&format!("{{{name}}}"), value);
    }
    s
}

#[cfg(test)]
pub fn has(lang: &str, key: &str) -> bool {
    catalogue().get(lang).is_some_and(|m| m.contains_key(key))
}

#[cfg(test)]
pub fn keys(lang: &str) -> Vec<String> {
    let mut k: Vec<String> = catalogue()[lang].keys().cloned().collect();
    k.sort();
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_german_key_and_no_more() {
        let de = keys("de");
        for lang in LANGS {
            let other = keys(lang);
            let missing: Vec<_> = de.iter().filter(|k| !other.contains(k)).collect();
            let extra: Vec<_> = other.iter().filter(|k| !de.contains(k)).collect();
            assert!(missing.is_empty(), "{lang} lacks {missing:?}");
            assert!(extra.is_empty(), "{lang} has unknown keys {extra:?}");
        }
    }

    #[test]
    fn every_key_used_in_templates_and_code_exists() {
        // Every file under templates/ and src/, in every folder.
        fn collect(dir: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    collect(&path, out);
                } else {
                    out.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources: Vec<String> = Vec::new();
        collect(&root.join("templates"), &mut sources);
        collect(&root.join("src"), &mut sources);
        assert!(sources.len() > 40, "the scan found only {} files", sources.len());
        let mut missing = Vec::new();
        for text in &sources {
            for pattern in ["t(\"", "tf(\"", "t(lang, \"", "tf(lang, \""] {
                for (at, _) in text.match_indices(pattern) {
                    // Only calls of t/tf themselves, not format(" or context(".
                    let before = text[..at].chars().next_back().unwrap_or(' ');
                    if before.is_alphanumeric() || before == '_' {
                        continue;
                    }
                    let key = text[at + pattern.len()..].split('"').next().unwrap();
                    // Keys built at run time ("level." ~ level) end with a separator.
                    let dynamic = key.ends_with('.') || key.ends_with('_');
                    if key.contains('.') && !dynamic && !key.contains(' ') && !has("de", key) {
                        missing.push(key.to_string());
                    }
                }
            }
        }
        assert!(missing.is_empty(), "keys missing from messages/de.toml: {missing:?}");
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(tf("de", "page.updated", &[("time", "09:00".into())]), "Stand: 09:00 Uhr");
        assert_eq!(lang("fr"), "de");
        assert_eq!(lang("en"), "en");
    }
}
