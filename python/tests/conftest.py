"""Shared helpers: in-process servers on ephemeral ports, the project's Rust binaries,
and subprocesses that are always killed.

Every test talks to real ZeroMQ sockets on 127.0.0.1; every wait is bounded.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zmq_rpc

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "geheim"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls `predicate` until it is true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def answers_ping(port, password=PASSWORD, host="127.0.0.1"):
    """Whether a server answers `ping` on `port` within 300 ms."""
    client = zmq_rpc.RPCClient(password, host, port, timeout=300, retries=0)
    try:
        client.ping()
        return True
    except (TimeoutError, ConnectionError):
        return False


@pytest.fixture
def server():
    """Starts an in-process RPCServer on an ephemeral port with the given functions;
    returns (running, client). Everything stops at the end of the test."""
    started = []

    def start(functions, workers=4, **options):
        srv = zmq_rpc.RPCServer(PASSWORD, "TestServer", host="127.0.0.1", port=0,
                                workers=workers, **options)
        for alias, func in functions.items():
            srv.add_external_function(func, alias)
        running = srv.start()
        started.append(running)
        return running, zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port)

    yield start
    for running in started:
        running.shutdown()


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Processes:
    """Subprocesses of one test; all are killed (and reaped) when the test ends."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kwargs):
        # A test runner started in the background (nohup, `cmd &` in a script) ignores
        # SIGINT, and children inherit that: Python then never sees Ctrl-C, and the
        # tests that send SIGINT would wait in vain. Give the child the default, as a
        # program started from a terminal has.
        kwargs.setdefault("preexec_fn", _default_sigint)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(args, **kwargs)
        self.procs.append(proc)
        return proc

    def python(self, *args, **kwargs):
        return self.start([sys.executable, *args], **kwargs)

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def procs():
    p = Processes()
    yield p
    p.close()


def clean_env(**extra):
    """The environment without ZMQ_RPC_* settings that could redirect a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQ_RPC_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="session")
def rust_bin():
    """Paths of the project's Rust binaries (`zmq-rpc`, and the `server` and `worker`
    examples), built with cargo if needed (a no-op after `cargo test`)."""
    subprocess.run(
        ["cargo", "build", "--quiet", "--bin", "zmq-rpc", "--example", "server",
         "--example", "worker"],
        cwd=REPO, check=True, timeout=900,
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO, check=True, timeout=120, capture_output=True, text=True,
    )
    target = Path(json.loads(meta.stdout)["target_directory"]) / "debug"
    return {
        "zmq-rpc": target / "zmq-rpc",
        "server": target / "examples" / "server",
        "worker": target / "examples" / "worker",
    }
