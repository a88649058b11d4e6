//! What the seed's `server.py` and `client.py` share with our examples: the two
//! functions, the remote interface, the client's printed lines and the settings.

#![allow(dead_code)] // each example uses part of this module

use std::time::Duration;

use zmq_rpc::config::Env;

/// The seed's password, server name and port, used when the environment sets none.
pub const PASSWORD: &str = "geheim";
pub const SERVER_NAME: &str = "Rechner1";

/// Adds two numbers. (The seed's `add`.)
pub fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Multiplies with a delay. (The seed's `slow_multiply`.)
pub fn slow_multiply(a: i64, b: i64) -> i64 {
    std::thread::sleep(Duration::from_secs(1));
    a * b
}

zmq_rpc::remote_interface! {
    /// The seed's two functions, as typed methods.
    pub struct Calculator {
        /// Adds two numbers.
        fn add(a: i64, b: i64) -> i64;
        /// Multiplies with a delay.
        fn mul(a: i64, b: i64) -> i64;
    }
}

/// Logs to stderr at the level `RUST_LOG` sets, `info` by default.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// Settings from the environment and `.env`, or the defaults.
pub fn env() -> Env {
    Env::load().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(11)
    })
}

/// The password from the environment, else the seed's.
pub fn password(env: &Env) -> String {
    env.password.clone().unwrap_or_else(|| PASSWORD.into())
}

/// The body of the seed's `client.py`.
pub fn run_client(calc: &Calculator) -> Result<(), zmq_rpc::Error> {
    let result_add = calc.add(5, 7)?;
    println!("5 + 7 = {result_add}");
    let result_mul = calc.mul(3, 4)?;
    println!("3 * 4 = {result_mul}");
    Ok(())
}

/// One of the seed's functions: the function, its alias, its docstring.
pub type SeedFunction = (fn(i64, i64) -> i64, &'static str, &'static str);

/// The seed's functions with their aliases and docstrings.
pub const FUNCTIONS: [SeedFunction; 2] = [
    (add, "add", "Addiert zwei Zahlen."),
    (slow_multiply, "mul", "Multipliziert mit Verzögerung."),
];

/// Registers the seed's functions under the seed's aliases.
pub fn register_server(server: &mut zmq_rpc::RpcServer) {
    for (func, alias, doc) in FUNCTIONS {
        server
            .add_external_function(func, alias)
            .description(doc)
            .params(["a", "b"]);
    }
}

/// The same registrations on a worker process.
pub fn register_worker(worker: &mut zmq_rpc::Worker) {
    for (func, alias, doc) in FUNCTIONS {
        worker
            .add_external_function(func, alias)
            .description(doc)
            .params(["a", "b"]);
    }
}
