"""W1 and W2 with the Python client: what Python users gain from the Rust core.

    python python/bench/bench.py [--runs 3] [--seconds 5] [--clients 16] [--interleave]

Needs the package (pip install ./python) and pyzmq (for the baseline). Three targets,
each in its own server process on 127.0.0.1:

- ``pyzmq-baseline``: a pure-pyzmq implementation of the seed's design, written for this
  benchmark only from the seed's description (ROUTER-DEALER broker via zmq.proxy, four
  REP worker threads, a REQ client, JSON messages, password check). It is NOT the
  project's code; it is what the seed would have been.
- ``rust-server``: the zmq_rpc Python client against the Rust server
  (``examples/server``, release build: the seed's ``add`` in Rust, four workers).
- ``python-server``: the zmq_rpc Python client against ``zmq_rpc.RPCServer`` serving the
  seed's ``add`` written in Python (four Rust worker threads taking the GIL per call).

Workloads:

- W1: one client, sequential ``add(5, 7)``: 500 warm-up calls, then 5,000 measured;
  p50/p90/p99/p99.9/mean in microseconds.
- W2: 16 synchronous clients, each in its own process (so the client side is not
  limited by one GIL), calling ``add`` for 5 s; total calls/s and p99.

Each figure is the median of ``--runs`` runs.
"""

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "geheim"
W1_WARMUP, W1_CALLS = 500, 5000


# ---------------------------------------------------------------------------------------
# The baseline: the seed's design in pure pyzmq (written for this benchmark only).
# ---------------------------------------------------------------------------------------

class BaselineServer:
    """The seed's RPCServer as pyzmq code: ROUTER (clients) - proxy - DEALER (inproc)
    - REP worker threads."""

    def __init__(self, password, server_name, host="localhost", port=8421, timeout=5000,
                 workers=4):
        import zmq

        self.zmq = zmq
        self.password, self.server_name = password, server_name
        self.address = f"tcp://{host}:{port}"
        self.timeout, self.workers = timeout, workers
        self.functions = {}
        self.ctx = zmq.Context.instance()

    def add_external_function(self, func, alias):
        self.functions[alias] = func

    def _worker(self):
        sock = self.ctx.socket(self.zmq.REP)
        sock.connect("inproc://workers")
        while True:
            try:
                request = sock.recv_json()
            except ValueError:
                sock.send_json({"error": {"type": "ProtocolError", "message": "not JSON"}})
                continue
            if request.get("password") != self.password:
                reply = {"error": {"type": "PermissionError", "message": "wrong password"}}
            elif request.get("function") == "ping":
                reply = {"result": self.server_name}
            elif request.get("function") not in self.functions:
                reply = {"error": {"type": "NameError",
                                   "message": f"no function {request.get('function')!r}"}}
            else:
                try:
                    result = self.functions[request["function"]](
                        *request.get("args", []), **request.get("kwargs", {}))
                    reply = {"result": result}
                except Exception as e:  # the seed: RuntimeError with the message
                    reply = {"error": {"type": "RuntimeError", "message": str(e)}}
            sock.send_json(reply)

    def serve_forever(self):
        frontend = self.ctx.socket(self.zmq.ROUTER)
        frontend.bind(self.address)
        backend = self.ctx.socket(self.zmq.DEALER)
        backend.bind("inproc://workers")
        for _ in range(self.workers):
            threading.Thread(target=self._worker, daemon=True).start()
        self.zmq.proxy(frontend, backend)


class BaselineClient:
    """The seed's RPCClient as pyzmq code: a REQ socket, JSON, __getattr__ proxies."""

    def __init__(self, password, host="localhost", port=8421, timeout=5000):
        import zmq

        self.zmq = zmq
        self.password, self.timeout = password, timeout
        self.address = f"tcp://{host}:{port}"
        self.ctx = zmq.Context.instance()
        self._connect()

    def _connect(self):
        self.sock = self.ctx.socket(self.zmq.REQ)
        self.sock.setsockopt(self.zmq.LINGER, 0)
        self.sock.setsockopt(self.zmq.RCVTIMEO, self.timeout)
        self.sock.connect(self.address)

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.sock.send_json({"password": self.password, "function": name,
                                 "args": list(args), "kwargs": kwargs})
            try:
                reply = self.sock.recv_json()
            except self.zmq.Again:
                self.sock.close()
                self._connect()  # a REQ socket cannot send again without a reply
                raise TimeoutError(f"no reply within {self.timeout} ms")
            if "error" in reply:
                kind = {"PermissionError": PermissionError, "NameError": NameError,
                        "TimeoutError": TimeoutError}.get(reply["error"]["type"],
                                                          RuntimeError)
                raise kind(reply["error"]["message"])
            return reply["result"]
        return call


def add(a, b):
    """Addiert zwei Zahlen."""
    return a + b


def serve_baseline(port):
    server = BaselineServer(PASSWORD, "baseline", host="127.0.0.1", port=port, workers=4)
    server.add_external_function(add, "add")
    server.serve_forever()


def serve_python(port):
    import zmq_rpc

    server = zmq_rpc.RPCServer(PASSWORD, "python", host="127.0.0.1", port=port, workers=4)
    server.add_external_function(add, "add")
    server.serve_forever()


# ---------------------------------------------------------------------------------------
# The measurement.
# ---------------------------------------------------------------------------------------

def make_client(target, port):
    if target == "pyzmq-baseline":
        return BaselineClient(PASSWORD, "127.0.0.1", port)
    import zmq_rpc

    return zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", port)


def percentile(sorted_values, q):
    index = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def w1(target, port):
    client = make_client(target, port)
    for _ in range(W1_WARMUP):
        assert client.add(5, 7) == 12
    clock = time.perf_counter_ns
    latencies = []
    for _ in range(W1_CALLS):
        t0 = clock()
        client.add(5, 7)
        latencies.append((clock() - t0) / 1000)
    latencies.sort()
    return {"p50": percentile(latencies, 0.50), "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99), "p99.9": percentile(latencies, 0.999),
            "mean": statistics.fmean(latencies)}


def w2_client(target, port, start_at, seconds, out):
    client = make_client(target, port)
    for _ in range(20):
        client.add(5, 7)
    while time.time() < start_at:
        time.sleep(0.001)
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    latencies = []
    while True:
        t0 = clock()
        if t0 >= end:
            break
        client.add(5, 7)
        latencies.append((clock() - t0) / 1000)
    out.put(latencies)


def w2(target, port, clients, seconds):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # time for the spawned processes to import and warm up
    procs = [ctx.Process(target=w2_client, args=(target, port, start_at, seconds, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    latencies = []
    for _ in procs:
        latencies.extend(out.get(timeout=seconds + 60))
    for p in procs:
        p.join(timeout=30)
    latencies.sort()
    return {"calls/s": len(latencies) / seconds, "p99": percentile(latencies, 0.99)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(target, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQ_RPC_")}
    if target == "rust-server":
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "server"],
                       cwd=REPO, check=True, timeout=1800)
        binary = REPO / "target" / "release" / "examples" / "server"
        env.update(ZMQ_RPC_HOST="127.0.0.1", ZMQ_RPC_PORT=str(port), RUST_LOG="warn")
        args = [str(binary)]
    else:
        mode = "--serve-baseline" if target == "pyzmq-baseline" else "--serve-python"
        args = [sys.executable, __file__, mode, str(port)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    client = make_client(target, port)
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.add(1, 1) == 2:
                return proc
        except TimeoutError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"{target} did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--targets", default="pyzmq-baseline,rust-server,python-server")
    parser.add_argument("--json", help="also write all runs to this file")
    parser.add_argument("--interleave", action="store_true",
                        help="run the targets in rounds (one run of each per round, the "
                             "order rotating) instead of all runs of one target in a row, "
                             "so that load from other processes hits every target alike")
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-python", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        return serve_baseline(args.serve_baseline)
    if args.serve_python:
        return serve_python(args.serve_python)

    targets = args.targets.split(",")
    if args.interleave:
        schedule = [(targets[(run + i) % len(targets)], run)
                    for run in range(args.runs) for i in range(len(targets))]
    else:
        schedule = [(target, run) for target in targets for run in range(args.runs)]
    results = {target: [] for target in targets}
    for target, run in schedule:
        port = free_port()
        server = start_server(target, port)
        try:
            results[target].append({"w1": w1(target, port),
                                    "w2": w2(target, port, args.clients, args.seconds)})
        finally:
            server.kill()
            server.wait(timeout=30)
        print(f"{target} run {run + 1}: {json.dumps(results[target][-1])}", file=sys.stderr)

    def median(target, workload, key):
        return statistics.median(r[workload][key] for r in results[target])

    print(f"W1: one client, {W1_CALLS} sequential add(5, 7) after {W1_WARMUP} warm-up "
          f"(µs, median of {args.runs} runs)\n")
    print("| target | p50 | p90 | p99 | p99.9 | mean |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in results:
        cells = " | ".join(f"{median(target, 'w1', k):.0f}"
                           for k in ("p50", "p90", "p99", "p99.9", "mean"))
        print(f"| {target} | {cells} |")
    print(f"\nW2: {args.clients} client processes, add(5, 7) for {args.seconds:g} s "
          f"(median of {args.runs} runs)\n")
    print("| target | calls/s | p99 (µs) |")
    print("|---|---:|---:|")
    for target in results:
        print(f"| {target} | {median(target, 'w2', 'calls/s'):.0f} | "
              f"{median(target, 'w2', 'p99'):.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
