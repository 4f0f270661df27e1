"""Whether this SDK and a service can work together, decided once from ``GET version``.

DESIGN.md: an incompatible pair fails at once with a message naming both versions, never later
as a confusing task error. The service tells its wire protocol number and the oldest SDK it
serves; the SDK needs the same protocol and to be at least that old.
"""

from __future__ import annotations

from typing import Any

from packaging.version import InvalidVersion, Version

from fx_endpoint.version import PROTOCOL_VERSION, __version__

from .errors import FxError, VersionMismatch

#: The REST API generation this SDK speaks (``{"api": "v2"}`` in ``GET version``).
API = "v2"


def check_service_version(doc: Any, service_url: str) -> dict[str, Any]:
    """Return the service's version document, or raise :class:`VersionMismatch`.

    Raises :class:`FxError` when ``doc`` is not a version document at all (something other
    than the fx service answered).
    """
    if not isinstance(doc, dict) or "api" not in doc:
        raise FxError(
            f"{service_url}version did not answer with an fx version document; is "
            f"{service_url} really an fx service?"
        )
    service_version = str(doc.get("fx_version", "unknown"))
    protocol = doc.get("protocol")
    reasons = []
    if doc.get("api") != API:
        reasons.append(f"the service speaks API {doc.get('api')!r}, this SDK {API!r}")
    if protocol != PROTOCOL_VERSION:
        reasons.append(f"wire protocol {protocol} differs from the SDK's {PROTOCOL_VERSION}")
    min_sdk = doc.get("min_sdk_version")
    if min_sdk and _older(__version__, str(min_sdk)):
        reasons.append(f"the service needs an SDK of version {min_sdk} or newer")
    if reasons:
        raise VersionMismatch(
            f"fx SDK {__version__} (protocol {PROTOCOL_VERSION}) cannot work with the fx service "
            f"{service_version} (protocol {protocol}) at {service_url}: {'; '.join(reasons)}. "
            f"Install the same fx-jupyter version in this kernel's environment and in the "
            f"Jupyter server's.",
            sdk_version=__version__,
            service_version=service_version,
        )
    return doc


def _older(mine: str, minimum: str) -> bool:
    try:
        return Version(mine) < Version(minimum)
    except InvalidVersion:
        return mine != minimum
