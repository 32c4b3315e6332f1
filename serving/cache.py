"""The last-known version of each followed alias, on local disk: serving starts without MLflow.

Each version serving loads from the registry is first downloaded into
``$FLYWHEEL_HOME/serving/models/<registered model>/<alias>/v<version>-<id>/`` and loaded from
there; only a copy that loaded is recorded as the alias's last-known version
(``current.json``, replaced atomically). At start serving loads that copy at once -- no network
-- and then resolves the alias in the background; a registry that is down, slow or refusing
leaves it serving the last-known version. The folder is private (``0700``): what is in it gets
unpickled like anything the registry serves.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

POINTER = "current.json"


class ModelCache:
    """Downloaded copies of one alias's versions; ``current.json`` names the last good one."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _ensure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for p in (self.folder, *self.folder.parents):
            if p.name == "serving":  # $FLYWHEEL_HOME/serving and everything under it: private
                p.chmod(0o700)
                break
        self.folder.chmod(0o700)

    def load(self) -> tuple[str, Any] | None:
        """``(version, pyfunc)`` of the last-known version, or None (no copy, or it fails)."""
        try:
            meta = json.loads((self.folder / POINTER).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning(
                "model cache %s unreadable (%s): waiting for the registry", self.folder, exc
            )
            return None
        import mlflow.pyfunc

        try:
            return str(meta["version"]), mlflow.pyfunc.load_model(str(self.folder / meta["dir"]))
        except Exception as exc:
            log.warning(
                "cached model in %s does not load (%s): waiting for the registry", self.folder, exc
            )
            return None

    def fetch(self, name: str, version: str, tracking_uri: str | None) -> Any:
        """Download ``models:/name/version``, load it from the local copy, record it; the pyfunc."""
        import mlflow
        import mlflow.pyfunc

        self._ensure()
        target = self.folder / f"v{version}-{uuid.uuid4().hex[:8]}"
        tmp = self.folder / f".tmp-{target.name}"
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}",
                dst_path=str(tmp),
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
            tmp.rename(target)
            pyfunc = mlflow.pyfunc.load_model(str(target))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            raise
        self._point_to(version, target.name)
        return pyfunc

    def _point_to(self, version: str, dirname: str) -> None:
        pointer = self.folder / POINTER
        tmp = pointer.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"version": version, "dir": dirname}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, pointer)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for old in self.folder.iterdir():  # earlier copies (and leftovers of failed fetches)
            if old.is_dir() and old.name != dirname:
                shutil.rmtree(old, ignore_errors=True)

    def forget(self) -> None:
        """Drop the last-known version (an alias that was removed, e.g. an ended A/B test)."""
        (self.folder / POINTER).unlink(missing_ok=True)
