//! The real `zmq-rpc` binary against an in-process server: output, argument parsing,
//! exit codes, and where settings come from (flags, environment, `.env`).

mod common;

use std::time::Duration;

use common::{start_seed_server, with_timeout, TempDir, NAME, PASSWORD};
use serde_json::{json, Value};
use zmq_rpc::{Error, RpcClient, RpcServer};

const LIMIT: Duration = Duration::from_secs(30);
/// A CLI run that takes longer than this has hung.
const RUN_LIMIT: Duration = Duration::from_secs(15);

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `zmq-rpc ARGS` in `dir` with only the `env` given of the ZMQ_RPC_* variables.
fn zmq_rpc_in(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = common::zmq_rpc_command(dir.path());
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = common::run_with_limit(command, RUN_LIMIT);
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Runs `zmq-rpc ARGS` in an empty directory.
fn zmq_rpc(args: &[&str]) -> Run {
    zmq_rpc_in(&TempDir::new(), args, &[])
}

/// `SUBCOMMAND --host 127.0.0.1 --port PORT --password pw REST...`
fn with_connection(subcommand: &str, port: u16, rest: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [subcommand, "--host", "127.0.0.1", "--port"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(port.to_string());
    args.extend(["--password".to_owned(), PASSWORD.to_owned()]);
    args.extend(rest.iter().map(|s| (*s).to_owned()));
    args
}

fn call(port: u16, rest: &[&str]) -> Run {
    let args = with_connection("call", port, rest);
    zmq_rpc(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn assert_success(run: &Run, stdout: &str) {
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (Some(0), stdout, ""),
        "{run:?}"
    );
}

fn assert_failure(run: &Run, code: i32, stderr: &str) {
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (Some(code), "", stderr),
        "{run:?}"
    );
}

/// Whether `stderr` is exactly one `TimeoutError: ...` line for a 300 ms timeout: the
/// client's own, or (when a server runs the call) the server's for `mul`.
fn is_timeout_line(stderr: &str, port: u16, server_may_answer: bool) -> bool {
    let Some(message) = stderr
        .strip_prefix("TimeoutError: ")
        .and_then(|m| m.strip_suffix('\n'))
    else {
        return false;
    };
    common::is_client_timeout(message, port, 300)
        || (server_may_answer && message == "'mul' did not answer within the deadline")
}

#[test]
fn call_prints_the_result_as_json() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let port = server.port();
        assert_success(&call(port, &["add", "5", "7"]), "12\n");
        assert_success(&call(port, &["divide", "1", "4"]), "0.25\n");
        assert_success(&call(port, &["greet", "Ada"]), "\"Hello, Ada!\"\n");
        assert_success(&call(port, &["greet"]), "\"Hello, world!\"\n");
    });
}

#[test]
fn arguments_are_json_if_they_parse_else_strings() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let port = server.port();
        let run = call(
            port,
            &[
                "echo",
                "5",
                "abc",
                "\"5\"",
                "[1,2]",
                "{\"k\":null}",
                "-3.5",
                "hello world",
                "true",
            ],
        );
        assert_success(
            &run,
            "{\"args\":[5,\"abc\",\"5\",[1,2],{\"k\":null},-3.5,\"hello world\",true],\"kwargs\":{}}\n",
        );
        // Keyword arguments, parsed the same way.
        assert_success(&call(port, &["--kw", "b=7", "add", "5"]), "12\n");
        assert_success(&call(port, &["--kw", "a=1", "--kw", "b=2", "add"]), "3\n");
        assert_success(
            &call(port, &["--kw", "name=Grace", "greet"]),
            "\"Hello, Grace!\"\n",
        );
        let run = call(
            port,
            &[
                "--kw", "n=1", "--kw", "s=x y", "--kw", "l=[1]", "--kw", "e=a=b", "echo",
            ],
        );
        assert_success(
            &run,
            "{\"args\":[],\"kwargs\":{\"e\":\"a=b\",\"l\":[1],\"n\":1,\"s\":\"x y\"}}\n",
        );
        assert_failure(
            &call(port, &["--kw", "novalue", "echo"]),
            11,
            "ConfigError: --kw \"novalue\" is not NAME=VALUE\n",
        );
    });
}

#[test]
fn each_error_kind_has_its_exit_code_and_message() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let port = server.port();
        assert_failure(
            &call(port, &["divide", "1", "0"]),
            1,
            "RuntimeError: division by zero\n",
        );
        assert_failure(
            &call(port, &["sub", "5", "7"]),
            4,
            "NameError: no function named 'sub' is registered\n",
        );
        assert_failure(
            &call(port, &["add", "1", "2", "3"]),
            6,
            "TypeError: add() takes 2 positional argument(s) but 3 were given\n",
        );
        assert_failure(
            &call(port, &["add", "x", "2"]),
            6,
            "TypeError: argument 1 does not fit: invalid type: string \"x\", expected i64\n",
        );
        let port_text = port.to_string();
        let wrong = zmq_rpc(&[
            "call",
            "--host",
            "127.0.0.1",
            "--port",
            &port_text,
            "--password",
            "wrong",
            "add",
            "5",
            "7",
        ]);
        assert_failure(&wrong, 5, "PermissionError: wrong password\n");
        // The 1 s `mul` against a 300 ms timeout: whichever side notices first says so.
        let slow = call(port, &["--timeout", "300", "mul", "3", "4"]);
        assert_eq!((slow.code, slow.stdout.as_str()), (Some(3), ""), "{slow:?}");
        assert!(is_timeout_line(&slow.stderr, port, true), "{slow:?}");
    });
}

#[test]
fn nothing_listening_is_a_timeout_with_exit_code_3() {
    with_timeout(LIMIT, || {
        let port = common::unused_port();
        let run = call(port, &["--timeout", "300", "add", "1", "2"]);
        assert_eq!((run.code, run.stdout.as_str()), (Some(3), ""), "{run:?}");
        assert!(is_timeout_line(&run.stderr, port, false), "{run:?}");
    });
}

#[test]
fn ping_prints_the_name_as_a_json_string() {
    with_timeout(LIMIT, || {
        let server = common::seed_server("Rechner 1 \"Süd\"")
            .workers(1)
            .start()
            .expect("server starts");
        let args = with_connection("ping", server.port(), &[]);
        let run = zmq_rpc(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_success(&run, "\"Rechner 1 \\\"Süd\\\"\"\n");
    });
}

#[test]
fn list_prints_a_table_and_json() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let args = with_connection("list", server.port(), &[]);
        let run = zmq_rpc(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_success(
            &run,
            "add(a, b)  [4 worker(s)]  Adds two numbers.\n\
             divide(2 positional)  [4 worker(s)]  Divides; fails on zero.\n\
             echo(*args, **kwargs)  [4 worker(s)]  Returns its arguments.\n\
             greet(name)  [4 worker(s)]  Greets someone, or the world.\n\
             mul(a, b)  [4 worker(s)]  Multiplies, taking 1 s.\n",
        );
        let args = with_connection("list", server.port(), &["--json"]);
        let run = zmq_rpc(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""), "{run:?}");
        let listed: Value = serde_json::from_str(&run.stdout).expect("list --json is JSON");
        let f = |name: &str, description: &str, params: Value, names: Value| {
            json!({
                "name": name,
                "description": description,
                "params": params,
                "param_names": names,
                "idempotent": false,
                // The seed server's 4 local workers each register.
                "workers": 4,
            })
        };
        assert_eq!(
            listed,
            json!([
                f("add", "Adds two numbers.", json!(2), json!(["a", "b"])),
                f("divide", "Divides; fails on zero.", json!(2), json!([])),
                f("echo", "Returns its arguments.", Value::Null, json!([])),
                f(
                    "greet",
                    "Greets someone, or the world.",
                    json!(1),
                    json!(["name"])
                ),
                f(
                    "mul",
                    "Multiplies, taking 1 s.",
                    json!(2),
                    json!(["a", "b"])
                ),
            ])
        );
    });
}

#[test]
fn password_comes_from_flag_then_environment_then_dotenv() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let port = server.port().to_string();
        let no_password = [
            "call",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "add",
            "5",
            "7",
        ];
        let flag = |password: &'static str| {
            let mut args = no_password.to_vec();
            args.splice(5..5, ["--password", password]);
            args
        };
        let denied = "PermissionError: wrong password\n";
        let env_var = "ZMQ_RPC_PASSWORD";

        // Without any password, the server refuses.
        assert_failure(&zmq_rpc(&no_password), 5, denied);
        // From the environment.
        let empty = TempDir::new();
        assert_success(
            &zmq_rpc_in(&empty, &no_password, &[(env_var, PASSWORD)]),
            "12\n",
        );
        // From .env in the working directory.
        let right = TempDir::new();
        right.write(".env", &format!("{env_var}={PASSWORD}\n"));
        assert_success(&zmq_rpc_in(&right, &no_password, &[]), "12\n");
        let wrong = TempDir::new();
        wrong.write(".env", &format!("{env_var}=falsch\n"));
        assert_failure(&zmq_rpc_in(&wrong, &no_password, &[]), 5, denied);
        // The environment wins over .env ...
        assert_success(
            &zmq_rpc_in(&wrong, &no_password, &[(env_var, PASSWORD)]),
            "12\n",
        );
        assert_failure(
            &zmq_rpc_in(&right, &no_password, &[(env_var, "falsch")]),
            5,
            denied,
        );
        // ... and a flag over both.
        assert_success(
            &zmq_rpc_in(&wrong, &flag(PASSWORD), &[(env_var, "falsch")]),
            "12\n",
        );
        assert_failure(
            &zmq_rpc_in(&right, &flag("falsch"), &[(env_var, PASSWORD)]),
            5,
            denied,
        );
    });
}

#[test]
fn every_connection_setting_can_come_from_dotenv() {
    with_timeout(LIMIT, || {
        let server = start_seed_server();
        let dir = TempDir::new();
        dir.write(
            ".env",
            &format!(
                "# test settings\nZMQ_RPC_HOST=127.0.0.1\nZMQ_RPC_PORT={}\nZMQ_RPC_PASSWORD={PASSWORD}\nZMQ_RPC_TIMEOUT_MS=300\n",
                server.port()
            ),
        );
        assert_success(&zmq_rpc_in(&dir, &["ping"], &[]), &format!("\"{NAME}\"\n"));
        assert_success(&zmq_rpc_in(&dir, &["call", "add", "2", "3"], &[]), "5\n");
        // The timeout came from .env too: the 1 s mul times out.
        let slow = zmq_rpc_in(&dir, &["call", "mul", "2", "3"], &[]);
        assert_eq!(slow.code, Some(3), "{slow:?}");
    });
}

#[test]
fn keygen_prints_a_working_z85_key_pair() {
    with_timeout(LIMIT, || {
        let keys = |run: &Run| -> (String, String) {
            assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""), "{run:?}");
            let lines: Vec<&str> = run.stdout.lines().collect();
            assert_eq!(lines.len(), 2, "two lines for a .env file: {run:?}");
            let public = lines[0]
                .strip_prefix("ZMQ_RPC_CURVE_PUBLIC_KEY=")
                .expect("the public key line");
            let secret = lines[1]
                .strip_prefix("ZMQ_RPC_CURVE_SECRET_KEY=")
                .expect("the secret key line");
            for key in [public, secret] {
                assert_eq!(key.len(), 40, "{key}");
                // Unquoted in .env, `$` would be expanded and `#` start a comment.
                assert!(!key.contains(['$', '#']), "{key}");
                assert_eq!(
                    zmq::z85_decode(key).ok().map(|k| k.len()),
                    Some(32),
                    "{key}"
                );
            }
            (public.to_owned(), secret.to_owned())
        };
        let (public, secret) = keys(&zmq_rpc(&["keygen"]));
        let (other_public, _) = keys(&zmq_rpc(&["keygen"]));
        assert_ne!(public, other_public, "every run makes a new pair");
        assert_ne!(public, secret);

        // The two keys belong together: a CURVE server with the secret key answers a
        // client that has the public key, and nobody else.
        let mut server = RpcServer::new(PASSWORD, NAME)
            .host("127.0.0.1")
            .port(0)
            .workers(1)
            .curve_secret_key(&secret);
        common::register_seed(&mut server);
        let server = server.start().expect("CURVE server starts");
        let with_key = RpcClient::new(PASSWORD, "127.0.0.1", server.port())
            .timeout(Duration::from_secs(5))
            .curve_server_key(public.clone());
        assert_eq!(with_key.ping(), Ok(NAME.to_owned()));
        let wrong_key = RpcClient::new(PASSWORD, "127.0.0.1", server.port())
            .timeout(Duration::from_secs(5))
            .curve_server_key(other_public);
        assert!(matches!(wrong_key.ping(), Err(Error::Permission(_))));
        // And the CLI takes the public key from the environment.
        let args = with_connection("ping", server.port(), &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = zmq_rpc_in(
            &TempDir::new(),
            &args,
            &[("ZMQ_RPC_CURVE_SERVER_KEY", public.as_str())],
        );
        assert_success(&run, &format!("\"{NAME}\"\n"));
    });
}

#[test]
fn a_bad_environment_value_is_a_clear_error() {
    with_timeout(LIMIT, || {
        let dir = TempDir::new();
        let run = zmq_rpc_in(&dir, &["ping"], &[("ZMQ_RPC_PORT", "abc")]);
        assert_eq!((run.code, run.stdout.as_str()), (Some(11), ""), "{run:?}");
        assert!(
            run.stderr
                .starts_with("ConfigError: ZMQ_RPC_PORT=\"abc\" is invalid"),
            "{run:?}"
        );
        // A variable only the library reads is reported by the library, naming it.
        let run = zmq_rpc_in(
            &dir,
            &["call", "--port", "1", "--timeout", "300", "add", "1", "2"],
            &[("ZMQ_RPC_WORKERS", "many")],
        );
        assert_failure(
            &run,
            11,
            "ConfigError: ZMQ_RPC_WORKERS=\"many\" is invalid: invalid digit found in string\n",
        );
    });
}
