//! Long strings travel as data frames after the JSON body (docs/protocol.md 4.10): the
//! reference client sends string arguments of 16 KiB and more that way, and a server
//! returns a long string result that way to a client that accepts it. Checked here on
//! real sockets: through the local pool, through a worker process's TCP hop (whose
//! protocol has no data frames), against a plain DEALER that writes the frames by hand,
//! and for malformed frame lists.

mod common;

use std::time::Duration;

use common::{raw_dealer, recv_frames, with_timeout, PASSWORD};
use serde_json::{json, Value};
use zmq_rpc::{protocol::FRAME_MIN_BYTES, Broker, RpcClient, RpcServer, Worker};

const LIMIT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(5);

/// A string of `len` bytes with characters that JSON must escape and multi-byte ones,
/// so that a data frame that went through JSON somewhere would still come back equal.
fn text(len: usize) -> String {
    let pattern = "a\"b\\c\n\u{e9}\u{1F600}\u{1}z";
    let mut s = pattern.repeat(len / pattern.len() + 1);
    while s.len() > len {
        s.pop();
    }
    s
}

fn server() -> zmq_rpc::ServerHandle {
    let mut server = RpcServer::new(PASSWORD, "frames").port(0).workers(2);
    server.add_external_function(|s: String| s, "echo");
    server.add_external_function(|s: String| s.len() as u64, "len");
    server.add_external_function(|a: String, b: String| format!("{a}{b}"), "concat");
    server.add_external_function(|n: usize| "x".repeat(n), "make");
    server.start().expect("start")
}

#[test]
fn long_strings_go_both_ways_through_the_local_pool() {
    with_timeout(LIMIT, || {
        let running = server();
        let c = common::client(running.port());
        for len in [0, 5, FRAME_MIN_BYTES - 1, FRAME_MIN_BYTES, 1 << 20] {
            let s = text(len);
            assert_eq!(
                c.call::<String>("echo", (&s,)),
                Ok(s.clone()),
                "echo of {len}"
            );
            assert_eq!(
                c.call::<u64>("len", (&s,)),
                Ok(s.len() as u64),
                "len of {len}"
            );
        }
        // Two frames, one short argument inline, and a long result from short input.
        let (a, b) = (text(100_000), text(70_000));
        assert_eq!(c.call::<String>("concat", (&a, &b)), Ok(format!("{a}{b}")));
        assert_eq!(c.call::<String>("concat", ("x", &b)), Ok(format!("x{b}")));
        assert_eq!(
            c.call::<String>("make", (200_000,)),
            Ok("x".repeat(200_000))
        );
        // A client that keeps to single frames gets the same answers.
        let plain = common::client(running.port()).data_frames(false);
        assert_eq!(plain.call::<String>("echo", (&a,)), Ok(a.clone()));
        // And so do pipelined calls.
        let pending: Vec<_> = (0..8)
            .map(|i| c.submit("echo", (text(20_000 + i),)).expect("submit"))
            .collect();
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.wait_as::<String>(), Ok(text(20_000 + i)));
        }
    });
}

#[test]
fn a_worker_process_gets_the_strings_inline_and_its_result_comes_back() {
    with_timeout(LIMIT, || {
        let broker = Broker::new(PASSWORD, "b")
            .host("127.0.0.1")
            .port(0)
            .worker_port(0)
            .warmup(Duration::ZERO)
            .start()
            .expect("broker");
        let mut worker = Worker::new(PASSWORD, "127.0.0.1", broker.worker_port().unwrap());
        worker.add_external_function(|s: String| s, "echo");
        worker.add_external_function(|a: String, b: String| format!("{a}{b}"), "concat");
        let _worker = worker.start().expect("worker");
        let c = RpcClient::new(PASSWORD, "127.0.0.1", broker.client_port()).timeout(WAIT);
        common::wait_for_workers(&c, "echo", 1, WAIT);
        let (a, b) = (text(300_000), text(FRAME_MIN_BYTES));
        assert_eq!(c.call::<String>("echo", (&a,)), Ok(a.clone()));
        assert_eq!(c.call::<String>("concat", (&a, &b)), Ok(format!("{a}{b}")));
    });
}

/// Sends `frames` after the empty delimiter on a fresh DEALER; the reply's frames after
/// the delimiter.
fn exchange(port: u16, frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let ctx = zmq::Context::new();
    let s = raw_dealer(&ctx, port);
    let mut all = vec![Vec::new()];
    all.extend(frames);
    s.send_multipart(all, 0).unwrap();
    let mut reply = recv_frames(&s, WAIT).expect("a reply");
    assert!(reply[0].is_empty(), "the delimiter first");
    reply.remove(0);
    reply
}

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_hand_written_client_can_send_and_receive_data_frames() {
    with_timeout(LIMIT, || {
        let running = server();
        let long = "\u{e9}".repeat(FRAME_MIN_BYTES);
        let request = json!({"id": 7, "password": PASSWORD, "function": "concat",
            "args": [null, "!"], "frames": [0], "accept_frames": true});
        let reply = exchange(
            running.port(),
            vec![body(request), long.clone().into_bytes()],
        );
        assert_eq!(reply.len(), 2, "body and data frame");
        let head: Value = serde_json::from_slice(&reply[0]).unwrap();
        assert_eq!(head, json!({"id": 7, "result_frame": true}));
        assert_eq!(reply[1], format!("{long}!").into_bytes());

        // Without `accept_frames` the result is JSON, however long.
        let request = json!({"id": 8, "password": PASSWORD, "function": "echo",
            "args": [null], "frames": [0]});
        let reply = exchange(
            running.port(),
            vec![body(request), long.clone().into_bytes()],
        );
        assert_eq!(reply.len(), 1);
        let head: Value = serde_json::from_slice(&reply[0]).unwrap();
        assert_eq!(head, json!({"id": 8, "result": long}));

        // A short result stays JSON even for a client that accepts frames.
        let request = json!({"id": 9, "password": PASSWORD, "function": "len",
            "args": [null], "frames": [0], "accept_frames": true});
        let reply = exchange(running.port(), vec![body(request), b"abc".to_vec()]);
        let head: Value = serde_json::from_slice(&reply[0]).unwrap();
        assert_eq!((reply.len(), head), (1, json!({"id": 9, "result": 3})));
    });
}

#[test]
fn a_retry_of_a_finished_call_gets_its_data_frame_again() {
    with_timeout(LIMIT, || {
        let running = server();
        let request = body(
            json!({"id": "r-1", "password": PASSWORD, "function": "make",
            "args": [FRAME_MIN_BYTES * 2], "accept_frames": true}),
        );
        let first = exchange(running.port(), vec![request.clone()]);
        let again = exchange(running.port(), vec![request]);
        assert_eq!(first.len(), 2);
        assert_eq!(first, again);
        // The same id and arguments without `accept_frames` is another call, which gets
        // JSON.
        let plain = exchange(
            running.port(),
            vec![body(
                json!({"id": "r-1", "password": PASSWORD, "function": "make",
                "args": [FRAME_MIN_BYTES * 2]}),
            )],
        );
        let head: Value = serde_json::from_slice(&plain[0]).unwrap();
        assert_eq!(
            head["result"].as_str().map(str::len),
            Some(FRAME_MIN_BYTES * 2)
        );
    });
}

/// The client's first send hands a long string over to its socket instead of copying
/// it: a retry must still carry the whole string, whichever way the call was made, or
/// the server would take it for another call.
#[test]
fn a_retry_sends_its_long_strings_again() {
    with_timeout(LIMIT, || {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = std::sync::Arc::clone(&seen);
        let mut server = RpcServer::new(PASSWORD, "frames").port(0).workers(2);
        server.add_external_function(
            move |s: String| {
                record.lock().unwrap().push(s.len());
                // Longer than an attempt: the client retries while this runs.
                std::thread::sleep(Duration::from_millis(600));
                s.len() as u64
            },
            "slow_len",
        );
        let running = server.start().expect("start");
        let c = common::client(running.port())
            .timeout(Duration::from_secs(10))
            .attempt_timeout(Duration::from_millis(150))
            .retries(5);
        let s = text(FRAME_MIN_BYTES * 4);
        let started = std::time::Instant::now();
        assert_eq!(c.call::<u64>("slow_len", (&s,)), Ok(s.len() as u64));
        // A reply after 600 ms came to a retry.
        assert!(started.elapsed() >= Duration::from_millis(550));
        assert_eq!(
            c.call_with("slow_len", vec![json!(s)], serde_json::Map::new()),
            Ok(json!(s.len()))
        );
        // Each call ran once, with the whole string: every retry was known for one.
        assert_eq!(*seen.lock().unwrap(), [s.len(), s.len()]);
    });
}

#[test]
fn malformed_frame_lists_get_a_protocol_error_with_the_id() {
    with_timeout(LIMIT, || {
        let running = server();
        let port = running.port();
        let request = |extra: Value| {
            let mut r = json!({"id": 5, "password": PASSWORD, "function": "concat",
                "args": [null, null]});
            r.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body(r)
        };
        let rows: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
            (
                "fewer frames than listed",
                vec![request(json!({"frames": [0, 1]})), b"a".to_vec()],
                "`frames` names 2 data frames, got 1",
            ),
            (
                "more frames than listed",
                vec![
                    request(json!({"frames": [0]})),
                    b"a".to_vec(),
                    b"b".to_vec(),
                ],
                "`frames` names 1 data frames, got 2",
            ),
            (
                "position out of range",
                vec![request(json!({"frames": [2]})), b"a".to_vec()],
                "`frames` names argument 2, but `args` has 2",
            ),
            (
                "position listed twice",
                vec![
                    request(json!({"frames": [1, 1]})),
                    b"a".to_vec(),
                    b"b".to_vec(),
                ],
                "`frames` names argument 1 twice",
            ),
            (
                "placeholder not null",
                vec![
                    body(json!({"id": 5, "password": PASSWORD, "function": "concat",
                        "args": ["x", null], "frames": [0]})),
                    b"a".to_vec(),
                ],
                "`args[0]` must be null: its value is in a data frame",
            ),
            (
                "not UTF-8",
                vec![request(json!({"frames": [1]})), vec![0xff, 0xfe]],
                "the data frame of argument 1 is not valid UTF-8",
            ),
            (
                "frames not positions",
                vec![request(json!({"frames": ["0"]})), b"a".to_vec()],
                "field `frames` must be an array of argument positions",
            ),
            (
                "accept_frames not a boolean",
                vec![request(json!({"accept_frames": 1}))],
                "field `accept_frames` must be a boolean",
            ),
        ];
        for (row, frames, message) in rows {
            let reply = exchange(port, frames);
            let head: Value = serde_json::from_slice(&reply[0]).unwrap();
            assert_eq!(
                head,
                json!({"id": 5, "error": {"type": "ProtocolError", "message": message}}),
                "{row}"
            );
        }
        // The server still serves.
        let c = common::client(port);
        assert_eq!(c.call::<u64>("len", ("abc",)), Ok(3));
    });
}
