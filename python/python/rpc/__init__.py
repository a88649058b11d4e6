"""The seed's import name: ``from rpc import RPCServer, RPCClient``.

The same objects as ``zmq_rpc``; see that package.
"""

from zmq_rpc import *  # noqa: F401,F403
from zmq_rpc import __all__, __version__  # noqa: F401
