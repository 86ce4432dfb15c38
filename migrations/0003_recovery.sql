-- The recovery board: procedures and shared infrastructure, their security gates, the rollout
-- per town, and which services need which procedures.

CREATE TABLE procedures (
    slug              TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    -- procedure (a "Fachverfahren") or infrastructure (directory service, network …)
    kind              TEXT NOT NULL DEFAULT 'procedure',
    area              TEXT NOT NULL DEFAULT '',
    priority          BIGINT NOT NULL DEFAULT 100,
    stage             TEXT NOT NULL DEFAULT 'down',
    stage_since       TEXT NOT NULL,
    -- What basic operation lacks, one function per line.
    missing_functions TEXT NOT NULL DEFAULT '',
    -- Dates the operators expect (YYYY-MM-DD or empty).
    expected_release  TEXT NOT NULL DEFAULT '',
    expected_normal   TEXT NOT NULL DEFAULT '',
    version           BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE procedure_dependencies (
    procedure_slug TEXT NOT NULL REFERENCES procedures (slug),
    depends_on     TEXT NOT NULL REFERENCES procedures (slug),
    PRIMARY KEY (procedure_slug, depends_on)
);

-- The history of every stage change with its evidence (also journaled).
CREATE TABLE procedure_steps (
    id             BIGINT PRIMARY KEY,
    procedure_slug TEXT NOT NULL REFERENCES procedures (slug),
    from_stage     TEXT NOT NULL,
    to_stage       TEXT NOT NULL,
    at             TEXT NOT NULL,
    author         TEXT NOT NULL,
    evidence       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX procedure_steps_procedure ON procedure_steps (procedure_slug);

CREATE TABLE rollouts (
    procedure_slug   TEXT NOT NULL REFERENCES procedures (slug),
    municipality_ags TEXT NOT NULL REFERENCES municipalities (ags),
    stage            TEXT NOT NULL,
    since            TEXT NOT NULL,
    expected_date    TEXT NOT NULL DEFAULT '',
    author           TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (procedure_slug, municipality_ags)
);

CREATE TABLE service_procedures (
    service_slug   TEXT NOT NULL REFERENCES services (slug),
    procedure_slug TEXT NOT NULL REFERENCES procedures (slug),
    PRIMARY KEY (service_slug, procedure_slug)
);
