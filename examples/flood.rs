//! Backpressure benchmark: 100,000 requests sent to a standalone broker faster than its
//! workers can serve them. Reports how each request was answered, the broker's memory
//! (VmRSS and peak VmHWM from /proc), and that normal calls work afterwards.
//!
//! Run: `cargo build --release --bins --examples && target/release/examples/flood`
//! Options (env): FLOOD_REQUESTS (100000), FLOOD_QUEUE_LIMIT (10000), FLOOD_WORKERS (4),
//! FLOOD_WORK_MS (5, per call).
//!
//! The broker runs as the real `zmq-rpc` binary next to this example's directory; the
//! worker runs in this process (its memory is not the broker's).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{env_or, memory_kib, start_broker};

fn main() {
    let total = env_or("FLOOD_REQUESTS", 100_000);
    let queue_limit = env_or("FLOOD_QUEUE_LIMIT", 10_000);
    let threads = env_or("FLOOD_WORKERS", 4) as usize;
    let work = Duration::from_millis(env_or("FLOOD_WORK_MS", 5));

    let broker = start_broker(&["--queue-limit", &queue_limit.to_string()]);
    let pid = broker.child.id();
    let mut worker = zmq_rpc::Worker::new("pw", "127.0.0.1", broker.worker_port).threads(threads);
    worker.add_external_function(
        move |x: u64| {
            std::thread::sleep(work);
            x
        },
        "work",
    );
    let worker = worker.start().expect("worker");
    let client = zmq_rpc::RpcClient::new("pw", "127.0.0.1", broker.client_port);
    for _ in 0..100 {
        if client.call::<u64>("work", (0,)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (rss_before, _) = memory_kib(pid);

    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.set_sndhwm(0).unwrap(); // the flood itself must not be throttled client-side
    socket.set_rcvhwm(0).unwrap();
    socket
        .connect(&format!("tcp://127.0.0.1:{}", broker.client_port))
        .unwrap();
    let started = Instant::now();
    let mut outcomes: HashMap<String, u64> = HashMap::new();
    let mut answered = 0u64;
    let mut peak = (0u64, 0u64);
    let receive =
        |socket: &zmq::Socket, outcomes: &mut HashMap<String, u64>, answered: &mut u64| {
            while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
                let reply: Value = serde_json::from_slice(frames.last().unwrap()).unwrap();
                let kind = reply["error"]["type"]
                    .as_str()
                    .unwrap_or("result")
                    .to_owned();
                *outcomes.entry(kind).or_default() += 1;
                *answered += 1;
            }
        };
    for i in 0..total {
        let body = json!({"id": i, "password": "pw", "function": "work", "args": [i]});
        socket
            .send_multipart([&b""[..], body.to_string().as_bytes()], 0)
            .unwrap();
        if i % 1000 == 0 {
            receive(&socket, &mut outcomes, &mut answered);
            let m = memory_kib(pid);
            peak = (peak.0.max(m.0), peak.1.max(m.1));
        }
    }
    let sent_in = started.elapsed();
    let limit = Instant::now() + Duration::from_secs(60);
    while answered < total && Instant::now() < limit {
        if socket.poll(zmq::POLLIN, 200).unwrap_or(0) > 0 {
            receive(&socket, &mut outcomes, &mut answered);
        }
        let m = memory_kib(pid);
        peak = (peak.0.max(m.0), peak.1.max(m.1));
    }
    let drained_in = started.elapsed();
    let (rss_after, hwm) = memory_kib(pid);
    let after: Result<u64, _> = client.call("work", (42,));

    println!(
        "requests sent:        {total} in {:.2} s",
        sent_in.as_secs_f64()
    );
    println!(
        "answered:             {answered} in {:.2} s",
        drained_in.as_secs_f64()
    );
    let mut kinds: Vec<_> = outcomes.into_iter().collect();
    kinds.sort();
    for (kind, n) in kinds {
        println!("  {kind:<20} {n}");
    }
    println!("unanswered:           {}", total - answered);
    println!("broker RSS before:    {rss_before} KiB");
    println!("broker RSS peak seen: {} KiB (VmHWM {hwm} KiB)", peak.0);
    println!("broker RSS after:     {rss_after} KiB");
    println!("call after flood:     {after:?}");
    worker.shutdown();
    if answered != total || after != Ok(42) {
        std::process::exit(1);
    }
}
