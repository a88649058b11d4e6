//! Malformed requests from raw ZeroMQ sockets (REQ and DEALER): each gets a clear error
//! reply, and the server goes on serving. A message over the size limit costs its sender
//! the connection, nobody else anything.

mod common;

use std::time::Duration;

use common::{client, seed_server, start_seed_server, with_timeout, NAME};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);
/// How long a raw socket waits for a reply that must come.
const REPLY_WAIT: Duration = Duration::from_secs(3);

fn endpoint(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, port: u16) -> zmq::Socket {
    let s = ctx.socket(kind).expect("socket");
    s.set_linger(0).expect("linger");
    s.connect(&endpoint(port)).expect("connect");
    s
}

fn receive(s: &zmq::Socket) -> Vec<Vec<u8>> {
    let ready = s
        .poll(zmq::POLLIN, REPLY_WAIT.as_millis() as i64)
        .expect("poll");
    assert_eq!(ready, 1, "no reply within {REPLY_WAIT:?}");
    s.recv_multipart(0).expect("recv")
}

fn parse(frame: &[u8]) -> Value {
    serde_json::from_slice(frame).expect("every reply is JSON")
}

/// Sends one frame from a new REQ socket; returns the reply, parsed.
fn via_req(ctx: &zmq::Context, port: u16, body: &[u8]) -> Value {
    let s = socket(ctx, zmq::REQ, port);
    s.send(body, 0).expect("send");
    let frames = receive(&s);
    assert_eq!(frames.len(), 1, "a REQ socket gets one frame");
    parse(&frames[0])
}

/// Sends `frames` from a new DEALER socket; returns the reply frames.
fn via_dealer(ctx: &zmq::Context, port: u16, frames: &[&[u8]]) -> Vec<Vec<u8>> {
    let s = socket(ctx, zmq::DEALER, port);
    s.send_multipart(frames, 0).expect("send");
    receive(&s)
}

fn error_reply(id: Value, kind: &str, message: &str) -> Value {
    json!({"id": id, "error": {"type": kind, "message": message}})
}

/// The reply's id and error type, and its message cut to `prefix`'s length (for
/// messages that end in serde_json's own wording).
fn assert_error_starting(reply: &Value, id: Value, kind: &str, prefix: &str) {
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["error"]["type"], kind, "{reply}");
    let message = reply["error"]["message"].as_str().expect("a message");
    assert!(message.starts_with(prefix), "{reply}");
    assert_eq!(reply.as_object().map(|o| o.len()), Some(2), "{reply}");
}

#[test]
fn malformed_requests_get_protocol_errors_and_the_server_survives() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let port = server.port();
        let ctx = zmq::Context::new();

        let not_json = via_req(&ctx, port, b"add 5 7");
        assert_error_starting(
            &not_json,
            Value::Null,
            "ProtocolError",
            "request is not valid JSON: ",
        );
        let truncated = via_req(&ctx, port, br#"{"id":1,"password":"pw""#);
        assert_error_starting(
            &truncated,
            Value::Null,
            "ProtocolError",
            "request is not valid JSON: ",
        );
        assert_eq!(
            via_req(&ctx, port, b"{\"id\":1,\"function\":\"\xff\xfe\"}"),
            error_reply(Value::Null, "ProtocolError", "request is not valid UTF-8")
        );
        for body in [&br#"[1, 2]"#[..], br#""add""#, b"12", b"null", b"true"] {
            assert_eq!(
                via_req(&ctx, port, body),
                error_reply(
                    Value::Null,
                    "ProtocolError",
                    "request must be a JSON object"
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }

        // Readable ids are echoed, whatever else is wrong.
        let cases: &[(&str, Value, &str)] = &[
            (
                r#"{"id":7,"function":"add","args":[1,2]}"#,
                json!(7),
                "field `password` is required",
            ),
            (
                r#"{"id":"x","password":"pw"}"#,
                json!("x"),
                "field `function` is required",
            ),
            (
                r#"{"id":true,"password":"pw","function":3}"#,
                json!(true),
                "field `function` must be a string",
            ),
            (
                r#"{"id":2.5,"password":5,"function":"add"}"#,
                json!(2.5),
                "field `password` must be a string",
            ),
            (
                r#"{"id":"a","password":"pw","function":"add","args":{}}"#,
                json!("a"),
                "field `args` must be an array",
            ),
            (
                r#"{"id":"b","password":"pw","function":"add","args":"1,2"}"#,
                json!("b"),
                "field `args` must be an array",
            ),
            (
                r#"{"id":9,"password":"pw","function":"add","args":[1,2],"kwargs":[]}"#,
                json!(9),
                "field `kwargs` must be an object",
            ),
            (
                r#"{"id":10,"password":"pw","function":"add","args":[1,2],"timeout_ms":-1}"#,
                json!(10),
                "field `timeout_ms` must be a non-negative integer",
            ),
            (
                r#"{"id":[1],"password":"pw","function":"add","args":[1,2]}"#,
                Value::Null,
                "field `id` must be a string, number, boolean or null",
            ),
            (
                r#"{"id":{"n":1},"password":"pw","function":"add","args":[1,2]}"#,
                Value::Null,
                "field `id` must be a string, number, boolean or null",
            ),
        ];
        for (body, id, message) in cases {
            assert_eq!(
                via_req(&ctx, port, body.as_bytes()),
                error_reply(id.clone(), "ProtocolError", message),
                "{body}"
            );
        }
        assert_eq!(
            via_req(
                &ctx,
                port,
                br#"{"id":"w","password":"wrong","function":"add","args":[1,2]}"#
            ),
            error_reply(json!("w"), "PermissionError", "wrong password")
        );

        // DEALER framing: [empty, body] is the norm; anything else is answered too.
        let extra = via_dealer(
            &ctx,
            port,
            &[
                b"",
                br#"{"id":3,"password":"pw","function":"add","args":[1,2]}"#,
                b"extra",
            ],
        );
        assert_eq!(extra.len(), 2, "[empty, reply]");
        assert!(extra[0].is_empty());
        // docs/protocol.md 4.1: the frame count is checked before any body is read, so
        // the id is not read either.
        assert_eq!(
            parse(&extra[1]),
            error_reply(
                Value::Null,
                "ProtocolError",
                "a request is one frame after the envelope, got 2"
            )
        );
        let empty_body = via_dealer(&ctx, port, &[b"", b""]);
        assert_eq!(empty_body.len(), 2);
        assert_error_starting(
            &parse(&empty_body[1]),
            Value::Null,
            "ProtocolError",
            "request is not valid JSON: ",
        );
        let only_delimiter = via_dealer(&ctx, port, &[b""]);
        assert_eq!(only_delimiter.len(), 2);
        assert_eq!(
            parse(&only_delimiter[1]),
            error_reply(
                Value::Null,
                "ProtocolError",
                "a request is one frame after the envelope, got 0"
            )
        );
        let empty_req = via_req(&ctx, port, b"");
        assert_error_starting(
            &empty_req,
            Value::Null,
            "ProtocolError",
            "request is not valid JSON: ",
        );
        // A DEALER without the empty delimiter is served, and answered in kind.
        let bare = via_dealer(
            &ctx,
            port,
            &[br#"{"id":4,"password":"pw","function":"add","args":[2,3]}"#],
        );
        assert_eq!(bare.len(), 1, "[reply]");
        assert_eq!(parse(&bare[0]), json!({"id": 4, "result": 5}));

        // After all of that, normal calls work, raw and through the client.
        assert_eq!(
            via_req(
                &ctx,
                port,
                br#"{"id":1,"password":"pw","function":"add","args":[5,7]}"#
            ),
            json!({"id": 1, "result": 12})
        );
        let c = client(port);
        assert_eq!(c.call::<i64>("add", (5, 7)), Ok(12));
        assert_eq!(c.ping(), Ok(NAME.to_owned()));
    });
}

#[test]
fn a_message_over_the_size_limit_drops_only_its_sender() {
    with_timeout(LIMIT, || {
        let server = seed_server(NAME)
            .max_message_size(1024)
            .workers(2)
            .start()
            .expect("server starts");
        let port = server.port();
        let ctx = zmq::Context::new();
        let request = |text: &str| {
            json!({"id": text.len(), "password": "pw", "function": "echo", "args": [text]})
                .to_string()
        };

        // Just under the limit: answered.
        let small = request(&"s".repeat(900));
        assert!(small.len() < 1024, "{}", small.len());
        let reply = via_dealer(&ctx, port, &[b"", small.as_bytes()]);
        assert_eq!(
            parse(&reply[1]),
            json!({"id": 900, "result": {"args": ["s".repeat(900)], "kwargs": {}}})
        );

        // Over the limit: libzmq drops the connection; watch it happen on our side.
        let big = request(&"b".repeat(2000));
        let dealer = socket(&ctx, zmq::DEALER, port);
        dealer
            .monitor(
                "inproc://oversize-monitor",
                zmq::SocketEvent::DISCONNECTED as i32,
            )
            .expect("monitor");
        let events = ctx.socket(zmq::PAIR).expect("pair");
        events.set_linger(0).expect("linger");
        events
            .connect("inproc://oversize-monitor")
            .expect("connect the monitor");
        dealer
            .send_multipart([&b""[..], big.as_bytes()], 0)
            .expect("send");
        assert_eq!(
            events
                .poll(zmq::POLLIN, REPLY_WAIT.as_millis() as i64)
                .expect("poll"),
            1,
            "the server did not drop the connection"
        );
        let event = events.recv_multipart(0).expect("monitor event");
        let code = u16::from_le_bytes([event[0][0], event[0][1]]);
        assert_eq!(
            zmq::SocketEvent::from_raw(code),
            zmq::SocketEvent::DISCONNECTED
        );
        assert_eq!(
            dealer.poll(zmq::POLLIN, 200).expect("poll"),
            0,
            "no reply to a message that was refused"
        );

        // Other clients are served meanwhile, and the dropped one after it reconnects.
        let c = client(port);
        assert_eq!(c.call::<i64>("add", (5, 7)), Ok(12));
        assert_eq!(c.ping(), Ok(NAME.to_owned()));
        let again = request("again");
        dealer
            .send_multipart([&b""[..], again.as_bytes()], 0)
            .expect("send");
        let reply = receive(&dealer);
        assert_eq!(
            parse(&reply[1]),
            json!({"id": 5, "result": {"args": ["again"], "kwargs": {}}})
        );
    });
}
