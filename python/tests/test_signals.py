"""serve_forever() releases the GIL and stops cleanly on Ctrl-C (and SIGTERM)."""

import signal
import textwrap
import time

import pytest

from conftest import answers_ping, clean_env, free_port, wait_until

SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from rpc import RPCServer

    def slow(x):
        time.sleep(0.5)
        return x

    server = RPCServer("geheim", "sig", host="127.0.0.1", port=int(sys.argv[1]))
    server.add_external_function(slow, "slow")
    # A Python thread that needs the GIL while serve_forever waits.
    ticks = []
    threading.Thread(target=lambda: [ticks.append(time.sleep(0.01)) for _ in range(20)],
                     daemon=True).start()
    server.serve_forever()
    print("stopped cleanly", len(ticks), flush=True)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_forever_returns_on_a_signal(procs, tmp_path, sig):
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    port = free_port()
    proc = procs.python(str(script), str(port), env=clean_env())
    wait_until(lambda: proc.poll() is not None or answers_ping(port),
               what="the server to answer ping")
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.3)  # the ticking thread finishes (it needs the GIL)
    started = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.strip() == "stopped cleanly 20", (out, err)
    assert "Traceback" not in err
    assert time.monotonic() - started < 5


EXIT_SCRIPT = textwrap.dedent("""
    import threading, time
    import zmq_rpc

    def slow(x):
        time.sleep(0.3)
        return x

    server = zmq_rpc.RPCServer("geheim", "exit", host="127.0.0.1", port=0, workers=2,
                               shutdown_grace=2000)
    server.add_external_function(slow, "slow")
    running = server.start()
    client = zmq_rpc.RPCClient("geheim", "127.0.0.1", running.port)
    assert client.slow(1) == 1
    # A call still running on a worker thread when the interpreter exits.
    threading.Thread(target=lambda: zmq_rpc.RPCClient(
        "geheim", "127.0.0.1", running.port).slow(2), daemon=True).start()
    time.sleep(0.1)
    print("leaving without shutdown", flush=True)
""")


def test_the_interpreter_exits_cleanly_with_a_server_still_running(procs, tmp_path):
    # Whatever still runs is stopped at exit (atexit, or the handle being dropped)
    # before the interpreter is gone: no hang, no crash, no panic from a worker thread.
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    proc = procs.python(str(script), env=clean_env())
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.strip() == "leaving without shutdown"
    assert "Traceback" not in err and "panicked" not in err, err
