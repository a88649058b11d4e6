//! Proof of encryption: a byte-recording TCP relay on 127.0.0.1 sits between client and
//! server. Without CURVE the password and the arguments are in the recorded bytes; with
//! CURVE they are not, and the call still succeeds.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::with_timeout;
use zmq_rpc::{RpcClient, RpcServer};

const PASSWORD: &str = "correct-horse-battery-staple";
const SECRET_ARGUMENT: &str = "attack at dawn: 4711";

/// A TCP relay from an ephemeral port to `target`, recording every byte in both
/// directions. Every thread polls `stop` at least every 50 ms, so dropping the relay
/// ends them all.
struct Relay {
    port: u16,
    recorded: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

const TICK: Duration = Duration::from_millis(50);

fn pump(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                log.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (Arc::clone(&recorded), Arc::clone(&stop));
        let acceptor = std::thread::spawn(move || {
            let mut pumps = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        for (a, b) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let (log, flag) = (Arc::clone(&log), Arc::clone(&flag));
                            pumps.push(std::thread::spawn(move || pump(a, b, log, flag)));
                        }
                    }
                    Err(_) => std::thread::sleep(TICK / 5),
                }
            }
            for p in pumps {
                let _ = p.join();
            }
        });
        Relay {
            port,
            recorded,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn recorded(&self) -> Vec<u8> {
        self.recorded.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// One call through a relay; returns what crossed the wire.
fn call_through_relay(server: RpcServer, client_key: Option<&str>) -> Vec<u8> {
    let mut server = server.host("127.0.0.1").port(0).workers(1);
    server.add_external_function(|s: String| s.len(), "length");
    let running = server.start().unwrap();
    let relay = Relay::start(running.port());
    let mut client = RpcClient::new(PASSWORD, "127.0.0.1", relay.port)
        .timeout(Duration::from_secs(5))
        .retries(0);
    if let Some(key) = client_key {
        client = client.curve_server_key(key);
    }
    assert_eq!(
        client.call::<usize>("length", (SECRET_ARGUMENT,)),
        Ok(SECRET_ARGUMENT.len()),
        "the call succeeds through the relay"
    );
    drop(client);
    let bytes = relay.recorded();
    drop(relay);
    running.shutdown();
    bytes
}

#[test]
fn plain_tcp_shows_password_and_arguments_curve_hides_them() {
    with_timeout(Duration::from_secs(30), || {
        let plain = call_through_relay(RpcServer::new(PASSWORD, "plain"), None);
        assert!(
            contains(&plain, PASSWORD),
            "the relay sees the password in plain TCP"
        );
        assert!(contains(&plain, SECRET_ARGUMENT), "and the argument");

        let (public, secret) = zmq_rpc::generate_curve_keypair().unwrap();
        let server = RpcServer::new(PASSWORD, "curve").curve_secret_key(&secret);
        let encrypted = call_through_relay(server, Some(&public));
        // The request and reply crossed the relay (the handshake alone is ~400 bytes).
        assert!(encrypted.len() > 400, "{} bytes recorded", encrypted.len());
        assert!(
            contains(&encrypted, "CURVE"),
            "the greeting names the mechanism"
        );
        for secret_text in [PASSWORD, SECRET_ARGUMENT, "length", "password"] {
            assert!(
                !contains(&encrypted, secret_text),
                "{secret_text:?} crossed the wire in clear under CURVE"
            );
        }
    });
}
