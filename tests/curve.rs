//! CURVE end to end: encrypted calls work with the right key, and a client without it
//! (or with a wrong one) gets no answer instead of a silent plaintext fallback.

mod common;

use std::time::Duration;

use zmq_rpc::{Error, RpcClient, RpcServer, Worker};

fn with_deadline<F: FnOnce() + Send + 'static>(seconds: u64, body: F) {
    common::with_timeout(Duration::from_secs(seconds), body);
}

#[test]
fn encrypted_call_with_the_server_key() {
    with_deadline(20, || {
        let (public, secret) = zmq_rpc::generate_curve_keypair().unwrap();
        let mut server = RpcServer::new("pw", "secure")
            .host("127.0.0.1")
            .port(0)
            .curve_secret_key(&secret);
        server.add_external_function(|a: i64, b: i64| a + b, "add");
        let running = server.start().unwrap();

        let client = RpcClient::new("pw", "127.0.0.1", running.port()).curve_server_key(public);
        assert_eq!(client.call::<i64>("add", (5, 7)), Ok(12));

        let plain =
            RpcClient::new("pw", "127.0.0.1", running.port()).timeout(Duration::from_millis(500));
        assert!(matches!(
            plain.call::<i64>("add", (1, 2)),
            Err(Error::Timeout(_))
        ));

        let (other_public, _) = zmq_rpc::generate_curve_keypair().unwrap();
        let wrong = RpcClient::new("pw", "127.0.0.1", running.port())
            .curve_server_key(other_public)
            .timeout(Duration::from_millis(500));
        assert!(matches!(
            wrong.call::<i64>("add", (1, 2)),
            Err(Error::Timeout(_))
        ));
    });
}

#[test]
fn worker_process_side_joins_an_encrypted_broker() {
    with_deadline(20, || {
        let (public, secret) = zmq_rpc::generate_curve_keypair().unwrap();
        // The server's own (inproc) workers and a TCP worker share the encrypted backend.
        let mut server = RpcServer::new("pw", "secure")
            .host("127.0.0.1")
            .port(0)
            .worker_port(0)
            .curve_secret_key(&secret);
        server.add_external_function(|a: i64, b: i64| a + b, "add");
        let running = server.start().unwrap();
        let mut worker = Worker::new("pw", "127.0.0.1", running.worker_port().unwrap())
            .threads(1)
            .curve_server_key(public.clone());
        worker.add_external_function(|s: String| s.to_uppercase(), "upper");
        let _worker = worker.start().unwrap();

        let client = RpcClient::new("pw", "127.0.0.1", running.port()).curve_server_key(public);
        assert_eq!(
            client.call::<i64>("add", (2, 3)),
            Ok(5),
            "inproc workers still serve"
        );
        let mut upper = Err(Error::Timeout(String::new()));
        for _ in 0..50 {
            upper = client.call::<String>("upper", ("abc",));
            if upper.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50)); // the worker may still be registering
        }
        assert_eq!(upper, Ok("ABC".to_string()));
    });
}

#[test]
fn invalid_keys_are_config_errors() {
    let mut server = RpcServer::new("pw", "x")
        .port(0)
        .curve_secret_key("not a key");
    server.add_external_function(|| 1, "one");
    assert!(matches!(server.start(), Err(Error::Config(_))));
    let client = RpcClient::new("pw", "127.0.0.1", 1).curve_server_key("short");
    assert!(matches!(client.ping(), Err(Error::Config(_))));
}
