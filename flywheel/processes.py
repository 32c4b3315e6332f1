"""Local process tooling: background services with logs, ports, and waiting for them.

Used by the demo (embedded Airflow, serving, MLflow and Evidently UIs), the production twin in
``deploy/twin.py`` and the loop benchmark.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import FlywheelError


class ServiceError(FlywheelError):
    """A local service did not start, died, or a run it was asked for did not finish."""


def free_port() -> int:
    """A port on loopback that is free now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether ``port`` on loopback can be bound now (the default ports of the embedded UIs)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    group: ProcessGroup | None = None,
    interval: float = 1.0,
) -> Any:
    """Poll ``predicate`` until truthy; raise :class:`ServiceError` naming ``what`` on timeout.

    With ``group``, a process of the group that died stops the wait at once (its log tail is in
    the error).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if group is not None:
            group.check_alive()
        if time.monotonic() > deadline:
            raise ServiceError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen


class ProcessGroup:
    """Background processes, each in its own session with its log under ``log_dir``.

    ``stop()`` (also on ``with`` exit) sends SIGTERM to each process group in reverse start
    order, waits, then SIGKILLs what is left -- nothing outlives the group.
    """

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> Proc:
        log = self.log_dir / f"{name}.log"
        fh = log.open("ab")
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=str(cwd) if cwd else None,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        fh.close()
        proc = Proc(name, argv, log, popen)
        self.procs.append(proc)
        return proc

    def tail(self, name: str, lines: int = 15) -> str:
        for p in self.procs:
            if p.name == name and p.log.exists():
                return "\n".join(p.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        for p in self.procs:
            code = p.popen.poll()
            if code is not None:
                raise ServiceError(
                    f"{p.name} exited with code {code} (log {p.log}):\n{self.tail(p.name)}"
                )

    def stop(self, timeout: float = 30.0) -> None:
        # a Ctrl-C while stopping must not leave processes behind: finish the cleanup first
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            self._stop(timeout)
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)

    def _stop(self, timeout: float) -> None:
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in reversed(self.procs):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                p.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                pass
            # children of a process that exited (task runners, gunicorn workers) go too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def venv_bin(name: str) -> str:
    """An executable of this interpreter's environment (``airflow``, ``mlflow``, ``moto_server``)."""
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name
