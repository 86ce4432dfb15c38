-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Integers are BIGINT and reals DOUBLE PRECISION so both engines decode them the same way;
-- timestamps are TEXT in RFC 3339 UTC ("2026-11-29T08:15:00Z"), which sorts correctly.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE districts (
    ags               TEXT PRIMARY KEY,
    slug              TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL,
    member            BIGINT NOT NULL DEFAULT 1,
    lat               DOUBLE PRECISION,
    lon               DOUBLE PRECISION,
    phone             TEXT NOT NULL DEFAULT '',
    email             TEXT NOT NULL DEFAULT '',
    website           TEXT NOT NULL DEFAULT '',
    emergency_website TEXT NOT NULL DEFAULT '',
    social_media      TEXT NOT NULL DEFAULT ''
);

CREATE TABLE municipalities (
    ags               TEXT PRIMARY KEY,
    slug              TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL,
    district_ags      TEXT NOT NULL REFERENCES districts (ags),
    member            BIGINT NOT NULL DEFAULT 1,
    population        BIGINT,
    lat               DOUBLE PRECISION NOT NULL,
    lon               DOUBLE PRECISION NOT NULL,
    phone             TEXT NOT NULL DEFAULT '',
    email             TEXT NOT NULL DEFAULT '',
    website           TEXT NOT NULL DEFAULT '',
    emergency_website TEXT NOT NULL DEFAULT '',
    social_media      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX municipalities_district ON municipalities (district_ags);

CREATE TABLE postal_codes (
    postal_code      TEXT NOT NULL,
    municipality_ags TEXT NOT NULL REFERENCES municipalities (ags),
    place            TEXT NOT NULL,
    PRIMARY KEY (postal_code, municipality_ags)
);

CREATE TABLE services (
    slug           TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    area           TEXT NOT NULL,
    responsibility TEXT NOT NULL,
    leika_key      TEXT NOT NULL DEFAULT '',
    synonyms       TEXT NOT NULL DEFAULT '',
    description    TEXT NOT NULL DEFAULT '',
    sort_order     BIGINT NOT NULL DEFAULT 0
);

-- An office where citizens can go: a town's citizens' office, a district's vehicle
-- registration office, or an office outside the area that accepts referrals.
CREATE TABLE offices (
    slug          TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    owner_ags     TEXT NOT NULL DEFAULT '',
    street        TEXT NOT NULL DEFAULT '',
    postal_code   TEXT NOT NULL DEFAULT '',
    city          TEXT NOT NULL DEFAULT '',
    lat           DOUBLE PRECISION NOT NULL,
    lon           DOUBLE PRECISION NOT NULL,
    phone         TEXT NOT NULL DEFAULT '',
    email         TEXT NOT NULL DEFAULT '',
    website       TEXT NOT NULL DEFAULT '',
    opening_hours TEXT NOT NULL DEFAULT ''
);

-- What a town (8-digit AGS) or a district (5-digit AGS) says about one service.
CREATE TABLE statements (
    scope_ags       TEXT NOT NULL,
    service_slug    TEXT NOT NULL REFERENCES services (slug),
    level           TEXT NOT NULL,
    restrictions    TEXT NOT NULL DEFAULT '',
    workaround      TEXT NOT NULL DEFAULT '',
    backlog         TEXT NOT NULL DEFAULT '',
    expected_return TEXT NOT NULL DEFAULT '',
    author          TEXT NOT NULL DEFAULT '',
    stated_at       TEXT NOT NULL,
    version         BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (scope_ags, service_slug)
);

-- Office O accepts service S from residents of a town or a whole district.
CREATE TABLE referrals (
    id           TEXT PRIMARY KEY,
    office_slug  TEXT NOT NULL REFERENCES offices (slug),
    service_slug TEXT NOT NULL REFERENCES services (slug),
    for_ags      TEXT NOT NULL,
    conditions   TEXT NOT NULL DEFAULT '',
    valid_from   TEXT NOT NULL DEFAULT '',
    valid_until  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX referrals_for ON referrals (for_ags, service_slug);

-- scope_kind: area | district | municipality | service; scope_ref is the AGS or service slug.
CREATE TABLE announcements (
    id           TEXT PRIMARY KEY,
    scope_kind   TEXT NOT NULL,
    scope_ref    TEXT NOT NULL DEFAULT '',
    lang         TEXT NOT NULL DEFAULT 'de',
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    author       TEXT NOT NULL DEFAULT '',
    published_at TEXT,
    updated_at   TEXT NOT NULL
);

CREATE TABLE faq_entries (
    id           TEXT PRIMARY KEY,
    scope_kind   TEXT NOT NULL,
    scope_ref    TEXT NOT NULL DEFAULT '',
    lang         TEXT NOT NULL DEFAULT 'de',
    question     TEXT NOT NULL,
    answer       TEXT NOT NULL,
    sort_order   BIGINT NOT NULL DEFAULT 0,
    published_at TEXT,
    updated_at   TEXT NOT NULL
);
