//! The one place that creates and configures ZeroMQ sockets.
//!
//! Every option zmq-rpc sets is here, with the reason: linger, high-water marks,
//! maximum message size, `ROUTER_MANDATORY`, CURVE. Callers get a ready socket and own
//! it on one thread.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;

/// How long a closing broker or worker socket keeps trying to deliver what is queued
/// (replies on their way out). Long enough for loopback and LAN, short enough that a
/// shutdown never hangs on a vanished peer.
const SERVICE_LINGER: Duration = Duration::from_millis(500);
/// A client drops unsent requests at once when it closes: their caller has given up.
const CLIENT_LINGER: Duration = Duration::ZERO;
/// Messages each pipe buffers on broker sockets before sends report EAGAIN. Sized to the
/// default queue limit so a burst of replies to a full queue never meets the mark.
const BROKER_HWM: i32 = 10_000;
/// Reconnect backoff of connecting sockets (libzmq doubles up to the max).
const RECONNECT_IVL: Duration = Duration::from_millis(100);
const RECONNECT_IVL_MAX: Duration = Duration::from_millis(2_000);

/// Clients that one shared context serves at most: libzmq allows 1,023 sockets per
/// context, and a client opens up to three (its DEALER and the two ends of its
/// handshake monitor).
const CLIENTS_PER_CONTEXT: usize = 300;

/// A client's share of the process's ZeroMQ context (see [`client_context`]).
pub(crate) struct ClientContext {
    ctx: zmq::Context,
    users: Arc<AtomicUsize>,
}

impl ClientContext {
    pub(crate) fn get(&self) -> &zmq::Context {
        &self.ctx
    }
}

impl Drop for ClientContext {
    fn drop(&mut self) {
        self.users.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The ZeroMQ context for a new client. The clients of a process share one, as libzmq
/// advises (one context per process): one I/O thread serves all their connections,
/// instead of a thread per client, so a program with many clients wakes fewer threads
/// per call. A second context is made only when the first serves
/// [`CLIENTS_PER_CONTEXT`] clients at once.
///
/// Shared contexts are never terminated (client sockets linger 0, so a closed one
/// leaves nothing behind). A child made by `fork` makes contexts of its own: the
/// parent's I/O threads do not exist there, so its contexts are left alone, not
/// terminated (that would wait forever).
pub(crate) fn client_context() -> ClientContext {
    type Shared = (u32, Vec<(zmq::Context, Arc<AtomicUsize>)>);
    static SHARED: Mutex<Shared> = Mutex::new((0, Vec::new()));
    let pid = std::process::id();
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if shared.0 != pid {
        shared.0 = pid;
        for inherited in shared.1.drain(..) {
            std::mem::forget(inherited);
        }
    }
    let free = shared
        .1
        .iter()
        .find(|(_, users)| users.load(Ordering::Relaxed) < CLIENTS_PER_CONTEXT);
    let (ctx, users) = match free {
        Some((ctx, users)) => (ctx.clone(), Arc::clone(users)),
        None => {
            let made = (zmq::Context::new(), Arc::new(AtomicUsize::new(0)));
            shared.1.push((made.0.clone(), Arc::clone(&made.1)));
            made
        }
    };
    users.fetch_add(1, Ordering::Relaxed);
    ClientContext { ctx, users }
}

/// Whether a socket encrypts with CURVE, and in which role.
#[derive(Clone, Default)]
pub(crate) enum Curve {
    /// Plain TCP (the password is still checked).
    #[default]
    Off,
    /// Bind side (server, broker): its long-term secret key.
    Server {
        /// 32-byte secret key.
        secret: [u8; 32],
    },
    /// Connect side (client, worker): the server's public key, and this side's own
    /// long-term key pair if one was configured (else a fresh pair per socket).
    Client {
        /// 32-byte public key of the server.
        server_public: [u8; 32],
        /// (public, secret), 32 bytes each.
        own: Option<([u8; 32], [u8; 32])>,
    },
}

impl std::fmt::Debug for Curve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str(match self {
            Curve::Off => "Off",
            Curve::Server { .. } => "Server",
            Curve::Client { .. } => "Client",
        })
    }
}

impl Curve {
    /// A server role from a Z85 secret key.
    pub(crate) fn server(secret_z85: &str) -> Result<Curve, Error> {
        Ok(Curve::Server {
            secret: decode_key(secret_z85, "CURVE secret key")?,
        })
    }

    /// A client role from the server's Z85 public key and, optionally, this side's own
    /// Z85 key pair (both halves or neither: half a pair is a configuration error).
    pub(crate) fn client_with_keys(
        server_public_z85: &str,
        own_public_z85: Option<&str>,
        own_secret_z85: Option<&str>,
    ) -> Result<Curve, Error> {
        let own = match (own_public_z85, own_secret_z85) {
            (Some(p), Some(s)) => Some((
                decode_key(p, "CURVE public key")?,
                decode_key(s, "CURVE secret key")?,
            )),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "a client or worker key pair needs both ZMQ_RPC_CURVE_PUBLIC_KEY and \
                     ZMQ_RPC_CURVE_SECRET_KEY"
                        .into(),
                ))
            }
        };
        Ok(Curve::Client {
            server_public: decode_key(server_public_z85, "CURVE server key")?,
            own,
        })
    }

    /// Whether this encrypts.
    pub(crate) fn is_on(&self) -> bool {
        !matches!(self, Curve::Off)
    }
}

/// ZAP domain of the client-facing endpoint: the ZAP handler applies the client
/// allow-list to handshakes in this domain.
pub(crate) const ZAP_DOMAIN_CLIENTS: &str = "zmq-rpc-clients";
/// ZAP domain of the worker-facing endpoint (the worker allow-list).
pub(crate) const ZAP_DOMAIN_WORKERS: &str = "zmq-rpc-workers";
/// Where libzmq sends ZAP requests (fixed by RFC 27/ZAP).
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// Oldest libzmq accepted: 4.3.2 fixes CVE-2019-13132 (a remote stack overflow in the
/// CURVE handshake of earlier versions).
pub(crate) const MIN_LIBZMQ: (i32, i32, i32) = (4, 3, 2);

/// Fails when the linked libzmq is older than [`MIN_LIBZMQ`].
pub(crate) fn check_libzmq_version(found: (i32, i32, i32)) -> Result<(), Error> {
    if found >= MIN_LIBZMQ {
        Ok(())
    } else {
        let (a, b, c) = found;
        let (x, y, z) = MIN_LIBZMQ;
        Err(Error::Config(format!(
            "libzmq {a}.{b}.{c} is too old: {x}.{y}.{z} or later is required (CVE-2019-13132)"
        )))
    }
}

/// [`check_libzmq_version`] for the libzmq this process links.
pub(crate) fn require_safe_libzmq() -> Result<(), Error> {
    check_libzmq_version(zmq::version())
}

/// Whether a bind host reaches only this machine.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Options shared by the TCP endpoints of one server, broker, worker or client.
#[derive(Clone, Debug)]
pub(crate) struct TcpOptions {
    pub max_message_size: usize,
    pub curve: Curve,
}

/// Whether this libzmq can do CURVE.
pub fn curve_available() -> bool {
    zmq::has("curve") == Some(true)
}

pub(crate) fn decode_key(z85: &str, what: &str) -> Result<[u8; 32], Error> {
    let bytes = zmq::z85_decode(z85.trim())
        .map_err(|_| Error::Config(format!("{what} is not valid Z85")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| Error::Config(format!("{what} must be 40 Z85 characters (32 bytes)")))
}

/// A new CURVE key pair as (public, secret), Z85-encoded.
///
/// # Errors
/// [`Error::Config`] when this libzmq lacks CURVE.
pub fn generate_curve_keypair() -> Result<(String, String), Error> {
    require_curve()?;
    let pair = zmq::CurveKeyPair::new()?;
    let enc = |k: &[u8]| zmq::z85_encode(k).map_err(|e| Error::Config(e.to_string()));
    Ok((enc(&pair.public_key)?, enc(&pair.secret_key)?))
}

fn require_curve() -> Result<(), Error> {
    if curve_available() {
        Ok(())
    } else {
        Err(Error::Config(
            "CURVE was asked for but this libzmq was built without it (no libsodium); \
             build zmq-rpc inside its workspace so crates/libzmq-curve provides libzmq"
                .into(),
        ))
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn apply_tcp(socket: &zmq::Socket, opts: &TcpOptions) -> Result<(), Error> {
    socket.set_maxmsgsize(i64::try_from(opts.max_message_size).unwrap_or(i64::MAX))?;
    match &opts.curve {
        Curve::Off => {}
        Curve::Server { secret } => {
            require_curve()?;
            socket.set_curve_server(true)?;
            socket.set_curve_secretkey(secret)?;
        }
        Curve::Client { server_public, own } => {
            require_curve()?;
            let (public, secret) = match own {
                Some(pair) => *pair,
                None => process_keypair()?,
            };
            socket.set_curve_serverkey(server_public)?;
            socket.set_curve_publickey(&public)?;
            socket.set_curve_secretkey(&secret)?;
        }
    }
    Ok(())
}

/// The key pair of a client or worker that was given none: made once per process.
fn process_keypair() -> Result<([u8; 32], [u8; 32]), Error> {
    static PAIR: std::sync::OnceLock<Option<([u8; 32], [u8; 32])>> = std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        zmq::CurveKeyPair::new()
            .ok()
            .map(|p| (p.public_key, p.secret_key))
    })
    .ok_or_else(|| Error::Config("cannot make a CURVE key pair".into()))
}

fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<String, Error> {
    socket
        .bind(endpoint)
        .map_err(|e| Error::Transport(format!("cannot bind {endpoint}: {e}")))?;
    match socket.get_last_endpoint()? {
        Ok(actual) => Ok(actual),
        Err(_) => Ok(endpoint.to_owned()),
    }
}

fn connect(socket: &zmq::Socket, endpoint: &str) -> Result<(), Error> {
    socket
        .connect(endpoint)
        .map_err(|e| Error::Transport(format!("cannot connect to {endpoint}: {e}")))
}

/// A `tcp://host:port` endpoint, with port 0 meaning "any free port".
pub(crate) fn bind_endpoint(host: &str, port: u16) -> String {
    if port == 0 {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!("tcp://{host}:*")
    } else {
        crate::config::tcp_endpoint(host, port)
    }
}

/// The port of a bound `tcp://...:PORT` endpoint.
pub(crate) fn endpoint_port(endpoint: &str) -> Option<u16> {
    endpoint.rsplit(':').next()?.parse().ok()
}

/// The broker's client-facing ROUTER, bound to `endpoint`. Returns the bound endpoint.
///
/// `ROUTER_MANDATORY`: a reply to a client that has gone must fail loudly (we log and
/// count it) instead of vanishing.
pub(crate) fn bind_frontend(
    ctx: &zmq::Context,
    endpoint: &str,
    opts: &TcpOptions,
) -> Result<(zmq::Socket, String), Error> {
    let socket = ctx.socket(zmq::ROUTER)?;
    socket.set_linger(millis(SERVICE_LINGER))?;
    socket.set_router_mandatory(true)?;
    socket.set_sndhwm(BROKER_HWM)?;
    socket.set_rcvhwm(BROKER_HWM)?;
    if opts.curve.is_on() {
        socket.set_zap_domain(ZAP_DOMAIN_CLIENTS)?;
    }
    apply_tcp(&socket, opts)?;
    let bound = bind(&socket, endpoint)?;
    Ok((socket, bound))
}

/// The broker's ROUTER for worker processes, bound to `tcp`. Returns the socket and
/// the bound endpoint.
///
/// `ROUTER_MANDATORY`: a request sent to a worker that is gone must fail so the broker
/// can hand it to another worker instead of losing it.
pub(crate) fn bind_backend(
    ctx: &zmq::Context,
    tcp: &str,
    opts: &TcpOptions,
) -> Result<(zmq::Socket, String), Error> {
    let socket = ctx.socket(zmq::ROUTER)?;
    socket.set_linger(millis(SERVICE_LINGER))?;
    socket.set_router_mandatory(true)?;
    socket.set_sndhwm(BROKER_HWM)?;
    socket.set_rcvhwm(BROKER_HWM)?;
    if opts.curve.is_on() {
        socket.set_zap_domain(ZAP_DOMAIN_WORKERS)?;
    }
    apply_tcp(&socket, opts)?;
    let bound = bind(&socket, tcp)?;
    Ok((socket, bound))
}

fn worker_socket(
    ctx: &zmq::Context,
    endpoint: &str,
    opts: &TcpOptions,
) -> Result<zmq::Socket, Error> {
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(millis(SERVICE_LINGER))?;
    socket.set_reconnect_ivl(millis(RECONNECT_IVL))?;
    socket.set_reconnect_ivl_max(millis(RECONNECT_IVL_MAX))?;
    if endpoint.starts_with("tcp://") {
        apply_tcp(&socket, opts)?;
    }
    Ok(socket)
}

/// A client's DEALER to the broker. A DEALER rather than a REQ so that a timed-out call
/// does not wedge the socket: late replies are recognised by id and dropped.
#[allow(dead_code)] // the client uses the watched variant; kept for callers without one
pub(crate) fn connect_client(
    ctx: &zmq::Context,
    endpoint: &str,
    opts: &TcpOptions,
) -> Result<zmq::Socket, Error> {
    let socket = client_socket(ctx, opts)?;
    connect(&socket, endpoint)?;
    Ok(socket)
}

fn client_socket(ctx: &zmq::Context, opts: &TcpOptions) -> Result<zmq::Socket, Error> {
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(millis(CLIENT_LINGER))?;
    socket.set_reconnect_ivl(millis(RECONNECT_IVL))?;
    socket.set_reconnect_ivl_max(millis(RECONNECT_IVL_MAX))?;
    // IMMEDIATE stays off: a client made before its server is up must still reach it
    // once it comes up; a call that waits too long times out and drops the socket.
    apply_tcp(&socket, opts)?;
    Ok(socket)
}

/// A worker's DEALER to the broker, with a [`HandshakeWatch`] on `tcp://` endpoints
/// (where the TCP options apply).
pub(crate) fn connect_worker_watched(
    ctx: &zmq::Context,
    endpoint: &str,
    opts: &TcpOptions,
) -> Result<Watched, Error> {
    let socket = worker_socket(ctx, endpoint, opts)?;
    watch_and_connect(ctx, socket, endpoint, opts)
}

/// [`connect_client`], with a [`HandshakeWatch`] on `tcp://` endpoints.
pub(crate) fn connect_client_watched(
    ctx: &zmq::Context,
    endpoint: &str,
    opts: &TcpOptions,
) -> Result<Watched, Error> {
    let socket = client_socket(ctx, opts)?;
    watch_and_connect(ctx, socket, endpoint, opts)
}

fn watch_and_connect(
    ctx: &zmq::Context,
    socket: zmq::Socket,
    endpoint: &str,
    opts: &TcpOptions,
) -> Result<Watched, Error> {
    // The watch must be in place before the connect, or the first handshake goes unseen.
    let watch = if endpoint.starts_with("tcp://") {
        Some(HandshakeWatch::new(ctx, &socket, opts.curve.is_on())?)
    } else {
        None
    };
    // From here on, dropping the pair switches the monitor off first.
    let watched = Watched { socket, watch };
    connect(&watched.socket, endpoint)?;
    Ok(watched)
}

/// The REP socket of a ZAP handler (RFC 27), bound where libzmq looks for it in `ctx`.
/// Bind it before any CURVE socket of `ctx` binds, so no handshake slips past it.
pub(crate) fn bind_zap(ctx: &zmq::Context) -> Result<zmq::Socket, Error> {
    let s = ctx.socket(zmq::REP)?;
    s.set_linger(0)?;
    s.bind(ZAP_ENDPOINT).map_err(|e| {
        Error::Config(format!(
            "cannot start the CURVE allow-list handler ({ZAP_ENDPOINT}: {e}); \
             is another one running in this context?"
        ))
    })?;
    Ok(s)
}

/// A connecting socket and the watch on its handshakes (`tcp://` endpoints only).
///
/// Dropping it switches the socket's monitor off before the socket closes, and closes
/// the watch after it. libzmq's I/O thread sends monitor events with a blocking send: an
/// event for a socket whose watch has gone (the server dropping the connection while
/// the closed socket still winds down, say) would block that thread for good, and with
/// it every socket of the context, which all the clients of a process share
/// ([`client_context`]).
pub(crate) struct Watched {
    socket: zmq::Socket,
    watch: Option<HandshakeWatch>,
}

impl Watched {
    pub(crate) fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    pub(crate) fn watch(&self) -> Option<&HandshakeWatch> {
        self.watch.as_ref()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.watch.is_some() {
            // A monitor for no events sends none: starting one (on a fresh endpoint)
            // closes the watched monitor at once, under libzmq's monitor lock.
            if let Err(e) = self.socket.monitor(&unique_inproc("monitor-off"), 0) {
                tracing::debug!(error = %e, "cannot switch a socket's monitor off");
            }
        }
        // The fields drop in order: the socket, then the watch.
    }
}

/// Watches the handshakes of one connecting socket, so that a server's refusal becomes
/// an error at once instead of a silent wait for a reply that never comes.
///
/// libzmq reports handshake outcomes as socket monitor events on an `inproc` PAIR.
/// The watch is read through `&self` (its state is in cells), so a socket and its
/// watch can be borrowed together.
pub(crate) struct HandshakeWatch {
    events: zmq::Socket,
    curve: bool,
    /// Disconnects in a row without a completed handshake (CURVE only).
    unfinished: Cell<u32>,
    /// The last event was a completed handshake: the connection is up and accepted.
    established: Cell<bool>,
    /// When the events were last read.
    read_at: Cell<Option<Instant>>,
    /// Why the server refused us, once it has: it stays refused.
    refused: RefCell<Option<String>>,
}

/// Disconnects during the CURVE handshake, in a row, that count as a refusal: a CURVE
/// server that cannot decrypt our HELLO (we have the wrong server key) closes the
/// connection without an ERROR command; two in a row rule out a one-off network drop.
const UNFINISHED_HANDSHAKES: u32 = 2;

impl HandshakeWatch {
    /// Starts watching `socket` (before it connects).
    fn new(ctx: &zmq::Context, socket: &zmq::Socket, curve: bool) -> Result<HandshakeWatch, Error> {
        let name = unique_inproc("monitor");
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
            | zmq::SocketEvent::DISCONNECTED as i32;
        socket.monitor(&name, events)?;
        let pair = ctx.socket(zmq::PAIR)?;
        pair.set_linger(0)?;
        // No high-water mark: the I/O thread must never block on an event nobody has
        // read yet (an idle client reads none). Events are few: a handful per
        // connection.
        pair.set_rcvhwm(0)?;
        pair.connect(&name)?;
        Ok(HandshakeWatch {
            events: pair,
            curve,
            unfinished: Cell::new(0),
            established: Cell::new(false),
            read_at: Cell::new(None),
            refused: RefCell::new(None),
        })
    }

    /// The socket to poll for events.
    pub(crate) fn socket(&self) -> &zmq::Socket {
        &self.events
    }

    /// Whether the events were read less than `span` ago.
    pub(crate) fn read_within(&self, span: Duration) -> bool {
        self.read_at.get().is_some_and(|at| at.elapsed() < span)
    }

    /// Whether the server has refused us (as last read).
    pub(crate) fn is_refused(&self) -> bool {
        self.refused.borrow().is_some()
    }

    /// Whether the connection was up and accepted when the events were last read
    /// ([`HandshakeWatch::refusal`]). A refusal can then only follow a disconnect.
    pub(crate) fn is_established(&self) -> bool {
        self.established.get()
    }

    /// Reads the pending events; `Some(why)` when the server has refused us (then and
    /// every time after).
    pub(crate) fn refusal(&self) -> Option<String> {
        if let Some(why) = self.refused.borrow().as_ref() {
            return Some(why.clone());
        }
        self.read_at.set(Some(Instant::now()));
        while let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
            let Some(head) = frames.first().filter(|f| f.len() >= 6) else {
                continue;
            };
            let event = u16::from_le_bytes([head[0], head[1]]);
            let value = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
            if let Some(why) = self.classify(event, value) {
                *self.refused.borrow_mut() = Some(why.clone());
                return Some(why);
            }
        }
        None
    }

    fn classify(&self, event: u16, value: u32) -> Option<String> {
        use zmq::SocketEvent as E;
        match zmq::SocketEvent::from_raw(event) {
            E::HANDSHAKE_SUCCEEDED => {
                self.unfinished.set(0);
                self.established.set(true);
                None
            }
            E::DISCONNECTED if !self.curve => {
                self.established.set(false);
                None
            }
            E::HANDSHAKE_FAILED_AUTH => Some(format!(
                "the server refused this client's key (ZAP status {value})"
            )),
            E::HANDSHAKE_FAILED_PROTOCOL | E::HANDSHAKE_FAILED_NO_DETAIL => Some(
                if self.curve {
                    "the CURVE handshake failed: wrong server key, or the server does not use CURVE"
                } else {
                    "the security handshake failed: the server requires CURVE \
                     (set ZMQ_RPC_CURVE_SERVER_KEY)"
                }
                .into(),
            ),
            E::DISCONNECTED if self.curve => {
                self.established.set(false);
                self.unfinished.set(self.unfinished.get() + 1);
                (self.unfinished.get() >= UNFINISHED_HANDSHAKES).then(|| {
                    "the server closed the connection during the CURVE handshake \
                     (is ZMQ_RPC_CURVE_SERVER_KEY the server's public key?)"
                        .into()
                })
            }
            _ => None,
        }
    }
}

/// A unique `inproc://` name in this process.
pub(crate) fn unique_inproc(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "inproc://zmq-rpc-{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Two connected PAIR sockets: the control pipe between an actor's handle and its thread.
pub(crate) fn pipe(ctx: &zmq::Context) -> Result<(zmq::Socket, zmq::Socket), Error> {
    let name = unique_inproc("pipe");
    let a = ctx.socket(zmq::PAIR)?;
    a.set_linger(0)?;
    a.bind(&name)?;
    let b = ctx.socket(zmq::PAIR)?;
    b.set_linger(0)?;
    b.connect(&name)?;
    Ok((a, b))
}

/// The PULL end where a worker's executor threads deliver finished calls.
pub(crate) fn bind_pull(ctx: &zmq::Context, name: &str) -> Result<zmq::Socket, Error> {
    let s = ctx.socket(zmq::PULL)?;
    s.set_linger(0)?;
    s.bind(name)?;
    Ok(s)
}

/// One executor thread's PUSH to the PULL of [`bind_pull`].
pub(crate) fn connect_push(ctx: &zmq::Context, name: &str) -> Result<zmq::Socket, Error> {
    let s = ctx.socket(zmq::PUSH)?;
    // A reply that is not yet delivered when the worker shuts down is lost with the
    // worker; the broker answers the caller (see docs/reliability.md).
    s.set_linger(millis(SERVICE_LINGER))?;
    s.connect(name)?;
    Ok(s)
}

/// Frames shorter than this are copied into libzmq's own message; longer ones are handed
/// over without a copy. A copy of up to 33 bytes needs no allocation at all (libzmq keeps
/// it inside the message), a longer one a single allocation; handing a `Vec` over costs
/// a shrinking reallocation (an encoder's `Vec` has spare capacity) plus libzmq's
/// allocation for the ownership record, so below this size the copy is the cheaper way.
const COPY_FRAMES_BELOW: usize = 64 * 1024;

/// Sends one multipart message, as `zmq::Socket::send_multipart` does, but copies short
/// frames (see [`COPY_FRAMES_BELOW`]): most frames of a call are a few bytes long.
pub(crate) fn send_frames<T>(
    socket: &zmq::Socket,
    frames: impl IntoIterator<Item = T>,
    flags: i32,
) -> zmq::Result<()>
where
    T: AsRef<[u8]> + Into<zmq::Message>,
{
    let mut frames = frames.into_iter().peekable();
    while let Some(frame) = frames.next() {
        let more = if frames.peek().is_some() {
            zmq::SNDMORE
        } else {
            0
        };
        if frame.as_ref().len() < COPY_FRAMES_BELOW {
            socket.send(frame.as_ref(), flags | more)?;
        } else {
            socket.send(frame.into(), flags | more)?;
        }
    }
    Ok(())
}

/// Sends one frame from a buffer the caller keeps for the next message: copied when
/// short (see [`COPY_FRAMES_BELOW`]; the buffer stays for reuse), handed over when long
/// (the buffer is left empty, so one large message does not pin its size).
pub(crate) fn send_kept(socket: &zmq::Socket, buf: &mut Vec<u8>, flags: i32) -> zmq::Result<()> {
    if buf.len() < COPY_FRAMES_BELOW {
        socket.send(&buf[..], flags)
    } else {
        socket.send(std::mem::take(buf), flags)
    }
}

/// Receive buffers that grew beyond this are freed after use rather than kept, so one
/// large call does not pin its size in memory.
const KEEP_BUFFERS_UP_TO: usize = 64 * 1024;

/// A multipart receiver that reuses its frame buffers and its `zmq::Message` from one
/// message to the next, instead of `recv_multipart`'s fresh `Vec` per frame and per
/// message: frames of a call are mostly a few bytes long, and each would be an
/// allocation.
pub(crate) struct FrameReader {
    part: zmq::Message,
    frames: Vec<Vec<u8>>,
    len: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            part: zmq::Message::new(),
            frames: Vec::new(),
            len: 0,
        }
    }
}

impl FrameReader {
    /// Receives the next whole message without blocking; `false` when none is ready (or
    /// the socket failed mid-message, as `recv_multipart` would report).
    pub(crate) fn recv(&mut self, socket: &zmq::Socket) -> bool {
        self.recv_with(socket, zmq::DONTWAIT).is_ok()
    }

    /// Receives the next whole message with `flags` (as `recv_multipart` does: a
    /// blocking receive waits up to the socket's receive timeout for the first part;
    /// the others have arrived with it).
    pub(crate) fn recv_with(&mut self, socket: &zmq::Socket, flags: i32) -> zmq::Result<()> {
        self.release_large();
        self.len = 0;
        loop {
            if let Err(e) = socket.recv(&mut self.part, flags) {
                self.len = 0;
                return Err(e);
            }
            if self.frames.len() == self.len {
                self.frames.push(Vec::new());
            }
            let buf = &mut self.frames[self.len];
            buf.clear();
            buf.extend_from_slice(&self.part);
            self.len += 1;
            let more = self.part.get_more();
            if self.part.len() > KEEP_BUFFERS_UP_TO {
                // Let libzmq have a large message's memory back now, not at the next
                // receive (over TCP it may be the decoder's buffer).
                self.part = zmq::Message::new();
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// The frames of the last message received.
    pub(crate) fn frames(&self) -> &[Vec<u8>] {
        &self.frames[..self.len]
    }

    /// Takes frame `i` of the last message out (an empty frame stays in its place).
    pub(crate) fn take(&mut self, i: usize) -> Vec<u8> {
        self.frames[..self.len]
            .get_mut(i)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn release_large(&mut self) {
        for buf in &mut self.frames {
            if buf.capacity() > KEEP_BUFFERS_UP_TO {
                *buf = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_is_built_in() {
        assert!(curve_available(), "libzmq-curve should provide CURVE");
        let (public, secret) = generate_curve_keypair().unwrap();
        assert_eq!((public.len(), secret.len()), (40, 40));
        assert!(Curve::server(&secret).is_ok());
        assert!(Curve::client_with_keys("too short", None, None).is_err());
        assert!(Curve::client_with_keys(&public, Some(&public), None).is_err());
        assert!(Curve::client_with_keys(&public, Some(&public), Some(&secret)).is_ok());
    }

    #[test]
    fn a_shared_context_serves_a_bounded_number_of_clients() {
        let taken: Vec<ClientContext> = (0..=2 * CLIENTS_PER_CONTEXT)
            .map(|_| client_context())
            .collect();
        let mut per_context = std::collections::HashMap::new();
        for c in &taken {
            *per_context.entry(Arc::as_ptr(&c.users)).or_insert(0) += 1;
            assert!(c.users.load(Ordering::Relaxed) <= CLIENTS_PER_CONTEXT);
        }
        assert!(per_context.len() >= 3, "{per_context:?}");
        assert!(per_context.values().all(|&n| n <= CLIENTS_PER_CONTEXT));
        // A client that goes frees its place.
        let users = Arc::clone(&taken[0].users);
        let before = users.load(Ordering::Relaxed);
        drop(taken);
        assert!(users.load(Ordering::Relaxed) < before);
    }

    #[test]
    fn libzmq_older_than_4_3_2_is_refused() {
        assert!(check_libzmq_version((4, 3, 1)).is_err());
        assert!(check_libzmq_version((4, 2, 9)).is_err());
        assert!(check_libzmq_version((4, 3, 2)).is_ok());
        assert!(check_libzmq_version((5, 0, 0)).is_ok());
        assert!(require_safe_libzmq().is_ok(), "{:?}", zmq::version());
    }

    #[test]
    fn frames_round_trip_with_reused_buffers() {
        let ctx = zmq::Context::new();
        let (a, b) = pipe(&ctx).unwrap();
        let mut reader = FrameReader::default();
        assert!(!reader.recv(&b), "nothing sent yet");
        // Empty, VSM-sized, copied and handed-over frames, owned and borrowed.
        let big = vec![7u8; COPY_FRAMES_BELOW + 1];
        let first: Vec<Vec<u8>> = vec![b"id".to_vec(), Vec::new(), vec![1; 100], big.clone()];
        send_frames(&a, first.clone(), 0).unwrap();
        send_frames(&a, [&b"x"[..], &[2; 40][..]], 0).unwrap();
        send_frames(&a, [big.as_slice()], 0).unwrap();
        let wait = |r: &mut FrameReader| {
            let end = std::time::Instant::now() + Duration::from_secs(5);
            while !r.recv(&b) {
                assert!(std::time::Instant::now() < end, "message not received");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        wait(&mut reader);
        assert_eq!(reader.frames(), first.as_slice());
        assert_eq!(reader.take(0), b"id");
        assert_eq!(reader.take(9), Vec::<u8>::new(), "no such frame");
        // A shorter message reuses the buffers and shows only its own frames.
        wait(&mut reader);
        assert_eq!(reader.frames(), [b"x".to_vec(), vec![2; 40]].as_slice());
        wait(&mut reader);
        assert_eq!(reader.frames(), [big].as_slice());
        assert!(!reader.recv(&b), "all three messages were read");
        // A large buffer is not kept once the next message is read.
        assert!(reader
            .frames
            .iter()
            .all(|f| f.capacity() <= KEEP_BUFFERS_UP_TO));
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["*", "0.0.0.0", "10.0.0.1", "example.org", "::"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn ephemeral_bind_reports_its_port() {
        let ctx = zmq::Context::new();
        let opts = TcpOptions {
            max_message_size: 1024,
            curve: Curve::Off,
        };
        let (_s, bound) = bind_frontend(&ctx, &bind_endpoint("127.0.0.1", 0), &opts).unwrap();
        assert!(endpoint_port(&bound).unwrap() > 0, "{bound}");
    }
}
