//! The broker between the operator and workers on other machines: RabbitMQ (AMQP
//! 0.9.1) with quorum queues, through `lapin`.
//!
//! The topology (docs/distributed.md has the whole picture):
//!
//! - `wasmbatch.batches.<api>`: one durable quorum queue per API. The operator
//!   publishes each batch of the API's jobs to it (persistent, publisher confirms); the
//!   API's workers consume it with a prefetch equal to their concurrency. Its
//!   `x-delivery-limit` is the API's `max_attempts` less one (RabbitMQ delivers a
//!   message limit + 1 times), and past it the broker moves the message to the
//!   dead-letter exchange (`at-least-once` dead-lettering: never dropped).
//! - `wasmbatch.results`: a durable quorum queue of outcomes, from the workers to the
//!   operator: one message per batch that ended on a worker (succeeded, or failed for
//!   good with its error and its bytes), and the outcome of on-job-complete.
//! - `wasmbatch.dead` (exchange, fanout) and `wasmbatch.dead` (quorum queue): batches
//!   the broker gave up on, because every delivery ended without an outcome (the
//!   workers holding it died or were cut off each time). The operator records them as
//!   the job's dead letters.
//! - `wasmbatch.control` (exchange, fanout): notices to every worker (a job stopped: its
//!   batches still queued are skipped). Best effort; the operator does not rely on it.
//!
//! One operator per virtual host: the names are fixed, a vhost separates deployments.

pub(crate) mod dispatch;
pub(crate) mod worker;

use std::str::FromStr;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::job::stop::StopFlag;

/// The queue of outcomes, workers to operator.
pub(crate) const RESULTS: &str = "wasmbatch.results";
/// The dead-letter exchange of every batches queue, and its queue.
pub(crate) const DEAD: &str = "wasmbatch.dead";
/// The fanout exchange of notices to workers.
pub(crate) const CONTROL: &str = "wasmbatch.control";

/// The queue of an API's batches.
pub(crate) fn batches_queue(api: &str) -> String {
    format!("wasmbatch.batches.{api}")
}

/// Message headers (`wb-…`) and the values of `wb-kind`.
pub(crate) mod header {
    /// What the message is: [`BATCH`], [`HOOK`], or in results [`SUCCEEDED`],
    /// [`FAILED`], [`HOOK`].
    pub(crate) const KIND: &str = "wb-kind";
    /// The job's ID.
    pub(crate) const JOB: &str = "wb-job";
    /// The batch's index in its job.
    pub(crate) const INDEX: &str = "wb-index";
    /// A batch's number of items (on the batch, and echoed on its outcome).
    pub(crate) const ITEMS: &str = "wb-items";
    /// The job's attempts per batch.
    pub(crate) const MAX_ATTEMPTS: &str = "wb-max-attempts";
    /// The job spec (JSON), for the guest's `/cortex/spec/job.json` and init.
    pub(crate) const SPEC: &str = "wb-spec";
    /// Results: the attempt that ended the batch (1 for the first delivery).
    pub(crate) const ATTEMPTS: &str = "wb-attempts";
    /// Results: the time the successful attempt took, in seconds.
    pub(crate) const ELAPSED: &str = "wb-elapsed";
    /// Results: the failure's kind (`trap`, `timeout`, `http_500`, …), or for a hook
    /// its outcome (`succeeded`, `not_found`, `failed`).
    pub(crate) const ERROR_KIND: &str = "wb-error-kind";
    /// Results: the failure's message.
    pub(crate) const ERROR: &str = "wb-error";
    /// Results of a batch that failed for good in part: the other items' results.
    pub(crate) const RESULTS: &str = "wb-results";
    /// Results: the worker that sent it (host and process).
    pub(crate) const WORKER: &str = "wb-worker";
    /// Set by RabbitMQ on quorum queues: earlier deliveries of this message.
    pub(crate) const DELIVERY_COUNT: &str = "x-delivery-count";

    /// A batch of a job.
    pub(crate) const BATCH: &str = "batch";
    /// A job's on-job-complete call (to a worker), or its outcome (from one).
    pub(crate) const HOOK: &str = "on_job_complete";
    /// A batch handled.
    pub(crate) const SUCCEEDED: &str = "succeeded";
    /// A batch failed for good.
    pub(crate) const FAILED: &str = "failed";
}

/// A broker URL, parsed: `amqp://user:password@host:port/vhost?heartbeat=10`.
#[derive(Clone)]
pub(crate) struct BrokerUrl {
    uri: AMQPUri,
    shown: String,
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl BrokerUrl {
    /// Parses `text`. Without `heartbeat` in the query, 10 s (a cut-off peer is noticed
    /// within about 20 s); without `connection_timeout`, 10 s.
    pub(crate) fn parse(text: &str) -> Result<BrokerUrl, String> {
        if !(text.starts_with("amqp://") || text.starts_with("amqps://")) {
            return Err(format!("broker URL {text:?} must start with amqp:// or amqps://"));
        }
        let mut uri = AMQPUri::from_str(text).map_err(|e| format!("broker URL {text:?}: {e}"))?;
        uri.query.heartbeat.get_or_insert(10);
        uri.query.connection_timeout.get_or_insert(10_000);
        // `amqp://host/` names the vhost "" by the URI spec, which no broker has: the
        // default one is meant.
        if uri.vhost.is_empty() {
            uri.vhost = "/".into();
        }
        let scheme = if text.starts_with("amqps") { "amqps" } else { "amqp" };
        let vhost = if uri.vhost == "/" { String::new() } else { uri.vhost.clone() };
        let shown = format!(
            "{scheme}://{}@{}:{}/{vhost}",
            uri.authority.userinfo.username, uri.authority.host, uri.authority.port
        );
        Ok(BrokerUrl { uri, shown })
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Trying again cannot help: the broker refused the credentials or the vhost.
    Fatal(String),
    /// The broker is unreachable or went away; trying later may help.
    Transient(String),
}

/// Connects once, naming the connection `name` (shown by `rabbitmqctl
/// list_connections client_properties`).
pub(crate) async fn connect(url: &BrokerUrl, name: &str) -> Result<Connection, ConnectError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()
        .map_err(|e| ConnectError::Fatal(format!("cannot connect to the broker at {url}: {e}")))?;
    match Connection::connect_uri_with_config(url.uri.clone(), properties, crate::tls::amqp_config(), runtime).await {
        Ok(connection) => Ok(connection),
        Err(e) => {
            let message = format!("{e}");
            let refused = e.is_amqp_error()
                || ["ACCESS_REFUSED", "NOT_ALLOWED", "authentication", "PLAIN login refused"]
                    .iter()
                    .any(|s| message.contains(s));
            if refused {
                Err(ConnectError::Fatal(format!("the broker at {url} refused the connection: {message}")))
            } else {
                Err(ConnectError::Transient(format!("the broker at {url} is unreachable: {message}")))
            }
        }
    }
}

/// Connects, retrying while the broker is unreachable: after 0.5 s, then twice as long
/// each time up to 10 s, each failure logged. `Ok(None)` when `stop` is set first; an
/// error when the broker refuses (credentials, vhost), unless `fatal_retries`, which
/// retries those too (a running process keeps trying rather than dying).
pub(crate) async fn connect_retrying(
    url: &BrokerUrl,
    name: &str,
    stop: &StopFlag,
    fatal_retries: bool,
) -> Result<Option<Connection>, String> {
    let mut pause = Duration::from_millis(500);
    let mut tries = 0u64;
    loop {
        if stop.is_set() {
            return Ok(None);
        }
        let reason = match connect(url, name).await {
            Ok(connection) => {
                if tries > 0 {
                    tracing::info!(broker = %url, tries, "connected to the broker");
                }
                return Ok(Some(connection));
            }
            Err(ConnectError::Fatal(e)) if !fatal_retries => return Err(e),
            Err(ConnectError::Fatal(e) | ConnectError::Transient(e)) => e,
        };
        tries += 1;
        tracing::warn!(broker = %url, tries, retry_in_ms = pause.as_millis() as u64, "{reason}; retrying");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.stopped() => return Ok(None),
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// The arguments of a quorum queue.
fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

/// Declares the queues and exchanges every process uses: results, dead letters,
/// control.
pub(crate) async fn declare_common(channel: &Channel) -> lapin::Result<()> {
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(RESULTS.into(), durable, quorum()).await?;
    let exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(DEAD.into(), ExchangeKind::Fanout, exchange, FieldTable::default()).await?;
    channel.queue_declare(DEAD.into(), durable, quorum()).await?;
    channel.queue_bind(DEAD.into(), DEAD.into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await?;
    channel.exchange_declare(CONTROL.into(), ExchangeKind::Fanout, exchange, FieldTable::default()).await?;
    Ok(())
}

/// Declares the batches queue of `api`, whose messages are delivered at most
/// `max_attempts` times.
pub(crate) async fn declare_batches(channel: &Channel, api: &str, max_attempts: u32) -> Result<(), String> {
    let mut args = quorum();
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(max_attempts.max(1) - 1)));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(DEAD.into()));
    args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    let queue = batches_queue(api);
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), durable, args).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("PRECONDITION_FAILED") {
            format!(
                "queue {queue} exists with other settings (was max_attempts of api {api} changed?): \
                 let it empty, then delete it (rabbitmqctl delete_queue {queue}), or restore the setting: {text}"
            )
        } else {
            format!("cannot declare queue {queue}: {text}")
        }
    })?;
    Ok(())
}

/// Headers being built.
#[derive(Default)]
pub(crate) struct Headers(FieldTable);

impl Headers {
    pub(crate) fn str(mut self, key: &str, value: &str) -> Self {
        self.0.insert(ShortString::from(key), AMQPValue::LongString(LongString::from(value)));
        self
    }

    pub(crate) fn int(mut self, key: &str, value: i64) -> Self {
        self.0.insert(ShortString::from(key), AMQPValue::LongLongInt(value));
        self
    }

    pub(crate) fn float(mut self, key: &str, value: f64) -> Self {
        self.0.insert(ShortString::from(key), AMQPValue::Double(value));
        self
    }

    pub(crate) fn table(self) -> FieldTable {
        self.0
    }
}

/// A header's text, if it is a string.
pub(crate) fn get_str(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// A header's value, if it is a number.
pub(crate) fn get_int(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    Some(match headers?.inner().get(key)? {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::Timestamp(n) => *n as i64,
        _ => return None,
    })
}

/// A header's value, if it is a floating-point number.
pub(crate) fn get_float(headers: Option<&FieldTable>, key: &str) -> Option<f64> {
    match headers?.inner().get(key)? {
        AMQPValue::Double(n) => Some(*n),
        AMQPValue::Float(n) => Some(f64::from(*n)),
        _ => None,
    }
}

/// This process's name for the broker and for results: `wasmbatch-<role>@<host>:<pid>`.
pub(crate) fn process_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("wasmbatch-{role}@{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_password() {
        let url = BrokerUrl::parse("amqp://user:secret@broker:5673/jobs").unwrap();
        assert_eq!(url.to_string(), "amqp://user@broker:5673/jobs");
        assert_eq!(url.uri.query.heartbeat, Some(10));
        assert_eq!(BrokerUrl::parse("amqp://h:5672/").unwrap().uri.vhost, "/");
        let url = BrokerUrl::parse("amqp://localhost?heartbeat=30").unwrap();
        assert_eq!((url.uri.query.heartbeat, url.to_string().as_str()), (Some(30), "amqp://guest@localhost:5672/"));
        assert!(BrokerUrl::parse("http://localhost").unwrap_err().contains("must start with amqp://"));
        assert!(BrokerUrl::parse("amqp://host:notaport").is_err());
    }
}
