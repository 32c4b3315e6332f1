"""The data contract for raw input, as code.

One definition, used by the simulator (to write), the quality gate (to check) and the docs
(``flywheel contract`` prints it as Markdown; the README embeds the same table).

Raw data lands under ``raw/<table>/dt=YYYY-MM-DD/`` as Parquet or CSV (UTF-8, header).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.names import EVENT_TYPES, VARIANTS

if TYPE_CHECKING:
    import pyarrow as pa

AGE_BUCKETS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
RATING_MIN, RATING_MAX = 0.5, 5.0  # half stars: MovieLens and most rating exports start at 0.5
IMPLICIT_VALUE = 1.0  # the value of every non-rating event


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "string" | "float64" | "timestamp"
    description: str
    nullable: bool = False
    key: bool = False
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None

    def arrow_type(self) -> pa.DataType:
        import pyarrow as pa

        return {
            "string": pa.string(),
            "float64": pa.float64(),
            "timestamp": pa.timestamp("us", tz="UTC"),
        }[self.dtype]


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    time_column: str
    unique: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def keys(self) -> list[str]:
        return [c.name for c in self.columns if c.key]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema(
            [pa.field(c.name, c.arrow_type(), nullable=c.nullable) for c in self.columns]
        )


EVENTS = Table(
    name="events",
    description="One row per user interaction with an item.",
    time_column="event_ts",
    unique=("event_id",),
    columns=(
        Column("event_id", "string", "Unique id of the event", key=True),
        Column("user_id", "string", "User who acted (pseudonymised after ingestion)", key=True),
        Column("item_id", "string", "Item acted on; must exist in `items`", key=True),
        Column("event_type", "string", "Kind of interaction", allowed=EVENT_TYPES),
        Column(
            "value",
            "float64",
            "0.5–5 for `rating` (half stars), else 1.0",
            min_value=RATING_MIN,
            max_value=RATING_MAX,
        ),
        Column("event_ts", "timestamp", "When it happened (UTC)"),
    ),
)

ITEMS = Table(
    name="items",
    description="The catalog: one row per item, in the partition of the day it was created.",
    time_column="created_ts",
    unique=("item_id",),
    columns=(
        Column("item_id", "string", "Unique id of the item", key=True),
        Column("category", "string", "Category of the item"),
        Column("price", "float64", "Price, ≥ 0", min_value=0.0),
        Column("created_ts", "timestamp", "When the item entered the catalog (UTC)"),
    ),
)

USERS = Table(
    name="users",
    description="One row per user, in the partition of the day they signed up.",
    time_column="signup_ts",
    unique=("user_id",),
    columns=(
        Column(
            "user_id", "string", "Unique id of the user (pseudonymised after ingestion)", key=True
        ),
        Column("signup_ts", "timestamp", "When the user signed up (UTC)"),
        Column("country", "string", "ISO 3166-1 alpha-2 country code"),
        Column("age_bucket", "string", "Age band", allowed=AGE_BUCKETS),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (EVENTS, ITEMS, USERS)}

IMPRESSIONS = Table(
    name="impressions",
    description=(
        "Written by the serving API: one row per recommendation response (what was shown). "
        "Feedback on it lands in `events` with `event_id` = `fb:<request_id>:<n>`. Not gated by "
        "ingestion (a side table): read by the A/B report and drift monitoring."
    ),
    time_column="served_ts",
    unique=("request_id",),
    columns=(
        Column("request_id", "string", "Unique id of the response", key=True),
        Column("user_id", "string", "Raw user id of the request (pre-ingestion data)", key=True),
        Column("item_ids", "string", "JSON list of the item ids shown, best first"),
        Column("scores", "string", "JSON list of their scores, same order"),
        Column("model_version", "string", "Registered model version, or `popularity`"),
        Column("variant", "string", "Who served it", allowed=VARIANTS),
        Column("served_ts", "timestamp", "When it was served (UTC)"),
    ),
)

#: Raw tables that other parts write beside the gated ones; ingestion does not demand them.
SIDE_TABLES: dict[str, Table] = {IMPRESSIONS.name: IMPRESSIONS}

# ISO 3166-1 alpha-2 (officially assigned codes).
ISO_COUNTRIES: frozenset[str] = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO
    DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU
    GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW
    KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU
    MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW
    PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA
    ZM ZW""".split()
)


def markdown() -> str:
    """The contract as Markdown tables (used by ``flywheel contract`` and the README)."""
    lines = [
        "Raw data lands under `raw/<table>/dt=YYYY-MM-DD/` as Parquet or CSV (UTF-8, header).",
        "",
    ]
    for t in (*TABLES.values(), *SIDE_TABLES.values()):
        lines += [
            f"### `{t.name}`",
            "",
            t.description,
            "",
            "| column | type | rule |",
            "| --- | --- | --- |",
        ]
        for c in t.columns:
            rule = []
            if not c.nullable:
                rule.append("not null")
            if c.name in t.unique:
                rule.append("unique")
            if c.allowed:
                rule.append("one of " + ", ".join(f"`{a}`" for a in c.allowed))
            if c.name == "country":
                rule.append("ISO 3166-1 alpha-2")
            rule.append(c.description)
            lines.append(f"| `{c.name}` | {c.dtype} | {'; '.join(rule)} |")
        lines.append("")
    return "\n".join(lines)
