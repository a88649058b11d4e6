"""The seed's server.py and client.py, as written in the seed, run against each other."""

import signal
import socket
import time
from pathlib import Path

import pytest

from conftest import REPO, answers_ping, clean_env, wait_until

SEED_DIR = Path(__file__).parent / "seed"


def seed_documents():
    # In CI the steering folder shared/ lies beside the clone; locally under /work.
    for folder in (REPO.parent / "shared" / "seed", Path("/work/shared/seed")):
        if folder.is_dir():
            return sorted(folder.glob("*.txt"))
    return []


def test_the_copies_are_the_seeds_files_byte_for_byte():
    docs = seed_documents()
    if not docs:
        pytest.skip("the seed document is not beside this checkout")
    import importlib.util

    spec = importlib.util.spec_from_file_location("extract", SEED_DIR / "extract.py")
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    text = docs[0].read_text(encoding="utf-8")
    for name in ("server.py", "client.py"):
        assert (SEED_DIR / name).read_bytes() == extract.extract(text, name).encode(), name


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_seed_client_against_seed_server(procs):
    # The seed's files fix localhost:8421; nothing else may be using it.
    assert port_is_free(8421), "port 8421 is taken; the seed's server needs it"
    env = clean_env(PYTHONDONTWRITEBYTECODE=1)
    server = procs.python("server.py", cwd=SEED_DIR, env=env)
    wait_until(lambda: server.poll() is not None or answers_ping(8421, host="localhost"),
               what="the seed server to answer ping")
    assert server.poll() is None, server.communicate()

    started = time.monotonic()
    client = procs.python("client.py", cwd=SEED_DIR, env=env)
    out, err = client.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert client.returncode == 0, err
    # What the seed's client.py prints: two lines, results of add(5, 7) and mul(3, 4).
    assert out.splitlines() == ["5 + 7 = 12", "3 * 4 = 12"], (out, err)
    assert err == ""
    # mul is slow_multiply: it sleeps 1 s on the server.
    assert elapsed >= 1.0

    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert out.splitlines() == ["Starte RPC-Server auf tcp://localhost:8421 …"]
    assert "Traceback" not in err
