//! The reliability model of `docs/reliability.md`, tested with real processes: worker
//! processes killed with SIGKILL in the middle of a call, a broker killed and started
//! again on the same ports, retries that never run a call twice, a flood beyond the
//! queue bound, graceful shutdown on SIGTERM, long calls under fast heartbeats, and
//! deadlines that drop queued work.
//!
//! The broker is the real `zmq-rpc broker` binary; worker and server processes are this
//! test binary run again with one ignored entry test selected (`common::process`).
//! The functions that matter log each start as a line `TAG PID` to a file, so a test
//! sees which process ran a call and how many times it ran.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{
    exit_when_parent_goes, init_child_logging, process_test, send_signal, spawn_entry,
    BrokerCommand, BrokerProcess, Processes,
};
use common::{unused_port, wait_for_workers, with_timeout, TempDir, PASSWORD};
use serde_json::{json, Value};
use zmq_rpc::{Error, RpcClient, RpcServer, Worker};

/// Hard limit of each test.
const LIMIT: Duration = Duration::from_secs(40);
/// How long worker registration may take.
const REGISTER_WAIT: Duration = Duration::from_secs(10);
/// The broker's name, as `ping` returns it.
const BROKER_NAME: &str = "reliability-test";

/// Tells a re-run of this binary to be a worker for this broker endpoint.
const ENDPOINT_VAR: &str = "ZMQ_RPC_TEST_ENDPOINT";
/// Tells a re-run of this binary to be an `RpcServer` on this port.
const SERVER_PORT_VAR: &str = "ZMQ_RPC_TEST_SERVER_PORT";
/// The file where functions log their runs (`TAG PID` lines).
const RUN_LOG_VAR: &str = "ZMQ_RPC_TEST_RUN_LOG";
/// Worker settings: executor threads, heartbeat interval (ms), heartbeat liveness.
const THREADS_VAR: &str = "ZMQ_RPC_TEST_THREADS";
const HEARTBEAT_VAR: &str = "ZMQ_RPC_TEST_HEARTBEAT_MS";
const LIVENESS_VAR: &str = "ZMQ_RPC_TEST_LIVENESS";

// ---------------------------------------------------------------------------------------
// The processes this binary becomes

/// Appends `TAG PID` to the run log, sleeps `ms`, returns the pid: the side effect shows
/// how often and where a call ran (a run counts from its start, even if it is killed).
fn logged_run(log: &Path, tag: &str, ms: u64) -> Result<u32, std::io::Error> {
    let line = format!("{tag} {}\n", std::process::id());
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)?
        .write_all(line.as_bytes())?; // one write with O_APPEND: lines never interleave
    std::thread::sleep(Duration::from_millis(ms));
    Ok(std::process::id())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The worker process's `main`: run by [`Cluster::worker`], never by a plain `cargo
/// test` (ignored), and a no-op when run by hand without the endpoint. Serves until
/// SIGTERM/SIGINT (`Worker::run`), SIGKILL, or the test process going away.
#[test]
#[ignore = "the worker process of the reliability tests, which start it themselves"]
fn worker_process_entry() {
    let Ok(endpoint) = std::env::var(ENDPOINT_VAR) else {
        return;
    };
    init_child_logging();
    exit_when_parent_goes();
    let log = PathBuf::from(std::env::var(RUN_LOG_VAR).expect("the run log"));
    let mut worker = Worker::with_endpoint(PASSWORD, &endpoint)
        .threads(env_number(THREADS_VAR, 1))
        .heartbeat_interval(Duration::from_millis(env_number(HEARTBEAT_VAR, 1000)))
        .heartbeat_liveness(env_number(LIVENESS_VAR, 3));
    worker.add_external_function(std::process::id, "pid");
    let run_log = log.clone();
    worker.add_external_function(
        move |tag: String, ms: u64| logged_run(&run_log, &tag, ms),
        "run",
    );
    worker
        .add_external_function(
            move |tag: String, ms: u64| logged_run(&log, &tag, ms),
            "run_idempotent",
        )
        .idempotent(true);
    worker.add_external_function(
        |ms: u64, x: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            x
        },
        "work",
    );
    worker.run().expect("the worker serves and stops cleanly");
}

/// An `RpcServer` process calling `serve_forever()`; the test passes (exit status 0)
/// only if `serve_forever` returns `Ok`.
#[test]
#[ignore = "the server process of the reliability tests, which start it themselves"]
fn server_process_entry() {
    let Ok(port) = std::env::var(SERVER_PORT_VAR) else {
        return;
    };
    init_child_logging();
    exit_when_parent_goes();
    let log = PathBuf::from(std::env::var(RUN_LOG_VAR).expect("the run log"));
    let mut server = RpcServer::new(PASSWORD, "forever")
        .host("127.0.0.1")
        .port(port.parse().expect("a port"))
        .workers(2);
    server.add_external_function(std::process::id, "pid");
    server.add_external_function(
        move |tag: String, ms: u64| logged_run(&log, &tag, ms),
        "run",
    );
    assert_eq!(server.serve_forever(), Ok(()));
}

// ---------------------------------------------------------------------------------------
// Helpers

/// How a worker process is set up.
#[derive(Clone, Copy)]
struct WorkerSetup {
    threads: usize,
    heartbeat: Duration,
    liveness: u32,
}

/// One executor thread and a 200 ms heartbeat at liveness 3: the broker takes a worker
/// that is silent for 600 ms for lost (and the worker a broker so silent).
const FAST_HEARTBEAT: WorkerSetup = WorkerSetup {
    threads: 1,
    heartbeat: Duration::from_millis(200),
    liveness: 3,
};

/// A broker binary, the worker processes a test starts for it, and their run log.
struct Cluster {
    processes: Processes,
    dir: TempDir,
    broker: BrokerProcess,
    log: PathBuf,
}

impl Cluster {
    fn start(processes: Processes, dir: TempDir, broker: BrokerCommand) -> Cluster {
        let broker = broker.spawn(&processes, &dir);
        let log = dir.path().join("runs.log");
        Cluster {
            processes,
            dir,
            broker,
            log,
        }
    }

    /// Starts a worker process; returns its index in the process list and its pid.
    fn worker(&self, setup: WorkerSetup) -> (usize, u32) {
        spawn_entry(
            &self.processes,
            &self.dir,
            "worker_process_entry",
            &[
                (ENDPOINT_VAR, self.broker.worker_endpoint.clone()),
                (RUN_LOG_VAR, self.log.display().to_string()),
                (THREADS_VAR, setup.threads.to_string()),
                (HEARTBEAT_VAR, setup.heartbeat.as_millis().to_string()),
                (LIVENESS_VAR, setup.liveness.to_string()),
            ],
        )
    }

    fn client(&self, timeout: Duration) -> RpcClient {
        client(self.broker.client_port, timeout)
    }

    /// Waits until `workers` worker processes have registered.
    fn wait_for_workers(&self, workers: u32) {
        wait_for_workers(
            &self.client(Duration::from_secs(2)),
            "run",
            workers,
            REGISTER_WAIT,
        );
    }

    fn runs(&self, tag: &str) -> Vec<u32> {
        runs(&self.log, tag)
    }

    fn wait_for_runs(&self, tag: &str, n: usize) -> Vec<u32> {
        wait_for_runs(&self.log, tag, n)
    }
}

fn client(port: u16, timeout: Duration) -> RpcClient {
    RpcClient::new(PASSWORD, "127.0.0.1", port).timeout(timeout)
}

/// The pids of the processes that started a call tagged `tag`, in order.
fn runs(log: &Path, tag: &str) -> Vec<u32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix(tag)?.strip_prefix(' ')?.parse().ok())
        .collect()
}

/// Waits until at least `n` calls tagged `tag` have started; returns their pids.
fn wait_for_runs(log: &Path, tag: &str, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = runs(log, tag);
        if pids.len() >= n {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "'{tag}' ran {} time(s), not {n}",
            pids.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Calls `run(tag, ms)` on a new thread with its own client; the thread returns the
/// outcome and the instant it came.
fn call_in_background(
    port: u16,
    timeout: Duration,
    function: &'static str,
    tag: &'static str,
    ms: u64,
) -> std::thread::JoinHandle<(Result<u32, Error>, Instant)> {
    std::thread::spawn(move || {
        let outcome = client(port, timeout).call::<u32>(function, (tag, ms));
        (outcome, Instant::now())
    })
}

fn index_of(pid: u32, workers: &[(usize, u32)]) -> usize {
    workers
        .iter()
        .find(|(_, p)| *p == pid)
        .unwrap_or_else(|| panic!("pid {pid} is none of the workers {workers:?}"))
        .0
}

/// The lost-worker messages of `docs/reliability.md`: the broker found out from a
/// failed send or from missing heartbeats.
fn is_lost_worker(message: &str) -> bool {
    message == "the worker became unreachable while running the call"
        || message == "the worker was lost (no heartbeat) while running the call"
}

// ---------------------------------------------------------------------------------------
// 1. A worker process killed with SIGKILL in the middle of a call

#[test]
fn a_worker_killed_mid_call_answers_its_caller_unavailable_at_once() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        let workers = [
            cluster.worker(FAST_HEARTBEAT),
            cluster.worker(FAST_HEARTBEAT),
        ];
        cluster.wait_for_workers(2);

        let port = cluster.broker.client_port;
        let started = Instant::now();
        let caller = call_in_background(port, Duration::from_secs(10), "run", "doomed", 10_000);
        let running_on = cluster.wait_for_runs("doomed", 1)[0];
        cluster.processes.kill(index_of(running_on, &workers));
        let killed = Instant::now();

        let (outcome, answered) = caller.join().expect("caller thread");
        match outcome {
            Err(Error::Unavailable(m)) => assert!(is_lost_worker(&m), "{m}"),
            other => panic!("expected UnavailableError, got {other:?}"),
        }
        println!(
            "SIGKILL mid-call: UnavailableError {:?} after the kill",
            answered - killed
        );
        assert!(
            answered - started < Duration::from_secs(3),
            "answered after {:?} of a 10 s timeout",
            answered - started
        );
        // Not idempotent: it must not have run again elsewhere.
        let survivor = workers.iter().find(|(_, p)| *p != running_on).unwrap().1;
        let c = cluster.client(Duration::from_secs(5));
        for _ in 0..5 {
            assert_eq!(c.call::<u32>("pid", ()), Ok(survivor));
        }
        assert_eq!(c.call::<u32>("run", ("after", 0)), Ok(survivor));
        assert_eq!(
            cluster.runs("doomed"),
            [running_on],
            "ran once, on the killed one"
        );
    });
}

#[test]
fn an_idempotent_call_of_a_killed_worker_runs_again_on_the_other() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        let workers = [
            cluster.worker(FAST_HEARTBEAT),
            cluster.worker(FAST_HEARTBEAT),
        ];
        cluster.wait_for_workers(2);

        let port = cluster.broker.client_port;
        let started = Instant::now();
        let caller = call_in_background(
            port,
            Duration::from_secs(10),
            "run_idempotent",
            "again",
            1500,
        );
        let first = cluster.wait_for_runs("again", 1)[0];
        cluster.processes.kill(index_of(first, &workers));

        let (outcome, answered) = caller.join().expect("caller thread");
        let other = workers.iter().find(|(_, p)| *p != first).unwrap().1;
        assert_eq!(
            outcome,
            Ok(other),
            "the result comes from the other process"
        );
        assert_eq!(
            cluster.runs("again"),
            [first, other],
            "once more, and only once"
        );
        assert!(
            answered - started < Duration::from_secs(8),
            "answered after {:?}",
            answered - started
        );
    });
}

// ---------------------------------------------------------------------------------------
// 2. The broker killed and started again on the same ports

#[test]
fn workers_and_clients_recover_from_a_broker_restart_by_themselves() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        let workers = [
            cluster.worker(FAST_HEARTBEAT),
            cluster.worker(FAST_HEARTBEAT),
        ];
        let pids: BTreeSet<u32> = workers.iter().map(|(_, p)| *p).collect();
        cluster.wait_for_workers(2);
        let call_timeout = Duration::from_secs(1);
        let c = cluster.client(call_timeout);
        assert!(pids.contains(&c.call::<u32>("pid", ()).expect("a call before")));

        let (port, worker_port) = (cluster.broker.client_port, cluster.broker.worker_port);
        cluster.processes.kill(cluster.broker.index);
        let killed = Instant::now();
        let outage = Duration::from_secs(2);
        let mut restarted: Option<(Instant, BrokerProcess)> = None;
        let mut failures: BTreeMap<&'static str, u32> = BTreeMap::new();
        let mut failed_during_outage = 0;
        let mut successes_after_restart = 0;
        let mut first_success: Option<Duration> = None;
        let mut longest = Duration::ZERO;
        for _ in 0..30 {
            if restarted.is_none() && killed.elapsed() >= outage {
                let again = BrokerCommand::new(BROKER_NAME)
                    .ports(port, worker_port)
                    .spawn(&cluster.processes, &cluster.dir);
                restarted = Some((Instant::now(), again));
            }
            let sent = Instant::now();
            let outcome = c.call::<u32>("pid", ());
            let took = sent.elapsed();
            longest = longest.max(took);
            assert!(
                took < call_timeout + Duration::from_millis(1500),
                "a call took {took:?} with a {call_timeout:?} timeout: it hung"
            );
            match (&outcome, &restarted) {
                (Ok(pid), Some((at, _))) => {
                    assert!(pids.contains(pid), "{pid}");
                    first_success.get_or_insert(at.elapsed());
                    successes_after_restart += 1;
                    if successes_after_restart == 5 {
                        break;
                    }
                }
                (Ok(pid), None) => panic!("answered {pid} with no broker running"),
                (Err(e), restarted) => {
                    *failures.entry(e.kind_name()).or_default() += 1;
                    if restarted.is_none() {
                        failed_during_outage += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "broker restart: failures by kind {failures:?} ({failed_during_outage} before the \
             restart), longest call {longest:?}, first success {first_success:?} after the \
             restart"
        );
        assert!(
            failed_during_outage > 0,
            "no call was made during the outage"
        );
        let first_success = first_success.expect("no call succeeded after the restart");
        assert!(
            first_success < Duration::from_secs(10),
            "calls succeeded again only {first_success:?} after the restart"
        );
        assert_eq!(
            successes_after_restart, 5,
            "calls kept failing after the restart"
        );
        // The same worker processes registered again, and the same client serves on.
        wait_for_workers(&c, "run", 2, REGISTER_WAIT);
        let served: BTreeSet<u32> = (0..6)
            .map(|_| c.call::<u32>("pid", ()).expect("a call after"))
            .collect();
        assert_eq!(served, pids, "both original workers serve again");
    });
}

/// A call still running on a worker when its broker dies finishes after the worker has
/// registered with the new broker. Its reply must not answer the new broker's call
/// that happens to carry the same request key (both brokers count keys from 1).
#[test]
fn a_reply_from_before_a_broker_restart_never_answers_a_new_call() {
    process_test(LIMIT, |processes, dir| {
        // A broker timeout longer than the 5 s call below.
        let broker = || {
            BrokerCommand::new(BROKER_NAME)
                .arg("--timeout")
                .arg("20000")
        };
        let cluster = Cluster::start(processes, dir, broker());
        let (_, pid) = cluster.worker(WorkerSetup {
            threads: 2,
            ..FAST_HEARTBEAT
        });
        cluster.wait_for_workers(1);
        let port = cluster.broker.client_port;
        // The first request of this broker: key 1. Its caller gives up without retrying
        // (a retry would be a request of the new broker, and take its key 1).
        let old = std::thread::spawn(move || {
            client(port, Duration::from_secs(1))
                .retries(0)
                .call::<u32>("run", ("old", 4000))
        });
        cluster.wait_for_runs("old", 1);
        let old_started = Instant::now();

        cluster.processes.kill(cluster.broker.index);
        let _again = broker()
            .ports(port, cluster.broker.worker_port)
            .spawn(&cluster.processes, &cluster.dir);
        cluster.wait_for_workers(1);
        assert!(
            matches!(old.join().expect("old caller"), Err(Error::Timeout(_))),
            "the old call's broker is gone"
        );
        // The new broker's first request, key 1 again, on the worker's free thread.
        assert!(
            old_started.elapsed() < Duration::from_millis(3000),
            "the worker took {:?} to register again: the test needs the old call running",
            old_started.elapsed()
        );
        let c = cluster.client(Duration::from_secs(10)).retries(0);
        let started = Instant::now();
        let outcome = c.call::<u64>("work", (5000, 42));
        let took = started.elapsed();
        assert_eq!(cluster.runs("old"), [pid]);
        assert_eq!(
            outcome,
            Ok(42),
            "after {took:?}: the reply of the call from before the restart (the pid {pid}) \
             answered the new call"
        );
        assert!(took >= Duration::from_millis(4900), "{took:?}");
    });
}

// ---------------------------------------------------------------------------------------
// 3. Retries, and at-most-once execution

/// A client that gives up on an attempt long before a 600 ms call ends, and retries.
fn impatient_client(port: u16) -> RpcClient {
    client(port, Duration::from_secs(5))
        .attempt_timeout(Duration::from_millis(150))
        .retries(5)
}

#[test]
fn a_retried_call_runs_once_on_a_worker_process() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        // Two threads: a second run could start while the first still runs.
        let (_, pid) = cluster.worker(WorkerSetup {
            threads: 2,
            ..FAST_HEARTBEAT
        });
        cluster.wait_for_workers(1);
        let c = impatient_client(cluster.broker.client_port);
        let started = Instant::now();
        assert_eq!(c.call::<u32>("run", ("retried", 600)), Ok(pid));
        let took = started.elapsed();
        // An attempt that is not the last gives up after 150 ms: a reply after 600 ms
        // came to a retry.
        assert!(took >= Duration::from_millis(550), "{took:?}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(cluster.runs("retried"), [pid], "exactly one execution");
    });
}

#[test]
fn a_retried_call_runs_once_on_an_in_process_server() {
    with_timeout(LIMIT, || {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        let mut server = RpcServer::new(PASSWORD, "in-process")
            .host("127.0.0.1")
            .port(0)
            .workers(2);
        server.add_external_function(
            move |x: i64| {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(600));
                x * 2
            },
            "double",
        );
        let running = server.start().expect("the server starts");
        let c = impatient_client(running.port());
        let started = Instant::now();
        assert_eq!(c.call::<i64>("double", (21,)), Ok(42));
        assert!(started.elapsed() >= Duration::from_millis(550));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one execution");
    });
}

/// Sends `body` from `socket` and returns the reply's body.
fn request(socket: &zmq::Socket, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    let frames: [&[u8]; 2] = [b"", body.as_bytes()];
    socket.send_multipart(frames, 0).expect("send");
    assert_eq!(
        socket.poll(zmq::POLLIN, 5000).expect("poll"),
        1,
        "no reply within 5 s"
    );
    let mut frames = socket.recv_multipart(0).expect("receive");
    assert_eq!(frames.len(), 2, "[empty, body]");
    frames.pop().expect("the body")
}

#[test]
fn a_repeated_request_gets_the_stored_reply_without_running_again() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        let (_, pid) = cluster.worker(FAST_HEARTBEAT);
        cluster.wait_for_workers(1);
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::DEALER).expect("socket");
        socket.set_linger(0).expect("linger");
        socket
            .connect(&format!("tcp://127.0.0.1:{}", cluster.broker.client_port))
            .expect("connect");
        let call = |id: &str| json!({"id": id, "password": PASSWORD, "function": "run", "args": ["raw", 50]});

        let first = request(&socket, &call("raw-1"));
        let parsed: Value = serde_json::from_slice(&first).expect("JSON");
        assert_eq!(parsed, json!({"id": "raw-1", "result": pid}));
        assert_eq!(cluster.runs("raw"), [pid]);

        let second = request(&socket, &call("raw-1"));
        assert_eq!(
            String::from_utf8_lossy(&second),
            String::from_utf8_lossy(&first),
            "the stored reply"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(cluster.runs("raw"), [pid], "not run again");

        let third: Value = serde_json::from_slice(&request(&socket, &call("raw-2"))).expect("JSON");
        assert_eq!(third, json!({"id": "raw-2", "result": pid}));
        assert_eq!(cluster.runs("raw"), [pid, pid], "a new id is a new call");
    });
}

// ---------------------------------------------------------------------------------------
// 4. A flood beyond the queue bound

/// `VmHWM` (peak resident set) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn a_flood_beyond_the_queue_limit_is_refused_with_overload_and_memory_stays_bounded() {
    process_test(LIMIT, |processes, dir| {
        const REQUESTS: u64 = 5000;
        let cluster = Cluster::start(
            processes,
            dir,
            BrokerCommand::new(BROKER_NAME)
                .arg("--queue-limit")
                .arg("100"),
        );
        cluster.worker(WorkerSetup {
            threads: 2,
            ..FAST_HEARTBEAT
        });
        cluster.wait_for_workers(1);
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::DEALER).expect("socket");
        socket.set_linger(0).expect("linger");
        socket
            .set_rcvhwm(0)
            .expect("no receive limit: every reply must be kept");
        socket
            .connect(&format!("tcp://127.0.0.1:{}", cluster.broker.client_port))
            .expect("connect");

        let mut answers: BTreeMap<u64, Value> = BTreeMap::new();
        let take = |answers: &mut BTreeMap<u64, Value>, reply: Vec<Vec<u8>>| {
            let body = reply.last().expect("a body");
            let reply: Value = serde_json::from_slice(body).expect("JSON");
            let id = reply["id"].as_u64().expect("the id");
            assert!(answers.insert(id, reply).is_none(), "{id} answered twice");
        };
        let started = Instant::now();
        for id in 0..REQUESTS {
            let body =
                json!({"id": id, "password": PASSWORD, "function": "work", "args": [20, id]})
                    .to_string();
            let frames: [&[u8]; 2] = [b"", body.as_bytes()];
            socket.send_multipart(frames, 0).expect("send");
            while let Ok(reply) = socket.recv_multipart(zmq::DONTWAIT) {
                take(&mut answers, reply);
            }
        }
        let sent = started.elapsed();
        while let Ok(1) = socket.poll(zmq::POLLIN, 15_000) {
            take(&mut answers, socket.recv_multipart(0).expect("receive"));
            if answers.len() as u64 == REQUESTS {
                break;
            }
        }
        let answered = started.elapsed();
        assert_eq!(answers.len() as u64, REQUESTS, "every request is answered");

        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for (id, reply) in &answers {
            let kind = match (reply.get("result"), reply.get("error")) {
                (Some(result), None) => {
                    assert_eq!(result, &json!(id));
                    "result".to_owned()
                }
                (None, Some(error)) => {
                    let kind = error["type"].as_str().expect("an error type").to_owned();
                    if kind == "OverloadError" {
                        assert!(error["retry_after_ms"].as_u64().is_some(), "{reply}");
                    }
                    kind
                }
                _ => panic!("neither result nor error: {reply}"),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        let peak = peak_rss_kib(cluster.broker.pid);
        println!(
            "flood: {REQUESTS} requests sent in {sent:?}, all answered in {answered:?}: \
             {kinds:?}; broker peak RSS (VmHWM) {:.1} MiB",
            peak as f64 / 1024.0
        );
        assert!(
            kinds.get("OverloadError").is_some_and(|n| *n > 0),
            "{kinds:?}"
        );
        assert!(kinds.get("result").is_some_and(|n| *n > 0), "{kinds:?}");
        let expected = ["result", "OverloadError", "TimeoutError"];
        assert!(
            kinds.keys().all(|k| expected.contains(&k.as_str())),
            "{kinds:?}"
        );
        assert!(peak < 64 * 1024, "broker peak RSS {peak} KiB");
        let c = cluster.client(Duration::from_secs(5));
        assert_eq!(c.call::<u64>("work", (0, 7)), Ok(7));
    });
}

// ---------------------------------------------------------------------------------------
// 5. Graceful shutdown on SIGTERM

#[test]
fn sigterm_to_the_broker_finishes_the_running_call_and_refuses_the_queued_one() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        let (_, pid) = cluster.worker(FAST_HEARTBEAT);
        cluster.wait_for_workers(1);
        let port = cluster.broker.client_port;
        let timeout = Duration::from_secs(10);
        let running = call_in_background(port, timeout, "run", "running", 1500);
        cluster.wait_for_runs("running", 1);
        let queued = call_in_background(port, timeout, "run", "queued", 0);
        // The worker has one thread: the second call waits in the broker's queue.
        std::thread::sleep(Duration::from_millis(300));

        send_signal(cluster.broker.pid, "TERM");
        let signalled = Instant::now();
        let (outcome, answered) = queued.join().expect("queued caller");
        assert_eq!(
            outcome,
            Err(Error::Unavailable("the server is shutting down".into()))
        );
        assert!(
            answered - signalled < Duration::from_secs(2),
            "the queued call was refused only {:?} after SIGTERM",
            answered - signalled
        );
        let (outcome, _) = running.join().expect("running caller");
        assert_eq!(outcome, Ok(pid), "the running call finishes");
        let status = cluster
            .processes
            .wait_exit(cluster.broker.index, Duration::from_secs(8));
        let exited = signalled.elapsed();
        println!("broker drained and exited ({status}) {exited:?} after SIGTERM");
        assert!(status.success(), "{status}");
        assert!(exited < Duration::from_secs(8), "{exited:?}");
        assert!(
            cluster.runs("queued").is_empty(),
            "the refused call never ran"
        );
    });
}

#[test]
fn sigterm_to_a_worker_lets_its_call_finish_and_sends_it_nothing_new() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        let workers = [
            cluster.worker(FAST_HEARTBEAT),
            cluster.worker(FAST_HEARTBEAT),
        ];
        cluster.wait_for_workers(2);
        let port = cluster.broker.client_port;
        let timeout = Duration::from_secs(10);
        let first = call_in_background(port, timeout, "run", "first", 1000);
        let draining = cluster.wait_for_runs("first", 1)[0];
        // The other worker gets a longer call, so both are busy.
        let second = call_in_background(port, timeout, "run", "second", 2500);
        let staying = cluster.wait_for_runs("second", 1)[0];
        assert_ne!(draining, staying);

        send_signal(draining, "TERM");
        std::thread::sleep(Duration::from_millis(300));
        // Queued while both are busy. The draining worker frees up first, but must not
        // get it: it waits for the other one.
        let third = std::thread::spawn(move || client(port, timeout).call::<u32>("pid", ()));

        let (outcome, _) = first.join().expect("first caller");
        assert_eq!(outcome, Ok(draining), "the draining worker's call finishes");
        let status = cluster
            .processes
            .wait_exit(index_of(draining, &workers), Duration::from_secs(8));
        assert!(status.success(), "the worker process exits 0: {status}");
        assert_eq!(third.join().expect("third caller"), Ok(staying));
        assert_eq!(second.join().expect("second caller").0, Ok(staying));
        let c = cluster.client(timeout);
        for _ in 0..5 {
            assert_eq!(c.call::<u32>("pid", ()), Ok(staying));
        }
        let run = c
            .list_functions()
            .expect("list")
            .into_iter()
            .find(|f| f.name == "run")
            .expect("run is listed");
        assert_eq!(run.workers, 1, "the drained worker left");
    });
}

#[test]
fn sigterm_makes_serve_forever_return_ok_after_the_running_call() {
    process_test(LIMIT, |processes, dir| {
        let port = unused_port();
        let log = dir.path().join("runs.log");
        let (index, pid) = spawn_entry(
            &processes,
            &dir,
            "server_process_entry",
            &[
                (SERVER_PORT_VAR, port.to_string()),
                (RUN_LOG_VAR, log.display().to_string()),
            ],
        );
        let c = client(port, Duration::from_secs(1));
        let deadline = Instant::now() + REGISTER_WAIT;
        while c.call::<u32>("pid", ()) != Ok(pid) {
            assert!(
                Instant::now() < deadline,
                "the server process does not serve"
            );
        }
        let call = call_in_background(port, Duration::from_secs(10), "run", "during", 1000);
        wait_for_runs(&log, "during", 1);

        send_signal(pid, "TERM");
        let signalled = Instant::now();
        assert_eq!(call.join().expect("caller").0, Ok(pid));
        let status = processes.wait_exit(index, Duration::from_secs(8));
        println!(
            "serve_forever returned; {status} {:?} after SIGTERM",
            signalled.elapsed()
        );
        assert!(
            status.success(),
            "serve_forever returned Ok and the process exits 0: {status}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// 6. A long call under fast heartbeats

#[test]
fn a_long_call_survives_fast_heartbeats() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        // 300 ms of silence would mean "lost", to either side.
        let (_, pid) = cluster.worker(WorkerSetup {
            threads: 1,
            heartbeat: Duration::from_millis(100),
            liveness: 3,
        });
        cluster.wait_for_workers(1);
        let c = cluster.client(Duration::from_secs(10)).retries(0);
        assert_eq!(c.call::<u32>("run", ("long", 3000)), Ok(pid));
        assert_eq!(cluster.runs("long"), [pid]);
        let run = c
            .list_functions()
            .expect("list")
            .into_iter()
            .find(|f| f.name == "run")
            .expect("the worker is still registered");
        assert_eq!(run.workers, 1);
    });
}

// ---------------------------------------------------------------------------------------
// 7. Deadlines

#[test]
fn a_request_that_expires_in_the_queue_never_runs() {
    process_test(LIMIT, |processes, dir| {
        let cluster = Cluster::start(processes, dir, BrokerCommand::new(BROKER_NAME));
        let (_, pid) = cluster.worker(FAST_HEARTBEAT);
        cluster.wait_for_workers(1);
        let port = cluster.broker.client_port;
        let busy = call_in_background(port, Duration::from_secs(10), "run", "busy", 1500);
        cluster.wait_for_runs("busy", 1);

        let c = cluster.client(Duration::from_millis(300)).retries(0);
        let started = Instant::now();
        match c.call::<u32>("run", ("late", 0)) {
            Err(Error::Timeout(_)) => {}
            other => panic!("expected TimeoutError, got {other:?}"),
        }
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert_eq!(busy.join().expect("busy caller").0, Ok(pid));
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            cluster.runs("late").is_empty(),
            "the expired request ran later"
        );
        assert_eq!(
            cluster
                .client(Duration::from_secs(5))
                .call::<u32>("pid", ()),
            Ok(pid)
        );
    });
}
