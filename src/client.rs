//! The synchronous client, and the macro that declares typed remote interfaces.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{self, Env};
use crate::error::Error;
use crate::protocol::{self, Reply, Request};
use crate::transport::{self, Curve, HandshakeWatch, TcpOptions, Watched};

/// A connection to an RPC server (or standalone broker) that calls functions by name.
///
/// Calls are synchronous. The client is `Send` but not `Sync`: it owns one socket, so
/// use one client per thread. One thread can still keep many calls in flight on one
/// client with [`RpcClient::submit`] and [`Pending::wait`] (no async runtime needed).
///
/// The clients of a process share one ZeroMQ context, as libzmq advises: each client
/// costs a connection, not an I/O thread of its own (a second context starts only past
/// 300 clients at once; a child process after `fork` gets its own).
///
/// Each reply of [`protocol::ACK_MIN_BYTES`] or more is acknowledged on the client's
/// next request (`docs/protocol.md` 4.11), so the server frees what it kept for a retry
/// of that call instead of holding it until the retry window ends.
///
/// ```no_run
/// use zmq_rpc::RpcClient;
///
/// let client = RpcClient::new("geheim", "localhost", 8421);
/// let sum: i64 = client.call("add", (5, 7))?;
/// assert_eq!(sum, 12);
/// # Ok::<(), zmq_rpc::Error>(())
/// ```
pub struct RpcClient {
    endpoint: String,
    password: String,
    timeout: Duration,
    retries: u32,
    backoff_base: Duration,
    backoff_cap: Duration,
    attempt_timeout: Option<Duration>,
    tcp: TcpOptions,
    curve_server_key: Option<String>,
    /// This client's own CURVE key pair (public, secret), Z85.
    curve_keypair: Option<(String, String)>,
    problem: Option<Error>,
    /// The context this client shares with the process's others.
    ctx: transport::ClientContext,
    /// The connection, once there is one, with the watch on its handshakes: a
    /// refused handshake fails the call at once.
    conn: RefCell<Option<Watched>>,
    /// Receives replies into buffers kept from one to the next.
    reader: RefCell<transport::FrameReader>,
    /// The body of the request being sent, kept for the next.
    body: RefCell<Vec<u8>>,
    next_id: Cell<u64>,
    /// Distinguishes this client's ids from an earlier client's replies on a reused port.
    id_prefix: String,
    /// Submitted calls (by id) not yet waited for, with their reply once it came in
    /// while another call was being waited for.
    inflight: RefCell<HashMap<String, Option<Result<Value, Error>>>>,
    /// Bumped whenever the socket is dropped: a submitted call sent on an earlier socket
    /// can never get its reply.
    generation: Cell<u64>,
    /// Long strings travel as data frames (see [`RpcClient::data_frames`]).
    data_frames: bool,
    /// Ids of replies of at least [`protocol::ACK_MIN_BYTES`] received on the current
    /// socket and not yet acknowledged: the next request carries them (`ack`), so the
    /// server can release what it kept for their retries.
    acks: RefCell<Vec<Value>>,
}

/// At most this many acknowledgements wait for the next request; older ones are dropped
/// (the server then keeps those replies until their retry window ends, as without acks).
const MAX_ACKS: usize = 256;

/// How one attempt of a call ended.
enum Attempt {
    /// The server answered (with a result or an error).
    Reply(Result<Value, Error>),
    /// No answer in time, or the send failed: the request may not have arrived.
    NoReply(Error),
    /// A local failure that retrying cannot fix.
    Failed(Error),
}

/// Exponential backoff with "equal jitter": half of `base * 2^retry` (capped) fixed,
/// half random, so clients spread out after a shared failure but never spin.
/// The longest a waiting call blocks in a receive before it reads the handshake watch
/// again (see [`RpcClient::receive`]).
const WATCH_SLICE: Duration = Duration::from_millis(100);

fn backoff(base: Duration, cap: Duration, retry: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << retry.min(16)).min(cap);
    exp / 2 + exp.mul_f64(fastrand::f64() / 2.0)
}

/// One entry of `list_functions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFunction {
    /// The registered name.
    pub name: String,
    /// The description, empty when none was given.
    #[serde(default)]
    pub description: String,
    /// Number of positional parameters; `None` for a raw function.
    #[serde(default)]
    pub params: Option<u32>,
    /// Declared parameter names (keyword arguments), possibly empty.
    #[serde(default)]
    pub param_names: Vec<String>,
    /// Whether the function is registered as idempotent.
    #[serde(default)]
    pub idempotent: bool,
    /// How many workers serve it.
    #[serde(default)]
    pub workers: u32,
}

impl RpcClient {
    /// A client for `tcp://HOST:PORT`. Nothing is sent until the first call. The timeout
    /// and CURVE key come from `ZMQ_RPC_TIMEOUT_MS` and `ZMQ_RPC_CURVE_SERVER_KEY`
    /// (environment or `.env`) unless set with the methods below.
    pub fn new(password: impl Into<String>, host: &str, port: u16) -> RpcClient {
        RpcClient::with_endpoint(password, &config::tcp_endpoint(host, port))
    }

    /// A client for any ZeroMQ endpoint (`tcp://`, `ipc://`).
    pub fn with_endpoint(password: impl Into<String>, endpoint: &str) -> RpcClient {
        let (env, mut problem) = match Env::load() {
            Ok(env) => (env, None),
            Err(e) => (Env::default(), Some(e)),
        };
        let curve_keypair = match own_keypair_from_env(&env) {
            Ok(pair) => pair,
            Err(e) => {
                problem = problem.or(Some(e));
                None
            }
        };
        RpcClient {
            endpoint: endpoint.to_owned(),
            password: password.into(),
            timeout: env.timeout.unwrap_or(config::DEFAULT_TIMEOUT),
            retries: config::DEFAULT_RETRIES,
            backoff_base: config::DEFAULT_BACKOFF_BASE,
            backoff_cap: config::DEFAULT_BACKOFF_CAP,
            attempt_timeout: None,
            tcp: TcpOptions {
                max_message_size: config::DEFAULT_MAX_MESSAGE_SIZE,
                curve: Curve::Off,
            },
            curve_server_key: env.curve_server_key,
            curve_keypair,
            problem,
            ctx: transport::client_context(),
            conn: RefCell::new(None),
            reader: RefCell::new(transport::FrameReader::default()),
            body: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
            id_prefix: format!("{:016x}", fastrand::u64(..)),
            inflight: RefCell::new(HashMap::new()),
            acks: RefCell::new(Vec::new()),
            generation: Cell::new(0),
            data_frames: true,
        }
    }

    /// How long a call may take in all, retries included; sent to the server as the
    /// call's deadline. Defaults to `ZMQ_RPC_TIMEOUT_MS` or 5000 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often a call is tried again when the request may not have been answered: no
    /// reply within the attempt timeout, a failed send, or `OverloadError`. Never after
    /// an answer such as `NameError`, `PermissionError` or `RuntimeError`. Retries stay
    /// within the call's timeout and reuse its id, so the server runs it at most once.
    /// Defaults to 3; 0 turns retries off.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Backoff between retries: `base * 2^retry`, capped at `cap`, half of it random
    /// (an `OverloadError`'s `retry_after` is waited at least). Defaults to 100 ms and 1 s.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap;
        self
    }

    /// How long one attempt waits for its reply before the call is retried. Defaults to
    /// the timeout divided by (retries + 1). A retry of a call that is still running
    /// does not start it again: it waits for the running one.
    pub fn attempt_timeout(mut self, wait: Duration) -> Self {
        self.attempt_timeout = Some(wait);
        self
    }

    /// Encrypts with CURVE, given the server's public key (Z85). Defaults to
    /// `ZMQ_RPC_CURVE_SERVER_KEY`, or plain TCP when that is unset.
    pub fn curve_server_key(mut self, public_z85: impl Into<String>) -> Self {
        self.curve_server_key = Some(public_z85.into());
        *self.conn.get_mut() = None;
        self
    }

    /// This client's own long-term CURVE key pair (Z85), for servers that admit only
    /// listed keys. Defaults to `ZMQ_RPC_CURVE_PUBLIC_KEY` with
    /// `ZMQ_RPC_CURVE_SECRET_KEY`, or a fresh pair per process.
    pub fn curve_keypair(
        mut self,
        public_z85: impl Into<String>,
        secret_z85: impl Into<String>,
    ) -> Self {
        self.curve_keypair = Some((public_z85.into(), secret_z85.into()));
        *self.conn.get_mut() = None;
        self
    }

    /// Whether long strings travel as data frames (`docs/protocol.md` 4.10): string
    /// arguments of at least 16 KiB ([`protocol::FRAME_MIN_BYTES`]) are sent as raw
    /// text after the request instead of inside its JSON, and the server may return a
    /// long string result the same way. That saves escaping and parsing them, which is
    /// most of the cost of a large payload. Turn it off for a server that only speaks
    /// the single-frame protocol. Defaults to on.
    pub fn data_frames(mut self, on: bool) -> Self {
        self.data_frames = on;
        self
    }

    /// Largest reply accepted. Defaults to 4 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.tcp.max_message_size = bytes;
        *self.conn.get_mut() = None;
        self
    }

    /// The endpoint this client calls.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls `function` with positional `args` and converts the result to `T`.
    ///
    /// `args` is a tuple (`(5, 7)`, `(x,)`, `()`), an array or `Vec`, or a single
    /// value for a one-parameter function. (A `Vec` is spread into positional
    /// arguments; wrap it as `(v,)` to pass one list.)
    ///
    /// # Errors
    /// Every [`Error`] kind: the server's (`Name`, `Permission`, `Runtime`, `Type`, ...),
    /// `Timeout` when no reply comes in time, `Type` when the result does not fit `T`.
    pub fn call<T: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<T, Error> {
        // A retry encodes the arguments again: the first send hands long strings over
        // to the socket instead of copying them.
        let again = || positional(&args);
        let value = self.call_again(function, positional(&args)?, Map::new(), &again)?;
        convert(function, value)
    }

    /// Calls `function` with JSON positional and keyword arguments; returns the raw result.
    ///
    /// Retries (see [`RpcClient::retries`]) reuse the request's id, so the server runs
    /// the call at most once.
    ///
    /// # Errors
    /// As [`RpcClient::call`].
    pub fn call_with(
        &self,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, Error> {
        // A send hands long strings over to the socket: a retry needs a copy of them.
        let kept = (self.retries > 0 && protocol::has_long_strings(&args, self.frame_min()))
            .then(|| args.clone());
        let again = || Ok(kept.clone().unwrap_or_default());
        self.call_again(function, args, kwargs, &again)
    }

    /// [`RpcClient::call_with`], where `again` gives the positional arguments anew for a
    /// retry after a send that took long strings out of them.
    fn call_again(
        &self,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        again: &dyn Fn() -> Result<Vec<Value>, Error>,
    ) -> Result<Value, Error> {
        if let Some(e) = &self.problem {
            return Err(e.clone());
        }
        // The clock is read once per attempt here and once per wait below: on a fast
        // call each read is a noticeable part of the client's own time.
        let mut now = Instant::now();
        let deadline = now + self.timeout;
        let id = Value::String(self.new_id());
        let mut request = Request {
            id: Some(id),
            password: self.password.clone(),
            function: function.to_owned(),
            args,
            kwargs,
            timeout_ms: None,
            accept_frames: self.data_frames,
            ack: Vec::new(),
        };
        let per_attempt = self
            .attempt_timeout
            .unwrap_or_else(|| self.timeout / (self.retries + 1));
        let mut attempts = 0;
        let mut retries_left = self.retries;
        // The last send took long strings out of `request.args`.
        let mut spent = false;
        loop {
            let left = deadline.saturating_duration_since(now);
            // The server's deadline is the whole call's, not this attempt's: a retry that
            // finds the call still running waits for it instead of starting it again.
            request.timeout_ms = Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
            // The last attempt waits for all the time that is left.
            let wait = if retries_left == 0 {
                left
            } else {
                per_attempt.max(Duration::from_millis(1)).min(left)
            };
            if spent {
                request.args = again()?;
            }
            spent = protocol::has_long_strings(&request.args, self.frame_min());
            attempts += 1;
            let (failure, hint) = match self.attempt(&mut request, now + wait, wait) {
                Attempt::Reply(Err(Error::Overloaded {
                    message,
                    retry_after,
                })) => (
                    Error::Overloaded {
                        message,
                        retry_after,
                    },
                    retry_after,
                ),
                Attempt::Reply(outcome) => return outcome,
                Attempt::Failed(e) => return Err(e),
                Attempt::NoReply(why) => (why, Duration::ZERO),
            };
            now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if retries_left == 0 || left.is_zero() {
                return Err(match failure {
                    Error::Timeout(_) => Error::Timeout(format!(
                        "no reply from {} within {} ms ({attempts} attempt(s))",
                        self.endpoint,
                        self.timeout.as_millis(),
                    )),
                    other => other,
                });
            }
            let pause = backoff(self.backoff_base, self.backoff_cap, attempts - 1).max(hint);
            if pause >= left {
                // No time for the backoff: one last attempt now, waiting for the rest.
                retries_left = 0;
                continue;
            }
            retries_left -= 1;
            tracing::debug!(function, attempts, pause_ms = pause.as_millis() as u64, error = %failure, "retrying");
            std::thread::sleep(pause);
            now = Instant::now();
        }
    }

    fn new_id(&self) -> String {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        // Sized once: `format!` would allocate, then grow the string.
        let mut digits = itoa::Buffer::new();
        let n = digits.format(n);
        let mut id = String::with_capacity(self.id_prefix.len() + 1 + n.len());
        id.push_str(&self.id_prefix);
        id.push('-');
        id.push_str(n);
        id
    }

    /// Forgets the socket (and with it every reply still due on it, and the
    /// acknowledgements that only mean something on it).
    fn drop_socket(&self, slot: &mut Option<Watched>) {
        *slot = None;
        self.generation.set(self.generation.get() + 1);
        self.acks.borrow_mut().clear();
    }

    /// Notes a received reply of `size` bytes for acknowledgement, if it is worth one.
    fn note_ack(&self, id: &Value, size: usize) {
        if size < protocol::ACK_MIN_BYTES || id.is_null() {
            return;
        }
        let mut acks = self.acks.borrow_mut();
        if acks.len() == MAX_ACKS {
            acks.remove(0);
        }
        acks.push(id.clone());
    }

    /// The acknowledgements for the request about to be sent on the current socket.
    fn take_acks(&self) -> Vec<Value> {
        std::mem::take(&mut *self.acks.borrow_mut())
    }

    /// Keeps a reply to a submitted call that is not being waited for right now; drops
    /// any other (a late reply to a call that timed out or was abandoned).
    fn stash(&self, reply: Reply) {
        let mut inflight = self.inflight.borrow_mut();
        match reply.id.as_str().and_then(|id| inflight.get_mut(id)) {
            Some(slot @ None) => *slot = Some(reply.outcome),
            _ => tracing::debug!(id = %reply.id, "ignoring a late reply to an earlier call"),
        }
    }

    /// Receives one well-formed reply, waiting until `until`; `Ok(None)` on timeout.
    /// A refusal at the CURVE handshake is `PermissionError`.
    ///
    /// `queued`: replies are likely waiting already (pipelined calls), so try to take one
    /// before waiting; a synchronous call waits first (its reply cannot be there yet).
    fn receive(
        &self,
        conn: &Watched,
        until: Instant,
        mut queued: bool,
    ) -> Result<Option<Reply>, Error> {
        let socket = conn.socket();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let flags = if queued {
                zmq::DONTWAIT
            } else if handshake_done(conn)? {
                // The connection is up and accepted: block in the receive itself, as a
                // REQ socket does (one wait on the socket's signal instead of a
                // `zmq_poll` over the socket and its watch), reading the watch between
                // slices so that a refusal after a reconnect still ends the wait.
                let slice = left.min(WATCH_SLICE).as_millis();
                socket.set_rcvtimeo(i32::try_from(slice).unwrap_or(i32::MAX))?;
                0
            } else {
                if wait_readable(conn, left)?? == 0 {
                    return Ok(None);
                }
                zmq::DONTWAIT
            };
            let mut reader = self.reader.borrow_mut();
            match reader.recv_with(socket, flags) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) if queued => {
                    queued = false;
                    continue;
                }
                Err(zmq::Error::EAGAIN) if flags == 0 && !left.is_zero() => continue,
                Err(zmq::Error::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let count = reader.frames().len();
            if count < 2 || !reader.frames()[0].is_empty() {
                tracing::warn!(
                    frames = count,
                    "ignoring a reply that is not [empty, body, data...]"
                );
                continue;
            }
            let data: Vec<Vec<u8>> = (2..count).map(|i| reader.take(i)).collect();
            let body = &reader.frames()[1];
            let size = body.len() + data.iter().map(Vec::len).sum::<usize>();
            let reply = protocol::decode_reply_frames(body, data)?;
            self.note_ack(&reply.id, size);
            return Ok(Some(reply));
        }
    }

    /// The shortest string argument sent in a data frame.
    fn frame_min(&self) -> usize {
        if self.data_frames {
            protocol::FRAME_MIN_BYTES
        } else {
            usize::MAX
        }
    }

    /// Sends `request` on a DEALER: the empty delimiter, the body (written into a buffer
    /// kept from one request to the next; see [`transport::send_kept`]), and the data
    /// frames, which are the long strings moved out of `request.args`.
    fn send(&self, socket: &zmq::Socket, request: &mut Request) -> zmq::Result<()> {
        let mut body = self.body.borrow_mut();
        let data = protocol::write_request_frames(request, self.frame_min(), &mut body);
        let more = if data.is_empty() { 0 } else { zmq::SNDMORE };
        socket.send(&[][..], zmq::DONTWAIT | zmq::SNDMORE)?;
        transport::send_kept(socket, &mut body, zmq::DONTWAIT | more)?;
        transport::send_frames(socket, data, zmq::DONTWAIT)
    }

    /// Sends `request` once (with the acknowledgements due on the socket) and waits
    /// until `until` (`wait` from now) for its reply.
    fn attempt(&self, request: &mut Request, until: Instant, wait: Duration) -> Attempt {
        let mut slot = self.conn.borrow_mut();
        if slot.is_none() {
            match self.connect() {
                Ok(c) => *slot = Some(c),
                Err(e) => return Attempt::Failed(e),
            }
        }
        let Some(conn) = slot.as_ref() else {
            return Attempt::Failed(Error::Transport("no socket".into()));
        };
        request.ack = self.take_acks();
        if let Err(e) = self.send(conn.socket(), &mut *request) {
            self.drop_socket(&mut slot);
            return Attempt::NoReply(Error::Transport(format!(
                "cannot send to {}: {e}",
                self.endpoint
            )));
        }
        loop {
            match self.receive(conn, until, false) {
                Err(refused @ Error::Permission(_)) => {
                    // Refused at the handshake: the next attempt needs a fresh socket.
                    self.drop_socket(&mut slot);
                    return Attempt::Failed(refused);
                }
                Ok(None) => {
                    // Drop the socket: a request still queued for an unreachable server
                    // must not be delivered later, nor late replies reach the next call.
                    self.drop_socket(&mut slot);
                    return Attempt::NoReply(Error::Timeout(format!(
                        "no reply from {} within {} ms",
                        self.endpoint,
                        wait.as_millis()
                    )));
                }
                Ok(Some(reply)) if Some(&reply.id) == request.id.as_ref() => {
                    return Attempt::Reply(reply.outcome)
                }
                Ok(Some(reply)) => self.stash(reply),
                Err(e) => return Attempt::Failed(e),
            }
        }
    }

    /// Sends a call without waiting for its reply, so that one thread can keep many
    /// calls in flight on this client's one connection; [`Pending::wait`] collects the
    /// result. Replies are matched to calls by id, whatever order they come in.
    ///
    /// `args` as for [`RpcClient::call`]. A submitted call is sent once (no retries) and
    /// carries the client's timeout as its deadline; its `wait` returns `TimeoutError`
    /// when no reply came by then. Dropping a [`Pending`] abandons the call: its reply
    /// is discarded when it comes.
    ///
    /// ```no_run
    /// let client = zmq_rpc::RpcClient::new("geheim", "localhost", 8421);
    /// let pending: Vec<_> = (0..64)
    ///     .map(|i| client.submit("add", (i, 1)))
    ///     .collect::<Result<_, _>>()?;
    /// for (i, p) in pending.into_iter().enumerate() {
    ///     assert_eq!(p.wait_as::<i64>()?, i as i64 + 1);
    /// }
    /// # Ok::<(), zmq_rpc::Error>(())
    /// ```
    ///
    /// # Errors
    /// `Type` when the arguments cannot be encoded, `Transport` when the request cannot
    /// be sent (the connection's send queue is full, say), `Config` for a bad setting.
    pub fn submit(&self, function: &str, args: impl Serialize) -> Result<Pending<'_>, Error> {
        self.submit_with(function, positional(args)?, Map::new())
    }

    /// [`RpcClient::submit`] with JSON positional and keyword arguments.
    ///
    /// # Errors
    /// As [`RpcClient::submit`].
    pub fn submit_with(
        &self,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Pending<'_>, Error> {
        if let Some(e) = &self.problem {
            return Err(e.clone());
        }
        let deadline = Instant::now() + self.timeout;
        let id = self.new_id();
        let mut request = Request {
            id: Some(Value::String(id.clone())),
            password: self.password.clone(),
            function: function.to_owned(),
            args,
            kwargs,
            timeout_ms: Some(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)),
            accept_frames: self.data_frames,
            ack: Vec::new(),
        };
        let mut slot = self.conn.borrow_mut();
        // A refused connection stays refused: try a fresh one (the server's allow-list
        // may have changed since).
        if slot
            .as_ref()
            .and_then(Watched::watch)
            .is_some_and(HandshakeWatch::is_refused)
        {
            self.drop_socket(&mut slot);
        }
        if slot.is_none() {
            *slot = Some(self.connect()?);
        }
        let Some(conn) = slot.as_ref() else {
            return Err(Error::Transport("no socket".into()));
        };
        request.ack = self.take_acks();
        self.send(conn.socket(), &mut request)
            .map_err(|e| Error::Transport(format!("cannot send to {}: {e}", self.endpoint)))?;
        self.inflight.borrow_mut().insert(id.clone(), None);
        Ok(Pending {
            client: self,
            id,
            function: function.to_owned(),
            deadline,
            generation: self.generation.get(),
        })
    }

    /// The built-in health check: the server's name.
    ///
    /// # Errors
    /// As [`RpcClient::call`].
    pub fn ping(&self) -> Result<String, Error> {
        self.call(protocol::BUILTIN_PING, ())
    }

    /// The built-in introspection call: every registered function, sorted by name.
    ///
    /// # Errors
    /// As [`RpcClient::call`].
    pub fn list_functions(&self) -> Result<Vec<RemoteFunction>, Error> {
        self.call(protocol::BUILTIN_LIST, ())
    }

    fn connect(&self) -> Result<Watched, Error> {
        transport::require_safe_libzmq()?;
        let mut tcp = self.tcp.clone();
        if let Some(key) = &self.curve_server_key {
            let own = self.curve_keypair.as_ref();
            tcp.curve =
                Curve::client_with_keys(key, own.map(|p| p.0.as_str()), own.map(|p| p.1.as_str()))?;
        }
        transport::connect_client_watched(self.ctx.get(), &self.endpoint, &tcp)
    }
}

/// Reads the handshake watch of `conn`: `Ok(true)` when the connection is up and
/// accepted (or needs no watch), `Err` when the server refused it.
fn handshake_done(conn: &Watched) -> Result<bool, Error> {
    let Some(watch) = conn.watch() else {
        return Ok(true);
    };
    // Up and accepted when last read: a refusal can only follow a reconnect, and
    // between the slices of a wait it is noticed within WATCH_SLICE anyway; so the
    // events are read at most that often, not at every call (each read costs a
    // syscall).
    if watch.is_established() && watch.read_within(WATCH_SLICE) {
        return Ok(true);
    }
    if let Some(why) = watch.refusal() {
        return Err(Error::Permission(why));
    }
    Ok(watch.is_established())
}

/// Waits up to `wait` for the socket of `conn` to be readable, like `socket.poll`.
/// `Err` when the server refused the security handshake meanwhile (wrong or unlisted
/// key, or CURVE on one side only): no reply will ever come, so the call fails at once.
fn wait_readable(conn: &Watched, wait: Duration) -> Result<zmq::Result<i32>, Error> {
    let socket = conn.socket();
    let Some(watch) = conn.watch() else {
        return Ok(socket.poll(zmq::POLLIN, wait.as_millis() as i64));
    };
    let deadline = Instant::now() + wait;
    loop {
        if let Some(why) = watch.refusal() {
            return Err(Error::Permission(why));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut items = [
            socket.as_poll_item(zmq::POLLIN),
            watch.socket().as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, left.as_millis() as i64) {
            Err(e) => return Ok(Err(e)),
            Ok(_) if items[0].is_readable() => return Ok(Ok(1)),
            Ok(_) if items[1].is_readable() => continue,
            Ok(_) => return Ok(Ok(0)),
        }
    }
}

/// The client's own key pair from `ZMQ_RPC_CURVE_PUBLIC_KEY` and
/// `ZMQ_RPC_CURVE_SECRET_KEY`. The secret alone is a server's setting (a shared `.env`)
/// and is ignored here; the public key alone is a mistake.
fn own_keypair_from_env(env: &Env) -> Result<Option<(String, String)>, Error> {
    match (&env.curve_public_key, &env.curve_secret_key) {
        (Some(p), Some(s)) => Ok(Some((p.clone(), s.clone()))),
        (Some(_), None) => Err(Error::Config(
            "ZMQ_RPC_CURVE_PUBLIC_KEY is set without ZMQ_RPC_CURVE_SECRET_KEY".into(),
        )),
        _ => Ok(None),
    }
}

/// Turns `call`'s `args` into positional arguments.
fn positional(args: impl Serialize) -> Result<Vec<Value>, Error> {
    match serde_json::to_value(args)
        .map_err(|e| Error::Type(format!("the arguments cannot be encoded as JSON: {e}")))?
    {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        single => Ok(vec![single]),
    }
}

/// Converts a call's JSON result to `T`.
fn convert<T: DeserializeOwned>(function: &str, value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| {
        Error::Type(format!(
            "the result of '{function}' does not fit the expected type: {e}"
        ))
    })
}

/// A call sent with [`RpcClient::submit`] whose result has not been collected yet.
///
/// Dropping it abandons the call (its reply is discarded when it comes).
#[must_use = "a submitted call's result is only seen through `wait`"]
pub struct Pending<'c> {
    client: &'c RpcClient,
    id: String,
    function: String,
    deadline: Instant,
    generation: u64,
}

impl Pending<'_> {
    /// The request's id on the wire.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits for the call's result, keeping replies to other submitted calls of the same
    /// client that arrive meanwhile for their own `wait`.
    ///
    /// # Errors
    /// As [`RpcClient::call`]; `TimeoutError` when no reply came within the client's
    /// timeout from [`RpcClient::submit`], `TransportError` when the connection was
    /// replaced meanwhile (a synchronous call on the same client timed out), so the reply
    /// can no longer arrive.
    pub fn wait(self) -> Result<Value, Error> {
        let client = self.client;
        loop {
            if let Some(outcome) = client
                .inflight
                .borrow_mut()
                .get_mut(&self.id)
                .and_then(Option::take)
            {
                return outcome;
            }
            let slot = client.conn.borrow();
            let conn = match slot.as_ref() {
                Some(s) if client.generation.get() == self.generation => s,
                _ => {
                    return Err(Error::Transport(format!(
                        "the connection to {} was reset while '{}' was in flight",
                        client.endpoint, self.function
                    )))
                }
            };
            match client.receive(conn, self.deadline, true)? {
                None => {
                    return Err(Error::Timeout(format!(
                        "no reply from {} within {} ms",
                        client.endpoint,
                        client.timeout.as_millis()
                    )))
                }
                Some(reply) if reply.id.as_str() == Some(self.id.as_str()) => return reply.outcome,
                Some(reply) => client.stash(reply),
            }
        }
    }

    /// [`Pending::wait`], then converts the result to `T`.
    ///
    /// # Errors
    /// As [`Pending::wait`]; `TypeError` when the result does not fit `T`.
    pub fn wait_as<T: DeserializeOwned>(self) -> Result<T, Error> {
        let function = self.function.clone();
        convert(&function, self.wait()?)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.client.inflight.borrow_mut().remove(&self.id);
    }
}

/// Declares a typed interface to remote functions: a struct wrapping an [`RpcClient`]
/// with one method per function, named as the function is registered.
///
/// ```no_run
/// zmq_rpc::remote_interface! {
///     /// The seed's calculator.
///     pub struct Calculator {
///         /// Adds two numbers.
///         fn add(a: i64, b: i64) -> i64;
///         /// Multiplies, slowly.
///         fn mul(a: i64, b: i64) -> i64;
///     }
/// }
///
/// let calc = Calculator::new(zmq_rpc::RpcClient::new("geheim", "localhost", 8421));
/// println!("5 + 7 = {}", calc.add(5, 7)?);
/// # Ok::<(), zmq_rpc::Error>(())
/// ```
#[macro_export]
macro_rules! remote_interface {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                fn $method:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty ;
            )*
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            client: $crate::RpcClient,
        }

        impl $name {
            /// Wraps a client.
            $vis fn new(client: $crate::RpcClient) -> Self {
                Self { client }
            }

            /// The underlying client (for `ping`, `list_functions`, raw calls).
            #[allow(dead_code)]
            $vis fn client(&self) -> &$crate::RpcClient {
                &self.client
            }

            $(
                $(#[$fmeta])*
                $vis fn $method(&self, $($arg: $ty),*) -> $crate::Result<$ret> {
                    self.client.call(stringify!($method), ($($arg,)*))
                }
            )*
        }
    };
}
