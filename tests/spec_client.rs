//! A client written from `docs/protocol.md` alone: a raw ZeroMQ REQ (or DEALER) socket
//! and hand-built JSON, no zmq-rpc client code. Each test starts a real server on
//! 127.0.0.1 with an ephemeral port and fails within 20 s if anything hangs.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use zmq_rpc::ServerHandle;

const PASSWORD: &str = "geheim";
const SERVER_NAME: &str = "spec-server";
/// A test that has not finished by then has hung.
const HARD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request waits for its reply.
const REPLY_TIMEOUT_MS: i32 = 5000;

/// Runs `body` on its own thread; fails the test if it panics or takes longer than
/// [`HARD_TIMEOUT`].
fn with_timeout(body: impl FnOnce() + Send + 'static) {
    common::with_timeout(HARD_TIMEOUT, body);
}

fn start_server() -> (ServerHandle, Arc<AtomicU64>) {
    common::start_spec_server(PASSWORD, SERVER_NAME)
}

fn endpoint(server: &ServerHandle) -> String {
    format!("tcp://127.0.0.1:{}", server.port())
}

/// A REQ socket, as section 4.1 recommends.
fn req_socket(ctx: &zmq::Context, server: &ServerHandle) -> zmq::Socket {
    let s = ctx.socket(zmq::REQ).expect("REQ socket");
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(REPLY_TIMEOUT_MS).unwrap();
    s.connect(&endpoint(server)).expect("connect");
    s
}

/// Sends `frames` on a REQ socket and returns the reply's body, parsed.
fn exchange(socket: &zmq::Socket, frames: &[&[u8]]) -> Value {
    socket.send_multipart(frames, 0).expect("send");
    let reply = socket
        .recv_multipart(0)
        .expect("a reply within the reply timeout");
    assert_eq!(reply.len(), 1, "a REQ socket receives one frame: {reply:?}");
    let text = std::str::from_utf8(&reply[0]).expect("the reply is UTF-8");
    let value: Value = serde_json::from_str(text).expect("the reply is JSON");
    assert!(value.is_object(), "the reply is an object: {text}");
    value
}

fn call(socket: &zmq::Socket, request: &Value) -> Value {
    exchange(socket, &[request.to_string().as_bytes()])
}

/// Checks that `reply` is an error of `kind` for `id`, and returns its message.
fn expect_error(reply: &Value, kind: &str, id: &Value) -> String {
    assert_eq!(&reply["id"], id, "{reply}");
    assert!(reply.get("result").is_none(), "{reply}");
    assert_eq!(reply["error"]["type"], json!(kind), "{reply}");
    reply["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error.message is a string: {reply}"))
        .to_owned()
}

#[test]
fn a_call_returns_its_result_and_echoes_the_id() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        let r = call(
            &s,
            &json!({"id": "spec-1", "password": PASSWORD, "function": "add", "args": [5, 7]}),
        );
        assert_eq!(r, json!({"id": "spec-1", "result": 12}));
        // Keyword arguments, a deadline and an unknown field (which must be ignored).
        let r = call(
            &s,
            &json!({"id": 2, "password": PASSWORD, "function": "add", "args": [5],
                    "kwargs": {"b": 7}, "timeout_ms": 3000, "trace": "ignored"}),
        );
        assert_eq!(r, json!({"id": 2, "result": 12}));
        // No id at all: the reply's id is null.
        let r = call(
            &s,
            &json!({"password": PASSWORD, "function": "add", "args": [1, 2]}),
        );
        assert_eq!(r, json!({"id": null, "result": 3}));
    });
}

#[test]
fn an_unknown_function_is_a_name_error() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        let r = call(
            &s,
            &json!({"id": 3, "password": PASSWORD, "function": "sub", "args": [5, 7]}),
        );
        let message = expect_error(&r, "NameError", &json!(3));
        assert!(message.contains("sub"), "{message}");
    });
}

#[test]
fn a_wrong_password_is_a_permission_error_before_anything_else() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        for function in ["add", "sub", "ping"] {
            let r = call(
                &s,
                &json!({"id": 4, "password": "falsch", "function": function, "args": [5, 7]}),
            );
            expect_error(&r, "PermissionError", &json!(4));
        }
        // A missing password is malformed, not wrong.
        let r = call(&s, &json!({"id": 5, "function": "add", "args": [5, 7]}));
        let message = expect_error(&r, "ProtocolError", &json!(5));
        assert!(message.contains("password"), "{message}");
    });
}

#[test]
fn a_frame_that_is_not_json_is_a_protocol_error_with_a_null_id() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        for frame in [&b"add(5, 7)"[..], b"", b"\xff\xfe", b"[5,7]"] {
            let r = exchange(&s, &[frame]);
            expect_error(&r, "ProtocolError", &Value::Null);
        }
        // A readable id is echoed even when the rest is wrong.
        let r = exchange(
            &s,
            &[br#"{"id":"x","password":"geheim","function":"add","args":5}"#],
        );
        let message = expect_error(&r, "ProtocolError", &json!("x"));
        assert!(message.contains("args"), "{message}");
        // The server still works after all that.
        let r = call(
            &s,
            &json!({"id": 6, "password": PASSWORD, "function": "add", "args": [5, 7]}),
        );
        assert_eq!(r["result"], json!(12));
    });
}

#[test]
fn extra_frames_are_a_protocol_error() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        let body = json!({"id": 7, "password": PASSWORD, "function": "add", "args": [5, 7]});
        let r = exchange(&s, &[body.to_string().as_bytes(), b"extra"]);
        let message = expect_error(&r, "ProtocolError", &Value::Null);
        assert!(message.contains("one frame"), "{message}");
    });
}

#[test]
fn ping_returns_the_server_name() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        let r = call(
            &s,
            &json!({"id": 8, "password": PASSWORD, "function": "ping"}),
        );
        assert_eq!(r, json!({"id": 8, "result": SERVER_NAME}));
    });
}

#[test]
fn list_functions_describes_every_registered_function() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        let r = call(
            &s,
            &json!({"id": 9, "password": PASSWORD, "function": "list_functions", "args": []}),
        );
        assert_eq!(r["id"], json!(9));
        let list = r["result"].as_array().expect("an array");
        let names: Vec<&str> = list.iter().filter_map(|f| f["name"].as_str()).collect();
        assert_eq!(names, ["add", "div", "next"], "sorted by name: {r}");
        assert_eq!(
            list[0],
            json!({"name": "add", "description": "Adds two numbers.", "params": 2,
                   "param_names": ["a", "b"], "idempotent": false,
                   // the spec server's 2 local workers each register
                   "workers": 2})
        );
        for f in list {
            for field in [
                "name",
                "description",
                "params",
                "param_names",
                "idempotent",
                "workers",
            ] {
                assert!(f.get(field).is_some(), "{field} missing in {f}");
            }
        }
    });
}

#[test]
fn worker_errors_come_back_as_typed_errors() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        let r = call(
            &s,
            &json!({"id": 10, "password": PASSWORD, "function": "div", "args": [1, 0]}),
        );
        assert_eq!(
            expect_error(&r, "RuntimeError", &json!(10)),
            "division by zero"
        );
        let r = call(
            &s,
            &json!({"id": 11, "password": PASSWORD, "function": "add", "args": [1, 2, 3]}),
        );
        expect_error(&r, "TypeError", &json!(11));
        let r = call(
            &s,
            &json!({"id": 12, "password": PASSWORD, "function": "add", "args": [1], "kwargs": {"c": 2}}),
        );
        expect_error(&r, "TypeError", &json!(12));
    });
}

#[test]
fn a_deadline_of_zero_is_a_timeout_error() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        let r = call(
            &s,
            &json!({"id": 13, "password": PASSWORD, "function": "add", "args": [5, 7], "timeout_ms": 0}),
        );
        expect_error(&r, "TimeoutError", &json!(13));
    });
}

#[test]
fn a_retry_with_the_same_id_does_not_run_the_call_again() {
    with_timeout(|| {
        let (server, counter) = start_server();
        let ctx = zmq::Context::new();
        let s = req_socket(&ctx, &server);
        let first = json!({"id": "retry-a", "password": PASSWORD, "function": "next"});
        assert_eq!(call(&s, &first)["result"], json!(1));
        // Same id, same call, on a new socket (as after a lost reply): the stored reply.
        let s2 = req_socket(&ctx, &server);
        assert_eq!(call(&s2, &first), json!({"id": "retry-a", "result": 1}));
        assert_eq!(counter.load(Ordering::SeqCst), 1, "ran once");
        // A new id is a new call.
        let second = json!({"id": "retry-b", "password": PASSWORD, "function": "next"});
        assert_eq!(call(&s2, &second)["result"], json!(2));
    });
}

#[test]
fn a_dealer_client_sends_and_receives_the_empty_delimiter() {
    with_timeout(|| {
        let (server, _) = start_server();
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::DEALER).expect("DEALER socket");
        s.set_linger(0).unwrap();
        s.set_rcvtimeo(REPLY_TIMEOUT_MS).unwrap();
        s.connect(&endpoint(&server)).expect("connect");
        // Two requests in flight at once, matched by id.
        for id in [21, 22] {
            let body = json!({"id": id, "password": PASSWORD, "function": "add", "args": [id, 1]});
            s.send_multipart([&b""[..], body.to_string().as_bytes()], 0)
                .expect("send");
        }
        let mut results = Vec::new();
        for _ in 0..2 {
            let frames = s.recv_multipart(0).expect("a reply");
            assert_eq!(frames.len(), 2, "[delimiter, reply]: {frames:?}");
            assert!(frames[0].is_empty(), "the delimiter comes back first");
            let reply: Value = serde_json::from_slice(&frames[1]).expect("JSON");
            results.push((reply["id"].as_i64().unwrap(), reply["result"].clone()));
        }
        results.sort_by_key(|(id, _)| *id);
        assert_eq!(results, [(21, json!(22)), (22, json!(23))]);
    });
}
