//! The wire protocol: bytes to typed messages and back. No sockets, clocks or threads.
//!
//! Two protocols, both specified in `docs/protocol.md`:
//! - the **client protocol**: one UTF-8 JSON frame each way ([`Request`], [`Reply`]),
//!   optionally followed by data frames that carry long strings as raw text;
//! - the **worker protocol** between broker and workers: multipart messages that start
//!   with [`WORKER_PROTOCOL`] and a command name ([`WorkerMessage`], [`BrokerMessage`]).
//!
//! Every decode path returns `Result<_, Error>` with [`Error::Protocol`]; nothing here
//! panics on bytes from the network. Encoding is canonical (fixed field order, empty
//! optional fields left out), so golden vectors decode and re-encode to the same bytes.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::Error;

/// The first frame of every worker-protocol message (after the ROUTER's identity).
pub const WORKER_PROTOCOL: &[u8] = b"ZRPC-W1";
/// The DISCONNECT reason with which a broker refuses a worker's secret. A worker that
/// receives it stops instead of registering again: the same secret would fail again.
pub const DISCONNECT_WRONG_SECRET: &str = "wrong password";

/// Names of the built-in functions, answered by the broker itself. Workers may not
/// register these names.
pub const BUILTIN_PING: &str = "ping";
/// The introspection built-in: lists the registered functions.
pub const BUILTIN_LIST: &str = "list_functions";
/// All reserved names.
pub const RESERVED_NAMES: &[&str] = &[BUILTIN_PING, BUILTIN_LIST];

/// Strings at least this long travel in data frames (`docs/protocol.md` 4.10) when the
/// reference client sends them as arguments, and when the reference server returns
/// them to a client that accepts data frames. A JSON pass over a string costs about
/// 130 µs per MiB here (a `serde_json` parse of a 1 MiB string, warm), so about 2 µs
/// per pass at 16 KiB: below that, the few passes a data frame saves are lost in the
/// rest of a call (about 100 µs); from 64 KiB on they were a large part of it (W5).
pub const FRAME_MIN_BYTES: usize = 16 * 1024;

/// Replies of at least this many bytes are worth acknowledging (`ack`,
/// `docs/protocol.md` 4.11): the reference server keeps outcomes this long for retries
/// until the client's next request on the connection acknowledges them (or their time
/// is up), and the reference client acknowledges every reply of this size. Shorter
/// outcomes cost the server's retry memory little (most results are a few bytes), so
/// neither side spends the work on them.
pub const ACK_MIN_BYTES: usize = 1024;

/// A client's call, as it travels from client to broker.
#[derive(Clone, PartialEq)]
pub struct Request {
    /// The caller's correlation id, echoed in the reply; a JSON scalar or absent.
    pub id: Option<Value>,
    /// The shared secret.
    pub password: String,
    /// The function's registered name (alias).
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The time the client will still wait, in milliseconds, when it sent the request.
    pub timeout_ms: Option<u64>,
    /// The client reads a reply whose string result is a data frame (`accept_frames`).
    pub accept_frames: bool,
    /// Ids of earlier requests on the same connection whose replies the client has
    /// received (`ack`): the server may release the replies it kept for their retries.
    pub ack: Vec<Value>,
}

/// A request that could not be decoded, with whatever id could be read from it so the
/// error reply can still be matched by the client.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    /// The request's id if one was readable, else `null`.
    pub id: Value,
    /// Always [`Error::Protocol`].
    pub error: Error,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request's id, or `null` when it had none or could not be read.
    pub id: Value,
    /// The function's result, or the error.
    pub outcome: Result<Value, Error>,
}

/// What the broker hands a worker: one call, without the password (the broker checked it).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The function's registered name.
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Time left until the caller gives up, in milliseconds, when the broker sent it.
    pub timeout_ms: Option<u64>,
}

/// How a worker describes one of its functions when it registers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FunctionInfo {
    /// The registered name (alias).
    pub name: String,
    /// Free text, the seed's docstring; empty when none was given.
    pub description: String,
    /// Number of positional parameters, or `None` for a raw function taking any.
    pub params: Option<u32>,
    /// Parameter names, when declared (enables keyword arguments); may be empty.
    pub param_names: Vec<String>,
    /// Whether a call may safely run again on another worker if its worker is lost.
    pub idempotent: bool,
}

/// A worker's registration.
#[derive(Clone, PartialEq)]
pub struct Ready {
    /// The shared secret; the broker refuses workers that do not know it.
    pub password: String,
    /// A name for logs (host and process, say).
    pub name: String,
    /// How many calls the worker runs at once (its executor threads).
    pub capacity: u32,
    /// The interval at which the worker sends heartbeats, in milliseconds.
    pub heartbeat_ms: u64,
    /// The functions it serves.
    pub functions: Vec<FunctionInfo>,
}

/// A message from a worker to the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerMessage {
    /// Registration; must be the worker's first message.
    Ready(Ready),
    /// The outcome of the request with this key.
    Reply {
        /// The broker's key from the matching [`BrokerMessage::Request`].
        key: u64,
        /// The result or error.
        outcome: Result<Value, Error>,
    },
    /// The worker is alive.
    Heartbeat,
    /// The worker is stopping: send it no new requests; it will answer the ones it has
    /// and then send DISCONNECT.
    Drain,
    /// The worker is leaving.
    Disconnect {
        /// Why, for logs.
        reason: String,
    },
}

/// A message from the broker to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerMessage {
    /// Run this call and answer with a reply carrying `key`.
    Request {
        /// The broker's key for this request; opaque to the worker.
        key: u64,
        /// What to run.
        call: Call,
    },
    /// The broker is alive.
    Heartbeat,
    /// The broker drops this worker (wrong password, unknown worker, shutdown).
    Disconnect {
        /// Why, for logs.
        reason: String,
    },
}

const CMD_READY: &[u8] = b"READY";
const CMD_REQUEST: &[u8] = b"REQUEST";
const CMD_REPLY: &[u8] = b"REPLY";
const CMD_HEARTBEAT: &[u8] = b"HEARTBEAT";
const CMD_DRAIN: &[u8] = b"DRAIN";
const CMD_DISCONNECT: &[u8] = b"DISCONNECT";

/// Longest piece of caller-supplied text (a function name, a keyword, a value in a
/// conversion error) that an error message repeats.
pub(crate) const EXCERPT_CHARS: usize = 100;

/// `text`, cut to [`EXCERPT_CHARS`] characters with `...` when longer: error messages
/// name what was wrong without echoing megabytes back to the sender.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

// Debug by hand: a password must never reach a log line, whatever the level.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("password", &"<redacted>")
            .field("function", &self.function)
            .field("args", &self.args)
            .field("kwargs", &self.kwargs)
            .field("timeout_ms", &self.timeout_ms)
            .field("accept_frames", &self.accept_frames)
            .field("ack", &self.ack)
            .finish()
    }
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("password", &"<redacted>")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("functions", &self.functions)
            .finish()
    }
}

fn protocol_error(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| protocol_error(format!("{what} is not valid UTF-8")))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(protocol_error(format!("{what} must be a JSON object"))),
        Err(e) => Err(protocol_error(format!("{what} is not valid JSON: {e}"))),
    }
}

fn to_bytes(value: &Value) -> Vec<u8> {
    crate::json::to_vec(value)
}

/// As [`field_str`], moving the string out of the parsed map instead of copying it.
fn take_str(map: &mut Map<String, Value>, name: &str) -> Result<String, Error> {
    match map.remove(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(protocol_error(format!("field `{name}` must be a string"))),
        None => Err(protocol_error(format!("field `{name}` is required"))),
    }
}

fn field_str(map: &Map<String, Value>, name: &str) -> Result<String, Error> {
    match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(protocol_error(format!("field `{name}` must be a string"))),
        None => Err(protocol_error(format!("field `{name}` is required"))),
    }
}

fn field_opt_u64(map: &Map<String, Value>, name: &str) -> Result<Option<u64>, Error> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            protocol_error(format!("field `{name}` must be a non-negative integer"))
        }),
    }
}

fn field_args(map: &mut Map<String, Value>) -> Result<Vec<Value>, Error> {
    match map.remove("args") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(protocol_error("field `args` must be an array")),
    }
}

fn field_kwargs(map: &mut Map<String, Value>) -> Result<Map<String, Value>, Error> {
    match map.remove("kwargs") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(protocol_error("field `kwargs` must be an object")),
    }
}

/// Decodes a client request frame (one without data frames).
///
/// # Errors
/// A [`BadRequest`] carrying [`Error::Protocol`] and the id, when one was readable.
pub fn decode_request(frame: &[u8]) -> Result<Request, BadRequest> {
    decode_request_frames(frame, Vec::new())
}

/// Decodes a client request: its body frame and the data frames that came after it
/// (`docs/protocol.md` 4.10), whose strings take their places in `args`.
///
/// # Errors
/// A [`BadRequest`] carrying [`Error::Protocol`] and the id, when one was readable.
pub fn decode_request_frames(body: &[u8], data: Vec<Vec<u8>>) -> Result<Request, BadRequest> {
    let mut map = parse_object(body, "request").map_err(|error| BadRequest {
        id: Value::Null,
        error,
    })?;
    let id = map.get("id").cloned();
    let bad = |error: Error| BadRequest {
        id: match &id {
            Some(v) if is_scalar(v) => v.clone(),
            _ => Value::Null,
        },
        error,
    };
    if let Some(v) = &id {
        if !is_scalar(v) {
            return Err(bad(protocol_error(
                "field `id` must be a string, number, boolean or null",
            )));
        }
    }
    let mut req = Request {
        password: take_str(&mut map, "password").map_err(bad)?,
        function: take_str(&mut map, "function").map_err(bad)?,
        args: field_args(&mut map).map_err(bad)?,
        kwargs: field_kwargs(&mut map).map_err(bad)?,
        timeout_ms: field_opt_u64(&map, "timeout_ms").map_err(bad)?,
        accept_frames: field_opt_bool(&map, "accept_frames").map_err(bad)?,
        ack: field_ack(&mut map).map_err(bad)?,
        id: None,
    };
    let positions = field_frames(&map).map_err(bad)?;
    fill_frames(&mut req.args, &positions, data).map_err(bad)?;
    req.id = id;
    Ok(req)
}

fn field_opt_bool(map: &Map<String, Value>, name: &str) -> Result<bool, Error> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(protocol_error(format!("field `{name}` must be a boolean"))),
    }
}

/// The `ack` field: ids (scalars) of requests whose replies the client has received.
fn field_ack(map: &mut Map<String, Value>) -> Result<Vec<Value>, Error> {
    match map.remove("ack") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) if ids.iter().all(is_scalar) => Ok(ids),
        Some(_) => Err(protocol_error(
            "field `ack` must be an array of ids (strings, numbers, booleans or null)",
        )),
    }
}

/// The `frames` field: the positions in `args` whose strings are data frames.
fn field_frames(map: &Map<String, Value>) -> Result<Vec<usize>, Error> {
    let bad = || protocol_error("field `frames` must be an array of argument positions");
    match map.get("frames") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| {
                p.as_u64()
                    .and_then(|p| usize::try_from(p).ok())
                    .ok_or_else(bad)
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// Checks the positions of a request's `frames` against its `args` (`len` of them;
/// `is_null(i)`: `args[i]` is `null`) and the number of data frames that came.
fn check_frames(
    positions: &[usize],
    len: usize,
    is_null: impl Fn(usize) -> bool,
    data: usize,
) -> Result<(), Error> {
    for &p in positions {
        if p >= len {
            return Err(protocol_error(format!(
                "`frames` names argument {p}, but `args` has {len}"
            )));
        }
        if !is_null(p) {
            return Err(protocol_error(format!(
                "`args[{p}]` must be null: its value is in a data frame"
            )));
        }
    }
    let mut sorted = positions.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(protocol_error(format!(
            "`frames` names argument {} twice",
            w[0]
        )));
    }
    if data != positions.len() {
        return Err(protocol_error(format!(
            "`frames` names {} data frames, got {data}",
            positions.len()
        )));
    }
    Ok(())
}

/// The text of a data frame, which must be UTF-8 (`what` names it in the error).
fn frame_text(bytes: Vec<u8>, what: impl std::fmt::Display) -> Result<String, Error> {
    String::from_utf8(bytes)
        .map_err(|_| protocol_error(format!("the data frame of {what} is not valid UTF-8")))
}

/// Puts the data frames' strings into `args` at `positions`, after checking both.
fn fill_frames(args: &mut [Value], positions: &[usize], data: Vec<Vec<u8>>) -> Result<(), Error> {
    check_frames(positions, args.len(), |i| args[i].is_null(), data.len())?;
    let texts = positions
        .iter()
        .zip(data)
        .map(|(&p, bytes)| Ok((p, frame_text(bytes, format_args!("argument {p}"))?)))
        .collect::<Result<Vec<_>, Error>>()?;
    put_frames(args, texts)
}

/// Puts each data frame's text into `args` at its position, as a string (no copy).
/// Also how the local pool fills in a call whose frames the broker checked.
///
/// # Errors
/// [`Error::Protocol`] for a frame that has no place in `args`.
pub(crate) fn put_frames(
    args: &mut [Value],
    frames: impl IntoIterator<Item = (usize, String)>,
) -> Result<(), Error> {
    for (p, text) in frames {
        match args.get_mut(p) {
            Some(slot) => *slot = Value::String(text),
            None => {
                return Err(protocol_error(format!(
                    "a data frame names argument {p}, but `args` has {}",
                    args.len()
                )))
            }
        }
    }
    Ok(())
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// Encodes a client request frame (canonical form), every argument inline.
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    write_request(req, &[], &mut out);
    out
}

/// Encodes a client request with the top-level string arguments of at least
/// `min_bytes` bytes in data frames (`docs/protocol.md` 4.10): the body frame, then one
/// frame per such argument. Without such arguments, just [`encode_request`]'s frame.
pub fn encode_request_frames(req: &Request, min_bytes: usize) -> Vec<Vec<u8>> {
    let mut body = Vec::new();
    let data = write_request_frames(&mut req.clone(), min_bytes, &mut body);
    std::iter::once(body).chain(data).collect()
}

/// [`encode_request_frames`] with the body written into `body` (cleared first, so a
/// caller can keep one buffer for every request), returning the data frames: the long
/// strings themselves, moved out of `req.args` (which keeps empty strings in their
/// place), not copies of them.
pub(crate) fn write_request_frames(
    req: &mut Request,
    min_bytes: usize,
    body: &mut Vec<u8>,
) -> Vec<Vec<u8>> {
    let positions = long_strings(req, min_bytes);
    body.clear();
    write_request(req, &positions, body);
    positions
        .iter()
        .filter_map(|&p| match &mut req.args[p] {
            Value::String(s) => Some(std::mem::take(s).into_bytes()),
            _ => None,
        })
        .collect()
}

/// Whether [`write_request_frames`] would take anything out of a request with these
/// positional arguments.
pub(crate) fn has_long_strings(args: &[Value], min_bytes: usize) -> bool {
    args.iter().any(|v| is_long_string(v, min_bytes))
}

/// The positions of the top-level string arguments of at least `min_bytes` bytes.
fn long_strings(req: &Request, min_bytes: usize) -> Vec<usize> {
    (0..req.args.len())
        .filter(|&i| is_long_string(&req.args[i], min_bytes))
        .collect()
}

fn is_long_string(v: &Value, min_bytes: usize) -> bool {
    matches!(v, Value::String(s) if s.len() >= min_bytes)
}

/// Appends the canonical body to `out`, with `null` in `args` at `positions` (listed in
/// `frames`).
fn write_request(req: &Request, positions: &[usize], out: &mut Vec<u8>) {
    use crate::json::{write_object, write_str, write_value};
    // The canonical form (fields in sorted order, absent ones left out), written with
    // the fast string writer: the arguments are what can be large.
    out.reserve(160 + req.password.len() + req.function.len());
    out.push(b'{');
    if req.accept_frames {
        out.extend_from_slice(b"\"accept_frames\":true,");
    }
    if !req.ack.is_empty() {
        out.extend_from_slice(b"\"ack\":[");
        for (i, id) in req.ack.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_value(out, id);
        }
        out.extend_from_slice(b"],");
    }
    out.extend_from_slice(b"\"args\":[");
    for (i, v) in req.args.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if positions.contains(&i) {
            out.extend_from_slice(b"null");
        } else {
            write_value(out, v);
        }
    }
    out.push(b']');
    if !positions.is_empty() {
        out.extend_from_slice(b",\"frames\":");
        out.extend_from_slice(&serde_json::to_vec(positions).unwrap_or_default());
    }
    out.extend_from_slice(b",\"function\":");
    write_str(out, &req.function);
    if let Some(id) = &req.id {
        out.extend_from_slice(b",\"id\":");
        write_value(out, id);
    }
    if !req.kwargs.is_empty() {
        out.extend_from_slice(b",\"kwargs\":");
        write_object(out, &req.kwargs);
    }
    out.extend_from_slice(b",\"password\":");
    write_str(out, &req.password);
    if let Some(ms) = req.timeout_ms {
        out.extend_from_slice(b",\"timeout_ms\":");
        // Writing a number into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &ms);
    }
    out.push(b'}');
}

// Encoding goes through these borrowed views rather than a `Value` built from copies of
// the arguments and results. Their fields are declared in sorted order, so the bytes are
// those of the canonical form (a `Value` object's keys serialize sorted); the golden
// vectors check that.

#[derive(Serialize)]
struct CallOut<'a> {
    args: &'a [Value],
    function: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kwargs: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// A reply (`id` present) or a worker's REPLY body (`id` absent).
#[derive(Serialize)]
struct ReplyOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(rename = "type")]
    kind: &'a str,
}

impl<'a> ReplyOut<'a> {
    fn new(id: Option<&'a Value>, outcome: &'a Result<Value, Error>) -> ReplyOut<'a> {
        match outcome {
            Ok(v) => ReplyOut {
                error: None,
                id,
                result: Some(v),
            },
            Err(e) => ReplyOut {
                error: Some(ErrorOut {
                    message: e.message(),
                    retry_after_ms: match e {
                        Error::Overloaded { retry_after, .. } => {
                            Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX))
                        }
                        _ => None,
                    },
                    kind: e.kind_name(),
                }),
                id,
                result: None,
            },
        }
    }
}

fn to_bytes_of(value: &impl Serialize) -> Vec<u8> {
    // As `to_bytes`: these views hold only strings, integers and `Value`s.
    serde_json::to_vec(value).unwrap_or_default()
}

fn outcome_from_map(map: &mut Map<String, Value>) -> Result<Result<Value, Error>, Error> {
    match (map.get("result"), map.get("error")) {
        (Some(_), None) => Ok(Ok(map.remove("result").unwrap_or(Value::Null))),
        (None, Some(Value::Object(err))) => {
            let kind = field_str(err, "type")?;
            let message = field_str(err, "message")?;
            let retry = field_opt_u64(err, "retry_after_ms")?;
            Ok(Err(Error::from_wire(&kind, message, retry)))
        }
        (None, Some(_)) => Err(protocol_error("field `error` must be an object")),
        (Some(_), Some(_)) => Err(protocol_error(
            "a reply has either `result` or `error`, not both",
        )),
        (None, None) => Err(protocol_error("a reply needs `result` or `error`")),
    }
}

/// Encodes a client reply frame (canonical form).
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    to_bytes_of(&ReplyOut::new(Some(&reply.id), &reply.outcome))
}

/// Encodes a client reply, with a string result of at least `min_bytes` bytes in a data
/// frame after the body (`docs/protocol.md` 4.10; only for a request that had
/// `accept_frames`); otherwise just [`encode_reply`]'s frame.
pub fn encode_reply_frames(reply: &Reply, min_bytes: usize) -> Vec<Vec<u8>> {
    match &reply.outcome {
        Ok(Value::String(s)) if s.len() >= min_bytes => {
            let (body, data) = reply_from_parts(&reply.id, OutcomeKind::Text, s.as_bytes().into());
            std::iter::once(body).chain(data).collect()
        }
        _ => vec![encode_reply(reply)],
    }
}

/// Decodes a client reply frame (one without a data frame).
///
/// # Errors
/// [`Error::Protocol`] when the frame is not a reply.
pub fn decode_reply(frame: &[u8]) -> Result<Reply, Error> {
    decode_reply_frames(frame, Vec::new())
}

/// Decodes a client reply: its body frame and the data frame after it, if any
/// (`docs/protocol.md` 4.10).
///
/// # Errors
/// [`Error::Protocol`] when the frames are not a reply.
pub fn decode_reply_frames(body: &[u8], data: Vec<Vec<u8>>) -> Result<Reply, Error> {
    if data.is_empty() {
        if let Some(reply) = quick_result(body) {
            return Ok(reply);
        }
    }
    decode_reply_in_full(body, data)
}

/// [`decode_reply_frames`] for any frames, through a map of the body.
fn decode_reply_in_full(body: &[u8], mut data: Vec<Vec<u8>>) -> Result<Reply, Error> {
    let mut map = parse_object(body, "reply")?;
    let outcome = match map.get("result_frame") {
        None | Some(Value::Null) if data.is_empty() => outcome_from_map(&mut map)?,
        None | Some(Value::Null) => {
            return Err(protocol_error(format!(
                "a reply without `result_frame` is one frame, got {} more",
                data.len()
            )))
        }
        Some(Value::Bool(true)) => {
            if map.contains_key("result") || map.contains_key("error") {
                return Err(protocol_error(
                    "a reply with `result_frame` has neither `result` nor `error`",
                ));
            }
            match (data.pop(), data.len()) {
                (Some(text), 0) => Ok(Value::String(frame_text(text, "the result")?)),
                (text, more) => {
                    return Err(protocol_error(format!(
                        "a reply with `result_frame` is followed by one data frame, got {}",
                        more + usize::from(text.is_some())
                    )))
                }
            }
        }
        Some(_) => return Err(protocol_error("field `result_frame` must be true")),
    };
    Ok(Reply {
        id: map.get("id").cloned().unwrap_or(Value::Null),
        outcome,
    })
}

/// The common reply, `{"id": ..., "result": ...}` and nothing else, read without
/// building a map of it; `None` for any other frame, which the full decoder then reads
/// (and reports with its exact error). Both read with the same parser, so what this
/// accepts the full decoder accepts with the same values.
fn quick_result(body: &[u8]) -> Option<Reply> {
    use serde::de::{Deserializer, MapAccess, Visitor};

    struct Quick;
    impl<'de> Visitor<'de> for Quick {
        type Value = Option<Reply>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a reply object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut id, mut result) = (None, None);
            while let Some(key) = map.next_key::<&'de str>()? {
                match key {
                    "id" if id.is_none() => id = Some(map.next_value::<Value>()?),
                    "result" if result.is_none() => result = Some(map.next_value::<Value>()?),
                    // Anything else (a repeated key too) is for the full decoder; the
                    // unread rest makes the parse fail, which is fine here.
                    _ => return Ok(None),
                }
            }
            Ok(id.zip(result).map(|(id, result)| Reply {
                id,
                outcome: Ok(result),
            }))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let reply = de.deserialize_map(Quick).ok()??;
    de.end().ok()?;
    Some(reply)
}

/// The introspection entry for one function, as `list_functions` returns it (less
/// `workers`, which the broker adds).
pub fn function_info_json(f: &FunctionInfo) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), f.name.clone().into());
    map.insert("description".into(), f.description.clone().into());
    map.insert(
        "params".into(),
        f.params.map(Value::from).unwrap_or(Value::Null),
    );
    map.insert("param_names".into(), json!(f.param_names));
    map.insert("idempotent".into(), f.idempotent.into());
    Value::Object(map)
}

fn function_info_from_value(v: &Value) -> Result<FunctionInfo, Error> {
    let Value::Object(map) = v else {
        return Err(protocol_error("each of `functions` must be an object"));
    };
    let params = match map.get("params") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| protocol_error("field `params` must be a small integer"))?,
        ),
    };
    let param_names = match map.get("param_names") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| protocol_error("field `param_names` must hold strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(protocol_error("field `param_names` must be an array")),
    };
    let description = match map.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(protocol_error("field `description` must be a string")),
    };
    Ok(FunctionInfo {
        name: field_str(map, "name")?,
        description,
        params,
        param_names,
        idempotent: match map.get("idempotent") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(protocol_error("field `idempotent` must be a boolean")),
        },
    })
}

fn call_from_bytes(bytes: &[u8]) -> Result<Call, Error> {
    let mut map = parse_object(bytes, "call")?;
    Ok(Call {
        function: take_str(&mut map, "function")?,
        args: field_args(&mut map)?,
        kwargs: field_kwargs(&mut map)?,
        timeout_ms: field_opt_u64(&map, "timeout_ms")?,
    })
}

fn key_to_frame(key: u64) -> Vec<u8> {
    key.to_string().into_bytes()
}

fn key_from_frame(frame: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(frame)
        .ok()
        // Canonical decimal: digits only, no leading zero (except "0" itself).
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .filter(|s| *s == "0" || !s.starts_with('0'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error("request key must be a decimal integer"))
}

/// Splits a worker-protocol message into its command and the frames after it, checking
/// the protocol frame and the frame count.
fn split_command(frames: &[Vec<u8>]) -> Result<(&[u8], &[Vec<u8>]), Error> {
    match frames {
        [proto, cmd, rest @ ..] if proto.as_slice() == WORKER_PROTOCOL => Ok((cmd, rest)),
        [_, _, ..] => Err(protocol_error("not a ZRPC-W1 message")),
        _ => Err(protocol_error("worker message too short")),
    }
}

fn expect_frames(rest: &[Vec<u8>], n: usize, cmd: &str) -> Result<(), Error> {
    if rest.len() == n {
        Ok(())
    } else {
        Err(protocol_error(format!(
            "{cmd} takes {n} frame(s) after the command, got {}",
            rest.len()
        )))
    }
}

fn disconnect_frames(reason: &str) -> Vec<Vec<u8>> {
    vec![
        WORKER_PROTOCOL.to_vec(),
        CMD_DISCONNECT.to_vec(),
        to_bytes(&json!({ "reason": reason })),
    ]
}

fn disconnect_reason(rest: &[Vec<u8>]) -> Result<String, Error> {
    match rest {
        [] => Ok(String::new()),
        [body] => {
            let map = parse_object(body, "disconnect")?;
            Ok(map
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned())
        }
        _ => Err(protocol_error("DISCONNECT takes at most one frame")),
    }
}

/// Encodes a message from a worker to the broker.
pub fn encode_worker_message(msg: &WorkerMessage) -> Vec<Vec<u8>> {
    let head = |cmd: &[u8]| vec![WORKER_PROTOCOL.to_vec(), cmd.to_vec()];
    match msg {
        WorkerMessage::Ready(r) => {
            let mut frames = head(CMD_READY);
            let functions: Vec<Value> = r.functions.iter().map(function_info_json).collect();
            frames.push(to_bytes(&json!({
                "password": r.password,
                "name": r.name,
                "capacity": r.capacity,
                "heartbeat_ms": r.heartbeat_ms,
                "functions": functions,
            })));
            frames
        }
        WorkerMessage::Reply { key, outcome } => {
            let mut frames = head(CMD_REPLY);
            frames.push(key_to_frame(*key));
            frames.push(to_bytes_of(&ReplyOut::new(None, outcome)));
            frames
        }
        WorkerMessage::Heartbeat => head(CMD_HEARTBEAT),
        WorkerMessage::Drain => head(CMD_DRAIN),
        WorkerMessage::Disconnect { reason } => disconnect_frames(reason),
    }
}

/// Decodes a message from a worker (the frames after the ROUTER's identity frame).
///
/// # Errors
/// [`Error::Protocol`] when the frames are not a valid worker message.
pub fn decode_worker_message(frames: &[Vec<u8>]) -> Result<WorkerMessage, Error> {
    let (cmd, rest) = split_command(frames)?;
    match cmd {
        CMD_READY => {
            expect_frames(rest, 1, "READY")?;
            let map = parse_object(&rest[0], "READY body")?;
            let capacity = map
                .get("capacity")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| protocol_error("field `capacity` must be a positive integer"))?;
            let heartbeat_ms = field_opt_u64(&map, "heartbeat_ms")?
                .filter(|ms| *ms > 0)
                .ok_or_else(|| protocol_error("field `heartbeat_ms` must be a positive integer"))?;
            let functions = match map.get("functions") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(function_info_from_value)
                    .collect::<Result<_, _>>()?,
                _ => return Err(protocol_error("field `functions` must be an array")),
            };
            Ok(WorkerMessage::Ready(Ready {
                password: field_str(&map, "password")?,
                name: field_str(&map, "name")?,
                capacity,
                heartbeat_ms,
                functions,
            }))
        }
        CMD_REPLY => {
            expect_frames(rest, 2, "REPLY")?;
            let key = key_from_frame(&rest[0])?;
            let mut map = parse_object(&rest[1], "REPLY body")?;
            Ok(WorkerMessage::Reply {
                key,
                outcome: outcome_from_map(&mut map)?,
            })
        }
        CMD_HEARTBEAT => {
            expect_frames(rest, 0, "HEARTBEAT")?;
            Ok(WorkerMessage::Heartbeat)
        }
        CMD_DRAIN => {
            expect_frames(rest, 0, "DRAIN")?;
            Ok(WorkerMessage::Drain)
        }
        CMD_DISCONNECT => Ok(WorkerMessage::Disconnect {
            reason: disconnect_reason(rest)?,
        }),
        _ => Err(protocol_error(format!(
            "unknown worker command {:?}",
            String::from_utf8_lossy(cmd)
        ))),
    }
}

/// Encodes a message from the broker to a worker (without the identity frame).
pub fn encode_broker_message(msg: &BrokerMessage) -> Vec<Vec<u8>> {
    let head = |cmd: &[u8]| vec![WORKER_PROTOCOL.to_vec(), cmd.to_vec()];
    match msg {
        BrokerMessage::Request { key, call } => encode_request_message(*key, call, call.timeout_ms),
        BrokerMessage::Heartbeat => head(CMD_HEARTBEAT),
        BrokerMessage::Disconnect { reason } => disconnect_frames(reason),
    }
}

/// Encodes a REQUEST for `call` with `timeout_ms` in place of the call's own: what
/// [`encode_broker_message`] gives for a `BrokerMessage::Request`, without building one.
pub fn encode_request_message(key: u64, call: &Call, timeout_ms: Option<u64>) -> Vec<Vec<u8>> {
    vec![
        WORKER_PROTOCOL.to_vec(),
        CMD_REQUEST.to_vec(),
        key_to_frame(key),
        to_bytes_of(&CallOut {
            args: &call.args,
            function: &call.function,
            kwargs: Some(&call.kwargs).filter(|k| !k.is_empty()),
            timeout_ms,
        }),
    ]
}

/// Decodes a message from the broker, as a worker's DEALER receives it.
///
/// # Errors
/// [`Error::Protocol`] when the frames are not a valid broker message.
pub fn decode_broker_message(frames: &[Vec<u8>]) -> Result<BrokerMessage, Error> {
    let (cmd, rest) = split_command(frames)?;
    match cmd {
        CMD_REQUEST => {
            expect_frames(rest, 2, "REQUEST")?;
            Ok(BrokerMessage::Request {
                key: key_from_frame(&rest[0])?,
                call: call_from_bytes(&rest[1])?,
            })
        }
        CMD_HEARTBEAT => {
            expect_frames(rest, 0, "HEARTBEAT")?;
            Ok(BrokerMessage::Heartbeat)
        }
        CMD_DISCONNECT => Ok(BrokerMessage::Disconnect {
            reason: disconnect_reason(rest)?,
        }),
        _ => Err(protocol_error(format!(
            "unknown broker command {:?}",
            String::from_utf8_lossy(cmd)
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Raw forms, for the broker: it reads the fields it needs and forwards arguments and
// results as the JSON text they arrived in, instead of building `Value`s of them and
// encoding them again. Acceptance and every error are those of the `Value` decoders
// above: a frame is first checked by the same parser (without building anything), and
// whatever the raw path does not take as it is goes through the `Value` decoder, which
// then gives the exact error.

/// Checks JSON text exactly as parsing it into a `Value` would (numbers in range,
/// escapes, nesting limit), without building anything.
struct Valid;

impl<'de> serde::Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Valid, D::Error> {
        d.deserialize_any(Valid)
    }
}

impl<'de> serde::de::Visitor<'de> for Valid {
    type Value = Valid;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
}

/// The top-level fields of a JSON object, each as its JSON text, in their order. A
/// message has a handful, so a lookup is a short scan (no hashing, and names without
/// escapes are borrowed from the text, not copied).
struct RawFields<'a>(Vec<(FieldName<'a>, &'a serde_json::value::RawValue)>);

impl<'a> RawFields<'a> {
    /// The field `name`: of duplicate keys the last, as in a `Value`.
    fn get(&self, name: &str) -> Option<&'a serde_json::value::RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key.0 == name)
            .map(|&(_, value)| value)
    }

    fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl<'de> serde::Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawFields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some(name) = map.next_key::<FieldName<'de>>()? {
                    fields.push((name, map.next_value()?));
                }
                Ok(RawFields(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// An object's key: borrowed from the text unless it has escapes.
struct FieldName<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(name.into()))
            }
            fn visit_str<E>(self, name: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(name.to_owned().into()))
            }
        }
        d.deserialize_str(Name)
    }
}

/// The top-level fields of a JSON object, each as its JSON text (the last of duplicate
/// keys, as in a `Value`); `None` when `text` would not parse into a `Value` object.
fn raw_fields(text: &str) -> Option<RawFields<'_>> {
    serde_json::from_str::<Valid>(text).ok()?;
    serde_json::from_str(text).ok()
}

/// Whether a request body has a `frames` field that is not `null`: then the frames
/// after it are its data frames (`docs/protocol.md` 4.1). `false` for a body that is
/// not a JSON object.
pub(crate) fn lists_frames(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Listed<'a> {
        #[serde(borrow)]
        frames: Option<&'a serde_json::value::RawValue>,
    }
    std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<Listed<'_>>(text).ok())
        .is_some_and(|l| l.frames.is_some_and(|f| f.get() != "null"))
}

/// Where `part` (a slice of `whole`) lies in it.
fn span(whole: &str, part: &str) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// A client request as the broker reads it: the fields it acts on, and the arguments as
/// the JSON text the client sent (whitespace and all).
#[derive(Clone, PartialEq)]
pub(crate) struct RawRequest {
    frame: Vec<u8>,
    /// As [`Request::id`].
    pub id: Option<Value>,
    /// As [`Request::password`].
    pub password: String,
    /// As [`Request::function`].
    pub function: String,
    /// As [`Request::timeout_ms`].
    pub timeout_ms: Option<u64>,
    /// The array of positional arguments in `frame`; `None`: absent or `null` (`[]`).
    args: Option<std::ops::Range<usize>>,
    /// The object of keyword arguments in `frame`; `None`: absent, `null` or empty.
    kwargs: Option<std::ops::Range<usize>>,
    /// The data frames' text, each with its position in `args`, where the JSON text
    /// has `null`.
    frames: Vec<(usize, String)>,
    /// As [`Request::accept_frames`].
    pub accept_frames: bool,
    /// As [`Request::ack`].
    pub ack: Vec<Value>,
}

impl std::fmt::Debug for RawRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRequest")
            .field("id", &self.id)
            .field("password", &"<redacted>")
            .field("function", &self.function)
            .field("args_bytes", &self.args().len())
            .field("kwargs_bytes", &self.kwargs().map_or(0, <[u8]>::len))
            .field("timeout_ms", &self.timeout_ms)
            .field("frames", &self.frames.len())
            .field("accept_frames", &self.accept_frames)
            .field("ack", &self.ack)
            .finish()
    }
}

impl RawRequest {
    /// The positional arguments' JSON text (an array).
    pub(crate) fn args(&self) -> &[u8] {
        match &self.args {
            Some(r) => &self.frame[r.clone()],
            None => b"[]",
        }
    }

    /// The keyword arguments' JSON text (an object), when there are any.
    pub(crate) fn kwargs(&self) -> Option<&[u8]> {
        self.kwargs.as_ref().map(|r| &self.frame[r.clone()])
    }

    /// The request's size as it arrived, about: its text (or, for the rare request
    /// decoded into values, its arguments encoded again) and its data frames.
    pub(crate) fn size(&self) -> usize {
        self.frame.len() + self.frames.iter().map(|(_, f)| f.len()).sum::<usize>()
    }

    /// The data frames with their positions in [`RawRequest::args`].
    pub(crate) fn frames(&self) -> &[(usize, String)] {
        &self.frames
    }

    /// Moves the data frames out (to a call that runs in this process, which is never
    /// sent again); the request keeps no copy.
    pub(crate) fn take_frames(&mut self) -> Vec<(usize, String)> {
        std::mem::take(&mut self.frames)
    }

    /// The positional arguments' JSON text with the data frames' strings written in,
    /// for a worker process (the worker protocol has no data frames).
    pub(crate) fn args_inline(&self) -> std::borrow::Cow<'_, [u8]> {
        use serde_json::value::RawValue;
        if self.frames.is_empty() {
            return self.args().into();
        }
        // Checked when the request was decoded: this parses.
        let items: Vec<&RawValue> = serde_json::from_slice(self.args()).unwrap_or_default();
        let size = self.args().len() + self.frames.iter().map(|(_, f)| f.len() + 2).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match self.frames.iter().find(|(p, _)| *p == i) {
                Some((_, text)) => crate::json::write_str(&mut out, text),
                None => out.extend_from_slice(item.get().as_bytes()),
            }
        }
        out.push(b']');
        out.into()
    }

    /// From a request decoded into `Value`s (the rare path): the arguments encoded.
    fn from_request(req: Request) -> RawRequest {
        let mut frame = to_bytes_of(&req.args);
        let args = Some(0..frame.len());
        let kwargs = (!req.kwargs.is_empty()).then(|| {
            let start = frame.len();
            frame.extend_from_slice(&to_bytes_of(&req.kwargs));
            start..frame.len()
        });
        RawRequest {
            frame,
            id: req.id,
            password: req.password,
            function: req.function,
            timeout_ms: req.timeout_ms,
            args,
            kwargs,
            frames: Vec::new(),
            accept_frames: req.accept_frames,
            ack: req.ack,
        }
    }
}

/// Decodes a client request for the broker, keeping the arguments as JSON text: its
/// body frame and the data frames after it. Accepts exactly the requests
/// [`decode_request_frames`] accepts, with the same fields, and fails with the same
/// errors.
///
/// # Errors
/// As [`decode_request_frames`].
pub(crate) fn decode_request_raw(
    frame: Vec<u8>,
    data: Vec<Vec<u8>>,
) -> Result<RawRequest, BadRequest> {
    // Anything unusual (and every error) takes the reference path.
    let Some(mut raw) = read_raw_request(&frame, &data) else {
        return decode_request_frames(&frame, data).map(RawRequest::from_request);
    };
    // The data frames become strings here, which is where their UTF-8 is checked, once:
    // the local pool takes them as they are.
    let mut texts = Vec::with_capacity(data.len());
    let mut rest = data.into_iter();
    while let Some(bytes) = rest.next() {
        match String::from_utf8(bytes) {
            Ok(text) => texts.push(text),
            Err(e) => {
                let data = texts
                    .into_iter()
                    .map(String::into_bytes)
                    .chain([e.into_bytes()])
                    .chain(rest)
                    .collect();
                return decode_request_frames(&frame, data).map(RawRequest::from_request);
            }
        }
    }
    raw.frame = frame;
    for ((_, slot), text) in raw.frames.iter_mut().zip(texts) {
        *slot = text;
    }
    Ok(raw)
}

/// The fields of a well-formed request, read from the JSON text without building
/// `Value`s for the arguments; `None` if anything is unusual or wrong (then
/// [`decode_request_frames`] decides). The caller puts in the frame and the data
/// frames (left empty here: their positions are filled in).
fn read_raw_request(frame: &[u8], data: &[Vec<u8>]) -> Option<RawRequest> {
    let text = std::str::from_utf8(frame).ok()?;
    let fields = raw_fields(text)?;
    let id = match fields.get("id") {
        None => None,
        Some(raw) => {
            let id = serde_json::from_str::<Value>(raw.get()).ok()?;
            Some(id).filter(is_scalar)
        }
    };
    if id.is_none() && fields.contains_key("id") {
        return None;
    }
    let string = |name: &str| serde_json::from_str::<String>(fields.get(name)?.get()).ok();
    let password = string("password")?;
    let function = string("function")?;
    let args = match fields.get("args").map(|r| r.get()) {
        None | Some("null") => None,
        Some(a) if a.starts_with('[') => Some(span(text, a)),
        Some(_) => return None,
    };
    let kwargs = match fields.get("kwargs").map(|r| r.get()) {
        None | Some("null") => None,
        Some(k) if k.starts_with('{') => {
            let empty = k[1..k.len() - 1]
                .trim_matches([' ', '\t', '\n', '\r'])
                .is_empty();
            (!empty).then(|| span(text, k))
        }
        Some(_) => return None,
    };
    let timeout_ms = match fields.get("timeout_ms").map(|r| r.get()) {
        None | Some("null") => None,
        Some(t) => Some(serde_json::from_str::<u64>(t).ok()?),
    };
    let accept_frames = match fields.get("accept_frames").map(|r| r.get()) {
        None | Some("null") => false,
        Some(b) => serde_json::from_str::<bool>(b).ok()?,
    };
    let ack = match fields.get("ack").map(|r| r.get()) {
        None | Some("null") => Vec::new(),
        Some(a) => {
            let ids = serde_json::from_str::<Vec<Value>>(a).ok()?;
            ids.iter().all(is_scalar).then_some(ids)?
        }
    };
    let positions = match fields.get("frames").map(|r| r.get()) {
        None | Some("null") => Vec::new(),
        Some(f) => serde_json::from_str::<Vec<usize>>(f).ok()?,
    };
    if !(positions.is_empty() && data.is_empty()) {
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(args.clone().map_or("[]", |r| &text[r])).ok()?;
        let is_null = |i: usize| items[i].get() == "null";
        check_frames(&positions, items.len(), is_null, data.len()).ok()?;
    }
    Some(RawRequest {
        frame: Vec::new(),
        id,
        password,
        function,
        timeout_ms,
        args,
        kwargs,
        frames: positions.into_iter().map(|p| (p, String::new())).collect(),
        accept_frames,
        ack,
    })
}

/// Encodes a REQUEST whose arguments are JSON text: the frames
/// [`encode_request_message`] gives for the same call, up to whitespace inside the
/// arguments.
pub(crate) fn encode_raw_request_message(
    key: u64,
    function: &str,
    args: &[u8],
    kwargs: Option<&[u8]>,
    timeout_ms: Option<u64>,
) -> Vec<Vec<u8>> {
    let mut body = Vec::with_capacity(args.len() + kwargs.map_or(0, <[u8]>::len) + 64);
    body.extend_from_slice(b"{\"args\":");
    body.extend_from_slice(args);
    body.extend_from_slice(b",\"function\":");
    let _ = serde_json::to_writer(&mut body, function);
    if let Some(kwargs) = kwargs {
        body.extend_from_slice(b",\"kwargs\":");
        body.extend_from_slice(kwargs);
    }
    if let Some(ms) = timeout_ms {
        body.extend_from_slice(b",\"timeout_ms\":");
        body.extend_from_slice(ms.to_string().as_bytes());
    }
    body.push(b'}');
    vec![
        WORKER_PROTOCOL.to_vec(),
        CMD_REQUEST.to_vec(),
        key_to_frame(key),
        body,
    ]
}

/// A worker's REPLY as the broker reads it: the result as JSON text, or the error.
#[derive(Debug, PartialEq)]
pub(crate) enum RawOutcome<'a> {
    /// The result's JSON text.
    Result(std::borrow::Cow<'a, [u8]>),
    /// A string result's UTF-8 text, for a client that accepts data frames (from the
    /// local pool or a direct call; worker processes send JSON).
    Text(Vec<u8>),
    /// The error the worker reported.
    Error(Error),
}

/// Decodes a worker message when it is a REPLY, keeping the result as JSON text;
/// `None` for other commands (decode those with [`decode_worker_message`]). Accepts
/// exactly the REPLYs [`decode_worker_message`] accepts, with the same errors.
pub(crate) fn decode_worker_reply_raw(
    frames: &[Vec<u8>],
) -> Option<Result<(u64, RawOutcome<'_>), Error>> {
    match frames {
        [proto, cmd, key, body] if proto.as_slice() == WORKER_PROTOCOL && cmd == CMD_REPLY => {
            let fast = std::str::from_utf8(body).ok().and_then(|text| {
                let fields = raw_fields(text)?;
                match (fields.get("result"), fields.get("error")) {
                    (Some(r), None) => Some(&body[span(text, r.get())]),
                    _ => None,
                }
            });
            Some(match fast {
                Some(result) => key_from_frame(key).map(|k| (k, RawOutcome::Result(result.into()))),
                None => decode_worker_message(frames).and_then(|m| match m {
                    WorkerMessage::Reply {
                        key,
                        outcome: Ok(v),
                    } => Ok((key, RawOutcome::Result(to_bytes(&v).into()))),
                    WorkerMessage::Reply {
                        key,
                        outcome: Err(e),
                    } => Ok((key, RawOutcome::Error(e))),
                    _ => Err(protocol_error("not a REPLY")),
                }),
            })
        }
        _ => None,
    }
}

/// The JSON text of an error object as a reply carries it.
pub(crate) fn error_body(error: &Error) -> Vec<u8> {
    let outcome = Err::<Value, _>(error.clone());
    to_bytes_of(&ReplyOut::new(None, &outcome).error)
}

/// What the bytes of a finished call's outcome are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutcomeKind {
    /// A result's JSON text.
    Result,
    /// An error object's JSON text, from [`error_body`].
    Error,
    /// A string result's UTF-8 text, for a client that accepts data frames.
    Text,
}

/// A client reply from its parts: `id`, and the outcome's bytes of `kind`. The bytes
/// of [`encode_reply`] for the same reply, up to whitespace inside a result; for a
/// [`OutcomeKind::Text`], the body `{"id":..,"result_frame":true}` and the text as a
/// data frame.
pub(crate) fn reply_from_parts(
    id: &Value,
    kind: OutcomeKind,
    body: std::borrow::Cow<'_, [u8]>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut out = Vec::with_capacity(
        48 + if kind == OutcomeKind::Text {
            0
        } else {
            body.len()
        },
    );
    let mut data = None;
    match kind {
        OutcomeKind::Error => {
            out.extend_from_slice(b"{\"error\":");
            out.extend_from_slice(&body);
            out.extend_from_slice(b",\"id\":");
            let _ = serde_json::to_writer(&mut out, id);
        }
        OutcomeKind::Result => {
            out.extend_from_slice(b"{\"id\":");
            let _ = serde_json::to_writer(&mut out, id);
            out.extend_from_slice(b",\"result\":");
            out.extend_from_slice(&body);
        }
        OutcomeKind::Text => {
            out.extend_from_slice(b"{\"id\":");
            let _ = serde_json::to_writer(&mut out, id);
            out.extend_from_slice(b",\"result_frame\":true");
            data = Some(body.into_owned());
        }
    }
    out.push(b'}');
    (out, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_err(frame: &[u8]) -> BadRequest {
        decode_request(frame).expect_err("should be refused")
    }

    #[test]
    fn excerpts_are_bounded_and_cut_on_char_boundaries() {
        assert_eq!(excerpt("short"), "short");
        let long = "ä".repeat(1000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 3);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn minimal_request_decodes_with_defaults() {
        let r = decode_request(br#"{"password":"p","function":"f"}"#).unwrap();
        assert_eq!(r.id, None);
        assert!(r.args.is_empty() && r.kwargs.is_empty() && r.timeout_ms.is_none());
    }

    #[test]
    fn malformed_requests_name_the_problem_and_keep_the_id() {
        assert!(decode_err(b"\xff\xfe").error.message().contains("UTF-8"));
        assert!(decode_err(b"not json")
            .error
            .message()
            .contains("not valid JSON"));
        assert!(decode_err(b"[1,2]").error.message().contains("JSON object"));
        let e = decode_err(br#"{"id":7,"function":"f"}"#);
        assert_eq!(e.id, json!(7));
        assert_eq!(
            e.error,
            Error::Protocol("field `password` is required".into())
        );
        let e = decode_err(br#"{"id":"a","password":"p","function":3}"#);
        assert_eq!(e.id, json!("a"));
        assert!(e.error.message().contains("`function` must be a string"));
        let e = decode_err(br#"{"password":"p","function":"f","args":{}}"#);
        assert!(e.error.message().contains("`args` must be an array"));
        let e = decode_err(br#"{"password":"p","function":"f","kwargs":[]}"#);
        assert!(e.error.message().contains("`kwargs` must be an object"));
        let e = decode_err(br#"{"id":[1],"password":"p","function":"f"}"#);
        assert_eq!(e.id, Value::Null);
        let e = decode_err(br#"{"password":"p","function":"f","timeout_ms":-1}"#);
        assert!(e.error.message().contains("timeout_ms"));
    }

    #[test]
    fn reply_round_trips_including_overload_hint() {
        let reply = Reply {
            id: json!(1),
            outcome: Err(Error::Overloaded {
                message: "queue full".into(),
                retry_after: std::time::Duration::from_millis(100),
            }),
        };
        assert_eq!(decode_reply(&encode_reply(&reply)).unwrap(), reply);
        assert!(decode_reply(br#"{"id":1}"#).is_err());
        assert!(decode_reply(br#"{"id":1,"result":1,"error":{}}"#).is_err());
        assert!(decode_reply(br#"{"id":1,"error":{"type":"X"}}"#).is_err());
    }

    #[test]
    fn worker_messages_round_trip() {
        let msgs = [
            WorkerMessage::Ready(Ready {
                password: "p".into(),
                name: "w".into(),
                capacity: 4,
                heartbeat_ms: 1000,
                functions: vec![FunctionInfo {
                    name: "add".into(),
                    description: "adds".into(),
                    params: Some(2),
                    param_names: vec!["a".into(), "b".into()],
                    idempotent: true,
                }],
            }),
            WorkerMessage::Reply {
                key: 42,
                outcome: Ok(json!(12)),
            },
            WorkerMessage::Reply {
                key: 43,
                outcome: Err(Error::Runtime("boom".into())),
            },
            WorkerMessage::Heartbeat,
            WorkerMessage::Drain,
            WorkerMessage::Disconnect {
                reason: "bye".into(),
            },
        ];
        for m in msgs {
            assert_eq!(
                decode_worker_message(&encode_worker_message(&m)).unwrap(),
                m
            );
        }
        let b = BrokerMessage::Request {
            key: 9,
            call: Call {
                function: "add".into(),
                args: vec![json!(1), json!(2)],
                kwargs: Map::new(),
                timeout_ms: Some(500),
            },
        };
        assert_eq!(
            decode_broker_message(&encode_broker_message(&b)).unwrap(),
            b
        );
    }

    #[test]
    fn bad_worker_frames_are_errors_not_panics() {
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![],
            vec![b"ZRPC-W1".to_vec()],
            vec![b"MDPW01".to_vec(), b"READY".to_vec()],
            vec![b"ZRPC-W1".to_vec(), b"READY".to_vec()],
            vec![b"ZRPC-W1".to_vec(), b"READY".to_vec(), b"{}".to_vec()],
            vec![
                b"ZRPC-W1".to_vec(),
                b"REPLY".to_vec(),
                b"x".to_vec(),
                b"{}".to_vec(),
            ],
            vec![
                b"ZRPC-W1".to_vec(),
                b"REPLY".to_vec(),
                b"1".to_vec(),
                b"{}".to_vec(),
            ],
            vec![b"ZRPC-W1".to_vec(), b"HEARTBEAT".to_vec(), b"x".to_vec()],
            vec![b"ZRPC-W1".to_vec(), b"NOPE".to_vec()],
        ];
        for frames in cases {
            assert!(matches!(
                decode_worker_message(&frames),
                Err(Error::Protocol(_))
            ));
        }
        assert!(decode_broker_message(&[b"ZRPC-W1".to_vec(), b"REQUEST".to_vec()]).is_err());
        assert!(key_from_frame(b"+1").is_err());
        assert!(key_from_frame(b"007").is_err());
        assert_eq!(key_from_frame(b"0").unwrap(), 0);
        assert!(key_from_frame(b"99999999999999999999999").is_err());
    }

    // The raw decoders must accept and refuse exactly what the `Value` decoders do.

    fn same_request(frame: &[u8]) {
        same_request_with(frame, &[]);
    }

    fn same_request_with(frame: &[u8], data: &[&str]) {
        let data: Vec<Vec<u8>> = data.iter().map(|d| d.as_bytes().to_vec()).collect();
        let raw = decode_request_raw(frame.to_vec(), data.clone());
        let reference = decode_request_frames(frame, data);
        match (raw, reference) {
            (Err(a), Err(b)) => assert_eq!(a, b, "{:?}", String::from_utf8_lossy(frame)),
            (Ok(raw), Ok(req)) => {
                let text = String::from_utf8_lossy(frame);
                assert_eq!(raw.id, req.id, "{text}");
                assert_eq!(raw.password, req.password, "{text}");
                assert_eq!(raw.function, req.function, "{text}");
                assert_eq!(raw.timeout_ms, req.timeout_ms, "{text}");
                assert_eq!(raw.accept_frames, req.accept_frames, "{text}");
                assert_eq!(raw.ack, req.ack, "{text}");
                let args: Vec<Value> =
                    serde_json::from_slice(&raw.args_inline()).expect("args parse");
                assert_eq!(args, req.args, "{text}");
                match raw.kwargs() {
                    None => assert!(req.kwargs.is_empty(), "{text}"),
                    Some(k) => {
                        let kwargs: Map<String, Value> = serde_json::from_slice(k).unwrap();
                        assert!(!kwargs.is_empty(), "{text}");
                        assert_eq!(kwargs, req.kwargs, "{text}");
                    }
                }
                // What the worker gets decodes to the call the reference path sends.
                let call = Call {
                    function: req.function.clone(),
                    args: req.args.clone(),
                    kwargs: req.kwargs.clone(),
                    timeout_ms: Some(9),
                };
                let frames = encode_raw_request_message(
                    4,
                    &raw.function,
                    &raw.args_inline(),
                    raw.kwargs(),
                    Some(9),
                );
                assert_eq!(
                    decode_broker_message(&frames).expect("forwarded call decodes"),
                    BrokerMessage::Request { key: 4, call },
                    "{text}"
                );
            }
            (a, b) => panic!(
                "raw and reference disagree on {:?}: {a:?} / {b:?}",
                String::from_utf8_lossy(frame)
            ),
        }
    }

    const REQUESTS: &[&str] = &[
        r#"{"args":[5,7],"function":"add","id":1,"password":"geheim","timeout_ms":5000}"#,
        r#"{"password":"p","function":"f"}"#,
        r#" { "id" : "x" , "password" : "p" , "function" : "f" , "args" : [ 1 , { "a" : [ ] } ] , "kwargs" : { "b" : "\u00e9\n" } } "#,
        r#"{"password":"p","function":"f","kwargs":{ },"args":null,"timeout_ms":null,"id":null}"#,
        r#"{"password":"p","function":"f","kwargs":null}"#,
        r#"{"password":"p","function":"f","x":1e400}"#,
        r#"{"password":"p","function":"f","args":[1e400]}"#,
        r#"{"password":"p","function":"f","args":[-0.0, 1.5e3, -7, 18446744073709551615]}"#,
        r#"{"password":"p","function":"f","timeout_ms":-0}"#,
        r#"{"password":"p","function":"f","timeout_ms":1e3}"#,
        r#"{"password":"p","function":"f","timeout_ms":18446744073709551616}"#,
        r#"{"password":"p","function":"f","function":"g","args":[1],"args":[2]}"#,
        r#"{"pass\u0077ord":"p","\u0066unction":"f\ud83d\ude00"}"#,
        r#"{"password":"p","function":"f","args":["\ud800"]}"#,
        r#"{"password":"p","function":"f","id":[1]}"#,
        r#"{"password":"p","function":"f","id":{"a":1},"args":3}"#,
        r#"{"password":"p","function":7}"#,
        r#"{"password":"p","function":"f","args":{}}"#,
        r#"{"password":"p","function":"f","kwargs":[]}"#,
        r#"{"password":"p","function":"f","timeout_ms":"5"}"#,
        r#"{"password":"p","function":"f"} x"#,
        r#"[1,2]"#,
        r#""#,
        r#"null"#,
        r#"{"password":"p","function":"f","id":1.5,"args":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}"#,
    ];

    #[test]
    fn raw_request_decoding_matches_the_reference_with_data_frames() {
        // Each row: the fields after `"password":"p","function":"f"`, and the data frames.
        let cases: &[(&str, &[&str])] = &[
            (
                r#","args":[null,1,null],"frames":[2,0]"#,
                &["two \"q\" \u{e9}", "zero\n"],
            ),
            (
                r#","args":[ null ],"frames":[0],"accept_frames":true"#,
                &[""],
            ),
            (r#","frames":[],"accept_frames":false"#, &[]),
            (r#","frames":null,"accept_frames":null"#, &[]),
            // Refused, with the same error on both paths.
            (r#","args":[null],"frames":[0]"#, &[]),
            (r#","args":[null],"frames":[0]"#, &["a", "b"]),
            (r#","args":[null],"frames":[1]"#, &["a"]),
            (r#","args":[1],"frames":[0]"#, &["a"]),
            (r#","args":[null,null],"frames":[1,1]"#, &["a", "b"]),
            (r#","args":[null],"frames":[-1]"#, &["a"]),
            (r#","args":[null],"frames":[0.0]"#, &["a"]),
            (r#","args":[null],"frames":{}"#, &["a"]),
            (r#","accept_frames":"yes""#, &[]),
            (r#""#, &["stray"]),
            // Acknowledgements: ids, or refused alike.
            (r#","ack":["c-1",2,true,null]"#, &[]),
            (r#","ack":[]"#, &[]),
            (r#","ack":null"#, &[]),
            (r#","ack":"c-1""#, &[]),
            (r#","ack":[["c-1"]]"#, &[]),
            (r#","ack":[{}]"#, &[]),
            (r#","ack":[1e400]"#, &[]),
        ];
        for (rest, data) in cases {
            let frame = format!(r#"{{"password":"p","function":"f"{rest}}}"#);
            same_request_with(frame.as_bytes(), data);
        }
        // Not UTF-8: refused on both paths.
        let frame = br#"{"password":"p","function":"f","args":[null],"frames":[0]}"#;
        let bad = decode_request_raw(frame.to_vec(), vec![vec![0xc3]]).unwrap_err();
        assert_eq!(
            bad,
            decode_request_frames(frame, vec![vec![0xc3]]).unwrap_err()
        );
        assert_eq!(
            bad.error,
            Error::Protocol("the data frame of argument 0 is not valid UTF-8".into())
        );
    }

    #[test]
    fn requests_with_data_frames_round_trip() {
        let req = Request {
            id: Some(json!(1)),
            password: "p".into(),
            function: "f".into(),
            args: vec![
                json!("short"),
                json!("x".repeat(40)),
                json!(3),
                json!("y".repeat(50)),
            ],
            kwargs: Map::new(),
            timeout_ms: Some(100),
            accept_frames: true,
            ack: Vec::new(),
        };
        let frames = encode_request_frames(&req, 40);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[0],
            br#"{"accept_frames":true,"args":["short",null,3,null],"frames":[1,3],"function":"f","id":1,"password":"p","timeout_ms":100}"#
        );
        assert_eq!(frames[1], "x".repeat(40).into_bytes());
        let mut data = frames.clone();
        let body = data.remove(0);
        assert_eq!(decode_request_frames(&body, data), Ok(req.clone()));
        // Below the threshold everything stays inline: the single-frame encoding.
        assert_eq!(encode_request_frames(&req, 51), vec![encode_request(&req)]);
        assert!(lists_frames(&frames[0]));
        assert!(!lists_frames(&encode_request(&req)));
        assert!(!lists_frames(br#"{"frames":null}"#));
        assert!(!lists_frames(b"not json"));
    }

    #[test]
    fn acknowledgements_round_trip_in_sorted_place() {
        let req = Request {
            id: Some(json!("c-3")),
            password: "p".into(),
            function: "f".into(),
            args: vec![],
            kwargs: Map::new(),
            timeout_ms: None,
            accept_frames: true,
            ack: vec![json!("c-1"), json!(2)],
        };
        let body = encode_request(&req);
        assert_eq!(
            body,
            br#"{"accept_frames":true,"ack":["c-1",2],"args":[],"function":"f","id":"c-3","password":"p"}"#
        );
        assert_eq!(decode_request(&body), Ok(req.clone()));
        let raw = decode_request_raw(body, Vec::new()).expect("decodes");
        assert_eq!(raw.ack, req.ack);
        let none = Request {
            ack: Vec::new(),
            ..req
        };
        assert!(!String::from_utf8(encode_request(&none))
            .unwrap()
            .contains("ack"));
    }

    #[test]
    fn replies_with_a_data_frame_decode() {
        let id = json!("i");
        let (body, data) =
            reply_from_parts(&id, OutcomeKind::Text, b"t\"\xc3\xa9".as_slice().into());
        assert_eq!(body, br#"{"id":"i","result_frame":true}"#);
        let data = data.expect("a data frame");
        assert_eq!(
            decode_reply_frames(&body, vec![data.clone()]),
            Ok(Reply {
                id: id.clone(),
                outcome: Ok(json!("t\"\u{e9}"))
            })
        );
        let refused = |body: &[u8], data: Vec<Vec<u8>>| {
            matches!(decode_reply_frames(body, data), Err(Error::Protocol(_)))
        };
        assert!(refused(&body, vec![]));
        assert!(refused(&body, vec![data.clone(), data.clone()]));
        assert!(refused(&body, vec![vec![0xff]]));
        assert!(refused(br#"{"id":1,"result":2}"#, vec![data.clone()]));
        assert!(refused(
            br#"{"id":1,"result":2,"result_frame":true}"#,
            vec![data.clone()]
        ));
        assert!(refused(br#"{"id":1,"result_frame":false}"#, vec![data]));
    }

    #[test]
    fn raw_request_decoding_matches_the_reference() {
        for frame in REQUESTS {
            same_request(frame.as_bytes());
        }
        same_request(&[0xff, b'{', b'}']);
        let deep = format!(
            r#"{{"password":"p","function":"f","args":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        same_request(deep.as_bytes());
        // Golden and invalid vectors.
        for dir in ["tests/vectors/client", "tests/vectors/invalid"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with("request") {
                    continue;
                }
                let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                for frame in v["frames"].as_array().into_iter().flatten() {
                    if let Some(f) = frame.as_str() {
                        same_request(f.as_bytes());
                    } else if let Some(hex) = frame["hex"].as_str() {
                        let bytes: Vec<u8> = (0..hex.len())
                            .step_by(2)
                            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                            .collect();
                        same_request(&bytes);
                    }
                }
            }
        }
    }

    fn mutate(seed: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
        const BYTES: &[u8] = b"{}[]\",:\\ 0123456789.eE-+tfnul\"axz\xc3\xa9\xff";
        let mut f = seed.to_vec();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(0..=f.len());
            match rng.u8(0..3) {
                0 if at < f.len() => {
                    f.remove(at);
                }
                1 if at < f.len() => f[at] = BYTES[rng.usize(0..BYTES.len())],
                _ => f.insert(at, BYTES[rng.usize(0..BYTES.len())]),
            }
        }
        f
    }

    #[test]
    fn raw_request_decoding_matches_the_reference_on_mutated_frames() {
        let mut rng = fastrand::Rng::with_seed(5);
        for i in 0..30_000 {
            let seed = REQUESTS[i % REQUESTS.len()].as_bytes();
            same_request(&mutate(seed, &mut rng));
        }
    }

    fn same_worker_reply(frames: &[Vec<u8>]) {
        let reference = decode_worker_message(frames);
        match (decode_worker_reply_raw(frames), reference) {
            (None, Ok(WorkerMessage::Reply { .. })) => panic!("a REPLY not taken: {frames:?}"),
            (None, _) => {}
            (Some(Err(a)), Err(b)) => assert_eq!(a, b),
            (
                Some(Ok((key, RawOutcome::Result(body)))),
                Ok(WorkerMessage::Reply {
                    key: k,
                    outcome: Ok(v),
                }),
            ) => {
                assert_eq!(key, k);
                let parsed: Value = serde_json::from_slice(&body).expect("result parses");
                assert_eq!(parsed, v, "{frames:?}");
                let id = json!("i-1");
                let (reply, data) = reply_from_parts(&id, OutcomeKind::Result, body);
                assert_eq!(data, None);
                assert_eq!(decode_reply(&reply).unwrap(), Reply { id, outcome: Ok(v) });
            }
            (
                Some(Ok((key, RawOutcome::Error(e)))),
                Ok(WorkerMessage::Reply {
                    key: k,
                    outcome: Err(f),
                }),
            ) => {
                assert_eq!((key, &e), (k, &f));
                let id = json!(3);
                assert_eq!(
                    reply_from_parts(&id, OutcomeKind::Error, error_body(&e).into()),
                    (
                        encode_reply(&Reply {
                            id,
                            outcome: Err(f)
                        }),
                        None
                    )
                );
            }
            (a, b) => panic!("raw and reference disagree on {frames:?}: {a:?} / {b:?}"),
        }
    }

    #[test]
    fn raw_reply_decoding_matches_the_reference() {
        let bodies: &[&str] = &[
            r#"{"result":12}"#,
            r#" { "result" : [ 1, "a\u0041" ] } "#,
            r#"{"result":null}"#,
            r#"{"result":1e400}"#,
            r#"{"result":1,"result":2}"#,
            r#"{"result":1,"error":{"type":"RuntimeError","message":"x"}}"#,
            r#"{"error":{"type":"RuntimeError","message":"boom"}}"#,
            r#"{"error":{"type":"OverloadError","message":"m","retry_after_ms":200}}"#,
            r#"{"error":"x"}"#,
            r#"{}"#,
            r#"[]"#,
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for (i, body) in bodies.iter().cycle().take(20_000).enumerate() {
            let body = if i < bodies.len() {
                body.as_bytes().to_vec()
            } else {
                mutate(body.as_bytes(), &mut rng)
            };
            let key: &[u8] = [b"17".as_slice(), b"017", b"x"][i % 7 / 5 + i % 2 * (i % 7 / 6)];
            same_worker_reply(&[
                WORKER_PROTOCOL.to_vec(),
                CMD_REPLY.to_vec(),
                key.to_vec(),
                body,
            ]);
        }
        same_worker_reply(&[WORKER_PROTOCOL.to_vec(), CMD_REPLY.to_vec(), b"1".to_vec()]);
        same_worker_reply(&[WORKER_PROTOCOL.to_vec(), CMD_HEARTBEAT.to_vec()]);
    }

    /// The quick reply reader takes only what the full decoder reads the same way.
    fn same_reply(body: &[u8]) -> bool {
        let Some(quick) = quick_result(body) else {
            return false;
        };
        match decode_reply_in_full(body, Vec::new()) {
            Ok(full) => assert_eq!(quick, full, "{}", String::from_utf8_lossy(body)),
            Err(e) => panic!("quick took what the full decoder refuses ({e}): {body:?}"),
        }
        true
    }

    #[test]
    fn quick_reply_decoding_matches_the_full_decoder() {
        let taken = [
            r#"{"id":"5f3e9a01-7","result":12}"#,
            r#"{"result":[1,"a\u0041",{"k":null}],"id":3}"#,
            r#" { "id" : null , "result" : null } "#,
            r#"{"id":"x","result":"\ud83d\ude00 \u00e9"}"#,
        ];
        for body in taken {
            assert!(same_reply(body.as_bytes()), "not taken: {body}");
        }
        let others = [
            r#"{"id":1,"result":1,"result":2}"#,
            r#"{"id":1,"id":2,"result":1}"#,
            r#"{"id":1,"r\u0065sult":1}"#,
            r#"{"id":1,"result":1e400}"#,
            r#"{"id":1,"result":2,"extra":true}"#,
            r#"{"id":1,"error":{"type":"RuntimeError","message":"boom"}}"#,
            r#"{"id":1,"result_frame":true}"#,
            r#"{"result":1}"#,
            r#"{"id":1,"result":1} x"#,
            r#"[1]"#,
        ];
        for body in others {
            assert!(!same_reply(body.as_bytes()), "taken: {body}");
        }
        let mut rng = fastrand::Rng::with_seed(11);
        let mut taken_mutants = 0;
        for i in 0..30_000 {
            let seed = taken[i % taken.len()].as_bytes();
            taken_mutants += usize::from(same_reply(&mutate(seed, &mut rng)));
        }
        assert!(taken_mutants > 1_000, "{taken_mutants} mutants taken");
    }

    #[test]
    fn raw_encodings_are_the_canonical_bytes() {
        let call = Call {
            function: "f\"ü".into(),
            args: vec![json!(1), json!({"b": [2.5, null]})],
            kwargs: [("k".to_string(), json!("v"))].into_iter().collect(),
            timeout_ms: None,
        };
        let args = to_bytes_of(&call.args);
        let kwargs = to_bytes_of(&call.kwargs);
        for (kw, t) in [(Some(kwargs.as_slice()), Some(5)), (None, None)] {
            let mut call = call.clone();
            if kw.is_none() {
                call.kwargs.clear();
            }
            assert_eq!(
                encode_raw_request_message(3, &call.function, &args, kw, t),
                encode_request_message(3, &call, t)
            );
        }
        for outcome in [
            Ok(json!({"a": [1, "x"]})),
            Err(Error::Runtime("boom".into())),
        ] {
            let id = json!("5f3e9a01-7");
            let (kind, body) = match &outcome {
                Ok(v) => (OutcomeKind::Result, to_bytes(v)),
                Err(e) => (OutcomeKind::Error, error_body(e)),
            };
            assert_eq!(
                reply_from_parts(&id, kind, body.into()),
                (encode_reply(&Reply { id, outcome }), None)
            );
        }
    }
}
