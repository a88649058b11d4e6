//! The broker's frame handling: arbitrary sequences of client messages, worker messages,
//! clock steps, failed deliveries and a drain, fed to the pure dispatch state machine
//! (no sockets). It must never panic, and everything it would send must be a valid
//! message (checked by the harness after every step).
//!
//! Input format, read until exhausted: one op byte, then op-specific data. Frames are a
//! count byte (0-7) and, per frame, a length byte and that many bytes; a length of 255
//! means "a valid request or READY built from the next byte" so the fuzzer reaches deep
//! states (registered workers, running calls) without having to invent JSON.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use zmq_rpc::fuzzing::{BrokerHarness, PASSWORD};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }

    fn frame(&mut self, worker: bool) -> Vec<u8> {
        match self.byte().unwrap_or(0) {
            255 => {
                let seed = self.byte().unwrap_or(0);
                let function =
                    ["add", "slow", "ping", "list_functions", "nope"][usize::from(seed % 5)];
                if worker {
                    serde_json::json!({
                        "password": if seed & 0x80 == 0 { PASSWORD } else { "wrong" },
                        "name": format!("w{seed}"),
                        "capacity": seed % 4,
                        "heartbeat_ms": 10 + u64::from(seed),
                        "functions": [{"name": function, "idempotent": seed & 1 == 1}],
                    })
                } else {
                    serde_json::json!({
                        "id": seed % 8,
                        "password": if seed & 0x80 == 0 { PASSWORD } else { "wrong" },
                        "function": function,
                        "args": [if seed & 0x40 == 0 { serde_json::json!(seed) } else { serde_json::Value::Null }, 2],
                        // With bit 6: the first argument is the next frame (a data
                        // frame, docs/protocol.md 4.10), if the input sends one.
                        "frames": if seed & 0x40 == 0 { serde_json::json!(null) } else { serde_json::json!([0]) },
                        "accept_frames": seed & 0x20 != 0,
                        // Acknowledge an earlier id (docs/protocol.md 4.11) now and then.
                        "ack": if seed & 0x10 == 0 { serde_json::json!([]) } else { serde_json::json!([(seed >> 1) % 8]) },
                        "timeout_ms": u64::from(seed) * 4,
                    })
                }
                .to_string()
                .into_bytes()
            }
            n => self.bytes(usize::from(n)),
        }
    }

    fn frames(&mut self, worker: bool) -> Vec<Vec<u8>> {
        let count = self.byte().unwrap_or(0) % 8;
        (0..count).map(|_| self.frame(worker)).collect()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut broker = BrokerHarness::new();
    while let Some(op) = input.byte() {
        match op % 10 {
            0 | 1 => {
                // A client: identity (one of a few), then its frames.
                let client = vec![b'c', input.byte().unwrap_or(0) % 4];
                let mut frames = vec![client];
                frames.extend(input.frames(false));
                let peer = ["10.0.0.1", "10.0.0.2"][usize::from(op & 1)];
                broker.client_message(frames, Some(peer));
            }
            2 | 3 => {
                let worker = vec![b'w', input.byte().unwrap_or(0) % 4];
                let mut frames = vec![b"ZRPC-W1".to_vec()];
                let command: &[u8] = match input.byte().unwrap_or(0) % 7 {
                    0 => b"READY",
                    1 => b"REPLY",
                    2 => b"HEARTBEAT",
                    3 => b"DRAIN",
                    4 => b"DISCONNECT",
                    5 => b"REQUEST",
                    _ => b"",
                };
                frames.push(command.to_vec());
                if command == b"REPLY" {
                    // A key near the ones the broker hands out is unlikely; small ones
                    // and garbage exercise the unknown-request path.
                    frames.push(input.frame(false));
                }
                frames.extend(input.frames(true));
                broker.worker_message(worker, &frames);
            }
            4 => {
                // Raw frames from a worker, no protocol header forced.
                let worker = vec![b'w', input.byte().unwrap_or(0) % 4];
                broker.worker_message(worker, &input.frames(true));
            }
            5 => broker.advance(Duration::from_millis(
                u64::from(input.byte().unwrap_or(0)) * 8,
            )),
            6 => broker.fail_last_delivery(),
            7 | 8 => broker.reply_to_last_delivery(op % 10 == 7),
            _ => broker.drain(),
        }
    }
});
