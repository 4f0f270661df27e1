"""Registered functions, with an in-memory cache of their payloads.

A function's payload never changes once stored (its id is derived from its bytes per owner), so
the cache needs no invalidation: it is bounded by total bytes and evicts the least recently used.
It spares the store a read on every submission (visibility check) and every ``tasks`` message
(each message carries the function payloads its tasks use).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from .records import FunctionRecord
from .store import TaskStore


class FunctionRegistry:
    """Function records by id, read through a byte-bounded LRU cache."""

    def __init__(self, store: TaskStore, cache_bytes: int) -> None:
        self.store = store
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, FunctionRecord] = OrderedDict()
        self._cached_bytes = 0

    async def register(
        self,
        owner: str,
        name: str,
        payload: bytes,
        source: str | None,
        python_version: str | None,
        description: str,
        public: bool,
    ) -> str:
        """Store the function (same owner + same bytes → same id) and return its id."""
        function_id = await self.store.register_function(
            owner, name, payload, source, python_version, description, public
        )
        self._evict(function_id)  # its metadata may have changed
        return function_id

    async def visible(self, owner: str, function_ids: Iterable[str]) -> dict[str, FunctionRecord]:
        """The functions among ``function_ids`` that ``owner`` may run: theirs or public."""
        found = await self.with_payloads(function_ids)
        return {fid: f for fid, f in found.items() if f.owner == owner or f.public}

    async def with_payloads(self, function_ids: Iterable[str]) -> dict[str, FunctionRecord]:
        """Records with payloads of the known functions among ``function_ids``."""
        found: dict[str, FunctionRecord] = {}
        missing = []
        for fid in dict.fromkeys(function_ids):
            record = self._cache.get(fid)
            if record is None:
                missing.append(fid)
            else:
                self._cache.move_to_end(fid)
                found[fid] = record
        if missing:
            for fid, record in (await self.store.get_functions(missing, with_payload=True)).items():
                found[fid] = record
                self._insert(record)
        return found

    def cached_payloads(self, function_ids: Iterable[str]) -> dict[str, bytes] | None:
        """Payloads straight from the cache, or None if any is missing (the caller then reads)."""
        out: dict[str, bytes] = {}
        for fid in function_ids:
            record = self._cache.get(fid)
            if record is None or record.payload is None:
                return None
            out[fid] = record.payload
        return out

    async def get(self, owner: str, function_id: str) -> FunctionRecord | None:
        """A function ``owner`` may see (theirs or public), without its payload."""
        found = await self.store.get_functions([function_id])
        record = found.get(function_id)
        if record is None or not (record.owner == owner or record.public):
            return None
        return record

    def _insert(self, record: FunctionRecord) -> None:
        size = len(record.payload or b"")
        if size > self.cache_bytes:
            return
        self._evict(record.function_id)
        self._cache[record.function_id] = record
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= len(old.payload or b"")

    def _evict(self, function_id: str) -> None:
        old = self._cache.pop(function_id, None)
        if old is not None:
            self._cached_bytes -= len(old.payload or b"")
