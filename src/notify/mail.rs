//! Sending mail from the outbox over SMTP (lettre, rustls, a pooled connection).

use std::time::Duration;

use anyhow::{Context, Result};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::domain::time;
use crate::read::live::{App, Shared};
use crate::store::outbox::{self, Message};

/// How long a claimed message is left to one worker before another may take it over: longer
/// than sending a batch takes, so that a live worker's messages are never sent twice; after a
/// crash its messages in flight wait this long.
pub(super) fn claim() -> chrono::Duration {
    // Test hook, debug builds only: the crash tests would otherwise wait two minutes.
    if cfg!(debug_assertions)
        && let Some(seconds) = std::env::var("NOTBETRIEB_TEST_CLAIM_SECONDS").ok().and_then(|s| s.parse().ok())
    {
        return chrono::Duration::seconds(seconds);
    }
    chrono::Duration::minutes(2)
}
/// The longest one mail may take to send: a quarter of the claim (30 s), so that a batch, which
/// is settled when its slowest mail is done, never outlasts its claim. (With the tests' shorter
/// claims a mail that took as long as the claim had its whole batch, already sent, claimed and
/// sent again by another instance: the crash test found it under load.)
fn send_within() -> Duration {
    (claim() / 4).to_std().unwrap_or(Duration::from_secs(30))
}
/// Mails one worker sends at once.
const BATCH: i64 = 50;
/// Workers claiming and sending batches side by side: while one waits for its commit, the
/// others send. At most WORKERS × BATCH mails are in flight (and repeated after a crash).
pub const WORKERS: usize = 4;
/// Attempts before a mail is given up: with the backoff below (10 s doubling up to an hour)
/// about a day.
pub(super) const MAX_ATTEMPTS: i64 = 30;

/// When to try a message again after its `attempts`-th failure: 10 s, doubling up to an hour,
/// with jitter.
pub(super) fn retry_at(attempts: i64) -> String {
    let mut wait = time::backoff(Duration::from_secs(10), attempts.clamp(1, 30) as u32, Duration::from_secs(3600));
    // Test hook, debug builds only: the test of a webhook failing throughout would wait a day.
    if cfg!(debug_assertions)
        && let Some(seconds) = std::env::var("NOTBETRIEB_TEST_RETRY_SECONDS").ok().and_then(|s| s.parse().ok())
    {
        wait = Duration::from_secs(seconds);
    }
    time::format_rfc3339(time::now() + chrono::Duration::from_std(wait).unwrap_or_default())
}

/// The SMTP server and the sender.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of every Message-ID.
    domain: String,
}

impl Mailer {
    /// `url`: `smtp://host:port` (plain, for a local relay), `smtp://host:port?tls=required`
    /// (STARTTLS), `smtps://host:port` (TLS); credentials as `user:password@` in it, or the
    /// password from `password_file`.
    pub fn new(url: &str, password_file: Option<&std::path::Path>, from: &str) -> Result<Mailer> {
        let from: Mailbox = from.parse().with_context(|| format!("--mail-from {from:?} is not a mail address"))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("--smtp-url: {e}"))?
            .timeout(Some(Duration::from_secs(20)))
            // As many connections as mails sent at once, so that no mail of a batch waits for one.
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(BATCH as u32 * WORKERS as u32));
        if let Some(path) = password_file {
            let password = std::fs::read_to_string(path)
                .with_context(|| format!("reading the SMTP password from {}", path.display()))?;
            let user = url::Url::parse(url).ok().map(|u| u.username().to_string()).unwrap_or_default();
            builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                percent_decode(&user),
                password.trim_end_matches(['\r', '\n']).to_string(),
            ));
        }
        let domain = from.email.domain().to_string();
        Ok(Mailer { transport: builder.build(), from, domain })
    }

    async fn send(&self, m: &Message) -> Result<(), SendError> {
        // Checked when subscribing; a stored address that no longer parses is not retried.
        let to: Mailbox =
            m.recipient.parse().map_err(|_| SendError { permanent: true, reason: "bad recipient".into() })?;
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&m.subject)
            .message_id(Some(format!("<{}@{}>", m.id, self.domain)));
        if !m.unsubscribe_url.is_empty() {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{}>", m.unsubscribe_url),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let mail = builder
            .multipart(MultiPart::alternative_plain_html(m.body_text.clone(), m.body_html.clone()))
            .map_err(|e| SendError { permanent: true, reason: e.to_string() })?;
        self.transport
            .send(mail)
            .await
            .map(|_| ())
            .map_err(|e| SendError { permanent: e.is_permanent(), reason: e.to_string() })
    }
}

/// Why a mail was not accepted; `permanent` (a 5xx answer, an unusable message): not retried.
struct SendError {
    permanent: bool,
    reason: String,
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("u={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Delivers due mails for as long as the server runs.
pub async fn deliver_forever(app: Shared, mailer: Mailer) {
    super::drain_forever("mail", || deliver_due(&app, &mailer)).await
}

/// Claims due mails, sends them side by side and records each outcome; how many it claimed.
pub async fn deliver_due(app: &App, mailer: &Mailer) -> Result<usize> {
    let now = time::now();
    let claimed = {
        let mut tx = app.store.begin().await?;
        let until = time::format_rfc3339(now + claim());
        let claimed =
            outbox::claim_due(&mut tx, app.store.engine(), super::EMAIL, &time::format_rfc3339(now), &until, BATCH)
                .await?;
        tx.commit().await?;
        claimed
    };
    let count = claimed.len();
    let within = send_within();
    let mut sending = tokio::task::JoinSet::new();
    for m in claimed {
        let mailer = mailer.clone();
        sending.spawn(async move {
            // A batch never takes longer than its claim lasts (another worker would send it too).
            let outcome = match tokio::time::timeout(within, mailer.send(&m)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    Err(SendError { permanent: false, reason: format!("no answer within {} s", within.as_secs()) })
                }
            };
            (m, outcome)
        });
    }
    // The whole batch's outcomes in one transaction: one commit, not one per mail. A crash
    // before it repeats the batch, which is what "at most the mails in flight" allows.
    let mut outcomes = Vec::with_capacity(count);
    while let Some(done) = sending.join_next().await {
        outcomes.push(done?);
    }
    let mut tx = app.store.begin().await?;
    for (m, outcome) in outcomes {
        match outcome {
            Ok(()) => outbox::delivered(&mut tx, &m.id, &time::now_rfc3339()).await?,
            Err(e) => {
                let permanent = e.permanent;
                let attempts = m.attempts + 1;
                let next = (!permanent && attempts < MAX_ATTEMPTS).then(|| retry_at(attempts));
                tracing::warn!(message = %m.id, attempts, permanent, error = %e.reason, "a mail was not accepted");
                outbox::attempt_failed(&mut tx, &m.id, &e.reason, next.as_deref()).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(count)
}
