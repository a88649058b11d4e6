//! Defaults, and settings read from the environment and a `.env` file.
//!
//! Precedence, highest first: a value set in code (a setter or a CLI flag), an
//! environment variable, a line in `.env` in the working directory, the default here.
//! (`.env` never overrides a variable that is already set.)

use std::time::Duration;

use crate::error::Error;

/// Host the server binds and the client connects to. Defaults to the seed's `localhost`.
pub const DEFAULT_HOST: &str = "localhost";
/// Port for clients. The seed's `8421`.
pub const DEFAULT_PORT: u16 = 8421;
/// Port of the broker's TCP endpoint for worker processes.
pub const DEFAULT_WORKER_PORT: u16 = 8422;
/// How long a call may take, end to end. The seed's 5000 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// Worker threads of an `RpcServer`. The seed's 4.
pub const DEFAULT_WORKERS: usize = 4;
/// The longest a worker thread of an `RpcServer` that finds no call waits for one
/// awake before it sleeps, while calls come one at a time (see `RpcServer::spin`). A
/// caller that calls again within this time finds a thread awake: on the 2-core machine
/// of `docs/performance.md`, that halved the round trip of a sequential call, and
/// 250 µs covers the pause between calls that move 64 KiB.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(250);
/// Largest message accepted on a TCP endpoint; a peer sending more is disconnected by
/// libzmq. 4 MiB holds any reasonable JSON call and bounds what one peer can make us buffer.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// Interval of worker <-> broker heartbeats. 1 s is the Majordomo/Paranoid Pirate norm.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1000);
/// Missed heartbeats before a peer counts as lost (3-5 is usual).
pub const DEFAULT_HEARTBEAT_LIVENESS: u32 = 3;
/// Requests the broker holds waiting for a worker before it answers `OverloadError`.
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;
/// Bytes of requests (bodies and data frames) the broker holds for calls not yet
/// answered, beyond which a request that would wait gets `OverloadError`: the queue
/// limit counts requests, this bounds what they weigh (10,000 requests of the 4 MiB
/// maximum would be 40 GiB).
pub const DEFAULT_QUEUE_BYTES: usize = 256 * 1024 * 1024;

/// The longest the broker remembers a request for retries (at-most-once window); a
/// request that announces its deadline (`timeout_ms`) only until then plus 10 s.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// How many requests the broker remembers for retries.
pub const DEFAULT_RETRY_ENTRIES: usize = 100_000;
/// Bytes of stored replies the broker keeps for retries.
pub const DEFAULT_RETRY_BYTES: usize = 64 * 1024 * 1024;
/// How long a freshly started standalone broker lets calls to not-yet-registered
/// functions wait for workers: one liveness window at the default heartbeat, within which
/// workers of a previous broker notice the restart and register again.
pub const DEFAULT_BROKER_WARMUP: Duration = Duration::from_secs(3);
/// How long a stopping server, broker or worker lets running calls finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Client: attempts after the first, for failures where the request may not have been
/// answered (no reply in time, overload). Never for errors the function or server gave.
pub const DEFAULT_RETRIES: u32 = 3;
/// Client: first backoff before a retry; doubles per retry, with jitter.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Client: longest backoff between retries.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(1);

/// Names of the environment variables.
pub mod vars {
    /// Host to bind (server, broker) or connect to (client, worker).
    pub const HOST: &str = "ZMQ_RPC_HOST";
    /// Client port.
    pub const PORT: &str = "ZMQ_RPC_PORT";
    /// The shared password.
    pub const PASSWORD: &str = "ZMQ_RPC_PASSWORD";
    /// Timeout in milliseconds.
    pub const TIMEOUT_MS: &str = "ZMQ_RPC_TIMEOUT_MS";
    /// Worker threads.
    pub const WORKERS: &str = "ZMQ_RPC_WORKERS";
    /// The longest an idle worker thread of a server waits awake for the next call, in
    /// microseconds (0: it sleeps at once).
    pub const SPIN_US: &str = "ZMQ_RPC_SPIN_US";
    /// The broker's port for worker processes.
    pub const WORKER_PORT: &str = "ZMQ_RPC_WORKER_PORT";
    /// The server's CURVE secret key (Z85, 40 characters): turns CURVE on for a server/broker.
    pub const CURVE_SECRET_KEY: &str = "ZMQ_RPC_CURVE_SECRET_KEY";
    /// The server's CURVE public key (Z85): turns CURVE on for a client/worker.
    pub const CURVE_SERVER_KEY: &str = "ZMQ_RPC_CURVE_SERVER_KEY";
    /// A client's or worker's own CURVE public key (Z85), with `ZMQ_RPC_CURVE_SECRET_KEY`
    /// as its secret half; without it a client or worker makes a fresh pair per process.
    pub const CURVE_PUBLIC_KEY: &str = "ZMQ_RPC_CURVE_PUBLIC_KEY";
    /// File of client public keys (Z85, one per line) a CURVE server or broker accepts.
    pub const CURVE_AUTHORIZED_KEYS: &str = "ZMQ_RPC_CURVE_AUTHORIZED_KEYS";
    /// File of worker public keys (Z85, one per line) a CURVE broker accepts.
    pub const CURVE_WORKER_AUTHORIZED_KEYS: &str = "ZMQ_RPC_CURVE_WORKER_AUTHORIZED_KEYS";
    /// The secret worker processes present when they register. Defaults to the password.
    pub const WORKER_SECRET: &str = "ZMQ_RPC_WORKER_SECRET";
}

/// Settings found in the environment (after loading `.env`); `None` where unset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Env {
    /// `ZMQ_RPC_HOST`.
    pub host: Option<String>,
    /// `ZMQ_RPC_PORT`.
    pub port: Option<u16>,
    /// `ZMQ_RPC_PASSWORD`.
    pub password: Option<String>,
    /// `ZMQ_RPC_TIMEOUT_MS`.
    pub timeout: Option<Duration>,
    /// `ZMQ_RPC_WORKERS`.
    pub workers: Option<usize>,
    /// `ZMQ_RPC_SPIN_US`.
    pub spin: Option<Duration>,
    /// `ZMQ_RPC_WORKER_PORT`.
    pub worker_port: Option<u16>,
    /// `ZMQ_RPC_CURVE_SECRET_KEY`.
    pub curve_secret_key: Option<String>,
    /// `ZMQ_RPC_CURVE_SERVER_KEY`.
    pub curve_server_key: Option<String>,
    /// `ZMQ_RPC_CURVE_PUBLIC_KEY`.
    pub curve_public_key: Option<String>,
    /// `ZMQ_RPC_CURVE_AUTHORIZED_KEYS`.
    pub curve_authorized_keys: Option<std::path::PathBuf>,
    /// `ZMQ_RPC_CURVE_WORKER_AUTHORIZED_KEYS`.
    pub curve_worker_authorized_keys: Option<std::path::PathBuf>,
    /// `ZMQ_RPC_WORKER_SECRET`.
    pub worker_secret: Option<String>,
}

impl Env {
    /// Loads `.env` from the working directory (once per process; existing variables
    /// win), then reads the `ZMQ_RPC_*` variables.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when a value does not parse.
    pub fn load() -> Result<Env, Error> {
        static DOTENV: std::sync::Once = std::sync::Once::new();
        DOTENV.call_once(|| {
            // A missing .env is normal; a broken one is worth a warning, not a failure.
            if let Err(e) = dotenvy::dotenv() {
                if !e.not_found() {
                    tracing::warn!(error = %e, "ignoring unreadable .env file");
                }
            }
        });
        Env::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (a variable name to its value).
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when a value does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Env, Error> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Ok(Env {
            host: get(vars::HOST),
            port: parse(vars::PORT, get(vars::PORT))?,
            password: lookup(vars::PASSWORD),
            timeout: parse::<u64>(vars::TIMEOUT_MS, get(vars::TIMEOUT_MS))?
                .map(Duration::from_millis),
            workers: parse(vars::WORKERS, get(vars::WORKERS))?,
            spin: parse::<u64>(vars::SPIN_US, get(vars::SPIN_US))?.map(Duration::from_micros),
            worker_port: parse(vars::WORKER_PORT, get(vars::WORKER_PORT))?,
            curve_secret_key: get(vars::CURVE_SECRET_KEY),
            curve_server_key: get(vars::CURVE_SERVER_KEY),
            curve_public_key: get(vars::CURVE_PUBLIC_KEY),
            curve_authorized_keys: get(vars::CURVE_AUTHORIZED_KEYS).map(Into::into),
            curve_worker_authorized_keys: get(vars::CURVE_WORKER_AUTHORIZED_KEYS).map(Into::into),
            worker_secret: lookup(vars::WORKER_SECRET),
        })
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: Option<String>) -> Result<Option<T>, Error>
where
    T::Err: std::fmt::Display,
{
    value
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|e| Error::Config(format!("{name}={v:?} is invalid: {e}")))
        })
        .transpose()
}

/// `tcp://HOST:PORT`, with IPv6 literals in brackets.
pub fn tcp_endpoint(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, Error> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn reads_every_variable() {
        let e = env(&[
            ("ZMQ_RPC_HOST", "0.0.0.0"),
            ("ZMQ_RPC_PORT", "9000"),
            ("ZMQ_RPC_PASSWORD", "s3cret"),
            ("ZMQ_RPC_TIMEOUT_MS", "250"),
            ("ZMQ_RPC_WORKERS", "8"),
            ("ZMQ_RPC_WORKER_PORT", "9001"),
            ("ZMQ_RPC_SPIN_US", "0"),
        ])
        .unwrap();
        assert_eq!(e.host.as_deref(), Some("0.0.0.0"));
        assert_eq!(e.port, Some(9000));
        assert_eq!(e.password.as_deref(), Some("s3cret"));
        assert_eq!(e.timeout, Some(Duration::from_millis(250)));
        assert_eq!(e.workers, Some(8));
        assert_eq!(e.worker_port, Some(9001));
        assert_eq!(e.spin, Some(Duration::ZERO));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = env(&[("ZMQ_RPC_PORT", "eighty")]).unwrap_err();
        assert!(err.message().contains("ZMQ_RPC_PORT"), "{err}");
        assert!(env(&[("ZMQ_RPC_WORKERS", "-1")]).is_err());
        let err = env(&[("ZMQ_RPC_SPIN_US", "0.25ms")]).unwrap_err();
        assert!(err.message().contains("ZMQ_RPC_SPIN_US"), "{err}");
        assert_eq!(env(&[("ZMQ_RPC_PORT", " ")]).unwrap().port, None);
    }

    #[test]
    fn endpoints() {
        assert_eq!(tcp_endpoint("localhost", 8421), "tcp://localhost:8421");
        assert_eq!(tcp_endpoint("::1", 1), "tcp://[::1]:1");
    }
}
