//! Functions registered as direct run on the server's broker thread: no hand-off to a
//! worker thread. A direct call that takes too long demotes its function to the worker
//! threads; a worker process refuses direct functions.

mod common;

use std::thread::JoinHandle;
use std::time::Duration;

use common::{client, seed_server, with_timeout, PASSWORD};
use zmq_rpc::{Error, Worker};

const LIMIT: Duration = Duration::from_secs(20);

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

#[test]
fn a_direct_function_runs_on_the_broker_thread_even_while_every_worker_is_busy() {
    with_timeout(LIMIT, || {
        let mut server = seed_server("direct").workers(2).port(0);
        server
            .add_external_function(thread_name, "where_direct")
            .direct(true);
        server.add_external_function(thread_name, "where_pooled");
        server.add_external_function(
            |ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            },
            "sleep",
        );
        let running = server.start().expect("start");
        let port = running.port();
        let c = client(port);
        assert_eq!(
            c.call::<String>("where_direct", ()),
            Ok("zmq-rpc-broker".into())
        );
        let pooled = c.call::<String>("where_pooled", ()).expect("pooled call");
        assert!(pooled.starts_with("zmq-rpc-local-"), "{pooled}");
        // Occupy both worker threads (and queue more behind them): a direct call is
        // still answered at once, a pooled one is not.
        let sleepers: Vec<JoinHandle<_>> = (0..4)
            .map(|_| std::thread::spawn(move || client(port).call::<u64>("sleep", (1500,))))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let quick = client(port).timeout(Duration::from_millis(500));
        assert_eq!(
            quick.call::<String>("where_direct", ()),
            Ok("zmq-rpc-broker".into())
        );
        assert!(
            matches!(
                quick.call::<String>("where_pooled", ()),
                Err(Error::Timeout(_))
            ),
            "the pooled call should have waited for a busy worker"
        );
        for s in sleepers {
            assert_eq!(s.join().expect("sleeper"), Ok(1500));
        }
    });
}

#[test]
fn a_slow_direct_function_is_moved_to_the_worker_threads_after_one_call() {
    with_timeout(LIMIT, || {
        let mut server = seed_server("demoted").workers(2).port(0);
        server
            .add_external_function(
                || {
                    std::thread::sleep(Duration::from_millis(20));
                    thread_name()
                },
                "slow_direct",
            )
            .direct(true);
        let running = server.start().expect("start");
        let c = client(running.port());
        assert_eq!(
            c.call::<String>("slow_direct", ()),
            Ok("zmq-rpc-broker".into())
        );
        for _ in 0..3 {
            let on = c.call::<String>("slow_direct", ()).expect("call");
            assert!(on.starts_with("zmq-rpc-local-"), "{on}");
        }
        // It is still listed once, now served by the worker threads.
        let listed = c.list_functions().expect("list");
        let f = listed
            .iter()
            .find(|f| f.name == "slow_direct")
            .expect("listed");
        assert_eq!(f.workers, 2, "{f:?}");
    });
}

#[test]
fn a_worker_process_refuses_a_direct_function() {
    let mut worker = Worker::with_endpoint(PASSWORD, "tcp://127.0.0.1:1");
    worker.add_external_function(|| 1, "one").direct(true);
    match worker.start() {
        Err(Error::Config(m)) => assert!(m.contains("'one'") && m.contains("direct"), "{m}"),
        other => panic!(
            "expected a configuration error, got {:?}",
            other.map(|_| ())
        ),
    }
}
