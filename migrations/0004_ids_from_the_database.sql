-- Ids from the database instead of MAX(id)+1: one counter per table, advanced with
-- `UPDATE id_counters SET value = value + 1 WHERE name = … RETURNING value` inside the inserting
-- transaction. The same SQL on SQLite and PostgreSQL; the row lock (PostgreSQL) or the write
-- lock (SQLite) makes two concurrent inserts get different ids, and a rolled-back insert rolls
-- its counter back with it.
CREATE TABLE id_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO id_counters (name, value) SELECT 'users', COALESCE(MAX(id), 0) FROM users;
INSERT INTO id_counters (name, value) SELECT 'api_tokens', COALESCE(MAX(id), 0) FROM api_tokens;
INSERT INTO id_counters (name, value) SELECT 'procedure_steps', COALESCE(MAX(id), 0) FROM procedure_steps;
