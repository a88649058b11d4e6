//! `zmq-rpc bench` runs end to end with the real binary: its server and floor child
//! processes start and stop, every workload checks its results, and the JSON and the
//! table carry every figure. (Which figures are good enough is the bench's business, not
//! a test's: these runs are short and the machine is shared.)

mod common;

use std::time::Duration;

use common::{run_with_limit, zmq_rpc_command, TempDir};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn bench_json_has_every_figure_with_its_floor() {
    let dir = TempDir::new();
    let mut command = zmq_rpc_command(dir.path());
    command.args([
        "bench",
        "--json",
        "--w2-seconds",
        "0.5",
        "--w4-seconds",
        "0.5",
    ]);
    let out = run_with_limit(command, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(doc["runs"].as_array().map(Vec::len), Some(1));
    let median = &doc["median"];
    let mut keys = vec![
        "w2_calls_per_s",
        "w2_p99_us",
        "floor_w2_calls_per_s",
        "w2_client_cpu_us",
        "w2_server_cpu_us",
        "floor_w2_client_cpu_us",
        "floor_w2_server_cpu_us",
        "w3_max_ms",
        "w3_p50_ms",
        "w4_calls_per_s",
        "server_rss_mib",
        "server_rss_start_mib",
    ];
    let latency: Vec<String> = ["p50", "p90", "p99", "p999", "mean"]
        .iter()
        .flat_map(|q| [format!("w1_{q}_us"), format!("floor_w1_{q}_us")])
        .chain(
            ["1k", "64k", "1m"]
                .iter()
                .flat_map(|s| [format!("w5_{s}_mb_s"), format!("floor_w5_{s}_mb_s")]),
        )
        .collect();
    keys.extend(latency.iter().map(String::as_str));
    for key in keys {
        let v = median[key].as_f64();
        assert!(
            v.is_some_and(|v| v.is_finite() && v > 0.0),
            "{key} = {:?} in {median}",
            median[key]
        );
    }
    assert!(
        median["w3_p50_ms"].as_f64() <= median["w3_max_ms"].as_f64(),
        "p50 above max: {median}"
    );
}

#[test]
fn bench_table_names_the_workloads_and_targets() {
    let dir = TempDir::new();
    let mut command = zmq_rpc_command(dir.path());
    command.args(["bench", "--only", "w3", "--no-floors"]);
    let out = run_with_limit(command, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| workload | figure | zmq-rpc | floor | ratio | target |"),
        "{stdout}"
    );
    let w3 = stdout
        .lines()
        .find(|l| l.starts_with("| W3 head-of-line | max of 20 adds"))
        .unwrap_or_else(|| panic!("no W3 row in {stdout}"));
    let cells: Vec<&str> = w3.split('|').map(str::trim).collect();
    assert!(cells[3].parse::<f64>().is_ok(), "W3 max is a number: {w3}");
    assert!(
        !stdout.contains('\r'),
        "no progress bar when stdout is not a terminal"
    );
}
