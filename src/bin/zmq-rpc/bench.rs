//! `zmq-rpc bench`: the workloads W1-W5 against a server, each beside the floor that
//! libzmq itself sets on this machine, measured in the same run with the same libzmq.
//!
//! By default both the server and the floors run in child processes of this binary
//! (`zmq-rpc bench --serve --child`, `zmq-rpc bench --serve-floor`), so the server's
//! memory is its own and client and server do not share a process, as in real use.

mod floor;

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Map, Value};
use zmq_rpc::config::vars;
use zmq_rpc::protocol::{self, Request};
use zmq_rpc::{Error, RpcClient, RpcServer};

use floor::ChildServer;

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Measure a running server at HOST:PORT instead of starting one. It must serve
    /// `add`, `slow_multiply` and `echo` with 4 workers, as `zmq-rpc bench --serve` does.
    #[arg(long, value_name = "HOST:PORT")]
    connect: Option<String>,
    /// With --connect: the server's process id, to report its memory (VmRSS) after W2
    /// and its CPU time per call in W2.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The password of the server (--connect) or of the server to run (--serve).
    #[arg(long, env = vars::PASSWORD, hide_env_values = true, default_value = "bench")]
    password: String,
    /// Run the bench server only (`add`, `slow_multiply`, `echo`) on 127.0.0.1:--port
    /// until SIGINT/SIGTERM, for a `--connect` run.
    #[arg(long)]
    serve: bool,
    /// With --serve: the port (0 picks a free one).
    #[arg(long, default_value_t = 8421)]
    port: u16,
    /// Worker threads of the server the bench starts, and REP workers of the proxy floor.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// The server's retry memory window in ms (0 turns it off), to see what it costs.
    /// Defaults to the library's (60 s).
    #[arg(long)]
    retry_window_ms: Option<u64>,
    /// Repeat everything this many times and report the median of each figure.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Seconds of W2 (and of its floor).
    #[arg(long, default_value_t = 5.0)]
    w2_seconds: f64,
    /// Seconds of W4.
    #[arg(long, default_value_t = 3.0)]
    w4_seconds: f64,
    /// Only these workloads (comma-separated, e.g. `w1,w4`); all by default.
    #[arg(long, value_delimiter = ',', value_parser = ["w1", "w2", "w3", "w4", "w5"])]
    only: Vec<String>,
    /// Skip the floors (their columns stay empty).
    #[arg(long)]
    no_floors: bool,
    /// Print one JSON document (every run and the medians) instead of the table.
    #[arg(long)]
    json: bool,
    /// Internal: with --serve, report the port on stdout and stop when stdin closes.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: serve the floors (see `bench/floor.rs`).
    #[arg(long, hide = true)]
    serve_floor: bool,
}

/// W1: warm-up and measured calls.
const W1_WARMUP: usize = 500;
const W1_CALLS: usize = 5_000;
/// W2: concurrent synchronous clients, each its own connection.
const W2_CLIENTS: usize = 16;
/// W3: concurrent slow calls, then sequential adds.
const W3_SLOW: usize = 3;
const W3_ADDS: usize = 20;
/// W4: requests kept in flight by one client.
const W4_IN_FLIGHT: usize = 64;
/// W5: payload sizes and calls per size.
const W5_SIZES: [(&str, usize, usize); 3] = [
    ("1k", 1024, 2_000),
    ("64k", 64 * 1024, 2_000),
    ("1m", 1024 * 1024, 300),
];
/// Generous: a result that comes later than this is a failure, not a figure.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn run(args: &BenchArgs) -> Result<(), Error> {
    if args.serve_floor {
        return floor::serve(args.workers);
    }
    if args.serve {
        return serve(args);
    }
    if args.runs == 0 || args.workers == 0 {
        return Err(Error::Config(
            "--runs and --workers must be positive".into(),
        ));
    }
    let steps = args.runs * 10;
    let mut progress = Progress::new(steps, std::io::stdout().is_terminal() && !args.json);
    let mut runs = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        runs.push(one_run(args, run, &mut progress)?);
    }
    progress.clear();
    let median = medians(&runs);
    let (major, minor, patch) = zmq::version();
    let machine = json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "libzmq": format!("{major}.{minor}.{patch}"),
        "server": match &args.connect {
            Some(at) => format!("running at {at}"),
            None => format!("child process, {} workers", args.workers),
        },
    });
    if args.json {
        let doc = json!({ "machine": machine, "runs": runs, "median": median });
        println!("{doc:#}");
    } else {
        print_table(&median, args.runs, &machine);
    }
    Ok(())
}

/// The bench server: the seed's `add` and `slow_multiply`, and `echo`; and `add_direct`,
/// the same `add` registered as direct (run on the broker thread).
fn serve(args: &BenchArgs) -> Result<(), Error> {
    let mut server = RpcServer::new(args.password.clone(), "bench")
        .host("127.0.0.1")
        .port(if args.child { 0 } else { args.port })
        .workers(args.workers);
    server.add_external_function(|a: i64, b: i64| a + b, "add");
    server
        .add_external_function(|a: i64, b: i64| a + b, "add_direct")
        .direct(true);
    server.add_external_function(
        |a: i64, b: i64| {
            std::thread::sleep(Duration::from_secs(1));
            a * b
        },
        "slow_multiply",
    );
    server.add_external_function(|s: String| s, "echo");
    if let Some(ms) = args.retry_window_ms {
        server = server.retry_window(Duration::from_millis(ms));
    }
    if !args.child {
        eprintln!(
            "bench server (add, add_direct, slow_multiply, echo) on 127.0.0.1:{}; pid {}",
            args.port,
            std::process::id()
        );
        return server.serve_forever();
    }
    let running = server.start()?;
    println!("READY {}", running.port());
    let _ = std::io::stdout().flush();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    running.shutdown();
    Ok(())
}

/// One pass over the floors and the workloads: every figure by name.
fn one_run(args: &BenchArgs, run: usize, p: &mut Progress) -> Result<BTreeMap<String, f64>, Error> {
    let mut m = BTreeMap::new();
    let add_request = protocol::encode_request(&Request {
        id: Some(Value::String("0123456789abcdef-1".into())),
        password: args.password.clone(),
        function: "add".into(),
        args: vec![json!(5), json!(7)],
        kwargs: Map::new(),
        timeout_ms: Some(5000),
        // As `RpcClient` sends it: the floor moves as many bytes.
        accept_frames: true,
        ack: Vec::new(),
    });

    let on = |w: &str| args.only.is_empty() || args.only.iter().any(|o| o == w);
    let floors = !args.no_floors;
    p.step(run, "floor: raw REQ->REP latency");
    if floors && (on("w1") || on("w2") || on("w5")) {
        let floors =
            ChildServer::start(&["--serve-floor", "--workers", &args.workers.to_string()])?;
        let (rep, proxy) = (floors.ports[0], floors.ports.get(1).copied().unwrap_or(0));
        if on("w1") {
            floor::latency(rep, &add_request, W1_WARMUP, W1_CALLS)?.record("floor_w1", &mut m);
        }
        p.step(run, "floor: raw REQ->REP payload");
        for (name, size, calls) in W5_SIZES.into_iter().filter(|_| on("w5")) {
            m.insert(
                format!("floor_w5_{name}_mb_s"),
                floor::payload(rep, size, calls)?,
            );
        }
        p.step(run, "floor: blind proxy throughput");
        if on("w2") {
            let window = secs(args.w2_seconds);
            floor::throughput(proxy, &add_request, W2_CLIENTS, window, floors.pid())?
                .record("floor_w2", &mut m);
        }
    } else {
        p.step(run, "");
        p.step(run, "");
    }

    p.step(run, "starting the server");
    let child;
    let (endpoint, pid) = match &args.connect {
        Some(at) => (format!("tcp://{at}"), args.server_pid),
        None => {
            let mut child_args = vec![
                "--serve".to_owned(),
                "--child".to_owned(),
                "--password".to_owned(),
                args.password.clone(),
                "--workers".to_owned(),
                args.workers.to_string(),
            ];
            if let Some(ms) = args.retry_window_ms {
                child_args.extend(["--retry-window-ms".to_owned(), ms.to_string()]);
            }
            let child_args: Vec<&str> = child_args.iter().map(String::as_str).collect();
            child = ChildServer::start(&child_args)?;
            (
                format!("tcp://127.0.0.1:{}", child.ports[0]),
                Some(child.pid()),
            )
        }
    };
    let client =
        || RpcClient::with_endpoint(args.password.clone(), &endpoint).timeout(CALL_TIMEOUT);

    if let Some(rss) = pid.and_then(rss_mib) {
        m.insert("server_rss_start_mib".into(), rss);
    }
    p.step(run, "W1 latency");
    if on("w1") {
        w1(&client(), "add")?.record("w1", &mut m);
        // The same calls to `add` registered as direct, where the server has it.
        match w1(&client(), "add_direct") {
            Ok(latency) => latency.record("w1_direct", &mut m),
            Err(Error::Name(_)) => {}
            Err(e) => return Err(e),
        }
    }
    p.step(run, "W2 throughput");
    if on("w2") {
        w2(&client, secs(args.w2_seconds), pid)?.record("w2", &mut m);
        if let Some(rss) = pid.and_then(rss_mib) {
            m.insert("server_rss_mib".into(), rss);
        }
    }
    p.step(run, "W3 head-of-line");
    if on("w3") {
        let (max, p50) = w3(&client)?;
        m.insert("w3_max_ms".into(), max);
        m.insert("w3_p50_ms".into(), p50);
    }
    p.step(run, "W4 pipelined");
    if on("w4") {
        let calls = w4(&client(), secs(args.w4_seconds))?;
        m.insert("w4_calls_per_s".into(), calls);
    }
    p.step(run, "W5 payload");
    let c = client();
    for (name, size, calls) in W5_SIZES.into_iter().filter(|_| on("w5")) {
        m.insert(format!("w5_{name}_mb_s"), w5(&c, size, calls)?);
    }
    if let Some(rss) = pid.and_then(rss_mib) {
        m.insert("server_rss_end_mib".into(), rss);
    }
    p.step(run, "stopping the server");
    Ok(m)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.1))
}

fn check(what: &str, got: i64, want: i64) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Runtime(format!("{what} returned {got}, not {want}")))
    }
}

/// W1: sequential calls of `function`, which adds.
fn w1(client: &RpcClient, function: &str) -> Result<Latency, Error> {
    for _ in 0..W1_WARMUP {
        check("add(5, 7)", client.call(function, (5, 7))?, 12)?;
    }
    let mut samples = Vec::with_capacity(W1_CALLS);
    for _ in 0..W1_CALLS {
        let t = Instant::now();
        let sum: i64 = client.call(function, (5, 7))?;
        samples.push(t.elapsed());
        check("add(5, 7)", sum, 12)?;
    }
    Ok(Latency::of(samples))
}

fn w2(
    client: &(dyn Fn() -> RpcClient + Sync),
    duration: Duration,
    server: Option<u32>,
) -> Result<Throughput, Error> {
    run_clients(W2_CLIENTS, duration, server, |c| {
        let client = client();
        let c = c as i64;
        check("add", client.call("add", (c, 1))?, c + 1)?; // connected before the clock starts
        let mut i = 0i64;
        Ok(move || {
            i += 1;
            check("add", client.call("add", (i, c))?, i + c)
        })
    })
}

/// W3: returns (max, p50) of the adds in milliseconds.
fn w3(client: &(dyn Fn() -> RpcClient + Sync)) -> Result<(f64, f64), Error> {
    let adder = client();
    check("add(5, 7)", adder.call("add", (5, 7))?, 12)?;
    let slow: Vec<RpcClient> = (0..W3_SLOW).map(|_| client()).collect();
    for c in &slow {
        c.ping()?; // connected before the clock starts
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = slow
            .into_iter()
            .map(|c| scope.spawn(move || c.call::<i64>("slow_multiply", (3, 4))))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let mut samples = Vec::with_capacity(W3_ADDS);
        for _ in 0..W3_ADDS {
            let t = Instant::now();
            let sum: i64 = adder.call("add", (5, 7))?;
            samples.push(t.elapsed());
            check("add(5, 7)", sum, 12)?;
        }
        for h in handles {
            let product = h
                .join()
                .map_err(|_| Error::Runtime("a slow call's thread panicked".into()))??;
            check("slow_multiply(3, 4)", product, 12)?;
        }
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok((
            ms(samples[samples.len() - 1]),
            ms(samples[samples.len() / 2]),
        ))
    })
}

/// W4: one client keeps `W4_IN_FLIGHT` calls in flight with `submit`; calls/s.
fn w4(client: &RpcClient, duration: Duration) -> Result<f64, Error> {
    check("add", client.call("add", (1, 1))?, 2)?;
    let mut in_flight = VecDeque::with_capacity(W4_IN_FLIGHT);
    let mut next = 0i64;
    let mut done = 0u64;
    let start = Instant::now();
    loop {
        let running = start.elapsed() < duration;
        while running && in_flight.len() < W4_IN_FLIGHT {
            in_flight.push_back((next, client.submit("add", (next, 1))?));
            next += 1;
        }
        let Some((i, pending)) = in_flight.pop_front() else {
            break;
        };
        check("add", pending.wait_as::<i64>()?, i + 1)?;
        done += 1;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// W5: `echo` of a `size`-byte string, `calls` times; MB/s moved (there and back).
fn w5(client: &RpcClient, size: usize, calls: usize) -> Result<f64, Error> {
    let text = payload_string(size);
    let back: String = client.call("echo", (&text,))?;
    if back != text {
        return Err(Error::Runtime("echo returned something else".into()));
    }
    let t = Instant::now();
    for _ in 0..calls {
        let back: String = client.call("echo", (&text,))?;
        if back != text {
            return Err(Error::Runtime("echo returned something else".into()));
        }
    }
    Ok(mb_per_s(size, calls, t.elapsed()))
}

/// `size` bytes of printable ASCII that JSON carries without escapes.
fn payload_string(size: usize) -> String {
    (0..size)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

fn mb_per_s(size: usize, calls: usize, elapsed: Duration) -> f64 {
    (2 * size * calls) as f64 / elapsed.as_secs_f64() / 1e6
}

/// Runs `clients` threads, each calling what `make` returns (made on its thread, before
/// the common start) for `duration`.
/// `server`: the server's process, whose CPU time over the window is reported per call
/// beside this process's own (the clients').
fn run_clients<F, C>(
    clients: usize,
    duration: Duration,
    server: Option<u32>,
    make: F,
) -> Result<Throughput, Error>
where
    F: Fn(usize) -> Result<C, Error> + Sync,
    C: FnMut() -> Result<(), Error>,
{
    // The clients and this thread: the window starts once every client is connected.
    let barrier = Barrier::new(clients + 1);
    let cpu = || (cpu_time(std::process::id()), server.and_then(cpu_time));
    let mut used = (None, None);
    let results: Vec<Result<(Vec<Duration>, Duration), Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (make, barrier) = (&make, &barrier);
                scope.spawn(move || {
                    let call = make(c);
                    barrier.wait(); // every thread reaches it, even one that failed
                    let mut call = call?;
                    let start = Instant::now();
                    let mut samples = Vec::new();
                    while start.elapsed() < duration {
                        let t = Instant::now();
                        call()?;
                        samples.push(t.elapsed());
                    }
                    Ok((samples, start.elapsed()))
                })
            })
            .collect();
        barrier.wait();
        let before = cpu();
        let results = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Runtime("a client thread panicked".into())))
            })
            .collect();
        let after = cpu();
        let spent = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        used = (spent(before.0, after.0), spent(before.1, after.1));
        results
    });
    let mut all = Vec::new();
    let mut longest = Duration::ZERO;
    for r in results {
        let (samples, took) = r?;
        all.extend(samples);
        longest = longest.max(took);
    }
    let calls = all.len() as f64 / longest.as_secs_f64();
    let per_call = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6 / all.len().max(1) as f64);
    Ok(Throughput {
        calls_per_s: calls,
        client_cpu_us: per_call(used.0),
        server_cpu_us: per_call(used.1),
        p99_us: Latency::of(all).p99,
    })
}

/// Latency figures in µs.
pub(crate) struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    mean: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let at = |q: f64| {
            samples
                .get(((samples.len().max(1) - 1) as f64 * q).round() as usize)
                .map_or(0.0, |d| us(*d))
        };
        let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len().max(1) as f64;
        Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            mean,
        }
    }

    fn record(&self, prefix: &str, m: &mut BTreeMap<String, f64>) {
        for (name, v) in [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p999", self.p999),
            ("mean", self.mean),
        ] {
            m.insert(format!("{prefix}_{name}_us"), v);
        }
    }
}

pub(crate) struct Throughput {
    calls_per_s: f64,
    p99_us: f64,
    /// CPU time (user + system) per call over the window: the clients' process (this
    /// one), and the server's when its process id is known.
    client_cpu_us: Option<f64>,
    server_cpu_us: Option<f64>,
}

impl Throughput {
    fn record(&self, prefix: &str, m: &mut BTreeMap<String, f64>) {
        m.insert(format!("{prefix}_calls_per_s"), self.calls_per_s);
        m.insert(format!("{prefix}_p99_us"), self.p99_us);
        for (key, cpu) in [
            ("client", self.client_cpu_us),
            ("server", self.server_cpu_us),
        ] {
            if let Some(us) = cpu {
                m.insert(format!("{prefix}_{key}_cpu_us"), us);
            }
        }
    }
}

/// The CPU time (user + system) that process `pid` has used so far, its threads'
/// included (those that ended too), from `/proc/<pid>/stat`; in clock ticks there, so
/// to 10 ms on Linux: enough over seconds of W2.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    Some(Duration::from_secs_f64(
        cpu_ticks(&stat)? as f64 / hz.max(1) as f64,
    ))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, counted after the
/// command name's last ')': the name itself may contain spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

/// The server's resident memory, from `/proc/<pid>/status`.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The median of each figure over the runs.
fn medians(runs: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut by_name: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for (k, v) in run {
            by_name.entry(k.clone()).or_default().push(*v);
        }
    }
    by_name
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let mid = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            (k, mid)
        })
        .collect()
}

fn print_table(m: &BTreeMap<String, f64>, runs: usize, machine: &Value) {
    let get = |k: &str| m.get(k).copied();
    let num = |v: Option<f64>| match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    println!(
        "zmq-rpc bench: {} run(s), median of each figure; {} CPUs, libzmq {}; server: {}",
        runs,
        machine["cpus"],
        machine["libzmq"].as_str().unwrap_or("?"),
        machine["server"].as_str().unwrap_or("?"),
    );
    println!();
    println!("| workload | figure | zmq-rpc | floor | ratio | target |");
    println!("|---|---|---:|---:|---:|---|");
    let row = |w: &str, fig: &str, ours: Option<f64>, floor: Option<f64>, r: String, t: &str| {
        println!(
            "| {w} | {fig} | {} | {} | {r} | {t} |",
            num(ours),
            num(floor)
        );
    };
    // W1 (all percentiles), then the direct `add` (p50 and mean), each beside the floor.
    let w1_rows = [
        (
            "W1 latency (floor: raw REQ->REP)",
            "w1",
            "p50 µs",
            "p50",
            "<= 1.3x",
        ),
        (
            "W1 latency (floor: raw REQ->REP)",
            "w1",
            "p90 µs",
            "p90",
            "",
        ),
        (
            "W1 latency (floor: raw REQ->REP)",
            "w1",
            "p99 µs",
            "p99",
            "",
        ),
        (
            "W1 latency (floor: raw REQ->REP)",
            "w1",
            "p99.9 µs",
            "p999",
            "",
        ),
        (
            "W1 latency (floor: raw REQ->REP)",
            "w1",
            "mean µs",
            "mean",
            "",
        ),
        (
            "W1 with `add` registered direct (floor: raw REQ->REP)",
            "w1_direct",
            "p50 µs",
            "p50",
            "",
        ),
        (
            "W1 with `add` registered direct (floor: raw REQ->REP)",
            "w1_direct",
            "mean µs",
            "mean",
            "",
        ),
    ];
    for (workload, prefix, fig, key, target) in w1_rows {
        let (o, f) = (
            get(&format!("{prefix}_{key}_us")),
            get(&format!("floor_w1_{key}_us")),
        );
        row(workload, fig, o, f, ratio(o, f), target);
    }
    let (o, f) = (get("w2_calls_per_s"), get("floor_w2_calls_per_s"));
    row(
        "W2 throughput, 16 clients (floor: blind proxy)",
        "calls/s",
        o,
        f,
        ratio(o, f),
        ">= 1.0x",
    );
    let (o, f) = (get("w2_p99_us"), get("floor_w2_p99_us"));
    row(
        "W2 throughput, 16 clients (floor: blind proxy)",
        "p99 µs",
        o,
        f,
        ratio(o, f),
        "",
    );
    // CPU time per call over W2's window: what each side spends on the same calls,
    // whichever one moves more of them.
    let cpu = |who: &str| {
        (
            get(&format!("w2_{who}_cpu_us")),
            get(&format!("floor_w2_{who}_cpu_us")),
        )
    };
    let sum = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
    let (clients, server) = (cpu("client"), cpu("server"));
    let all = (sum(clients.0, server.0), sum(clients.1, server.1));
    for (fig, (o, f)) in [
        ("clients' CPU µs per call", clients),
        ("server's CPU µs per call", server),
        ("all CPU µs per call", all),
    ] {
        row(
            "W2 throughput, 16 clients (floor: blind proxy)",
            fig,
            o,
            f,
            ratio(o, f),
            "",
        );
    }
    let o = get("w3_max_ms");
    row(
        "W3 head-of-line",
        "max of 20 adds, ms",
        o,
        None,
        "-".into(),
        "< 5 ms",
    );
    row(
        "W3 head-of-line",
        "p50 of 20 adds, ms",
        get("w3_p50_ms"),
        None,
        "-".into(),
        "",
    );
    let (o, w2) = (get("w4_calls_per_s"), get("w2_calls_per_s"));
    row(
        "W4 pipelined, 64 in flight (vs W2)",
        "calls/s",
        o,
        w2,
        ratio(o, w2),
        ">= 3.0x W2",
    );
    for (name, label, target) in [
        ("1k", "1 KiB", ""),
        ("64k", "64 KiB", ""),
        ("1m", "1 MiB", "<= 1.5x"),
    ] {
        let (o, f) = (
            get(&format!("w5_{name}_mb_s")),
            get(&format!("floor_w5_{name}_mb_s")),
        );
        // Slowdown: the floor's rate over ours (time ours / time floor).
        row(
            "W5 echo payload (floor: raw REQ->REP), slowdown",
            &format!("{label} MB/s"),
            o,
            f,
            ratio(f, o),
            target,
        );
    }
    row(
        "Server RSS after W2",
        "MiB",
        get("server_rss_mib"),
        None,
        "-".into(),
        "< 20 MiB",
    );
    for (label, key) in [
        ("Server RSS at start", "server_rss_start_mib"),
        ("Server RSS at the end (after W5)", "server_rss_end_mib"),
    ] {
        row(label, "MiB", get(key), None, "-".into(), "");
    }
}

/// A one-line progress bar, drawn only on a terminal.
struct Progress {
    total: usize,
    done: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize, on: bool) -> Progress {
        Progress { total, done: 0, on }
    }

    fn step(&mut self, run: usize, what: &str) {
        self.done += 1;
        if !self.on {
            return;
        }
        let width = 30;
        let filled = width * self.done.min(self.total) / self.total.max(1);
        print!(
            "\r\x1b[2K[{}{}] run {run}: {what}",
            "#".repeat(filled),
            "-".repeat(width - filled)
        );
        let _ = std::io::stdout().flush();
    }

    fn clear(&self) {
        if self.on {
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        // A name with a space and a ')' of its own; utime 7, stime 5.
        let stat = "4242 (a) b) S 1 4242 4242 0 -1 4194304 120 0 0 0 7 5 0 0 20 0 1 0 99";
        assert_eq!(cpu_ticks(stat), Some(12));
        assert_eq!(cpu_ticks("4242 (short) S 1 2 3"), None);
        assert_eq!(cpu_ticks("no name here"), None);
    }

    #[test]
    fn this_process_has_used_cpu_time() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let used = cpu_time(std::process::id()).expect("/proc/<pid>/stat is readable");
        assert!(used > Duration::ZERO, "{used:?}");
        assert_eq!(cpu_time(u32::MAX), None, "no such process");
    }
}
