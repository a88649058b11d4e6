//! The worker side: a socket thread that talks to the broker, and executor threads that
//! run the functions.
//!
//! The socket thread owns the DEALER to the broker. It registers (READY with its
//! functions, capacity and heartbeat interval), sends and checks heartbeats, hands each
//! REQUEST to an idle executor and forwards the replies. Executors never touch the broker
//! socket: each owns a PUSH back to the socket thread. So a function that runs for
//! minutes never stops the heartbeats.
//!
//! An `RpcServer`'s local workers take a shorter path, through memory instead of a
//! socket: see [`local`].

mod function;
pub(crate) mod local;

pub(crate) use function::Registry;
pub use function::{IntoFunction, IntoOutcome, Json, Registration};

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::actor::Actor;
use crate::config::{self, Env};
use crate::error::Error;
use crate::protocol::{self, BrokerMessage, Call, Ready, WorkerMessage};
use crate::transport::{self, Curve, TcpOptions};

/// First wait before reconnecting to a lost broker; doubles per attempt.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// A worker process's connection to a standalone broker (`zmq-rpc broker`).
///
/// ```no_run
/// use zmq_rpc::Worker;
///
/// let mut worker = Worker::new("geheim", "localhost", 8422).threads(4);
/// worker.add_external_function(|a: i64, b: i64| a + b, "add");
/// worker.run()?; // serves until the process is stopped
/// # Ok::<(), zmq_rpc::Error>(())
/// ```
pub struct Worker {
    endpoint: String,
    setup: Setup,
    curve_server_key: Option<String>,
    /// This worker's own CURVE key pair (public, secret), Z85.
    curve_keypair: Option<(String, String)>,
    problem: Option<Error>,
}

/// What the socket thread needs.
#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) password: String,
    pub(crate) name: String,
    pub(crate) threads: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_liveness: u32,
    pub(crate) grace: Duration,
    pub(crate) tcp: TcpOptions,
    pub(crate) registry: Registry,
}

impl Setup {
    pub(crate) fn new(password: String, threads: usize) -> Setup {
        Setup {
            password,
            name: format!("worker-{}", std::process::id()),
            threads,
            heartbeat_interval: config::DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_liveness: config::DEFAULT_HEARTBEAT_LIVENESS,
            grace: config::DEFAULT_SHUTDOWN_GRACE,
            tcp: TcpOptions {
                max_message_size: config::DEFAULT_MAX_MESSAGE_SIZE,
                curve: Curve::Off,
            },
            registry: Registry::default(),
        }
    }
}

impl Worker {
    /// A worker for the broker's worker endpoint `tcp://HOST:PORT`. `ZMQ_RPC_WORKERS`
    /// and `ZMQ_RPC_CURVE_SERVER_KEY` (environment or `.env`) set the thread count and
    /// CURVE unless set in code.
    pub fn new(password: impl Into<String>, host: &str, port: u16) -> Worker {
        Worker::with_endpoint(password, &config::tcp_endpoint(host, port))
    }

    /// A worker for any ZeroMQ endpoint of a broker's worker side.
    pub fn with_endpoint(password: impl Into<String>, endpoint: &str) -> Worker {
        let (env, mut problem) = match Env::load() {
            Ok(env) => (env, None),
            Err(e) => (Env::default(), Some(e)),
        };
        let curve_keypair = match (&env.curve_public_key, &env.curve_secret_key) {
            (Some(p), Some(s)) => Some((p.clone(), s.clone())),
            (Some(_), None) => {
                problem = problem.or(Some(Error::Config(
                    "ZMQ_RPC_CURVE_PUBLIC_KEY is set without ZMQ_RPC_CURVE_SECRET_KEY".into(),
                )));
                None
            }
            _ => None,
        };
        let setup = Setup::new(
            env.worker_secret.clone().unwrap_or_else(|| password.into()),
            env.workers.unwrap_or(config::DEFAULT_WORKERS),
        );
        Worker {
            endpoint: endpoint.to_owned(),
            setup,
            curve_server_key: env.curve_server_key,
            curve_keypair,
            problem,
        }
    }

    /// Executor threads, i.e. calls run at once. Defaults to `ZMQ_RPC_WORKERS` or 4.
    pub fn threads(mut self, n: usize) -> Self {
        self.setup.threads = n;
        self
    }

    /// A name for the broker's logs. Defaults to `worker-<pid>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.setup.name = name.into();
        self
    }

    /// Interval of heartbeats to the broker. Defaults to 1 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.setup.heartbeat_interval = interval;
        self
    }

    /// Missed broker heartbeats before the worker reconnects. Defaults to 3.
    pub fn heartbeat_liveness(mut self, liveness: u32) -> Self {
        self.setup.heartbeat_liveness = liveness;
        self
    }

    /// How long a stopping worker lets running calls finish. Defaults to 10 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.setup.grace = grace;
        self
    }

    /// Largest message accepted from the broker. Defaults to 4 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.setup.tcp.max_message_size = bytes;
        self
    }

    /// Encrypts with CURVE, given the broker's public key (Z85). Defaults to
    /// `ZMQ_RPC_CURVE_SERVER_KEY`, or plain TCP when that is unset.
    pub fn curve_server_key(mut self, public_z85: impl Into<String>) -> Self {
        self.curve_server_key = Some(public_z85.into());
        self
    }

    /// This worker's own long-term CURVE key pair (Z85), for brokers that admit only
    /// listed worker keys. Defaults to `ZMQ_RPC_CURVE_PUBLIC_KEY` with
    /// `ZMQ_RPC_CURVE_SECRET_KEY`, or a fresh pair per process.
    pub fn curve_keypair(
        mut self,
        public_z85: impl Into<String>,
        secret_z85: impl Into<String>,
    ) -> Self {
        self.curve_keypair = Some((public_z85.into(), secret_z85.into()));
        self
    }

    /// The secret presented to the broker when registering (the broker's
    /// `worker_secret`). Defaults to `ZMQ_RPC_WORKER_SECRET`, or the password.
    pub fn worker_secret(mut self, secret: impl Into<String>) -> Self {
        self.setup.password = secret.into();
        self
    }

    /// Registers a typed function under `alias`; see [`crate::RpcServer::add_external_function`].
    pub fn add_external_function<F, Args>(&mut self, func: F, alias: &str) -> Registration<'_>
    where
        F: IntoFunction<Args>,
    {
        self.setup.registry.add_typed(func, alias)
    }

    /// Registers a function on raw JSON arguments; see [`crate::RpcServer::add_raw_function`].
    pub fn add_raw_function<F, R>(&mut self, func: F, alias: &str) -> Registration<'_>
    where
        F: Fn(Vec<Value>, Map<String, Value>) -> R + Send + Sync + 'static,
        R: IntoOutcome,
    {
        self.setup.registry.add_raw(func, alias)
    }

    /// Connects and starts serving in background threads.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings or a registration problem,
    /// [`Error::Transport`] when the socket cannot be set up.
    pub fn start(mut self) -> Result<WorkerHandle, Error> {
        if let Some(e) = self.problem.take() {
            return Err(e);
        }
        if let Some(key) = &self.curve_server_key {
            let own = self.curve_keypair.as_ref();
            self.setup.tcp.curve =
                Curve::client_with_keys(key, own.map(|p| p.0.as_str()), own.map(|p| p.1.as_str()))?;
        }
        transport::require_safe_libzmq()?;
        spawn(&zmq::Context::new(), &self.endpoint, self.setup)
    }

    /// Serves until SIGINT or SIGTERM, then lets running calls finish and leaves:
    /// [`Worker::start`], then waits for the signal.
    ///
    /// # Errors
    /// As [`Worker::start`].
    pub fn run(self) -> Result<(), Error> {
        let running = self.start()?;
        crate::signals::wait_for_shutdown_signal(|| running.is_finished())?;
        let refusal = running.refusal();
        running.shutdown();
        refusal.map_or(Ok(()), Err)
    }
}

/// A running worker. Dropping it stops the worker (see [`WorkerHandle::shutdown`]).
pub struct WorkerHandle {
    /// The socket thread.
    actor: Actor,
    grace: Duration,
    /// Why the broker refused this worker, once it did (the worker then stops).
    refused: Arc<Mutex<Option<Error>>>,
}

impl WorkerHandle {
    /// Drains: tells the broker to send no more calls, lets running ones finish (up to
    /// the shutdown grace, 10 s by default) and their replies go out, tells the broker
    /// it leaves, and joins its threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.actor.signal();
        // The socket thread ends by itself within the grace period (it leaves executors
        // whose calls overrun it behind); should it not, it is not waited for either.
        let by = Instant::now() + self.grace + Duration::from_secs(1);
        while !self.is_finished() && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.actor.is_finished() {
            let _ = self.actor.wait();
        } else {
            tracing::warn!("the worker's socket thread did not stop; leaving it behind");
            self.actor.abandon();
        }
    }

    /// Whether the worker's socket thread has ended.
    pub fn is_finished(&self) -> bool {
        self.actor.is_finished()
    }

    /// Why the broker refused this worker, if it did: its CURVE key is not on the
    /// broker's allow-list, the broker's key is wrong, or its secret is wrong. A refused
    /// worker stops by itself ([`WorkerHandle::is_finished`]).
    pub fn refusal(&self) -> Option<Error> {
        self.refused.lock().ok().and_then(|slot| slot.clone())
    }

    /// Blocks until the worker stops: only when the broker refuses it, unless another
    /// thread stops it.
    ///
    /// # Errors
    /// [`Error::Permission`] when the broker refused the worker, [`Error::Runtime`] if
    /// the worker thread panicked.
    pub fn wait(mut self) -> Result<(), Error> {
        self.actor.wait()?;
        match self.refusal() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a worker's threads on `ctx`, connected to `endpoint`.
pub(crate) fn spawn(
    ctx: &zmq::Context,
    endpoint: &str,
    setup: Setup,
) -> Result<WorkerHandle, Error> {
    setup.registry.validated()?;
    if let Some(f) = setup.registry.infos_where_direct(true).first() {
        return Err(Error::Config(format!(
            "'{}' is registered as direct, which only an RpcServer can run (on its broker \
             thread); a worker process has none",
            f.name
        )));
    }
    if setup.threads == 0 {
        return Err(Error::Config("a worker needs at least one thread".into()));
    }
    if setup.heartbeat_interval.is_zero() || setup.heartbeat_liveness == 0 {
        return Err(Error::Config(
            "heartbeat interval and liveness must be positive".into(),
        ));
    }
    let grace = setup.grace;
    let refused = Arc::new(Mutex::new(None));
    let replies_name = transport::unique_inproc("replies");
    let replies = transport::bind_pull(ctx, &replies_name)?;
    let dealer = transport::connect_worker_watched(ctx, endpoint, &setup.tcp)?;
    let registry = Arc::new(setup.registry.clone());
    let mut executors = Vec::with_capacity(setup.threads);
    for index in 0..setup.threads {
        let (tx, rx) = mpsc::channel::<Job>();
        let push = transport::connect_push(ctx, &replies_name)?;
        let registry = Arc::clone(&registry);
        let thread = std::thread::Builder::new()
            .name(format!("zmq-rpc-exec-{index}"))
            .spawn(move || execute(index, &rx, &push, &registry))
            .map_err(|e| Error::Transport(format!("cannot start an executor thread: {e}")))?;
        executors.push((tx, thread));
    }
    let (senders, threads): (Vec<_>, Vec<_>) = executors.into_iter().unzip();
    let channels = Channels {
        dealer,
        refused: Arc::clone(&refused),
        replies,
    };
    let actor = spawn_loop(ctx, endpoint, setup, channels, senders, threads)?;
    Ok(WorkerHandle {
        actor,
        grace,
        refused,
    })
}

/// The sockets a socket thread owns besides its control pipe, and where it reports a
/// refusal.
struct Channels {
    /// The DEALER to the broker, with the watch on its handshakes (TCP only).
    dealer: transport::Watched,
    refused: Arc<Mutex<Option<Error>>>,
    /// The executors' replies.
    replies: zmq::Socket,
}

/// Starts a socket thread.
fn spawn_loop(
    ctx: &zmq::Context,
    endpoint: &str,
    setup: Setup,
    channels: Channels,
    senders: Vec<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
) -> Result<Actor, Error> {
    let thread_ctx = ctx.clone();
    let endpoint = endpoint.to_owned();
    Actor::spawn(ctx, "zmq-rpc-worker", move |control| {
        let now = Instant::now();
        let mut socket_loop = SocketLoop {
            ctx: thread_ctx,
            endpoint,
            setup,
            dealer: channels.dealer,
            from_broker: transport::FrameReader::default(),
            refused: channels.refused,
            replies: channels.replies,
            control,
            idle: (0..senders.len()).rev().collect(),
            senders,
            backlog: VecDeque::new(),
            broker_expires: now,
            next_heartbeat: now,
            reconnects: 0,
            draining: false,
            connection: 0,
            running_on: vec![0; threads.len()],
        };
        socket_loop.register(now);
        socket_loop.run(threads);
    })
}

struct Job {
    key: u64,
    call: Call,
    deadline: Option<Instant>,
    /// The connection (see `SocketLoop::connection`) the request came on.
    connection: u64,
}

/// Runs a job's call, unless its deadline passed while it waited.
fn run_job(registry: &Registry, deadline: Option<Instant>, call: Call) -> Result<Value, Error> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(Error::Timeout(
            "the deadline passed before the call started".into(),
        )),
        _ => registry.run(call),
    }
}

fn execute(index: usize, jobs: &mpsc::Receiver<Job>, push: &zmq::Socket, registry: &Registry) {
    while let Ok(job) = jobs.recv() {
        let outcome = run_job(registry, job.deadline, job.call);
        let mut frames = vec![index.to_string().into_bytes()];
        frames.extend(protocol::encode_worker_message(&WorkerMessage::Reply {
            key: job.key,
            outcome,
        }));
        if let Err(e) = push.send_multipart(frames, 0) {
            tracing::error!(error = %e, "executor cannot hand back a reply");
            return;
        }
    }
}

struct SocketLoop {
    ctx: zmq::Context,
    endpoint: String,
    setup: Setup,
    /// The DEALER to the broker, with the watch on its handshakes (TCP only): a refused
    /// handshake stops the worker.
    dealer: transport::Watched,
    /// Receives broker messages into buffers kept from one message to the next.
    from_broker: transport::FrameReader,
    /// Where a refusal is reported to the handle.
    refused: Arc<Mutex<Option<Error>>>,
    /// The executors' replies.
    replies: zmq::Socket,
    control: zmq::Socket,
    senders: Vec<mpsc::Sender<Job>>,
    idle: Vec<usize>,
    /// Requests that arrived while every executor was busy (after a reconnect the broker
    /// may not know about calls still running from before).
    backlog: VecDeque<Job>,
    broker_expires: Instant,
    next_heartbeat: Instant,
    reconnects: u32,
    /// Stopping: told the broker DRAIN (again after any reconnect).
    draining: bool,
    /// Generation of `dealer`, bumped on every reconnect. A reply to a request of an
    /// earlier connection must not reach the new broker: its key may name a different
    /// request there (keys are per broker).
    connection: u64,
    /// Per executor: the connection of the request it runs.
    running_on: Vec<u64>,
}

impl SocketLoop {
    fn send(&self, msg: &WorkerMessage) {
        if let Err(e) = transport::send_frames(
            self.dealer.socket(),
            protocol::encode_worker_message(msg),
            zmq::DONTWAIT,
        ) {
            tracing::warn!(error = %e, "cannot send to the broker");
        }
    }

    /// Sends READY (with DONTWAIT: before the connection is up it waits in the pipe).
    fn register(&mut self, now: Instant) {
        self.send(&WorkerMessage::Ready(Ready {
            password: self.setup.password.clone(),
            name: self.setup.name.clone(),
            capacity: u32::try_from(self.setup.threads).unwrap_or(u32::MAX),
            heartbeat_ms: u64::try_from(self.setup.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            functions: self.setup.registry.infos(),
        }));
        if self.draining {
            self.send(&WorkerMessage::Drain);
        }
        self.broker_expires = now + self.setup.heartbeat_interval * self.setup.heartbeat_liveness;
        self.next_heartbeat = now + self.setup.heartbeat_interval;
    }

    fn run(mut self, threads: Vec<JoinHandle<()>>) {
        tracing::info!(endpoint = %self.endpoint, threads = self.setup.threads, "worker started");
        // Set when asked to stop: the broker has been told DRAIN, and the loop goes on
        // until every call has been answered or this instant passes.
        let mut stop_by: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let Some(end) = stop_by {
                if self.is_idle() || now >= end {
                    break;
                }
            }
            let wake = self.next_heartbeat.min(self.broker_expires);
            let timeout = wake.saturating_duration_since(now).as_millis() as i64;
            let mut items = Vec::with_capacity(4);
            items.push(self.control.as_poll_item(zmq::POLLIN));
            items.push(self.dealer.socket().as_poll_item(zmq::POLLIN));
            items.push(self.replies.as_poll_item(zmq::POLLIN));
            if let Some(watch) = self.dealer.watch() {
                items.push(watch.socket().as_poll_item(zmq::POLLIN));
            }
            if let Err(e) = zmq::poll(&mut items, timeout.max(1)) {
                tracing::error!(error = %e, "worker poll failed");
                break;
            }
            let (stop, broker, replies, handshake) = (
                items[0].is_readable(),
                items[1].is_readable(),
                items[2].is_readable(),
                items.get(3).is_some_and(zmq::PollItem::is_readable),
            );
            drop(items);
            if handshake {
                if let Some(why) = self
                    .dealer
                    .watch()
                    .and_then(transport::HandshakeWatch::refusal)
                {
                    self.refuse(why);
                }
            }
            if stop && stop_by.is_none() {
                let _ = self.control.recv_bytes(zmq::DONTWAIT);
                tracing::info!(
                    running = self.senders.len() - self.idle.len(),
                    "worker draining"
                );
                self.draining = true;
                self.send(&WorkerMessage::Drain);
                stop_by = Some(Instant::now() + self.setup.grace);
            }
            if replies {
                self.forward_replies();
            }
            if broker {
                self.handle_broker_messages();
            }
            if self.is_refused() {
                break;
            }
            let now = Instant::now();
            if now >= self.next_heartbeat {
                self.send(&WorkerMessage::Heartbeat);
                self.next_heartbeat = now + self.setup.heartbeat_interval;
            }
            if now >= self.broker_expires && !self.reconnect() {
                break;
            }
        }
        self.finish(threads);
    }

    /// The broker refused this worker (at the handshake or for its secret): record why
    /// for the handle; the loop then stops.
    fn refuse(&mut self, why: String) {
        tracing::error!(endpoint = %self.endpoint, reason = %why, "the broker refused this worker; stopping");
        // Nothing queued for this broker will be taken: do not linger over it when the
        // socket closes (a refused worker should stop at once).
        let _ = self.dealer.socket().set_linger(0);
        if let Ok(mut slot) = self.refused.lock() {
            slot.get_or_insert(Error::Permission(why));
        }
    }

    fn is_refused(&self) -> bool {
        self.refused.lock().is_ok_and(|slot| slot.is_some())
    }

    fn is_idle(&self) -> bool {
        self.backlog.is_empty() && self.idle.len() == self.senders.len()
    }

    fn forward_replies(&mut self) {
        while let Ok(mut frames) = self.replies.recv_multipart(zmq::DONTWAIT) {
            if frames.is_empty() {
                continue;
            }
            let index_frame = frames.remove(0);
            if let Some(i) = std::str::from_utf8(&index_frame)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                self.idle.push(i);
                if self.running_on.get(i) != Some(&self.connection) {
                    tracing::debug!("dropping the reply to a request of an earlier connection");
                    self.start_backlog();
                    continue;
                }
            }
            if let Err(e) = transport::send_frames(self.dealer.socket(), frames, zmq::DONTWAIT) {
                tracing::warn!(error = %e, "cannot send a reply to the broker");
            }
            self.start_backlog();
        }
    }

    fn start_backlog(&mut self) {
        while !self.idle.is_empty() {
            let Some(job) = self.backlog.pop_front() else {
                return;
            };
            self.start(job);
        }
    }

    fn start(&mut self, job: Job) {
        match self.idle.pop() {
            Some(i) => {
                self.running_on[i] = job.connection;
                if let Err(mpsc::SendError(job)) = self.senders[i].send(job) {
                    // The executor died (it cannot panic: calls are caught); answer anyway.
                    self.send(&WorkerMessage::Reply {
                        key: job.key,
                        outcome: Err(Error::Unavailable("the executor thread is gone".into())),
                    });
                }
            }
            None => self.backlog.push_back(job),
        }
    }

    fn handle_broker_messages(&mut self) {
        while self.from_broker.recv(self.dealer.socket()) {
            let now = Instant::now();
            self.broker_expires =
                now + self.setup.heartbeat_interval * self.setup.heartbeat_liveness;
            match protocol::decode_broker_message(self.from_broker.frames()) {
                Ok(BrokerMessage::Request { key, call }) => {
                    self.reconnects = 0;
                    let deadline = call.timeout_ms.map(|ms| now + Duration::from_millis(ms));
                    let connection = self.connection;
                    self.start(Job {
                        key,
                        call,
                        deadline,
                        connection,
                    });
                }
                Ok(BrokerMessage::Heartbeat) => self.reconnects = 0,
                Ok(BrokerMessage::Disconnect { reason })
                    if reason == protocol::DISCONNECT_WRONG_SECRET =>
                {
                    // Retrying with the same secret cannot help: stop and say why.
                    self.refuse("the broker refused this worker's secret (wrong password)".into());
                    return;
                }
                Ok(BrokerMessage::Disconnect { reason }) => {
                    // Register again on a fresh socket, after the reconnect backoff: a
                    // broker that keeps refusing (wrong password, shutting down) is
                    // retried ever more slowly, never in a tight loop.
                    tracing::warn!(%reason, "the broker disconnected this worker");
                    self.broker_expires = now;
                }
                Err(e) => tracing::warn!(error = %e, "dropping malformed broker message"),
            }
        }
    }

    /// Replaces the socket after the broker went silent, waiting with exponential
    /// backoff and jitter first. Returns `false` when asked to stop meanwhile.
    fn reconnect(&mut self) -> bool {
        let exp = RECONNECT_BASE.saturating_mul(1u32 << self.reconnects.min(16));
        let cap = exp.min(RECONNECT_CAP);
        // "Equal jitter": half fixed, half random, so workers spread out but never spin.
        let wait = cap / 2 + cap.mul_f64(fastrand::f64() / 2.0);
        self.reconnects = self.reconnects.saturating_add(1);
        tracing::warn!(endpoint = %self.endpoint, wait_ms = wait.as_millis() as u64, "broker silent; reconnecting");
        if self
            .control
            .poll(zmq::POLLIN, wait.as_millis() as i64)
            .unwrap_or(0)
            > 0
        {
            return false;
        }
        match transport::connect_worker_watched(&self.ctx, &self.endpoint, &self.setup.tcp) {
            Ok(dealer) => {
                self.dealer = dealer;
                self.connection += 1;
                // Requests of the earlier connection that never started: that broker
                // is gone or has answered them already.
                self.backlog.clear();
                self.register(Instant::now());
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reconnect");
                self.broker_expires = Instant::now() + wait;
            }
        }
        true
    }

    /// Leaves: answers what was not started, says goodbye, joins the executors (or, if
    /// calls still run after the grace period, leaves their threads behind).
    fn finish(mut self, threads: Vec<JoinHandle<()>>) {
        for job in std::mem::take(&mut self.backlog) {
            self.send(&WorkerMessage::Reply {
                key: job.key,
                outcome: Err(Error::Unavailable("the worker is shutting down".into())),
            });
        }
        if !self.is_refused() {
            self.send(&WorkerMessage::Disconnect {
                reason: "worker shutting down".into(),
            });
        }
        let all_idle = self.idle.len() == self.senders.len();
        self.senders.clear(); // closes the channels: idle executors return
        if all_idle {
            for t in threads {
                let _ = t.join();
            }
        } else {
            tracing::warn!(
                "calls still running after the grace period; leaving their threads behind"
            );
        }
        tracing::info!(endpoint = %self.endpoint, "worker stopped");
    }
}
