//! The seed's `client.py`: calls `add` and `mul` on the server of `examples/server.rs`.
//!
//! Run (with the server running): `cargo run --release --example client`.
//! Host, port and password come from ZMQ_RPC_* or `.env`, else the seed's values.

mod seed;

fn main() {
    let env = seed::env();
    let client = zmq_rpc::RpcClient::new(
        seed::password(&env),
        env.host.as_deref().unwrap_or(zmq_rpc::config::DEFAULT_HOST),
        env.port.unwrap_or(zmq_rpc::config::DEFAULT_PORT),
    );
    if let Err(e) = seed::run_client(&seed::Calculator::new(client)) {
        println!("Fehler beim RPC-Aufruf: {e}");
        std::process::exit(1);
    }
}
