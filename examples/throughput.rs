//! Latency and throughput of `add` through an in-process `RpcServer` over TCP on
//! 127.0.0.1: one client making sequential calls (round-trip latency), then several
//! client threads at once (calls per second).
//!
//! Run: `cargo run --release --example throughput`
//! Options (env): BENCH_CALLS (10000 sequential), BENCH_CLIENTS (4),
//! BENCH_CALLS_PER_CLIENT (5000), BENCH_WORKERS (4).

mod support;

use std::time::{Duration, Instant};

use support::env_or;
use zmq_rpc::{RpcClient, RpcServer};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let calls = env_or("BENCH_CALLS", 10_000) as usize;
    let clients = env_or("BENCH_CLIENTS", 4);
    let per_client = env_or("BENCH_CALLS_PER_CLIENT", 5_000);
    let workers = env_or("BENCH_WORKERS", 4) as usize;

    let mut server = RpcServer::new("pw", "bench")
        .host("127.0.0.1")
        .port(0)
        .workers(workers);
    server.add_external_function(|a: i64, b: i64| a + b, "add");
    let running = server.start().expect("server starts");
    let port = running.port();

    let client = RpcClient::new("pw", "127.0.0.1", port);
    for i in 0..100 {
        assert_eq!(client.call::<i64>("add", (i, 1)), Ok(i + 1)); // warm up
    }
    let mut samples = Vec::with_capacity(calls);
    let started = Instant::now();
    for i in 0..calls as i64 {
        let t = Instant::now();
        let sum: i64 = client.call("add", (i, 1)).expect("call");
        samples.push(t.elapsed());
        assert_eq!(sum, i + 1);
    }
    let sequential = started.elapsed();
    samples.sort();
    println!(
        "sequential: {calls} calls in {:.2} s = {:.0} calls/s; latency median {:?}, p99 {:?}, max {:?}",
        sequential.as_secs_f64(),
        calls as f64 / sequential.as_secs_f64(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );

    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let client = RpcClient::new("pw", "127.0.0.1", port);
                for i in 0..per_client as i64 {
                    let sum: i64 = client.call("add", (i, c as i64)).expect("call");
                    assert_eq!(sum, i + c as i64);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let concurrent = started.elapsed();
    let total = clients * per_client;
    println!(
        "concurrent: {clients} clients x {per_client} calls = {total} in {:.2} s = {:.0} calls/s",
        concurrent.as_secs_f64(),
        total as f64 / concurrent.as_secs_f64()
    );
    running.shutdown();
}
