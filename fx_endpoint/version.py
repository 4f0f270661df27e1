"""Versions of fx, shared by the endpoint, the service and the SDK."""

__version__ = "0.1.0"

#: Bumped whenever the ZeroMQ wire format or the REST shapes change incompatibly.
PROTOCOL_VERSION = 1
