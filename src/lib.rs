//! zmq-rpc: remote procedure calls over ZeroMQ, with a load-balancing broker in front of
//! a pool of worker threads, synchronous clients and JSON on the wire.
//!
//! It builds the system of the seed design (Python/pyzmq) in Rust, keeping its API:
//! `RpcServer(password, server_name, host, port, timeout, workers)` with
//! `add_external_function(func, alias)` and `serve_forever()`, and an `RpcClient`
//! calling functions by name.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use zmq_rpc::{RpcClient, RpcServer};
//!
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! let mut server = RpcServer::new("geheim", "Rechner1").host("127.0.0.1").port(0);
//! server.add_external_function(add, "add").description("Adds two numbers.");
//! let running = server.start()?; // returns once bound and serving
//!
//! let client = RpcClient::new("geheim", "127.0.0.1", running.port());
//! let sum: i64 = client.call("add", (5, 7))?;
//! assert_eq!(sum, 12);
//! assert_eq!(client.ping()?, "Rechner1");
//!
//! let wrong = RpcClient::new("falsch", "127.0.0.1", running.port());
//! assert!(matches!(wrong.call::<i64>("add", (1, 2)), Err(zmq_rpc::Error::Permission(_))));
//! # Ok::<(), zmq_rpc::Error>(())
//! ```
//!
//! For a typed interface, declare it with [`remote_interface!`] and write
//! `calc.add(5, 7)?`, as the seed's dynamic client did.
//!
//! # Layout
//!
//! - `protocol`: the wire protocol, bytes to messages and back; no I/O
//!   (spec: `docs/protocol.md`).
//! - `transport`: the one place that creates and configures sockets.
//! - `broker`: the load-balancing broker; `broker::dispatch` is its pure state machine
//!   (registry, queue, deadlines, heartbeats) with time as a parameter.
//! - `worker`: the worker socket thread, executor threads and typed function adapters;
//!   `worker::local`, an `RpcServer`'s own worker threads, which take calls from the
//!   broker through memory.
//! - `client`: [`RpcClient`] and [`remote_interface!`].
//! - `server`: [`RpcServer`] = broker + local workers in one process.
//! - `auth`: CURVE allow-lists and the ZAP handler that enforces them
//!   (`docs/security.md`).
//! - `config`: defaults, environment variables and `.env`.
//! - `error`: [`Error`], whose kinds map 1:1 to the error types on the wire.
//!
//! Every socket has one owning thread; threads talk through `inproc://` sockets or
//! channels. The CLI (`zmq-rpc`) is a thin layer over this crate.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

// Links libzmq with CURVE (see crates/libzmq-curve); nothing else is used from it.
extern crate libzmq_curve;

mod actor;
mod auth;
mod broker;
mod client;
pub mod config;
mod error;
mod json;
pub mod protocol;
mod server;
mod signals;
mod transport;
mod worker;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use broker::{Broker, BrokerHandle};
pub use client::{Pending, RemoteFunction, RpcClient};
pub use error::{Error, Result};
pub use server::{RpcServer, ServerHandle};
pub use signals::wait_for_shutdown_signal;
pub use transport::{curve_available, generate_curve_keypair};
pub use worker::{IntoFunction, IntoOutcome, Json, Registration, Worker, WorkerHandle};

/// Whether libzmq was built here with libsodium by `crates/libzmq-curve` (as opposed to
/// zmq-sys's bundled copy, which lacks CURVE). See [`curve_available`] for what counts.
pub const LIBZMQ_BUILT_WITH_CURVE: bool = libzmq_curve::BUILT_WITH_CURVE;
