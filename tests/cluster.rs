//! Cluster mode with real processes: the `zmq-rpc broker` binary, and worker processes
//! that are this test binary run again with only `worker_process_entry` selected.
//! Killing a worker process must leave the others serving, and no call may hang.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, Instant};

use common::process::{process_test, spawn_entry, BrokerCommand, BrokerProcess, Processes};
use common::{wait_for_workers, TempDir, PASSWORD};
use zmq_rpc::{Error, RpcClient, Worker};

const LIMIT: Duration = Duration::from_secs(30);
/// Tells a re-run of this binary to be a worker for this broker endpoint.
const ENDPOINT_VAR: &str = "ZMQ_RPC_TEST_WORKER_ENDPOINT";
/// The worker's name; the worker named `a` also serves `only_a` and `slow_only_a`.
const NAME_VAR: &str = "ZMQ_RPC_TEST_WORKER_NAME";
/// The broker's name, as `ping` returns it.
const BROKER_NAME: &str = "cluster-test";

/// The worker process's `main`: run by `spawn_worker`, never by a plain `cargo test`
/// (ignored), and a no-op when run by hand without the endpoint.
#[test]
#[ignore = "the worker process of the cluster tests, which start it themselves"]
fn worker_process_entry() {
    let Ok(endpoint) = std::env::var(ENDPOINT_VAR) else {
        return;
    };
    let name = std::env::var(NAME_VAR).unwrap_or_else(|_| "worker".into());
    // One thread: two concurrent calls can only both run if two processes take them.
    let mut worker = Worker::with_endpoint(PASSWORD, &endpoint)
        .threads(1)
        .name(name.clone());
    worker.add_external_function(common::seed::add, "add");
    worker.add_external_function(std::process::id, "pid");
    worker.add_external_function(
        || {
            std::thread::sleep(Duration::from_secs(1));
            std::process::id()
        },
        "slow_pid",
    );
    if name == "a" {
        worker.add_external_function(|| "only on a", "only_a");
        worker.add_external_function(
            || {
                std::thread::sleep(Duration::from_secs(5));
                "finished"
            },
            "slow_only_a",
        );
    }
    let running = worker.start().expect("the worker starts");
    // Serve until killed, or until the test process goes away and our stdin closes.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    running.shutdown();
}

/// Starts this test binary again as a worker process named `name`. Returns its index in
/// `processes` and its pid.
fn spawn_worker(processes: &Processes, dir: &TempDir, endpoint: &str, name: &str) -> (usize, u32) {
    spawn_entry(
        processes,
        dir,
        "worker_process_entry",
        &[
            (ENDPOINT_VAR, endpoint.to_owned()),
            (NAME_VAR, name.to_owned()),
        ],
    )
}

/// The real `zmq-rpc broker` on free ports.
fn spawn_broker(processes: &Processes, dir: &TempDir) -> BrokerProcess {
    BrokerCommand::new(BROKER_NAME).spawn(processes, dir)
}

fn client(port: u16) -> RpcClient {
    RpcClient::new(PASSWORD, "127.0.0.1", port).timeout(Duration::from_secs(8))
}

/// Runs `body` under the hard timeout with a fresh process list that is killed at the end.
fn cluster_test(body: impl FnOnce(Processes, TempDir) + Send + 'static) {
    process_test(LIMIT, body);
}

#[test]
fn calls_go_through_the_broker_binary_to_a_worker_process() {
    cluster_test(|processes, dir| {
        let broker = spawn_broker(&processes, &dir);
        let c = client(broker.client_port);
        assert_eq!(c.ping(), Ok(BROKER_NAME.to_owned()));
        // No worker yet: nobody serves `add`.
        assert_eq!(
            c.call::<i64>("add", (5, 7)),
            Err(Error::Name("no function named 'add' is registered".into()))
        );
        let (_, pid) = spawn_worker(&processes, &dir, &broker.worker_endpoint, "a");
        wait_for_workers(&c, "add", 1, Duration::from_secs(10));
        assert_eq!(c.call::<i64>("add", (5, 7)), Ok(12));
        assert_eq!(c.call::<u32>("pid", ()), Ok(pid));
        assert_eq!(c.call::<String>("only_a", ()), Ok("only on a".into()));
        let names: Vec<String> = c
            .list_functions()
            .expect("list")
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["add", "only_a", "pid", "slow_only_a", "slow_pid"]);
        let wrong = RpcClient::new("wrong", "127.0.0.1", broker.client_port);
        assert_eq!(
            wrong.call::<i64>("add", (5, 7)),
            Err(Error::Permission("wrong password".into()))
        );
    });
}

#[test]
fn two_worker_processes_both_get_work() {
    cluster_test(|processes, dir| {
        let broker = spawn_broker(&processes, &dir);
        let (_, pid_a) = spawn_worker(&processes, &dir, &broker.worker_endpoint, "a");
        let (_, pid_b) = spawn_worker(&processes, &dir, &broker.worker_endpoint, "b");
        let port = broker.client_port;
        wait_for_workers(&client(port), "slow_pid", 2, Duration::from_secs(10));
        let started = Instant::now();
        let calls: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || client(port).call::<u32>("slow_pid", ())))
            .collect();
        let pids: BTreeSet<u32> = calls
            .into_iter()
            .map(|c| c.join().expect("call thread").expect("slow_pid answers"))
            .collect();
        let elapsed = started.elapsed();
        // Each worker runs one call at a time, so both processes must have taken one.
        assert_eq!(pids, BTreeSet::from([pid_a, pid_b]));
        assert!(
            elapsed < Duration::from_millis(1800),
            "two 1 s calls on two workers took {elapsed:?}: they ran one after the other"
        );
    });
}

#[test]
fn killing_a_worker_process_leaves_the_other_serving() {
    cluster_test(|processes, dir| {
        let broker = spawn_broker(&processes, &dir);
        let (a, _) = spawn_worker(&processes, &dir, &broker.worker_endpoint, "a");
        let (_, pid_b) = spawn_worker(&processes, &dir, &broker.worker_endpoint, "b");
        let c = client(broker.client_port);
        wait_for_workers(&c, "add", 2, Duration::from_secs(10));
        assert_eq!(c.call::<String>("only_a", ()), Ok("only on a".into()));

        processes.kill(a);

        // The broker notices at once (the send fails) or within 3 heartbeats; either way
        // the caller gets an answer long before its 8 s timeout.
        let started = Instant::now();
        match c.call::<String>("only_a", ()) {
            Err(e @ (Error::Name(_) | Error::Unavailable(_))) => {
                println!("after the kill, only_a got {e} in {:?}", started.elapsed());
            }
            other => panic!("expected NameError or UnavailableError, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        // Worker a is gone for good; b serves the rest.
        assert_eq!(
            c.call::<String>("only_a", ()),
            Err(Error::Name(
                "no function named 'only_a' is registered".into()
            ))
        );
        for i in 0..10 {
            assert_eq!(c.call::<i64>("add", (i, 1)), Ok(i + 1));
            assert_eq!(c.call::<u32>("pid", ()), Ok(pid_b));
        }
        let add = c
            .list_functions()
            .expect("list")
            .into_iter()
            .find(|f| f.name == "add")
            .expect("add is listed");
        assert_eq!(add.workers, 1);
    });
}

#[test]
fn killing_a_worker_process_mid_call_answers_its_caller() {
    cluster_test(|processes, dir| {
        let broker = spawn_broker(&processes, &dir);
        let (a, _) = spawn_worker(&processes, &dir, &broker.worker_endpoint, "a");
        let (_, pid_b) = spawn_worker(&processes, &dir, &broker.worker_endpoint, "b");
        let port = broker.client_port;
        wait_for_workers(&client(port), "add", 2, Duration::from_secs(10));
        let started = Instant::now();
        let caller = std::thread::spawn(move || client(port).call::<String>("slow_only_a", ()));
        std::thread::sleep(Duration::from_millis(300));
        processes.kill(a);
        // Nothing else is sent: the broker must find out by itself (its next heartbeat to
        // the dead worker fails, or the worker's heartbeats stop) and answer the caller.
        let got = caller.join().expect("caller thread");
        let elapsed = started.elapsed();
        match got {
            Err(Error::Unavailable(m)) => assert!(
                m == "the worker became unreachable while running the call"
                    || m == "the worker was lost (no heartbeat) while running the call",
                "{m}"
            ),
            other => panic!("expected UnavailableError, got {other:?}"),
        }
        assert!(
            elapsed < Duration::from_secs(5),
            "answered after {elapsed:?}: not before the dead call would have finished"
        );
        let c = client(port);
        assert_eq!(c.call::<u32>("pid", ()), Ok(pid_b));
        assert_eq!(
            c.call::<String>("slow_only_a", ()),
            Err(Error::Name(
                "no function named 'slow_only_a' is registered".into()
            ))
        );
    });
}
