"""The rest of what the Rust side offers, reached from Python: ping, introspection,
keyword arguments, retries, CURVE, the standalone broker and remote workers."""

import os
import signal
import threading
import time
import warnings

import pytest

import rpc
import zmq_rpc
from conftest import PASSWORD, free_port


def add(a, b):
    """Addiert zwei Zahlen."""
    return a + b


def greet(name, *, greeting="Hallo"):
    return f"{greeting}, {name}"


def echo(value):
    return value


def test_importable_as_rpc_and_zmq_rpc():
    assert rpc.RPCServer is zmq_rpc.RPCServer
    assert rpc.RPCClient is zmq_rpc.RPCClient
    assert zmq_rpc.RpcClient is zmq_rpc.RPCClient
    assert zmq_rpc.__version__


def test_ping_returns_the_server_name(server):
    _, client = server({"add": add})
    assert client.ping() == "TestServer"


def test_list_functions_shows_docstrings_and_parameters(server):
    srv = zmq_rpc.RPCServer(PASSWORD, "intro", host="127.0.0.1", port=0, workers=2)
    srv.add_external_function(add, "add")
    srv.add_external_function(greet, "greet", description="Greets.", idempotent=True)
    srv.add_external_function(echo)  # alias defaults to the function's name
    with srv.start() as running:
        client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port)
        functions = {f["name"]: f for f in client.list_functions()}
    assert sorted(functions) == ["add", "echo", "greet"]
    assert functions["add"]["description"] == "Addiert zwei Zahlen."
    assert functions["add"]["param_names"] == ["a", "b"]
    assert functions["add"]["idempotent"] is False
    # The local pool counts as one worker per thread, as callers see it: workers=2.
    assert functions["add"]["workers"] == 2
    assert functions["greet"]["description"] == "Greets."
    assert functions["greet"]["param_names"] == ["name", "greeting"]
    assert functions["greet"]["idempotent"] is True


def test_long_strings_travel_as_data_frames_both_ways(server):
    # 16 KiB and more: raw frames after the JSON (docs/protocol.md 4.10), here through
    # Python functions on the server's worker threads.
    running, client = server({"echo": echo, "make": lambda n: "\u00e9" * n})
    text = 'a"b\\c\n\u00e9\U0001F600' * 40_000
    assert client.echo(text) == text
    assert client.echo(text[:100]) == text[:100]
    assert client.make(100_000) == "\u00e9" * 100_000
    # The option that turns them off (RpcClient::data_frames): same answers, as JSON.
    plain = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port, data_frames=False)
    assert plain.echo(text) == text


def test_keyword_arguments_reach_the_function(server):
    _, client = server({"greet": greet, "add": add})
    assert client.greet("Ada") == "Hallo, Ada"
    assert client.greet("Ada", greeting="Moin") == "Moin, Ada"
    assert client.add(b=2, a=40) == 42
    assert client.call("add", 1, b=2) == 3


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**63 - 1, 2**64 - 1, 1.5, "", "ü €", [1, [2, None]],
    {"a": {"b": [True, 1.25]}},
])
def test_json_values_round_trip(server, value):
    _, client = server({"echo": echo})
    assert client.echo(value) == value


def test_tuples_arrive_as_lists_and_keys_as_strings(server):
    _, client = server({"echo": echo})
    assert client.echo((1, 2)) == [1, 2]
    assert client.echo({1: "a", None: "b"}) == {"1": "a", "null": "b"}


def test_dunder_lookups_are_not_remote_calls():
    client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", free_port())
    with pytest.raises(AttributeError):
        client.__deepcopy__
    assert client.add.__name__ == "add"
    assert "add" in repr(client.add)


def test_retries_are_configurable_and_reach_a_late_server():
    # The server starts 300 ms after the first attempt; a client with retries gets
    # through, one without retries and a short timeout does not.
    port = free_port()
    patient = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", port, timeout=4000, retries=5,
                                backoff_base=50, backoff_cap=200, attempt_timeout=200)
    impatient = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", port, timeout=200, retries=0)
    with pytest.raises(TimeoutError):
        impatient.add(1, 2)
    result = []
    t = threading.Thread(target=lambda: result.append(patient.add(20, 22)))
    t.start()
    time.sleep(0.3)
    srv = zmq_rpc.RPCServer(PASSWORD, "late", host="127.0.0.1", port=port)
    srv.add_external_function(add, "add")
    with srv.start():
        t.join(timeout=10)
    assert result == [42]


def test_curve_is_available_in_this_build():
    assert zmq_rpc.LIBZMQ_BUILT_WITH_CURVE
    assert zmq_rpc.curve_available()


def test_curve_encrypted_calls():
    public, secret = zmq_rpc.generate_curve_keypair()
    assert len(public) == 40 and len(secret) == 40 and public != secret
    srv = zmq_rpc.RPCServer(PASSWORD, "secure", host="127.0.0.1", port=0,
                            curve_secret_key=secret)
    srv.add_external_function(add, "add")
    with srv.start() as running:
        client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port,
                                   curve_server_key=public)
        assert client.add(2, 3) == 5
        # Without the key the handshake fails, and the client says so at once.
        plain = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port, timeout=5000)
        started = time.monotonic()
        with pytest.raises(PermissionError, match="CURVE"):
            plain.add(2, 3)
        assert time.monotonic() - started < 1.0


def test_python_worker_joins_a_python_broker():
    broker = zmq_rpc.Broker(PASSWORD, "cluster", host="127.0.0.1", port=0,
                            worker_port=0, warmup=0)
    with broker.start() as b:
        assert b.worker_count() == 0
        worker = zmq_rpc.Worker(PASSWORD, endpoint=b.worker_endpoint, threads=2,
                                name="py-worker")
        worker.add_external_function(add, "add")
        with worker.start():
            deadline = time.monotonic() + 5
            while b.worker_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", b.client_port)
            assert client.add(5, 7) == 12
            assert client.ping() == "cluster"
            assert b.worker_count() == 1


def test_a_server_starts_once():
    srv = zmq_rpc.RPCServer(PASSWORD, "once", host="127.0.0.1", port=0)
    srv.add_external_function(add, "add")
    with srv.start():
        with pytest.raises(RuntimeError, match="already started"):
            srv.start()
        with pytest.raises(RuntimeError, match="already started"):
            srv.add_external_function(add, "other")


def test_signatures_show_the_seeds_parameters():
    import inspect

    server = inspect.signature(zmq_rpc.RPCServer)
    assert list(server.parameters)[:6] == ["password", "server_name", "host", "port",
                                           "timeout", "workers"]
    client = inspect.signature(zmq_rpc.RPCClient)
    assert list(client.parameters)[:3] == ["password", "host", "port"]
    assert client.parameters["host"].default == "localhost"
    assert client.parameters["port"].default == 8421


def test_curve_encrypted_broker_and_worker():
    public, secret = zmq_rpc.generate_curve_keypair()
    broker = zmq_rpc.Broker(PASSWORD, "secure-cluster", host="127.0.0.1", port=0,
                            worker_port=0, curve_secret_key=secret)
    with broker.start() as b:
        worker = zmq_rpc.Worker(PASSWORD, "127.0.0.1", b.worker_port,
                                curve_server_key=public)
        worker.add_external_function(add, "add")
        with worker.start():
            client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", b.client_port,
                                       curve_server_key=public)
            assert client.add(1, 2) == 3  # the broker's warm-up waits for the worker
            assert b.worker_count() == 1


def test_submit_pipelines_calls_and_wait_collects_them_in_any_order(server):
    import time as _time

    def slow_echo(value, delay):
        _time.sleep(delay)
        return value

    _, client = server({"add": add, "slow_echo": slow_echo, "greet": greet}, workers=4)
    pending = [client.submit("add", i, 1) for i in range(64)]
    assert len({p.id for p in pending}) == 64
    # Collected backwards: replies to the others are kept for their own wait().
    assert [p.wait() for p in reversed(pending)] == [i + 1 for i in reversed(range(64))]
    assert pending[0].done() and pending[0].wait() == 1  # waiting again: same result
    assert client.submit("greet", "Ada", greeting="Moin").wait() == "Moin, Ada"

    # Four 0.3 s calls submitted together run at once on four workers.
    started = _time.monotonic()
    slow = [client.submit("slow_echo", i, 0.3) for i in range(4)]
    assert [p.wait() for p in slow] == [0, 1, 2, 3]
    assert _time.monotonic() - started < 1.0

    # Errors arrive through wait(), as the exceptions call() raises.
    missing = client.submit("nope")
    with pytest.raises(NameError):
        missing.wait()
    with pytest.raises(NameError):
        missing.wait()
    with pytest.raises(TypeError):
        client.submit("add", object())  # not JSON: refused before anything is sent
    # Abandoned calls do not disturb later ones; ordinary calls work alongside.
    for i in range(10):
        client.submit("add", i, i)
    assert client.add(2, 3) == 5
    assert client.submit("add", 20, 22).wait() == 42


def test_submitted_call_times_out_after_the_client_timeout(server):
    import time as _time

    def sleepy():
        _time.sleep(1.0)
        return "late"

    running, _ = server({"sleepy": sleepy})
    client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port, timeout=200)
    started = _time.monotonic()
    pending = client.submit("sleepy")
    with pytest.raises(TimeoutError):
        pending.wait()
    assert 0.15 < _time.monotonic() - started < 0.9


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_makes_clients_of_its_own(server):
    """The clients of a process share one ZeroMQ context. A child made by fork must not
    use its parent's (the context's I/O thread does not exist there): its clients get a
    context of their own and work."""
    running, client = server({"add": add})
    assert client.add(1, 2) == 3  # the parent's shared context is in use
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port)
            code = 0 if child.add(2, 3) == 5 else 2
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's call did not finish")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child's call failed"


def _worker_threads_cpu():
    """CPU seconds (user and system) of this process's threads named zmq-rpc-local-*."""
    ticks = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if not f.read().startswith("zmq-rpc-local"):
                    continue
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _cpu_after_a_call(spin_us):
    srv = zmq_rpc.RPCServer(PASSWORD, "wait", host="127.0.0.1", port=0, workers=2,
                            spin_us=spin_us)
    srv.add_external_function(add, "add")
    with srv.start() as running:
        client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port)
        assert client.add(1, 2) == 3
        # The pause the next wait is measured on: 100 ms, so up to 200 ms of waiting.
        time.sleep(0.1)
        before = _worker_threads_cpu()
        assert client.add(2, 2) == 4
        time.sleep(0.4)
        return _worker_threads_cpu() - before


def test_spin_us_bounds_how_long_an_idle_worker_thread_waits_awake():
    # An idle worker thread waits for the next call, yielding its CPU, for twice the
    # last pause (here 100 ms) within the bound; at zero it sleeps at once.
    waited = _cpu_after_a_call(2_000_000)
    slept = _cpu_after_a_call(0)
    assert waited >= 0.06, waited
    assert slept <= 0.03, slept
    with pytest.raises(OverflowError):
        zmq_rpc.RPCServer(PASSWORD, "wait", spin_us=-1)
