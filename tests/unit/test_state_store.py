"""The session record has one writer: writes that finish out of order never leave an older
record on disk."""

from __future__ import annotations

import json
import logging
import threading

from jupyter_hpc_manager.state import StateStore


def test_an_older_record_never_replaces_a_newer_one(tmp_path):
    store = StateStore(str(tmp_path / "state.json"), logging.getLogger("t"))
    store.save({"activeHpc": "newer"}, version=2)
    store.save({"activeHpc": "older"}, version=1)  # made first, written last
    assert json.loads((tmp_path / "state.json").read_text())["activeHpc"] == "newer"
    store.save({"activeHpc": "newest"}, version=3)
    assert store.load()["activeHpc"] == "newest"


def test_many_threads_leave_the_newest_record(tmp_path):
    store = StateStore(str(tmp_path / "state.json"), logging.getLogger("t"))
    start = threading.Barrier(16)

    def write(version: int) -> None:
        start.wait()
        store.save({"activeHpc": f"v{version}"}, version=version)

    threads = [threading.Thread(target=write, args=(v,)) for v in range(1, 17)]
    for t in reversed(threads):
        t.start()
    for t in threads:
        t.join()
    assert store.load()["activeHpc"] == "v16"
