"""The single writer thread: group commit, per-operation isolation, orderly stop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fx_jupyter.server_ext.schema import create_engine
from fx_jupyter.server_ext.writer import GroupCommitWriter, WriterStopped

from .conftest import register_endpoint, register_function, submit

LOG = logging.getLogger("test-writer")
table = sa.Table("t", sa.MetaData(), sa.Column("n", sa.Integer, primary_key=True))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}", writer=True)
    table.metadata.create_all(engine)
    yield engine
    engine.dispose()


def insert(n: int):
    return lambda conn: conn.execute(table.insert().values(n=n)).rowcount


def rows(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(table.c.n)).scalars())


async def test_writes_queued_together_commit_in_one_transaction(engine):
    writer = GroupCommitWriter(engine, LOG)
    writer.start()
    gate = threading.Event()
    try:
        blocker = writer.submit(lambda conn: gate.wait(10))  # holds the thread while we queue
        futures = [writer.submit(insert(n)) for n in range(200)]
        gate.set()
        assert await asyncio.gather(*futures) == [1] * 200
        assert await blocker is True
        assert writer.operations == 201 and writer.transactions <= 2
    finally:
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
    assert rows(engine) == list(range(200))


async def test_a_failing_operation_rolls_back_alone(engine):
    writer = GroupCommitWriter(engine, LOG)
    writer.start()
    gate = threading.Event()

    def half_then_fail(conn: sa.Connection) -> None:
        conn.execute(table.insert().values(n=2))
        raise ValueError("boom")

    try:
        blocker = writer.submit(lambda conn: gate.wait(10))
        first, bad, last = (
            writer.submit(insert(1)),
            writer.submit(half_then_fail),
            writer.submit(insert(3)),
        )
        gate.set()
        await blocker
        assert await first == 1 and await last == 1
        with pytest.raises(ValueError, match="boom"):
            await bad
    finally:
        await asyncio.get_running_loop().run_in_executor(None, writer.stop)
    assert rows(engine) == [1, 3]


async def test_stop_applies_what_is_queued_then_refuses(engine):
    writer = GroupCommitWriter(engine, LOG)
    writer.start()
    futures = [writer.submit(insert(n)) for n in range(10)]
    await asyncio.get_running_loop().run_in_executor(None, writer.stop)
    assert await asyncio.gather(*futures) == [1] * 10
    with pytest.raises(WriterStopped):
        await writer.submit(insert(99))
    assert rows(engine) == list(range(10))


async def test_concurrent_submissions_are_grouped(api, fx_service):
    fid = await register_function(api)
    await register_endpoint(api, "laptop")
    before = fx_service.store.writer.transactions
    results = await asyncio.gather(*(submit(api, "laptop", fid, n=10) for _ in range(20)))
    assert len({t for ids in results for t in ids}) == 200
    assert fx_service.store.writer.transactions - before < 20
