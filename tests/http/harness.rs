use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Generates one test per engine for each named `async fn(Engine)`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::Engine::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    if $crate::postgres_base_url().is_none() {
                        eprintln!("SKIPPED: set NOTBETRIEB_TEST_POSTGRES_URL (scripts/test does) to run on PostgreSQL");
                        return;
                    }
                    super::$name($crate::Engine::Postgres).await
                }
            }
        )*
    };
}

pub fn postgres_base_url() -> Option<String> {
    std::env::var("NOTBETRIEB_TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty())
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_notbetrieb")
}

/// A fresh, empty database for one test; PostgreSQL databases are dropped afterwards.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

fn random_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

fn pg_admin(sql: &str) {
    let base = postgres_base_url().expect("NOTBETRIEB_TEST_POSTGRES_URL");
    let out = Command::new("psql")
        .arg(&base)
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-qc")
        .arg(sql)
        .output()
        .expect("psql is needed for the PostgreSQL tests");
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestDatabase {
    pub fn new(engine: Engine) -> TestDatabase {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("test.sqlite").display());
                TestDatabase { url, _dir: Some(dir), pg_name: None }
            }
            Engine::Postgres => {
                let name = format!("nbtest_{}", random_suffix());
                pg_admin(&format!("CREATE DATABASE {name}"));
                let base = postgres_base_url().unwrap();
                let (prefix, _) = base.rsplit_once('/').expect("postgres URL with a database");
                TestDatabase { url: format!("{prefix}/{name}"), _dir: None, pg_name: Some(name) }
            }
        }
    }
}

impl TestDatabase {
    /// The same SQLite file again, for restart tests (the first owner's directory must outlive it).
    pub fn reuse(url: &str) -> TestDatabase {
        TestDatabase { url: url.to_string(), _dir: None, pg_name: None }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let _ = std::panic::catch_unwind(|| pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
        }
    }
}

/// A running server. Killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub db: TestDatabase,
    pub client: reqwest::Client,
}

impl Server {
    /// The South Westphalia demo on a fresh database.
    pub async fn demo(engine: Engine) -> Server {
        Server::start(TestDatabase::new(engine), &["--demo"])
    }

    pub fn start(db: TestDatabase, extra: &[&str]) -> Server {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url, "--poll-ms", "100"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start notbetrieb");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().expect("server exited before listening").unwrap();
            if let Some(url) = line.strip_prefix("notbetrieb listening on ") {
                break url.trim().to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Server { child, base, db, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// GET and return status and body text.
    pub async fn text(&self, path: &str) -> (u16, String) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    }

    pub async fn json(&self, path: &str) -> (u16, serde_json::Value) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")))
    }

    /// Runs the binary with other arguments against this server's database.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary()).args(args).args(["--database", &self.db.url]).output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `check` holds or five seconds pass.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
