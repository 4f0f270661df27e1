"""The OpenAPI document describes exactly the routes the service serves."""

from __future__ import annotations

import json
import re

from fx_jupyter.server_ext.handlers import API_PREFIX, default_handlers


def _routes() -> set[str]:
    routes = set()
    for pattern, _handler in default_handlers():
        path = pattern[len(f"/{API_PREFIX}") :]
        if path == "/(.*)":
            continue  # the JSON 404 for everything else
        routes.add(path.replace("([^/]+)", "{id}"))
    return routes


async def test_openapi_document_lists_every_route(api):
    status, doc = await api("GET", "openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": "/a%40b/fx/api/v2/"}]
    documented = {re.sub(r"\{\w+\}", "{id}", p) for p in doc["paths"]}
    assert documented == _routes()
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"])


async def test_every_documented_operation_is_served(api):
    status, doc = await api("GET", "openapi.json")
    for path, operations in doc["paths"].items():
        if path == "/events":
            continue
        concrete = re.sub(r"\{\w+\}", "x", path).lstrip("/")
        for method in operations:
            status, body = await api(
                method.upper(), concrete, body={} if method == "post" else None
            )
            assert status != 405, (method, path)
            assert "no fx API route" not in str(body), (method, path)
