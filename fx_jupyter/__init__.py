"""fx-jupyter: federated Function-as-a-Service in Jupyter."""

from fx_endpoint.version import __version__

__all__ = ["__version__"]
