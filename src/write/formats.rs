//! The named value formats of the OpenAPI document: each says in one place exactly what the
//! server accepts (enum, pattern, length), and the tests below hold each against the function
//! or domain list that decides, so the document cannot drift from the server.
//!
//! Patterns are ECMA-262 as OpenAPI asks, and also valid for Python's `re`, which schemathesis
//! uses to generate and check values.

use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::domain::authz::Role;
use crate::domain::recovery::PROCEDURE_KINDS;
use crate::domain::{SERVICE_AREAS, ScopeKind};
use crate::i18n;

// The fields' own limits, as `write` checks them (`text(field, value, max)`).
pub fn line() -> RefOr<Schema> {
    schema(text(super::MAX_LINE))
}
pub fn long_text() -> RefOr<Schema> {
    schema(text(super::MAX_TEXT))
}
pub fn title() -> RefOr<Schema> {
    schema(required_text(300))
}
pub fn question() -> RefOr<Schema> {
    schema(required_text(500))
}
pub fn phone() -> RefOr<Schema> {
    schema(text(100))
}
pub fn display_name() -> RefOr<Schema> {
    schema(text(200))
}
pub fn procedure_name() -> RefOr<Schema> {
    schema(required_text(200))
}
pub fn token_name() -> RefOr<Schema> {
    schema(required_text(100))
}
pub fn missing_functions() -> RefOr<Schema> {
    schema(json!({ "type": "array", "items": text(300) }))
}

/// Characters `write::text` refuses: control characters other than tab, line feed and return.
const CONTROL: &str = r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F";
/// White space that `str::trim` removes and `write::text` accepts.
const BLANK: &str = r"\t\n\r \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// Free text of at most `max` characters without control characters (except tab and line breaks).
pub fn text(max: usize) -> Value {
    json!({ "type": "string", "maxLength": max, "pattern": format!("^[^{CONTROL}]*$") })
}

/// Like `text`, but with at least one character that is not white space (the field is required).
pub fn required_text(max: usize) -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("^[^{CONTROL}]*[^{BLANK}{CONTROL}][^{CONTROL}]*$"),
    })
}

pub const SLUG_PATTERN: &str = "^[a-z0-9-]+$";
pub const AGS_PATTERN: &str = "^([0-9]{5}|[0-9]{8})$";
pub const USERNAME_PATTERN: &str = "^[a-z0-9._-]+$";
/// `If-Match` as `editing::if_match` reads it: `*`, or a version with or without quotes and `W/`.
pub const IF_MATCH_PATTERN: &str = r#"^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#;
/// `Idempotency-Key`: printable ASCII, not starting or ending with a space (HTTP strips those).
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[!-~]([ -~]*[!-~])?$";
/// Ids of announcements, FAQ entries and referrals: any characters but control characters.
pub const ID_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]+$";

fn schema(value: Value) -> RefOr<Schema> {
    match serde_json::from_value(value.clone()) {
        Ok(schema) => RefOr::T(schema),
        Err(e) => panic!("not a schema ({e}): {value}"),
    }
}

pub(crate) fn codes<T>(list: impl IntoIterator<Item = T>, name: impl Fn(T) -> &'static str) -> Vec<&'static str> {
    list.into_iter().map(name).collect()
}

/// A named schema from JSON: `named_schema!(Name, "what it is", json!({...}))`.
macro_rules! named_schema {
    ($(#[$doc:meta])* $name:ident, $value:expr) => {
        $(#[$doc])*
        pub struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                schema($value)
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

named_schema!(
    /// A slug as `domain::parse_slug` accepts it.
    Slug,
    json!({
        "type": "string", "minLength": 1, "maxLength": 100, "pattern": SLUG_PATTERN,
        "description": "1–100 characters of a-z, 0-9 and -.", "example": "menden-sauerland",
    })
);

named_schema!(
    /// A new procedure's slug: a slug, but not one of the board's own pages.
    ProcedureSlug,
    json!({
        "type": "string", "minLength": 1, "maxLength": 100, "pattern": SLUG_PATTERN,
        // utoipa has no `not`; the two reserved words are named instead.
        "description": format!("1–100 characters of a-z, 0-9 and -; not {}.", super::RESERVED_PROCEDURE_SLUGS.join(" or ")),
        "example": "kfz",
    })
);

named_schema!(
    /// An optional slug filter: empty means no filter.
    SlugFilter,
    json!({
        "type": "string", "maxLength": 100, "pattern": "^[a-z0-9-]*$",
        "description": "A slug (1–100 characters of a-z, 0-9 and -); empty means no filter.",
        "example": "menden-sauerland",
    })
);

named_schema!(
    /// An official key: 8 digits for a town, 5 for a district.
    Ags,
    json!({
        "type": "string", "pattern": AGS_PATTERN,
        "description": "Official key (AGS): 8 digits for a town, 5 for a district.", "example": "05962040",
    })
);

named_schema!(
    /// An id in a path.
    Id,
    json!({
        "type": "string", "minLength": 1, "maxLength": 200, "pattern": ID_PATTERN,
        "description": "1–200 characters, no control characters.",
    })
);

named_schema!(
    /// A calendar date or empty.
    DateOrEmpty,
    json!({
        "description": "A date (YYYY-MM-DD), or empty for none.",
        "anyOf": [{ "type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$" }, { "type": "string", "enum": [""] }],
        "example": "2026-12-15",
    })
);

named_schema!(
    /// When a service is expected back, as precisely as anyone can say (`domain::expected`).
    ExpectedPeriod,
    json!({
        "description": "A day (YYYY-MM-DD), an ISO calendar week (YYYY-Www), the first or second half of a month \
                        (YYYY-MM-H1, YYYY-MM-H2), a month (YYYY-MM), `unknown` for \"not foreseeable yet\", or empty for \
                        not stated. From 2000 to ten years after today (the upper bound moves with today and is not in \
                        the pattern); week 53 exists only in years that have it.",
        "anyOf": [
            { "type": "string", "format": "date", "pattern": r"^20[0-9]{2}-[0-9]{2}-[0-9]{2}$" },
            { "type": "string", "pattern": r"^20[0-9]{2}-W(0[1-9]|[1-4][0-9]|5[0-2])$" },
            { "type": "string", "pattern": r"^20[0-9]{2}-(0[1-9]|1[0-2])(-H[12])?$" },
            { "type": "string", "enum": ["unknown", ""] },
        ],
        "example": "2026-12-H2",
    })
);

named_schema!(
    /// A date something is expected back or released (`expected_date` in writes), or empty.
    ExpectedDate,
    json!({
        "description": "A date (YYYY-MM-DD) from 2000-01-01 to ten years after today, or empty for none. \
                        (The upper bound moves with today and is not in the pattern.)",
        "anyOf": [{ "type": "string", "format": "date", "pattern": r"^20[0-9]{2}-[0-9]{2}-[0-9]{2}$" }, { "type": "string", "enum": [""] }],
        "example": "2026-12-15",
    })
);

named_schema!(
    /// An RFC 3339 time or empty.
    DateTimeOrEmpty,
    json!({
        "description": "An RFC 3339 time, or empty for none.",
        "anyOf": [{ "type": "string", "format": "date-time" }, { "type": "string", "enum": [""] }],
        "example": "2026-12-31T23:00:00Z",
    })
);

named_schema!(
    /// When an announcement or FAQ entry is published (`write::publication`).
    Publication,
    json!({
        "description": "`now` (or empty), `draft`, or an RFC 3339 time for scheduled publication.",
        "anyOf": [{ "type": "string", "enum": ["now", "draft", ""] }, { "type": "string", "format": "date-time" }],
        "example": "now",
    })
);

named_schema!(
    /// A journal time bound (`editing::time_bound`).
    TimeBound,
    json!({
        "description": "An RFC 3339 time, or YYYY-MM-DD for the start of that day (UTC); empty for no bound.",
        "anyOf": [
            { "type": "string", "format": "date-time" },
            { "type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$" },
            { "type": "string", "enum": [""] },
        ],
    })
);

named_schema!(
    /// `If-Match` of PUT and DELETE.
    IfMatch,
    json!({
        "type": "string", "pattern": IF_MATCH_PATTERN,
        "description": "The version the change starts from, as the ETag gave it (`\"3\"`; quotes and `W/` optional; `*` for any).",
        "example": "\"3\"",
    })
);

named_schema!(
    /// `Idempotency-Key` of POST.
    IdempotencyKeyValue,
    json!({
        "type": "string", "minLength": 1, "maxLength": 200, "pattern": IDEMPOTENCY_KEY_PATTERN,
        "description": "1–200 printable ASCII characters.", "example": "retry-1 of 2026-11-01",
    })
);

named_schema!(
    /// A service area.
    ServiceArea,
    json!({ "type": "string", "enum": SERVICE_AREAS, "example": "vehicle" })
);

named_schema!(
    /// A service area or empty (infrastructure has none).
    ServiceAreaOrEmpty,
    json!({ "type": "string", "enum": ([&SERVICE_AREAS[..], &[""]].concat()), "description": "A service area, or empty." })
);

named_schema!(
    /// `procedure` or `infrastructure`.
    ProcedureKind,
    json!({ "type": "string", "enum": PROCEDURE_KINDS })
);

named_schema!(
    /// A role, or empty for the creator's own.
    RoleOrOwn,
    json!({
        "type": "string", "enum": ([codes(Role::ALL, Role::as_str), vec![""]].concat()),
        "description": "A role; empty for the creator's own.",
    })
);

named_schema!(
    /// A scope kind as written in a request.
    ScopeKindName,
    json!({
        "type": "string",
        "enum": codes([ScopeKind::Area, ScopeKind::District, ScopeKind::Municipality, ScopeKind::Service], |k| k.as_str()),
    })
);

named_schema!(
    /// A language of the message catalogue (including those added with `--messages-dir`).
    LanguageCode,
    json!({ "type": "string", "enum": i18n::languages().iter().map(|l| l.code.as_str()).collect::<Vec<_>>(), "example": "de" })
);

named_schema!(
    /// A kind of event a webhook can be sent (`notify::webhooks::EVENT_TYPES`).
    WebhookEvent,
    json!({ "type": "string", "enum": crate::domain::events::WEBHOOK_EVENTS })
);

named_schema!(
    /// A user name as `auth::valid_username` accepts it.
    Username,
    json!({
        "type": "string", "minLength": 2, "maxLength": 64, "pattern": USERNAME_PATTERN,
        "description": "2–64 characters of a-z, 0-9, `.`, `_` and `-`.", "example": "menden",
    })
);

named_schema!(
    /// A web address as `write::url_field` accepts it, or empty.
    WebAddress,
    json!({
        "type": "string", "maxLength": 500, "pattern": r"^([Hh][Tt][Tt][Pp][Ss]?://[^\s\u0000-\u001F\u007F-\u009F]*)?$",
        "description": "An http(s) address without white space, or empty.", "example": "https://www.menden.de",
    })
);

named_schema!(
    /// An e-mail address as the contact channels accept it, or empty.
    ContactEmail,
    json!({
        // Characters: anything printable but white space and the specials "(),.:;<>@[\]; the
        // server (`write::valid_email`) is narrower still (letters, digits and !#$%&'*+-/=?^_`{|}~
        // in the local part, letters, digits and inner hyphens in labels, a local part of at
        // most 64 and labels of at most 63 characters), which a pattern cannot say briefly.
        "type": "string", "maxLength": 254,
        "pattern": r#"^([^\s\u0000-\u001F\u007F-\u009F"(),.:;<>@\[\\\]]+(\.[^\s\u0000-\u001F\u007F-\u009F"(),.:;<>@\[\\\]]+)*@[^\s\u0000-\u001F\u007F-\u009F"(),.:;<>@\[\\\]]+(\.[^\s\u0000-\u001F\u007F-\u009F"(),.:;<>@\[\\\]]+)+)?$"#,
        "description": "An e-mail address local@domain (at most 254 characters, a local part of at most 64, \
                        a domain of at least two labels of letters, digits and inner hyphens), or empty.",
        "example": "buergerbuero@menden.de",
    })
);

/// Every named format, for the document's components (utoipa collects schemas from bodies and
/// responses, not from parameters).
pub fn all() -> Vec<(String, RefOr<Schema>)> {
    fn one<T: utoipa::ToSchema>() -> (String, RefOr<Schema>) {
        (T::name().into_owned(), T::schema())
    }
    vec![
        one::<Slug>(),
        one::<ProcedureSlug>(),
        one::<SlugFilter>(),
        one::<Ags>(),
        one::<Id>(),
        one::<DateOrEmpty>(),
        one::<ExpectedDate>(),
        one::<ExpectedPeriod>(),
        one::<DateTimeOrEmpty>(),
        one::<Publication>(),
        one::<TimeBound>(),
        one::<IfMatch>(),
        one::<IdempotencyKeyValue>(),
        one::<ServiceArea>(),
        one::<ServiceAreaOrEmpty>(),
        one::<ProcedureKind>(),
        one::<RoleOrOwn>(),
        one::<ScopeKindName>(),
        one::<LanguageCode>(),
        one::<Username>(),
        one::<WebAddress>(),
        one::<ContactEmail>(),
        one::<WebhookEvent>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_slug;
    use utoipa::PartialSchema;

    fn json_of<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    fn matches(pattern: &str, s: &str) -> bool {
        regex_lite::Regex::new(pattern).unwrap().is_match(s)
    }

    #[test]
    fn slug_pattern_is_parse_slug() {
        let s = json_of::<Slug>();
        let max = s["maxLength"].as_u64().unwrap() as usize;
        for slug in
            ["menden-sauerland", "a", "0-9", "-", &"a".repeat(100), &"a".repeat(101), "", "Menden", "a b", "ä", "a_b"]
        {
            let documented = matches(SLUG_PATTERN, slug) && slug.chars().count() <= max;
            assert_eq!(documented, parse_slug(slug).is_ok(), "{slug:?}");
        }
    }

    #[test]
    fn header_patterns_are_what_the_server_reads() {
        for (value, ok) in [
            ("\"3\"", true),
            ("3", true),
            ("W/\"0\"", true),
            ("*", true),
            ("\"abc\"", false),
            ("+3", false),
            ("\"-1\"", false),
        ] {
            assert_eq!(matches(IF_MATCH_PATTERN, value), ok, "{value}");
        }
        for (value, ok) in
            [("retry-1 of 2026-11-01", true), ("k", true), (" k", false), ("k ", false), ("tab\there", false)]
        {
            assert_eq!(matches(IDEMPOTENCY_KEY_PATTERN, value), ok, "{value:?}");
        }
    }

    #[test]
    fn text_patterns_refuse_what_write_refuses() {
        let text = text(10)["pattern"].as_str().unwrap().to_string();
        let required = required_text(10)["pattern"].as_str().unwrap().to_string();
        for (value, ok_text, ok_required) in [
            ("Hallo\nWelt\t!", true, true),
            ("", true, false),
            (" \n\t", true, false),
            ("\u{a0}x", true, true),
            ("a\u{0}b", false, false),
            ("a\u{7f}", false, false),
            ("\u{85}", false, false),
            ("\u{b}x", false, false),
        ] {
            assert_eq!(matches(&text, value), ok_text, "text {value:?}");
            assert_eq!(matches(&required, value), ok_required, "required {value:?}");
        }
    }
}
