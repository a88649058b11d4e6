//! The broker's state machine: worker registry, request queue, deadlines, heartbeats,
//! retries.
//!
//! No sockets and no clock: every event comes in with `now`, and every effect goes
//! out as an [`Action`] for the socket loop to carry out. So dispatch, expiry and
//! liveness are unit-tested without sleeping.
//!
//! Dispatch rule: a request goes only to a worker that serves its function, has a free
//! slot (capacity minus calls in flight) and is not draining, least recently used
//! first; otherwise it waits in one FIFO queue. A slow call therefore never holds up a
//! fast one while any worker that could run the fast one is idle.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::recent::{KeyHasher, Recent, RetryKey, Seen};
use super::throttle::Throttle;
use crate::error::Error;
use crate::protocol::{
    self, BrokerMessage, FunctionInfo, OutcomeKind, RawOutcome, RawRequest, Ready, Reply,
    WorkerMessage,
};
use crate::worker::local::{LocalCall, Output};

/// A decoded worker message: a REPLY with its result still JSON text, or another one.
enum Incoming<'a> {
    Reply(u64, RawOutcome<'a>),
    Other(WorkerMessage),
}

/// The broker's maps, looked up several times per call: keyed by broker-chosen request
/// keys, worker identities and function names, with a per-process random seed, so
/// foldhash's speed is all that matters here. (SipHash, the default, was about 1 % of
/// the server's samples under W2; W2 with foldhash: 29,211 against 28,722 calls/s,
/// medians of 5 alternating runs, within the noise.)
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The routing frames of a client message, up to and including the empty delimiter.
pub(crate) type Envelope = Vec<Vec<u8>>;
/// A worker's ROUTER identity.
pub(crate) type WorkerId = Vec<u8>;

/// The id of the server's local worker pool (see `worker::local`): empty, which no
/// ROUTER identity is. The pool counts as one worker with one slot per thread; it sends
/// no heartbeats and is never lost.
pub(crate) const LOCAL: WorkerId = Vec::new();

fn is_local(id: &[u8]) -> bool {
    id.is_empty()
}

/// The id under which the broker itself runs the functions registered as direct (see
/// `Registration::direct`): one zero byte, which no ROUTER identity is either (libzmq's
/// own are five bytes, and a peer's may not start with a zero byte).
pub(crate) fn direct_id() -> WorkerId {
    vec![0]
}

fn is_direct(id: &[u8]) -> bool {
    id == [0]
}

/// The local pool or the broker itself: never lost, no heartbeats, not on the wire.
fn is_in_process(id: &[u8]) -> bool {
    is_local(id) || is_direct(id)
}

/// Calls per thread the local pool may hold while it is the only worker (see
/// `Dispatcher::slots`).
const LOCAL_CALLS_PER_THREAD: u32 = 4;

/// An effect for the socket loop.
#[derive(Debug, PartialEq)]
#[allow(clippy::enum_variant_names)] // where each goes is what tells them apart
pub(crate) enum Action {
    /// Send `reply` to the client behind `envelope`, followed by `data` when the
    /// result is a data frame.
    ToClient {
        envelope: Envelope,
        reply: Vec<u8>,
        data: Option<Vec<u8>>,
    },
    /// Send `frames` to `worker`. `key` names the request they carry, if any, so that
    /// a failed send can be reported back with [`Dispatcher::undeliverable`].
    ToWorker {
        worker: WorkerId,
        key: Option<u64>,
        frames: Vec<Vec<u8>>,
    },
    /// Hand `call` to the local worker pool.
    ToLocal(LocalCall),
    /// Run `call` on the broker thread now (a direct function), then report it with
    /// [`Dispatcher::direct_reply`].
    RunHere(LocalCall),
}

/// What the dispatcher needs to know about its server.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Returned by `ping`.
    pub name: String,
    /// The shared secret clients must present.
    pub password: String,
    /// The secret workers must present in READY (by default the password).
    pub worker_secret: String,
    /// The longest a call may take, whatever the client asks.
    pub timeout: Duration,
    /// Queued requests before new ones are refused with `OverloadError`.
    pub queue_limit: usize,
    /// Bytes of requests held for calls not yet answered (waiting or running) beyond
    /// which a request that would wait is refused with `OverloadError`.
    pub queue_bytes: usize,

    /// Missed worker heartbeats before a worker counts as lost.
    pub heartbeat_liveness: u32,
    /// How long finished requests are remembered for retries.
    pub retry_window: Duration,
    /// How many requests are remembered for retries.
    pub retry_entries: usize,
    /// How many bytes of stored replies are kept for retries.
    pub retry_bytes: usize,
    /// After start, how long a request for a function no worker serves waits for workers
    /// to (re-)register before it is answered `NameError`. A restarted standalone broker
    /// needs this; an `RpcServer` registers its workers before it serves (zero).
    pub warmup: Duration,
}

/// Most clients one job answers; a further retry replaces the oldest waiter.
const MAX_WAITERS: usize = 8;

/// How long after a call's announced deadline (`timeout_ms`) the broker still
/// remembers it for retries: room for a retry sent just before the deadline to reach the
/// broker through the network and the frontend's input queue.
pub(crate) const RETRY_SLACK: Duration = Duration::from_secs(10);

/// Deadlines of ended jobs the heap may hold beyond twice the live ones before it is
/// rebuilt (see `Dispatcher::compact_deadlines`).
const DEADLINES_SLACK: usize = 1024;

/// What an `OverloadError` tells the client to wait before trying again.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_millis(200);

struct Worker {
    name: String,
    capacity: u32,
    in_flight: u32,
    /// Said DRAIN: gets no new requests.
    draining: bool,
    functions: FastMap<String, FunctionInfo>,
    /// Dispatch sequence number of the last request it got (LRU order).
    last_used: u64,
    /// When the worker counts as lost unless it is heard from.
    expires: Instant,
    /// The worker's own heartbeat interval, from READY.
    interval: Duration,
    next_heartbeat: Instant,
}

enum State {
    Queued,
    Running(WorkerId),
}

struct Job {
    /// The clients waiting for the reply: the caller, and the sockets its retries came
    /// from (an earlier attempt's socket may be gone; a reply to it is then dropped by
    /// libzmq and logged). Empty once they were answered with a timeout while a worker
    /// still runs the call.
    waiters: Vec<Envelope>,
    id: Value,
    /// The request, its arguments still the JSON text the client sent.
    call: RawRequest,
    deadline: Instant,
    state: State,
    retry_key: Option<RetryKey>,
    /// The request's size (body and data frames), counted in `Dispatcher::held_bytes`.
    size: usize,
    /// The request's connection and id ([`KeyHasher::owner`]), which may acknowledge a
    /// long outcome; meaningful only with a `retry_key`.
    owner: u64,
    /// Already sent to a second worker after its first one was lost.
    redispatched: bool,
}

/// The broker's state. See the module docs.
pub(crate) struct Dispatcher {
    settings: Settings,
    workers: FastMap<WorkerId, Worker>,
    jobs: FastMap<u64, Job>,
    /// Keys in arrival order; may hold keys that are no longer queued (skipped).
    queue: VecDeque<u64>,
    queued: usize,
    /// Bytes of the requests of all jobs (see `Settings::queue_bytes`).
    held_bytes: usize,
    /// (deadline, key); stale when the job's deadline has moved (a retry extended it).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    recent: Recent,
    keys: KeyHasher,
    next_key: u64,
    dispatch_seq: u64,
    /// Shutting down: new requests are refused, running ones finish.
    draining: bool,
    /// Until then, requests for unknown functions wait (see `Settings::warmup`).
    warm_until: Option<Instant>,
    /// The warm-up has just ended: what no worker serves now was never registered.
    warmup_ended: bool,
    /// Wrong passwords per peer address.
    throttle: Throttle,
    /// Worker messages dropped: malformed, or a reply to a request the worker was not
    /// given.
    dropped: u64,
}

/// The local pool's or the broker's own entry: no heartbeats, never lost (its expiry
/// and heartbeat times are never looked at).
fn in_process_worker(
    name: String,
    functions: Vec<FunctionInfo>,
    capacity: u32,
    now: Instant,
) -> Worker {
    Worker {
        name,
        capacity,
        in_flight: 0,
        draining: false,
        functions: functions.into_iter().map(|f| (f.name.clone(), f)).collect(),
        last_used: 0,
        expires: now,
        interval: Duration::ZERO,
        next_heartbeat: now,
    }
}

fn passwords_match(given: &str, expected: &str) -> bool {
    // Constant time in the length of the longer input: no early exit on a mismatch.
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Where a client message's envelope ends: the index of its first body frame.
fn envelope_len(frames: &[Vec<u8>]) -> usize {
    // REQ and DEALER-with-delimiter clients: identity frames, an empty frame, the body.
    // A DEALER without the delimiter: just the identity, then the body.
    frames
        .iter()
        .position(Vec::is_empty)
        .map_or(1.min(frames.len()), |i| i + 1)
}

fn encode(id: Value, outcome: Result<Value, Error>) -> Vec<u8> {
    protocol::encode_reply(&Reply { id, outcome })
}

/// Sends one encoded reply (and its data frame, if any) to every waiting client (the
/// last one gets `reply` itself, not a copy: usually there is only one).
fn answer(
    mut waiters: Vec<Envelope>,
    (reply, data): (Vec<u8>, Option<Vec<u8>>),
    out: &mut Vec<Action>,
) {
    let last = waiters.pop();
    for envelope in waiters {
        out.push(Action::ToClient {
            envelope,
            reply: reply.clone(),
            data: data.clone(),
        });
    }
    if let Some(envelope) = last {
        out.push(Action::ToClient {
            envelope,
            reply,
            data,
        });
    }
}

impl Dispatcher {
    pub(crate) fn new(settings: Settings, now: Instant) -> Self {
        let recent = Recent::new(
            settings.retry_window,
            settings.retry_entries,
            settings.retry_bytes,
            now,
        );
        Dispatcher {
            workers: FastMap::default(),
            jobs: FastMap::default(),
            queue: VecDeque::new(),
            queued: 0,
            held_bytes: 0,
            deadlines: BinaryHeap::new(),
            recent,
            keys: KeyHasher::new(),
            // A random start: a reply from a worker that was connected to an earlier
            // broker on this address can never match a request key of this one.
            next_key: fastrand::u64(1..1 << 62),
            dispatch_seq: 0,
            draining: false,
            warmup_ended: false,
            throttle: Throttle::default(),
            dropped: 0,
            warm_until: Some(now + settings.warmup).filter(|_| !settings.warmup.is_zero()),
            settings,
        }
    }

    /// Number of registered workers.
    pub(crate) fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Worker messages dropped so far (malformed, or replies nobody asked for).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    #[cfg(test)]
    /// Number of requests waiting for a worker.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Number of requests running on workers (including ones whose caller was already
    /// answered with a timeout).
    pub(crate) fn running(&self) -> usize {
        self.jobs.len() - self.queued
    }

    fn reply(
        &self,
        envelope: Envelope,
        id: Value,
        outcome: Result<Value, Error>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::ToClient {
            envelope,
            reply: encode(id, outcome),
            data: None,
        });
    }

    /// A message from a client: all its frames as the frontend ROUTER received them.
    #[allow(dead_code)] // the socket loop knows the peer; tests and fuzzing do not
    pub(crate) fn client_message(
        &mut self,
        frames: Vec<Vec<u8>>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.client_message_from(frames, None, now, out);
    }

    /// [`Dispatcher::client_message`] from the peer address `peer` (when the transport
    /// knows it), which repeated wrong passwords lock out for a while.
    pub(crate) fn client_message_from(
        &mut self,
        frames: Vec<Vec<u8>>,
        peer: Option<&str>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let mut envelope = frames;
        let split = envelope_len(&envelope);
        if split == 0 {
            return; // nothing to answer to: a ROUTER always gives an identity frame
        }
        let body_frames = envelope.len() - split;
        // More than one frame: data frames (docs/protocol.md 4.10), if the body says so.
        let framed = body_frames > 1 && protocol::lists_frames(&envelope[split]);
        if body_frames == 0 || (body_frames > 1 && !framed) {
            envelope.truncate(split);
            let err = Error::Protocol(format!(
                "a request is one frame after the envelope, got {body_frames}"
            ));
            return self.reply(envelope, Value::Null, Err(err), out);
        }
        let data = if framed {
            envelope.split_off(split + 1)
        } else {
            Vec::new()
        };
        // The body is now the last frame: taking it leaves the envelope.
        let Some(frame) = envelope.pop() else {
            return;
        };
        let req = match protocol::decode_request_raw(frame, data) {
            Ok(req) => req,
            Err(bad) => return self.reply(envelope, bad.id, Err(bad.error), out),
        };
        self.request(envelope, req, peer, now, out);
    }

    fn request(
        &mut self,
        envelope: Envelope,
        req: RawRequest,
        peer: Option<&str>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // `Request`'s Debug redacts the password.
        tracing::trace!(request = ?req, peer, "client request");
        let id = req.id.clone().unwrap_or(Value::Null);
        if let Some(left) = peer.and_then(|p| self.throttle.locked(p, now)) {
            let err = Error::Permission(format!(
                "too many wrong passwords from this address; try again in {} ms",
                left.as_millis().max(1)
            ));
            return self.reply(envelope, id, Err(err), out);
        }
        if !passwords_match(&req.password, &self.settings.password) {
            if let Some(p) = peer {
                self.throttle.failed(p, now);
            }
            let err = Error::Permission("wrong password".into());
            return self.reply(envelope, id, Err(err), out);
        }
        if let Some(p) = peer {
            self.throttle.succeeded(p);
        }
        for acked in &req.ack {
            let text = serde_json::to_string(acked).unwrap_or_default();
            self.recent.release(self.keys.owner(&envelope, &text), now);
        }
        match req.function.as_str() {
            protocol::BUILTIN_PING => {
                let name = Value::String(self.settings.name.clone());
                return self.reply(envelope, id, Ok(name), out);
            }
            protocol::BUILTIN_LIST => {
                let list = self.list_functions();
                return self.reply(envelope, id, Ok(list), out);
            }
            _ => {}
        }
        let budget = req.timeout_ms.map_or(self.settings.timeout, |ms| {
            Duration::from_millis(ms).min(self.settings.timeout)
        });
        let id_text = serde_json::to_string(&id).unwrap_or_default();
        let positions: Vec<u8> = req
            .frames()
            .iter()
            .flat_map(|(p, _)| (*p as u64).to_le_bytes())
            .collect();
        let mut arguments = vec![
            req.args(),
            req.kwargs().unwrap_or_default(),
            if req.accept_frames { b"accept" } else { b"" },
            &positions,
        ];
        arguments.extend(req.frames().iter().map(|(_, f)| f.as_bytes()));
        let retry_key = self.keys.key(
            req.id.as_ref().map(|_| id_text.as_str()),
            &req.function,
            &arguments,
        );
        let owner = match retry_key {
            Some(_) => self.keys.owner(&envelope, &id_text),
            None => 0,
        };
        // A client retries only until the deadline it announced; one that announces
        // none may retry for the whole window.
        let remember = req.timeout_ms.map_or(self.settings.retry_window, |ms| {
            Duration::from_millis(ms).saturating_add(RETRY_SLACK)
        });
        if let Some(key) = &retry_key {
            match self.recent.get(key, now) {
                Some(Seen::Done { kind, body }) => {
                    tracing::debug!(%id, "retry of a finished request: stored reply");
                    // The retry's id encodes to the original's bytes: it matched.
                    let (reply, data) = protocol::reply_from_parts(&id, kind, body.into());
                    self.recent.extend(key, remember, now);
                    out.push(Action::ToClient {
                        envelope,
                        reply,
                        data,
                    });
                    return;
                }
                Some(Seen::Released) => {
                    let err = Error::Protocol(format!(
                        "request {} was answered and its reply acknowledged (`ack`); \
                         it is not run again",
                        protocol::excerpt(&id_text)
                    ));
                    return self.reply(envelope, id, Err(err), out);
                }
                Some(Seen::Running(job_key)) => {
                    self.recent.extend(key, remember, now);
                    if let Some(job) = self.jobs.get_mut(&job_key) {
                        tracing::debug!(%id, "retry of a running request: waiting for it");
                        if job.waiters.len() >= MAX_WAITERS {
                            job.waiters.remove(0);
                        }
                        job.waiters.push(envelope);
                        // The newest attempt's connection is the one that will
                        // acknowledge the reply, if any does.
                        job.owner = owner;
                        let deadline = (now + budget).max(job.deadline);
                        if deadline > job.deadline {
                            job.deadline = deadline;
                            self.deadlines.push(Reverse((deadline, job_key)));
                        }
                        return;
                    }
                }
                None => {}
            }
        }
        if self.draining {
            let err = Error::Unavailable("the server is shutting down".into());
            return self.reply(envelope, id, Err(err), out);
        }
        let warming = self.warm_until.is_some_and(|t| now < t);
        if !warming
            && !self
                .workers
                .values()
                .any(|w| w.functions.contains_key(&req.function))
        {
            let err = Error::Name(format!(
                "no function named '{}' is registered",
                protocol::excerpt(&req.function)
            ));
            return self.reply(envelope, id, Err(err), out);
        }
        if budget.is_zero() {
            let err = Error::Timeout("the request's deadline had passed when it arrived".into());
            return self.reply(envelope, id, Err(err), out);
        }
        let idle = self.idle_worker_for(&req.function);
        // A call that would wait, in the broker's queue or in the local pool's beyond its
        // threads, counts against the queue limit either way.
        let would_wait = idle
            .as_ref()
            .map_or(true, |w| is_local(w) && self.local_waiting().is_some());
        let waiting = self.queued + self.local_waiting().unwrap_or(0);
        let size = req.size();
        let full = if !would_wait {
            None
        } else if waiting >= self.settings.queue_limit {
            Some(format!("the queue is full ({waiting} requests waiting)"))
        } else if self.held_bytes + size > self.settings.queue_bytes {
            Some(format!(
                "the queue is full ({} bytes of requests held, at most {})",
                self.held_bytes, self.settings.queue_bytes
            ))
        } else {
            None
        };
        if let Some(message) = full {
            let err = Error::Overloaded {
                message,
                retry_after: OVERLOAD_RETRY_AFTER,
            };
            return self.reply(envelope, id, Err(err), out);
        }
        let key = self.next_key;
        self.next_key += 1;
        let deadline = now + budget;
        self.deadlines.push(Reverse((deadline, key)));
        if let Some(rk) = retry_key {
            self.recent.start(rk, key, remember, now);
        }
        self.jobs.insert(
            key,
            Job {
                waiters: vec![envelope],
                id,
                call: req,
                deadline,
                state: State::Queued,
                retry_key,
                size,
                owner,
                redispatched: false,
            },
        );
        self.held_bytes += size;
        match idle {
            Some(worker) => self.dispatch(key, worker, now, out),
            None => {
                self.queue.push_back(key);
                self.queued += 1;
            }
        }
    }

    /// How many calls `w` may hold at once: its capacity, except for the local pool
    /// while it is the only worker, which may hold `LOCAL_CALLS_PER_THREAD` per thread
    /// (4: measured, W4 went from 80,000-90,000 calls/s with 2 to 92,000-103,000; 8
    /// gained less again). Calls waiting there count against the queue limit, and a
    /// drain refuses them (`local_unstarted`), as if they waited here. Its threads
    /// take calls from one queue, the first thread to be free the oldest call, so a call
    /// waiting there waits no longer than it would in the broker's queue, while a
    /// thread that finishes a call finds the next one without a round trip through the
    /// broker (`docs/performance.md`).
    fn slots(&self, id: &[u8], w: &Worker) -> u32 {
        if is_local(id) && self.workers.keys().all(|id| is_in_process(id)) {
            w.capacity.saturating_mul(LOCAL_CALLS_PER_THREAD)
        } else {
            w.capacity
        }
    }

    fn idle_worker_for(&self, function: &str) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(id, w)| {
                !w.draining && w.in_flight < self.slots(id, w) && w.functions.contains_key(function)
            })
            .min_by_key(|(_, w)| w.last_used)
            .map(|(id, _)| id.clone())
    }

    /// Sends job `key` (not counted as queued) to `worker`, which has a free slot; or,
    /// when its deadline has passed, answers it with a timeout instead.
    fn dispatch(&mut self, key: u64, worker_id: WorkerId, now: Instant, out: &mut Vec<Action>) {
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        if job.deadline <= now {
            return self.end_unrun(key, "no worker became free before the deadline", out);
        }
        let (Some(job), Some(worker)) = (self.jobs.get_mut(&key), self.workers.get_mut(&worker_id))
        else {
            return;
        };
        self.dispatch_seq += 1;
        worker.last_used = self.dispatch_seq;
        worker.in_flight += 1;
        job.state = State::Running(worker_id.clone());
        if is_in_process(&worker_id) {
            // The pool takes the arguments as the client's JSON text, and the deadline
            // itself: no message to encode. Data frames move (an in-process call is
            // never sent again).
            let call = LocalCall {
                key,
                function: job.call.function.clone(),
                args: job.call.args().to_vec(),
                kwargs: job.call.kwargs().map(<[u8]>::to_vec),
                frames: job.call.take_frames(),
                accept_frames: job.call.accept_frames,
                deadline: job.deadline,
            };
            return out.push(if is_direct(&worker_id) {
                Action::RunHere(call)
            } else {
                Action::ToLocal(call)
            });
        }
        let remaining = job.deadline.saturating_duration_since(now);
        let timeout_ms = Some(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX));
        out.push(Action::ToWorker {
            worker: worker_id,
            key: Some(key),
            // The arguments go on as the client sent them: no parse, no re-encoding.
            frames: protocol::encode_raw_request_message(
                key,
                &job.call.function,
                &job.call.args_inline(),
                job.call.kwargs(),
                timeout_ms,
            ),
        });
    }

    /// Ends a job that never ran (not queued any more) with a timeout; a retry of it
    /// may run it.
    /// How many calls wait in the local pool for a thread, when all its threads are
    /// taken (`Some(0)`: all taken, none waiting); `None` while a thread is free or
    /// there is no pool.
    fn local_waiting(&self) -> Option<usize> {
        let pool = self.workers.get(&LOCAL)?;
        (pool.in_flight >= pool.capacity).then(|| (pool.in_flight - pool.capacity) as usize)
    }

    /// Calls the local pool gives back unstarted (the server is shutting down): they are
    /// answered as queued ones are by [`Dispatcher::drain`].
    pub(crate) fn local_unstarted(&mut self, key: u64, out: &mut Vec<Action>) {
        if !matches!(self.jobs.get(&key), Some(Job { state: State::Running(w), .. }) if is_local(w))
        {
            return;
        }
        if let Some(pool) = self.workers.get_mut(&LOCAL) {
            pool.in_flight = pool.in_flight.saturating_sub(1);
        }
        if let Some(job) = self.remove_job(key) {
            if let Some(rk) = &job.retry_key {
                self.recent.forget(rk);
            }
            let err = Error::Unavailable("the server is shutting down".into());
            answer(job.waiters, (encode(job.id, Err(err)), None), out);
        }
    }

    /// Ends the books on job `key`: it is answered (or about to be).
    fn remove_job(&mut self, key: u64) -> Option<Job> {
        let job = self.jobs.remove(&key)?;
        self.held_bytes -= job.size;
        Some(job)
    }

    fn end_unrun(&mut self, key: u64, why: &str, out: &mut Vec<Action>) {
        let Some(job) = self.remove_job(key) else {
            return;
        };
        if let Some(rk) = &job.retry_key {
            self.recent.forget(rk);
        }
        answer(
            job.waiters,
            (encode(job.id, Err(Error::Timeout(why.into()))), None),
            out,
        );
    }

    /// Ends a job that ran (or may have run) with an error, storing it for retries.
    fn end_run_err(&mut self, key: u64, err: Error, now: Instant, out: &mut Vec<Action>) {
        let body = protocol::error_body(&err);
        self.end_run(key, OutcomeKind::Error, body.into(), now, out);
    }

    /// Ends a job that ran (or may have run) with its outcome's bytes, storing them for
    /// retries.
    fn end_run(
        &mut self,
        key: u64,
        kind: OutcomeKind,
        body: Cow<'_, [u8]>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(job) = self.remove_job(key) else {
            return;
        };
        if let Some(rk) = job.retry_key {
            self.recent.finish(&rk, kind, &body, job.owner, now);
        }
        let reply = protocol::reply_from_parts(&job.id, kind, body);
        if job.waiters.is_empty() {
            tracing::debug!(
                key,
                "late reply kept for retries only: the caller had timed out"
            );
        }
        answer(job.waiters, reply, out);
    }

    /// Hands queued requests to `worker_id` while it has free slots.
    fn feed(&mut self, worker_id: &WorkerId, now: Instant, out: &mut Vec<Action>) {
        loop {
            let Some(worker) = self.workers.get(worker_id) else {
                return;
            };
            if worker.draining
                || worker.in_flight >= self.slots(worker_id, worker)
                || self.queued == 0
            {
                return;
            }
            let jobs = &self.jobs;
            let queued = |key: &u64| {
                matches!(
                    jobs.get(key),
                    Some(Job {
                        state: State::Queued,
                        ..
                    })
                )
            };
            // Keys of requests that left the queue otherwise (expired, answered) are
            // dropped when they reach the front; elsewhere they are skipped.
            while self.queue.front().is_some_and(|k| !queued(k)) {
                self.queue.pop_front();
            }
            // Usually the oldest request fits and this stops at the front.
            let position = self.queue.iter().position(|k| {
                queued(k)
                    && jobs
                        .get(k)
                        .is_some_and(|j| worker.functions.contains_key(&j.call.function))
            });
            let Some(key) = position.and_then(|p| self.queue.remove(p)) else {
                return;
            };
            self.queued -= 1;
            self.dispatch(key, worker_id.clone(), now, out);
        }
    }

    fn feed_all(&mut self, now: Instant, out: &mut Vec<Action>) {
        let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
        for id in ids {
            self.feed(&id, now, out);
        }
    }

    fn list_functions(&self) -> Value {
        let mut by_name: HashMap<&str, (&FunctionInfo, u32)> = HashMap::new();
        for (id, w) in &self.workers {
            // The local pool is one worker per thread, as far as callers can tell.
            let count = if is_local(id) { w.capacity } else { 1 };
            let count = if is_direct(id) { 1 } else { count };
            for (name, info) in &w.functions {
                by_name.entry(name).or_insert((info, 0)).1 += count;
            }
        }
        let mut names: Vec<&str> = by_name.keys().copied().collect();
        names.sort_unstable();
        Value::Array(
            names
                .into_iter()
                .map(|n| {
                    let (info, workers) = by_name[n];
                    let mut v = protocol::function_info_json(info);
                    v["workers"] = json!(workers);
                    v
                })
                .collect(),
        )
    }

    /// A message from a worker (frames after its identity).
    pub(crate) fn worker_message(
        &mut self,
        id: WorkerId,
        frames: &[Vec<u8>],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if is_in_process(&id) {
            // Not a ROUTER identity: the local pool talks through `local_reply`.
            self.dropped += 1;
            return;
        }
        // A REPLY is read with its result left as JSON text, to be forwarded as it is.
        let decoded = match protocol::decode_worker_reply_raw(frames) {
            Some(reply) => reply.map(|(key, outcome)| Incoming::Reply(key, outcome)),
            None => protocol::decode_worker_message(frames).map(Incoming::Other),
        };
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => {
                self.dropped += 1;
                tracing::warn!(error = %e, "dropping malformed worker message");
                return;
            }
        };
        if let Some(w) = self.workers.get_mut(&id) {
            w.expires = now + w.interval * self.settings.heartbeat_liveness;
        }
        let known = self.workers.contains_key(&id);
        let msg = match msg {
            Incoming::Reply(key, outcome) => {
                if !known {
                    return self.disconnect(id, "unknown worker: send READY", out);
                }
                self.finish(&id, key, outcome, now, out);
                return self.feed(&id, now, out);
            }
            Incoming::Other(msg) => msg,
        };
        match msg {
            WorkerMessage::Ready(ready) => self.register(id, ready, now, out),
            WorkerMessage::Disconnect { reason } => {
                if known {
                    tracing::info!(worker = %self.worker_name(&id), %reason, "worker left");
                    self.remove_worker(&id, "the worker left while running the call", now, out);
                }
            }
            // The broker restarted or dropped this worker: it must register again.
            _ if !known => self.disconnect(id, "unknown worker: send READY", out),
            WorkerMessage::Heartbeat => {}
            WorkerMessage::Drain => {
                if let Some(w) = self.workers.get_mut(&id) {
                    tracing::info!(worker = %w.name, in_flight = w.in_flight, "worker draining");
                    w.draining = true;
                }
            }
            WorkerMessage::Reply { key, outcome } => {
                // Not reached: `decode_worker_reply_raw` takes every REPLY.
                let outcome = match outcome {
                    Ok(v) => RawOutcome::Result(serde_json::to_vec(&v).unwrap_or_default().into()),
                    Err(e) => RawOutcome::Error(e),
                };
                self.finish(&id, key, outcome, now, out);
                self.feed(&id, now, out);
            }
        }
    }

    /// Registers the server's local worker pool: `capacity` threads serving
    /// `functions`. It is never lost and gets no heartbeats.
    pub(crate) fn add_local(
        &mut self,
        name: String,
        functions: Vec<FunctionInfo>,
        capacity: u32,
        now: Instant,
    ) {
        let worker = in_process_worker(name, functions, capacity, now);
        self.workers.insert(LOCAL, worker);
    }

    /// Registers the functions the broker runs itself (direct functions).
    pub(crate) fn add_direct(&mut self, name: String, functions: Vec<FunctionInfo>, now: Instant) {
        let worker = in_process_worker(name, functions, u32::MAX, now);
        self.workers.insert(direct_id(), worker);
    }

    /// A direct call that has run ([`Action::RunHere`]).
    pub(crate) fn direct_reply(
        &mut self,
        key: u64,
        outcome: Result<Output, Error>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.in_process_reply(&direct_id(), key, outcome, now, out);
    }

    /// Runs `function` on the local pool from now on instead of the broker thread (a
    /// direct call of it took too long). `false` if it was not a direct function.
    pub(crate) fn demote_direct(&mut self, function: &str) -> bool {
        let Some(info) = self
            .workers
            .get_mut(&direct_id())
            .and_then(|w| w.functions.remove(function))
        else {
            return false;
        };
        let target = if self.workers.contains_key(&LOCAL) {
            LOCAL
        } else {
            direct_id() // no pool to move it to: it stays direct
        };
        if let Some(w) = self.workers.get_mut(&target) {
            w.functions.insert(info.name.clone(), info);
        }
        is_local(&target)
    }

    /// A call the local pool finished (`Ok`: the result's JSON text, which the pool
    /// encoded itself), or could not take (`Unavailable` once the pool has stopped).
    pub(crate) fn local_reply(
        &mut self,
        key: u64,
        outcome: Result<Output, Error>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.in_process_reply(&LOCAL, key, outcome, now, out);
    }

    /// A call the pool or the broker itself (`worker`) has run: the result's JSON text,
    /// which our own encoder wrote (so it is not checked), or the error.
    fn in_process_reply(
        &mut self,
        worker: &WorkerId,
        key: u64,
        outcome: Result<Output, Error>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let outcome = match outcome {
            Ok(Output::Json(text)) => RawOutcome::Result(text.into()),
            Ok(Output::Text(text)) => RawOutcome::Text(text),
            Err(e) => RawOutcome::Error(e),
        };
        self.finish(worker, key, outcome, now, out);
        self.feed(worker, now, out);
    }

    fn worker_name(&self, id: &WorkerId) -> String {
        self.workers.get(id).map_or_else(
            || String::from_utf8_lossy(id).into_owned(),
            |w| w.name.clone(),
        )
    }

    fn disconnect(&mut self, worker: WorkerId, reason: &str, out: &mut Vec<Action>) {
        out.push(Action::ToWorker {
            worker,
            key: None,
            frames: protocol::encode_broker_message(&BrokerMessage::Disconnect {
                reason: reason.into(),
            }),
        });
    }

    fn register(&mut self, id: WorkerId, ready: Ready, now: Instant, out: &mut Vec<Action>) {
        // `Ready`'s Debug redacts the secret.
        tracing::trace!(ready = ?ready, "worker registering");
        if !passwords_match(&ready.password, &self.settings.worker_secret) {
            tracing::warn!(worker = %ready.name, "refusing worker: wrong password");
            return self.disconnect(id, protocol::DISCONNECT_WRONG_SECRET, out);
        }
        if let Some(f) = ready
            .functions
            .iter()
            .find(|f| protocol::RESERVED_NAMES.contains(&f.name.as_str()))
        {
            tracing::warn!(worker = %ready.name, function = %f.name, "refusing worker: reserved name");
            let reason = format!("'{}' is a reserved name", f.name);
            return self.disconnect(id, &reason, out);
        }
        if self.draining {
            return self.disconnect(id, "the broker is shutting down", out);
        }
        let interval = Duration::from_millis(ready.heartbeat_ms.max(1));
        tracing::info!(
            worker = %ready.name,
            capacity = ready.capacity,
            functions = ready.functions.len(),
            "worker joined"
        );
        let in_flight = self.workers.get(&id).map_or(0, |w| w.in_flight);
        self.workers.insert(
            id.clone(),
            Worker {
                name: ready.name,
                capacity: ready.capacity,
                in_flight,
                draining: false,
                functions: ready
                    .functions
                    .into_iter()
                    .map(|f| (f.name.clone(), f))
                    .collect(),
                last_used: 0,
                expires: now + interval * self.settings.heartbeat_liveness,
                interval,
                next_heartbeat: now + interval,
            },
        );
        self.feed(&id, now, out);
    }

    fn finish(
        &mut self,
        worker_id: &WorkerId,
        key: u64,
        outcome: RawOutcome<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let owned = matches!(self.jobs.get(&key), Some(Job { state: State::Running(w), .. }) if w == worker_id);
        if !owned {
            self.dropped += 1;
            tracing::debug!(key, "dropping reply for an unknown request");
            return;
        }
        if let Some(w) = self.workers.get_mut(worker_id) {
            w.in_flight = w.in_flight.saturating_sub(1);
        }
        match outcome {
            RawOutcome::Result(body) => self.end_run(key, OutcomeKind::Result, body, now, out),
            RawOutcome::Text(text) => self.end_run(key, OutcomeKind::Text, text.into(), now, out),
            RawOutcome::Error(e) => self.end_run_err(key, e, now, out),
        }
    }

    /// Removes a worker. Each call it was running is sent once more to another worker
    /// when its function is idempotent, else answered with `UnavailableError`.
    fn remove_worker(
        &mut self,
        worker_id: &WorkerId,
        why: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(worker) = self.workers.remove(worker_id) else {
            return;
        };
        let lost: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(&j.state, State::Running(w) if w == worker_id))
            .map(|(k, _)| *k)
            .collect();
        for key in lost {
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            let idempotent = worker
                .functions
                .get(&job.call.function)
                .is_some_and(|f| f.idempotent);
            if idempotent && !job.redispatched && !job.waiters.is_empty() {
                tracing::info!(key, function = %job.call.function, "re-dispatching an idempotent call of a lost worker");
                job.redispatched = true;
                job.state = State::Queued;
                self.queue.push_front(key);
                self.queued += 1;
            } else {
                self.end_run_err(key, Error::Unavailable(why.into()), now, out);
            }
        }
        self.fail_unservable(out);
        self.feed_all(now, out);
    }

    /// Answers queued requests that no remaining worker can serve: `UnavailableError`
    /// after a worker left, `NameError` when the warm-up ends (during it, they wait for
    /// workers to register).
    fn fail_unservable(&mut self, out: &mut Vec<Action>) {
        if self.warm_until.is_some() {
            return;
        }
        let ended_warmup = std::mem::take(&mut self.warmup_ended);
        let keys: Vec<u64> = self.queue.iter().copied().collect();
        for key in keys {
            let servable = match self.jobs.get(&key) {
                Some(job) if matches!(job.state, State::Queued) => self
                    .workers
                    .values()
                    .any(|w| w.functions.contains_key(&job.call.function)),
                _ => continue,
            };
            if !servable {
                if let Some(job) = self.remove_job(key) {
                    self.queued -= 1;
                    if let Some(rk) = &job.retry_key {
                        self.recent.forget(rk);
                    }
                    let f = protocol::excerpt(&job.call.function);
                    let err = if ended_warmup {
                        Error::Name(format!("no function named '{f}' is registered"))
                    } else {
                        Error::Unavailable(format!("no worker serves '{f}' any more"))
                    };
                    answer(job.waiters, (encode(job.id, Err(err)), None), out);
                }
            }
        }
    }

    /// A send to `worker_id` failed (it is gone). The request `key` it carried was not
    /// delivered, so it goes back to the front of the queue.
    pub(crate) fn undeliverable(
        &mut self,
        worker_id: &WorkerId,
        key: Option<u64>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Some(key) = key {
            if let Some(job) = self.jobs.get_mut(&key) {
                job.state = State::Queued;
                self.queue.push_front(key);
                self.queued += 1;
            }
            if let Some(w) = self.workers.get_mut(worker_id) {
                w.in_flight = w.in_flight.saturating_sub(1);
            }
        }
        if self.workers.contains_key(worker_id) {
            tracing::warn!(worker = %self.worker_name(worker_id), "worker unreachable; removed");
            self.remove_worker(
                worker_id,
                "the worker became unreachable while running the call",
                now,
                out,
            );
        }
    }

    /// Expires deadlines, drops silent workers, sends heartbeats, ends the warm-up.
    pub(crate) fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.warm_until.is_some_and(|t| now >= t) {
            self.warm_until = None;
            self.warmup_ended = true;
            self.fail_unservable(out);
        }
        while let Some(Reverse((deadline, key))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            if job.deadline != deadline {
                continue; // a retry moved it
            }
            match job.state {
                State::Queued => {
                    self.queued -= 1;
                    self.end_unrun(key, "no worker became free before the deadline", out);
                }
                State::Running(_) => {
                    // The worker keeps its slot until it answers; only the caller is
                    // released. The reply, when it comes, is kept for a retry.
                    let err = Error::Timeout(format!(
                        "'{}' did not answer within the deadline",
                        job.call.function
                    ));
                    answer(
                        std::mem::take(&mut job.waiters),
                        (encode(job.id.clone(), Err(err)), None),
                        out,
                    );
                }
            }
        }
        let lost: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, w)| w.expires <= now && !is_in_process(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            tracing::warn!(worker = %self.worker_name(&id), "worker lost: no heartbeat");
            self.remove_worker(
                &id,
                "the worker was lost (no heartbeat) while running the call",
                now,
                out,
            );
        }
        // Each worker is sent heartbeats at the interval it announced, the one both
        // sides judge liveness by.
        for (id, w) in &mut self.workers {
            if w.next_heartbeat <= now && !is_in_process(id) {
                w.next_heartbeat = now + w.interval;
                out.push(Action::ToWorker {
                    worker: id.clone(),
                    key: None,
                    frames: protocol::encode_broker_message(&BrokerMessage::Heartbeat),
                });
            }
        }
        self.recent.evict(now);
        self.compact_deadlines();
    }

    /// Drops the deadlines of jobs that have ended. They are left in the heap when a job
    /// ends (a heap cannot remove from its middle) and would otherwise stay until they
    /// pass: at 29,000 calls/s and a 5 s timeout, 145,000 entries (3.5 MiB) that the
    /// server RSS after W2 showed. Rebuilt once they outnumber the live ones twice over,
    /// so the cost per call stays constant.
    fn compact_deadlines(&mut self) {
        if self.deadlines.len() <= 2 * self.jobs.len() + DEADLINES_SLACK {
            return;
        }
        let jobs = &self.jobs;
        self.deadlines
            .retain(|Reverse((d, k))| jobs.get(k).is_some_and(|j| j.deadline == *d));
        self.deadlines
            .shrink_to(2 * self.deadlines.len() + DEADLINES_SLACK);
    }

    #[cfg(test)]
    pub(crate) fn deadlines_held(&self) -> usize {
        self.deadlines.len()
    }

    /// The next instant at which [`Dispatcher::tick`] has work.
    pub(crate) fn next_tick(&self) -> Option<Instant> {
        let deadline = self.deadlines.peek().map(|Reverse((d, _))| *d);
        let deadline = match (deadline, self.warm_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let workers = self
            .workers
            .iter()
            .filter(|(id, _)| !is_in_process(id))
            .map(|(_, w)| w.expires.min(w.next_heartbeat))
            .min();
        match (deadline, workers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts a graceful shutdown: queued requests are answered with `UnavailableError`,
    /// new ones too; running ones go on ([`Dispatcher::running`] tells how many).
    pub(crate) fn drain(&mut self, out: &mut Vec<Action>) {
        self.draining = true;
        for key in std::mem::take(&mut self.queue) {
            if !matches!(
                self.jobs.get(&key),
                Some(Job {
                    state: State::Queued,
                    ..
                })
            ) {
                continue;
            }
            if let Some(job) = self.remove_job(key) {
                self.queued -= 1;
                if let Some(rk) = &job.retry_key {
                    self.recent.forget(rk);
                }
                let err = Error::Unavailable("the server is shutting down".into());
                answer(job.waiters, (encode(job.id, Err(err)), None), out);
            }
        }
    }

    /// Ends the shutdown: answers what still runs, tells workers to go.
    pub(crate) fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.drain(out);
        let keys: Vec<u64> = self.jobs.keys().copied().collect();
        for key in keys {
            let err = Error::Unavailable("the server shut down before the call finished".into());
            self.end_run_err(key, err, now, out);
        }
        let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
        for id in ids.into_iter().filter(|id| !is_in_process(id)) {
            self.disconnect(id, "the broker is shutting down", out);
        }
        self.workers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dispatcher() -> Dispatcher {
        let mut d = Dispatcher::new(settings(), Instant::now());
        d.next_key = 1;
        d
    }

    fn settings() -> Settings {
        Settings {
            name: "Rechner1".into(),
            password: "geheim".into(),
            worker_secret: "geheim".into(),
            timeout: Duration::from_secs(5),
            queue_limit: 2,
            queue_bytes: 1 << 20,

            heartbeat_liveness: 3,
            retry_window: Duration::from_secs(60),
            retry_entries: 1000,
            retry_bytes: 1 << 20,
            warmup: Duration::ZERO,
        }
    }

    fn ready(functions: &[&str], capacity: u32) -> Vec<Vec<u8>> {
        protocol::encode_worker_message(&WorkerMessage::Ready(Ready {
            password: "geheim".into(),
            name: "w".into(),
            capacity,
            heartbeat_ms: 1000,
            functions: functions
                .iter()
                .map(|n| FunctionInfo {
                    name: (*n).into(),
                    ..Default::default()
                })
                .collect(),
        }))
    }

    fn client(id: u64, function: &str) -> Vec<Vec<u8>> {
        let body = json!({"id": id, "password": "geheim", "function": function, "args": [1, 2]});
        vec![
            b"client".to_vec(),
            Vec::new(),
            body.to_string().into_bytes(),
        ]
    }

    fn replies(out: &[Action]) -> Vec<Reply> {
        out.iter()
            .filter_map(|a| match a {
                Action::ToClient { reply, .. } => Some(protocol::decode_reply(reply).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn sent_to_workers(out: &[Action]) -> Vec<(WorkerId, u64)> {
        out.iter()
            .filter_map(|a| match a {
                Action::ToWorker {
                    worker,
                    key: Some(k),
                    ..
                } => Some((worker.clone(), *k)),
                _ => None,
            })
            .collect()
    }

    fn worker_reply(key: u64, value: Value) -> Vec<Vec<u8>> {
        protocol::encode_worker_message(&WorkerMessage::Reply {
            key,
            outcome: Ok(value),
        })
    }

    #[test]
    fn repeated_wrong_passwords_lock_out_the_address_not_others() {
        use crate::broker::throttle::{FIRST_LOCKOUT, FREE_FAILURES};
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 1), now, &mut out);
        let guess = |id: u64, password: &str| {
            let body = json!({"id": id, "password": password, "function": "add"});
            vec![b"c".to_vec(), Vec::new(), body.to_string().into_bytes()]
        };
        for id in 0..=u64::from(FREE_FAILURES) {
            out.clear();
            d.client_message_from(guess(id, "nope"), Some("10.0.0.9"), now, &mut out);
            assert_eq!(
                replies(&out)[0].outcome,
                Err(Error::Permission("wrong password".into()))
            );
        }
        // Locked: even the right password is refused without being checked.
        out.clear();
        d.client_message_from(guess(7, "geheim"), Some("10.0.0.9"), now, &mut out);
        let locked = format!(
            "too many wrong passwords from this address; try again in {} ms",
            FIRST_LOCKOUT.as_millis()
        );
        assert_eq!(replies(&out)[0].outcome, Err(Error::Permission(locked)));
        assert!(sent_to_workers(&out).is_empty());
        // Another address is served meanwhile; the locked one after the lockout.
        out.clear();
        d.client_message_from(guess(8, "geheim"), Some("10.0.0.10"), now, &mut out);
        assert_eq!(sent_to_workers(&out).len(), 1);
        out.clear();
        let later = now + FIRST_LOCKOUT;
        d.client_message_from(guess(9, "geheim"), Some("10.0.0.9"), later, &mut out);
        assert!(
            replies(&out).is_empty(),
            "accepted (queued behind the busy worker): {out:?}"
        );
    }

    #[test]
    fn fast_call_goes_to_the_idle_worker_not_behind_the_slow_one() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["mul", "add"], 1), now, &mut out);
        d.worker_message(b"B".to_vec(), &ready(&["mul", "add"], 1), now, &mut out);
        out.clear();
        d.client_message(client(1, "mul"), now, &mut out);
        d.client_message(client(2, "add"), now, &mut out);
        let sent = sent_to_workers(&out);
        assert_eq!(sent.len(), 2, "both calls dispatched at once");
        assert_ne!(sent[0].0, sent[1].0, "to different workers");
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn busy_workers_queue_then_feed_in_order() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 1), now, &mut out);
        d.client_message(client(1, "add"), now, &mut out);
        d.client_message(client(2, "add"), now, &mut out);
        d.client_message(client(3, "add"), now, &mut out);
        assert_eq!(d.queued(), 2);
        // The queue limit (2) is reached: the next request is refused at once.
        out.clear();
        d.client_message(client(4, "add"), now, &mut out);
        let r = replies(&out);
        assert!(
            matches!(r[0].outcome, Err(Error::Overloaded { .. })),
            "{r:?}"
        );
        out.clear();
        let first = sent_to_workers(&{
            let mut o = Vec::new();
            d.client_message(client(9, "nope"), now, &mut o);
            o
        });
        assert!(first.is_empty());
        d.worker_message(b"A".to_vec(), &worker_reply(1, json!(3)), now, &mut out);
        assert_eq!(replies(&out)[0].id, json!(1));
        assert_eq!(
            sent_to_workers(&out),
            vec![(b"A".to_vec(), 2)],
            "next in FIFO order"
        );
    }

    #[test]
    fn seed_errors_are_answered_at_once() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 1), now, &mut out);
        out.clear();
        d.client_message(client(1, "missing"), now, &mut out);
        let body = json!({"id": 2, "password": "wrong", "function": "add"}).to_string();
        d.client_message(
            vec![b"c".to_vec(), vec![], body.into_bytes()],
            now,
            &mut out,
        );
        d.client_message(vec![b"c".to_vec(), vec![], b"{".to_vec()], now, &mut out);
        d.client_message(
            vec![b"c".to_vec(), vec![], b"{}".to_vec(), b"x".to_vec()],
            now,
            &mut out,
        );
        d.client_message(client(5, "ping"), now, &mut out);
        let r = replies(&out);
        assert!(matches!(r[0].outcome, Err(Error::Name(_))));
        assert!(matches!(r[1].outcome, Err(Error::Permission(_))));
        assert!(matches!(r[2].outcome, Err(Error::Protocol(_))));
        assert!(matches!(r[3].outcome, Err(Error::Protocol(_))));
        assert_eq!(r[4].outcome, Ok(json!("Rechner1")));
    }

    #[test]
    fn deadline_answers_caller_and_drops_the_late_reply() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 1), now, &mut out);
        d.client_message(client(1, "add"), now, &mut out);
        d.client_message(client(2, "add"), now, &mut out);
        out.clear();
        assert!(d.next_tick().unwrap() <= now + Duration::from_secs(5));
        let later = now + Duration::from_millis(5001);
        // Keep the worker alive meanwhile.
        d.worker_message(
            b"A".to_vec(),
            &protocol::encode_worker_message(&WorkerMessage::Heartbeat),
            later,
            &mut out,
        );
        d.tick(later, &mut out);
        let r = replies(&out);
        assert_eq!(r.len(), 2, "the running and the queued call both time out");
        assert!(r
            .iter()
            .all(|r| matches!(r.outcome, Err(Error::Timeout(_)))));
        out.clear();
        d.worker_message(b"A".to_vec(), &worker_reply(1, json!(3)), later, &mut out);
        assert!(replies(&out).is_empty(), "late reply dropped");
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn silent_worker_is_removed_and_its_caller_answered() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 1), now, &mut out);
        d.client_message(client(1, "add"), now, &mut out);
        out.clear();
        d.tick(now + Duration::from_millis(2999), &mut out);
        assert_eq!(d.worker_count(), 1, "still within liveness x interval");
        d.tick(now + Duration::from_millis(3000), &mut out);
        assert_eq!(d.worker_count(), 0);
        assert!(matches!(
            replies(&out)[0].outcome,
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn workers_with_the_wrong_password_or_reserved_names_are_refused() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["ping"], 1), now, &mut out);
        let mut bad = ready(&["add"], 1);
        bad[2] = String::from_utf8(bad[2].clone())
            .unwrap()
            .replace("geheim", "x")
            .into_bytes();
        d.worker_message(b"B".to_vec(), &bad, now, &mut out);
        assert_eq!(d.worker_count(), 0);
        assert_eq!(out.len(), 2, "each got a DISCONNECT");
    }

    #[test]
    fn undeliverable_request_goes_to_another_worker() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 1), now, &mut out);
        d.client_message(client(1, "add"), now, &mut out);
        let (to, key) = sent_to_workers(&out)[0].clone();
        d.worker_message(b"B".to_vec(), &ready(&["add"], 1), now, &mut out);
        out.clear();
        d.undeliverable(&to, Some(key), now, &mut out);
        assert_eq!(sent_to_workers(&out), vec![(b"B".to_vec(), key)]);
        assert!(replies(&out).is_empty());
    }

    fn client_from(who: &[u8], id: u64, function: &str) -> Vec<Vec<u8>> {
        let mut frames = client(id, function);
        frames[0] = who.to_vec();
        frames
    }

    fn ready_idempotent(function: &str) -> Vec<Vec<u8>> {
        protocol::encode_worker_message(&WorkerMessage::Ready(Ready {
            password: "geheim".into(),
            name: "w".into(),
            capacity: 1,
            heartbeat_ms: 1000,
            functions: vec![FunctionInfo {
                name: function.into(),
                idempotent: true,
                ..Default::default()
            }],
        }))
    }

    #[test]
    fn a_retry_waits_for_the_running_call_and_then_gets_the_stored_reply() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["mul"], 2), now, &mut out);
        d.client_message(client_from(b"first", 7, "mul"), now, &mut out);
        assert_eq!(sent_to_workers(&out).len(), 1);
        out.clear();
        // A retry from a new socket (the first attempt's may be gone).
        d.client_message(client_from(b"second", 7, "mul"), now, &mut out);
        assert!(out.is_empty(), "not run again, not answered yet: {out:?}");
        d.worker_message(b"A".to_vec(), &worker_reply(1, json!(12)), now, &mut out);
        // Both sockets get the one result (the first may be gone; then libzmq drops it).
        let to: Vec<&[u8]> = out
            .iter()
            .filter_map(|a| match a {
                Action::ToClient { envelope, .. } => Some(envelope[0].as_slice()),
                _ => None,
            })
            .collect();
        assert_eq!(to, vec![&b"first"[..], &b"second"[..]]);
        assert!(replies(&out).iter().all(|r| r.outcome == Ok(json!(12))));
        out.clear();
        d.client_message(client_from(b"third", 7, "mul"), now, &mut out);
        assert!(
            sent_to_workers(&out).is_empty(),
            "a finished call is not run again"
        );
        assert_eq!(replies(&out)[0].outcome, Ok(json!(12)));
        // The same id with other arguments is a new call.
        out.clear();
        let body = json!({"id": 7, "password": "geheim", "function": "mul", "args": [9, 9]});
        d.client_message(
            vec![b"c".to_vec(), vec![], body.to_string().into_bytes()],
            now,
            &mut out,
        );
        assert_eq!(sent_to_workers(&out).len(), 1);
    }

    #[test]
    fn a_call_is_remembered_until_its_announced_deadline_plus_the_slack() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["mul"], 1), now, &mut out);
        // Written with spaces and an escape: the reply and the call keep the bytes.
        let request = |timeout: &str| {
            let body = format!(
                r#"{{"id": "r\u0031", "password": "geheim", "function": "mul", "args": [ 3, "\u00e9" ]{timeout}}}"#
            );
            vec![b"c".to_vec(), vec![], body.into_bytes()]
        };
        d.client_message(request(r#", "timeout_ms": 2000"#), now, &mut out);
        let frames = out
            .iter()
            .find_map(|a| match a {
                Action::ToWorker { frames, .. } => Some(frames.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            frames[3],
            br#"{"args":[ 3, "\u00e9" ],"function":"mul","timeout_ms":2000}"#.to_vec(),
            "arguments forwarded as sent"
        );
        out.clear();
        let body = br#"{ "result" : [1, 2] }"#.to_vec();
        let reply = vec![b"ZRPC-W1".to_vec(), b"REPLY".to_vec(), b"1".to_vec(), body];
        d.worker_message(b"A".to_vec(), &reply, now, &mut out);
        let first = match &out[0] {
            Action::ToClient { reply, .. } => reply.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(first, br#"{"id":"r1","result":[1, 2]}"#.to_vec());
        // A retry within deadline + slack gets the same bytes without a run.
        let at = now + Duration::from_millis(2000) + RETRY_SLACK - Duration::from_millis(1);
        out.clear();
        d.client_message(request(r#", "timeout_ms": 1"#), at, &mut out);
        assert!(sent_to_workers(&out).is_empty());
        assert!(matches!(&out[0], Action::ToClient { reply, .. } if *reply == first));
        // That retry extended the memory to its own deadline + slack.
        let later = at + RETRY_SLACK;
        out.clear();
        d.client_message(request(r#", "timeout_ms": 1"#), later, &mut out);
        assert!(sent_to_workers(&out).is_empty(), "still remembered");
        // After its deadline + slack, the same request is a new call.
        let after = later + Duration::from_millis(1) + RETRY_SLACK;
        d.tick(after, &mut out);
        // (The worker, silent all that time, was dropped meanwhile: it registers again.)
        d.worker_message(b"A".to_vec(), &ready(&["mul"], 1), after, &mut out);
        out.clear();
        d.client_message(request(r#", "timeout_ms": 1"#), after, &mut out);
        assert_eq!(sent_to_workers(&out).len(), 1, "forgotten: runs again");
    }

    #[test]
    fn an_idempotent_call_of_a_lost_worker_runs_once_more_elsewhere() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready_idempotent("get"), now, &mut out);
        d.client_message(client(1, "get"), now, &mut out);
        d.worker_message(b"B".to_vec(), &ready_idempotent("get"), now, &mut out);
        out.clear();
        let bye =
            protocol::encode_worker_message(&WorkerMessage::Disconnect { reason: "x".into() });
        d.worker_message(b"A".to_vec(), &bye, now, &mut out);
        assert_eq!(sent_to_workers(&out), vec![(b"B".to_vec(), 1)]);
        assert!(replies(&out).is_empty());
        out.clear();
        d.worker_message(b"B".to_vec(), &bye, now, &mut out);
        assert!(
            matches!(replies(&out)[0].outcome, Err(Error::Unavailable(_))),
            "only once"
        );
    }

    #[test]
    fn draining_refuses_new_work_and_answers_the_queue() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 1), now, &mut out);
        d.client_message(client(1, "add"), now, &mut out);
        d.client_message(client(2, "add"), now, &mut out);
        out.clear();
        d.drain(&mut out);
        assert_eq!(replies(&out).len(), 1, "the queued one");
        assert_eq!(d.running(), 1);
        out.clear();
        d.client_message(client(3, "add"), now, &mut out);
        assert!(matches!(
            replies(&out)[0].outcome,
            Err(Error::Unavailable(_))
        ));
        out.clear();
        d.worker_message(b"A".to_vec(), &worker_reply(1, json!(3)), now, &mut out);
        assert_eq!(
            replies(&out)[0].outcome,
            Ok(json!(3)),
            "the running call finishes"
        );
        assert_eq!(d.running(), 0);
    }

    #[test]
    fn a_draining_worker_gets_no_new_requests() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 2), now, &mut out);
        let drain = protocol::encode_worker_message(&WorkerMessage::Drain);
        d.worker_message(b"A".to_vec(), &drain, now, &mut out);
        out.clear();
        d.client_message(client(1, "add"), now, &mut out);
        assert!(out.is_empty(), "queued for a worker that may still come");
        d.worker_message(b"B".to_vec(), &ready(&["add"], 1), now, &mut out);
        assert_eq!(sent_to_workers(&out), vec![(b"B".to_vec(), 1)]);
    }

    #[test]
    fn an_expired_queued_request_is_never_dispatched() {
        let now = Instant::now();
        let mut d = dispatcher();
        let mut out = Vec::new();
        d.worker_message(b"A".to_vec(), &ready(&["add"], 1), now, &mut out);
        d.client_message(client(1, "add"), now, &mut out);
        let body = json!({"id": 2, "password": "geheim", "function": "add", "timeout_ms": 100});
        d.client_message(
            vec![b"c".to_vec(), vec![], body.to_string().into_bytes()],
            now,
            &mut out,
        );
        out.clear();
        // The worker frees up after the second request's deadline, before any tick.
        let later = now + Duration::from_millis(150);
        d.worker_message(b"A".to_vec(), &worker_reply(1, json!(3)), later, &mut out);
        assert!(sent_to_workers(&out).is_empty());
        let r = replies(&out);
        assert_eq!(r.len(), 2);
        assert!(matches!(r[1].outcome, Err(Error::Timeout(_))));
    }

    #[test]
    fn a_restarted_broker_lets_unknown_functions_wait_for_workers_during_warmup() {
        let now = Instant::now();
        let mut d = Dispatcher::new(
            Settings {
                warmup: Duration::from_secs(3),
                ..settings()
            },
            now,
        );
        let mut out = Vec::new();
        d.client_message(client(1, "add"), now, &mut out);
        d.client_message(client(2, "nope"), now, &mut out);
        assert!(out.is_empty(), "both wait for workers: {out:?}");
        d.worker_message(
            b"A".to_vec(),
            &ready(&["add"], 1),
            now + Duration::from_millis(500),
            &mut out,
        );
        assert_eq!(
            sent_to_workers(&out).len(),
            1,
            "add runs once its worker is back"
        );
        out.clear();
        assert!(d.next_tick().unwrap() <= now + Duration::from_secs(3));
        d.tick(now + Duration::from_secs(3), &mut out);
        let r = replies(&out);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, json!(2));
        assert!(matches!(r[0].outcome, Err(Error::Name(_))), "{r:?}");
        out.clear();
        d.client_message(client(3, "nope"), now + Duration::from_secs(3), &mut out);
        assert!(
            matches!(replies(&out)[0].outcome, Err(Error::Name(_))),
            "at once after warm-up"
        );
    }

    /// A dispatcher whose only worker is a local pool of `threads` serving `add`.
    fn with_local_add(threads: u32, queue_limit: usize, now: Instant) -> Dispatcher {
        let mut d = dispatcher();
        d.settings.queue_limit = queue_limit;
        let info = FunctionInfo {
            name: "add".into(),
            ..Default::default()
        };
        d.add_local("local".into(), vec![info], threads, now);
        d
    }

    fn local_calls(out: &[Action]) -> Vec<u64> {
        out.iter()
            .filter_map(|a| match a {
                Action::ToLocal(call) => Some(call.key),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_local_pool_holds_more_calls_than_threads_only_while_it_is_alone() {
        let now = Instant::now();
        let mut d = with_local_add(2, 100, now);
        let mut out = Vec::new();
        for i in 0..9 {
            d.client_message(client(i, "add"), now, &mut out);
        }
        // Two threads, four calls each; the ninth waits in the broker.
        let sent = local_calls(&out);
        assert_eq!(sent.len(), 8, "{out:?}");
        let call = match &out[0] {
            Action::ToLocal(call) => call,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (call.function.as_str(), call.args.as_slice()),
            ("add", &b"[1,2]"[..])
        );
        assert_eq!(d.queued(), 1);
        // A finished call frees a slot: the queued one goes to the pool, and the
        // result text reaches the caller as it is.
        out.clear();
        d.local_reply(sent[0], Ok(Output::Json(b"3".to_vec())), now, &mut out);
        assert_eq!(
            replies(&out),
            vec![Reply {
                id: json!(0),
                outcome: Ok(json!(3))
            }]
        );
        assert_eq!(local_calls(&out).len(), 1);
        // With a worker process beside it, the pool holds one call per thread, so
        // that a call never waits in the pool while another worker is free.
        out.clear();
        d.worker_message(b"w1".to_vec(), &ready(&["add"], 1), now, &mut out);
        for key in &sent[1..] {
            d.local_reply(*key, Err(Error::Runtime("boom".into())), now, &mut out);
        }
        out.clear();
        for i in 10..14 {
            d.client_message(client(i, "add"), now, &mut out);
        }
        // In flight on the pool now: the one fed above; room for one more, one on
        // w1, the other two queue.
        assert_eq!(local_calls(&out).len(), 1, "{out:?}");
        assert_eq!(sent_to_workers(&out).len(), 1, "{out:?}");
        assert_eq!(d.queued(), 2);
        // The pool is never a ROUTER peer: a message from an empty identity is dropped.
        d.worker_message(Vec::new(), &ready(&["add"], 1), now, &mut out);
        assert_eq!(d.dropped(), 1);
        // ... and it is listed with one worker per thread.
        out.clear();
        d.client_message(client(99, protocol::BUILTIN_LIST), now, &mut out);
        let listed = replies(&out).remove(0).outcome.unwrap();
        assert_eq!(listed[0]["workers"], json!(3), "{listed}");
    }

    #[test]
    fn calls_waiting_in_the_local_pool_count_against_the_queue_limit_and_a_drain_refuses_them() {
        let now = Instant::now();
        let mut d = with_local_add(1, 1, now);
        let mut out = Vec::new();
        for i in 0..3 {
            d.client_message(client(i, "add"), now, &mut out);
        }
        // One runs, one waits in the pool (the queue's one place), the third is refused.
        let sent = local_calls(&out);
        assert_eq!(sent.len(), 2, "{out:?}");
        let refused = replies(&out);
        assert_eq!(refused.len(), 1, "{out:?}");
        assert!(
            matches!(refused[0].outcome, Err(Error::Overloaded { .. })),
            "{refused:?}"
        );
        // Shutting down, the pool gives the waiting call back unstarted: it is refused
        // like a queued one, and the running one goes on.
        out.clear();
        d.drain(&mut out);
        d.local_unstarted(sent[1], &mut out);
        let answered = replies(&out);
        assert_eq!(answered.len(), 1, "{out:?}");
        assert_eq!(answered[0].id, json!(1));
        assert!(matches!(answered[0].outcome, Err(Error::Unavailable(_))));
        assert_eq!(d.running(), 1);
    }

    #[test]
    fn requests_that_would_wait_are_refused_beyond_the_byte_bound_and_answered_ones_free_it() {
        let now = Instant::now();
        let mut d = with_local_add(1, 100, now);
        let size = client(0, "add")[2].len();
        // Room for three requests' bytes: one runs, one waits in the pool, a third
        // would wait too and still fits, a fourth does not.
        d.settings.queue_bytes = 3 * size;
        let mut out = Vec::new();
        for i in 0..4 {
            d.client_message(client(i, "add"), now, &mut out);
        }
        let sent = local_calls(&out);
        assert_eq!(sent.len(), 3, "{out:?}");
        let refused = replies(&out);
        assert_eq!(refused.len(), 1, "{out:?}");
        assert_eq!(refused[0].id, json!(3));
        match &refused[0].outcome {
            Err(Error::Overloaded { message, .. }) => {
                let held = format!("{} bytes of requests held, at most {}", 3 * size, 3 * size);
                assert!(message.contains(&held), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.held_bytes, 3 * size);
        // An answered call gives its bytes back: the next request fits again.
        out.clear();
        d.local_reply(sent[0], Ok(Output::Json(b"3".to_vec())), now, &mut out);
        assert_eq!(d.held_bytes, 2 * size);
        d.client_message(client(4, "add"), now, &mut out);
        let fifth = local_calls(&out);
        assert_eq!(fifth.len(), 1, "{out:?}");
        // Past their deadline the callers are answered, but the pool still holds the
        // calls (and their bytes) until it gives them back.
        out.clear();
        d.tick(now + Duration::from_secs(3600), &mut out);
        assert_eq!(replies(&out).len(), 3, "{out:?}");
        assert_eq!(d.held_bytes, 3 * size);
        for key in [sent[1], sent[2], fifth[0]] {
            let late = Err(Error::Timeout("not started".into()));
            d.local_reply(key, late, now + Duration::from_secs(3600), &mut out);
        }
        assert_eq!(d.held_bytes, 0);
    }

    #[test]
    fn direct_functions_run_here_never_queue_and_can_be_demoted_to_the_pool() {
        let now = Instant::now();
        let mut d = dispatcher();
        d.settings.queue_limit = 100;
        let info = |name: &str| FunctionInfo {
            name: name.into(),
            ..Default::default()
        };
        d.add_local("local".into(), vec![info("slow")], 1, now);
        d.add_direct("direct".into(), vec![info("add")], now);
        let mut out = Vec::new();
        // The pool's four slots fill up with slow calls and a fifth queues...
        for i in 0..5 {
            d.client_message(client(i, "slow"), now, &mut out);
        }
        assert_eq!(local_calls(&out).len(), 4, "{out:?}");
        assert_eq!(d.queued(), 1);
        // ... while a direct call is handed to the broker thread at once.
        out.clear();
        d.client_message(client(10, "add"), now, &mut out);
        let key = match out.as_slice() {
            [Action::RunHere(call)] if call.function == "add" => call.key,
            other => panic!("{other:?}"),
        };
        out.clear();
        d.direct_reply(key, Ok(Output::Json(b"3".to_vec())), now, &mut out);
        assert_eq!(
            replies(&out),
            vec![Reply {
                id: json!(10),
                outcome: Ok(json!(3))
            }]
        );
        // Demoted (a call took too long), it goes to the pool like any other.
        assert!(d.demote_direct("add"));
        assert!(!d.demote_direct("add"));
        out.clear();
        d.client_message(client(11, "add"), now, &mut out);
        assert!(out.is_empty(), "the pool is full, so it waits: {out:?}");
        assert_eq!(d.queued(), 2);
    }

    #[test]
    fn deadlines_of_ended_jobs_do_not_pile_up() {
        let now = Instant::now();
        let mut d = dispatcher();
        d.add_local(
            "local".into(),
            vec![FunctionInfo {
                name: "add".into(),
                ..Default::default()
            }],
            4,
            now,
        );
        let mut out = Vec::new();
        for i in 0..20_000 {
            d.client_message(client(i, "add"), now, &mut out);
            let key = local_calls(&out)[0];
            out.clear();
            d.local_reply(key, Ok(Output::Json(b"3".to_vec())), now, &mut out);
            out.clear();
            d.tick(now, &mut out);
        }
        // Every call has ended; none of their 5 s deadlines has passed.
        assert!(
            d.deadlines_held() <= DEADLINES_SLACK + 1,
            "{}",
            d.deadlines_held()
        );
    }

    #[test]
    fn passwords_compare_exactly() {
        assert!(passwords_match("geheim", "geheim"));
        assert!(!passwords_match("geheim", "geheim2"));
        assert!(!passwords_match("", "x"));
        assert!(passwords_match("", ""));
    }
}
