//! Memory stays bounded under hostile but admitted traffic: requests with 3 MiB ids,
//! which the broker keeps for retries. Alone in its test binary, so that the resident
//! memory it measures is this test's.

mod common;

use std::time::Duration;

use common::{with_timeout, PASSWORD};
use serde_json::{json, Value};
use zmq_rpc::{RpcClient, RpcServer, ServerHandle};

const REPLY_WAIT: Duration = Duration::from_secs(5);
const BIG: usize = 3 * 1024 * 1024;

fn start() -> ServerHandle {
    let mut server = RpcServer::new(PASSWORD, "bounded")
        .host("127.0.0.1")
        .port(0)
        .workers(2);
    server.add_external_function(|a: i64, b: i64| a + b, "add");
    server.start().expect("server starts")
}

/// This process's resident memory, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn huge_ids_from_an_admitted_client_do_not_grow_memory_without_bound() {
    with_timeout(Duration::from_secs(120), || {
        if rss_bytes().is_none() {
            eprintln!("no /proc/self/status: skipping the memory check");
            return;
        }
        let server = start();
        let ctx = zmq::Context::new();
        let s = common::raw_dealer(&ctx, server.port());
        // Each request is valid and runs; the broker keeps its id for retries (4.8),
        // and the reply echoes it: 3 MiB id (twice) + 3 MiB reply per request if kept.
        const REQUESTS: usize = 40;
        let mut warmed = 0;
        for n in 0..REQUESTS {
            if n == REQUESTS / 2 {
                // By now the retry memory is full and the allocator has its arenas:
                // from here on, bounded memory stays flat.
                warmed = rss_bytes().unwrap();
            }
            let id = format!("{n}-{}", "i".repeat(BIG));
            let body = json!({"id": id, "password": PASSWORD, "function": "add", "args": [n, 1]});
            s.send_multipart([Vec::new(), body.to_string().into_bytes()], 0)
                .unwrap();
            let reply = common::recv_frames(&s, REPLY_WAIT).expect("a reply");
            let reply: Value = serde_json::from_slice(&reply[1]).unwrap();
            assert_eq!(reply["result"], json!(n + 1));
        }
        let grown = rss_bytes().unwrap().saturating_sub(warmed);
        eprintln!(
            "resident memory grew by {} MiB over the last {} requests",
            grown >> 20,
            REQUESTS / 2
        );
        // Measured here: 6 to 15 MiB (4 runs). Before ids counted against the retry
        // memory's byte budget (only replies did): 36 and 42 MiB (2 runs).
        assert!(
            grown < 24 * 1024 * 1024,
            "resident memory grew by {} MiB",
            grown >> 20
        );
        let client = RpcClient::new(PASSWORD, "127.0.0.1", server.port()).timeout(REPLY_WAIT);
        common::still_serves(&client, "huge ids");
    });
}
