//! No password or worker secret ever reaches a log line, at any level, nor an error
//! message: logs are captured at TRACE during right and wrong calls, malformed requests,
//! a worker process registering and a rogue one being refused.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::with_timeout;
use zmq_rpc::{Error, RpcClient, RpcServer, Worker};

const PASSWORD: &str = "Pa55-w0rd-never-logged";
const WRONG: &str = "Wr0ng-guess-never-logged";
const WORKER_SECRET: &str = "W0rker-secret-never-logged";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn trace_logs_and_errors_never_contain_a_password() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    with_timeout(Duration::from_secs(60), || {
        let mut server = RpcServer::new(PASSWORD, "logged")
            .host("127.0.0.1")
            .port(0)
            .worker_port(0)
            .workers(1)
            .worker_secret(WORKER_SECRET);
        server.add_external_function(|a: i64, b: i64| a + b, "add");
        let running = server.start().unwrap();
        let port = running.port();

        let client = RpcClient::new(PASSWORD, "127.0.0.1", port);
        assert_eq!(client.call::<i64>("add", (1, 2)), Ok(3));
        assert!(matches!(
            client.call::<i64>("nope", ()),
            Err(Error::Name(_))
        ));
        assert!(matches!(
            client.call::<i64>("add", ("x", 1)),
            Err(Error::Type(_))
        ));

        let wrong = RpcClient::new(WRONG, "127.0.0.1", port);
        for _ in 0..8 {
            // Includes the lockout after repeated failures.
            match wrong.call::<i64>("add", (1, 2)) {
                Err(Error::Permission(message)) => {
                    assert!(
                        !message.contains(WRONG) && !message.contains(PASSWORD),
                        "{message}"
                    )
                }
                other => panic!("expected PermissionError, got {other:?}"),
            }
        }

        // Malformed requests that carry a password: their errors name fields, not values.
        let ctx = zmq::Context::new();
        let raw = ctx.socket(zmq::DEALER).unwrap();
        raw.set_linger(0).unwrap();
        raw.set_rcvtimeo(5000).unwrap();
        raw.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
        for body in [
            format!(r#"{{"id":1,"password":"{PASSWORD}","function":5}}"#),
            format!(r#"{{"id":2,"password":"{WRONG}","function":"add","args":7}}"#),
            format!(r#"{{"id":3,"password":"{PASSWORD}","#),
        ] {
            raw.send_multipart([&b""[..], body.as_bytes()], 0).unwrap();
            let reply = raw.recv_multipart(0).expect("an error reply");
            let text = String::from_utf8_lossy(reply.last().unwrap()).into_owned();
            assert!(text.contains("ProtocolError"), "{text}");
            assert!(!text.contains(PASSWORD) && !text.contains(WRONG), "{text}");
        }

        // A worker process registers with the secret; a rogue one is refused.
        let mut worker = Worker::new(PASSWORD, "127.0.0.1", running.worker_port().unwrap())
            .threads(1)
            .worker_secret(WORKER_SECRET);
        worker.add_external_function(|| 1, "one");
        let worker = worker.start().unwrap();
        common::wait_for_workers(&client, "one", 1, Duration::from_secs(10));
        let mut rogue = Worker::new(PASSWORD, "127.0.0.1", running.worker_port().unwrap())
            .threads(1)
            .worker_secret(WRONG);
        rogue.add_external_function(|| 2, "two");
        assert!(matches!(
            rogue.start().unwrap().wait(),
            Err(Error::Permission(_))
        ));
        worker.shutdown();
        running.shutdown();
    });

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The capture worked: it holds lines of each level, including the TRACE events that
    // print whole requests and READY messages (with the secrets redacted).
    for expected in [
        "TRACE",
        "client request",
        "<redacted>",
        "INFO",
        "WARN",
        "worker joined",
    ] {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the captured logs:\n{logs}"
        );
    }
    for secret in [PASSWORD, WRONG, WORKER_SECRET] {
        assert!(
            !logs.contains(secret),
            "{secret:?} appears in the logs:\n{}",
            logs.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
