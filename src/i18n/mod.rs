//! The message catalogue: every user-visible string of the interface, per language, in
//! `messages/<code>.toml`. A language is a file and nothing else: `build.rs` finds the files,
//! each one's `[language]` table names the language (code, own name, BCP 47 tag, text direction,
//! number and date formats), and the set of languages, the URL prefixes (`/<code>`, German at
//! `/`), `Accept-Language` negotiation, `hreflang` alternates and the language switch all follow
//! from it. German is complete and the default; a missing key falls back to German. More
//! catalogues can be loaded at start-up from a directory (`serve --messages-dir`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, bail};
use serde::Serialize;
use toml::de::{DeTable, DeValue};

// `const SOURCES: &[(&str, &str)]`: every `messages/<code>.toml`, as (code, text).
include!(concat!(env!("OUT_DIR"), "/messages.rs"));

pub const DEFAULT_LANG: &str = "de";

/// A language of the interface, from its catalogue's `[language]` table.
#[derive(Debug, Clone, Serialize)]
pub struct Language {
    /// Lower-case code, the file name and the URL prefix: `de`, `en`, `uk`, `pt-br`.
    pub code: String,
    /// The language's name in itself, for the language switch: "Deutsch", "English".
    pub name: String,
    /// BCP 47 tag for `lang` and `hreflang`: `de`, `en`, `pt-BR`.
    pub tag: String,
    /// Text direction, `ltr` or `rtl`, for `dir` on `<html>`.
    pub dir: String,
    /// Between whole and fractional part of a number: "," or ".".
    pub decimal_separator: String,
    /// chrono format of a date: "%d.%m.%Y".
    pub date_format: String,
    /// chrono format of a date with time of day (German local time): "%d.%m.%Y, %H:%M".
    pub datetime_format: String,
    /// Prefix of every public URL in this language: "" for German, "/en" for English.
    pub base: String,
}

type Messages = HashMap<String, String>;

struct Catalogue {
    /// The default language first, then the others by code.
    languages: Vec<Language>,
    messages: HashMap<String, Messages>,
}

static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();

fn catalogue() -> &'static Catalogue {
    CATALOGUE.get_or_init(|| build(Vec::new()).unwrap_or_else(|e| panic!("{e:#}")))
}

/// Loads every `*.toml` in `dir` as a further language, next to the built-in ones. Call once at
/// start-up, before any text is rendered. A file that cannot be used is an error naming the file
/// and the line; a key it lacks falls back to German.
pub fn load_extra(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("messages directory {}: {e}", dir.display()))?;
    let mut extra = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        extra.push((path.display().to_string(), stem, text));
    }
    extra.sort();
    let built = build(extra)?;
    if CATALOGUE.set(built).is_err() {
        bail!("the message catalogue was already in use before the extra languages were loaded");
    }
    Ok(())
}

/// The built-in catalogues plus `extra` as (file name, code from the file name, text).
fn build(extra: Vec<(String, String, String)>) -> Result<Catalogue> {
    let mut parsed = Vec::new();
    for (code, text) in SOURCES {
        parsed.push(parse(&format!("messages/{code}.toml"), code, text, true)?);
    }
    let default_formats = parsed
        .iter()
        .find(|(l, _)| l.code == DEFAULT_LANG)
        .map(|(l, _)| l.clone())
        .ok_or_else(|| anyhow::anyhow!("messages/{DEFAULT_LANG}.toml is missing"))?;
    for (file, code, text) in &extra {
        let (mut language, messages) = parse(file, code, text, false)?;
        if parsed.iter().any(|(l, _)| l.code == language.code) {
            bail!("{file}: language {} is built in; choose another file name", language.code);
        }
        for (field, default) in [
            (&mut language.decimal_separator, &default_formats.decimal_separator),
            (&mut language.date_format, &default_formats.date_format),
            (&mut language.datetime_format, &default_formats.datetime_format),
        ] {
            if field.is_empty() {
                *field = default.clone();
            }
        }
        parsed.push((language, messages));
    }
    parsed.sort_by(|(a, _), (b, _)| (a.code != DEFAULT_LANG, &a.code).cmp(&(b.code != DEFAULT_LANG, &b.code)));
    let mut languages = Vec::new();
    let mut messages = HashMap::new();
    for (language, m) in parsed {
        messages.insert(language.code.clone(), m);
        languages.push(language);
    }
    Ok(Catalogue { languages, messages })
}

/// "FILE, line N: message" for the byte offset `at` of `text`.
fn located(file: &str, text: &str, at: Option<usize>, message: impl std::fmt::Display) -> anyhow::Error {
    match at {
        Some(at) => {
            let line = text[..at.min(text.len())].matches('\n').count() + 1;
            anyhow::anyhow!("{file}, line {line}: {message}")
        }
        None => anyhow::anyhow!("{file}: {message}"),
    }
}

/// A language code as it may appear in a URL: `xx`, `xxx`, optionally with subtags (`pt-br`),
/// never one of the site's own first path segments.
fn valid_code(code: &str) -> bool {
    let mut parts = code.split('-');
    let primary = parts.next().unwrap_or_default();
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && !["api"].contains(&code)
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.split('-').all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A chrono format that can show a date (`with_time` false) or a date with time of day.
fn valid_format(format: &str, with_time: bool) -> bool {
    use std::fmt::Write;
    if chrono::format::StrftimeItems::new(format).any(|item| matches!(item, chrono::format::Item::Error)) {
        return false;
    }
    let date = chrono::NaiveDate::from_ymd_opt(2024, 1, 3).unwrap();
    let mut out = String::new();
    if with_time {
        write!(out, "{}", date.and_hms_opt(9, 30, 0).unwrap().format(format)).is_ok()
    } else {
        write!(out, "{}", date.format(format)).is_ok()
    }
}

/// One catalogue file: its `[language]` table and its messages, flattened to `section.key`.
/// A built-in catalogue (`complete`) must state every field of `[language]`.
fn parse(file: &str, code: &str, text: &str, complete: bool) -> Result<(Language, Messages)> {
    let root = DeTable::parse(text).map_err(|e| located(file, text, e.span().map(|s| s.start), e.message()))?;
    let mut language: Option<Language> = None;
    let mut messages = Messages::new();
    for (key, value) in root.get_ref() {
        if key.get_ref() == "language" {
            let DeValue::Table(table) = value.get_ref() else {
                return Err(located(file, text, Some(value.span().start), "[language] must be a table"));
            };
            language = Some(language_table(file, code, text, key.span().start, table, complete)?);
        } else {
            flatten(file, text, "", key.get_ref(), value, &mut messages)?;
        }
    }
    let language = language.ok_or_else(|| {
        located(
            file,
            text,
            None,
            "no [language] table (code, name, tag, dir, decimal_separator, date_format, datetime_format)",
        )
    })?;
    Ok((language, messages))
}

fn language_table(file: &str, code: &str, text: &str, at: usize, table: &DeTable, complete: bool) -> Result<Language> {
    let mut fields: HashMap<&str, String> = HashMap::new();
    const FIELDS: [&str; 7] = ["code", "name", "tag", "dir", "decimal_separator", "date_format", "datetime_format"];
    for (key, value) in table {
        let name = key.get_ref().as_ref();
        let Some(field) = FIELDS.iter().find(|f| **f == name) else {
            return Err(located(file, text, Some(key.span().start), format!("unknown field language.{name}")));
        };
        let DeValue::String(s) = value.get_ref() else {
            return Err(located(file, text, Some(value.span().start), format!("language.{name} must be text")));
        };
        let s = s.to_string();
        let ok = match name {
            "code" => s == code && valid_code(&s),
            "tag" => valid_tag(&s),
            "dir" => s == "ltr" || s == "rtl",
            "name" | "decimal_separator" => !s.trim().is_empty(),
            "date_format" => valid_format(&s, false),
            _ => valid_format(&s, true),
        };
        if !ok {
            let expected = match name {
                "code" => {
                    format!("\"{code}\", the file's name (lower-case letters, 2 or 3 of them, optionally -subtags)")
                }
                "tag" => "a BCP 47 tag such as \"de\" or \"pt-BR\"".to_string(),
                "dir" => "\"ltr\" or \"rtl\"".to_string(),
                "name" | "decimal_separator" => "not empty".to_string(),
                _ => "a chrono format such as \"%d.%m.%Y\"".to_string(),
            };
            return Err(located(file, text, Some(value.span().start), format!("language.{name} must be {expected}")));
        }
        fields.insert(field, s);
    }
    let required: &[&str] = if complete { &FIELDS } else { &["code", "name"] };
    if let Some(missing) = required.iter().find(|f| !fields.contains_key(**f)) {
        return Err(located(file, text, Some(at), format!("[language] lacks {missing}")));
    }
    let mut take = |f: &str| fields.remove(f).unwrap_or_default();
    let code = take("code");
    let tag = Some(take("tag")).filter(|t| !t.is_empty()).unwrap_or_else(|| code.clone());
    let dir = Some(take("dir")).filter(|d| !d.is_empty()).unwrap_or_else(|| "ltr".into());
    Ok(Language {
        base: if code == DEFAULT_LANG { String::new() } else { format!("/{code}") },
        name: take("name"),
        decimal_separator: take("decimal_separator"),
        date_format: take("date_format"),
        datetime_format: take("datetime_format"),
        code,
        tag,
        dir,
    })
}

fn flatten(
    file: &str,
    text: &str,
    prefix: &str,
    name: &str,
    value: &toml::Spanned<DeValue>,
    out: &mut Messages,
) -> Result<()> {
    let key = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t {
                flatten(file, text, &key, k.get_ref(), v, out)?;
            }
        }
        DeValue::String(s) => {
            out.insert(key, s.to_string());
        }
        _ => return Err(located(file, text, Some(value.span().start), format!("message {key} is not text"))),
    }
    Ok(())
}

/// Every language, the default (German) first.
pub fn languages() -> &'static [Language] {
    &catalogue().languages
}

/// The language with this code, if we have it.
pub fn find(code: &str) -> Option<&'static Language> {
    languages().iter().find(|l| l.code == code)
}

/// The language with this code, German when we do not have it.
pub fn language(code: &str) -> &'static Language {
    find(code).unwrap_or(&languages()[0])
}

pub fn is_language(code: &str) -> bool {
    find(code).is_some()
}

/// A language we have, from a user's choice; anything else falls back to German.
#[cfg(test)]
pub fn lang(requested: &str) -> &'static str {
    language(requested).code.as_str()
}

/// The language to answer in, from an `Accept-Language` header: RFC 4647 "lookup" over the
/// ranges in order of their q-values (ties keep the client's order, `q=0` refuses), each range
/// shortened subtag by subtag until it names a language of ours (by code or tag, ignoring case);
/// German when none does. The one negotiation for API, desk and pages.
pub fn negotiate(accept_language: &str) -> &'static str {
    let mut ranges: Vec<(f32, &str)> = accept_language
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let range = it.next()?.trim();
            if range.is_empty() {
                return None;
            }
            let mut q = 1.0f32;
            for param in it {
                let param: String =
                    param.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
                if let Some(value) = param.strip_prefix("q=") {
                    q = value.parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q))?;
                }
            }
            (q > 0.0).then_some((q, range))
        })
        .collect();
    // A stable sort: equal weights keep the order the client wrote them in.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, range) in ranges {
        let mut range = range.to_ascii_lowercase();
        loop {
            if let Some(l) = languages().iter().find(|l| l.code == range || l.tag.eq_ignore_ascii_case(&range)) {
                return l.code.as_str();
            }
            let Some(cut) = range.rfind('-') else { break };
            range.truncate(cut);
            // A singleton (such as the "x" of "x-private") never stands at the end.
            if let Some(cut) = range.rfind('-').filter(|cut| range.len() - cut == 2) {
                range.truncate(cut);
            }
        }
    }
    DEFAULT_LANG
}

/// The message `key` in `lang`, falling back to German, then to the key itself (a test makes
/// sure no key is missing).
pub fn t(lang: &str, key: &str) -> String {
    let cat = &catalogue().messages;
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

/// A number with `decimals` digits after the language's decimal separator: 12,3 or 12.3.
pub fn decimal(lang: &str, value: f64, decimals: usize) -> String {
    let s = format!("{value:.decimals$}");
    s.replace('.', &language(lang).decimal_separator)
}

/// An RFC 3339 time as German local date and time, in the language's format.
pub fn datetime(lang: &str, rfc3339: &str) -> String {
    crate::domain::time::local_datetime(rfc3339, &language(lang).datetime_format)
}

/// A date (or the date of an RFC 3339 time, in German local time), in the language's format.
pub fn date(lang: &str, date: &str) -> String {
    crate::domain::time::local_date(date, &language(lang).date_format)
}

/// An expected return (`domain::expected`) in words, as residents read it: "14.12.2026",
/// "KW 51/2026 (14.12.2026–20.12.2026)", "Mitte bis Ende Dezember 2026", "Dezember 2026",
/// "noch nicht absehbar"; a text that is no expected return stays as it is.
pub fn expected_return(lang: &str, stored: &str) -> String {
    use crate::domain::expected::Expected;
    use chrono::Datelike;
    let Some(e) = Expected::parse(stored) else { return stored.to_string() };
    let day = |d: chrono::NaiveDate| date(lang, &d.format("%Y-%m-%d").to_string());
    let month = |d: chrono::NaiveDate| {
        vec![("month", t(lang, &format!("month.m{}", d.month()))), ("year", d.year().to_string())]
    };
    match e {
        Expected::Day(d) => day(d),
        Expected::Week(monday) => tf(
            lang,
            "expected.week",
            &[
                ("week", monday.iso_week().week().to_string()),
                ("year", monday.iso_week().year().to_string()),
                ("from", day(monday)),
                ("to", day(monday + chrono::Days::new(6))),
            ],
        ),
        Expected::FirstHalf(d) => tf(lang, "expected.first_half", &month(d)),
        Expected::SecondHalf(d) => tf(lang, "expected.second_half", &month(d)),
        Expected::Month(d) => tf(lang, "expected.month", &month(d)),
        Expected::NotForeseeable => t(lang, "expected.not_foreseeable"),
    }
}

#[cfg(test)]
pub fn has(lang: &str, key: &str) -> bool {
    catalogue().messages.get(lang).is_some_and(|m| m.contains_key(key))
}

#[cfg(test)]
pub fn keys(lang: &str) -> Vec<String> {
    let mut k: Vec<String> = catalogue().messages[lang].keys().cloned().collect();
    k.sort();
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_returns_are_said_in_words() {
        assert_eq!(expected_return("de", "2026-12-14"), "14.12.2026");
        assert_eq!(expected_return("de", "2026-W51"), "KW 51/2026 (14.12.2026–20.12.2026)");
        assert_eq!(expected_return("de", "2026-12-H2"), "Mitte bis Ende Dezember 2026");
        assert_eq!(expected_return("de", "2026-12-H1"), "Anfang bis Mitte Dezember 2026");
        assert_eq!(expected_return("de", "2027-01"), "Januar 2027");
        assert_eq!(expected_return("de", "unknown"), "noch nicht absehbar");
        assert_eq!(expected_return("en", "2026-12-H2"), "mid to late December 2026");
        assert_eq!(expected_return("en", "unknown"), "not foreseeable yet");
    }

    #[test]
    fn every_language_has_every_german_key_and_no_more() {
        let de = keys("de");
        assert!(SOURCES.len() >= 2, "German and English at least");
        for (lang, _) in SOURCES {
            assert!(is_language(lang), "{lang}");
            let other = keys(lang);
            let missing: Vec<_> = de.iter().filter(|k| !other.contains(k)).collect();
            let extra: Vec<_> = other.iter().filter(|k| !de.contains(k)).collect();
            assert!(missing.is_empty(), "{lang} lacks {missing:?}");
            assert!(extra.is_empty(), "{lang} has unknown keys {extra:?}");
        }
    }

    /// Every file under `dir`, in every folder below it.
    fn files_below(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_below(&path, out);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_key_used_in_templates_and_code_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths = Vec::new();
        for dir in ["templates", "src"] {
            files_below(&root.join(dir), &mut paths);
        }
        assert!(paths.iter().any(|p| p.ends_with("templates/desk/login.html")), "templates in folders are read");
        let sources: Vec<String> = paths.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
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

    #[test]
    fn languages_come_from_their_files() {
        let codes: Vec<_> = languages().iter().map(|l| l.code.as_str()).collect();
        assert_eq!(codes[0], "de", "German first: {codes:?}");
        assert!(codes.contains(&"en"), "{codes:?}");
        let de = language("de");
        assert_eq!(
            (de.name.as_str(), de.tag.as_str(), de.dir.as_str(), de.base.as_str()),
            ("Deutsch", "de", "ltr", "")
        );
        let en = language("en");
        assert_eq!((en.name.as_str(), en.tag.as_str(), en.base.as_str()), ("English", "en", "/en"));
        assert_eq!(language("xx").code, "de");
        assert_eq!(decimal("de", 12.34, 1), "12,3");
        assert_eq!(decimal("en", 12.34, 1), "12.3");
        assert_eq!(datetime("de", "2023-12-12T08:30:00Z"), "12.12.2023, 09:30");
        assert_eq!(date("de", "2024-01-03"), "03.01.2024");
    }

    #[test]
    fn negotiation_is_rfc_4647_lookup_by_weight() {
        assert_eq!(negotiate(""), "de");
        assert_eq!(negotiate("en"), "en");
        assert_eq!(negotiate("EN-gb"), "en");
        assert_eq!(negotiate("en-GB,en;q=0.8,de;q=0.5"), "en");
        assert_eq!(negotiate("fr-FR, en;q=0, de"), "de");
        assert_eq!(negotiate("fr, en;q=0.5"), "en");
        // Weights decide, not the order.
        assert_eq!(negotiate("de;q=0.4, en;q=0.9"), "en");
        assert_eq!(negotiate("en;q=0.5, de;q=0.5"), "en");
        assert_eq!(negotiate("de;q=0.5, en;q=0.5"), "de");
        assert_eq!(negotiate("en-x-private, de;q=0.1"), "en");
        assert_eq!(negotiate("en-US-x-a"), "en");
        assert_eq!(negotiate("*"), "de");
        assert_eq!(negotiate("en;q=nonsense, fr"), "de");
        assert_eq!(negotiate("en; q = 0 , de"), "de");
        assert_eq!(negotiate("english"), "de");
    }

    fn extra(file: &str, text: &str) -> Result<Catalogue> {
        let code = file.trim_end_matches(".toml");
        build(vec![(format!("/tmp/{file}"), code.to_string(), text.to_string())])
    }

    #[test]
    fn an_extra_catalogue_adds_a_language_with_german_behind_it() {
        let cat = extra("uk.toml", "[language]\ncode = \"uk\"\nname = \"Українська\"\n\n[nav]\nhome = \"Головна\"\n")
            .unwrap();
        let codes: Vec<_> = cat.languages.iter().map(|l| l.code.as_str()).collect();
        assert_eq!(codes.first(), Some(&"de"));
        assert!(codes.contains(&"uk") && codes.contains(&"en"), "{codes:?}");
        let uk = cat.languages.iter().find(|l| l.code == "uk").unwrap();
        assert_eq!((uk.tag.as_str(), uk.dir.as_str(), uk.base.as_str()), ("uk", "ltr", "/uk"));
        assert_eq!(uk.decimal_separator, ",", "formats default to German's");
        assert_eq!(cat.messages["uk"]["nav.home"], "Головна");
        assert!(!cat.messages["uk"].contains_key("nav.towns"));
    }

    #[test]
    fn a_bad_catalogue_is_an_error_naming_file_and_line() {
        let error = |file: &str, text: &str| format!("{:#}", extra(file, text).err().expect(text));
        let e = error("uk.toml", "[language]\ncode = \"uk\"\nname = \"U\"\n[nav]\nhome = \"unterminated\n");
        assert!(e.starts_with("/tmp/uk.toml, line 5:"), "{e}");
        let e = error("uk.toml", "[language]\ncode = \"uk\"\nname = \"U\"\n\n[nav]\nhome = 3\n");
        assert_eq!(e, "/tmp/uk.toml, line 6: message nav.home is not text");
        let e = error("uk.toml", "[language]\ncode = \"ua\"\nname = \"U\"\n");
        assert!(e.starts_with("/tmp/uk.toml, line 2: language.code must be \"uk\""), "{e}");
        let e = error("uk.toml", "[language]\ncode = \"uk\"\nname = \"U\"\ndir = \"up\"\n");
        assert!(e.starts_with("/tmp/uk.toml, line 4: language.dir"), "{e}");
        let e = error("uk.toml", "[language]\ncode = \"uk\"\nname = \"U\"\ndate_format = \"%Q\"\n");
        assert!(e.starts_with("/tmp/uk.toml, line 4: language.date_format"), "{e}");
        let e = error("uk.toml", "[language]\ncode = \"uk\"\nname = \"U\"\ndate_format = \"%d.%m. %H:%M\"\n");
        assert!(e.starts_with("/tmp/uk.toml, line 4: language.date_format"), "{e}");
        let e = error("uk.toml", "[language]\ncode = \"uk\"\nnmae = \"U\"\n");
        assert!(e.starts_with("/tmp/uk.toml, line 3: unknown field language.nmae"), "{e}");
        let e = error("uk.toml", "[language]\ncode = \"uk\"\n");
        assert!(e.starts_with("/tmp/uk.toml, line 1: [language] lacks name"), "{e}");
        let e = error("uk.toml", "[nav]\nhome = \"x\"\n");
        assert!(e.starts_with("/tmp/uk.toml: no [language] table"), "{e}");
        let e = error("en.toml", "[language]\ncode = \"en\"\nname = \"E\"\n");
        assert!(e.contains("built in"), "{e}");
        let e = error("api.toml", "[language]\ncode = \"api\"\nname = \"E\"\n");
        assert!(e.contains("language.code"), "{e}");
    }
}
