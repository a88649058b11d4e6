//! Golden vectors of the wire protocol (format: `docs/protocol.md`, "Golden vectors").
//!
//! Every file in `tests/vectors/client/` and `tests/vectors/worker/` must decode, mean
//! what its `decoded` field says, and re-encode to exactly its bytes. Every file in
//! `tests/vectors/invalid/` must be refused with the error it names. An empty directory,
//! an unknown `kind` or a message kind without a vector fails the test, so it cannot
//! pass by checking nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use zmq_rpc::protocol::{
    decode_broker_message, decode_reply, decode_reply_frames, decode_request,
    decode_request_frames, decode_worker_message, encode_broker_message, encode_reply,
    encode_reply_frames, encode_request, encode_request_frames, encode_worker_message,
    function_info_json, BrokerMessage, Reply, Request, WorkerMessage,
};
use zmq_rpc::Error;

/// A vector file, loaded.
struct Vector {
    path: PathBuf,
    kind: String,
    frames: Vec<Vec<u8>>,
    json: Value,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// All `*.json` files of `tests/vectors/<sub>`, sorted, loaded; panics on an empty or
/// missing directory and on a file that is not a vector.
fn load_all(sub: &str) -> Vec<Vector> {
    let dir = vectors_dir().join(sub);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no vectors in {}", dir.display());
    paths.into_iter().map(|p| load(&p)).collect()
}

fn load(path: &Path) -> Vector {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let name = path.display();
    assert!(
        json["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{name}: needs a non-empty `description`"
    );
    let kind = json["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: needs a string `kind`"))
        .to_owned();
    let frames = json["frames"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: needs an array `frames`"))
        .iter()
        .map(|f| match f {
            Value::String(s) => s.clone().into_bytes(),
            Value::Object(o) => hex(o
                .get("hex")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{name}: a frame is a string or {{\"hex\": \"...\"}}"))),
            other => panic!("{name}: a frame is a string or {{\"hex\": \"...\"}}, not {other}"),
        })
        .collect();
    Vector {
        path: path.to_owned(),
        kind,
        frames,
        json,
    }
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "hex frame {s:?} has an odd length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex frame"))
        .collect()
}

/// The shortest string a vector with data frames puts in one (its `frame_min_bytes`).
fn frame_min(v: &Vector) -> usize {
    v.json["frame_min_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: needs `frame_min_bytes`", v.path.display())) as usize
}

fn one_frame(v: &Vector) -> &[u8] {
    match v.frames.as_slice() {
        [frame] => frame,
        other => panic!(
            "{}: a {} vector has exactly one frame, not {}",
            v.path.display(),
            v.kind,
            other.len()
        ),
    }
}

fn outcome_view(map: &mut Map<String, Value>, outcome: &Result<Value, Error>) {
    match outcome {
        Ok(v) => {
            map.insert("result".into(), v.clone());
        }
        Err(e) => {
            let mut err = json!({"type": e.kind_name(), "message": e.message()});
            if let Error::Overloaded { retry_after, .. } = e {
                err["retry_after_ms"] = json!(retry_after.as_millis() as u64);
            }
            map.insert("error".into(), err);
        }
    }
}

fn request_view(r: &Request) -> Value {
    let mut v = json!({
        "password": r.password,
        "function": r.function,
        "args": r.args,
        "kwargs": r.kwargs,
        "timeout_ms": r.timeout_ms,
    });
    if let Some(id) = &r.id {
        v["id"] = id.clone();
    }
    if r.accept_frames {
        v["accept_frames"] = json!(true);
    }
    if !r.ack.is_empty() {
        v["ack"] = json!(r.ack);
    }
    v
}

fn reply_view(r: &Reply) -> Value {
    let mut map = Map::new();
    map.insert("id".into(), r.id.clone());
    outcome_view(&mut map, &r.outcome);
    Value::Object(map)
}

fn worker_view(m: &WorkerMessage) -> Value {
    match m {
        WorkerMessage::Ready(r) => json!({
            "command": "READY",
            "password": r.password,
            "name": r.name,
            "capacity": r.capacity,
            "heartbeat_ms": r.heartbeat_ms,
            "functions": r.functions.iter().map(function_info_json).collect::<Vec<_>>(),
        }),
        WorkerMessage::Reply { key, outcome } => {
            let mut map = Map::new();
            map.insert("command".into(), "REPLY".into());
            map.insert("key".into(), (*key).into());
            outcome_view(&mut map, outcome);
            Value::Object(map)
        }
        WorkerMessage::Heartbeat => json!({"command": "HEARTBEAT"}),
        WorkerMessage::Drain => json!({"command": "DRAIN"}),
        WorkerMessage::Disconnect { reason } => json!({"command": "DISCONNECT", "reason": reason}),
    }
}

fn broker_view(m: &BrokerMessage) -> Value {
    match m {
        BrokerMessage::Request { key, call } => json!({
            "command": "REQUEST",
            "key": key,
            "function": call.function,
            "args": call.args,
            "kwargs": call.kwargs,
            "timeout_ms": call.timeout_ms,
        }),
        BrokerMessage::Heartbeat => json!({"command": "HEARTBEAT"}),
        BrokerMessage::Disconnect { reason } => json!({"command": "DISCONNECT", "reason": reason}),
    }
}

fn show(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Decodes, compares with `decoded`, re-encodes and compares with the bytes. Returns
/// the vector's `(kind, command or error type)` for the coverage checks.
fn check_valid(v: &Vector) -> Result<(String, String), String> {
    let (view, reencoded, label) = match v.kind.as_str() {
        // With data frames (docs/protocol.md 4.10) when the file has more than one
        // frame: they are re-encoded with the file's `frame_min_bytes`.
        "client_request" if v.frames.len() > 1 => {
            let r = decode_request_frames(&v.frames[0], v.frames[1..].to_vec())
                .map_err(|bad| format!("{:?}", bad.error))?;
            let label = format!("{} with data frames", r.function);
            (
                request_view(&r),
                encode_request_frames(&r, frame_min(v)),
                label,
            )
        }
        "client_request" => {
            let r = decode_request(one_frame(v)).map_err(|bad| format!("{:?}", bad.error))?;
            let label = if r.ack.is_empty() {
                r.function.clone()
            } else {
                format!("{} with acknowledgements", r.function)
            };
            (request_view(&r), vec![encode_request(&r)], label)
        }
        "client_reply" if v.frames.len() > 1 => {
            let r = decode_reply_frames(&v.frames[0], v.frames[1..].to_vec())
                .map_err(|e| e.to_string())?;
            let frames = encode_reply_frames(&r, frame_min(v));
            (reply_view(&r), frames, "result in a data frame".to_owned())
        }
        "client_reply" => {
            let r = decode_reply(one_frame(v)).map_err(|e| e.to_string())?;
            let label = match &r.outcome {
                Ok(_) => "result".to_owned(),
                Err(e) => e.kind_name().to_owned(),
            };
            (reply_view(&r), vec![encode_reply(&r)], label)
        }
        "worker_message" => {
            let m = decode_worker_message(&v.frames).map_err(|e| e.to_string())?;
            let view = worker_view(&m);
            let label = view["command"].as_str().unwrap_or_default().to_owned();
            (view, encode_worker_message(&m), label)
        }
        "broker_message" => {
            let m = decode_broker_message(&v.frames).map_err(|e| e.to_string())?;
            let view = broker_view(&m);
            let label = view["command"].as_str().unwrap_or_default().to_owned();
            (view, encode_broker_message(&m), label)
        }
        other => return Err(format!("unknown kind {other:?}")),
    };
    if view != v.json["decoded"] {
        return Err(format!(
            "decodes to\n  {view}\nbut the file says\n  {}",
            v.json["decoded"]
        ));
    }
    if reencoded != v.frames {
        return Err(format!(
            "re-encodes to\n  {:?}\nnot to the file's frames\n  {:?}",
            show(&reencoded),
            show(&v.frames)
        ));
    }
    Ok((v.kind.clone(), label))
}

fn check_all_valid() -> BTreeSet<(String, String)> {
    let vectors: Vec<Vector> = ["client", "worker"]
        .iter()
        .flat_map(|d| load_all(d))
        .collect();
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    for v in &vectors {
        if v.json["frames"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| !f.is_string()))
        {
            failures.push(format!(
                "{}: valid vectors hold text frames only",
                v.path.display()
            ));
            continue;
        }
        match check_valid(v) {
            Ok(label) => {
                covered.insert(label);
            }
            Err(e) => failures.push(format!("{}: {e}", v.path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    covered
}

#[test]
fn valid_vectors_decode_and_reencode_byte_for_byte() {
    let covered = check_all_valid();
    assert!(
        covered.len() >= 20,
        "only {} distinct vectors",
        covered.len()
    );
}

#[test]
fn every_message_kind_and_error_type_has_a_vector() {
    let covered = check_all_valid();
    let has = |kind: &str, label: &str| covered.contains(&(kind.to_owned(), label.to_owned()));
    let mut missing = Vec::new();
    for label in [
        "add",
        "ping",
        "list_functions",
        "concat with data frames",
        "add with acknowledgements",
    ] {
        if !has("client_request", label) {
            missing.push(format!("client_request {label}"));
        }
    }
    for label in [
        "result",
        "TimeoutError",
        "RuntimeError",
        "NameError",
        "PermissionError",
        "TypeError",
        "ProtocolError",
        "OverloadError",
        "UnavailableError",
        "result in a data frame",
    ] {
        if !has("client_reply", label) {
            missing.push(format!("client_reply {label}"));
        }
    }
    for label in ["READY", "REPLY", "HEARTBEAT", "DRAIN", "DISCONNECT"] {
        if !has("worker_message", label) {
            missing.push(format!("worker_message {label}"));
        }
    }
    for label in ["REQUEST", "HEARTBEAT", "DISCONNECT"] {
        if !has("broker_message", label) {
            missing.push(format!("broker_message {label}"));
        }
    }
    assert!(missing.is_empty(), "no vector for: {missing:?}");
}

#[test]
fn invalid_vectors_are_refused_as_described() {
    let vectors = load_all("invalid");
    let mut failures = Vec::new();
    let mut kinds = BTreeSet::new();
    for v in &vectors {
        let name = v.path.display();
        let want_type = v.json["error"]["type"].as_str();
        let want_text = v.json["error"]["message_contains"].as_str();
        let (Some(want_type), Some(want_text)) = (want_type, want_text) else {
            failures.push(format!(
                "{name}: needs `error.type` and `error.message_contains`"
            ));
            continue;
        };
        let got: Result<Error, String> = match v.kind.as_str() {
            "client_request" => match decode_request(one_frame(v)) {
                Ok(r) => Err(format!("decoded as {r:?}")),
                Err(bad) => match v.json.get("id") {
                    None => Err("a client_request vector needs `id`".into()),
                    Some(id) if *id != bad.id => Err(format!(
                        "the error reply's id would be {}, not {id}",
                        bad.id
                    )),
                    Some(_) => Ok(bad.error),
                },
            },
            "client_reply" => {
                decode_reply(one_frame(v)).map_or_else(Ok, |r| Err(format!("decoded as {r:?}")))
            }
            "worker_message" => decode_worker_message(&v.frames)
                .map_or_else(Ok, |m| Err(format!("decoded as {m:?}"))),
            "broker_message" => decode_broker_message(&v.frames)
                .map_or_else(Ok, |m| Err(format!("decoded as {m:?}"))),
            other => Err(format!("unknown kind {other:?}")),
        };
        match got {
            Ok(e) if e.kind_name() == want_type && e.message().contains(want_text) => {
                kinds.insert(v.kind.clone());
            }
            Ok(e) => failures.push(format!(
                "{name}: refused with {e}, expected {want_type} containing {want_text:?}"
            )),
            Err(why) => failures.push(format!("{name}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let all: BTreeSet<String> = [
        "client_request",
        "client_reply",
        "worker_message",
        "broker_message",
    ]
    .iter()
    .map(|k| (*k).to_owned())
    .collect();
    assert_eq!(kinds, all, "every kind needs invalid vectors");
}

#[test]
fn the_worked_example_in_the_spec_matches_the_vectors() {
    // docs/protocol.md walks through add(5, 7) with these exact frames.
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md"))
            .expect("docs/protocol.md");
    for file in [
        "client/request_add.json",
        "client/reply_result.json",
        "worker/request.json",
        "worker/reply_ok.json",
    ] {
        let v = load(&vectors_dir().join(file));
        for frame in &v.frames {
            let text = String::from_utf8(frame.clone()).expect("text frame");
            assert!(
                spec.contains(&text),
                "docs/protocol.md does not show the frame {text:?} of {file}"
            );
        }
    }
}
