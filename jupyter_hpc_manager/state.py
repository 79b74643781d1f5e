"""The small persisted record of sessions (active cluster, known jobs), written atomically so
a killed server finds its jobs again. It never holds the IDE's password."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from typing import Any

from .errors import StateError

VERSION = 1


class StateStore:
    def __init__(self, path: str, log: logging.Logger) -> None:
        self.path = path
        self.log = log
        self._lock = threading.Lock()
        self._written = 0  # the version of the record on disk (see save)

    def load(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                record = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.log.warning("jupyter-hpc-manager: ignoring unreadable state file %s: %s",
                             self.path, exc)
            return {}
        if not isinstance(record, dict) or record.get("version") != VERSION:
            self.log.warning("jupyter-hpc-manager: ignoring state file %s of unknown format",
                             self.path)
            return {}
        return record

    def save(self, record: dict[str, Any], version: int | None = None) -> None:
        """Write to a temporary file beside the record, fsync, then rename over it: a crash at
        any moment leaves either the old record or the new one, never a torn one. With
        ``version`` (increasing with each record made), a record older than the one written
        is dropped: writes from several threads never leave an older record last."""
        data = json.dumps({"version": VERSION, **record}, indent=1, sort_keys=True)
        directory = os.path.dirname(self.path) or "."
        with self._lock:
            if version is not None and version <= self._written:
                return
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    os.chmod(tmp, 0o600)
                    os.replace(tmp, self.path)
                    if version is not None:
                        self._written = version
                except BaseException:
                    os.unlink(tmp)
                    raise
            except OSError as exc:
                raise StateError(
                    f"Cannot save the session record to {self.path}: {exc.strerror or exc}",
                    {"path": self.path},
                ) from exc
