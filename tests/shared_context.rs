//! The clients of one process share one ZeroMQ context, so one client must never stall
//! the others. libzmq's I/O thread sends socket monitor events with a blocking send;
//! an event for a closed client whose handshake watch had already gone (its server
//! dropping the connection while the closed socket still winds down) once blocked that
//! thread for good, and every other client of the process with it.

mod common;

use std::time::{Duration, Instant};

use common::{client, start_seed_server, with_timeout};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn clients_whose_servers_go_away_after_them_do_not_stall_the_other_clients() {
    with_timeout(LIMIT, || {
        let steady = start_seed_server();
        let other = client(steady.port()).timeout(Duration::from_secs(2));
        assert_eq!(other.call::<i64>("add", (1, 1)), Ok(2));
        for round in 0..100 {
            let server = start_seed_server();
            let gone = client(server.port());
            assert_eq!(gone.call::<i64>("add", (round, 1)), Ok(round + 1));
            // The client first, then its server: the server's side of the connection
            // closes while the client's closed socket may still be winding down.
            drop(gone);
            drop(server);
            let started = Instant::now();
            assert_eq!(
                other.call::<i64>("add", (round, 2)),
                Ok(round + 2),
                "round {round}: the other client stalled"
            );
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "round {round}: the other client's call took {:?}",
                started.elapsed()
            );
        }
    });
}

#[test]
fn many_clients_in_one_process_share_one_io_thread() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let port = server.port();
        // libzmq's threads take the name of the thread that starts them: clients made on
        // a thread of a name of its own show their contexts' threads by that name,
        // whatever the other tests of this binary run meanwhile.
        const NAME: &str = "ctx-probe";
        let added = std::thread::Builder::new()
            .name(NAME.into())
            .spawn(move || {
                let clients: Vec<_> = (0..8).map(|_| client(port)).collect();
                for (i, c) in clients.iter().enumerate() {
                    assert_eq!(c.call::<i64>("add", (i as i64, 1)), Ok(i as i64 + 1));
                }
                threads_named(NAME) - 1
            })
            .expect("start the probe thread")
            .join()
            .expect("the probe thread");
        // A context per client would start an I/O thread and a reaper per client: 16
        // threads for 8 clients. Shared, one context at most (none when another test
        // made it first).
        assert!(added <= 2, "8 clients started {added} threads");
    });
}

/// The threads of this process called `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}
