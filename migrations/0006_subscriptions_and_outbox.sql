-- E-mail subscriptions (double opt-in) and the outbox of messages to deliver.
--
-- A subscription is pending until its confirmation link's button is pressed; pending ones expire
-- after 72 hours and are deleted. The confirmation token is stored only as its SHA-256 hash;
-- unsubscribe links carry the id and an HMAC of it under a key in `meta` (`notify_secret`), so
-- that every mail's link keeps working without a token stored per mail. Addresses never go into the journal (it is a
-- public record of changes, not of people).
CREATE TABLE subscriptions (
    id                 TEXT PRIMARY KEY,
    email              TEXT NOT NULL,
    lang               TEXT NOT NULL,
    -- The scope: a town (AGS), a service (slug), a service area; empty means any.
    municipality_ags   TEXT NOT NULL DEFAULT '',
    service_slug       TEXT NOT NULL DEFAULT '',
    area               TEXT NOT NULL DEFAULT '',
    confirmed          BIGINT NOT NULL DEFAULT 0,
    confirm_token_hash TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    expires_at         TEXT NOT NULL,
    confirmed_at       TEXT NOT NULL DEFAULT '',
    -- Proof of consent: the version and text the address agreed to, and a hash of the client's
    -- address (not the address itself).
    consent_version    TEXT NOT NULL DEFAULT '',
    consent_text       TEXT NOT NULL DEFAULT '',
    client_hash        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX subscriptions_email ON subscriptions (email);
CREATE UNIQUE INDEX subscriptions_confirm_token ON subscriptions (confirm_token_hash);

-- Requests to subscribe, for the rate limits per address (hashed) and per client (hashed).
CREATE TABLE subscription_requests (
    key_hash TEXT NOT NULL,
    at       TEXT NOT NULL
);
CREATE INDEX subscription_requests_key ON subscription_requests (key_hash, at);

-- Every message to deliver, written in the transaction that causes it. `id` is its idempotency
-- key (the Message-ID of a mail): a retry sends the same id again. A worker claims due rows by
-- setting `claimed_until`; a crashed worker's claim runs out and another takes the row over.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL DEFAULT '',
    body_text       TEXT NOT NULL DEFAULT '',
    body_html       TEXT NOT NULL DEFAULT '',
    unsubscribe_url TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    claimed_until   TEXT NOT NULL DEFAULT '',
    delivered_at    TEXT NOT NULL DEFAULT '',
    last_error      TEXT NOT NULL DEFAULT ''
);
-- In the order the worker claims due messages, so that a claim reads its batch off the index
-- instead of sorting every waiting message.
CREATE INDEX outbox_due ON outbox (channel, state, next_attempt_at, id);

-- How far the notifier has read the journal's events, and the availability of each service in
-- each town as subscribers were last told (only where it is not normal operation without date):
-- a change is a difference between the current snapshot and this.
CREATE TABLE notify_cursor (
    name TEXT PRIMARY KEY,
    seq  BIGINT NOT NULL
);
CREATE TABLE notify_state (
    municipality_ags TEXT NOT NULL,
    service_slug     TEXT NOT NULL,
    level            TEXT NOT NULL,
    expected_return  TEXT NOT NULL,
    PRIMARY KEY (municipality_ags, service_slug)
);
