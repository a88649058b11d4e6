//! Real processes for the multi-process tests: the `zmq-rpc broker` binary, and this
//! test binary run again with only one `#[ignore]`d entry test selected (which then
//! serves as a worker or server process). Whatever a test starts is killed when the
//! test ends, whether it passes, fails or hangs.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{with_timeout, TempDir, ENV_VARS, PASSWORD};

/// Set (to a `RUST_LOG` filter) to see the children's logs on stderr while debugging;
/// unset, their stderr is discarded.
pub const CHILD_LOG_VAR: &str = "ZMQ_RPC_TEST_CHILD_LOG";

/// The processes a test started, in start order; killed when the test ends.
#[derive(Clone, Default)]
pub struct Processes(Arc<Mutex<Vec<Child>>>);

impl Processes {
    fn lock(&self) -> MutexGuard<'_, Vec<Child>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `child`; returns its index and pid.
    pub fn keep(&self, child: Child) -> (usize, u32) {
        let pid = child.id();
        let mut children = self.lock();
        children.push(child);
        (children.len() - 1, pid)
    }

    /// SIGKILLs the process at `index` and reaps it.
    pub fn kill(&self, index: usize) {
        let mut children = self.lock();
        children[index].kill().expect("kill the process");
        children[index].wait().expect("reap the process");
    }

    /// Waits for the process at `index` to exit; fails the test after `limit`.
    pub fn wait_exit(&self, index: usize, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.lock()[index].try_wait().expect("wait for a child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {index} did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Owned by the test's own thread (outside [`with_timeout`]), so even a test that times
/// out kills what it started.
struct KillOnDrop(Processes);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for child in self.0.lock().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `body` under the hard timeout `limit` with a fresh process list and directory;
/// every process in the list is killed at the end.
pub fn process_test(limit: Duration, body: impl FnOnce(Processes, TempDir) + Send + 'static) {
    let processes = Processes::default();
    let _guard = KillOnDrop(processes.clone());
    let dir = TempDir::new();
    with_timeout(limit, move || body(processes, dir));
}

/// Sends `signal` (`TERM`, `INT`) to `pid` with the `kill` command.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

fn child_stderr(command: &mut Command) {
    match std::env::var(CHILD_LOG_VAR) {
        Ok(filter) => {
            command.env("RUST_LOG", filter).stderr(Stdio::inherit());
        }
        Err(_) => {
            command.stderr(Stdio::null());
        }
    }
}

/// In an entry test: logs to stderr when [`CHILD_LOG_VAR`] asked for it.
pub fn init_child_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// In an entry test: ends this process when the test process that started it goes away
/// (its stdin closes), so no entry process outlives a killed test run.
pub fn exit_when_parent_goes() {
    std::thread::spawn(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        std::process::exit(3);
    });
}

/// How to run the real `zmq-rpc broker`. Ports default to 0 (free ones).
pub struct BrokerCommand {
    name: String,
    port: u16,
    worker_port: u16,
    extra: Vec<String>,
}

impl BrokerCommand {
    /// A broker named `name` (`ping` returns it) with the test password.
    pub fn new(name: &str) -> BrokerCommand {
        BrokerCommand {
            name: name.to_owned(),
            port: 0,
            worker_port: 0,
            extra: Vec::new(),
        }
    }

    /// Binds these ports (to restart a broker where the first one was).
    pub fn ports(mut self, client: u16, worker: u16) -> Self {
        self.port = client;
        self.worker_port = worker;
        self
    }

    /// One more command-line argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_owned());
        self
    }

    /// Starts the binary and reads the bound ports from its first line.
    pub fn spawn(self, processes: &Processes, dir: &TempDir) -> BrokerProcess {
        let mut command = super::zmq_rpc_command(dir.path());
        command
            .args(["broker", "--host", "127.0.0.1", "--password", PASSWORD])
            .args(["--port", &self.port.to_string()])
            .args(["--worker-port", &self.worker_port.to_string()])
            .args(["--name", &self.name])
            .args(&self.extra)
            .stdout(Stdio::piped());
        child_stderr(&mut command);
        let mut child = command.spawn().expect("start the zmq-rpc binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (index, pid) = processes.keep(child);
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the broker's line");
        // `broker listening: clients tcp://127.0.0.1:PORT workers tcp://127.0.0.1:PORT`
        let port_of = |endpoint: &str| -> u16 {
            endpoint
                .strip_prefix("tcp://127.0.0.1:")
                .and_then(|p| p.parse().ok())
                .filter(|p| *p != 0)
                .unwrap_or_else(|| panic!("no port in {endpoint:?} of {line:?}"))
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (client_port, worker_port) = match words.as_slice() {
            ["broker", "listening:", "clients", clients, "workers", workers] => {
                (port_of(clients), port_of(workers))
            }
            _ => panic!("unexpected first line from the broker: {line:?}"),
        };
        for (asked, got) in [(self.port, client_port), (self.worker_port, worker_port)] {
            assert!(asked == 0 || asked == got, "asked for {asked}, bound {got}");
        }
        BrokerProcess {
            index,
            pid,
            client_port,
            worker_port,
            worker_endpoint: format!("tcp://127.0.0.1:{worker_port}"),
            _stdout: stdout,
        }
    }
}

/// A running `zmq-rpc broker`, with its bound ports.
pub struct BrokerProcess {
    /// Its index in [`Processes`].
    pub index: usize,
    /// Its process id.
    pub pid: u32,
    /// The bound port for clients.
    pub client_port: u16,
    /// The bound port for worker processes.
    pub worker_port: u16,
    /// `tcp://127.0.0.1:WORKER_PORT`.
    pub worker_endpoint: String,
    // Kept open: the broker may still write to stdout.
    _stdout: BufReader<ChildStdout>,
}

/// Starts this test binary again with only the ignored test `entry` selected, with
/// `env` set (and none of the `ZMQ_RPC_*` variables inherited). Its stdin is a pipe
/// that closes when the test process ends. Returns its index in `processes` and its pid.
pub fn spawn_entry(
    processes: &Processes,
    dir: &TempDir,
    entry: &str,
    env: &[(&str, String)],
) -> (usize, u32) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args(["--exact", entry, "--ignored", "--nocapture"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    for var in ENV_VARS {
        command.env_remove(var);
    }
    child_stderr(&mut command);
    for (name, value) in env {
        command.env(name, value);
    }
    processes.keep(command.spawn().expect("start an entry process"))
}
