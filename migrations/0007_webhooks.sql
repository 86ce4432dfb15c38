-- Webhooks: other systems (town websites, press offices, warning apps) told of changes by a signed
-- POST (Standard Webhooks). The signing secret must be kept to sign, so it is stored as given out
-- (shown once to its owner). Filters are JSON lists; empty means any. A webhook whose deliveries
-- fail for about a day is `paused`; one answered 410 Gone is `disabled`.
CREATE TABLE webhooks (
    id             TEXT PRIMARY KEY,
    owner_id       BIGINT NOT NULL,
    owner_name     TEXT NOT NULL,
    url            TEXT NOT NULL,
    municipalities TEXT NOT NULL DEFAULT '[]',
    services       TEXT NOT NULL DEFAULT '[]',
    events         TEXT NOT NULL DEFAULT '[]',
    secret         TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'active',
    created_at     TEXT NOT NULL,
    state_reason   TEXT NOT NULL DEFAULT ''
);

-- Every delivery attempt, for the delivery log.
CREATE TABLE webhook_attempts (
    message_id  TEXT NOT NULL,
    webhook_id  TEXT NOT NULL,
    at          TEXT NOT NULL,
    status      BIGINT NOT NULL DEFAULT 0,
    error       TEXT NOT NULL DEFAULT '',
    duration_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webhook_attempts_webhook ON webhook_attempts (webhook_id, at);
