//! The seed's `server.py`: an RPC server named `Rechner1` offering `add` and `mul`.
//!
//! Run: `cargo run --release --example server` (stop with Ctrl-C).
//! Host, port, password, timeout and workers come from ZMQ_RPC_* or `.env`, else the
//! seed's values (localhost, 8421, geheim, 5000 ms, 4).

mod seed;

fn main() {
    seed::init_logging();
    let env = seed::env();
    let mut server = zmq_rpc::RpcServer::new(seed::password(&env), seed::SERVER_NAME);
    seed::register_server(&mut server);

    let host = env.host.as_deref().unwrap_or(zmq_rpc::config::DEFAULT_HOST);
    let port = env.port.unwrap_or(zmq_rpc::config::DEFAULT_PORT);
    println!("Starte RPC-Server auf tcp://{host}:{port} …");
    if let Err(e) = server.serve_forever() {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
