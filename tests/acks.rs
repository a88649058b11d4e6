//! Acknowledgements (docs/protocol.md 4.11): a request may name, in `ack`, earlier
//! requests on the same connection whose replies the client has received; the server
//! then releases the long replies it kept for their retries, and refuses to run such a
//! request again. Checked on real sockets: a hand-written DEALER against the server,
//! and the reference client against a hand-written ROUTER that records what it sent.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{raw_dealer, recv_frames, with_timeout, PASSWORD};
use serde_json::{json, Value};
use zmq_rpc::protocol::ACK_MIN_BYTES;
use zmq_rpc::{RpcClient, RpcServer};

const LIMIT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(5);

/// A server whose `make(n)` returns `n` bytes and counts its runs.
fn server() -> (zmq_rpc::ServerHandle, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let mut server = RpcServer::new(PASSWORD, "acks").port(0).workers(2);
    server.add_external_function(
        move |n: usize| {
            counted.fetch_add(1, Ordering::SeqCst);
            "x".repeat(n)
        },
        "make",
    );
    (server.start().expect("start"), runs)
}

/// Sends `body` on `s` as a DEALER request and returns the reply's JSON.
fn ask(s: &zmq::Socket, body: &Value) -> Value {
    s.send_multipart([b"".to_vec(), body.to_string().into_bytes()], 0)
        .expect("send");
    let frames = recv_frames(s, WAIT).expect("a reply in time");
    assert_eq!(frames.len(), 2, "[empty, body]");
    serde_json::from_slice(&frames[1]).expect("JSON")
}

fn make(id: &str, n: usize, ack: &[&str]) -> Value {
    let mut req = json!({"id": id, "password": PASSWORD, "function": "make", "args": [n]});
    if !ack.is_empty() {
        req["ack"] = json!(ack);
    }
    req
}

#[test]
fn an_acknowledged_reply_is_released_and_the_request_is_not_run_again() {
    with_timeout(LIMIT, || {
        let (running, runs) = server();
        let ctx = zmq::Context::new();
        let s = raw_dealer(&ctx, running.port());
        let long = "x".repeat(ACK_MIN_BYTES);
        let first = make("r1", ACK_MIN_BYTES, &[]);
        assert_eq!(ask(&s, &first), json!({"id": "r1", "result": long}));
        // Not acknowledged yet: a retry gets the kept reply without a run.
        assert_eq!(ask(&s, &first), json!({"id": "r1", "result": long}));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The next request acknowledges it.
        assert_eq!(
            ask(&s, &make("r2", 3, &["r1"])),
            json!({"id": "r2", "result": "xxx"})
        );
        let again = ask(&s, &first);
        assert_eq!(again["id"], "r1");
        assert_eq!(again["error"]["type"], "ProtocolError", "{again}");
        let message = again["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("acknowledged"), "{message}");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "r1 was not run again");
        // The same id with other arguments is another call, and runs.
        assert_eq!(
            ask(&s, &make("r1", 2, &[])),
            json!({"id": "r1", "result": "xx"})
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn an_acknowledgement_counts_only_on_its_own_connection_and_for_long_replies() {
    with_timeout(LIMIT, || {
        let (running, runs) = server();
        let ctx = zmq::Context::new();
        let (a, b) = (
            raw_dealer(&ctx, running.port()),
            raw_dealer(&ctx, running.port()),
        );
        let long = make("r1", ACK_MIN_BYTES, &[]);
        let short = make("r2", 1, &[]);
        ask(&a, &long);
        ask(&a, &short);
        // Another connection acknowledging the same ids releases nothing.
        ask(&b, &make("b1", 1, &["r1", "r2"]));
        assert_eq!(
            ask(&a, &long)["result"].as_str().map(str::len),
            Some(ACK_MIN_BYTES)
        );
        // A short reply is kept whether acknowledged or not (it costs a few bytes).
        ask(&a, &make("r3", 1, &["r2"]));
        assert_eq!(ask(&a, &short), json!({"id": "r2", "result": "x"}));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "r1, r2, b1 and r3 ran once each"
        );
        // Ids nobody sent and ids of every JSON scalar type are accepted and ignored.
        let odd = json!({"id": "r4", "password": PASSWORD, "function": "make", "args": [1],
                         "ack": ["nobody", 7, true, null]});
        assert_eq!(ask(&a, &odd), json!({"id": "r4", "result": "x"}));
        // A malformed `ack` is a protocol error, with the request's id.
        let bad = json!({"id": "r5", "password": PASSWORD, "function": "make", "args": [1],
                         "ack": "r1"});
        let reply = ask(&a, &bad);
        assert_eq!(reply["id"], "r5");
        assert_eq!(reply["error"]["type"], "ProtocolError", "{reply}");
    });
}

#[test]
fn a_wrong_password_acknowledges_nothing() {
    with_timeout(LIMIT, || {
        let (running, runs) = server();
        let ctx = zmq::Context::new();
        let s = raw_dealer(&ctx, running.port());
        let long = make("r1", ACK_MIN_BYTES, &[]);
        ask(&s, &long);
        let mut intruder = make("r2", 1, &["r1"]);
        intruder["password"] = json!("wrong");
        assert_eq!(ask(&s, &intruder)["error"]["type"], "PermissionError");
        assert!(
            ask(&s, &long)["result"].is_string(),
            "r1's reply is still kept"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

/// A ROUTER standing in for a server: answers each request with `make`'s result for
/// its first argument, and returns the request bodies it saw.
fn record_requests(router: zmq::Socket, count: usize) -> std::thread::JoinHandle<Vec<Value>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < count {
            let frames = recv_frames(&router, WAIT).expect("a request in time");
            let body: Value = serde_json::from_slice(&frames[2]).expect("JSON body");
            let n = body["args"][0].as_u64().unwrap_or(0) as usize;
            let reply = json!({"id": body["id"], "result": "x".repeat(n)});
            router
                .send_multipart(
                    [
                        frames[0].clone(),
                        Vec::new(),
                        reply.to_string().into_bytes(),
                    ],
                    0,
                )
                .expect("reply");
            seen.push(body);
        }
        seen
    })
}

#[test]
fn the_client_acknowledges_long_replies_with_its_next_request() {
    with_timeout(LIMIT, || {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let recorder = record_requests(router, 4);
        let client = RpcClient::with_endpoint(PASSWORD, &endpoint);
        let sizes = [ACK_MIN_BYTES, 5, ACK_MIN_BYTES - 100, 1];
        for n in sizes {
            assert_eq!(client.call::<String>("make", (n,)), Ok("x".repeat(n)));
        }
        let seen = recorder.join().expect("recorder");
        let acks: Vec<&Value> = seen.iter().map(|b| &b["ack"]).collect();
        // Only the first reply was long enough to be worth an acknowledgement; it
        // rides on the very next request, once.
        assert_eq!(acks[0], &Value::Null, "{seen:?}");
        assert_eq!(acks[1], &json!([seen[0]["id"]]), "{seen:?}");
        assert_eq!(acks[2], &Value::Null, "{seen:?}");
        // The third reply, string and JSON around it, stays under the size.
        let third_reply = json!({"id": seen[2]["id"], "result": "x".repeat(sizes[2])});
        assert!(third_reply.to_string().len() < ACK_MIN_BYTES);
        assert_eq!(acks[3], &Value::Null, "{seen:?}");
    });
}
