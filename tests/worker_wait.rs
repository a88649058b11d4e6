//! While calls come one at a time, an idle worker thread of an `RpcServer` waits awake
//! for the next call (yielding its CPU) for twice the last pause between calls, within
//! the bound `RpcServer::spin` sets; at zero it sleeps at once. Seen here in the CPU
//! time of the server's worker threads, read from `/proc`.

mod common;

use std::time::Duration;

use common::{client, with_timeout, PASSWORD};
use zmq_rpc::RpcServer;

/// CPU time (user and system) of this process's threads named `zmq-rpc-local-*`.
fn worker_threads_cpu() -> Duration {
    let ticks_per_s = 100; // USER_HZ: the unit of /proc's times on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("a task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("zmq-rpc-local") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // After the name in parentheses: state, then 10 fields, then utime and stime.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 1000 / ticks_per_s)
}

/// The worker threads' CPU time in the 400 ms after a call that came 100 ms after the
/// one before it, on a server whose wait is bounded by `spin`.
fn cpu_after_a_call(spin: Duration) -> Duration {
    let mut server = RpcServer::new(PASSWORD, "wait")
        .host("127.0.0.1")
        .port(0)
        .workers(2)
        .spin(spin);
    server.add_external_function(|a: i64, b: i64| a + b, "add");
    let running = server.start().expect("the server starts");
    let c = client(running.port());
    assert_eq!(c.call::<i64>("add", (1, 2)), Ok(3));
    // The pause the next wait is measured on: 100 ms, so up to 200 ms of waiting.
    std::thread::sleep(Duration::from_millis(100));
    let before = worker_threads_cpu();
    assert_eq!(c.call::<i64>("add", (2, 2)), Ok(4));
    std::thread::sleep(Duration::from_millis(400));
    let used = worker_threads_cpu().saturating_sub(before);
    running.shutdown();
    used
}

#[test]
fn an_idle_worker_thread_waits_awake_within_the_bound_and_not_at_zero() {
    with_timeout(Duration::from_secs(60), || {
        let waited = cpu_after_a_call(Duration::from_secs(2));
        let slept = cpu_after_a_call(Duration::ZERO);
        // About 200 ms of yielding; less when other processes want the CPU.
        assert!(waited >= Duration::from_millis(60), "waited: {waited:?}");
        assert!(slept <= Duration::from_millis(30), "slept: {slept:?}");
    });
}
