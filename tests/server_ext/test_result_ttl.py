"""The result time-to-live: finished tasks and their results are purged, unfinished ones kept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from traitlets import TraitError

from fx_jupyter.server_ext.app import FxService

from .conftest import Api, register_endpoint, register_function, submit, wait_for


async def _cancelled_and_pending(api: Api) -> tuple[str, str]:
    """One task ended (cancelled by the user) and one still waiting for its endpoint."""
    endpoint = await register_endpoint(api)
    function_id = await register_function(api)
    done, pending = await submit(api, endpoint.endpoint_id, function_id, n=2)
    status, body = await api("DELETE", f"tasks/{done}")
    assert status == 200, body
    return done, pending


class TestShortTtl:
    @pytest.fixture
    def fx_config(self) -> dict[str, Any]:
        return {"result_ttl": 0.5}

    async def test_finished_tasks_are_purged_and_unfinished_kept(self, api: Api) -> None:
        done, pending = await _cancelled_and_pending(api)

        async def purged() -> bool:
            return (await api("GET", f"tasks/{done}"))[0] == 404

        await wait_for(purged, timeout=5.0)
        status, body = await api("GET", f"tasks/{pending}")
        assert status == 200, body
        assert body["status"] == "waiting-for-ep"
        status, stats = await api("GET", "stats")
        assert stats["store"]["result_ttl"] == 0.5
        assert stats["store"]["purged_results"] == 1


class TestTtlDisabled:
    @pytest.fixture
    def fx_config(self) -> dict[str, Any]:
        return {"result_ttl": 0}

    async def test_nothing_is_purged(self, api: Api) -> None:
        done, _pending = await _cancelled_and_pending(api)
        await asyncio.sleep(1.5)  # longer than the shortest purge period
        status, body = await api("GET", f"tasks/{done}")
        assert status == 200, body
        assert body["status"] == "cancelled"
        status, stats = await api("GET", "stats")
        assert stats["store"]["purged_results"] == 0


def test_ttl_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FX_RESULT_TTL", "60")
    assert FxService().result_ttl == 60.0


@pytest.mark.parametrize(
    ("value", "message"),
    [("a week", "FX_RESULT_TTL"), ("-1", "result_ttl must be 0"), ("nan", "result_ttl must be 0")],
)
def test_malformed_ttl_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("FX_RESULT_TTL", value)
    with pytest.raises(TraitError, match=message):
        FxService().result_ttl  # noqa: B018 - reading the option raises


def test_configured_negative_ttl_is_refused() -> None:
    with pytest.raises(TraitError, match="result_ttl must be 0"):
        FxService(result_ttl=-5.0)
