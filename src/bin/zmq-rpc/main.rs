//! `zmq-rpc`: call functions, check health, list functions, run a standalone broker.
//!
//! Thin by design: parse arguments, set up logging, dispatch to one file per
//! subcommand, map errors to exit codes. Everything else is the library's.

mod bench;
mod broker;
mod call;
mod keygen;
mod list;
mod ping;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use zmq_rpc::config::{self, vars};
use zmq_rpc::Error;

/// Remote procedure calls over ZeroMQ.
///
/// Settings come from flags, else the environment (ZMQ_RPC_*), else a .env file in the
/// working directory, else the defaults. Exit codes: 0 ok, 1 RuntimeError, 2 usage,
/// 3 TimeoutError, 4 NameError, 5 PermissionError, 6 TypeError, 7 ProtocolError,
/// 8 OverloadError, 9 UnavailableError, 10 TransportError, 11 ConfigError.
#[derive(Parser)]
#[command(name = "zmq-rpc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call FUNCTION with ARGs and print the result as JSON.
    Call(call::CallArgs),
    /// Health check: print the server's name.
    Ping(Connection),
    /// List the server's functions with their descriptions and parameters.
    List(list::ListArgs),
    /// Run a standalone broker for worker processes.
    Broker(broker::BrokerArgs),
    /// Print a new CURVE key pair (public and secret, Z85) as environment lines.
    Keygen,
    /// Measure latency and throughput (W1-W5) beside the floors of raw libzmq.
    Bench(bench::BenchArgs),
}

/// Where and how to reach the server.
#[derive(Args, Clone)]
pub(crate) struct Connection {
    /// Host of the server or broker.
    #[arg(long, env = vars::HOST, default_value = config::DEFAULT_HOST)]
    host: String,
    /// Client port of the server or broker.
    #[arg(long, env = vars::PORT, default_value_t = config::DEFAULT_PORT)]
    port: u16,
    /// The shared password.
    #[arg(long, env = vars::PASSWORD, hide_env_values = true, default_value = "")]
    password: String,
    /// How long to wait for the reply, in milliseconds.
    #[arg(long = "timeout", env = vars::TIMEOUT_MS, default_value_t = config::DEFAULT_TIMEOUT.as_millis() as u64)]
    timeout_ms: u64,
    /// The server's CURVE public key (Z85); turns encryption on.
    #[arg(long, env = vars::CURVE_SERVER_KEY, hide_env_values = true)]
    curve_server_key: Option<String>,
}

impl Connection {
    /// The library client these arguments describe.
    pub(crate) fn client(&self) -> zmq_rpc::RpcClient {
        let client = zmq_rpc::RpcClient::new(self.password.clone(), &self.host, self.port)
            .timeout(Duration::from_millis(self.timeout_ms));
        match &self.curve_server_key {
            Some(key) => client.curve_server_key(key.clone()),
            None => client,
        }
    }
}

/// The documented exit code of each error kind.
fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Runtime(_) => 1,
        Error::Timeout(_) => 3,
        Error::Name(_) => 4,
        Error::Permission(_) => 5,
        Error::Type(_) => 6,
        Error::Protocol(_) => 7,
        Error::Overloaded { .. } => 8,
        Error::Unavailable(_) => 9,
        Error::Transport(_) => 10,
        Error::Config(_) => 11,
        _ => 1,
    }
}

fn main() -> ExitCode {
    // Load .env before clap reads the environment, and name a bad variable clearly
    // (clap would only name the flag it backs).
    if let Err(e) = config::Env::load() {
        eprintln!("{e}");
        return ExitCode::from(exit_code(&e));
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Call(args) => call::run(&args),
        Command::Ping(conn) => ping::run(&conn),
        Command::List(args) => list::run(&args),
        Command::Broker(args) => broker::run(&args),
        Command::Keygen => keygen::run(),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
