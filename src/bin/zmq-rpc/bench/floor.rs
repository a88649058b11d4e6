//! The floors: what libzmq itself costs on this machine, with no JSON, no password and
//! no dispatch logic. The bench compares every result with one of these.
//!
//! Sockets are made here directly, not through the library's `transport`: a floor has to
//! be bare libzmq with its defaults.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use zmq_rpc::Error;

use super::{Latency, Throughput};

fn zmq_err(what: &str) -> impl Fn(zmq::Error) -> Error + '_ {
    move |e| Error::Transport(format!("{what}: {e}"))
}

/// Serves the floors in this process (the child `zmq-rpc bench --serve-floor` runs this):
/// a REP that echoes (the W1 and W5 floor) and a blind ROUTER -> DEALER -> `workers` REP
/// proxy that echoes (the W2 floor). Prints `READY <rep port> <proxy port>`, serves
/// until stdin closes.
pub(crate) fn serve(workers: usize) -> Result<(), Error> {
    let ctx = zmq::Context::new();
    let rep = ctx.socket(zmq::REP).map_err(zmq_err("rep"))?;
    rep.bind("tcp://127.0.0.1:*").map_err(zmq_err("bind rep"))?;
    let rep_port = port_of(&rep)?;
    std::thread::spawn(move || echo(&rep));

    let frontend = ctx.socket(zmq::ROUTER).map_err(zmq_err("router"))?;
    frontend
        .bind("tcp://127.0.0.1:*")
        .map_err(zmq_err("bind router"))?;
    let proxy_port = port_of(&frontend)?;
    let backend = ctx.socket(zmq::DEALER).map_err(zmq_err("dealer"))?;
    backend
        .bind("inproc://floor-workers")
        .map_err(zmq_err("bind dealer"))?;
    for _ in 0..workers {
        let rep = ctx.socket(zmq::REP).map_err(zmq_err("rep"))?;
        rep.connect("inproc://floor-workers")
            .map_err(zmq_err("connect rep"))?;
        std::thread::spawn(move || echo(&rep));
    }
    std::thread::spawn(move || {
        let _ = zmq::proxy(&frontend, &backend);
    });
    println!("READY {rep_port} {proxy_port}");
    std::io::stdout()
        .flush()
        .map_err(|e| Error::Transport(e.to_string()))?;
    // The parent closes our stdin when it is done (or dies): then we go.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

fn echo(rep: &zmq::Socket) {
    while let Ok(msg) = rep.recv_bytes(0) {
        if rep.send(msg, 0).is_err() {
            return;
        }
    }
}

fn port_of(socket: &zmq::Socket) -> Result<u16, Error> {
    let endpoint = socket
        .get_last_endpoint()
        .map_err(zmq_err("last endpoint"))?
        .unwrap_or_default();
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Transport(format!("no port in {endpoint}")))
}

/// A child process of this binary (`zmq-rpc bench --serve...`), stopped by closing its
/// stdin.
pub(crate) struct ChildServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The numbers on its `READY` line.
    pub(crate) ports: Vec<u16>,
}

impl ChildServer {
    pub(crate) fn start(args: &[&str]) -> Result<ChildServer, Error> {
        let exe = std::env::current_exe().map_err(|e| Error::Config(e.to_string()))?;
        let mut child = Command::new(exe)
            .arg("bench")
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Transport(format!("cannot start the bench server: {e}")))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let ports: Vec<u16> = line
            .strip_prefix("READY ")
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if ports.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Transport(format!(
                "the bench server did not start (said {line:?})"
            )));
        }
        Ok(ChildServer {
            child,
            stdin,
            ports,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stdin = None; // EOF: the child shuts down
        let by = Instant::now() + Duration::from_secs(15);
        while Instant::now() < by {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn req(ctx: &zmq::Context, port: u16) -> Result<zmq::Socket, Error> {
    let s = ctx.socket(zmq::REQ).map_err(zmq_err("req"))?;
    s.set_linger(0).map_err(zmq_err("linger"))?;
    s.set_rcvtimeo(10_000).map_err(zmq_err("rcvtimeo"))?;
    s.connect(&format!("tcp://127.0.0.1:{port}"))
        .map_err(zmq_err("connect"))?;
    Ok(s)
}

/// One REQ -> REP round trip of `msg`, checked.
fn round_trip(s: &zmq::Socket, msg: &[u8]) -> Result<(), Error> {
    s.send(msg, 0).map_err(zmq_err("send"))?;
    let back = s.recv_bytes(0).map_err(zmq_err("recv"))?;
    if back != msg {
        return Err(Error::Runtime("the floor echoed something else".into()));
    }
    Ok(())
}

/// The W1 shape on raw REQ -> REP: sequential round trips of a message as large as our
/// `add(5, 7)` request.
pub(crate) fn latency(
    port: u16,
    msg: &[u8],
    warmup: usize,
    calls: usize,
) -> Result<Latency, Error> {
    let ctx = zmq::Context::new();
    let s = req(&ctx, port)?;
    for _ in 0..warmup {
        round_trip(&s, msg)?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        round_trip(&s, msg)?;
        samples.push(t.elapsed());
    }
    Ok(Latency::of(samples))
}

/// The W2 shape on the blind proxy: `clients` threads, each with its own REQ socket.
pub(crate) fn throughput(
    port: u16,
    msg: &[u8],
    clients: usize,
    duration: Duration,
    server: u32,
) -> Result<Throughput, Error> {
    // One context for all the clients, as `RpcClient`s share theirs (one per process,
    // as libzmq advises).
    let ctx = zmq::Context::new();
    super::run_clients(clients, duration, Some(server), |_| {
        let s = req(&ctx, port)?;
        let msg = msg.to_vec();
        Ok(move || round_trip(&s, &msg))
    })
}

/// Raw REQ -> REP moving `size` bytes there and back, `calls` times: MB/s.
pub(crate) fn payload(port: u16, size: usize, calls: usize) -> Result<f64, Error> {
    let ctx = zmq::Context::new();
    let s = req(&ctx, port)?;
    let msg = super::payload_string(size).into_bytes();
    round_trip(&s, &msg)?;
    let t = Instant::now();
    for _ in 0..calls {
        round_trip(&s, &msg)?;
    }
    Ok(super::mb_per_s(size, calls, t.elapsed()))
}
