-- Editors: accounts, scopes, second factors, sessions, API tokens, idempotency; the journal.

CREATE TABLE users (
    id               BIGINT PRIMARY KEY,
    username         TEXT NOT NULL UNIQUE,
    display_name     TEXT NOT NULL DEFAULT '',
    role             TEXT NOT NULL,
    password_hash    TEXT NOT NULL DEFAULT '',
    totp_secret      TEXT NOT NULL DEFAULT '',
    totp_last_step   BIGINT NOT NULL DEFAULT 0,
    -- Demo accounts may sign in without a second factor; nobody else can.
    demo             BIGINT NOT NULL DEFAULT 0,
    setup_token_hash TEXT NOT NULL DEFAULT '',
    setup_expires_at TEXT NOT NULL DEFAULT '',
    disabled         BIGINT NOT NULL DEFAULT 0,
    failed_logins    BIGINT NOT NULL DEFAULT 0,
    locked_until     TEXT NOT NULL DEFAULT '',
    created_at       TEXT NOT NULL
);

-- The towns (8-digit AGS) and districts (5-digit AGS) an editor may change.
CREATE TABLE user_scopes (
    user_id BIGINT NOT NULL REFERENCES users (id),
    ags     TEXT NOT NULL,
    PRIMARY KEY (user_id, ags)
);

CREATE TABLE recovery_codes (
    user_id   BIGINT NOT NULL REFERENCES users (id),
    code_hash TEXT NOT NULL,
    used_at   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, code_hash)
);

-- Server-side sessions; the cookie holds a random id, the table its SHA-256.
CREATE TABLE sessions (
    id_hash        TEXT PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users (id),
    csrf_token     TEXT NOT NULL,
    second_factor  BIGINT NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    last_seen_at   TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Failed sign-ins per source address, for slowing down and locking out guessing.
CREATE TABLE login_failures (
    address TEXT NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX login_failures_address ON login_failures (address, at);

-- Bearer tokens for the write API; scoped like users (role and AGS list of their own).
CREATE TABLE api_tokens (
    id          BIGINT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    role        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL DEFAULT '',
    revoked_at  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE api_token_scopes (
    token_id BIGINT NOT NULL REFERENCES api_tokens (id),
    ags      TEXT NOT NULL,
    PRIMARY KEY (token_id, ags)
);

-- A retried POST with the same key returns the first answer instead of acting twice.
CREATE TABLE idempotency_keys (
    principal    TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       BIGINT NOT NULL,
    response     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (principal, key)
);

-- The journal: append only, chained by hashes. journal_head is the single row every write
-- transaction locks first, which also serialises appends.
CREATE TABLE journal (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    author    TEXT NOT NULL,
    scope     TEXT NOT NULL,
    kind      TEXT NOT NULL,
    payload   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX journal_kind ON journal (kind);
CREATE INDEX journal_scope ON journal (scope);

CREATE TABLE journal_head (
    id   BIGINT PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO journal_head (id, seq, hash) VALUES (1, 0, '');

-- Versions for optimistic concurrency: a save names the version it started from.
ALTER TABLE announcements ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE faq_entries ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE referrals ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE municipalities ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE districts ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
