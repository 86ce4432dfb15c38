//! Integration tests: each starts the real `notbetrieb` binary on a random loopback port with
//! its own fresh database and talks HTTP to it. Every test that touches storage runs on both
//! engines: SQLite in a temporary file, and PostgreSQL in a fresh database on the server named
//! by NOTBETRIEB_TEST_POSTGRES_URL (scripts/test sets it; without it the PostgreSQL variants
//! are skipped with a message, so a plain `cargo nextest run` works on a machine without one).

mod api;
mod api_write;
mod cap;
mod cli;
mod concurrency;
mod desk;
mod events;
mod export;
mod harness;
mod import;
mod journal;
mod languages;
mod mirror;
mod notify;
mod public;
mod publish;
mod recovery;
mod rendering;
mod search;
mod sign_in;
mod validation;
mod webhooks;

pub use harness::*;
