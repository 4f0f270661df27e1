"""fx endpoint: the daemon that runs fx tasks on a compute resource.

This package must import without Jupyter (it runs on cluster nodes); the service and the SDK
import its wire protocol and serialization helpers.
"""

from .version import PROTOCOL_VERSION, __version__

__all__ = ["PROTOCOL_VERSION", "__version__"]
