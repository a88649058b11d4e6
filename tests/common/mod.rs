//! Shared by the integration tests: a hard timeout per test, the seed's server on an
//! ephemeral port, clients, waiting for workers, and helpers for running processes
//! (`process`: the broker binary and re-executed worker processes).

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use zmq_rpc::{RpcClient, RpcServer, ServerHandle};

/// The seed's `add` and `slow_multiply`, the `Calculator` stubs, shared with the examples.
#[path = "../../examples/seed/mod.rs"]
pub mod seed;

pub mod process;

/// The password of every test server.
pub const PASSWORD: &str = "pw";
/// The name of the seed server (`ping` returns it).
pub const NAME: &str = "Rechner1";
/// How long a test client waits for a reply unless a test says otherwise.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Every variable the library and the CLI read, removed from child processes so the
/// machine's environment cannot change what a test sees.
pub const ENV_VARS: &[&str] = &[
    "ZMQ_RPC_HOST",
    "ZMQ_RPC_PORT",
    "ZMQ_RPC_PASSWORD",
    "ZMQ_RPC_TIMEOUT_MS",
    "ZMQ_RPC_WORKERS",
    "ZMQ_RPC_WORKER_PORT",
    "ZMQ_RPC_CURVE_SECRET_KEY",
    "ZMQ_RPC_CURVE_SERVER_KEY",
    "ZMQ_RPC_CURVE_PUBLIC_KEY",
    "ZMQ_RPC_CURVE_AUTHORIZED_KEYS",
    "ZMQ_RPC_CURVE_WORKER_AUTHORIZED_KEYS",
    "ZMQ_RPC_WORKER_SECRET",
    "RUST_LOG",
];

/// Runs `body` on its own thread and fails the test if it has not finished within
/// `limit`: a hang is a failure, not a stuck test run. A panic in `body` is re-raised
/// here with its message.
pub fn with_timeout<F>(limit: Duration, body: F)
where
    F: FnOnce() + Send + 'static,
{
    let name = std::thread::current()
        .name()
        .unwrap_or("test body")
        .to_owned();
    let (done, finished) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            body();
            let _ = done.send(());
        })
        .expect("cannot start the test thread");
    match finished.recv_timeout(limit) {
        Ok(()) => thread.join().expect("the test thread finished"),
        // The sender was dropped without sending: `body` panicked.
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("{name}: no result within {limit:?}; a hang is a failure")
        }
    }
}

/// Divides; an `Err` reaches the caller as `RuntimeError` with this message.
pub fn divide(a: f64, b: f64) -> Result<f64, String> {
    if b == 0.0 {
        Err("division by zero".to_owned())
    } else {
        Ok(a / b)
    }
}

/// Greets `name`, or the world when it is left out (an optional parameter).
pub fn greet(name: Option<String>) -> String {
    format!("Hello, {}!", name.as_deref().unwrap_or("world"))
}

/// Returns its raw arguments.
pub fn echo(args: Vec<Value>, kwargs: Map<String, Value>) -> Value {
    json!({"args": args, "kwargs": kwargs})
}

/// Registers the seed's functions (`add`, `slow_multiply` as `mul`) and the ones the
/// error tests need: `divide` (RuntimeError), `echo` (raw), `greet` (an `Option`).
pub fn register_seed(server: &mut RpcServer) {
    server
        .add_external_function(seed::add, "add")
        .description("Adds two numbers.")
        .params(["a", "b"]);
    server
        .add_external_function(seed::slow_multiply, "mul")
        .description("Multiplies, taking 1 s.")
        .params(["a", "b"]);
    server
        .add_external_function(divide, "divide")
        .description("Divides; fails on zero.");
    server
        .add_raw_function(echo, "echo")
        .description("Returns its arguments.");
    server
        .add_external_function(greet, "greet")
        .description("Greets someone, or the world.")
        .params(["name"]);
}

/// A seed server on 127.0.0.1 and a free port, not yet started (chain more setters).
pub fn seed_server(name: &str) -> RpcServer {
    let mut server = RpcServer::new(PASSWORD, name).host("127.0.0.1").port(0);
    register_seed(&mut server);
    server
}

/// A started seed server with 4 workers, named [`NAME`].
pub fn start_seed_server() -> ServerHandle {
    seed_server(NAME)
        .workers(4)
        .start()
        .expect("the seed server starts")
}

/// A client of the server on `port` with the right password.
pub fn client(port: u16) -> RpcClient {
    RpcClient::new(PASSWORD, "127.0.0.1", port).timeout(CLIENT_TIMEOUT)
}

/// Waits until `function` is served by at least `workers` registered workers (worker
/// registration is asynchronous). Panics after `limit`.
pub fn wait_for_workers(client: &RpcClient, function: &str, workers: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let served = client
            .list_functions()
            .ok()
            .and_then(|fs| fs.into_iter().find(|f| f.name == function))
            .map_or(0, |f| f.workers);
        if served >= workers {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "'{function}' has {served} worker(s), not {workers}, after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The median and maximum of some durations.
pub fn median_and_max(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

/// A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A fresh directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "zmq-rpc-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the directory.
    pub fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.0.join(name), contents).expect("write a file in the temp dir");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real `zmq-rpc` binary, with none of the `ZMQ_RPC_*` variables and `RUST_LOG`
/// inherited, run in `dir` (so no stray `.env` is read).
pub fn zmq_rpc_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zmq-rpc"));
    command.current_dir(dir).stdin(Stdio::null());
    for var in ENV_VARS {
        command.env_remove(var);
    }
    command
}

/// Runs `command` to completion with its output captured; kills it and fails the test if
/// it has not exited within `limit`.
pub fn run_with_limit(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the zmq-rpc binary");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait for the child").is_some() {
            return child
                .wait_with_output()
                .expect("collect the child's output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child
                .wait_with_output()
                .expect("collect the child's output");
            panic!(
                "{command:?} did not exit within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `message` is the client's own timeout for a server on 127.0.0.1:`port` and a
/// timeout of `ms`: `no reply from tcp://127.0.0.1:PORT within MS ms (N attempt(s))`,
/// where N (at least 1) depends on how retries and their random backoff fell.
pub fn is_client_timeout(message: &str, port: u16, ms: u64) -> bool {
    message
        .strip_prefix(&format!(
            "no reply from tcp://127.0.0.1:{port} within {ms} ms ("
        ))
        .and_then(|rest| rest.strip_suffix(" attempt(s))"))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= 1)
}

/// The server the spec-client tests call: `add` (typed, with parameter names), `div`
/// (fails on zero) and `next` (a counter, to see whether a call ran again).
pub fn start_spec_server(
    password: &str,
    name: &str,
) -> (ServerHandle, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = std::sync::Arc::clone(&counter);
    let mut server = RpcServer::new(password, name)
        .host("127.0.0.1")
        .port(0)
        .workers(2);
    server
        .add_external_function(seed::add, "add")
        .description("Adds two numbers.")
        .params(["a", "b"]);
    server.add_external_function(divide, "div");
    server.add_external_function(move || seen.fetch_add(1, Ordering::SeqCst) + 1, "next");
    (server.start().expect("the spec server starts"), counter)
}

/// A bare DEALER connected to `port` on 127.0.0.1, for sending hand-made frames.
pub fn raw_dealer(ctx: &zmq::Context, port: u16) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    s.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    s
}

/// The next message on `s`, or `None` when nothing came within `wait`.
pub fn recv_frames(s: &zmq::Socket, wait: Duration) -> Option<Vec<Vec<u8>>> {
    (s.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() > 0)
        .then(|| s.recv_multipart(0).unwrap())
}

/// Asserts that a normal call (`add(20, 22)` on a server that serves the seed's `add`)
/// still works after the hostile input named by `row`.
pub fn still_serves(client: &RpcClient, row: &str) {
    assert_eq!(client.call::<i64>("add", (20, 22)), Ok(42), "after {row}");
}
