"""Pseudonymisation of user identifiers with a keyed hash (HMAC-SHA256).

The key is a secret: ``FLYWHEEL_PSEUDONYM_KEY`` (or the Airflow connection ``flywheel_pseudonym``
whose password holds it). The embedded profile generates a local key on first use under
``$FLYWHEEL_HOME/secrets/``; the production profile refuses to run without one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from core.errors import ConfigError
from core.settings import Settings, get_settings

PREFIX = "p_"
#: Columns of the contract whose values identify a person (``user_id`` of ``events``, ``users``
#: and ``impressions``): pseudonymised on the way into ``validated/``, and wherever a report,
#: result or message quotes one of their values (:func:`redact_values`).
PERSONAL_COLUMNS: frozenset[str] = frozenset({"user_id"})
_DIGEST_CHARS = 24  # 96 bits: collisions negligible for billions of users
MIN_KEY_CHARS = 32  # a generated key has 64 hex characters; 32 is 128 bits at the least

log = logging.getLogger(__name__)


def _airflow_connection_key() -> str | None:
    try:
        from airflow.sdk import BaseHook  # type: ignore[attr-defined]
    except Exception:
        return None
    try:
        return BaseHook.get_connection("flywheel_pseudonym").password or None
    except Exception:
        return None


def _checked(key: str, source: str, profile: str) -> bytes:
    """A configured key, refused in production when shorter than :data:`MIN_KEY_CHARS`.

    A short key can be guessed, and a guessed key turns every pseudonym back into the raw id
    by trying the known id space. Embedded runs (tests, demos on synthetic data) only warn.
    """
    if len(key) < MIN_KEY_CHARS:
        msg = (
            f"{source} is {len(key)} characters; a pseudonymisation key needs at least "
            f"{MIN_KEY_CHARS} (e.g. `openssl rand -hex 32`)"
        )
        if profile == "production":
            raise ConfigError(msg)
        log.warning("%s (accepted in the embedded profile only)", msg)
    return key.encode()


def pseudonym_key(settings: Settings | None = None) -> bytes:
    """The secret key, from settings, an Airflow connection, or (embedded only) a local file."""
    s = settings or get_settings()
    if s.pseudonym_key is not None and s.pseudonym_key.get_secret_value():
        return _checked(s.pseudonym_key.get_secret_value(), "FLYWHEEL_PSEUDONYM_KEY", s.profile)
    if s.profile == "production":
        conn = _airflow_connection_key()
        if conn:
            return _checked(conn, "the Airflow connection 'flywheel_pseudonym'", s.profile)
        raise ConfigError(
            "production profile needs a pseudonymisation key: set FLYWHEEL_PSEUDONYM_KEY "
            "or the Airflow connection 'flywheel_pseudonym'"
        )
    path = s.ensure_home() / "secrets" / "pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            tmp.rename(path) if not path.exists() else tmp.unlink()
        except OSError:
            pass
    return path.read_text().strip().encode()


def is_pseudonym(user_id: str) -> bool:
    """Whether ``user_id`` has the shape of a pseudonym: for checks on output only.

    Never use it to decide whether an id still needs hashing: anybody can send ``p_`` and 24
    characters. Whether a string is a pseudonym is known from where it came from (a ``user_id``
    of the validated zone or the feature store), not from its look.
    """
    return user_id.startswith(PREFIX) and len(user_id) == len(PREFIX) + _DIGEST_CHARS


def pseudonymise(user_id: str, key: bytes | None = None) -> str:
    """The pseudonym of one id from outside (a raw id): always hashed, whatever it looks like.

    Not idempotent on purpose: an id that looks like a pseudonym is hashed like any other, so
    knowing a user's pseudonym does not let a caller act as that user. Code that already holds
    a pseudonym (read from validated data) passes it on as it is and never calls this.
    """
    k = key if key is not None else pseudonym_key()
    digest = hmac.new(k, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:_DIGEST_CHARS]


def pseudonymise_many(user_ids, key: bytes | None = None) -> list[str]:
    """:func:`pseudonymise` over an iterable of raw ids; computes each distinct id once."""
    mac = _hmac_sha256(key if key is not None else pseudonym_key())
    cache: dict[str, str] = {}
    out = []
    for u in user_ids:
        p = cache.get(u)
        if p is None:
            p = cache[u] = PREFIX + mac(u.encode("utf-8")).hex()[:_DIGEST_CHARS]
        out.append(p)
    return out


def _hmac_sha256(key: bytes):
    """``msg -> hmac.digest(key, msg, "sha256")`` from one keyed HMAC copied per message.

    The stdlib's HMAC state is keyed once and copied (OpenSSL's copy), instead of the one-shot
    ``hmac.digest`` re-keying for every id: ~1.4x faster over 100k ids, same bytes.
    """
    keyed = hmac.new(key, digestmod="sha256")

    def mac(msg: bytes) -> bytes:
        h = keyed.copy()
        h.update(msg)
        return h.digest()

    return mac


def pseudonymise_array(user_ids, key: bytes | None = None):
    """Pseudonyms of an Arrow string array, element for element (nulls stay null).

    The same strings as :func:`pseudonymise` per id (every id is hashed, including ids shaped
    like a pseudonym), vectorised: the HMAC runs from one keyed state copied per id, and hex encoding, truncation and the
    ``p_`` prefix are done with numpy over all digests at once, straight into an Arrow buffer.
    Pass distinct ids: each element is hashed.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    k = key if key is not None else pseudonym_key()
    arr = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
    arr = arr.cast(pa.string())
    n = len(arr)
    mac = _hmac_sha256(k)
    raw = arr.cast(pa.binary()).fill_null(b"").to_pylist()  # UTF-8 bytes: no decode/encode
    digests = np.frombuffer(b"".join([mac(u) for u in raw]), np.uint8).reshape(n, 32)
    hex_pairs = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), np.uint8).reshape(256, 2)
    width = len(PREFIX) + _DIGEST_CHARS
    chars = np.empty((n, width), np.uint8)
    chars[:, : len(PREFIX)] = np.frombuffer(PREFIX.encode(), np.uint8)
    chars[:, len(PREFIX) :] = hex_pairs[digests[:, : _DIGEST_CHARS // 2]].reshape(n, _DIGEST_CHARS)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    hashed = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))
    return pc.if_else(pc.is_valid(arr), hashed, arr)  # null where the id is null


def is_personal(column: str | None) -> bool:
    """Whether values of ``column`` identify a person (:data:`PERSONAL_COLUMNS`)."""
    return column in PERSONAL_COLUMNS


def redact_values(value, key: bytes | None = None):
    """``value`` (a scalar, or lists/dicts of them, as in a JSON document) with every string
    replaced by its pseudonym (:func:`pseudonymise`, the same string the validated data holds);
    other scalars (numbers, ``None``) and dict keys stay as they are.

    For values drawn from a personal column (offending examples in a quality report): the
    report then names the user as ``validated/`` does, and never by the raw id.
    """
    k = key if key is not None else pseudonym_key()
    if isinstance(value, str):
        return pseudonymise(value, k)
    if isinstance(value, list | tuple):
        return [redact_values(v, k) for v in value]
    if isinstance(value, dict):
        return {name: redact_values(v, k) for name, v in value.items()}
    return value
