"""What API users read: the OpenAPI description, the response schemas and ``/docs`` served offline.

Swagger UI's assets come from the ``swagger-ui-bundle`` package and are served by the service
itself under ``/docs/assets/`` (FastAPI's default page loads them from a CDN, so it is blank
without internet). ReDoc is off: it has no offline bundle here.

The response models document the answers; the endpoints keep returning plain dicts (the models
are not used to filter them), and ``tests/unit/test_serving_docs.py`` checks the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from fastapi import FastAPI

TITLE = "Flywheel serving API"
DOCS_ASSETS = "/docs/assets"

DESCRIPTION = """
Personalised recommendations from the current champion model, and the feedback that trains the
next one.

**Get recommendations**: `GET /recommendations/{user_id}?k=10`. `user_id` is your own user id
(1–128 letters, digits and `_ . @ : -`); the service pseudonymises it before it looks anything
up or stores it. The answer lists up to `k` (1–100) items with scores, best first, and says
who produced them: `variant` is `champion`, `challenger` (an A/B test sends a fixed share of
users to the challenger model) or `fallback` (popular items — `fallback` then says whether
they are the most popular in the user's country or overall). Items the user already purchased
are never recommended. Keep the `request_id`: feedback refers to it.

**Send feedback**: `POST /feedback` with `{"request_id", "item_id", "event_type", "value"}`
for an item of that recommendation. `event_type` is `click`, `add_to_cart`, `purchase` (value
1 or omitted) or `rating` (value 0.5–5). The answer is `202` once the event is durably stored;
sending the same event again answers `200` with `"status": "duplicate"` (safe to retry). Feedback
must arrive within the configured window after the recommendation was served.

**Errors** answer `{"detail": ...}`: `400` malformed user id, `404` unknown request id, `409`
the same kind of event again with another value, `413` body over 64 KiB, `422` a field is wrong
(the answer names the field and why, never echoes what was sent), `503` feedback storage is
temporarily full: retry after the `Retry-After` seconds.

**Operate**: `GET /health` answers at once (the model versions served and whether they came
from the local cache, buffered feedback); `GET /metrics` is Prometheus text.
"""


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="Higher is better; comparable within one answer only")


class Recommendations(BaseModel):
    request_id: str = Field(description="Quote it in feedback for these items")
    user_id: str = Field(description="The user id as you sent it")
    items: list[RecommendedItem] = Field(description="Best first; at most k")
    model_version: str = Field(description="Registered model version, or `popularity`")
    variant: Literal["champion", "challenger", "fallback"]
    fallback: Literal["popular_country", "popular_overall"] | None = Field(
        description="Which popularity list answered, when `variant` is `fallback`"
    )


class FeedbackAck(BaseModel):
    status: Literal["accepted", "duplicate"]
    event_id: str = Field(description="The stored event's id (the same for a duplicate)")


class Error(BaseModel):
    detail: str = Field(description="What is wrong, in words")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: e.g. ['body', 'value']")
    msg: str
    type: str


class ValidationFailed(BaseModel):
    detail: str | list[FieldError]


class ModelState(BaseModel):
    version: str | None
    source: str | None = Field(description="`registry` or `cache` (last-known champion)")
    registry_answered: bool


class Health(BaseModel):
    status: Literal["ok"]
    champion: str | None
    challenger: str | None
    models: dict[str, ModelState]
    challenger_share: float
    features: bool = Field(description="Whether the online feature store is reachable")
    catalog_items: int
    data_as_of: str | None
    buffered_rows: int
    batches_written: int
    spool: dict[str, int] = Field(description="Local durable feedback spool: bytes, pending, …")
    model_errors: list[str]


def error(description: str, model: type[BaseModel] = Error) -> dict[str, Any]:
    """One entry of an endpoint's ``responses``."""
    return {"model": model, "description": description}


RECOMMENDATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Recommendations, "description": "Up to k items, best first"},
    400: error("Malformed user id"),
    413: error("Request too large"),
    422: error("A parameter is out of range (k, at)", ValidationFailed),
}

FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": FeedbackAck, "description": "Stored durably"},
    200: {"model": FeedbackAck, "description": "Already stored (a retry): nothing changed"},
    404: error("Unknown request id"),
    409: error("This kind of event was already recorded with another value"),
    413: error("Body over the size limit (64 KiB by default)"),
    422: error("A field is wrong, or the feedback came too late", ValidationFailed),
    503: error("Feedback storage temporarily full; retry after Retry-After seconds"),
}


def install_docs(app: FastAPI) -> None:
    """``GET /docs``: Swagger UI with its assets served by this app (create the app with
    ``docs_url=None, redoc_url=None``)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{TITLE} — docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )
