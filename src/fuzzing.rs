//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a stable API).
//!
//! [`BrokerHarness`] drives the broker's pure state machine with arbitrary frames from
//! clients and workers, with time as a parameter and no sockets, and checks after every
//! step that whatever the broker would send is itself a valid message.

use std::time::{Duration, Instant};

use crate::broker::dispatch::{Action, Dispatcher, Settings};
use crate::protocol;

/// The password the harness's broker expects (and its workers' secret).
pub const PASSWORD: &str = "fuzz";

/// A broker state machine fed by a fuzzer.
pub struct BrokerHarness {
    dispatcher: Dispatcher,
    now: Instant,
    out: Vec<Action>,
    /// The last request sent to a worker: (worker, key).
    last_delivery: Option<(Vec<u8>, Option<u64>)>,
}

impl Default for BrokerHarness {
    fn default() -> Self {
        BrokerHarness::new()
    }
}

impl BrokerHarness {
    /// A broker with small limits, so queues and retry memory fill up quickly.
    pub fn new() -> BrokerHarness {
        let now = Instant::now();
        let settings = Settings {
            name: "fuzz".into(),
            password: PASSWORD.into(),
            worker_secret: PASSWORD.into(),
            timeout: Duration::from_millis(500),
            queue_limit: 8,
            queue_bytes: 1 << 16,
            heartbeat_liveness: 3,
            retry_window: Duration::from_secs(1),
            retry_entries: 16,
            retry_bytes: 4096,
            warmup: Duration::from_millis(50),
        };
        BrokerHarness {
            dispatcher: Dispatcher::new(settings, now),
            now,
            out: Vec::new(),
            last_delivery: None,
        }
    }

    /// A message from a client, as the frontend ROUTER delivers it (identity first),
    /// from `peer` when given.
    pub fn client_message(&mut self, frames: Vec<Vec<u8>>, peer: Option<&str>) {
        self.dispatcher
            .client_message_from(frames, peer, self.now, &mut self.out);
        self.check();
    }

    /// A message from worker `id` (the frames after the ROUTER's identity frame).
    pub fn worker_message(&mut self, id: Vec<u8>, frames: &[Vec<u8>]) {
        self.dispatcher
            .worker_message(id, frames, self.now, &mut self.out);
        self.check();
    }

    /// Moves the clock on and runs the timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.dispatcher.tick(self.now, &mut self.out);
        self.check();
    }

    /// Reports the last message sent to a worker, if any, as undeliverable (the worker
    /// vanished), as the socket loop does when a send fails.
    pub fn fail_last_delivery(&mut self) {
        if let Some((worker, key)) = self.last_delivery.take() {
            self.dispatcher
                .undeliverable(&worker, key, self.now, &mut self.out);
            self.check();
        }
    }

    /// The worker of the last request sent answers it (with `result` or an error), as a
    /// well-behaved worker would: the fuzzer cannot guess the broker's request keys.
    pub fn reply_to_last_delivery(&mut self, ok: bool) {
        let Some((worker, Some(key))) = self.last_delivery.clone() else {
            return;
        };
        let outcome = if ok {
            // Every third result long enough to be acknowledged (`ack`).
            match key % 3 {
                0 => Ok(serde_json::json!("r".repeat(protocol::ACK_MIN_BYTES))),
                _ => Ok(serde_json::json!(key % 7)),
            }
        } else {
            Err(crate::Error::Runtime("fuzz".into()))
        };
        let frames =
            protocol::encode_worker_message(&protocol::WorkerMessage::Reply { key, outcome });
        self.worker_message(worker, &frames);
    }

    /// Starts the shutdown: new requests are refused, running ones drain.
    pub fn drain(&mut self) {
        self.dispatcher.drain(&mut self.out);
        self.check();
    }

    /// Every action so far must be a valid message; panics otherwise (a fuzzer finding).
    fn check(&mut self) {
        for action in self.out.drain(..) {
            match action {
                Action::ToClient {
                    envelope,
                    reply,
                    data,
                } => {
                    assert!(!envelope.is_empty(), "a reply without an envelope");
                    if let Err(e) =
                        protocol::decode_reply_frames(&reply, data.into_iter().collect())
                    {
                        panic!("the broker sent an invalid reply ({e}): {reply:?}");
                    }
                }
                Action::ToLocal(call) | Action::RunHere(call) => {
                    panic!("the fuzzed broker has no local pool, yet got {call:?}");
                }
                Action::ToWorker {
                    worker,
                    key,
                    frames,
                } => {
                    self.last_delivery = Some((worker, key));
                    if let Err(e) = protocol::decode_broker_message(&frames) {
                        panic!("the broker sent an invalid worker message ({e}): {frames:?}");
                    }
                }
            }
        }
    }
}
