//! One command, the whole seed: starts the `Rechner1` server in this process (on a free
//! port of 127.0.0.1), runs the seed's client against it, and prints its output:
//!
//! ```text
//! 5 + 7 = 12
//! 3 * 4 = 12
//! ```
//!
//! Run: `cargo run --release --example quickstart`.

mod seed;

fn main() {
    let mut server = zmq_rpc::RpcServer::new(seed::PASSWORD, seed::SERVER_NAME)
        .host("127.0.0.1")
        .port(0);
    seed::register_server(&mut server);
    let running = match server.start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the server: {e}");
            std::process::exit(1);
        }
    };
    let client = zmq_rpc::RpcClient::new(seed::PASSWORD, "127.0.0.1", running.port());
    let outcome = seed::run_client(&seed::Calculator::new(client));
    running.shutdown();
    if let Err(e) = outcome {
        println!("Fehler beim RPC-Aufruf: {e}");
        std::process::exit(1);
    }
}
