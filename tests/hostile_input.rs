//! Hostile input, table-driven, on both network endpoints of a server: the client
//! endpoint and the worker endpoint. Every row is sent from a raw ZeroMQ socket; a
//! client row must be answered with a clear `ProtocolError` (or the error its content
//! deserves), a worker row must be dropped and counted (or answered with DISCONNECT).
//! After every row a normal call must succeed: nothing panics, the broker keeps serving.

mod common;

use std::time::Duration;

use common::{with_timeout, PASSWORD};
use serde_json::{json, Value};
use zmq_rpc::{RpcClient, RpcServer, ServerHandle};

const REPLY_WAIT: Duration = Duration::from_secs(5);
/// Under the default 4 MiB message limit, so these reach the decoder.
const BIG: usize = 3 * 1024 * 1024;

fn start() -> ServerHandle {
    let mut server = RpcServer::new(PASSWORD, "hostile")
        .host("127.0.0.1")
        .port(0)
        .worker_port(0)
        .workers(2);
    server.add_external_function(|a: i64, b: i64| a + b, "add");
    server.add_raw_function(|args, _| Value::Array(args), "echo");
    server.start().expect("server starts")
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn request(extra: &str) -> Vec<u8> {
    format!(r#"{{"id":9,"password":"{PASSWORD}","function":"add"{extra}}}"#).into_bytes()
}

#[test]
fn hostile_client_messages_get_clear_errors_and_the_server_keeps_serving() {
    with_timeout(Duration::from_secs(120), || {
        let server = start();
        let port = server.port();
        let ctx = zmq::Context::new();
        let client = RpcClient::new(PASSWORD, "127.0.0.1", port).timeout(REPLY_WAIT);
        let huge_array = format!(",\"args\":[{}0]", "0,".repeat(BIG / 2 - 8));
        let huge_string = format!(",\"args\":[\"{}\",1]", "x".repeat(BIG));
        // (row, frames after the DEALER's empty delimiter, expected error type,
        //  expected start of the message)
        let rows: Vec<(&str, Vec<Vec<u8>>, &str, &str)> = vec![
            (
                "not UTF-8",
                vec![b"{\"id\":\xff}".to_vec()],
                "ProtocolError",
                "request is not valid UTF-8",
            ),
            (
                "not JSON",
                vec![b"add 1 2".to_vec()],
                "ProtocolError",
                "request is not valid JSON",
            ),
            (
                "JSON array",
                vec![b"[1,2]".to_vec()],
                "ProtocolError",
                "request must be a JSON object",
            ),
            (
                "JSON string",
                vec![b"\"add\"".to_vec()],
                "ProtocolError",
                "request must be a JSON object",
            ),
            (
                "wrong field type",
                vec![request(r#","args":{"a":1}"#)],
                "ProtocolError",
                "field `args` must be an array",
            ),
            (
                "id an object",
                vec![br#"{"id":{"x":1},"password":"pw","function":"add"}"#.to_vec()],
                "ProtocolError",
                "field `id` must be",
            ),
            (
                "negative timeout",
                vec![request(r#","timeout_ms":-5"#)],
                "ProtocolError",
                "field `timeout_ms` must be a non-negative integer",
            ),
            (
                "huge timeout",
                vec![request(r#","timeout_ms":1e300"#)],
                "ProtocolError",
                "field `timeout_ms` must be a non-negative integer",
            ),
            (
                "number beyond f64",
                vec![request(r#","args":[1e999,1]"#)],
                "ProtocolError",
                "request is not valid JSON",
            ),
            (
                "huge integer",
                vec![request(r#","args":[123456789012345678901234567890,1]"#)],
                "TypeError",
                "",
            ),
            (
                "deep nesting",
                vec![request(&format!(",\"args\":[{}]", nested(100_000)))],
                "ProtocolError",
                "request is not valid JSON",
            ),
            (
                "deep nesting in kwargs",
                vec![request(&format!(",\"kwargs\":{{\"a\":{}}}", nested(5_000)))],
                "ProtocolError",
                "request is not valid JSON",
            ),
            (
                "enormous array",
                vec![request(&huge_array)],
                "TypeError",
                "",
            ),
            ("huge string", vec![request(&huge_string)], "TypeError", ""),
            (
                "huge function name",
                vec![format!(
                    r#"{{"id":9,"password":"{PASSWORD}","function":"{}"}}"#,
                    "f".repeat(BIG)
                )
                .into_bytes()],
                "NameError",
                "",
            ),
            (
                "extra frame",
                vec![request(""), b"extra".to_vec()],
                "ProtocolError",
                "a request is one frame after the envelope, got 2",
            ),
            (
                "missing body",
                vec![],
                "ProtocolError",
                "a request is one frame after the envelope, got 0",
            ),
            (
                "empty body",
                vec![Vec::new()],
                "ProtocolError",
                "request is not valid JSON",
            ),
            (
                "empty frames",
                vec![Vec::new(), Vec::new(), Vec::new()],
                "ProtocolError",
                "a request is one frame after the envelope, got 3",
            ),
        ];
        for (row, body, kind, prefix) in rows {
            let s = common::raw_dealer(&ctx, port);
            let mut frames = vec![Vec::new()];
            frames.extend(body);
            s.send_multipart(frames, 0).unwrap();
            let reply =
                common::recv_frames(&s, REPLY_WAIT).unwrap_or_else(|| panic!("{row}: no reply"));
            assert_eq!(reply.len(), 2, "{row}: [empty, body]");
            let reply: Value = serde_json::from_slice(&reply[1])
                .unwrap_or_else(|e| panic!("{row}: reply is not JSON: {e}"));
            assert_eq!(reply["error"]["type"], kind, "{row}: {reply}");
            let message = reply["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(prefix), "{row}: {message}");
            assert!(
                message.len() < 1024,
                "{row}: the error does not echo the input"
            );
            common::still_serves(&client, row);
        }
        // A message over the size limit costs its sender the connection (libzmq drops
        // it before it is read); see tests/malformed.rs for the event-level check.
        let s = common::raw_dealer(&ctx, port);
        s.send_multipart([Vec::new(), vec![b' '; 5 * 1024 * 1024]], 0)
            .unwrap();
        assert!(
            common::recv_frames(&s, Duration::from_millis(500)).is_none(),
            "oversized: no reply"
        );
        common::still_serves(&client, "oversized message");
        assert_eq!(
            server.dropped_messages(),
            0,
            "client input is answered, not dropped"
        );
    });
}

#[test]
fn hostile_worker_messages_are_dropped_and_counted_and_the_broker_keeps_serving() {
    with_timeout(Duration::from_secs(120), || {
        let server = start();
        let ctx = zmq::Context::new();
        let client = RpcClient::new(PASSWORD, "127.0.0.1", server.port()).timeout(REPLY_WAIT);
        let worker_port = server.worker_port().unwrap();
        let ready = |name: &str, functions: Value| -> Vec<Vec<u8>> {
            vec![
                b"ZRPC-W1".to_vec(),
                b"READY".to_vec(),
                json!({"password": PASSWORD, "name": name, "capacity": 1,
                       "heartbeat_ms": 60_000, "functions": functions})
                .to_string()
                .into_bytes(),
            ]
        };
        let f = |frames: &[&[u8]]| frames.iter().map(|f| f.to_vec()).collect::<Vec<_>>();
        // A registered impostor that serves nothing anyone calls: replies for requests
        // it was never given must not reach any client.
        let impostor = common::raw_dealer(&ctx, worker_port);
        impostor
            .send_multipart(ready("impostor", json!([{"name": "idle"}])), 0)
            .unwrap();
        common::wait_for_workers(&client, "idle", 1, REPLY_WAIT);

        // (row, frames, sent by the registered impostor rather than a stranger)
        let reply_body = br#"{"result":"forged"}"#;
        let rows: Vec<(&str, Vec<Vec<u8>>, bool)> = vec![
            ("unknown command", f(&[b"ZRPC-W1", b"FLY"]), false),
            ("unknown command, registered", f(&[b"ZRPC-W1", b"FLY", b"x"]), true),
            ("wrong protocol", f(&[b"MDPW01", b"READY", b"{}"]), false),
            ("only the protocol frame", f(&[b"ZRPC-W1"]), false),
            ("one empty frame", f(&[b""]), false),
            ("empty frames", f(&[b"", b"", b""]), true),
            ("READY not UTF-8", f(&[b"ZRPC-W1", b"READY", b"\xff\xfe"]), false),
            ("READY not JSON", f(&[b"ZRPC-W1", b"READY", b"{"]), false),
            ("READY wrong shape", f(&[b"ZRPC-W1", b"READY", b"[]"]), false),
            ("READY missing body", f(&[b"ZRPC-W1", b"READY"]), false),
            ("READY extra frame", f(&[b"ZRPC-W1", b"READY", b"{}", b"{}"]), false),
            ("READY deep nesting", vec![b"ZRPC-W1".to_vec(), b"READY".to_vec(), format!("{{\"functions\":{}}}", nested(100_000)).into_bytes()], false),
            ("READY huge capacity", vec![b"ZRPC-W1".to_vec(), b"READY".to_vec(), json!({"password": PASSWORD, "name": "x", "capacity": 1e30, "heartbeat_ms": 1, "functions": []}).to_string().into_bytes()], false),
            ("REPLY key not a number", f(&[b"ZRPC-W1", b"REPLY", b"abc", reply_body]), true),
            ("REPLY key too large", f(&[b"ZRPC-W1", b"REPLY", b"99999999999999999999999", reply_body]), true),
            ("REPLY body not JSON", f(&[b"ZRPC-W1", b"REPLY", b"1", b"{"]), true),
            ("REPLY missing frames", f(&[b"ZRPC-W1", b"REPLY"]), true),
            ("REPLY for a request never given", f(&[b"ZRPC-W1", b"REPLY", b"4242", reply_body]), true),
            ("REPLY for a request never given, again", f(&[b"ZRPC-W1", b"REPLY", b"1", reply_body]), true),
            ("HEARTBEAT extra frame", f(&[b"ZRPC-W1", b"HEARTBEAT", b"x"]), true),
            ("huge frame", vec![b"ZRPC-W1".to_vec(), b"REPLY".to_vec(), b"7".to_vec(), vec![b'x'; BIG]], true),
        ];
        for (row, frames, registered) in rows {
            let before = server.dropped_messages();
            let sender = if registered {
                &impostor
            } else {
                &common::raw_dealer(&ctx, worker_port)
            };
            sender.send_multipart(frames, 0).unwrap();
            // Counted, and nothing is sent back to the sender in return.
            let deadline = std::time::Instant::now() + REPLY_WAIT;
            while server.dropped_messages() == before {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{row}: not counted as dropped"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(server.dropped_messages(), before + 1, "{row}");
            common::still_serves(&client, row);
        }
        // The impostor never received a request: it serves nothing anyone called.
        let got = common::recv_frames(&impostor, Duration::from_millis(100));
        assert!(
            got.as_ref().map_or(true, |m| m.get(1).map(Vec::as_slice)
                == Some(&b"HEARTBEAT"[..])),
            "{got:?}"
        );
        // A stranger (never registered) sending valid commands is told to register.
        let stranger = common::raw_dealer(&ctx, worker_port);
        stranger
            .send_multipart(f(&[b"ZRPC-W1", b"REPLY", b"1", reply_body]), 0)
            .unwrap();
        let answer = common::recv_frames(&stranger, REPLY_WAIT).expect("a DISCONNECT");
        assert_eq!(answer[1], b"DISCONNECT", "{answer:?}");
        common::still_serves(&client, "stranger");
    });
}
