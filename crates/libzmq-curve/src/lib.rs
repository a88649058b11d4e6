//! Build support for zmq-rpc: links a libzmq 4.3.5 that has CURVE (through libsodium).
//!
//! The `zmq` crate's `zmq-sys` always compiles libzmq without libsodium. The
//! workspace's `.cargo/config.toml` overrides that build script; this crate's build
//! script then compiles libzmq with libsodium and links it in its place. Depend on
//! this crate and reference [`BUILT_WITH_CURVE`] so the linker keeps it.
//!
//! Without the override (a downstream workspace that lacks it) this crate builds
//! nothing, zmq-sys's own libzmq is used, and [`BUILT_WITH_CURVE`] is `false`.

#![no_std]

// Keep libsodium's static library on the link line: libzmq's CURVE code calls it.
extern crate libsodium_sys;
// zmq-sys declares the libzmq symbols; our build script provides them.
extern crate zmq_sys;

/// Whether this crate compiled and linked libzmq with libsodium.
pub const BUILT_WITH_CURVE: bool = cfg!(libzmq_curve_built);
