#!/usr/bin/env python3
"""A zmq-rpc client written from docs/protocol.md alone, with pyzmq.

It talks to a running server and checks what the spec promises: results, the error
types, malformed input, the built-ins, deadlines, retries by id. It prints one
"ok NAME: ..." line per check and "spec client: N checks passed" at the end, and
exits 1 at the first failed check.

The server it expects (tests/spec_client_python.rs starts it): name "spec-py",
password "geheim", functions add(a, b), div(a, b) and next() (a counter).

Usage: python3 tests/spec_client/client.py PORT [HOST]
"""

import json
import os
import sys

import zmq

PASSWORD = "geheim"
SERVER_NAME = "spec-py"
REPLY_TIMEOUT_MS = 5000
VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vectors")


class RemoteError(Exception):
    """An error reply (spec 4.3): `type` is one of the types of spec 4.4."""

    def __init__(self, error):
        super().__init__("%s: %s" % (error["type"], error["message"]))
        self.type = error["type"]
        self.message = error["message"]
        self.retry_after_ms = error.get("retry_after_ms")


class NoReply(Exception):
    """No reply within the client's own timeout (never sent by the server)."""


def canonical(value):
    """The canonical JSON form of spec 9.2 (for values without floats)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


class Client:
    """A REQ client (spec 4.1) that opens a new socket after a lost reply."""

    def __init__(self, endpoint, password):
        self.endpoint = endpoint
        self.password = password
        self.context = zmq.Context.instance()
        self.socket = None
        # Ids unique among all clients for the retry window (spec 4.8).
        self.prefix = os.urandom(8).hex()
        self.counter = 0

    def new_id(self):
        self.counter += 1
        return "%s-%d" % (self.prefix, self.counter)

    def close(self):
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def exchange(self, frames, timeout_ms=REPLY_TIMEOUT_MS):
        """Sends `frames` (bytes) and returns the parsed reply object."""
        if self.socket is None:
            self.socket = self.context.socket(zmq.REQ)
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.connect(self.endpoint)
        self.socket.send_multipart(frames)
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            # A REQ socket that got no reply cannot send again: start afresh.
            self.close()
            raise NoReply("no reply within %d ms" % timeout_ms)
        reply_frames = self.socket.recv_multipart()
        if len(reply_frames) != 1:
            raise AssertionError("expected one reply frame, got %r" % reply_frames)
        reply = json.loads(reply_frames[0].decode("utf-8"))
        if not isinstance(reply, dict) or "id" not in reply:
            raise AssertionError("not a reply: %r" % reply)
        if ("result" in reply) == ("error" in reply):
            raise AssertionError("a reply has exactly one of result and error: %r" % reply)
        if "error" in reply:
            error = reply["error"]
            if not isinstance(error.get("type"), str) or not isinstance(error.get("message"), str):
                raise AssertionError("malformed error: %r" % reply)
        return reply

    def request(self, function, args=None, kwargs=None, id=None, password=None, timeout_ms=None):
        """Builds a request (spec 4.2), sends it, returns the reply object."""
        body = {"password": self.password if password is None else password, "function": function}
        if id is not None:
            body["id"] = id
        if args is not None:
            body["args"] = list(args)
        if kwargs:
            body["kwargs"] = kwargs
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        return self.exchange([json.dumps(body).encode("utf-8")])

    def call(self, function, *args, **kwargs):
        """Calls `function` and returns its result, or raises RemoteError."""
        id = self.new_id()
        reply = self.request(function, args, kwargs, id=id, timeout_ms=REPLY_TIMEOUT_MS)
        if reply["id"] != id:
            raise AssertionError("reply for id %r, expected %r" % (reply["id"], id))
        if "error" in reply:
            raise RemoteError(reply["error"])
        return reply["result"]


def expect(condition, what):
    if not condition:
        raise AssertionError(what)


def expect_error(reply, kind, id):
    expect("error" in reply, "expected %s, got %r" % (kind, reply))
    expect(reply["error"]["type"] == kind, "expected %s, got %r" % (kind, reply))
    expect(reply["id"] == id, "expected id %r, got %r" % (id, reply))
    return reply["error"]["message"]


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    endpoint = "tcp://%s:%d" % (host, port)
    client = Client(endpoint, PASSWORD)
    checks = []

    def check(name):
        def register(fn):
            checks.append((name, fn))
            return fn
        return register

    @check("ping")
    def _():
        name = client.call("ping")
        expect(name == SERVER_NAME, "ping returned %r" % name)
        return name

    @check("add")
    def _():
        result = client.call("add", 5, 7)
        expect(result == 12, "add(5, 7) returned %r" % result)
        return result

    @check("kwargs")
    def _():
        result = client.call("add", 5, b=7)
        expect(result == 12, "add(5, b=7) returned %r" % result)
        return result

    @check("no id")
    def _():
        reply = client.request("add", [1, 2])
        expect(reply == {"id": None, "result": 3}, "got %r" % reply)
        return reply["result"]

    @check("list_functions")
    def _():
        functions = client.call("list_functions")
        names = [f["name"] for f in functions]
        expect(names == sorted(names) and {"add", "div", "next"} <= set(names), "names %r" % names)
        add = functions[names.index("add")]
        expect(add["params"] == 2 and add["param_names"] == ["a", "b"], "add: %r" % add)
        expect(add["workers"] >= 1 and isinstance(add["idempotent"], bool), "add: %r" % add)
        expect(isinstance(add["description"], str), "add: %r" % add)
        return ",".join(names)

    @check("NameError")
    def _():
        return expect_error(client.request("sub", [5, 7], id=41), "NameError", 41)

    @check("PermissionError")
    def _():
        reply = client.request("add", [5, 7], id=42, password="falsch")
        return expect_error(reply, "PermissionError", 42)

    @check("ProtocolError not JSON")
    def _():
        return expect_error(client.exchange([b"add(5, 7)"]), "ProtocolError", None)

    @check("ProtocolError missing password")
    def _():
        frame = json.dumps({"id": 43, "function": "add", "args": [5, 7]}).encode()
        return expect_error(client.exchange([frame]), "ProtocolError", 43)

    @check("ProtocolError extra frame")
    def _():
        frame = json.dumps({"id": 44, "password": PASSWORD, "function": "add"}).encode()
        return expect_error(client.exchange([frame, b"extra"]), "ProtocolError", None)

    @check("TypeError")
    def _():
        return expect_error(client.request("add", [1, 2, 3], id=45), "TypeError", 45)

    @check("RuntimeError")
    def _():
        try:
            client.call("div", 1, 0)
        except RemoteError as e:
            expect(e.type == "RuntimeError" and e.message == "division by zero", str(e))
            return e.message
        raise AssertionError("div(1, 0) did not fail")

    @check("TimeoutError")
    def _():
        reply = client.request("add", [5, 7], id=46, timeout_ms=0)
        return expect_error(reply, "TimeoutError", 46)

    @check("retry")
    def _():
        id = client.new_id()
        first = client.request("next", id=id)
        client.close()  # a retry goes out on a new socket
        again = client.request("next", id=id)
        expect(again == first, "a retry got %r, the first %r" % (again, first))
        fresh = client.call("next")
        expect(fresh == first["result"] + 1, "a new id got %r after %r" % (fresh, first))
        return "%s then %s" % (first["result"], fresh)

    @check("DEALER")
    def _():
        dealer = client.context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoint)
        try:
            body = {"id": 47, "password": PASSWORD, "function": "add", "args": [20, 22]}
            dealer.send_multipart([b"", json.dumps(body).encode()])
            expect(dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN), "no reply on the DEALER")
            frames = dealer.recv_multipart()
            expect(len(frames) == 2 and frames[0] == b"", "frames %r" % frames)
            reply = json.loads(frames[1])
            expect(reply == {"id": 47, "result": 42}, "reply %r" % reply)
            return reply["result"]
        finally:
            dealer.close(linger=0)

    @check("canonical vectors")
    def _():
        names = ["request_add", "reply_result", "reply_error_overload", "reply_list_functions"]
        for name in names:
            with open(os.path.join(VECTORS, "client", name + ".json"), encoding="utf-8") as f:
                vector = json.load(f)
            frame = vector["frames"][0]
            expect(canonical(json.loads(frame)) == frame, "%s is not canonical" % name)
        return len(names)

    for name, fn in checks:
        try:
            detail = fn()
        except Exception as e:  # any failure ends the run with its name
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            client.close()
            return 1
        print("ok %s: %s" % (name, detail))
    client.close()
    print("spec client: %d checks passed" % len(checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
