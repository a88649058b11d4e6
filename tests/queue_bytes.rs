//! The queue is bounded in bytes as well as in requests: a request that would wait is
//! refused with `OverloadError` once the requests the broker holds for unanswered calls
//! weigh more than `queue_bytes`, and every request still gets exactly one reply. On
//! real sockets, with a hand-written DEALER that keeps several large requests in flight.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{raw_dealer, recv_frames, with_timeout, PASSWORD};
use serde_json::{json, Value};
use zmq_rpc::RpcServer;

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(5);

#[test]
fn large_requests_beyond_the_byte_bound_are_refused_and_the_rest_answered() {
    with_timeout(Duration::from_secs(30), || {
        let mut server = RpcServer::new(PASSWORD, "bytes")
            .port(0)
            .workers(1)
            .queue_bytes(5 * MIB / 2);
        server.add_external_function(
            |s: String| {
                std::thread::sleep(Duration::from_millis(200));
                s.len()
            },
            "hold",
        );
        let running = server.start().expect("start");
        let ctx = zmq::Context::new();
        let s = raw_dealer(&ctx, running.port());
        let big = "b".repeat(MIB);
        let send = |id: u64, arg: &str| {
            let body = json!({"id": id, "password": PASSWORD, "function": "hold", "args": [arg]});
            s.send_multipart([Vec::new(), body.to_string().into_bytes()], 0)
                .expect("send");
        };
        // The first runs, the second waits (2 MiB held), the third and fourth would
        // make it more than 2.5 MiB.
        for id in 1..=4 {
            send(id, &big);
        }
        let mut replies = BTreeMap::new();
        while replies.len() < 4 {
            let frames = recv_frames(&s, WAIT).expect("a reply for every request");
            let reply: Value = serde_json::from_slice(&frames[1]).expect("JSON");
            replies.insert(reply["id"].as_u64().expect("id"), reply);
        }
        assert_eq!(replies[&1]["result"], json!(MIB), "{:?}", replies[&1]);
        assert_eq!(replies[&2]["result"], json!(MIB), "{:?}", replies[&2]);
        for id in [3, 4] {
            let error = &replies[&id]["error"];
            assert_eq!(error["type"], "OverloadError", "{error}");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.contains("bytes of requests held"), "{message}");
        }
        // Answered calls gave their bytes back: the same requests fit again.
        send(5, &big);
        send(6, &big);
        let mut results = Vec::new();
        for _ in 0..2 {
            let frames = recv_frames(&s, WAIT).expect("a reply");
            let reply: Value = serde_json::from_slice(&frames[1]).expect("JSON");
            results.push(reply["result"].clone());
        }
        assert_eq!(results, vec![json!(MIB), json!(MIB)]);
    });
}
