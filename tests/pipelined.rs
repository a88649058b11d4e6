//! Many calls in flight on one client (`RpcClient::submit` / `Pending::wait`): every
//! result reaches the call it belongs to, whatever order replies come in; a timeout and
//! an error stay with their own call; an abandoned or timed-out call's late reply never
//! reaches another call.

mod common;

use std::time::{Duration, Instant};

use common::{client, start_seed_server, with_timeout};
use zmq_rpc::Error;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn many_calls_in_flight_each_get_their_own_result() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let client = client(server.port());
        let pending: Vec<_> = (0..300_i64)
            .map(|i| (i, client.submit("add", (i, 1000)).expect("submit")))
            .collect();
        // Waited for in reverse: most replies arrive before their turn and are kept.
        for (i, p) in pending.into_iter().rev() {
            assert_eq!(p.wait_as::<i64>(), Ok(i + 1000), "call {i}");
        }
    });
}

#[test]
fn a_fast_call_is_not_held_up_by_a_slow_one_submitted_first() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let client = client(server.port());
        let started = Instant::now();
        let slow = client.submit("mul", (3, 4)).expect("submit mul");
        let adds: Vec<_> = (0..20_i64)
            .map(|i| (i, client.submit("add", (i, 1)).expect("submit add")))
            .collect();
        for (i, p) in adds {
            assert_eq!(p.wait_as::<i64>(), Ok(i + 1));
        }
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "the adds waited for the 1 s mul: {:?}",
            started.elapsed()
        );
        assert_eq!(slow.wait_as::<i64>(), Ok(12));
    });
}

#[test]
fn timeouts_and_errors_stay_with_their_own_call() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let client = client(server.port()).timeout(Duration::from_millis(400));
        let slow = client.submit("mul", (3, 4)).expect("submit mul");
        let unknown = client.submit("nope", ()).expect("submit nope");
        let add = client.submit("add", (5, 7)).expect("submit add");
        let got = unknown.wait();
        assert!(
            matches!(got, Err(Error::Name(_))),
            "an unknown function is a NameError: {got:?}"
        );
        assert!(
            matches!(slow.wait(), Err(Error::Timeout(_))),
            "the 1 s mul outlives the 400 ms timeout"
        );
        assert_eq!(add.wait_as::<i64>(), Ok(12));
        // Let the mul's late reply arrive: it must not be taken for a later call's.
        std::thread::sleep(Duration::from_millis(800));
        let next = client.submit("add", (1, 2)).expect("submit");
        assert_eq!(next.wait_as::<i64>(), Ok(3));
        assert_eq!(client.call::<i64>("add", (2, 2)), Ok(4));
    });
}

#[test]
fn an_abandoned_call_is_dropped_and_a_synchronous_call_keeps_others_results() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let client = client(server.port());
        drop(client.submit("add", (100, 100)).expect("submit"));
        let kept = client.submit("add", (1, 2)).expect("submit");
        // The synchronous call reads past both replies and keeps the one still wanted.
        assert_eq!(client.call::<i64>("add", (3, 4)), Ok(7));
        assert_eq!(kept.wait_as::<i64>(), Ok(3));
        let again = client.submit("add", (5, 5)).expect("submit");
        assert_eq!(again.wait_as::<i64>(), Ok(10));
    });
}
