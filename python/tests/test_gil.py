"""Python functions run on the Rust worker pool: the GIL is taken per call and released
while waiting."""

import threading
import time

import zmq_rpc
from conftest import PASSWORD


def nap(seconds):
    time.sleep(seconds)
    return seconds


def test_four_sleeps_on_four_workers_take_about_one_second(server):
    running, _ = server({"nap": nap}, workers=4)
    results = []

    def call():
        client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port)
        results.append(client.nap(1))

    threads = [threading.Thread(target=call) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    elapsed = time.monotonic() - started
    assert results == [1, 1, 1, 1]
    assert 0.9 < elapsed < 1.8, elapsed


def test_one_worker_runs_the_sleeps_one_after_another(server):
    # The control: the parallelism above comes from the workers, not from the clients.
    running, _ = server({"nap": nap}, workers=1)

    def call():
        zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port).nap(0.4)

    threads = [threading.Thread(target=call) for _ in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert time.monotonic() - started >= 1.15


def test_python_threads_run_while_a_call_waits(server):
    # A client call releases the GIL while it waits: a counting thread keeps counting.
    _, client = server({"nap": nap})
    count = 0
    stop = threading.Event()

    def counter():
        nonlocal count
        while not stop.is_set():
            count += 1

    t = threading.Thread(target=counter)
    t.start()
    before = count
    client.nap(0.3)
    during = count - before
    stop.set()
    t.join(timeout=5)
    assert during > 1000, during


def test_one_client_shared_by_threads_takes_turns_safely(server):
    # A client owns one socket; threads sharing it take turns (and get their own answers).
    _, client = server({"echo": lambda x: x})
    results = {}

    def call(n):
        results[n] = [client.echo([n, i]) for i in range(50)]

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert results == {n: [[n, i] for i in range(50)] for n in range(4)}
