//! Guards the reason the broker is not the seed's blind round-robin proxy: with 4 workers
//! and three 1-second `mul` calls running, `add` is answered at once, not behind a `mul`.

mod common;

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{client, median_and_max, start_seed_server, wait_for_workers, with_timeout, PASSWORD};
use zmq_rpc::{Broker, Worker};

const LIMIT: Duration = Duration::from_secs(20);
/// The bar for each `add` while the `mul`s run; a round-robin proxy makes it ~1000 ms.
const BAR: Duration = Duration::from_millis(50);

/// The two tests measure latency: they take turns so that neither loads the other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Starts three `mul` calls, each on its own thread and client, waits until they are in
/// flight, then times 20 sequential `add` calls on another client.
fn adds_are_not_stuck_behind_muls(port: u16, label: &str) {
    let adder = client(port);
    // Connect before the clock starts: the handshake is not what is measured.
    adder.ping().expect("ping");
    let muls: Vec<JoinHandle<_>> = (1..=3_i64)
        .map(|i| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let product = client(port).call::<i64>("mul", (i, 4));
                (product, started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut latencies = Vec::new();
    for i in 0..20_i64 {
        let started = Instant::now();
        let sum = adder.call::<i64>("add", (i, 1000));
        latencies.push(started.elapsed());
        assert_eq!(sum, Ok(i + 1000));
    }
    // The adds really ran while the muls were in flight.
    assert!(
        muls.iter().all(|m| !m.is_finished()),
        "a 1 s mul finished before the 20 adds did: the test measured nothing"
    );
    let (median, max) = median_and_max(&latencies);
    println!("{label}: add latency with 3 muls in flight: median {median:?}, max {max:?}");
    assert!(
        max < BAR,
        "{label}: an add took {max:?} (median {median:?}); all: {latencies:?}"
    );
    for (i, m) in muls.into_iter().enumerate() {
        let (product, took) = m.join().expect("mul thread");
        assert_eq!(product, Ok((i as i64 + 1) * 4));
        assert!(took >= Duration::from_millis(1000), "mul took {took:?}");
    }
}

#[test]
fn rpc_server_answers_add_while_three_muls_run() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    with_timeout(LIMIT, || {
        let server = start_seed_server(); // 4 workers
        adds_are_not_stuck_behind_muls(server.port(), "RpcServer, 4 workers");
    });
}

#[test]
fn standalone_broker_answers_add_while_three_muls_run() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    with_timeout(LIMIT, || {
        let broker = Broker::new(PASSWORD, "broker")
            .host("127.0.0.1")
            .port(0)
            .worker_port(0)
            .start()
            .expect("broker starts");
        let endpoint = broker.worker_endpoint().expect("a worker endpoint");
        let mut worker = Worker::with_endpoint(PASSWORD, endpoint).threads(4);
        worker.add_external_function(common::seed::add, "add");
        worker.add_external_function(common::seed::slow_multiply, "mul");
        let worker = worker.start().expect("worker starts");
        let port = broker.client_port();
        wait_for_workers(&client(port), "mul", 1, Duration::from_secs(5));
        adds_are_not_stuck_behind_muls(port, "Broker + 1 Worker of 4 threads");
        worker.shutdown();
    });
}
