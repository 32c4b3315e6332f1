"""Credentials in URIs never reach a log line: the filter ``flywheel serve`` installs."""

from __future__ import annotations

import io
import logging
import logging.config

from serving.redact import RedactingFilter, redact, uvicorn_log_config

SECRET = "s3cr3t-pw"


def test_redact_every_uri_with_credentials():
    text = (
        f"cannot reach http://flywheel:{SECRET}@mlflow:5000/api and "
        f"redis://:{SECRET}@redis:6379/0, postgresql+psycopg://u:{SECRET}@db/x; "
        "plain https://mlflow:5000/ and s3://bucket/key@v1 stay"
    )
    out = redact(text)
    assert SECRET not in out
    assert "http://***@mlflow:5000/api" in out and "redis://***@redis:6379/0" in out
    assert "postgresql+psycopg://***@db/x" in out
    assert "https://mlflow:5000/" in out and "s3://bucket/key@v1" in out


def _logged(logger: logging.Logger, stream: io.StringIO) -> str:
    logger.warning("tracking URI %s is down", f"http://u:{SECRET}@mlflow:5000")
    try:
        raise ConnectionError(f"HTTPConnectionPool(http://u:{SECRET}@mlflow:5000)")
    except ConnectionError:
        logger.exception("lookup failed")
    return stream.getvalue()


def test_the_filter_redacts_messages_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redact.plain")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        out = _logged(logger, stream)
    finally:
        logger.removeHandler(handler)
    assert SECRET not in out
    assert "tracking URI http://***@mlflow:5000 is down" in out
    assert "ConnectionError: HTTPConnectionPool(http://***@mlflow:5000)" in out


def test_uvicorn_handlers_carry_the_filter():
    config = uvicorn_log_config()
    assert all("redact" in h["filters"] for h in config["handlers"].values())
    stream = io.StringIO()
    config["handlers"]["default"]["stream"] = stream  # instead of stderr
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        n: (
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).propagate,
            logging.getLogger(n).disabled,
        )
        for n in names
    }
    try:
        for n in names:  # an earlier test (uvicorn run in-process) may have changed them
            logging.getLogger(n).disabled = False
        logging.getLogger("uvicorn.error").propagate = True  # uvicorn's default: to "uvicorn"
        logging.config.dictConfig(config)
        out = _logged(logging.getLogger("uvicorn.error"), stream)
    finally:
        for n, (handlers, propagate, disabled) in saved.items():
            logging.getLogger(n).handlers[:] = handlers
            logging.getLogger(n).propagate = propagate
            logging.getLogger(n).disabled = disabled
    assert "http://***@mlflow:5000" in out and SECRET not in out
