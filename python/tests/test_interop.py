"""Interop with the Rust side, as separate processes: a Python client calling a Rust
server, the Rust client (`zmq-rpc call`) calling Python functions, a Python worker
serving a Rust broker (`zmq-rpc broker`), and a Rust worker serving a Python broker."""

import json
import re
import subprocess
import time

import zmq_rpc
from conftest import PASSWORD, answers_ping, clean_env, free_port, wait_until


def mul(a, b):
    """Multipliziert."""
    return a * b


def fails():
    raise KeyError("x")


def test_python_client_calls_a_rust_server(procs, rust_bin):
    port = free_port()
    env = clean_env(ZMQ_RPC_HOST="127.0.0.1", ZMQ_RPC_PORT=port)
    server = procs.start([str(rust_bin["server"])], env=env)
    wait_until(lambda: server.poll() is not None or answers_ping(port),
               what="the Rust server to answer ping")
    client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", port)
    assert client.add(5, 7) == 12
    assert client.mul(3, 4) == 12
    assert client.ping() == "Rechner1"
    assert {f["name"] for f in client.list_functions()} >= {"add", "mul"}
    try:
        client.nope()
        raise AssertionError("no error")
    except NameError:
        pass
    # Typed Rust functions: a string where an integer belongs is a TypeError.
    try:
        client.add("x", 1)
        raise AssertionError("no error")
    except TypeError:
        pass


def test_rust_client_calls_python_functions(server, rust_bin):
    running, _ = server({"mul": mul, "fails": fails})
    env = clean_env()

    def cli(*args):
        return subprocess.run(
            [str(rust_bin["zmq-rpc"]), "call", "--host", "127.0.0.1", "--port",
             str(running.port), "--password", PASSWORD, *args],
            env=env, capture_output=True, text=True, timeout=30,
        )

    ok = cli("mul", "6", "7")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == 42
    kw = cli("mul", "--kw", "a=2", "--kw", "b=5")
    assert kw.returncode == 0, kw.stderr
    assert json.loads(kw.stdout) == 10
    failed = cli("fails")
    assert failed.returncode == 1  # RuntimeError's exit code
    assert "RuntimeError: KeyError: 'x'" in failed.stderr
    missing = cli("nope")
    assert missing.returncode == 4  # NameError's exit code
    listed = subprocess.run(
        [str(rust_bin["zmq-rpc"]), "list", "--host", "127.0.0.1", "--port",
         str(running.port), "--password", PASSWORD],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    assert "Multipliziert." in listed.stdout


def start_rust_broker(procs, rust_bin):
    port, worker_port = free_port(), free_port()
    broker = procs.start(
        [str(rust_bin["zmq-rpc"]), "broker", "--host", "127.0.0.1", "--port", str(port),
         "--worker-port", str(worker_port), "--password", PASSWORD, "--name", "rust-broker"],
        env=clean_env(),
    )
    line = broker.stdout.readline()
    assert re.match(r"broker listening: clients tcp://127\.0\.0\.1:\d+ workers", line), line
    return broker, port, worker_port


def test_python_worker_serves_a_rust_broker(procs, rust_bin):
    broker, port, worker_port = start_rust_broker(procs, rust_bin)
    worker = zmq_rpc.Worker(PASSWORD, "127.0.0.1", worker_port, threads=2)
    worker.add_external_function(mul, "mul")
    with worker.start():
        client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", port)
        assert client.ping() == "rust-broker"
        assert client.mul(6, 7) == 42  # the broker's warm-up waits for the worker
        result = subprocess.run(
            [str(rust_bin["zmq-rpc"]), "call", "--host", "127.0.0.1", "--port", str(port),
             "--password", PASSWORD, "mul", "3", "4"],
            env=clean_env(), capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == 12
    assert broker.poll() is None


def test_rust_worker_serves_a_python_broker(procs, rust_bin):
    broker = zmq_rpc.Broker(PASSWORD, "py-broker", host="127.0.0.1", port=0,
                            worker_port=0)
    with broker.start() as b:
        worker = procs.start([str(rust_bin["worker"])],
                             env=clean_env(ZMQ_RPC_HOST="127.0.0.1",
                                           ZMQ_RPC_WORKER_PORT=b.worker_port,
                                           ZMQ_RPC_PASSWORD=PASSWORD))
        wait_until(lambda: worker.poll() is not None or b.worker_count() == 1,
                   what="the Rust worker to register")
        client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", b.client_port)
        assert client.add(5, 7) == 12
        started = time.monotonic()
        assert client.mul(3, 4) == 12  # the seed's slow_multiply, in Rust
        assert time.monotonic() - started >= 0.9
