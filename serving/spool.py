"""The feedback spool: append-only local files that hold every row until its batch is in the lake.

Serving writes each impression and each feedback event to the spool before it answers, and
``fsync``\\ s before it acknowledges feedback (``202``); the lake write comes later, in batches.
One file per batch, ``<folder>/<batch>.jsonl`` (one JSON object a line); the batch id is fixed
when the file is opened, and the lake files of that batch are named after it, so writing a
batch again (after a crash, a failed or a partly written flush) replaces the same files instead
of adding rows twice. A batch's file is deleted once every file of the batch is in the lake.

* a killed process (``kill -9``) loses nothing it wrote: the next start replays every file left;
* a power loss loses nothing acknowledged: feedback is synced before ``202``, and an impression
  is synced with the first feedback after it (a file is also synced when the next one opens);
* a line cut short by a crash is the last line of its file and was never acknowledged: replay
  skips it.

Only one process may use a spool folder (an ``flock`` on ``spool.lock``): a second serving
process on the same ``FLYWHEEL_HOME`` must set its own ``FLYWHEEL_SERVE_SPOOL_DIR``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from pathlib import Path

from core.errors import ConfigError
from core.lake import fsync_dir

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
LOCK_NAME = "spool.lock"


class Spool:
    """Append-only batch files in one folder (held by this process with an ``flock``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self._lock_file = open(self.folder / LOCK_NAME, "a+")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise ConfigError(
                f"the feedback spool {self.folder} is in use by another serving process: "
                f"give each process its own FLYWHEEL_SERVE_SPOOL_DIR"
            ) from None
        self._fd: int | None = None
        self._open_batch: str | None = None
        self._seq = 0  # appends so far
        self._synced = 0  # appends known to be on disk
        self._sync_lock = threading.Lock()

    def path(self, batch: str) -> Path:
        return self.folder / f"{batch}{SUFFIX}"

    def leftovers(self) -> list[tuple[str, list[dict]]]:
        """``(batch, records)`` of every file a previous process left, oldest first."""
        out = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            records = _read_records(path)
            if records:
                out.append((path.name.removesuffix(SUFFIX), records))
            else:
                self.remove(path.name.removesuffix(SUFFIX))
        return out

    def append(self, batch: str, record: bytes) -> int:
        """Append one record (a JSON line) to ``batch``'s file; returns its sequence number.

        Not thread-safe: the caller serialises :meth:`append`, :meth:`remove` and :meth:`close`
        (:meth:`sync` may run concurrently with them). The bytes are in the kernel when this
        returns (they survive the process being killed); :meth:`sync` makes them durable.
        """
        if batch != self._open_batch:
            self._switch(batch)
        view = memoryview(record)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._seq += 1
        return self._seq

    @property
    def appended(self) -> int:
        """Sequence number of the last append (sync to it to cover everything appended)."""
        return self._seq

    def _switch(self, batch: str) -> None:
        with self._sync_lock:
            self._close_fd()
            self._fd = os.open(self.path(batch), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._open_batch = batch
        fsync_dir(self.folder)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)  # whatever went into the old file is durable before it closes
            os.close(self._fd)
            self._fd = None
            self._synced = self._seq

    def sync(self, seq: int) -> None:
        """Make every append up to ``seq`` durable (one ``fsync`` covers concurrent callers)."""
        with self._sync_lock:
            if self._synced >= seq or self._fd is None:
                return
            target = self._seq  # appends counted are complete: they are all covered below
            os.fsync(self._fd)
            self._synced = target

    def remove(self, batch: str) -> None:
        """Delete a batch's file once the batch is in the lake (serialised with appends)."""
        path = self.path(batch)
        with self._sync_lock:
            if batch == self._open_batch:
                self._close_fd()
                self._open_batch = None
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(self.folder)

    def close(self) -> None:
        """Close the open file (synced) and release the folder."""
        with self._sync_lock:
            self._close_fd()
            self._open_batch = None
        self._lock_file.close()


def _read_records(path: Path) -> list[dict]:
    """The JSON records of one spool file; a torn last line (a crash mid-write) is skipped."""
    lines = path.read_bytes().split(b"\n")
    records = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            where = (
                "its last line (cut short by a crash)" if n >= len(lines) - 2 else f"line {n + 1}"
            )
            log.warning("spool %s: skipped %s, which is not a JSON record", path.name, where)
    return records
