//! Shared by the benchmark examples: run the real `zmq-rpc broker` binary and read a
//! process's memory.

#![allow(dead_code)] // each example uses part of this module

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `zmq-rpc broker` child process; killed on drop.
pub struct BrokerProcess {
    pub child: Child,
    pub client_port: u16,
    pub worker_port: u16,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `zmq-rpc` binary beside `target/<profile>/examples/`.
pub fn zmq_rpc_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("zmq-rpc"))
        .expect("target directory")
}

/// Starts `zmq-rpc broker` on free ports of 127.0.0.1 with password `pw`, plus `extra`
/// arguments, and reads the bound ports from its first line.
pub fn start_broker(extra: &[&str]) -> BrokerProcess {
    start_broker_on(0, 0, extra)
}

/// As [`start_broker`], on given ports (0 = any).
pub fn start_broker_on(client_port: u16, worker_port: u16, extra: &[&str]) -> BrokerProcess {
    let bin = zmq_rpc_binary();
    let mut child = Command::new(&bin)
        .args(["broker", "--host", "127.0.0.1", "--password", "pw"])
        .args([
            "--port",
            &client_port.to_string(),
            "--worker-port",
            &worker_port.to_string(),
        ])
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (build with --bins first)",
                bin.display()
            )
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("broker banner");
    // "broker listening: clients tcp://127.0.0.1:P workers tcp://127.0.0.1:Q"
    let ports: Vec<u16> = line
        .split_whitespace()
        .filter_map(|w| w.rsplit(':').next()?.parse().ok())
        .collect();
    assert_eq!(ports.len(), 2, "unexpected broker banner: {line:?}");
    BrokerProcess {
        child,
        client_port: ports[0],
        worker_port: ports[1],
    }
}

/// (VmRSS, VmHWM) of a process in KiB, from /proc.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// An integer from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
