"""zmq-rpc: remote procedure calls over ZeroMQ, on a Rust core.

The seed's API::

    from zmq_rpc import RPCServer, RPCClient   # or: from rpc import ...

    server = RPCServer(password="geheim", server_name="Rechner1", port=8421)
    server.add_external_function(add, "add")
    server.serve_forever()                      # until Ctrl-C

    client = RPCClient(password="geheim", host="localhost", port=8421)
    client.add(5, 7)                            # 12

Errors are Python's own ``TimeoutError``, ``RuntimeError`` (the server's message),
``NameError`` and ``PermissionError``, plus ``TypeError`` for arguments that do not fit
and the classes below for the rarer kinds. See README.md beside this package.
"""

import atexit as _atexit

from zmq_rpc._native import (
    LIBZMQ_BUILT_WITH_CURVE,
    Broker,
    OverloadError,
    Pending,
    ProtocolError,
    RemoteMethod,
    RPCClient,
    RPCServer,
    RunningBroker,
    RunningServer,
    RunningWorker,
    TransportError,
    UnavailableError,
    Worker,
    __version__,
    curve_available,
    generate_curve_keypair,
)
from zmq_rpc._native import _shutdown_all

# The Rust crate's spelling of the two seed classes.
RpcServer = RPCServer
RpcClient = RPCClient

# Worker threads must not outlive the interpreter: stop whatever still runs first.
_atexit.register(_shutdown_all)

__all__ = [
    "Broker",
    "LIBZMQ_BUILT_WITH_CURVE",
    "OverloadError",
    "Pending",
    "ProtocolError",
    "RPCClient",
    "RPCServer",
    "RemoteMethod",
    "RpcClient",
    "RpcServer",
    "RunningBroker",
    "RunningServer",
    "RunningWorker",
    "TransportError",
    "UnavailableError",
    "Worker",
    "__version__",
    "curve_available",
    "generate_curve_keypair",
]
