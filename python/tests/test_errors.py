"""Errors reach Python as the seed says: TimeoutError, RuntimeError with the server's
message, NameError, PermissionError; plus arguments that do not fit."""

import math
import time

import pytest

import zmq_rpc
from conftest import PASSWORD, free_port


def add(a, b):
    return a + b


def fails(x):
    raise ValueError(f"bad value {x}")


def sleeps(seconds):
    time.sleep(seconds)
    return seconds


def not_json():
    return {1, 2, 3}


def test_unknown_function_is_a_name_error(server):
    _, client = server({"add": add})
    with pytest.raises(NameError, match="no function named 'nope'"):
        client.nope(1)


def test_wrong_password_is_a_permission_error(server):
    running, _ = server({"add": add})
    intruder = zmq_rpc.RPCClient("falsch", "127.0.0.1", running.port)
    with pytest.raises(PermissionError):
        intruder.add(1, 2)


def test_exception_in_the_function_is_a_runtime_error_with_its_message(server):
    _, client = server({"fails": fails})
    with pytest.raises(RuntimeError) as caught:
        client.fails(7)
    assert str(caught.value) == "ValueError: bad value 7"
    assert type(caught.value) is RuntimeError


def test_a_result_that_is_not_json_is_a_runtime_error(server):
    _, client = server({"not_json": not_json})
    with pytest.raises(RuntimeError, match="cannot be encoded as JSON.*set"):
        client.not_json()


def test_server_timeout_is_a_timeout_error(server):
    _, client = server({"sleeps": sleeps}, timeout=300)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.sleeps(2)
    assert time.monotonic() - started < 1.9


def test_no_server_is_a_timeout_error_after_the_client_timeout():
    client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", free_port(), timeout=400)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.add(1, 2)
    assert 0.35 < time.monotonic() - started < 3


def test_the_seed_errors_are_caught_by_the_builtin_classes(server):
    running, client = server({"add": add, "fails": fails})
    intruder = zmq_rpc.RPCClient("falsch", "127.0.0.1", running.port)
    caught = []
    for call, kind in [(lambda: client.nope(), NameError),
                       (lambda: intruder.add(1, 2), PermissionError),
                       (lambda: client.fails(1), RuntimeError)]:
        try:
            call()
        except kind as e:
            caught.append(type(e))
    assert caught == [NameError, PermissionError, RuntimeError]


@pytest.mark.parametrize("args, kwargs", [
    ((1, 2, 3), {}),        # too many
    ((1,), {}),             # too few
    ((1,), {"c": 2}),       # unknown keyword
    ((1,), {"a": 2}),       # twice
])
def test_arguments_that_do_not_fit_are_type_errors(server, args, kwargs):
    _, client = server({"add": add})
    with pytest.raises(TypeError):
        client.add(*args, **kwargs)


def test_a_type_error_inside_the_function_is_a_runtime_error(server):
    _, client = server({"add": add})
    # The arguments bind; `1 + "x"` fails inside add: the function's error.
    with pytest.raises(RuntimeError, match="TypeError: unsupported operand"):
        client.add(1, "x")


@pytest.mark.parametrize("value, kind", [
    (object(), TypeError),
    (math.nan, ValueError),
    (2**70, ValueError),
    ({(1, 2): 3}, TypeError),
])
def test_arguments_json_cannot_carry_fail_before_sending(server, value, kind):
    _, client = server({"add": add})
    with pytest.raises(kind):
        client.add(value, 1)


def test_a_full_queue_is_an_overload_error(server):
    running, _ = server({"sleeps": sleeps}, workers=1, queue_limit=1)
    import threading

    errors = []

    def call():
        c = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port, retries=0)
        try:
            c.sleeps(0.5)
        except zmq_rpc.OverloadError as e:
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert errors, "four calls on one worker with a queue of one: some must be refused"
    assert isinstance(errors[0], RuntimeError)
    assert errors[0].retry_after >= 0


def hold(text, seconds):
    time.sleep(seconds)
    return len(text)


def test_a_queue_full_in_bytes_is_an_overload_error(server):
    # Each request carries 1 MiB, and the server holds at most 1.5 MiB of requests
    # for unanswered calls: the first finds the idle worker and runs; the other two
    # would wait, and with the first's 1 MiB held neither fits.
    running, _ = server({"hold": hold}, workers=1, queue_bytes=3 * 2**20 // 2)
    import threading

    results, errors = [], []

    def call():
        c = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port, retries=0)
        try:
            results.append(c.hold("h" * 2**20, 0.5))
        except zmq_rpc.OverloadError as e:
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=10)
    assert results == [2**20]
    assert len(errors) == 2, errors
    assert all("bytes of requests held" in str(e) for e in errors)


def test_a_taken_port_is_a_transport_error(server):
    running, _ = server({"add": add})
    second = zmq_rpc.RPCServer(PASSWORD, "second", host="127.0.0.1", port=running.port)
    second.add_external_function(add, "add")
    with pytest.raises(zmq_rpc.TransportError) as caught:
        second.start()
    assert isinstance(caught.value, ConnectionError)


def test_invalid_configuration_is_a_value_error():
    srv = zmq_rpc.RPCServer(PASSWORD, "bad", host="127.0.0.1", port=0)
    srv.add_external_function(add, "ping")  # a reserved name
    with pytest.raises(ValueError, match="reserved"):
        srv.start()
