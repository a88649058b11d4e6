//! Runs `tests/spec_client/client.py`, a pyzmq client written from `docs/protocol.md`
//! alone, against a real server on 127.0.0.1 with an ephemeral port.
//!
//! Without pyzmq the test prints a SKIP line and passes, unless `ZMQ_RPC_REQUIRE_PYZMQ=1`
//! (as in CI), where a missing pyzmq is a failure. The script gets 20 s; a hang fails.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HARD_TIMEOUT: Duration = Duration::from_secs(20);

/// Every check the script makes, in its order.
const CHECKS: &[&str] = &[
    "ping",
    "add",
    "kwargs",
    "no id",
    "list_functions",
    "NameError",
    "PermissionError",
    "ProtocolError not JSON",
    "ProtocolError missing password",
    "ProtocolError extra frame",
    "TypeError",
    "RuntimeError",
    "TimeoutError",
    "retry",
    "DEALER",
    "canonical vectors",
];

/// Whether `python3` can import zmq; `Err` says why not.
fn pyzmq_available() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import zmq"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        // The last line of a traceback says what is missing.
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("no error output")
            .to_owned()),
        Err(e) => Err(format!("cannot run python3: {e}")),
    }
}

/// Reads a pipe to its end on a thread of its own; the text arrives on the channel.
fn read_in_background(
    read: impl FnOnce(&mut String) -> std::io::Result<usize> + Send + 'static,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = read(&mut text);
        let _ = tx.send(text);
    });
    rx
}

#[test]
fn the_python_spec_client_passes_against_a_real_server() {
    if let Err(why) = pyzmq_available() {
        let required = std::env::var("ZMQ_RPC_REQUIRE_PYZMQ").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "ZMQ_RPC_REQUIRE_PYZMQ=1 but python3 cannot import zmq: {why}"
        );
        println!(
            "SKIP the_python_spec_client_passes_against_a_real_server: python3 cannot import \
             zmq ({why}); install it with `pip install -r tests/spec_client/requirements.txt`"
        );
        return;
    }

    let (running, counter) = common::start_spec_server("geheim", "spec-py");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(root.join("tests/spec_client/client.py"))
        .arg(running.port().to_string())
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    // Read both pipes on their own threads so a chatty child cannot block on them.
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stdout_reader = read_in_background(move |s| stdout_pipe.read_to_string(s));
    let stderr_reader = read_in_background(move |s| stderr_pipe.read_to_string(s));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break Some(status);
        }
        if started.elapsed() > HARD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A killed child's own children may hold the pipes open: wait for them briefly only.
    let stdout = stdout_reader
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    let stderr = stderr_reader
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    let report = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    let Some(status) = status else {
        panic!("the Python spec client hung for {HARD_TIMEOUT:?}\n{report}");
    };
    assert!(
        status.success(),
        "the Python spec client failed ({status})\n{report}"
    );
    for name in CHECKS {
        let prefix = format!("ok {name}: ");
        assert!(
            stdout.lines().any(|l| l.starts_with(&prefix)),
            "no `{prefix}` line\n{report}"
        );
    }
    assert!(
        stdout.contains("ok ping: spec-py\n") && stdout.contains("ok add: 12\n"),
        "{report}"
    );
    let last = format!("spec client: {} checks passed", CHECKS.len());
    assert_eq!(stdout.lines().last(), Some(last.as_str()), "{report}");
    assert_eq!(
        counter.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "`next` ran once for the call and its retry, once for the new id\n{report}"
    );
    running.shutdown();
}
