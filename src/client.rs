//! The synchronous client, and the macro that declares typed remote interfaces.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{self, Env};
use crate::error::Error;
use crate::protocol::{self, Request};
use crate::transport::{self, Curve, TcpOptions};

/// A connection to an RPC server (or standalone broker) that calls functions by name.
///
/// Calls are synchronous. The client is `Send` but not `Sync`: it owns one socket, so
/// use one client per thread.
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
    ctx: zmq::Context,
    socket: RefCell<Option<zmq::Socket>>,
    /// Handshake events of `socket`: a refused handshake fails the call at once.
    watch: RefCell<Option<transport::HandshakeWatch>>,
    next_id: Cell<u64>,
    /// Distinguishes this client's ids from an earlier client's replies on a reused port.
    id_prefix: String,
}

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
            ctx: zmq::Context::new(),
            socket: RefCell::new(None),
            watch: RefCell::new(None),
            next_id: Cell::new(1),
            id_prefix: format!("{:016x}", fastrand::u64(..)),
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
        *self.socket.get_mut() = None;
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
        *self.socket.get_mut() = None;
        self
    }

    /// Largest reply accepted. Defaults to 4 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.tcp.max_message_size = bytes;
        *self.socket.get_mut() = None;
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
        let args = match serde_json::to_value(args)
            .map_err(|e| Error::Type(format!("the arguments cannot be encoded as JSON: {e}")))?
        {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            single => vec![single],
        };
        let value = self.call_with(function, args, Map::new())?;
        serde_json::from_value(value).map_err(|e| {
            Error::Type(format!(
                "the result of '{function}' does not fit the expected type: {e}"
            ))
        })
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
        if let Some(e) = &self.problem {
            return Err(e.clone());
        }
        let start = Instant::now();
        let deadline = start + self.timeout;
        let id = Value::String(format!("{}-{}", self.id_prefix, self.next_id.get()));
        self.next_id.set(self.next_id.get() + 1);
        let mut request = Request {
            id: Some(id),
            password: self.password.clone(),
            function: function.to_owned(),
            args,
            kwargs,
            timeout_ms: None,
        };
        let per_attempt = self
            .attempt_timeout
            .unwrap_or_else(|| self.timeout / (self.retries + 1));
        let mut attempts = 0;
        let mut retries_left = self.retries;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // The server's deadline is the whole call's, not this attempt's: a retry that
            // finds the call still running waits for it instead of starting it again.
            request.timeout_ms = Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
            // The last attempt waits for all the time that is left.
            let wait = if retries_left == 0 {
                left
            } else {
                per_attempt.max(Duration::from_millis(1)).min(left)
            };
            attempts += 1;
            let (failure, hint) = match self.attempt(&request, wait) {
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
            let left = deadline.saturating_duration_since(Instant::now());
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
        }
    }

    /// Sends `request` once and waits up to `wait` for its reply.
    fn attempt(&self, request: &Request, wait: Duration) -> Attempt {
        let mut slot = self.socket.borrow_mut();
        if slot.is_none() {
            match self.connect() {
                Ok(s) => *slot = Some(s),
                Err(e) => return Attempt::Failed(e),
            }
        }
        let Some(socket) = slot.as_ref() else {
            return Attempt::Failed(Error::Transport("no socket".into()));
        };
        let frames: [&[u8]; 2] = [b"", &protocol::encode_request(request)];
        if let Err(e) = socket.send_multipart(frames, zmq::DONTWAIT) {
            *slot = None;
            return Attempt::NoReply(Error::Transport(format!(
                "cannot send to {}: {e}",
                self.endpoint
            )));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_readable(socket, left) {
                Err(refused) => {
                    *slot = None;
                    return Attempt::Failed(refused);
                }
                Ok(Ok(0)) => {
                    // Drop the socket: a request still queued for an unreachable server
                    // must not be delivered later, nor late replies reach the next call.
                    *slot = None;
                    return Attempt::NoReply(Error::Timeout(format!(
                        "no reply from {} within {} ms",
                        self.endpoint,
                        wait.as_millis()
                    )));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Attempt::Failed(e.into()),
            }
            let frames = match socket.recv_multipart(0) {
                Ok(f) => f,
                Err(e) => return Attempt::Failed(e.into()),
            };
            let body = match frames.as_slice() {
                [empty, body] if empty.is_empty() => body,
                _ => {
                    tracing::warn!(
                        frames = frames.len(),
                        "ignoring a reply that is not [empty, body]"
                    );
                    continue;
                }
            };
            let reply = match protocol::decode_reply(body) {
                Ok(r) => r,
                Err(e) => return Attempt::Failed(e),
            };
            if Some(&reply.id) != request.id.as_ref() {
                tracing::debug!(id = %reply.id, "ignoring a late reply to an earlier call");
                continue;
            }
            return Attempt::Reply(reply.outcome);
        }
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

    fn connect(&self) -> Result<zmq::Socket, Error> {
        transport::require_safe_libzmq()?;
        let mut tcp = self.tcp.clone();
        if let Some(key) = &self.curve_server_key {
            let own = self.curve_keypair.as_ref();
            tcp.curve =
                Curve::client_with_keys(key, own.map(|p| p.0.as_str()), own.map(|p| p.1.as_str()))?;
        }
        let (socket, watch) = transport::connect_client_watched(&self.ctx, &self.endpoint, &tcp)?;
        *self.watch.borrow_mut() = watch;
        Ok(socket)
    }

    /// Waits up to `wait` for `socket` to be readable, like `socket.poll`. `Err` when
    /// the server refused the security handshake meanwhile (wrong or unlisted key, or
    /// CURVE on one side only): no reply will ever come, so the call fails at once.
    fn wait_readable(
        &self,
        socket: &zmq::Socket,
        wait: Duration,
    ) -> Result<zmq::Result<i32>, Error> {
        let mut guard = self.watch.borrow_mut();
        let Some(watch) = guard.as_mut() else {
            return Ok(socket.poll(zmq::POLLIN, wait.as_millis() as i64));
        };
        let deadline = Instant::now() + wait;
        loop {
            if let Some(why) = watch.refusal() {
                *guard = None;
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
