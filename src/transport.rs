//! The one place that creates and configures ZeroMQ sockets.
//!
//! Every option zmq-rpc sets is here, with the reason: linger, high-water marks,
//! maximum message size, `ROUTER_MANDATORY`, CURVE. Callers get a ready socket and own
//! it on one thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Connect side (client, worker): the server's public key; a fresh key pair is
    /// made per socket.
    Client {
        /// 32-byte public key of the server.
        server_public: [u8; 32],
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

    /// A client role from the server's Z85 public key.
    pub(crate) fn client(server_public_z85: &str) -> Result<Curve, Error> {
        Ok(Curve::Client {
            server_public: decode_key(server_public_z85, "CURVE server key")?,
        })
    }
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

fn decode_key(z85: &str, what: &str) -> Result<[u8; 32], Error> {
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
        Curve::Client { server_public } => {
            require_curve()?;
            let mine = zmq::CurveKeyPair::new()?;
            socket.set_curve_serverkey(server_public)?;
            socket.set_curve_publickey(&mine.public_key)?;
            socket.set_curve_secretkey(&mine.secret_key)?;
        }
    }
    Ok(())
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
    apply_tcp(&socket, opts)?;
    let bound = bind(&socket, endpoint)?;
    Ok((socket, bound))
}

/// The broker's worker-facing ROUTER: bound to `inproc` (always) and to `tcp` (when
/// given). Returns the socket and the bound TCP endpoint.
///
/// `ROUTER_MANDATORY`: a request sent to a worker that is gone must fail so the broker
/// can hand it to another worker instead of losing it.
pub(crate) fn bind_backend(
    ctx: &zmq::Context,
    inproc: &str,
    tcp: Option<&str>,
    opts: &TcpOptions,
) -> Result<(zmq::Socket, Option<String>), Error> {
    let socket = ctx.socket(zmq::ROUTER)?;
    socket.set_linger(millis(SERVICE_LINGER))?;
    socket.set_router_mandatory(true)?;
    socket.set_sndhwm(BROKER_HWM)?;
    socket.set_rcvhwm(BROKER_HWM)?;
    bind(&socket, inproc)?;
    let bound = match tcp {
        Some(endpoint) => {
            apply_tcp(&socket, opts)?;
            Some(bind(&socket, endpoint)?)
        }
        None => None,
    };
    Ok((socket, bound))
}

/// A worker's DEALER to the broker. `tcp` options apply only to `tcp://` endpoints.
pub(crate) fn connect_worker(
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
    connect(&socket, endpoint)?;
    Ok(socket)
}

/// A client's DEALER to the broker. A DEALER rather than a REQ so that a timed-out call
/// does not wedge the socket: late replies are recognised by id and dropped.
pub(crate) fn connect_client(
    ctx: &zmq::Context,
    endpoint: &str,
    opts: &TcpOptions,
) -> Result<zmq::Socket, Error> {
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(millis(CLIENT_LINGER))?;
    socket.set_reconnect_ivl(millis(RECONNECT_IVL))?;
    socket.set_reconnect_ivl_max(millis(RECONNECT_IVL_MAX))?;
    // IMMEDIATE stays off: a client made before its server is up must still reach it
    // once it comes up; a call that waits too long times out and drops the socket.
    apply_tcp(&socket, opts)?;
    connect(&socket, endpoint)?;
    Ok(socket)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_is_built_in() {
        assert!(curve_available(), "libzmq-curve should provide CURVE");
        let (public, secret) = generate_curve_keypair().unwrap();
        assert_eq!((public.len(), secret.len()), (40, 40));
        assert!(Curve::server(&secret).is_ok());
        assert!(Curve::client("too short").is_err());
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
