-- The announcements subscribers and webhooks were last told of, with the version they were told:
-- a published announcement not here (or here with an older version) is news, one here that is
-- no longer public was withdrawn. Kept as a state, not read off the journal, so that a scheduled
-- announcement is news when its time comes, not when it was saved.
CREATE TABLE notify_announcements (
    id      TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- Whom to tell when a webhook is paused (failing for about a day) or disabled (410 Gone): an
-- address given when it was registered; empty: the desk only.
ALTER TABLE webhooks ADD COLUMN contact_email TEXT NOT NULL DEFAULT '';
