//! The load-balancing broker: a ROUTER for clients, a ROUTER for workers, one thread.
//!
//! The thread owns both sockets and a [`dispatch::Dispatcher`]; it moves messages
//! between the sockets and the state machine and carries out the state machine's
//! [`dispatch::Action`]s. See `dispatch` for the dispatch rule.

pub(crate) mod dispatch;
mod recent;
mod throttle;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch::{Action, Dispatcher, Settings};

use crate::actor::Actor;
use crate::auth;
use crate::config::{self, Env};
use crate::error::Error;
use crate::protocol::FunctionInfo;
use crate::transport::{self, Curve, TcpOptions};
use crate::worker::local::{self, LocalLink, LocalReply};
use crate::worker::Registry;

/// Messages taken from one socket before the loop looks at the other, so neither side
/// can starve the other. At ~50 µs of server CPU per call, 256 messages are ~13 ms: a
/// flood delays the other socket, the control pipe and the timers by at most that (far
/// below the 1 s heartbeat interval), while under load one `zmq_poll` serves up to 256
/// messages.
const BATCH: usize = 256;

/// A request at least this large (all its frames) takes the broker long enough to copy
/// and check (about 100 µs per MiB: its bytes, UTF-8, the retry key's hash) that a
/// pool thread woken as it arrives is awake when its call is queued
/// ([`LocalLink::expect_call`]): the wake-up, tens of microseconds on an idle CPU here,
/// overlaps the checks instead of following them (`docs/performance.md`, ninth pass).
/// Below it, the checks are shorter than the wake-up.
const LARGE_REQUEST: usize = 256 * 1024;

/// A standalone broker, as `zmq-rpc broker` runs it: clients connect to `port`, worker
/// processes to `worker_port`.
///
/// ```no_run
/// let broker = zmq_rpc::Broker::new("geheim", "cluster").start()?;
/// println!("clients: {}, workers: {:?}", broker.client_endpoint(), broker.worker_endpoint());
/// broker.wait()
/// # ;Ok::<(), zmq_rpc::Error>(())
/// ```
pub struct Broker {
    pub(crate) options: Options,
    pub(crate) problem: Option<Error>,
}

/// Everything a broker thread needs.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) settings: Settings,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) worker_port: Option<u16>,
    pub(crate) tcp: TcpOptions,
    pub(crate) curve_secret_key: Option<String>,
    pub(crate) curve_authorized_keys: Option<PathBuf>,
    pub(crate) curve_worker_authorized_keys: Option<PathBuf>,
    pub(crate) grace: Duration,
}

impl Options {
    /// Defaults, overridden by the environment (and `.env`).
    pub(crate) fn from_env(password: String, name: String, env: &Env) -> Options {
        Options {
            settings: Settings {
                name,
                worker_secret: env
                    .worker_secret
                    .clone()
                    .unwrap_or_else(|| password.clone()),
                password,
                timeout: env.timeout.unwrap_or(config::DEFAULT_TIMEOUT),
                queue_limit: config::DEFAULT_QUEUE_LIMIT,
                queue_bytes: config::DEFAULT_QUEUE_BYTES,

                heartbeat_liveness: config::DEFAULT_HEARTBEAT_LIVENESS,
                retry_window: config::DEFAULT_RETRY_WINDOW,
                retry_entries: config::DEFAULT_RETRY_ENTRIES,
                retry_bytes: config::DEFAULT_RETRY_BYTES,
                warmup: Duration::ZERO,
            },
            grace: config::DEFAULT_SHUTDOWN_GRACE,
            host: env
                .host
                .clone()
                .unwrap_or_else(|| config::DEFAULT_HOST.into()),
            port: env.port.unwrap_or(config::DEFAULT_PORT),
            worker_port: env.worker_port,
            tcp: TcpOptions {
                max_message_size: config::DEFAULT_MAX_MESSAGE_SIZE,
                curve: Curve::Off,
            },
            curve_secret_key: env.curve_secret_key.clone(),
            curve_authorized_keys: env.curve_authorized_keys.clone(),
            curve_worker_authorized_keys: env.curve_worker_authorized_keys.clone(),
        }
    }
}

pub(crate) fn load_env() -> (Env, Option<Error>) {
    match Env::load() {
        Ok(env) => (env, None),
        Err(e) => (Env::default(), Some(e)),
    }
}

macro_rules! broker_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => |$o:ident, $v:ident| $body:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, $v: $ty) -> Self {
            let $o = &mut self.options;
            $body;
            self
        }
    )*};
}
pub(crate) use broker_setters;

impl Broker {
    /// A broker with the given password and name (`ping` returns the name). Host, ports,
    /// timeout and CURVE key come from the environment or `.env`, else the defaults.
    pub fn new(password: impl Into<String>, name: impl Into<String>) -> Broker {
        let (env, problem) = load_env();
        let mut options = Options::from_env(password.into(), name.into(), &env);
        options.worker_port = Some(env.worker_port.unwrap_or(config::DEFAULT_WORKER_PORT));
        options.settings.warmup = config::DEFAULT_BROKER_WARMUP;
        Broker { options, problem }
    }

    broker_setters! {
        /// Host to bind both endpoints on (`*` for all interfaces). Defaults to
        /// `ZMQ_RPC_HOST` or `localhost`.
        host: &str => |o, v| o.host = v.to_owned();
        /// Port for clients; 0 picks a free one. Defaults to `ZMQ_RPC_PORT` or 8421.
        port: u16 => |o, v| o.port = v;
        /// Port for worker processes; 0 picks a free one. Defaults to
        /// `ZMQ_RPC_WORKER_PORT` or 8422.
        worker_port: u16 => |o, v| o.worker_port = Some(v);
        /// The longest a call may take. Defaults to `ZMQ_RPC_TIMEOUT_MS` or 5000 ms.
        timeout: Duration => |o, v| o.settings.timeout = v;
        /// Requests that may wait for a worker before new ones get `OverloadError`.
        /// Defaults to 10,000.
        queue_limit: usize => |o, v| o.settings.queue_limit = v;
        /// Bytes of requests held for unanswered calls beyond which a request that would
        /// wait gets `OverloadError`. Defaults to 256 MiB.
        queue_bytes: usize => |o, v| o.settings.queue_bytes = v;
        /// Largest message accepted on the TCP endpoints. Defaults to 4 MiB.
        max_message_size: usize => |o, v| o.tcp.max_message_size = v;
                /// Missed heartbeats before a worker is lost. Heartbeats go both ways at the
        /// interval each worker announces (1 s by default). Defaults to 3.
        heartbeat_liveness: u32 => |o, v| o.settings.heartbeat_liveness = v;
        /// Encrypts both endpoints with CURVE, given this broker's secret key (Z85).
        /// Defaults to `ZMQ_RPC_CURVE_SECRET_KEY`, or plain TCP when that is unset.
        curve_secret_key: &str => |o, v| o.curve_secret_key = Some(v.to_owned());
        /// Admits only clients whose CURVE public key is in this file (Z85, one per
        /// line), checked in the handshake; the file is read again when it changes.
        /// Needs [`Broker::curve_secret_key`]. Defaults to `ZMQ_RPC_CURVE_AUTHORIZED_KEYS`,
        /// or any client key.
        curve_authorized_keys: impl Into<PathBuf> => |o, v| o.curve_authorized_keys = Some(v.into());
        /// Admits only worker processes whose CURVE public key is in this file (as
        /// [`Broker::curve_authorized_keys`]). Defaults to
        /// `ZMQ_RPC_CURVE_WORKER_AUTHORIZED_KEYS`, or any worker key.
        curve_worker_authorized_keys: impl Into<PathBuf> => |o, v| o.curve_worker_authorized_keys = Some(v.into());
        /// The secret worker processes must present when they register (in READY).
        /// Defaults to `ZMQ_RPC_WORKER_SECRET`, or the password.
        worker_secret: &str => |o, v| o.settings.worker_secret = v.to_owned();
        /// The longest a request is remembered so that a retry never runs a call twice
        /// (zero turns this off). A request with `timeout_ms` is remembered only until
        /// that deadline plus 10 s, if sooner. Defaults to 60 s.
        retry_window: Duration => |o, v| o.settings.retry_window = v;
                /// How long a shutdown lets running calls finish. Defaults to 10 s.
        shutdown_grace: Duration => |o, v| o.grace = v;
        /// After start, how long a call to a function no worker serves waits for workers
        /// to register before it gets `NameError` (so a restarted broker does not refuse
        /// calls its workers are about to offer again). Defaults to 3 s.
        warmup: Duration => |o, v| o.settings.warmup = v;
    }

    /// Binds both endpoints and starts the broker thread.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings, [`Error::Transport`] when a bind fails
    /// (the port is taken, say).
    pub fn start(self) -> Result<BrokerHandle, Error> {
        if let Some(e) = self.problem {
            return Err(e);
        }
        spawn(&zmq::Context::new(), self.options, None)
    }
}

/// A running broker. Dropping it stops the broker.
pub struct BrokerHandle {
    client_endpoint: String,
    worker_endpoint: Option<String>,
    workers: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    actor: Actor,
    /// The ZAP handler, when allow-lists are in force; stops after the broker.
    _zap: Option<Actor>,
}

impl BrokerHandle {
    /// The bound client endpoint, as libzmq reports it (`tcp://127.0.0.1:8421`).
    pub fn client_endpoint(&self) -> &str {
        &self.client_endpoint
    }

    /// The bound client port (useful after binding port 0).
    pub fn client_port(&self) -> u16 {
        transport::endpoint_port(&self.client_endpoint).unwrap_or(0)
    }

    /// The bound TCP endpoint for worker processes, if any.
    pub fn worker_endpoint(&self) -> Option<&str> {
        self.worker_endpoint.as_deref()
    }

    /// The bound worker port, if any.
    pub fn worker_port(&self) -> Option<u16> {
        self.worker_endpoint
            .as_deref()
            .and_then(transport::endpoint_port)
    }

    /// How many workers are registered now.
    pub fn worker_count(&self) -> usize {
        self.workers.load(Ordering::Relaxed)
    }

    /// How many messages from workers were dropped: malformed ones, unknown commands,
    /// replies to requests the worker was never given. (Malformed client requests are
    /// answered with `ProtocolError` instead.)
    pub fn dropped_messages(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the broker thread has ended.
    pub fn is_finished(&self) -> bool {
        self.actor.is_finished()
    }

    /// Serves until SIGINT or SIGTERM, then shuts down (see [`BrokerHandle::shutdown`]).
    ///
    /// # Errors
    /// [`Error::Config`] when the signal handlers cannot be installed.
    pub fn run_until_signal(self) -> Result<(), Error> {
        crate::signals::wait_for_shutdown_signal(|| self.is_finished())?;
        self.shutdown();
        Ok(())
    }

    /// Stops the broker gracefully: new and queued requests are answered with
    /// `UnavailableError`, running calls get up to the shutdown grace (10 s) to finish,
    /// then whatever still runs is answered with `UnavailableError` and workers are told
    /// to go.
    pub fn shutdown(mut self) {
        self.actor.stop();
    }

    /// Blocks until the broker stops.
    ///
    /// # Errors
    /// [`Error::Runtime`] if the broker thread panicked.
    pub fn wait(mut self) -> Result<(), Error> {
        self.actor.wait()
    }
}

/// An `RpcServer`'s local worker pool, as its broker sees it, and the functions the
/// broker runs itself (registered as direct).
pub(crate) struct LocalWorkers {
    pub(crate) link: LocalLink,
    pub(crate) name: String,
    /// The functions the pool runs.
    pub(crate) functions: Vec<FunctionInfo>,
    pub(crate) threads: u32,
    /// The functions the broker runs, and their registry.
    pub(crate) direct: Vec<FunctionInfo>,
    pub(crate) registry: Registry,
}

/// A direct call that takes longer than this is logged, and its function runs on the
/// local pool from then on: while it runs, the broker serves nobody.
const DIRECT_LIMIT: Duration = Duration::from_millis(1);

/// Binds the broker's sockets on `ctx` and starts its thread, with the local worker
/// pool registered from the start when there is one.
pub(crate) fn spawn(
    ctx: &zmq::Context,
    mut options: Options,
    local: Option<LocalWorkers>,
) -> Result<BrokerHandle, Error> {
    let s = &options.settings;
    if s.timeout.is_zero() {
        return Err(Error::Config("the timeout must be positive".into()));
    }
    if s.heartbeat_liveness == 0 {
        return Err(Error::Config("heartbeat liveness must be positive".into()));
    }
    transport::require_safe_libzmq()?;
    if let Some(key) = &options.curve_secret_key {
        options.tcp.curve = Curve::server(key)?;
    }
    let zap = start_allow_lists(ctx, &options)?;
    if !options.tcp.curve.is_on() && !transport::is_loopback_host(&options.host) {
        tracing::warn!(
            host = %options.host,
            "listening beyond loopback without CURVE: passwords and arguments cross the \
             network in plain text (set ZMQ_RPC_CURVE_SECRET_KEY; see docs/security.md)"
        );
    }
    let frontend_at = transport::bind_endpoint(&options.host, options.port);
    let (frontend, client_endpoint) = transport::bind_frontend(ctx, &frontend_at, &options.tcp)?;
    let worker_at = options
        .worker_port
        .map(|p| transport::bind_endpoint(&options.host, p));
    let (backend, worker_endpoint) = match worker_at {
        Some(at) => {
            let (socket, bound) = transport::bind_backend(ctx, &at, &options.tcp)?;
            (Some(socket), Some(bound))
        }
        None => (None, None),
    };
    let name = options.settings.name.clone();
    tracing::info!(
        server = %name,
        clients = %client_endpoint,
        workers = worker_endpoint.as_deref().unwrap_or("local only"),
        curve = !matches!(options.tcp.curve, Curve::Off),
        "broker started"
    );
    let workers = Arc::new(AtomicUsize::new(0));
    let gauge = Arc::clone(&workers);
    let dropped = Arc::new(AtomicU64::new(0));
    let dropped_gauge = Arc::clone(&dropped);
    let mut dispatcher = Dispatcher::new(options.settings, Instant::now());
    if let Some(pool) = &local {
        dispatcher.add_local(
            pool.name.clone(),
            pool.functions.clone(),
            pool.threads,
            Instant::now(),
        );
        if !pool.direct.is_empty() {
            dispatcher.add_direct(
                format!("{} (direct)", pool.name),
                pool.direct.clone(),
                Instant::now(),
            );
        }
        workers.store(dispatcher.worker_count(), Ordering::Relaxed);
    }
    let actor = Actor::spawn(ctx, "zmq-rpc-broker", move |control| {
        Loop {
            frontend,
            backend,
            control,
            direct: local
                .as_ref()
                .filter(|pool| !pool.direct.is_empty())
                .map(|pool| pool.registry.clone()),
            local: local.map(|pool| pool.link),
            local_replies: Vec::new(),
            from_workers: transport::FrameReader::default(),
            batch: Vec::new(),
            dispatcher,
            grace: options.grace,
            workers: gauge,
            dropped: dropped_gauge,
        }
        .run();
        tracing::info!(server = %name, "broker stopped");
    })?;
    Ok(BrokerHandle {
        client_endpoint,
        worker_endpoint,
        workers,
        dropped,
        actor,
        _zap: zap,
    })
}

/// Loads the allow-lists and starts the ZAP handler that applies them, if any is set.
fn start_allow_lists(ctx: &zmq::Context, options: &Options) -> Result<Option<Actor>, Error> {
    let (clients, workers) = (
        options.curve_authorized_keys.as_deref(),
        options.curve_worker_authorized_keys.as_deref(),
    );
    if clients.is_none() && workers.is_none() {
        return Ok(None);
    }
    if !options.tcp.curve.is_on() {
        return Err(Error::Config(
            "CURVE allow-lists need CURVE: set ZMQ_RPC_CURVE_SECRET_KEY as well".into(),
        ));
    }
    let gate = auth::Gate {
        clients: clients.map(auth::AllowList::load).transpose()?,
        workers: workers.map(auth::AllowList::load).transpose()?,
    };
    tracing::info!(
        client_keys = gate.clients.as_ref().map(auth::AllowList::len),
        worker_keys = gate.workers.as_ref().map(auth::AllowList::len),
        "CURVE allow-lists in force"
    );
    auth::start_zap(ctx, gate).map(Some)
}

/// One message from the frontend, and the address of the peer that sent it (libzmq's
/// `Peer-Address` property of TCP messages), which wrong-password throttling keys on.
fn recv_with_peer(socket: &zmq::Socket) -> Option<(Vec<Vec<u8>>, Option<String>)> {
    let mut first = socket.recv_msg(zmq::DONTWAIT).ok()?;
    let peer = first.gets("Peer-Address").map(str::to_owned);
    // Identity, delimiter, body: room for all without growing.
    let mut frames = Vec::with_capacity(4);
    frames.push(first.to_vec());
    while socket.get_rcvmore().unwrap_or(false) {
        match socket.recv_bytes(0) {
            Ok(f) => frames.push(f),
            Err(_) => break,
        }
    }
    Some((frames, peer))
}

/// Runs a direct function's call on the broker thread and reports it to `dispatcher`.
fn run_direct(
    registry: Option<&Registry>,
    dispatcher: &mut Dispatcher,
    call: local::LocalCall,
    out: &mut Vec<Action>,
) {
    let (key, function) = (call.key, call.function.clone());
    let start = Instant::now();
    let outcome = match registry {
        Some(registry) => local::run(registry, call),
        None => Err(Error::Unavailable("no direct functions here".into())),
    };
    let took = start.elapsed();
    if took > DIRECT_LIMIT && dispatcher.demote_direct(&function) {
        tracing::warn!(
            function = %function,
            took_us = took.as_micros() as u64,
            "a direct call took longer than 1 ms and held up every other call; \
             the function runs on the worker threads from now on"
        );
    }
    dispatcher.direct_reply(key, outcome, Instant::now(), out);
}

struct Loop {
    frontend: zmq::Socket,
    /// The ROUTER for worker processes, when there is a TCP endpoint for them.
    backend: Option<zmq::Socket>,
    control: zmq::Socket,
    /// The local worker pool, if any.
    local: Option<LocalLink>,
    /// The functions registered as direct, run on this thread.
    direct: Option<Registry>,
    /// Replies taken from the pool, kept for their capacity.
    local_replies: Vec<LocalReply>,
    /// Receives worker messages into buffers kept from one message to the next.
    from_workers: transport::FrameReader,
    /// The actions being carried out (see [`Loop::carry_out`]).
    batch: Vec<Action>,
    dispatcher: Dispatcher,
    grace: Duration,
    /// Registered workers, for the handle.
    workers: Arc<AtomicUsize>,
    /// Dropped worker messages, for the handle.
    dropped: Arc<AtomicU64>,
}

impl Loop {
    fn run(&mut self) {
        let mut out = Vec::new();
        // Set when asked to stop: from then on new requests are refused and the loop
        // runs until the running calls are answered or this instant passes.
        let mut stop_by: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let Some(end) = stop_by {
                if self.dispatcher.running() == 0 || now >= end {
                    break;
                }
            }
            let wait = self
                .dispatcher
                .next_tick()
                .map_or(1000, |t| {
                    t.saturating_duration_since(now).as_millis().min(1000) as i64
                })
                .max(1);
            // What is absent is polled as descriptor -1, which poll(2) ignores.
            let signal = self.local.as_ref().map_or(-1, LocalLink::signal_fd);
            let mut items = [
                self.control.as_poll_item(zmq::POLLIN),
                self.frontend.as_poll_item(zmq::POLLIN),
                self.backend.as_ref().map_or_else(
                    || zmq::PollItem::from_fd(-1, zmq::POLLIN),
                    |b| b.as_poll_item(zmq::POLLIN),
                ),
                zmq::PollItem::from_fd(signal, zmq::POLLIN),
            ];
            if let Err(e) = zmq::poll(&mut items, wait) {
                tracing::error!(error = %e, "broker poll failed");
                break;
            }
            let (stop, clients, workers, local) = (
                items[0].is_readable(),
                items[1].is_readable(),
                items[2].is_readable(),
                items[3].is_readable(),
            );
            if stop && stop_by.is_none() {
                let _ = self.control.recv_bytes(zmq::DONTWAIT);
                tracing::info!(running = self.dispatcher.running(), "broker draining");
                self.dispatcher.drain(&mut out);
                // Calls waiting in the local pool are refused like queued ones.
                for call in self
                    .local
                    .as_ref()
                    .map(LocalLink::take_back)
                    .unwrap_or_default()
                {
                    self.dispatcher.local_unstarted(call.key, &mut out);
                }
                self.carry_out(&mut out);
                stop_by = Some(Instant::now() + self.grace);
            }
            if local {
                self.take_local_replies(&mut out);
            }
            if workers {
                for _ in 0..BATCH {
                    let Some(backend) = &self.backend else {
                        break;
                    };
                    if !self.from_workers.recv(backend) {
                        break;
                    }
                    let id = self.from_workers.take(0);
                    let frames = self.from_workers.frames().get(1..).unwrap_or_default();
                    self.dispatcher
                        .worker_message(id, frames, Instant::now(), &mut out);
                    self.carry_out(&mut out);
                }
            }
            if clients {
                for _ in 0..BATCH {
                    let Some((frames, peer)) = recv_with_peer(&self.frontend) else {
                        break;
                    };
                    if frames.iter().map(Vec::len).sum::<usize>() >= LARGE_REQUEST {
                        if let Some(link) = &self.local {
                            link.expect_call();
                        }
                    }
                    self.dispatcher.client_message_from(
                        frames,
                        peer.as_deref(),
                        Instant::now(),
                        &mut out,
                    );
                    self.carry_out(&mut out);
                }
            }
            self.dispatcher.tick(Instant::now(), &mut out);
            self.carry_out(&mut out);
            self.workers
                .store(self.dispatcher.worker_count(), Ordering::Relaxed);
            self.dropped
                .store(self.dispatcher.dropped(), Ordering::Relaxed);
        }
        self.dispatcher.shutdown(Instant::now(), &mut out);
        self.carry_out(&mut out);
    }

    fn take_local_replies(&mut self, out: &mut Vec<Action>) {
        let Some(link) = &self.local else {
            return;
        };
        link.take_replies(&mut self.local_replies);
        let mut replies = std::mem::take(&mut self.local_replies);
        for reply in replies.drain(..) {
            self.dispatcher
                .local_reply(reply.key, reply.outcome, Instant::now(), out);
            self.carry_out(out);
        }
        self.local_replies = replies;
    }

    fn carry_out(&mut self, out: &mut Vec<Action>) {
        while !out.is_empty() {
            // Swapped rather than taken, so that both vectors keep their capacity from
            // one message to the next.
            std::mem::swap(out, &mut self.batch);
            for action in self.batch.drain(..) {
                match action {
                    Action::ToClient {
                        mut envelope,
                        reply,
                        data,
                    } => {
                        envelope.push(reply);
                        envelope.extend(data);
                        if let Err(e) =
                            transport::send_frames(&self.frontend, envelope, zmq::DONTWAIT)
                        {
                            // EHOSTUNREACH: the client has gone (normal for a caller that
                            // timed out, or an earlier attempt's socket after a retry);
                            // EAGAIN: it does not read.
                            tracing::debug!(error = %e, "reply dropped: the client cannot take it");
                        }
                    }
                    Action::ToLocal(call) => {
                        let refused = match &self.local {
                            Some(link) => link.submit(call).err(),
                            None => Some(Box::new(call)),
                        };
                        if let Some(call) = refused {
                            let err = Error::Unavailable("the local workers have stopped".into());
                            self.dispatcher
                                .local_reply(call.key, Err(err), Instant::now(), out);
                        }
                    }
                    Action::RunHere(call) => {
                        run_direct(self.direct.as_ref(), &mut self.dispatcher, call, out);
                    }
                    // Nothing is sent to the local pool but calls.
                    Action::ToWorker { worker, .. } if worker.is_empty() => {}
                    Action::ToWorker {
                        worker,
                        key,
                        frames,
                    } => {
                        // The worker's identity goes first, copied from its id (no
                        // clone); a worker that is gone fails this first send.
                        let sent = match &self.backend {
                            Some(backend) => backend
                                .send(worker.as_slice(), zmq::DONTWAIT | zmq::SNDMORE)
                                .and_then(|()| {
                                    transport::send_frames(backend, frames, zmq::DONTWAIT)
                                }),
                            None => Err(zmq::Error::EHOSTUNREACH),
                        };
                        if sent.is_err() {
                            self.dispatcher
                                .undeliverable(&worker, key, Instant::now(), out);
                        }
                    }
                }
            }
        }
    }
}
