"""What the fault tests share: an S3 (moto) server that can go down and come back."""

from __future__ import annotations

import urllib.request

import pytest

from tests.s3_server import free_port


class Moto:
    """The moto S3 server on a fixed port, stopped and started like a real outage.

    moto keeps its state per process, so objects written before an outage are there after it.
    """

    def __init__(self, port: int):
        self.port, self.server = port, None
        self.endpoint = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def moto(fw_home, monkeypatch):
    """The lake on a fresh moto S3 (bucket ``flywheel-test``); the test may stop and restart it."""
    import boto3

    server = Moto(free_port())
    server.start()
    urllib.request.urlopen(
        urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")
    )
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": server.endpoint,
        "FLYWHEEL_LAKE_URI": "s3://flywheel-test/lake",
        "FLYWHEEL_SERVE_FLUSH_S": "600",  # serving flushes when the test says
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="flywheel-test")
    try:
        yield server
    finally:
        server.stop()
