//! Soak test: steady load through a standalone broker while worker processes are killed
//! (SIGKILL) and restarted at random. At the end every request is accounted for —
//! answered once, or failed with a clear error — and the execution log shows that no
//! call ran twice.
//!
//! Run: `cargo build --release --bins --examples && target/release/examples/soak`
//! Options (env): SOAK_SECONDS (180), SOAK_CLIENTS (8), SOAK_WORKERS (3 processes),
//! SOAK_THREADS (2 per worker), SOAK_MAX_WORK_MS (50), SOAK_KILL_EVERY_MS (1500, mean).
//!
//! Each call is `record(token, ms)`: the worker appends the token to a shared log file
//! (one line per execution, O_APPEND), sleeps `ms`, and returns the token. Tokens are
//! unique per request, so a token found twice in the log is a call that ran twice.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{env_or, start_broker};
use zmq_rpc::{Error, RpcClient, Worker};

fn worker_main(port: u16, log: String, threads: usize) {
    let mut worker = Worker::new("pw", "127.0.0.1", port)
        .threads(threads)
        .heartbeat_interval(Duration::from_millis(500));
    worker.add_external_function(
        move |token: String, ms: u64| -> Result<String, std::io::Error> {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&log)?;
            f.write_all(format!("{token}\n").as_bytes())?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok(token)
        },
        "record",
    );
    let _running = worker.start().expect("worker start");
    // Serve until killed, or until the parent goes away (stdin closes).
    let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
}

fn spawn_worker(port: u16, log: &str, threads: usize) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args(["--worker", &port.to_string(), log, &threads.to_string()])
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn worker")
}

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    wrong_result: u64,
    errors: HashMap<&'static str, u64>,
    ok_tokens: Vec<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        return worker_main(
            args[2].parse().unwrap(),
            args[3].clone(),
            args[4].parse().unwrap(),
        );
    }
    let seconds = env_or("SOAK_SECONDS", 180);
    let clients = env_or("SOAK_CLIENTS", 8);
    let workers = env_or("SOAK_WORKERS", 3) as usize;
    let threads = env_or("SOAK_THREADS", 2) as usize;
    let max_work = env_or("SOAK_MAX_WORK_MS", 50);
    let kill_every = env_or("SOAK_KILL_EVERY_MS", 1500);

    let log_path = std::env::temp_dir().join(format!("zmq-rpc-soak-{}.log", std::process::id()));
    let log = log_path.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&log_path);
    let broker = start_broker(&["--timeout", "5000"]);
    let mut pool: Vec<Child> = (0..workers)
        .map(|_| spawn_worker(broker.worker_port, &log, threads))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        let port = broker.client_port;
        handles.push(std::thread::spawn(move || {
            let client = RpcClient::new("pw", "127.0.0.1", port).timeout(Duration::from_secs(5));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let token = format!("c{c}-{n}");
                n += 1;
                let ms = fastrand::u64(0..=max_work);
                let outcome: Result<String, Error> = client.call("record", (&token, ms));
                let mut t = tally.lock().unwrap();
                t.sent += 1;
                match outcome {
                    Ok(got) if got == token => {
                        t.ok += 1;
                        t.ok_tokens.push(token);
                    }
                    Ok(_) => t.wrong_result += 1,
                    Err(e) => *t.errors.entry(e.kind_name()).or_default() += 1,
                }
            }
        }));
    }

    let mut kills = 0u64;
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(fastrand::u64(
            kill_every / 2..=kill_every * 3 / 2,
        )));
        let victim = fastrand::usize(..pool.len());
        let _ = pool[victim].kill(); // SIGKILL
        let _ = pool[victim].wait();
        kills += 1;
        pool[victim] = spawn_worker(broker.worker_port, &log, threads);
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("client thread");
    }
    let elapsed = started.elapsed();
    for mut w in pool {
        let _ = w.kill();
        let _ = w.wait();
    }

    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut runs: HashMap<&str, u32> = HashMap::new();
    for line in text.lines() {
        *runs.entry(line).or_default() += 1;
    }
    let twice = runs.values().filter(|n| **n > 1).count();
    let t = tally.lock().unwrap();
    let ok_not_logged = t
        .ok_tokens
        .iter()
        .filter(|tok| runs.get(tok.as_str()) != Some(&1))
        .count();
    let failed: u64 = t.errors.values().sum();
    println!("duration:            {:.1} s", elapsed.as_secs_f64());
    println!("worker kills:        {kills} (SIGKILL, each replaced at once)");
    println!("requests sent:       {}", t.sent);
    println!("answered with result:{:>8}", t.ok);
    let mut kinds: Vec<_> = t.errors.iter().collect();
    kinds.sort();
    for (kind, n) in kinds {
        println!("failed {kind:<14}{n:>8}");
    }
    println!("wrong results:       {}", t.wrong_result);
    println!(
        "unaccounted:         {}",
        t.sent - t.ok - failed - t.wrong_result
    );
    println!("executions logged:   {}", text.lines().count());
    println!("executed twice:      {twice}");
    println!("ok but not run once: {ok_not_logged}");
    let _ = std::fs::remove_file(&log_path);
    drop(broker);
    if twice > 0 || ok_not_logged > 0 || t.wrong_result > 0 || t.sent != t.ok + failed {
        std::process::exit(1);
    }
}
