"""The security options from Python: CURVE allow-lists for clients and workers, own key
pairs, the worker secret, refusals (`PermissionError`), the `ZMQ_RPC_*` variables, and
the dropped-message counter.

The broker locks an address out after 5 wrong passwords in a row; every broker here is
new per test and no test sends more than one wrong secret to it.
"""

import subprocess
import textwrap
import time

import pytest

import zmq_rpc
from conftest import PASSWORD, answers_ping, clean_env, free_port, wait_until

# A refusal must arrive this fast (the Rust tests assert the same bound).
REFUSAL_BOUND = 1.0


def add(a, b):
    return a + b


def keys_file(path, *publics):
    path.write_text("# admitted keys\n" + "".join(p + "\n" for p in publics))
    return path


def refused_within_bound(call):
    """Runs `call`, which must raise PermissionError within REFUSAL_BOUND seconds."""
    started = time.monotonic()
    with pytest.raises(PermissionError) as raised:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < REFUSAL_BOUND, f"refusal took {elapsed:.3f} s"
    return raised.value


def test_client_allow_list_admits_listed_keys_and_refuses_others_at_once(server, tmp_path):
    server_public, server_secret = zmq_rpc.generate_curve_keypair()
    listed = zmq_rpc.generate_curve_keypair()
    stranger = zmq_rpc.generate_curve_keypair()
    allowed = keys_file(tmp_path / "clients.keys", listed[0])
    # A pathlib.Path works as well as a str.
    running, _ = server({"add": add}, curve_secret_key=server_secret,
                        curve_authorized_keys=allowed)

    def client(keypair=None):
        return zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port, timeout=5000,
                                 curve_server_key=server_public, curve_keypair=keypair)

    assert client(listed).add(5, 7) == 12
    err = refused_within_bound(lambda: client(stranger).add(5, 7))
    assert "refused" in str(err), err
    # Without its own pair, a client has a fresh key that is on no list either.
    refused_within_bound(lambda: client().add(5, 7))
    # The list is read again when it changes: adding the stranger admits it.
    keys_file(allowed, listed[0], stranger[0])
    assert client(stranger).add(1, 2) == 3
    assert client(listed).add(2, 2) == 4
    assert running.dropped_messages() == 0


def test_bad_security_settings_fail_at_start(tmp_path):
    _, secret = zmq_rpc.generate_curve_keypair()
    keys = keys_file(tmp_path / "k", zmq_rpc.generate_curve_keypair()[0])
    # An allow-list without CURVE would admit everyone: refused at start.
    srv = zmq_rpc.RPCServer(PASSWORD, "s", host="127.0.0.1", port=0,
                            curve_authorized_keys=str(keys))
    with pytest.raises(ValueError):
        srv.start()
    srv = zmq_rpc.RPCServer(PASSWORD, "s", host="127.0.0.1", port=0,
                            curve_secret_key=secret,
                            curve_authorized_keys=str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        srv.start()
    broker = zmq_rpc.Broker(PASSWORD, "b", port=0, worker_port=0, host="127.0.0.1",
                            curve_worker_authorized_keys=str(keys))
    with pytest.raises(ValueError):
        broker.start()
    client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", free_port(),
                               curve_server_key=secret, curve_keypair=("short", "pair"))
    with pytest.raises(ValueError):
        client.ping()


def test_worker_allow_list_on_a_python_broker(tmp_path):
    broker_public, broker_secret = zmq_rpc.generate_curve_keypair()
    member = zmq_rpc.generate_curve_keypair()
    rogue = zmq_rpc.generate_curve_keypair()
    workers = keys_file(tmp_path / "workers.keys", member[0])
    broker = zmq_rpc.Broker(PASSWORD, "curved", host="127.0.0.1", port=0, worker_port=0,
                            warmup=0, curve_secret_key=broker_secret,
                            curve_worker_authorized_keys=str(workers))
    with broker.start() as running:
        def worker(keypair, answer):
            w = zmq_rpc.Worker(PASSWORD, "127.0.0.1", running.worker_port, threads=1,
                               curve_server_key=broker_public, curve_keypair=keypair)
            w.add_external_function(lambda a, b: answer, "add")
            return w.start()

        good = worker(member, "member")
        client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.client_port, timeout=5000,
                                   curve_server_key=broker_public)
        wait_until(lambda: running.worker_count() == 1, timeout=5, what="the member worker")
        assert client.add(1, 2) == "member"

        started = time.monotonic()
        bad = worker(rogue, "rogue")
        with pytest.raises(PermissionError):
            bad.wait(timeout=int(REFUSAL_BOUND * 1000))
        assert time.monotonic() - started < REFUSAL_BOUND
        assert bad.is_finished()
        assert isinstance(bad.refusal(), PermissionError)
        # wait() again reports the same refusal; the member was never affected.
        with pytest.raises(PermissionError):
            bad.wait(timeout=100)
        assert good.refusal() is None
        assert running.worker_count() == 1
        assert [client.add(i, i) for i in range(10)] == ["member"] * 10
        good.shutdown()
        assert running.dropped_messages() == 0


def test_rogue_python_worker_without_the_worker_secret_is_refused_by_a_rust_broker(
        procs, rust_bin):
    port, worker_port = free_port(), free_port()
    secret = "nur-fuer-worker"
    broker = procs.start(
        [str(rust_bin["zmq-rpc"]), "broker", "--host", "127.0.0.1", "--port", str(port),
         "--worker-port", str(worker_port), "--password", PASSWORD, "--warmup", "0",
         "--worker-secret", secret],
        env=clean_env())
    # The Rust example worker serves `add` with the worker secret from the environment.
    procs.start([str(rust_bin["worker"])],
                env=clean_env(ZMQ_RPC_HOST="127.0.0.1", ZMQ_RPC_WORKER_PORT=worker_port,
                              ZMQ_RPC_PASSWORD=PASSWORD, ZMQ_RPC_WORKER_SECRET=secret))
    client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", port, timeout=5000)

    def add_served():
        try:
            return client.add(5, 7) == 12
        except NameError:
            return False

    wait_until(lambda: broker.poll() is not None or add_served(), timeout=30,
               what="the Rust worker to serve add")
    assert broker.poll() is None, broker.stderr.read()

    # The rogue knows the client password, not the worker secret. If it were admitted it
    # would get some of the `add` calls (and answer them wrongly) and serve `stolen`.
    rogue = zmq_rpc.Worker(PASSWORD, "127.0.0.1", worker_port, threads=1)
    rogue.add_external_function(lambda a, b: -1, "add")
    rogue.add_external_function(lambda: "stolen", "stolen")
    started = time.monotonic()
    handle = rogue.start()
    with pytest.raises(PermissionError) as refused:
        handle.wait(timeout=int(REFUSAL_BOUND * 1000))
    assert time.monotonic() - started < REFUSAL_BOUND
    assert "password" in str(refused.value) or "secret" in str(refused.value), refused.value
    assert [client.add(i, 1) for i in range(20)] == [i + 1 for i in range(20)]
    with pytest.raises(NameError):
        client.stolen()

    # run() (the blocking form) raises the refusal too, instead of serving forever.
    second = zmq_rpc.Worker(PASSWORD, "127.0.0.1", worker_port, threads=1, worker_secret="guess")
    second.add_external_function(lambda a, b: -1, "add")
    started = time.monotonic()
    with pytest.raises(PermissionError):
        second.run()
    assert time.monotonic() - started < REFUSAL_BOUND + 0.5

    # With the secret, a Python worker joins and serves next to the Rust one.
    member = zmq_rpc.Worker(PASSWORD, "127.0.0.1", worker_port, threads=1,
                            worker_secret=secret)
    member.add_external_function(lambda: "python", "only_python")
    with member.start() as joined:
        wait_until(lambda: _answers(client, "only_python") == "python", timeout=5,
                   what="the Python worker with the secret to serve")
        assert joined.refusal() is None
        assert client.add(2, 3) == 5
    assert broker.poll() is None


def _answers(client, name):
    try:
        return client.call(name)
    except NameError:
        return None


def test_worker_secret_on_a_python_server():
    srv = zmq_rpc.RPCServer(PASSWORD, "s", host="127.0.0.1", port=0, workers=1,
                            worker_port=0, worker_secret="w-secret")
    srv.add_external_function(add, "add")
    with srv.start() as running:
        client = zmq_rpc.RPCClient(PASSWORD, "127.0.0.1", running.port, timeout=5000)
        outsider = zmq_rpc.Worker(PASSWORD, "127.0.0.1", running.worker_port, threads=1)
        outsider.add_external_function(lambda: "outsider", "remote_only")
        with pytest.raises(PermissionError):
            outsider.start().wait(timeout=int(REFUSAL_BOUND * 1000))
        insider = zmq_rpc.Worker("not the password", "127.0.0.1", running.worker_port,
                                 threads=1, worker_secret="w-secret")
        insider.add_external_function(lambda: "insider", "remote_only")
        with insider.start():
            wait_until(lambda: _answers(client, "remote_only") == "insider", timeout=5,
                       what="the worker with the secret to serve")
        assert client.add(2, 2) == 4
        assert running.dropped_messages() == 0


def test_dropped_messages_counts_malformed_worker_messages():
    zmq = pytest.importorskip("zmq")
    broker = zmq_rpc.Broker(PASSWORD, "b", host="127.0.0.1", port=0, worker_port=0,
                            warmup=0)
    with broker.start() as running:
        assert running.dropped_messages() == 0
        ctx = zmq.Context()
        try:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://127.0.0.1:{running.worker_port}")
            sock.send_multipart([b"ZRPC-W1", b"FLY"])
            wait_until(lambda: running.dropped_messages() == 1, timeout=5,
                       what="the unknown command to be counted")
            sock.send_multipart([b"ZRPC-W1", b"READY", b"{"])
            wait_until(lambda: running.dropped_messages() == 2, timeout=5,
                       what="the malformed READY to be counted")
            sock.close()
        finally:
            ctx.term()
        assert answers_ping(running.client_port)


# The environment variables, in fresh interpreters so that nothing leaks between tests:
# the server reads its key, both allow-lists and the worker secret from ZMQ_RPC_*, the
# client and the worker their own key pairs and the server key.
SERVER = textwrap.dedent("""
    import sys, zmq_rpc
    srv = zmq_rpc.RPCServer("geheim", "env-server", workers=1)
    srv.add_external_function(lambda a, b: a + b, "add")
    running = srv.start()
    print(running.port, running.worker_port, flush=True)
    sys.stdin.read()
    running.shutdown()
""")
CLIENT = textwrap.dedent("""
    import zmq_rpc
    c = zmq_rpc.RPCClient("geheim", "127.0.0.1", PORT)
    try:
        print(c.add(20, 22), c.call("from_worker"))
    except PermissionError as e:
        print("PermissionError", e)
""")
WORKER = textwrap.dedent("""
    import zmq_rpc
    w = zmq_rpc.Worker("geheim", "127.0.0.1", PORT, threads=1)
    w.add_external_function(lambda: "worker", "from_worker")
    try:
        w.run()
    except PermissionError as e:
        print("PermissionError", e, flush=True)
""")


def test_environment_variables_configure_every_security_option(procs, tmp_path):
    server_public, server_secret = zmq_rpc.generate_curve_keypair()
    client_keys = zmq_rpc.generate_curve_keypair()
    worker_keys = zmq_rpc.generate_curve_keypair()
    stranger = zmq_rpc.generate_curve_keypair()
    clients = keys_file(tmp_path / "clients.keys", client_keys[0])
    # A `.env` line, here quoted, is valid in allow-lists too.
    workers = tmp_path / "workers.keys"
    workers.write_text(f"ZMQ_RPC_CURVE_PUBLIC_KEY='{worker_keys[0]}'\n")
    server = procs.python(
        "-c", SERVER, stdin=subprocess.PIPE, cwd=tmp_path,
        env=clean_env(ZMQ_RPC_HOST="127.0.0.1", ZMQ_RPC_PORT=0, ZMQ_RPC_WORKER_PORT=0,
                      ZMQ_RPC_CURVE_SECRET_KEY=server_secret,
                      ZMQ_RPC_CURVE_AUTHORIZED_KEYS=clients,
                      ZMQ_RPC_CURVE_WORKER_AUTHORIZED_KEYS=workers,
                      ZMQ_RPC_WORKER_SECRET="env-worker-secret"))
    line = server.stdout.readline()
    assert line, server.stderr.read()
    port, worker_port = (int(v) for v in line.split())

    def run(script, port, **env):
        return procs.python("-c", script.replace("PORT", str(port)), cwd=tmp_path,
                            env=clean_env(ZMQ_RPC_CURVE_SERVER_KEY=server_public, **env))

    def output(proc):
        out, err = proc.communicate(timeout=30)
        return out.strip() + err.strip()[-2000:]

    def worker_env(pair, secret):
        return dict(ZMQ_RPC_CURVE_PUBLIC_KEY=pair[0], ZMQ_RPC_CURVE_SECRET_KEY=pair[1],
                    ZMQ_RPC_WORKER_SECRET=secret)

    # A listed worker key with the right secret joins; the client with its listed key
    # reaches both the server's own function and the worker's.
    member = run(WORKER, worker_port, **worker_env(worker_keys, "env-worker-secret"))
    deadline = time.monotonic() + 20
    while True:
        result = output(run(CLIENT, port, ZMQ_RPC_CURVE_PUBLIC_KEY=client_keys[0],
                            ZMQ_RPC_CURVE_SECRET_KEY=client_keys[1]))
        if result == "42 worker" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result == "42 worker"
    assert member.poll() is None

    # A client key not on the list, and a worker key not on the list, are refused.
    assert output(run(CLIENT, port, ZMQ_RPC_CURVE_PUBLIC_KEY=stranger[0],
                      ZMQ_RPC_CURVE_SECRET_KEY=stranger[1])).startswith("PermissionError")
    assert output(run(WORKER, worker_port, **worker_env(stranger, "env-worker-secret"))
                  ).startswith("PermissionError")
    # A listed worker key with the wrong secret (here the client password) is refused.
    assert output(run(WORKER, worker_port, **worker_env(worker_keys, PASSWORD))
                  ).startswith("PermissionError")
    assert member.poll() is None and server.poll() is None
    # Closing its stdin stops the server cleanly.
    _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err[-2000:]
