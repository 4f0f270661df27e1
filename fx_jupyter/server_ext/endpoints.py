"""The registry of endpoints: who owns which endpoint, by id, by name and by Curve key.

The store is the source of truth; this in-memory mirror (one row per endpoint, loaded at start,
updated after each committed change) answers the lookups that happen on every request and on
every ZeroMQ message — owner checks, name resolution, the ZAP authenticator's "is this key
registered?" — without a database round trip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .records import Change, EndpointRecord
from .store import TaskStore

#: Endpoint names are directory names on the endpoint host (``~/.fx/endpoints/NAME``).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class EndpointRegistry:
    """Endpoints by id, by ``(owner, name)`` and by public key."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._by_id: dict[str, EndpointRecord] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._by_key: dict[str, str] = {}

    async def load(self) -> None:
        """Fill the mirror from the store."""
        for record in await self.store.load_endpoints():
            self._add(record)

    def _add(self, record: EndpointRecord) -> None:
        self._by_id[record.endpoint_id] = record
        self._by_name[(record.owner, record.name)] = record.endpoint_id
        self._by_key[record.public_key] = record.endpoint_id

    def _remove(self, record: EndpointRecord) -> None:
        self._by_id.pop(record.endpoint_id, None)
        self._by_name.pop((record.owner, record.name), None)
        if self._by_key.get(record.public_key) == record.endpoint_id:
            del self._by_key[record.public_key]

    # -- lookups ------------------------------------------------------------------------------

    def get(self, endpoint_id: str) -> EndpointRecord | None:
        """Any owner's endpoint by id (for the broker; REST handlers use :meth:`resolve`)."""
        return self._by_id.get(endpoint_id)

    def resolve(self, owner: str, ref: str) -> EndpointRecord | None:
        """The owner's endpoint named by id or by name; None for unknown and for other users'."""
        record = self._by_id.get(ref)
        if record is not None and record.owner == owner:
            return record
        endpoint_id = self._by_name.get((owner, ref))
        return self._by_id.get(endpoint_id) if endpoint_id else None

    def by_key(self, public_key: str) -> EndpointRecord | None:
        """The endpoint a Curve public key (z85) is registered for."""
        endpoint_id = self._by_key.get(public_key)
        return self._by_id.get(endpoint_id) if endpoint_id else None

    def owned(self, owner: str) -> list[EndpointRecord]:
        """The owner's endpoints, by name."""
        return sorted((r for r in self._by_id.values() if r.owner == owner), key=lambda r: r.name)

    def all(self) -> Iterable[EndpointRecord]:
        """Every endpoint."""
        return self._by_id.values()

    # -- changes ------------------------------------------------------------------------------

    async def register(
        self, owner: str, name: str, public_key: str, display_name: str | None
    ) -> tuple[EndpointRecord, str | None]:
        """Create or re-key the owner's endpoint ``name``; returns it and the replaced key."""
        record, replaced = await self.store.register_endpoint(owner, name, public_key, display_name)
        old = self._by_id.get(record.endpoint_id)
        if old is not None:
            self._remove(old)
        self._add(record)
        return record, replaced

    async def delete(self, record: EndpointRecord) -> list[Change]:
        """Forget the endpoint (its key stops authenticating at once); returns cancelled tasks."""
        cancelled = await self.store.delete_endpoint(record.endpoint_id)
        self._remove(record)
        return cancelled
