//! CURVE end to end, with keys from `zmq-rpc keygen`: through an `RpcServer`, through the
//! standalone broker binary with a remote worker, with allow-lists. Every refusal (an
//! unlisted client key, a wrong server key, plain TCP to a CURVE server, a rogue
//! worker) must surface as `PermissionError` within a second, never as a timeout.

mod common;

use std::time::{Duration, Instant};

use common::process::{process_test, BrokerCommand};
use common::{run_with_limit, with_timeout, zmq_rpc_command, TempDir, PASSWORD};
use zmq_rpc::{Broker, Error, RpcClient, RpcServer, Worker};

/// How fast a refusal must reach the caller. The handshake fails within a few
/// milliseconds on loopback; the rest is slack for a loaded 2-core CI machine.
const REFUSAL_WITHIN: Duration = Duration::from_secs(1);
/// Client timeout in refusal tests: far above `REFUSAL_WITHIN`, so a refusal that only
/// showed up as a timeout would fail the elapsed-time check.
const LONG: Duration = Duration::from_secs(10);

/// A key pair from the real `zmq-rpc keygen`: its two `.env` lines and the keys.
struct Keys {
    env_lines: String,
    public: String,
    secret: String,
}

fn keygen() -> Keys {
    let dir = TempDir::new();
    let mut command = zmq_rpc_command(dir.path());
    command.arg("keygen");
    let out = run_with_limit(command, Duration::from_secs(10));
    assert!(out.status.success(), "{out:?}");
    let env_lines = String::from_utf8(out.stdout).expect("UTF-8");
    let value = |name: &str| -> String {
        env_lines
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}=... in {env_lines:?}"))
            .to_owned()
    };
    Keys {
        public: value("ZMQ_RPC_CURVE_PUBLIC_KEY"),
        secret: value("ZMQ_RPC_CURVE_SECRET_KEY"),
        env_lines,
    }
}

/// Runs `call`, asserts it fails with `PermissionError` within [`REFUSAL_WITHIN`], and
/// returns the message.
fn refused_quickly<T: std::fmt::Debug>(
    what: &str,
    call: impl FnOnce() -> Result<T, Error>,
) -> String {
    let start = Instant::now();
    let result = call();
    let took = start.elapsed();
    match result {
        Err(Error::Permission(message)) => {
            eprintln!("{what}: refused after {took:?}");
            assert!(took < REFUSAL_WITHIN, "{what}: refused only after {took:?}");
            message
        }
        other => panic!("{what}: expected PermissionError, got {other:?} after {took:?}"),
    }
}

fn curve_server(secret: &str) -> RpcServer {
    let mut server = RpcServer::new(PASSWORD, "secure")
        .host("127.0.0.1")
        .port(0)
        .workers(1)
        .curve_secret_key(secret);
    server.add_external_function(|a: i64, b: i64| a + b, "add");
    server
}

#[test]
fn rpc_server_encrypts_and_refuses_wrong_server_key_and_plain_tcp_at_once() {
    with_timeout(Duration::from_secs(30), || {
        let server_keys = keygen();
        let running = curve_server(&server_keys.secret).start().unwrap();
        let port = running.port();

        let client = RpcClient::new(PASSWORD, "127.0.0.1", port)
            .timeout(LONG)
            .curve_server_key(server_keys.public.clone());
        assert_eq!(client.call::<i64>("add", (5, 7)), Ok(12));

        let other = keygen();
        let wrong = RpcClient::new(PASSWORD, "127.0.0.1", port)
            .timeout(LONG)
            .curve_server_key(other.public);
        let why = refused_quickly("wrong server key", || wrong.call::<i64>("add", (1, 2)));
        assert!(why.contains("CURVE"), "{why}");

        let plain = RpcClient::new(PASSWORD, "127.0.0.1", port).timeout(LONG);
        let why = refused_quickly("plain TCP to CURVE", || plain.call::<i64>("add", (1, 2)));
        assert!(why.contains("CURVE"), "{why}");

        // The refused clients did not disturb the server.
        assert_eq!(client.call::<i64>("add", (2, 3)), Ok(5));
    });
}

#[test]
fn a_wrong_password_over_curve_is_refused_at_once_and_never_runs_the_function() {
    with_timeout(Duration::from_secs(30), || {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let keys = keygen();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        let mut server = RpcServer::new(PASSWORD, "secure")
            .host("127.0.0.1")
            .port(0)
            .workers(1)
            .curve_secret_key(&keys.secret);
        server.add_external_function(move || counter.fetch_add(1, Ordering::SeqCst) + 1, "count");
        let running = server.start().unwrap();
        let client = |password: &str| {
            RpcClient::new(password, "127.0.0.1", running.port())
                .timeout(LONG)
                .curve_server_key(keys.public.clone())
        };
        let why = refused_quickly("wrong password", || {
            client("not-the-password").call::<usize>("count", ())
        });
        assert_eq!(why, "wrong password");
        assert_eq!(runs.load(Ordering::SeqCst), 0, "the function never ran");
        assert_eq!(client(PASSWORD).call::<usize>("count", ()), Ok(1));
    });
}

#[test]
fn client_allow_list_refuses_unknown_keys_and_reloads_without_restart() {
    with_timeout(Duration::from_secs(30), || {
        let dir = TempDir::new();
        let (server, alice, mallory) = (keygen(), keygen(), keygen());
        // The allow-list takes keygen's public-key line as it is.
        let public_line = alice.env_lines.lines().next().unwrap().to_owned();
        dir.write("clients", &format!("# who may call\n{public_line}\n"));
        let running = curve_server(&server.secret)
            .curve_authorized_keys(dir.path().join("clients"))
            .start()
            .unwrap();
        let client = |keys: &Keys| {
            RpcClient::new(PASSWORD, "127.0.0.1", running.port())
                .timeout(LONG)
                .curve_server_key(server.public.clone())
                .curve_keypair(keys.public.clone(), keys.secret.clone())
        };

        assert_eq!(client(&alice).call::<i64>("add", (1, 1)), Ok(2));
        let why = refused_quickly("unlisted key", || {
            client(&mallory).call::<i64>("add", (1, 1))
        });
        assert!(why.contains("refused this client's key"), "{why}");
        // A per-process key (no pair configured) is not on the list either.
        let anonymous = RpcClient::new(PASSWORD, "127.0.0.1", running.port())
            .timeout(LONG)
            .curve_server_key(server.public.clone());
        refused_quickly("per-process key", || anonymous.ping());

        // Listing the key admits it, without a restart.
        dir.write(
            "clients",
            &format!("{}\n{}\n", alice.public, mallory.public),
        );
        assert_eq!(client(&mallory).call::<i64>("add", (2, 2)), Ok(4));
        // Removing a key shuts it out again.
        dir.write("clients", &format!("{}\n", mallory.public));
        refused_quickly("removed key", || client(&alice).ping());
    });
}

#[test]
fn standalone_broker_from_dotenv_serves_listed_worker_and_refuses_a_rogue_one() {
    process_test(Duration::from_secs(60), |processes, dir| {
        let (broker_keys, worker_keys, rogue_keys) = (keygen(), keygen(), keygen());
        // The broker's configuration is keygen's output pasted into .env, plus the
        // worker allow-list.
        dir.write("workers", &format!("{}\n", worker_keys.public));
        dir.write(
            ".env",
            &format!(
                "{}ZMQ_RPC_CURVE_WORKER_AUTHORIZED_KEYS=workers\n",
                broker_keys.env_lines
            ),
        );
        let broker = BrokerCommand::new("curve-broker")
            .arg("--warmup")
            .arg("0")
            .spawn(&processes, &dir);

        let mut worker = Worker::new(PASSWORD, "127.0.0.1", broker.worker_port)
            .threads(1)
            .curve_server_key(broker_keys.public.clone())
            .curve_keypair(worker_keys.public.clone(), worker_keys.secret.clone());
        worker.add_external_function(|s: String| s.to_uppercase(), "upper");
        let worker = worker.start().unwrap();

        let client = RpcClient::new(PASSWORD, "127.0.0.1", broker.client_port)
            .timeout(Duration::from_secs(5))
            .curve_server_key(broker_keys.public.clone());
        common::wait_for_workers(&client, "upper", 1, Duration::from_secs(10));
        assert_eq!(client.call::<String>("upper", ("abc",)), Ok("ABC".into()));

        // A rogue worker with a key of its own, not on the list: refused in the
        // handshake; it stops and says why within a second; it never joins.
        let mut rogue = Worker::new(PASSWORD, "127.0.0.1", broker.worker_port)
            .threads(1)
            .curve_server_key(broker_keys.public.clone())
            .curve_keypair(rogue_keys.public.clone(), rogue_keys.secret.clone());
        rogue.add_external_function(|| "stolen", "steal");
        let rogue = rogue.start().unwrap();
        let why = refused_quickly("rogue worker", || rogue.wait());
        assert!(why.contains("refused"), "{why}");
        let names: Vec<String> = client
            .list_functions()
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["upper"], "the rogue worker never registered");
        assert!(matches!(
            client.call::<String>("steal", ()),
            Err(Error::Name(_))
        ));
        assert!(!worker.is_finished() && worker.refusal().is_none());
        worker.shutdown();
    });
}

#[test]
fn without_curve_a_worker_needs_the_worker_secret() {
    with_timeout(Duration::from_secs(30), || {
        let broker = Broker::new(PASSWORD, "b")
            .host("127.0.0.1")
            .port(0)
            .worker_port(0)
            .warmup(Duration::ZERO)
            .worker_secret("only-workers-know")
            .start()
            .unwrap();
        let port = broker.worker_port().unwrap();

        // The client password is not the worker secret: a process that knows only what
        // clients know cannot join and receive their requests.
        let mut rogue = Worker::new(PASSWORD, "127.0.0.1", port).threads(1);
        rogue.add_external_function(|| "stolen", "steal");
        let rogue = rogue.start().unwrap();
        let why = refused_quickly("worker with the wrong secret", || rogue.wait());
        assert!(why.contains("wrong password"), "{why}");
        assert_eq!(broker.worker_count(), 0);

        let mut worker = Worker::new(PASSWORD, "127.0.0.1", port)
            .threads(1)
            .worker_secret("only-workers-know");
        worker.add_external_function(|a: i64, b: i64| a * b, "mul");
        let _worker = worker.start().unwrap();
        let client = RpcClient::new(PASSWORD, "127.0.0.1", broker.client_port());
        common::wait_for_workers(&client, "mul", 1, Duration::from_secs(10));
        assert_eq!(client.call::<i64>("mul", (6, 7)), Ok(42));
        assert!(matches!(
            client.call::<String>("steal", ()),
            Err(Error::Name(_))
        ));
    });
}

#[test]
fn bad_security_settings_fail_at_start_with_a_clear_message() {
    let start = |server: RpcServer| match server.start() {
        Err(Error::Config(message)) => message,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error, the server started"),
    };
    let message = start(curve_server("not a key"));
    assert!(message.contains("CURVE secret key"), "{message}");
    // Allow-lists without CURVE would silently admit everyone in plain text.
    let mut plain = RpcServer::new(PASSWORD, "x")
        .host("127.0.0.1")
        .port(0)
        .curve_authorized_keys("/nonexistent");
    plain.add_external_function(|| 1, "one");
    assert!(start(plain).contains("need CURVE"));
    let keys = zmq_rpc::generate_curve_keypair().unwrap();
    let missing = curve_server(&keys.1).curve_authorized_keys("/nonexistent/clients");
    assert!(start(missing).contains("cannot read allow-list"));
    let dir = TempDir::new();
    dir.write("bad", "ZMQ_RPC_CURVE_SECRET_KEY=leaked\n");
    let bad = curve_server(&keys.1).curve_authorized_keys(dir.path().join("bad"));
    let message = start(bad);
    assert!(
        message.contains("line 1") && !message.contains("leaked"),
        "{message}"
    );

    let client = RpcClient::new(PASSWORD, "127.0.0.1", 1).curve_server_key("short");
    assert!(matches!(client.ping(), Err(Error::Config(_))));
    let half_pair = RpcClient::new(PASSWORD, "127.0.0.1", 1)
        .curve_server_key(keys.0.clone())
        .curve_keypair(keys.0.clone(), "short");
    assert!(matches!(half_pair.ping(), Err(Error::Config(_))));
}
