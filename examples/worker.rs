//! A worker process that joins a standalone broker and serves the seed's `add` and `mul`.
//!
//! Run: `zmq-rpc broker --password geheim` in one terminal, then
//! `cargo run --release --example worker` in others (stop with Ctrl-C), and call with
//! `cargo run --release --example client`. The broker's host and worker port come from
//! ZMQ_RPC_HOST and ZMQ_RPC_WORKER_PORT (default localhost:8422).

mod seed;

fn main() {
    seed::init_logging();
    let env = seed::env();
    let host = env.host.as_deref().unwrap_or(zmq_rpc::config::DEFAULT_HOST);
    let port = env
        .worker_port
        .unwrap_or(zmq_rpc::config::DEFAULT_WORKER_PORT);
    let mut worker = zmq_rpc::Worker::new(seed::password(&env), host, port);
    seed::register_worker(&mut worker);
    println!("Worker verbindet sich mit tcp://{host}:{port} …");
    if let Err(e) = worker.run() {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
