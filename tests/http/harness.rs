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

/// The one way tests make an HTTP client: redirects are not followed (tests look at them), and
/// TLS, which reqwest leaves to the process (`rustls-no-provider`, as the server uses ring), gets
/// ring too.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
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
    /// The same database again, not dropped by this owner: for restart tests (the first
    /// owner's SQLite directory must outlive it) and second instances.
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

    /// The South Westphalia demo on a fresh database, with more environment for the server
    /// process (test hooks such as `NOTBETRIEB_TEST_FAIL_REBUILD_WHILE_EXISTS`).
    pub async fn demo_with_env(engine: Engine, env: &[(&str, &str)]) -> Server {
        Server::spawn(TestDatabase::new(engine), "100", &["--demo"], env)
    }

    pub fn start(db: TestDatabase, extra: &[&str]) -> Server {
        Server::spawn(db, "100", extra, &[])
    }

    /// [`Server::start`] with more environment for the server process.
    pub fn start_with_env(db: TestDatabase, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(db, "100", extra, env)
    }

    /// Another instance on this server's database (which stays this server's to drop), looking
    /// for changes written by others every `poll_ms`: with `"60000"` its snapshot stays stale.
    pub fn second_instance(&self, poll_ms: &str) -> Server {
        Server::spawn(TestDatabase::reuse(&self.db.url), poll_ms, &[], &[])
    }

    fn spawn(db: TestDatabase, poll_ms: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url, "--poll-ms", poll_ms])
            .args(extra)
            .envs(env.iter().copied())
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
        let client = http_client();
        Server { child, base, db, client }
    }

    /// Ends the server at once (SIGKILL), as a crash would; the database stays.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Another server on this server's database (which stays this server's to drop).
    pub fn another_on_same_database(&self, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(TestDatabase::reuse(&self.db.url), "100", extra, env)
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

/// `application/x-www-form-urlencoded`, without pulling in another crate feature.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The value of the first `name="…" value="…"` in a page.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker)? + marker.len();
    Some(html[at..at + html[at..].find('"')?].to_string())
}

/// The text of the element with this id (up to its first tag).
pub fn element_text(html: &str, id: &str) -> String {
    let at = html.find(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("no #{id} in page"));
    let rest = &html[at + id.len() + 6..];
    rest[..rest.find('<').unwrap()].trim().to_string()
}

/// A new API token for a demo account, from the command line.
pub fn api_token(s: &Server, user: &str) -> String {
    let out = s.command(&["token", "add", "--user", user, "--name", &format!("test-{user}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("nb_"), "{secret}");
    secret
}

/// One answer as a test sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The `Location` header, or empty.
    pub location: String,
    pub body: String,
}

impl Answer {
    /// The body as JSON; `null` when it is empty, a panic when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        if self.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
        }
    }
}

/// The one HTTP client of the tests, for the desk and the API: what a browser keeps between
/// requests (its cookies), or an API token sent as `Authorization: Bearer`. Every method takes
/// `&self`, so a session can be shared by concurrent requests and `eventually` closures.
pub struct Session<'a> {
    pub server: &'a Server,
    cookies: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    bearer: Option<String>,
}

impl<'a> Session<'a> {
    /// No cookies and no token yet.
    pub fn new(server: &'a Server) -> Session<'a> {
        Session { server, cookies: Default::default(), bearer: None }
    }

    /// Requests that carry this bearer token (valid or not).
    pub fn bearer(server: &'a Server, secret: &str) -> Session<'a> {
        Session { bearer: Some(secret.to_string()), ..Session::new(server) }
    }

    /// A new API token for a demo account (from `notbetrieb token add`).
    pub fn api(server: &'a Server, user: &str) -> Session<'a> {
        Session::bearer(server, &api_token(server, user))
    }

    /// A demo account signed in at the desk (demo accounts have no second factor).
    pub async fn demo(server: &'a Server, username: &str) -> Session<'a> {
        let b = Session::new(server);
        let res = b.sign_in(username, &format!("demo-{username}-passwort")).await;
        assert_eq!((res.status, res.location.as_str()), (303, "/intern"), "{username}: {}", res.body);
        b
    }

    /// The bearer token's secret.
    pub fn secret(&self) -> &str {
        self.bearer.as_deref().expect("a session with a bearer token")
    }

    /// The cookies kept now.
    pub fn cookies(&self) -> std::collections::BTreeMap<String, String> {
        self.cookies.lock().unwrap().clone()
    }

    /// Replaces the cookies (to replay an old session cookie, for example).
    pub fn set_cookies(&self, cookies: std::collections::BTreeMap<String, String>) {
        *self.cookies.lock().unwrap() = cookies;
    }

    /// A request to `path` on the server, to be sent with `send`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.server.client.request(method, self.server.url(path))
    }

    /// Sends a request with the session's cookies and bearer token; keeps the cookies it sets.
    pub async fn send(&self, mut req: reqwest::RequestBuilder) -> Answer {
        let cookie =
            self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        if let Some(secret) = &self.bearer {
            req = req.bearer_auth(secret);
        }
        let res = req.send().await.unwrap();
        {
            let mut cookies = self.cookies.lock().unwrap();
            for set in res.headers().get_all("set-cookie") {
                let first = set.to_str().unwrap().split(';').next().unwrap();
                let (name, value) = first.split_once('=').unwrap();
                if value.is_empty() {
                    cookies.remove(name);
                } else {
                    cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let location = headers.get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
        Answer { status, headers, location, body: res.text().await.unwrap() }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// POSTs a form as given (no CSRF token added).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let req = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(form));
        self.send(req).await
    }

    /// Opens `page` and submits a form to `action` with the page's CSRF token added.
    pub async fn submit(&self, page: &str, action: &str, form: &[(&str, &str)]) -> Answer {
        let shown = self.get(page).await;
        assert_eq!(shown.status, 200, "{page}: {}", shown.body);
        let csrf = input_value(&shown.body, "csrf").unwrap_or_else(|| panic!("{page} has no form"));
        let mut with_token = vec![("csrf", csrf.as_str())];
        with_token.extend_from_slice(form);
        self.post(action, &with_token).await
    }

    /// Password sign-in at the desk; returns the answer to the POST.
    pub async fn sign_in(&self, username: &str, password: &str) -> Answer {
        let login = self.get("/intern/anmelden").await;
        let token = input_value(&login.body, "form").expect("sign-in form token");
        self.post("/intern/anmelden", &[("username", username), ("password", password), ("form", &token)]).await
    }

    /// A request to the API at /api/v1`path`, to be sent with `send` or `json`.
    pub fn api_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, &format!("/api/v1{path}"))
    }

    /// Sends a request and returns its status and JSON body (`null` when empty).
    pub async fn json(&self, req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let answer = self.send(req).await;
        (answer.status, answer.json())
    }

    /// The journal's length through the API, checking that the chain is intact.
    pub async fn journal_len(&self) -> u64 {
        let (status, check) = self.call(reqwest::Method::GET, "/journal/verify", None).await;
        assert_eq!((status, &check["intact"]), (200, &serde_json::json!(true)), "{check}");
        check["entries"].as_u64().unwrap()
    }

    /// A JSON call to /api/v1`path` with an optional body; status and JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.api_request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        self.json(req).await
    }
}

/// RFC 6238 code (SHA-1, 6 digits, 30 s) for a base32 secret at a given time.
pub fn totp(secret: &str, unix: u64) -> String {
    let mut bytes = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for c in secret.chars() {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => continue,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bytes.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    let t = totp_rs::Builder::new().with_secret(bytes).build().unwrap();
    t.generate(unix).to_string()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// moto's S3 server for one test, stopped when dropped.
pub struct S3 {
    child: Child,
    pub endpoint: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn start_s3() -> Option<S3> {
    start_s3_with(&[]).await
}

/// moto with settings in its environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`: from then on it
/// checks every request's credentials against its (empty) IAM, as AWS would.
pub async fn start_s3_with(env: &[(&str, &str)]) -> Option<S3> {
    let Some(server) = std::env::var("NOTBETRIEB_TEST_MOTO_SERVER").ok().filter(|s| !s.is_empty()) else {
        assert!(
            std::env::var("CI").is_err(),
            "NOTBETRIEB_TEST_MOTO_SERVER is not set: scripts/test installs moto[server] and sets it"
        );
        eprintln!("SKIPPED: set NOTBETRIEB_TEST_MOTO_SERVER to moto's moto_server (pip install 'moto[server]')");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let s3 = S3 { child, endpoint: format!("http://127.0.0.1:{port}") };
    for _ in 0..200 {
        if http_client().get(&s3.endpoint).send().await.is_ok() {
            return Some(s3);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("moto_server did not answer on {}", s3.endpoint);
}

/// A bucket that anyone may read and write without signing, so the test can read back what was
/// published and tamper with it as a stranger would (the publish itself signs its requests).
pub async fn create_bucket(s3: &S3, name: &str) -> bool {
    let req = http_client().put(format!("{}/{name}", s3.endpoint)).header("x-amz-acl", "public-read-write");
    req.send().await.unwrap().status().is_success()
}

/// aiosmtpd (PyPI) receiving mail on a loopback port for one test, each mail written as JSON
/// into a directory by `tests/support/smtp_sink.py`; stopped when dropped.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    /// `smtp://127.0.0.1:PORT`, for `serve --smtp-url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, in the order received.
    pub fn mails(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        names.sort_by_key(|n| {
            let (ns, count) = n.trim_end_matches(".json").split_once('-').unwrap();
            (ns.parse::<u128>().unwrap(), count.parse::<u64>().unwrap())
        });
        names
            .iter()
            .map(|n| serde_json::from_str(&std::fs::read_to_string(self.dir.path().join(n)).unwrap()).unwrap())
            .collect()
    }

    /// Waits up to `seconds` for at least `n` mails and returns all of them.
    pub async fn wait_for(&self, n: usize, seconds: u64) -> Vec<serde_json::Value> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            let mails = self.mails();
            if mails.len() >= n || std::time::Instant::now() > until {
                return mails;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Starts the SMTP sink on a free port; `None` (the test is skipped) without aiosmtpd, which CI
/// must have. The first `fail_first` mails are answered 451 (try again later).
pub fn start_smtp(fail_first: usize) -> Option<SmtpSink> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    start_smtp_on(port, fail_first)
}

pub fn start_smtp_on(port: u16, fail_first: usize) -> Option<SmtpSink> {
    let Some(python) = std::env::var("NOTBETRIEB_TEST_AIOSMTPD_PYTHON").ok().filter(|s| !s.is_empty()) else {
        assert!(
            std::env::var("CI").is_err(),
            "NOTBETRIEB_TEST_AIOSMTPD_PYTHON is not set: scripts/test installs aiosmtpd and sets it"
        );
        eprintln!("SKIPPED: set NOTBETRIEB_TEST_AIOSMTPD_PYTHON to a Python with aiosmtpd (pip install aiosmtpd)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
    let mut child = Command::new(python)
        .args([script, "--port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .args(["--fail-first", &fail_first.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the SMTP sink starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the SMTP sink exited").unwrap();
    assert_eq!(first.trim(), "ready");
    std::thread::spawn(move || for _ in lines {});
    Some(SmtpSink { child, port, dir })
}
