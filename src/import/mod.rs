//! `notbetrieb import`: districts, municipalities, postal codes, services, offices, statements
//! and referrals from CSV or JSON files.
//!
//! All files of one invocation are read and checked first; only when no file has a problem is
//! everything written, in one transaction that also bumps the data version (running servers pick
//! the change up within their poll interval). Every problem found is reported with file, line
//! and field, so a whole file can be fixed in one go.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use sqlx::AnyConnection;

use crate::domain::time;
use crate::domain::{
    Contact, Dataset, District, Municipality, Office, Referral, SERVICE_AREAS, Service, Statement, is_service_area,
    is_valid_slug, slugify,
};
use crate::store::{self, Store};

/// Bigger files are refused before reading: they are almost certainly not what the user meant.
const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;
/// No real field comes near this; longer values are mistakes or abuse.
const MAX_FIELD_CHARS: usize = 10_000;
/// Enough to see the pattern of a systematic mistake without drowning the terminal.
const MAX_REPORTED: usize = 100;

/// What a file holds. The order is the write order, so references point backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Kind {
    Districts,
    Municipalities,
    #[value(name = "postal_codes")]
    PostalCodes,
    Services,
    Offices,
    Statements,
    Referrals,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Districts,
        Kind::Municipalities,
        Kind::PostalCodes,
        Kind::Services,
        Kind::Offices,
        Kind::Statements,
        Kind::Referrals,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Districts => "districts",
            Kind::Municipalities => "municipalities",
            Kind::PostalCodes => "postal_codes",
            Kind::Services => "services",
            Kind::Offices => "offices",
            Kind::Statements => "statements",
            Kind::Referrals => "referrals",
        }
    }

    /// Singular and plural for the summary.
    fn nouns(self) -> (&'static str, &'static str) {
        match self {
            Kind::Districts => ("district", "districts"),
            Kind::Municipalities => ("municipality", "municipalities"),
            Kind::PostalCodes => ("postal code", "postal codes"),
            Kind::Services => ("service", "services"),
            Kind::Offices => ("office", "offices"),
            Kind::Statements => ("statement", "statements"),
            Kind::Referrals => ("referral", "referrals"),
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Kind::Districts => DISTRICT_COLUMNS,
            Kind::Municipalities => MUNICIPALITY_COLUMNS,
            Kind::PostalCodes => POSTAL_CODE_COLUMNS,
            Kind::Services => SERVICE_COLUMNS,
            Kind::Offices => OFFICE_COLUMNS,
            Kind::Statements => STATEMENT_COLUMNS,
            Kind::Referrals => REFERRAL_COLUMNS,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Columns per kind. The same names are the keys of the objects in JSON files.

/// How a value is checked (and normalised) on its own, before references are looked at.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    Text,
    /// A slug; when empty, derived from the row's name (or, for referrals, its parts).
    Slug,
    /// An official key (AGS): 8 digits for a municipality, 5 for a district.
    Ags8,
    Ags5,
    Ags5or8,
    PostalCode,
    Latitude,
    Longitude,
    Count,
    Integer,
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    /// When a service is expected back (`domain::expected`), stored in its canonical form.
    ExpectedReturn,
    /// RFC 3339, stored in UTC.
    Timestamp,
    Level,
    Area,
    Responsibility,
    LeikaKey,
    /// Several values separated by `|` (in JSON also an array of strings).
    List,
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub required: bool,
    pub check: Check,
}

const fn req(name: &'static str, check: Check) -> Column {
    Column { name, required: true, check }
}
const fn opt(name: &'static str, check: Check) -> Column {
    Column { name, required: false, check }
}

use Check::*;

const DISTRICT_COLUMNS: &[Column] = &[
    req("ags", Ags5),
    opt("slug", Slug),
    req("name", Text),
    opt("member", Bool),
    opt("lat", Latitude),
    opt("lon", Longitude),
    opt("phone", Text),
    opt("email", Text),
    opt("website", Text),
    opt("emergency_website", Text),
    opt("social_media", Text),
];

const MUNICIPALITY_COLUMNS: &[Column] = &[
    req("ags", Ags8),
    opt("slug", Slug),
    req("name", Text),
    req("district_ags", Ags5),
    opt("member", Bool),
    opt("population", Count),
    req("lat", Latitude),
    req("lon", Longitude),
    opt("phone", Text),
    opt("email", Text),
    opt("website", Text),
    opt("emergency_website", Text),
    opt("social_media", Text),
];

const POSTAL_CODE_COLUMNS: &[Column] =
    &[req("postal_code", PostalCode), req("municipality_ags", Ags8), req("place", Text)];

const SERVICE_COLUMNS: &[Column] = &[
    opt("slug", Slug),
    req("name", Text),
    req("area", Area),
    req("responsibility", Responsibility),
    opt("leika_key", LeikaKey),
    opt("synonyms", List),
    opt("description", Text),
    opt("sort_order", Integer),
];

const OFFICE_COLUMNS: &[Column] = &[
    opt("slug", Slug),
    req("name", Text),
    opt("owner_ags", Ags5or8),
    opt("street", Text),
    opt("postal_code", PostalCode),
    opt("city", Text),
    req("lat", Latitude),
    req("lon", Longitude),
    opt("phone", Text),
    opt("email", Text),
    opt("website", Text),
    opt("opening_hours", Text),
];

const STATEMENT_COLUMNS: &[Column] = &[
    req("scope_ags", Ags5or8),
    req("service_slug", Slug),
    req("level", Level),
    opt("restrictions", Text),
    opt("workaround", Text),
    opt("backlog", Text),
    opt("expected_return", ExpectedReturn),
    opt("review_on", Date),
    opt("author", Text),
    opt("stated_at", Timestamp),
];

const REFERRAL_COLUMNS: &[Column] = &[
    opt("id", Slug),
    req("office_slug", Slug),
    req("service_slug", Slug),
    req("for_ags", Ags5or8),
    opt("conditions", Text),
    opt("valid_from", Date),
    opt("valid_until", Date),
];

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ if s.contains(',') && s.replace(',', ".").parse::<f64>().is_ok() => {
            Err(format!("not a number: {s:?} (use a decimal point, not a comma)"))
        }
        _ => Err(format!("not a number: {s:?}")),
    }
}

/// Checks one non-empty value on its own and returns it normalised.
fn check_value(check: Check, v: &str) -> Result<String, String> {
    let ok = || Ok(v.to_string());
    match check {
        Text => ok(),
        Slug if is_valid_slug(v) => ok(),
        Slug => Err(format!("not a valid slug: {v:?} (only a-z, 0-9 and -, at most 100 characters)")),
        Ags8 if digits(v, 8) => ok(),
        Ags8 => Err(format!("not an 8-digit municipality key (AGS): {v:?}")),
        Ags5 if digits(v, 5) => ok(),
        Ags5 => Err(format!("not a 5-digit district key (AGS): {v:?}")),
        Ags5or8 if digits(v, 5) || digits(v, 8) => ok(),
        Ags5or8 => Err(format!("not an official key (AGS): {v:?} (8 digits for a municipality, 5 for a district)")),
        PostalCode if digits(v, 5) => ok(),
        PostalCode => Err(format!("not a 5-digit postal code: {v:?}")),
        Latitude | Longitude => {
            let x = number(v)?;
            let max = if matches!(check, Latitude) { 90.0 } else { 180.0 };
            if x.abs() > max {
                let what = if max == 90.0 { "latitude" } else { "longitude" };
                return Err(format!("out of range: {v} (a {what} lies between -{max} and {max})"));
            }
            ok()
        }
        Count => match v.parse::<i64>() {
            Ok(n) if n >= 0 => ok(),
            _ => Err(format!("not a whole number of at least 0: {v:?}")),
        },
        Integer => v.parse::<i64>().map(|_| v.to_string()).map_err(|_| format!("not a whole number: {v:?}")),
        Bool => match v.to_lowercase().as_str() {
            "true" | "1" | "yes" | "ja" => Ok("true".into()),
            "false" | "0" | "no" | "nein" => Ok("false".into()),
            _ => Err(format!("not a yes/no value: {v:?} (use true or false)")),
        },
        Date if v.len() == 10 && time::parse_date(v).is_some() => ok(),
        Date => Err(format!("not a date: {v:?} (expected YYYY-MM-DD)")),
        ExpectedReturn => crate::domain::expected::Expected::parse(v).map(|e| e.canonical()).ok_or_else(|| {
            format!("not an expected return: {v:?} (expected a day YYYY-MM-DD, a week YYYY-Www, half a month YYYY-MM-H1 or YYYY-MM-H2, a month YYYY-MM, or unknown)")
        }),
        Timestamp => time::parse_rfc3339(v)
            .map(time::format_rfc3339)
            .ok_or_else(|| format!("not a timestamp: {v:?} (expected RFC 3339, e.g. 2023-11-30T08:15:00Z)")),
        Level if crate::domain::Level::parse(v).is_some() => ok(),
        Level => Err(format!("not a level: {v:?} (expected exactly normal, limited, emergency or unavailable)")),
        Area if is_service_area(v) => ok(),
        Area => Err(format!("not a service area: {v:?} (expected one of {})", SERVICE_AREAS.join(", "))),
        Responsibility if crate::domain::Responsibility::parse(v).is_some() => ok(),
        Responsibility => Err(format!("not a responsibility: {v:?} (expected municipality or district)")),
        LeikaKey if v.bytes().all(|b| b.is_ascii_digit()) && v.len() <= 20 => ok(),
        LeikaKey => Err(format!("not a LeiKa key: {v:?} (digits only)")),
        List => Ok(v.split('|').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("|")),
    }
}

// ---------------------------------------------------------------------------------------------
// Problems, each with its place.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Loc {
    file: usize,
    line: usize,
}

struct Problem {
    file: usize,
    line: Option<usize>,
    field: Option<String>,
    message: String,
}

#[derive(Default)]
struct Problems {
    files: Vec<String>,
    list: Vec<Problem>,
    /// Counted but not kept, so a huge file full of errors cannot exhaust memory.
    dropped: usize,
}

impl Problems {
    fn new(files: Vec<String>) -> Problems {
        Problems { files, ..Problems::default() }
    }
    fn push(&mut self, p: Problem) {
        if self.list.len() < 10 * MAX_REPORTED { self.list.push(p) } else { self.dropped += 1 }
    }
    fn any(&self) -> bool {
        !self.list.is_empty()
    }
    fn file(&mut self, file: usize, message: impl Into<String>) {
        self.push(Problem { file, line: None, field: None, message: message.into() });
    }
    fn line(&mut self, loc: Loc, message: impl Into<String>) {
        self.push(Problem { file: loc.file, line: Some(loc.line), field: None, message: message.into() });
    }
    fn field(&mut self, loc: Loc, field: &str, message: impl Into<String>) {
        self.push(Problem { file: loc.file, line: Some(loc.line), field: Some(field.into()), message: message.into() });
    }
    /// "line 3" in the same file, "other.csv, line 3" elsewhere.
    fn where_(&self, other: Loc, here: Loc) -> String {
        if other.file == here.file {
            format!("line {}", other.line)
        } else {
            format!("{}, line {}", self.files[other.file], other.line)
        }
    }
    fn report(mut self) -> String {
        self.list.sort_by_key(|p| (p.file, p.line));
        let n = self.list.len() + self.dropped;
        let mut out = format!("nothing was imported: {n} problem{} found", if n == 1 { "" } else { "s" });
        for p in self.list.iter().take(MAX_REPORTED) {
            out.push_str("\n  ");
            out.push_str(&self.files[p.file]);
            if let Some(line) = p.line {
                let _ = write!(out, ", line {line}");
            }
            if let Some(field) = &p.field {
                let _ = write!(out, ", field \"{field}\"");
            }
            let _ = write!(out, ": {}", p.message);
        }
        if n > MAX_REPORTED {
            let _ = write!(out, "\n  … and {} more", n - MAX_REPORTED);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Reading files into records of checked, normalised text values.

struct Record {
    file: usize,
    line: usize,
    values: HashMap<&'static str, String>,
    /// Line of each field where it differs from the record's (JSON objects over several lines).
    lines: HashMap<&'static str, usize>,
}

impl Record {
    fn get(&self, field: &str) -> &str {
        self.values.get(field).map(String::as_str).unwrap_or("")
    }
    fn loc(&self) -> Loc {
        Loc { file: self.file, line: self.line }
    }
    fn at(&self, field: &str) -> Loc {
        Loc { file: self.file, line: self.lines.get(field).copied().unwrap_or(self.line) }
    }
    fn float(&self, field: &str) -> Option<f64> {
        self.get(field).parse().ok()
    }
    fn int(&self, field: &str) -> Option<i64> {
        self.get(field).parse().ok()
    }
    fn flag(&self, field: &str, default: bool) -> bool {
        match self.get(field) {
            "" => default,
            v => v == "true",
        }
    }
}

/// Checks a raw value and stores it in the record; problems go to `problems`.
fn put(problems: &mut Problems, rec: &mut Record, col: &'static Column, raw: &str, loc: Loc) {
    let v = raw.trim();
    if v.len() > MAX_FIELD_CHARS && v.chars().count() > MAX_FIELD_CHARS {
        problems.field(
            loc,
            col.name,
            format!("too long ({} characters, at most {MAX_FIELD_CHARS})", v.chars().count()),
        );
        return;
    }
    if v.is_empty() {
        if col.required {
            problems.field(loc, col.name, "required, must not be empty");
        }
        return;
    }
    match check_value(col.check, v) {
        Ok(v) => {
            rec.values.insert(col.name, v);
        }
        Err(message) => problems.field(loc, col.name, message),
    }
}

fn column(kind: Kind, name: &str) -> Option<&'static Column> {
    kind.columns().iter().find(|c| c.name == name)
}

fn unknown_column(kind: Kind, name: &str) -> String {
    let names: Vec<&str> = kind.columns().iter().map(|c| c.name).collect();
    format!("unknown column {name:?} (columns of {}: {})", kind.name(), names.join(", "))
}

/// Which kind a file holds, from `--kind` or its name; and whether it is JSON.
fn kind_and_format(path: &Path, forced: Option<Kind>) -> Result<(Kind, bool), String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_lowercase();
    let json = match ext.as_str() {
        "csv" => false,
        "json" => true,
        _ => return Err("cannot tell the format: the file name must end in .csv or .json".into()),
    };
    if let Some(kind) = forced {
        return Ok((kind, json));
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_lowercase();
    match Kind::ALL.into_iter().find(|k| k.name() == stem) {
        Some(kind) => Ok((kind, json)),
        None => {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            Err(format!("cannot tell what the file holds: name it {}.csv or .json, or pass --kind", names.join(", ")))
        }
    }
}

/// Text of a file that must be UTF-8 (a byte order mark is fine); otherwise the problems.
fn decode(bytes: &[u8], file: usize, problems: &mut Problems) -> Option<String> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        problems.file(file, "the file is UTF-16 encoded; save it as UTF-8");
        return None;
    }
    // UTF-16 without a byte order mark: every other byte of ASCII text is zero.
    if bytes.len() >= 2 && (bytes[0] == 0 || bytes[1] == 0) {
        problems.file(file, "the file looks UTF-16 encoded (zero bytes); save it as UTF-8");
        return None;
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text.to_string()),
        Err(_) => {
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                if let Err(e) = std::str::from_utf8(line) {
                    let bad = line[e.valid_up_to()];
                    problems.line(
                        Loc { file, line: i + 1 },
                        format!(
                            "not valid UTF-8 (byte 0x{bad:02X} after {:?}); the file must be UTF-8 — \
                             Latin-1 or Windows-1252 files must be saved as UTF-8 first",
                            String::from_utf8_lossy(&line[e.valid_up_to().saturating_sub(20)..e.valid_up_to()])
                        ),
                    );
                }
            }
            None
        }
    }
}

fn read_csv(kind: Kind, text: &str, file: usize, problems: &mut Problems) -> Vec<Record> {
    // Spreadsheets with German settings write semicolons; take whichever the header uses.
    let header = text.lines().next().unwrap_or("");
    let delimiter = if header.contains(';') && !header.contains(',') { b';' } else { b',' };
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).from_reader(text.as_bytes());
    let head_loc = Loc { file, line: 1 };
    let headers = match reader.headers() {
        Ok(h) if !h.iter().all(|c| c.trim().is_empty()) => h.clone(),
        Ok(_) => {
            problems.file(file, "the file is empty; the first line must name the columns");
            return Vec::new();
        }
        Err(e) => {
            problems.line(head_loc, format!("cannot read the header: {e}"));
            return Vec::new();
        }
    };
    let mut cols: Vec<Option<&'static Column>> = Vec::new();
    for name in headers.iter().map(str::trim) {
        let col = column(kind, name);
        if col.is_none() {
            problems.field(head_loc, name, unknown_column(kind, name));
        } else if cols.iter().flatten().any(|c| c.name == name) {
            problems.field(head_loc, name, "column appears twice in the header");
        }
        cols.push(col);
    }
    for c in kind.columns().iter().filter(|c| c.required) {
        if !cols.iter().flatten().any(|h| h.name == c.name) {
            problems.field(head_loc, c.name, "required column is missing from the header");
        }
    }

    let mut records = Vec::new();
    for result in reader.records() {
        match result {
            Ok(row) => {
                let line = row.position().map(|p| p.line() as usize).unwrap_or(0);
                let loc = Loc { file, line };
                let mut rec = Record { file, line, values: HashMap::new(), lines: HashMap::new() };
                for (value, col) in row.iter().zip(&cols) {
                    if let Some(col) = col {
                        put(problems, &mut rec, col, value, loc);
                    }
                }
                records.push(rec);
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                let message = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!(
                            "{len} fields, but the header has {expected_len} (a missing or extra separator or quote?)"
                        )
                    }
                    _ => format!("cannot read the line: {e}"),
                };
                problems.line(Loc { file, line }, message);
            }
        }
    }
    records
}

/// Byte offsets of line breaks, to turn positions into line numbers.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        LineIndex(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect())
    }
    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&p| p < offset) + 1
    }
}

fn skip_ws(text: &str, mut pos: usize) -> usize {
    while text.as_bytes().get(pos).is_some_and(|b| b.is_ascii_whitespace()) {
        pos += 1;
    }
    pos
}

/// Where `"key":` starts inside an object's text, for a precise line number.
fn key_offset(object: &str, key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    let mut from = 0;
    while let Some(i) = object[from..].find(&quoted) {
        let at = from + i;
        if object[at + quoted.len()..].trim_start().starts_with(':') {
            return Some(at);
        }
        from = at + quoted.len();
    }
    None
}

fn read_json(kind: Kind, text: &str, file: usize, problems: &mut Problems) -> Vec<Record> {
    // A first full parse finds syntax errors with their line; the second walks the array
    // element by element to know where each object starts.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        let message = e.to_string();
        let message = message.rsplit_once(" at line ").map(|(m, _)| m.to_string()).unwrap_or(message);
        problems.line(Loc { file, line: e.line() }, format!("invalid JSON: {message}"));
        return Vec::new();
    }
    let lines = LineIndex::new(text);
    let mut pos = skip_ws(text, 0);
    if text.as_bytes().get(pos) != Some(&b'[') {
        problems.line(Loc { file, line: lines.line(pos) }, "expected an array of objects: [ {…}, {…} ]");
        return Vec::new();
    }
    pos += 1;
    let mut records = Vec::new();
    loop {
        pos = skip_ws(text, pos);
        match text.as_bytes().get(pos) {
            Some(b']') | None => break,
            Some(b',') => {
                pos += 1;
                continue;
            }
            _ => {}
        }
        let start = pos;
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
        let value = match stream.next() {
            Some(Ok(v)) => v,
            _ => break, // cannot happen: the whole text parsed above
        };
        pos = start + stream.byte_offset();
        let line = lines.line(start);
        let loc = Loc { file, line };
        let serde_json::Value::Object(object) = value else {
            problems.line(loc, "expected an object {…} for each row");
            continue;
        };
        let object_text = &text[start..pos];
        let mut rec = Record { file, line, values: HashMap::new(), lines: HashMap::new() };
        for (key, value) in &object {
            let at = Loc { file, line: key_offset(object_text, key).map(|o| lines.line(start + o)).unwrap_or(line) };
            let Some(col) = column(kind, key) else {
                problems.field(at, key, unknown_column(kind, key));
                continue;
            };
            rec.lines.insert(col.name, at.line);
            let raw = match value {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Array(items) if matches!(col.check, List) && items.iter().all(|i| i.is_string()) => {
                    items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join("|")
                }
                _ => {
                    problems.field(at, key, "expected text, a number or true/false here");
                    continue;
                }
            };
            put(problems, &mut rec, col, &raw, at);
        }
        for c in kind.columns().iter().filter(|c| c.required && !object.contains_key(c.name)) {
            problems.field(loc, c.name, "required, missing from this object");
        }
        records.push(rec);
    }
    records
}

fn read_file(path: &Path, kind: Kind, json: bool, file: usize, problems: &mut Problems) -> Vec<Record> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            problems.file(
                file,
                format!(
                    "the file is too large ({} MB, at most {} MB); split it into several files",
                    m.len() >> 20,
                    MAX_FILE_BYTES >> 20
                ),
            );
            return Vec::new();
        }
        Ok(m) if m.is_dir() => {
            problems.file(file, "this is a directory, not a file");
            return Vec::new();
        }
        _ => {}
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            problems.file(file, format!("cannot read the file: {e}"));
            return Vec::new();
        }
    };
    let Some(text) = decode(&bytes, file, problems) else { return Vec::new() };
    if json { read_json(kind, &text, file, problems) } else { read_csv(kind, &text, file, problems) }
}

// ---------------------------------------------------------------------------------------------
// What the database already holds, for references, slug clashes and the summary.

#[derive(Default)]
struct Existing {
    /// AGS → slug.
    districts: HashMap<String, String>,
    municipalities: HashMap<String, String>,
    /// Slug → (responsibility, sort order).
    services: HashMap<String, (String, i64)>,
    /// Slug → owner AGS.
    offices: HashMap<String, String>,
    postal_codes: HashSet<String>,
    statements: HashSet<String>,
    referrals: HashSet<String>,
}

async fn load_existing(c: &mut AnyConnection) -> Result<Existing> {
    let keys = store::stored_keys(c).await?;
    Ok(Existing {
        districts: keys.districts.into_iter().collect(),
        municipalities: keys.municipalities.into_iter().collect(),
        services: keys
            .services
            .into_iter()
            .map(|(slug, responsibility, order)| (slug, (responsibility, order)))
            .collect(),
        offices: keys.offices.into_iter().collect(),
        referrals: keys.referrals.into_iter().collect(),
        postal_codes: keys.postal_codes.iter().map(|(a, b)| key2(a, b)).collect(),
        statements: keys.statements.iter().map(|(a, b)| key2(a, b)).collect(),
    })
}

fn key2(a: &str, b: &str) -> String {
    format!("{a}\u{1f}{b}")
}

// ---------------------------------------------------------------------------------------------
// Checks across rows and against the database, then the domain values to write.

/// One imported row's key: remembers where each key was first seen, to name both lines of a duplicate.
#[derive(Default)]
struct Seen(HashMap<String, Loc>);

impl Seen {
    /// False (and a problem) when the key was seen before.
    fn first(&mut self, problems: &mut Problems, key: String, shown: &str, loc: Loc, field: &str) -> bool {
        // A missing key part is reported already; comparing empty keys would only add noise.
        if key.split('\u{1f}').any(str::is_empty) {
            return true;
        }
        if let Some(&before) = self.0.get(&key) {
            let msg = format!("duplicate: {shown} already appears in {}", problems.where_(before, loc));
            problems.field(loc, field, msg);
            return false;
        }
        self.0.insert(key, loc);
        true
    }
}

/// Slugs of districts or municipalities are unique: checks imported rows against each other and
/// against rows in the database that this import does not change.
fn check_slugs(problems: &mut Problems, what: &str, rows: &[(Loc, String, String)], db: &HashMap<String, String>) {
    let imported: HashSet<&str> = rows.iter().map(|(_, key, _)| key.as_str()).collect();
    let mut owner: HashMap<&str, (&str, Option<Loc>)> = HashMap::new();
    for (key, slug) in db {
        if !imported.contains(key.as_str()) {
            owner.insert(slug, (key, None));
        }
    }
    for (loc, key, slug) in rows {
        match owner.get(slug.as_str()) {
            Some((other, Some(at))) if *other != key => {
                let msg = format!("slug {slug:?} is also used by {what} {other} in {}", problems.where_(*at, *loc));
                problems.field(*loc, "slug", msg);
            }
            Some((other, None)) => {
                problems.field(
                    *loc,
                    "slug",
                    format!("slug {slug:?} already belongs to {what} {other} in the database"),
                );
            }
            _ => {
                owner.insert(slug, (key, Some(*loc)));
            }
        }
    }
}

/// The record's slug, or one derived from its name.
fn slug_of(problems: &mut Problems, r: &Record) -> String {
    match r.get("slug") {
        "" => {
            let derived = slugify(r.get("name"));
            if !r.get("name").is_empty() && !is_valid_slug(&derived) {
                problems.field(
                    r.at("name"),
                    "slug",
                    format!("cannot derive a slug from the name {:?}; give one", r.get("name")),
                );
            }
            derived
        }
        s => s.to_string(),
    }
}

fn contact(r: &Record) -> Contact {
    Contact {
        phone: r.get("phone").into(),
        email: r.get("email").into(),
        website: r.get("website").into(),
        emergency_website: r.get("emergency_website").into(),
        social_media: r.get("social_media").into(),
    }
}

/// How many imported rows per kind were new and how many replaced existing ones.
type Counts = BTreeMap<Kind, (usize, usize)>;

fn count(counts: &mut Counts, kind: Kind, existed: bool) {
    let c = counts.entry(kind).or_default();
    if existed { c.1 += 1 } else { c.0 += 1 }
}

fn build(records: &BTreeMap<Kind, Vec<Record>>, ex: &Existing, problems: &mut Problems) -> (Dataset, Counts) {
    let none = Vec::new();
    let rows = |k: Kind| records.get(&k).unwrap_or(&none);
    let mut ds = Dataset::default();
    let mut counts = Counts::new();

    // Keys that will exist after the import, whether or not the row defining them has other problems.
    let mut districts: HashSet<&str> = ex.districts.keys().map(String::as_str).collect();
    districts.extend(rows(Kind::Districts).iter().map(|r| r.get("ags")).filter(|a| !a.is_empty()));
    let mut towns: HashSet<&str> = ex.municipalities.keys().map(String::as_str).collect();
    towns.extend(rows(Kind::Municipalities).iter().map(|r| r.get("ags")).filter(|a| !a.is_empty()));
    let exists = |ags: &str| if ags.len() == 5 { districts.contains(ags) } else { towns.contains(ags) };
    let unknown_ags = |ags: &str| {
        let what = if ags.len() == 5 { "district" } else { "municipality" };
        format!("unknown {what} {ags} (neither in the database nor in this import)")
    };

    let mut seen = Seen::default();
    let mut slugs = Vec::new();
    for r in rows(Kind::Districts) {
        let ags = r.get("ags").to_string();
        let slug = slug_of(problems, r);
        if !seen.first(problems, ags.clone(), &format!("district {ags}"), r.at("ags"), "ags") {
            continue;
        }
        slugs.push((r.at("slug"), ags.clone(), slug.clone()));
        count(&mut counts, Kind::Districts, ex.districts.contains_key(&ags));
        std::sync::Arc::make_mut(&mut ds.districts).push(District {
            ags,
            slug,
            name: r.get("name").into(),
            member: r.flag("member", true),
            lat: r.float("lat"),
            lon: r.float("lon"),
            contact: contact(r),
        });
    }
    check_slugs(problems, "district", &slugs, &ex.districts);

    let mut seen = Seen::default();
    let mut slugs = Vec::new();
    for r in rows(Kind::Municipalities) {
        let ags = r.get("ags").to_string();
        let slug = slug_of(problems, r);
        let district = r.get("district_ags");
        if !district.is_empty() && !districts.contains(district) {
            problems.field(r.at("district_ags"), "district_ags", unknown_ags(district));
        }
        if !seen.first(problems, ags.clone(), &format!("municipality {ags}"), r.at("ags"), "ags") {
            continue;
        }
        slugs.push((r.at("slug"), ags.clone(), slug.clone()));
        count(&mut counts, Kind::Municipalities, ex.municipalities.contains_key(&ags));
        std::sync::Arc::make_mut(&mut ds.municipalities).push(Municipality {
            ags,
            slug,
            name: r.get("name").into(),
            district_ags: district.into(),
            member: r.flag("member", true),
            population: r.int("population"),
            lat: r.float("lat").unwrap_or_default(),
            lon: r.float("lon").unwrap_or_default(),
            contact: contact(r),
        });
    }
    check_slugs(problems, "municipality", &slugs, &ex.municipalities);

    let mut seen = Seen::default();
    for r in rows(Kind::PostalCodes) {
        let (code, ags) = (r.get("postal_code"), r.get("municipality_ags"));
        if !ags.is_empty() && !towns.contains(ags) {
            problems.field(r.at("municipality_ags"), "municipality_ags", unknown_ags(ags));
        }
        let key = key2(code, ags);
        if !seen.first(
            problems,
            key.clone(),
            &format!("postal code {code} of {ags}"),
            r.at("postal_code"),
            "postal_code",
        ) {
            continue;
        }
        count(&mut counts, Kind::PostalCodes, ex.postal_codes.contains(&key));
        std::sync::Arc::make_mut(&mut ds.postal_codes).push(crate::domain::PostalCode {
            postal_code: code.into(),
            municipality_ags: ags.into(),
            place: r.get("place").into(),
        });
    }

    // Services: the responsibility after the import decides whether districts may state them.
    let mut responsibility: HashMap<&str, &str> =
        ex.services.iter().map(|(s, (r, _))| (s.as_str(), r.as_str())).collect();
    let mut next_order = ex.services.values().map(|(_, o)| *o + 1).max().unwrap_or(0);
    let mut seen = Seen::default();
    for r in rows(Kind::Services) {
        let slug = slug_of(problems, r);
        if !seen.first(problems, slug.clone(), &format!("service {slug:?}"), r.at("slug"), "slug") {
            continue;
        }
        // Without a sort order, an existing service keeps its place and a new one goes last.
        let sort_order = r.int("sort_order").or(ex.services.get(&slug).map(|(_, o)| *o)).unwrap_or_else(|| {
            next_order += 1;
            next_order - 1
        });
        count(&mut counts, Kind::Services, ex.services.contains_key(&slug));
        std::sync::Arc::make_mut(&mut ds.services).push(Service {
            responsibility: crate::domain::Responsibility::parse(r.get("responsibility"))
                .unwrap_or(crate::domain::Responsibility::Municipality),
            synonyms: r.get("synonyms").split('|').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            slug,
            name: r.get("name").into(),
            area: r.get("area").into(),
            leika_key: r.get("leika_key").into(),
            description: r.get("description").into(),
            sort_order,
        });
    }
    for s in ds.services.iter() {
        responsibility.insert(s.slug.as_str(), s.responsibility.as_str());
    }

    let mut seen = Seen::default();
    for r in rows(Kind::Offices) {
        let slug = slug_of(problems, r);
        // The owner may be an administration outside the area (a neighbour accepting referrals),
        // so it need not exist.
        let owner = r.get("owner_ags");
        if !seen.first(problems, slug.clone(), &format!("office {slug:?}"), r.at("slug"), "slug") {
            continue;
        }
        count(&mut counts, Kind::Offices, ex.offices.contains_key(&slug));
        std::sync::Arc::make_mut(&mut ds.offices).push(Office {
            slug,
            name: r.get("name").into(),
            owner_ags: owner.into(),
            street: r.get("street").into(),
            postal_code: r.get("postal_code").into(),
            city: r.get("city").into(),
            lat: r.float("lat").unwrap_or_default(),
            lon: r.float("lon").unwrap_or_default(),
            phone: r.get("phone").into(),
            email: r.get("email").into(),
            website: r.get("website").into(),
            opening_hours: r.get("opening_hours").into(),
        });
    }
    let mut offices: HashSet<&str> = ex.offices.keys().map(String::as_str).collect();
    offices.extend(ds.offices.iter().map(|o| o.slug.as_str()));
    // Statements may also describe an office owner outside the area: its referrals show that status.
    let mut owners: HashSet<&str> = ex.offices.values().map(String::as_str).collect();
    owners.extend(ds.offices.iter().map(|o| o.owner_ags.as_str()));

    let unknown_service = |s: &str| format!("unknown service {s:?} (neither in the database nor in this import)");
    let now = time::now_rfc3339();
    let mut seen = Seen::default();
    for r in rows(Kind::Statements) {
        let (scope, service) = (r.get("scope_ags"), r.get("service_slug"));
        if !scope.is_empty() && !exists(scope) && !owners.contains(scope) {
            problems.field(r.at("scope_ags"), "scope_ags", unknown_ags(scope));
        }
        match responsibility.get(service) {
            None if !service.is_empty() => problems.field(r.at("service_slug"), "service_slug", unknown_service(service)),
            // The public pages only apply a district's statement to district-level services.
            Some(&"municipality") if districts.contains(scope) => problems.field(
                r.at("scope_ags"),
                "scope_ags",
                format!("{scope} is a district, but {service:?} is provided by each municipality; state it per municipality (8-digit key)"),
            ),
            _ => {}
        }
        let key = key2(scope, service);
        if !seen.first(
            problems,
            key.clone(),
            &format!("a statement of {scope} on {service:?}"),
            r.at("scope_ags"),
            "scope_ags",
        ) {
            continue;
        }
        count(&mut counts, Kind::Statements, ex.statements.contains(&key));
        ds.statements.push(Statement {
            scope_ags: scope.into(),
            service_slug: service.into(),
            level: crate::domain::Level::parse(r.get("level")).unwrap_or(crate::domain::Level::Normal),
            restrictions: r.get("restrictions").into(),
            workaround: r.get("workaround").into(),
            backlog: r.get("backlog").into(),
            expected_return: r.get("expected_return").into(),
            author: r.get("author").into(),
            stated_at: match r.get("stated_at") {
                "" => now.clone(),
                t => t.into(),
            },
            version: 1,
            review_on: r.get("review_on").into(),
        });
    }

    let mut seen = Seen::default();
    for r in rows(Kind::Referrals) {
        let (office, service, target) = (r.get("office_slug"), r.get("service_slug"), r.get("for_ags"));
        if !office.is_empty() && !offices.contains(office) {
            problems.field(
                r.at("office_slug"),
                "office_slug",
                format!("unknown office {office:?} (neither in the database nor in this import)"),
            );
        }
        if !service.is_empty() && !responsibility.contains_key(service) {
            problems.field(r.at("service_slug"), "service_slug", unknown_service(service));
        }
        if !target.is_empty() && !exists(target) {
            problems.field(r.at("for_ags"), "for_ags", unknown_ags(target));
        }
        let (from, until) = (r.get("valid_from"), r.get("valid_until"));
        if !from.is_empty() && !until.is_empty() && from > until {
            problems.field(r.at("valid_until"), "valid_until", format!("{until} is before valid_from {from}"));
        }
        let id = match r.get("id") {
            "" => format!("{office}-{service}-{target}"),
            id => id.to_string(),
        };
        if r.get("id").is_empty() && !is_valid_slug(&id) && !office.is_empty() && !service.is_empty() {
            problems.field(r.loc(), "id", format!("the derived id {id:?} is too long; give an id"));
        }
        if !seen.first(problems, id.clone(), &format!("referral {id:?}"), r.at("id"), "id") {
            continue;
        }
        count(&mut counts, Kind::Referrals, ex.referrals.contains(&id));
        ds.referrals.push(Referral {
            id,
            office_slug: office.into(),
            service_slug: service.into(),
            for_ags: target.into(),
            conditions: r.get("conditions").into(),
            valid_from: from.into(),
            valid_until: until.into(),
        });
    }
    (ds, counts)
}

async fn write(c: &mut AnyConnection, ds: &Dataset) -> Result<()> {
    store::upsert_dataset(c, ds).await?;
    // Servers re-index towns and catalogue only when those changed, not for statements or referrals.
    let places_changed = !(ds.districts.is_empty()
        && ds.municipalities.is_empty()
        && ds.postal_codes.is_empty()
        && ds.services.is_empty()
        && ds.offices.is_empty());
    if places_changed {
        store::bump_places_version(c).await?;
    }
    store::bump_data_version(c).await
}

/// Journals the import in its transaction: every statement it wrote as a `StatementChanged`
/// (with what it replaced), everything else as one `ImportApplied` with counts and file names.
async fn journal_import(
    c: &mut AnyConnection,
    files: &[PathBuf],
    ds: &Dataset,
    counts: &Counts,
    before: Vec<Option<crate::domain::events::Stated>>,
) -> Result<()> {
    use crate::domain::events::{Event, ImportCount, Stated};
    let others: BTreeMap<String, ImportCount> = counts
        .iter()
        .filter(|(kind, _)| **kind != Kind::Statements)
        .map(|(kind, &(new, updated))| (kind.name().to_string(), ImportCount { new, updated }))
        .collect();
    if !others.is_empty() {
        let source = files
            .iter()
            .map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| f.display().to_string()))
            .collect();
        crate::store::journal::append_event(c, "cli", &Event::ImportApplied { source, counts: others }).await?;
    }
    for (st, from) in ds.statements.iter().zip(before) {
        let to = Stated { version: from.as_ref().map_or(1, |f| f.version + 1), ..Stated::of(st) };
        let event = Event::StatementChanged { scope: st.scope_ags.clone(), service: st.service_slug.clone(), to, from };
        crate::store::journal::append_event(c, "cli", &event).await?;
    }
    Ok(())
}

fn summary(counts: &Counts) -> String {
    let parts: Vec<String> = counts
        .iter()
        .map(|(kind, &(new, updated))| {
            let n = new + updated;
            let (one, many) = kind.nouns();
            let detail = match (new, updated) {
                (_, 0) => "new".to_string(),
                (0, _) => "updated".to_string(),
                _ => format!("{new} new, {updated} updated"),
            };
            format!("{n} {} ({detail})", if n == 1 { one } else { many })
        })
        .collect();
    if parts.is_empty() {
        "imported nothing: the files hold no rows".into()
    } else {
        format!("imported {}", parts.join(", "))
    }
}

/// Imports `files` all or nothing and returns the summary line.
pub async fn import(store: &Store, files: &[PathBuf], kind: Option<Kind>) -> Result<String> {
    let mut problems = Problems::new(files.iter().map(|f| f.display().to_string()).collect());
    let mut records: BTreeMap<Kind, Vec<Record>> = BTreeMap::new();
    for (i, path) in files.iter().enumerate() {
        match kind_and_format(path, kind) {
            Ok((kind, json)) => {
                let rows = read_file(path, kind, json, i, &mut problems);
                records.entry(kind).or_default().extend(rows);
            }
            Err(message) => problems.file(i, message),
        }
    }

    // Reads and writes in one transaction, so the checks see what the writes change; the journal
    // lock first, as every write does, so imports and other writes are serialised.
    let mut tx = store.begin().await?;
    crate::store::journal::lock_head(&mut tx).await?;
    let existing = load_existing(&mut tx).await?;
    let (ds, counts) = build(&records, &existing, &mut problems);
    if problems.any() {
        tx.rollback().await?;
        bail!(problems.report());
    }
    let mut before = Vec::with_capacity(ds.statements.len());
    for st in &ds.statements {
        before.push(store::stated(&mut tx, &st.scope_ags, &st.service_slug).await?);
    }
    write(&mut tx, &ds).await?;
    journal_import(&mut tx, files, &ds, &counts, before).await?;
    tx.commit().await?;
    Ok(summary(&counts))
}

pub async fn run(store: &Store, files: &[PathBuf], kind: Option<Kind>) -> Result<()> {
    let summary = import(store, files, kind).await?;
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_normalised() {
        assert_eq!(check_value(Ags8, "05962040").unwrap(), "05962040");
        assert!(check_value(Ags8, "5962040").is_err());
        assert!(check_value(Ags5or8, "05962").is_ok());
        assert_eq!(check_value(Latitude, "abc").unwrap_err(), "not a number: \"abc\"");
        assert!(check_value(Latitude, "51,4").unwrap_err().contains("decimal point"));
        assert!(check_value(Latitude, "91").is_err());
        assert!(check_value(Longitude, "NaN").is_err());
        assert!(check_value(Date, "2024-02-30").is_err());
        assert!(check_value(Date, "2024-2-3").is_err());
        assert_eq!(check_value(Timestamp, "2023-11-30T09:15:00+01:00").unwrap(), "2023-11-30T08:15:00Z");
        assert_eq!(check_value(Bool, "Ja").unwrap(), "true");
        assert!(check_value(Level, "Normal").is_err());
        assert_eq!(check_value(List, " Auto anmelden | |Zulassung").unwrap(), "Auto anmelden|Zulassung");
    }

    #[test]
    fn encodings() {
        let mut p = Problems::new(vec!["x.csv".into()]);
        assert_eq!(decode(b"\xEF\xBB\xBFa,b\n", 0, &mut p).unwrap(), "a,b\n");
        assert!(decode(b"\xFF\xFEa\0", 0, &mut p).is_none());
        assert!(p.list[0].message.contains("UTF-16"));
        assert!(decode(b"a\nb\nM\xFCnster\n", 0, &mut p).is_none());
        assert_eq!(p.list[1].line, Some(3));
        assert!(p.list[1].message.contains("must be UTF-8"));
    }

    #[test]
    fn json_keys_are_located() {
        let text = "[\n  {\n    \"ags\": \"1\",\n    \"lat\": 5\n  }\n]";
        let mut p = Problems::new(vec!["municipalities.json".into()]);
        let recs = read_json(Kind::Municipalities, text, 0, &mut p);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].at("lat").line, 4);
        let ags = p.list.iter().find(|e| e.field.as_deref() == Some("ags")).unwrap();
        assert_eq!(ags.line, Some(3));
    }

    #[test]
    fn summary_reads_naturally() {
        let mut c = Counts::new();
        count(&mut c, Kind::Municipalities, false);
        count(&mut c, Kind::Municipalities, true);
        count(&mut c, Kind::Districts, false);
        assert_eq!(summary(&c), "imported 1 district (new), 2 municipalities (1 new, 1 updated)");
    }
}
