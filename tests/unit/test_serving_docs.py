"""The serving API's docs work offline and describe the API for its users (issue 16).

``/docs`` used to load Swagger UI from a CDN (blank without internet) and the OpenAPI
description was the module's Sphinx docstring, with no response schemas.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient

from core.lake import get_lake
from core.settings import get_settings
from serving.app import Service, create_app
from serving.model import ModelFollower
from tests.fixtures.lake import write_rows


class NoRegistry(ModelFollower):
    """No model registry here: the docs do not need a model."""

    def check(self) -> bool:
        return False


@pytest.fixture
def client(fw_home):
    items = {f"i{n:02d}": "books" for n in range(5)}
    write_rows(
        get_lake(),
        dt.date(2026, 1, 1),
        items=items,
        users={"alice": "FR"},
        events=[("alice", "i00", "click")],
    )
    followers = {
        a: NoRegistry("flywheel-recommender", a, "unused") for a in ("champion", "challenger")
    }
    with TestClient(create_app(service=Service(get_settings(), features=None, **followers))) as c:
        yield c


def test_docs_page_loads_every_asset_from_the_service_itself(client):
    page = client.get("/docs")
    assert page.status_code == 200
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(
        r"url: ?'([^']+)'", page.text
    )
    assert refs, page.text
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), f"{ref} comes from outside the service"
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 100, ref
    js = [r for r in refs if r.endswith(".js")]
    assert js and "javascript" in client.get(js[0]).headers["content-type"]


def test_openapi_is_written_for_api_users_with_response_schemas(client):
    spec = client.get("/openapi.json").json()
    text = spec["info"]["description"]
    assert not re.search(r":(func|mod|class|data):`|``", text), "Sphinx markup in the API docs"
    assert "/recommendations/{user_id}" in text and "/feedback" in text
    rec = spec["paths"]["/recommendations/{user_id}"]["get"]["responses"]
    schema = rec["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Recommendations"}
    props = spec["components"]["schemas"]["Recommendations"]["properties"]
    assert {"request_id", "user_id", "items", "model_version", "variant", "fallback"} <= set(props)
    fb = spec["paths"]["/feedback"]["post"]["responses"]
    assert {"202", "200", "404", "409", "413", "422", "503"} <= set(fb)
    assert fb["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "Health" in spec["components"]["schemas"]


def test_the_documented_shape_is_what_the_service_answers(client):
    body = client.get("/recommendations/alice?k=3").json()
    spec = client.get("/openapi.json").json()
    props = spec["components"]["schemas"]["Recommendations"]["properties"]
    assert set(body) == set(props)
    assert set(client.get("/health").json()) == set(
        spec["components"]["schemas"]["Health"]["properties"]
    )
