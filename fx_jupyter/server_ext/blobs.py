"""Large payloads out of line: files of the service's blob directory.

A task argument or result of hundreds of MB must not be a row (SQLite caps blobs at 1 GB, and
every byte would be written twice through its log), nor sit in memory, nor be base64'd into
JSON. It is a file here instead, named by a random ``blob_id``; the store's ``blobs`` table says
whose it is, and ``tasks.payload_blob`` / ``results.data_blob`` refer to it.

Files are written under a temporary name and then renamed, so a name that exists is a
complete payload, before the transaction that refers to it commits; a crash in between leaves
a file no row names, which :meth:`BlobFiles.sweep` removes at the next start.

A file is exactly as durable as the commit that refers to it, no more (``durable``): SQLite
runs with ``synchronous=NORMAL``, whose commits survive the service's process dying but not
the machine (no fsync per commit), and so do bytes whose ``write()`` completed, from the page
cache; fsyncing a 10 MB file and its directory there would add tens of milliseconds to every
large payload for a guarantee its row does not have. PostgreSQL commits are fsync'd (its
default ``fsync``/``synchronous_commit``): with it the file and the rename are fsync'd too, so
a row that survives a power cut never names a file that did not. Reads map the
file (:class:`Blob`): ZeroMQ sends the pages straight from the page cache, and no copy of a
500 MB payload is ever held in the service's memory. The service never opens what is in them
(DESIGN.md invariant 1).

All file work runs in this module's thread pool, never on the event loop (invariant 4).
"""

from __future__ import annotations

import asyncio
import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .records import new_id

T = TypeVar("T")

#: Payloads (results, and uploads) larger than this are stored out of line.
OUT_OF_LINE_BYTES = 1024 * 1024
#: Uploaded data is handed to the disk thread in pieces of about this size.
_WRITE_BATCH = 4 * 1024 * 1024
#: Most bytes one ``write`` call takes. Measured on the 2-core VM the service was tuned on,
#: writing a new 10 MB file took 21-31 ms in writes of 2 MiB or more and 2.5 ms in writes of
#: 1 MiB or less; 1 MiB calls cost nothing measurable where large ones are not slower.
WRITE_PIECE = 1024 * 1024
#: Most buffers one ``writev`` call takes (IOV_MAX on Linux).
_MAX_IOV = 1024
_TEMP_PREFIX = ".tmp-"


class Blob(mmap.mmap):
    """A read-only map of a stored payload: a buffer (``len``, ``memoryview``, a ZeroMQ frame
    with ``copy=False``) that also knows its ``blob_id``."""

    blob_id: str


class BlobFiles:
    """The blob directory and the thread that does its file work.

    ``durable``: fsync each file and the directory before its id is handed out, for a store
    whose commits survive a power cut (see the module docstring).
    """

    def __init__(self, directory: str, threads: int = 2, *, durable: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fx-blobs")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the blob thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        """Wait for file work under way, then stop the threads."""
        self._pool.shutdown(wait=True)

    def path(self, blob_id: str) -> str:
        """Where the payload ``blob_id`` is. Ids are made by :class:`BlobWriter`; one from a
        request is looked up in the store (owner included) before it is used here."""
        return os.path.join(self.directory, blob_id)

    # -- synchronous steps, run in the pool ---------------------------------------------------

    def prepare(self) -> None:
        """Create the directory (private to the service's user)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def sweep(self, known: Callable[[list[str]], set[str]]) -> int:
        """Remove files no ``blobs`` row names (a crash between a write and its commit, or
        between a commit and an unlink), and abandoned temporary files. ``known`` answers
        which of some ids have rows. Call it before the service accepts uploads."""
        names = os.listdir(self.directory)
        doomed = [n for n in names if n.startswith(_TEMP_PREFIX)]
        ids = [n for n in names if not n.startswith(_TEMP_PREFIX)]
        rows = known(ids) if ids else set()
        doomed.extend(n for n in ids if n not in rows)
        for name in doomed:
            _unlink(os.path.join(self.directory, name))
        return len(doomed)

    def write(self, data: Any) -> str:
        """Store a buffer (a received ZeroMQ frame), or a list of them (the parts of one
        payload, in order); returns its new blob id."""
        writer = BlobWriter(self)
        try:
            writer.write_now(data if type(data) is list else [data])
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def open(self, blob_id: str) -> Blob:
        """Map a stored payload (FileNotFoundError when it is gone)."""
        with open(self.path(blob_id), "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ValueError(f"blob {blob_id} is empty")
            blob = Blob(f.fileno(), 0, access=mmap.ACCESS_READ)
        blob.blob_id = blob_id
        return blob

    def read(self, blob_id: str) -> bytes:
        """A stored payload's bytes (for a backlog read: many tasks, few descriptors)."""
        with open(self.path(blob_id), "rb") as f:
            return f.read()

    def remove(self, blob_ids: Iterable[str]) -> None:
        """Delete payload files (already gone is fine)."""
        for blob_id in blob_ids:
            _unlink(self.path(blob_id))


class BlobWriter:
    """One payload being written: a temporary file that becomes ``blob_id`` at :meth:`commit`.

    Uploads arrive in 64 KiB pieces on the event loop; :meth:`add` collects them and hands about
    4 MiB at a time to the blob thread (one ``writev``, no joining copy), so the loop never
    waits for the disk and a slow disk slows the upload (back-pressure), not the server. The
    next 4 MiB are read while the last are written (one write at a time, in order): waiting for
    each write before reading on made a 10 MB upload take the sum of both.
    """

    def __init__(self, files: BlobFiles) -> None:
        self.files = files
        self.blob_id = new_id()
        self.size = 0
        self._temp = os.path.join(files.directory, _TEMP_PREFIX + self.blob_id)
        self._fd: int | None = None
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._busy: asyncio.Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        """Append a piece of an upload; writes out in batches."""
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.size += len(chunk)
        if self._pending_bytes >= _WRITE_BATCH:
            await self._write_pending()

    async def _write_pending(self) -> None:
        """Hand what :meth:`add` collected to the blob thread once the write before it is done;
        returns without waiting for this one."""
        if self._busy is not None:
            await self._busy
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if pending:
            self._busy = asyncio.ensure_future(self.files.run(self.write_now, pending))

    async def flush(self) -> None:
        """Write what :meth:`add` collected, and wait for every write."""
        await self._write_pending()
        if self._busy is not None:
            await self._busy

    async def discard(self) -> None:
        """Drop the upload once a write under way is done (a body cut short, a refusal)."""
        if self._busy is not None:
            await asyncio.wait([self._busy])
        await self.files.run(self.abort)

    def write_now(self, buffers: list[Any]) -> None:
        """Append ``buffers`` to the file (blocking)."""
        if self._fd is None:
            self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        for views in _write_groups(buffers):
            while views:
                written = os.writev(self._fd, views)
                while views and written >= views[0].nbytes:
                    written -= views[0].nbytes
                    views.pop(0)
                if views and written:
                    views[0] = views[0][written:]

    def commit(self) -> str:
        """Give the complete payload its id (blocking), as durably as the store commits (see
        the module docstring); returns the id."""
        if self._fd is None:
            self.write_now([])
        assert self._fd is not None
        durable = self.files.durable
        if durable:
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.rename(self._temp, self.files.path(self.blob_id))
        if durable:
            dir_fd = os.open(self.files.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself survives a power cut
            finally:
                os.close(dir_fd)
        return self.blob_id

    def abort(self) -> None:
        """Drop the partial file (blocking)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._pending = []
        _unlink(self._temp)


def _write_groups(buffers: list[Any]) -> Iterator[list[memoryview]]:
    """``buffers`` as lists of views to ``writev`` in order, each of at most
    :data:`WRITE_PIECE` bytes in all (a larger buffer is cut) and :data:`_MAX_IOV` views."""
    group: list[memoryview] = []
    size = 0
    for buffer in buffers:
        view = memoryview(buffer).cast("B")
        for start in range(0, view.nbytes, WRITE_PIECE):
            piece = view[start : start + WRITE_PIECE]
            if group and (size + piece.nbytes > WRITE_PIECE or len(group) == _MAX_IOV):
                yield group
                group, size = [], 0
            group.append(piece)
            size += piece.nbytes
    if group:
        yield group


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
