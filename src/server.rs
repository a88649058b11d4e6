//! `RpcServer`, the seed's server: a broker and a pool of local worker threads in one
//! process.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::broker::{self, broker_setters, LocalWorkers, Options};
use crate::error::Error;
use crate::worker::local::LocalPool;
use crate::worker::{IntoFunction, IntoOutcome, Registration, Registry};
use crate::{config, BrokerHandle};

/// The seed's `RPCServer`: register functions, then [`RpcServer::serve_forever`].
///
/// ```no_run
/// use zmq_rpc::RpcServer;
///
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// let mut server = RpcServer::new("geheim", "Rechner1").port(8421).workers(4);
/// server.add_external_function(add, "add").description("Adds two numbers.");
/// server.serve_forever()?;
/// # Ok::<(), zmq_rpc::Error>(())
/// ```
pub struct RpcServer {
    options: Options,
    problem: Option<Error>,
    workers: usize,
    spin: Duration,
    registry: Registry,
}

impl RpcServer {
    /// A server with the seed's defaults: host `localhost`, port 8421, timeout 5000 ms,
    /// 4 workers, each overridden by `ZMQ_RPC_HOST`, `ZMQ_RPC_PORT`,
    /// `ZMQ_RPC_TIMEOUT_MS`, `ZMQ_RPC_WORKERS` (environment or `.env`) and then by the
    /// setters. No TCP endpoint for worker processes unless `ZMQ_RPC_WORKER_PORT` or
    /// [`RpcServer::worker_port`] asks for one.
    pub fn new(password: impl Into<String>, server_name: impl Into<String>) -> RpcServer {
        let (env, problem) = broker::load_env();
        let password = password.into();
        let options = Options::from_env(password.clone(), server_name.into(), &env);
        RpcServer {
            options,
            problem,
            workers: env.workers.unwrap_or(config::DEFAULT_WORKERS),
            spin: env.spin.unwrap_or(config::DEFAULT_SPIN),
            registry: Registry::default(),
        }
    }

    broker_setters! {
        /// Host to bind (`*` for all interfaces). Defaults to `ZMQ_RPC_HOST` or `localhost`.
        host: &str => |o, v| o.host = v.to_owned();
        /// Port for clients; 0 picks a free one (see [`ServerHandle::port`]). Defaults
        /// to `ZMQ_RPC_PORT` or 8421.
        port: u16 => |o, v| o.port = v;
        /// Also accept worker processes on this TCP port (0 picks a free one). Defaults
        /// to `ZMQ_RPC_WORKER_PORT`, or no TCP worker endpoint.
        worker_port: u16 => |o, v| o.worker_port = Some(v);
        /// The longest a call may take; later, the caller gets `TimeoutError`. Defaults
        /// to `ZMQ_RPC_TIMEOUT_MS` or 5000 ms.
        timeout: Duration => |o, v| o.settings.timeout = v;
        /// Requests that may wait for a worker before new ones get `OverloadError`.
        /// Defaults to 10,000.
        queue_limit: usize => |o, v| o.settings.queue_limit = v;
        /// Bytes of requests held for unanswered calls beyond which a request that would
        /// wait gets `OverloadError`. Defaults to 256 MiB.
        queue_bytes: usize => |o, v| o.settings.queue_bytes = v;
        /// Largest message accepted on the TCP endpoints. Defaults to 4 MiB.
        max_message_size: usize => |o, v| o.tcp.max_message_size = v;
        /// Encrypts the TCP endpoints with CURVE, given the server's secret key (Z85).
        /// Defaults to `ZMQ_RPC_CURVE_SECRET_KEY`, or plain TCP when that is unset.
        curve_secret_key: &str => |o, v| o.curve_secret_key = Some(v.to_owned());
        /// Admits only clients whose CURVE public key is in this file (Z85, one per
        /// line), checked in the handshake; the file is read again when it changes.
        /// Needs [`RpcServer::curve_secret_key`]. Defaults to
        /// `ZMQ_RPC_CURVE_AUTHORIZED_KEYS`, or any client key.
        curve_authorized_keys: impl Into<std::path::PathBuf> => |o, v| o.curve_authorized_keys = Some(v.into());
        /// Admits only worker processes whose CURVE public key is in this file (as
        /// [`RpcServer::curve_authorized_keys`]). Defaults to
        /// `ZMQ_RPC_CURVE_WORKER_AUTHORIZED_KEYS`, or any worker key.
        curve_worker_authorized_keys: impl Into<std::path::PathBuf> => |o, v| o.curve_worker_authorized_keys = Some(v.into());
        /// The secret worker processes must present when they register. Defaults to
        /// `ZMQ_RPC_WORKER_SECRET`, or the password.
        worker_secret: &str => |o, v| o.settings.worker_secret = v.to_owned();
        /// The longest a request is remembered so that a retry never runs a call twice
        /// (zero turns this off). A request with `timeout_ms` is remembered only until
        /// that deadline plus 10 s, if sooner. Defaults to 60 s.
        retry_window: Duration => |o, v| o.settings.retry_window = v;
        /// How long a shutdown lets running calls finish. Defaults to 10 s.
        shutdown_grace: Duration => |o, v| o.grace = v;
    }

    /// Local worker threads, i.e. calls run at once. Defaults to `ZMQ_RPC_WORKERS` or 4.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The longest a worker thread that finds no call waits for one awake (yielding
    /// its CPU at every turn) before it sleeps; zero: it sleeps at once. Only one thread
    /// at a time waits so, only while calls have been coming one at a time (for 1 ms
    /// no two ran at once), and for twice the last pause between calls within this
    /// bound, or 50 µs after a longer pause. A call that finds a thread awake skips the
    /// thread's wake-up, which on an idle CPU costs tens of microseconds: so a client
    /// calling in sequence gets its replies sooner, at the price of up to this much CPU
    /// time after each call. For a request of 256 KiB or more, a thread is woken as the
    /// request arrives and waits up to this bound for its call. Defaults to
    /// `ZMQ_RPC_SPIN_US` or 250 µs.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Registers `func` under `alias`, the seed's `add_external_function(func, alias)`.
    ///
    /// `func` is any Rust function or closure with up to eight parameters that
    /// implement `DeserializeOwned`, returning a serializable value or
    /// `Result<T, E: Display>` (an `Err` reaches the caller as `RuntimeError` with the
    /// message). Arguments come from the call's positional array; after
    /// [`Registration::params`], also by keyword. A missing trailing argument is `null`,
    /// so `Option` parameters are optional.
    ///
    /// Problems (a reserved or duplicate alias) are reported by [`RpcServer::start`].
    pub fn add_external_function<F, Args>(&mut self, func: F, alias: &str) -> Registration<'_>
    where
        F: IntoFunction<Args>,
    {
        self.registry.add_typed(func, alias)
    }

    /// Registers a function on raw JSON: it gets the positional and keyword arguments as
    /// they came and returns anything [`IntoOutcome`] (a `serde_json::Value`, say).
    pub fn add_raw_function<F, R>(&mut self, func: F, alias: &str) -> Registration<'_>
    where
        F: Fn(Vec<Value>, Map<String, Value>) -> R + Send + Sync + 'static,
        R: IntoOutcome,
    {
        self.registry.add_raw(func, alias)
    }

    /// Binds, starts the broker and the worker threads, and returns once they serve.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings or registrations, [`Error::Transport`]
    /// when a bind fails.
    pub fn start(mut self) -> Result<ServerHandle, Error> {
        if let Some(e) = self.problem.take() {
            return Err(e);
        }
        self.registry.validated()?;
        if self.workers == 0 {
            return Err(Error::Config("a server needs at least one worker".into()));
        }
        let threads = u32::try_from(self.workers)
            .map_err(|_| Error::Config(format!("too many workers: {}", self.workers)))?;
        // The local workers take calls from the broker through memory, not a socket
        // (`worker::local`); the broker knows them from the start.
        let (pool, link) =
            LocalPool::start(&self.registry, self.workers, self.options.grace, self.spin)?;
        let local = LocalWorkers {
            link,
            name: format!("{}-local", self.options.settings.name),
            functions: self.registry.infos_where_direct(false),
            threads,
            direct: self.registry.infos_where_direct(true),
            registry: self.registry.clone(),
        };
        let broker = broker::spawn(&zmq::Context::new(), self.options, Some(local))?;
        Ok(ServerHandle {
            pool: Some(pool),
            broker: Some(broker),
        })
    }

    /// Starts and serves until SIGINT or SIGTERM, then shuts down cleanly and returns
    /// `Ok`: the seed's `serve_forever()`.
    ///
    /// # Errors
    /// As [`RpcServer::start`].
    pub fn serve_forever(self) -> Result<(), Error> {
        let running = self.start()?;
        crate::signals::wait_for_shutdown_signal(|| running.is_finished())?;
        running.shutdown();
        Ok(())
    }
}

/// A running server. Dropping it stops the server.
pub struct ServerHandle {
    pool: Option<LocalPool>,
    broker: Option<BrokerHandle>,
}

impl ServerHandle {
    /// The bound client port (useful after `port(0)`).
    pub fn port(&self) -> u16 {
        self.broker.as_ref().map_or(0, BrokerHandle::client_port)
    }

    /// The bound client endpoint.
    pub fn endpoint(&self) -> &str {
        self.broker.as_ref().map_or("", |b| b.client_endpoint())
    }

    /// The bound TCP port for worker processes, if one was asked for.
    pub fn worker_port(&self) -> Option<u16> {
        self.broker.as_ref().and_then(BrokerHandle::worker_port)
    }

    /// How many messages from workers the broker dropped (see
    /// [`BrokerHandle::dropped_messages`]).
    pub fn dropped_messages(&self) -> u64 {
        self.broker
            .as_ref()
            .map_or(0, BrokerHandle::dropped_messages)
    }

    /// Whether the server has stopped by itself (its broker thread ended).
    pub fn is_finished(&self) -> bool {
        self.broker.as_ref().map_or(true, BrokerHandle::is_finished)
    }

    /// Stops gracefully: new and queued requests are answered with `UnavailableError`,
    /// running calls get up to the shutdown grace (10 s) to finish, then the broker and
    /// the workers stop.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Blocks until the server stops.
    ///
    /// # Errors
    /// [`Error::Runtime`] if the broker thread panicked.
    pub fn wait(mut self) -> Result<(), Error> {
        match self.broker.take() {
            Some(b) => b.wait(),
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        // The broker drains first (refusing new work while the local workers finish
        // what runs); then the idle workers leave.
        if let Some(b) = self.broker.take() {
            b.shutdown();
        }
        if let Some(pool) = self.pool.take() {
            pool.stop();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
