//! `zmq-rpc broker`: a standalone broker that worker processes join.

use std::time::Duration;

use clap::Args;
use zmq_rpc::config::{self, vars};
use zmq_rpc::{Broker, Error};

#[derive(Args)]
pub(crate) struct BrokerArgs {
    /// Host to bind both endpoints on (`*` for all interfaces).
    #[arg(long, env = vars::HOST, default_value = config::DEFAULT_HOST)]
    host: String,
    /// Port for clients.
    #[arg(long, env = vars::PORT, default_value_t = config::DEFAULT_PORT)]
    port: u16,
    /// Port for worker processes.
    #[arg(long, env = vars::WORKER_PORT, default_value_t = config::DEFAULT_WORKER_PORT)]
    worker_port: u16,
    /// The shared password (clients and workers).
    #[arg(long, env = vars::PASSWORD, hide_env_values = true)]
    password: String,
    /// Name returned by `ping`.
    #[arg(long, default_value = "zmq-rpc-broker")]
    name: String,
    /// The longest a call may take, in milliseconds.
    #[arg(long = "timeout", env = vars::TIMEOUT_MS, default_value_t = config::DEFAULT_TIMEOUT.as_millis() as u64)]
    timeout_ms: u64,
    /// Requests that may wait for a worker before new ones get OverloadError.
    #[arg(long, default_value_t = config::DEFAULT_QUEUE_LIMIT)]
    queue_limit: usize,
    /// Bytes of requests held for unanswered calls beyond which a request that would
    /// wait gets OverloadError.
    #[arg(long, default_value_t = config::DEFAULT_QUEUE_BYTES)]
    queue_bytes: usize,
    /// After start, how long (ms) calls to functions no worker has registered yet wait
    /// for workers before they get NameError.
    #[arg(long = "warmup", default_value_t = config::DEFAULT_BROKER_WARMUP.as_millis() as u64)]
    warmup_ms: u64,
    /// This broker's CURVE secret key (Z85); turns encryption on.
    #[arg(long, env = vars::CURVE_SECRET_KEY, hide_env_values = true)]
    curve_secret_key: Option<String>,
    /// File of client CURVE public keys (Z85, one per line) to admit; others are
    /// refused in the handshake. Re-read when it changes.
    #[arg(long, env = vars::CURVE_AUTHORIZED_KEYS)]
    curve_authorized_keys: Option<std::path::PathBuf>,
    /// File of worker CURVE public keys to admit, as --curve-authorized-keys.
    #[arg(long, env = vars::CURVE_WORKER_AUTHORIZED_KEYS)]
    curve_worker_authorized_keys: Option<std::path::PathBuf>,
    /// The secret worker processes present when they register (default: the password).
    #[arg(long, env = vars::WORKER_SECRET, hide_env_values = true)]
    worker_secret: Option<String>,
}

pub(crate) fn run(args: &BrokerArgs) -> Result<(), Error> {
    let mut broker = Broker::new(args.password.clone(), args.name.clone())
        .host(&args.host)
        .port(args.port)
        .worker_port(args.worker_port)
        .timeout(Duration::from_millis(args.timeout_ms))
        .queue_limit(args.queue_limit)
        .queue_bytes(args.queue_bytes)
        .warmup(Duration::from_millis(args.warmup_ms));
    if let Some(key) = &args.curve_secret_key {
        broker = broker.curve_secret_key(key);
    }
    if let Some(file) = &args.curve_authorized_keys {
        broker = broker.curve_authorized_keys(file);
    }
    if let Some(file) = &args.curve_worker_authorized_keys {
        broker = broker.curve_worker_authorized_keys(file);
    }
    if let Some(secret) = &args.worker_secret {
        broker = broker.worker_secret(secret);
    }
    let running = broker.start()?;
    // One parseable line on stdout, so scripts (and tests) learn the bound ports.
    println!(
        "broker listening: clients {} workers {}",
        running.client_endpoint(),
        running.worker_endpoint().unwrap_or("-")
    );
    running.run_until_signal()
}
