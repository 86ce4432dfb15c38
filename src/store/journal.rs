//! The journal ("Einsatztagebuch"): every write appends a numbered, timestamped entry chained by
//! the hash of the previous one, inside the same transaction as the change. Entries are never
//! updated or deleted; `verify` finds the first one that was altered, removed or reordered.

use anyhow::Result;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::domain::events::{Event, Recorded};

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub seq: i64,
    pub at: String,
    pub author: String,
    pub scope: String,
    pub kind: String,
    /// The change as JSON text, exactly as hashed.
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// SHA-256 over the previous hash and every field, each length-prefixed so no two different
/// entries hash the same input.
pub fn entry_hash(prev_hash: &str, seq: i64, at: &str, author: &str, scope: &str, kind: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    for field in [prev_hash, &seq.to_string(), at, author, scope, kind, payload] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Takes the journal's write lock for this transaction and returns the head (last seq, last hash).
/// Every write transaction calls this first: on PostgreSQL the row lock serialises writers, on
/// SQLite the first statement being a write takes the database lock at once.
pub async fn lock_head(c: &mut AnyConnection) -> Result<(i64, String)> {
    let row =
        sqlx::query("UPDATE journal_head SET seq = seq WHERE id = 1 RETURNING seq, hash").fetch_one(&mut *c).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Appends an entry; call inside the transaction that makes the change.
async fn append_text(c: &mut AnyConnection, author: &str, scope: &str, kind: &str, payload: String) -> Result<Entry> {
    let (last_seq, last_hash) = lock_head(c).await?;
    let seq = last_seq + 1;
    let at = crate::domain::time::now_rfc3339();
    let hash = entry_hash(&last_hash, seq, &at, author, scope, kind, &payload);
    sqlx::query(
        "INSERT INTO journal (seq, at, author, scope, kind, payload, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(&at)
    .bind(author)
    .bind(scope)
    .bind(kind)
    .bind(&payload)
    .bind(&last_hash)
    .bind(&hash)
    .execute(&mut *c)
    .await?;
    sqlx::query("UPDATE journal_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&hash)
        .execute(&mut *c)
        .await?;
    Ok(Entry {
        seq,
        at,
        author: author.into(),
        scope: scope.into(),
        kind: kind.into(),
        payload,
        prev_hash: last_hash,
        hash,
    })
}

/// Appends one typed event as one entry (kind and scope from the event, payload = the event);
/// call inside the transaction that makes the change. The time is `time::now_rfc3339()`, which
/// the demo sets to the story's time (`time::with_clock`).
pub async fn append_event(c: &mut AnyConnection, author: &str, event: &Event) -> Result<Entry> {
    append_text(c, author, &event.scope(), event.kind(), event.to_payload()).await
}

/// An event as read back from the journal, with the entry's position, time and author.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub seq: i64,
    pub at: String,
    pub author: String,
    pub event: Event,
}

/// The typed events after `seq` (0: from the start), in order, at most `limit`: what an outbox
/// worker or an export on any instance consumes, remembering the last `seq` it handled. Entries
/// written before typed events (payload without `"type"`) are skipped; they stay in the chain.
pub async fn events_since(c: &mut AnyConnection, seq: i64, limit: i64) -> Result<Vec<StoredEvent>> {
    let rows = sqlx::query("SELECT * FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(seq)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
    let mut out = Vec::new();
    for row in &rows {
        let e = row_to_entry(row)?;
        if let Some(event) = Event::from_payload(&e.payload) {
            out.push(StoredEvent { seq: e.seq, at: e.at, author: e.author, event });
        }
    }
    Ok(out)
}

/// The announcement events after `seq`, in order (the kinds `announcement.*`; entries before
/// typed events are skipped), for the snapshot's announcement history.
pub async fn announcement_events_since(c: &mut AnyConnection, seq: i64) -> Result<Vec<Recorded>> {
    recorded_since(
        c,
        seq,
        "SELECT seq, at, payload FROM journal WHERE seq > $1 AND kind IN \
         ('announcement.create', 'announcement.update', 'announcement.correct', 'announcement.withdraw') ORDER BY seq",
    )
    .await
}

/// The statement and rollout events after `seq`, in order, for the snapshot's status history
/// (the public history of each service in each town, and the status feeds).
pub async fn status_events_since(c: &mut AnyConnection, seq: i64) -> Result<Vec<Recorded>> {
    recorded_since(
        c,
        seq,
        "SELECT seq, at, payload FROM journal WHERE seq > $1 AND kind IN \
         ('statement.set', 'statement.withdraw', 'rollout.set', 'rollout.pulled_back') ORDER BY seq",
    )
    .await
}

/// The typed events a query for `seq, at, payload` after `$1` finds.
async fn recorded_since(c: &mut AnyConnection, seq: i64, sql: &'static str) -> Result<Vec<Recorded>> {
    let rows = sqlx::query(sql).bind(seq).fetch_all(&mut *c).await?;
    let mut out = Vec::new();
    for row in &rows {
        let payload: String = row.try_get("payload")?;
        if let Some(event) = Event::from_payload(&payload) {
            out.push(Recorded { seq: row.try_get("seq")?, at: row.try_get("at")?, event });
        }
    }
    Ok(out)
}

/// Filter for reading the journal.
#[derive(Default, Clone, Debug, serde::Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub scope: String,
    /// Only entries at or after this time (RFC 3339 or YYYY-MM-DD).
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
}

fn row_to_entry(row: &sqlx::any::AnyRow) -> Result<Entry> {
    Ok(Entry {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        author: row.try_get("author")?,
        scope: row.try_get("scope")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Entries in order, filtered; `scopes` limits to entries about these AGS (for editors), `None` for all.
pub async fn list(c: &mut AnyConnection, f: &Filter, limit: i64) -> Result<Vec<Entry>> {
    // Filters are bound parameters; empty means "any".
    let rows = sqlx::query(
        "SELECT * FROM journal
         WHERE ($1 = '' OR kind LIKE $1 || '%') AND ($2 = '' OR author = $2) AND ($3 = '' OR scope = $3)
           AND ($4 = '' OR at >= $4) AND ($5 = '' OR at < $5)
         ORDER BY seq DESC LIMIT $6",
    )
    .bind(&f.kind)
    .bind(&f.author)
    .bind(&f.scope)
    .bind(&f.since)
    .bind(&f.until)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(row_to_entry).collect()
}

pub async fn all(c: &mut AnyConnection) -> Result<Vec<Entry>> {
    let rows = sqlx::query("SELECT * FROM journal ORDER BY seq").fetch_all(&mut *c).await?;
    rows.iter().map(row_to_entry).collect()
}

pub async fn head(c: &mut AnyConnection) -> Result<(i64, String)> {
    let row = sqlx::query("SELECT seq, hash FROM journal_head WHERE id = 1").fetch_one(&mut *c).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The journal as CSV or JSON, for auditors; the hashes let them verify it independently.
pub fn export(entries: &[Entry], format: &str) -> Result<String> {
    if format == "csv" {
        let mut w = csv::Writer::from_writer(Vec::new());
        for e in entries {
            w.serialize(e)?;
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    } else {
        Ok(serde_json::to_string_pretty(entries)? + "\n")
    }
}

/// The first thing wrong with the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    /// The entry's content no longer matches its hash.
    Altered { seq: i64 },
    /// Entries are missing before this one.
    Removed { from: i64, to: i64 },
    /// The entry does not follow its predecessor (moved, or its predecessor was replaced).
    Reordered { seq: i64 },
    /// The head says there are more entries than the table holds, or ends in another hash.
    TailRemoved { last_present: i64, expected: i64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Altered { seq } => write!(f, "entry {seq} was altered: its content does not match its hash"),
            Problem::Removed { from, to } if from == to => write!(f, "entry {from} was removed"),
            Problem::Removed { from, to } => write!(f, "entries {from} to {to} were removed"),
            Problem::Reordered { seq } => {
                write!(f, "entry {seq} does not follow entry {}: reordered or replaced", seq - 1)
            }
            Problem::TailRemoved { last_present, expected } => {
                write!(
                    f,
                    "the journal ends at entry {last_present} but its head records {expected}: the last entries were removed or altered"
                )
            }
        }
    }
}

/// Checks the chain from the first entry to the head.
pub fn verify(entries: &[Entry], head: (i64, &str)) -> Result<(), Problem> {
    let mut expected_seq = 1;
    let mut prev_hash = String::new();
    for e in entries {
        if e.seq > expected_seq {
            return Err(Problem::Removed { from: expected_seq, to: e.seq - 1 });
        }
        if e.seq < expected_seq {
            return Err(Problem::Reordered { seq: e.seq });
        }
        if entry_hash(&e.prev_hash, e.seq, &e.at, &e.author, &e.scope, &e.kind, &e.payload) != e.hash {
            return Err(Problem::Altered { seq: e.seq });
        }
        if e.prev_hash != prev_hash {
            return Err(Problem::Reordered { seq: e.seq });
        }
        prev_hash = e.hash.clone();
        expected_seq += 1;
    }
    let last = expected_seq - 1;
    if head.0 != last || head.1 != prev_hash {
        return Err(Problem::TailRemoved { last_present: last, expected: head.0 });
    }
    Ok(())
}

/// The stored journal checked against its head: what `journal verify`, the desk's journal page
/// and `GET /api/v1/journal/verify` report.
#[derive(Debug)]
pub struct Verified {
    /// How many entries are stored.
    pub entries: usize,
    pub head_seq: i64,
    pub head_hash: String,
    /// `Ok` when the chain is intact, else the first thing wrong with it.
    pub verdict: Result<(), Problem>,
}

/// Loads every entry and the head in one read transaction and verifies the chain.
pub async fn verify_stored(c: &mut AnyConnection) -> Result<Verified> {
    let entries = all(c).await?;
    let (head_seq, head_hash) = head(c).await?;
    let verdict = verify(&entries, (head_seq, &head_hash));
    Ok(Verified { entries: entries.len(), head_seq, head_hash, verdict })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for seq in 1..=n {
            let prev_hash = out.last().map(|e| e.hash.clone()).unwrap_or_default();
            let payload = format!("{{\"n\":{seq}}}");
            let at = format!("2026-01-01T00:00:{seq:02}Z");
            let hash = entry_hash(&prev_hash, seq, &at, "a", "area", "test", &payload);
            out.push(Entry {
                seq,
                at,
                author: "a".into(),
                scope: "area".into(),
                kind: "test".into(),
                payload,
                prev_hash,
                hash,
            });
        }
        out
    }

    /// Appends an entry to a chain in memory, as `append` does in the database.
    fn push(chain: &mut Vec<Entry>, kind: &str, scope: &str, payload: String) {
        let seq = chain.len() as i64 + 1;
        let prev_hash = chain.last().map(|e| e.hash.clone()).unwrap_or_default();
        let at = format!("2026-01-01T00:{seq:02}:00Z");
        let hash = entry_hash(&prev_hash, seq, &at, "a", scope, kind, &payload);
        chain.push(Entry {
            seq,
            at,
            author: "a".into(),
            scope: scope.into(),
            kind: kind.into(),
            payload,
            prev_hash,
            hash,
        });
    }

    #[test]
    fn a_chain_of_old_untyped_and_new_typed_entries_verifies() {
        use crate::domain::events::{Event, Stated};
        let mut c = Vec::new();
        // Entries as written before typed events, byte for byte as `json!(..).to_string()` made them.
        push(&mut c, "demo.seed", "area", r#"{"accounts":["admin","krisenstab"]}"#.into());
        push(
            &mut c,
            "statement.set",
            "05962040",
            r#"{"backlog":"","expected_return":"","level":"limited","restrictions":"","service":"wohngeld","version":1,"workaround":""}"#.into(),
        );
        let event = Event::StatementChanged {
            scope: "05962040".into(),
            service: "wohngeld".into(),
            to: Stated {
                level: crate::domain::Level::Normal,
                restrictions: String::new(),
                workaround: String::new(),
                backlog: String::new(),
                expected_return: String::new(),
                version: 2,
            },
            from: None,
        };
        push(&mut c, event.kind(), &event.scope(), event.to_payload());
        push(&mut c, "user.create", "user:x", r#"{"role":"viewer","scopes":[],"username":"x"}"#.into());
        let event = Event::UserCreated { username: "y".into(), role: "viewer".into(), scopes: vec![] };
        push(&mut c, event.kind(), &event.scope(), event.to_payload());
        let (s, h) = head(&c);
        assert_eq!(verify(&c, (s, &h)), Ok(()));
        // Only the typed ones read back as events; the old ones keep their bytes.
        let typed: Vec<i64> = c.iter().filter(|e| Event::from_payload(&e.payload).is_some()).map(|e| e.seq).collect();
        assert_eq!(typed, vec![3, 5]);
        // Tampering is found in either format.
        for seq in [2usize, 3] {
            let mut altered = c.clone();
            altered[seq - 1].payload = altered[seq - 1].payload.replace("wohngeld", "briefwahl");
            assert_eq!(verify(&altered, (s, &h)), Err(Problem::Altered { seq: seq as i64 }));
        }
    }

    fn head(e: &[Entry]) -> (i64, String) {
        e.last().map(|e| (e.seq, e.hash.clone())).unwrap_or((0, String::new()))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let (s, h) = head(&c);
        assert_eq!(verify(&c, (s, &h)), Ok(()));
        assert_eq!(verify(&[], (0, "")), Ok(()));
    }

    #[test]
    fn alteration_removal_reordering_and_truncation_are_named() {
        let c = chain(5);
        let (s, h) = head(&c);
        let mut altered = c.clone();
        altered[2].payload = "{\"n\":99}".into();
        assert_eq!(verify(&altered, (s, &h)), Err(Problem::Altered { seq: 3 }));

        let mut removed = c.clone();
        removed.remove(1);
        assert_eq!(verify(&removed, (s, &h)), Err(Problem::Removed { from: 2, to: 2 }));

        // Swap the contents of entries 2 and 3 but keep their numbers.
        let mut swapped = c.clone();
        let (a, b) = (swapped[1].clone(), swapped[2].clone());
        swapped[1] = Entry { seq: 2, ..b };
        swapped[2] = Entry { seq: 3, ..a };
        assert_eq!(verify(&swapped, (s, &h)), Err(Problem::Altered { seq: 2 }));

        // A consistent rewrite of entry 3 (rehashed) still breaks the link to entry 4.
        let mut rewritten = c.clone();
        rewritten[2].payload = "{}".into();
        let e = &rewritten[2];
        rewritten[2].hash = entry_hash(&e.prev_hash, e.seq, &e.at, &e.author, &e.scope, &e.kind, &e.payload);
        assert_eq!(verify(&rewritten, (s, &h)), Err(Problem::Reordered { seq: 4 }));

        let truncated = &c[..3];
        assert_eq!(verify(truncated, (s, &h)), Err(Problem::TailRemoved { last_present: 3, expected: 5 }));
    }
}
