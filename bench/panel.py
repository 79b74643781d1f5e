"""A simulated JupyterLab sidebar for the benches: the polling of HPCModel
(labextension/src/model.ts) with @lumino/polling's Poll, against one server's REST API.

What it follows from model.ts, rule by rule:
- start(): `GET status` (the configuration), then the Poll starts and ticks at once; while a
  cluster's partitions are still being asked (partitionsPending), `status` again after 1, 2, ...
  5 s (at most 20 times).
- each tick: `GET cluster-status`, never `?refresh=true` (that is the user's Refresh button and
  a login's end, neither of which happens here); an answer issued before one already applied,
  or before a launch began or ended, is dropped.
- the interval: pendingPollSeconds (5 s) while any cluster is busy (a launch of this panel
  runs), shows `pending`, or its launch answered `pending`; else pollSeconds (30 s). When it
  gets shorter the Poll ticks at once ("sooner from now, not after the long wait").
- back-off: a tick whose answer shows a cluster stale, or unknown with an error (not one that
  needs a login), or that fails, rejects; the Poll then waits a random time between the
  interval and 3 times the last one (lumino's default growth), at most 300 s.
- launch(): busy and 'submitted' (the interval shortens: a tick at once), `POST launch`, then
  'pending' or 'ready', not busy, and one `cluster-status` outside the Poll (_settle).
- the panel is open and its tab visible throughout: the Poll never stands by.
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
from collections.abc import Callable
from typing import Any

# (method, path under api/hpc/, body) -> (HTTP status, JSON)
Call = Callable[[str, str, "dict | None"], "tuple[int, dict]"]

STATUS_KEYS = {"activeHpc", "updatedAt", "cached", "cacheAge", "cacheTtl"}
BACKOFF_GROWTH = 3  # lumino Poll's default (backoff: true)


class RequestFailed(Exception):
    pass


class SlurmTrouble(Exception):
    """What the poll's factory rejects with while SLURM is slow or failing."""


class Panel:
    def __init__(self, call: Call, poll_seconds: float = 30, pending_poll_seconds: float = 5,
                 max_seconds: float = 300) -> None:
        self._call = call
        self.poll_seconds = poll_seconds
        self.pending_poll_seconds = pending_poll_seconds
        self.max_seconds = max_seconds
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._states: dict[str, dict[str, Any]] = {}
        self._issued = self._applied = 0
        self._interval = poll_seconds  # the Poll's frequency.interval
        self._last_wait = 0.0  # the Poll's state.interval: what the last tick waited
        self._started = False
        self._threads: list[threading.Thread] = []
        self.config: dict[str, Any] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.rejected = 0  # ticks that backed off

    # -- what the views would read -------------------------------------------------------------
    def state(self, hpc: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._states.get(hpc) or
                        {"entry": None, "busy": False, "progress": None})

    def status_of(self, hpc: str) -> str | None:
        entry = self.state(hpc)["entry"]
        return entry["status"] if entry else None

    @property
    def interval(self) -> float:
        return self._interval

    # -- HPCModel's operations -----------------------------------------------------------------
    def start(self) -> None:
        status = self._request("GET", "status")
        self.config = status.get("config") or {}
        self._started = True
        self._spawn(self._follow_options)
        self._spawn(self._run_poll)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for t in self._threads:
            t.join(150)

    def refresh(self) -> bool:
        with self._lock:
            self._issued += 1
            sent = self._issued
        status = self._request("GET", "cluster-status")
        with self._lock:
            if sent <= self._applied:
                return False  # older than what the sidebar shows: dropped
            self._applied = sent
            self._apply(status)
        return True

    def launch(self, hpc: str, values: dict[str, Any]) -> dict[str, Any]:
        self._update(hpc, busy=True, progress="submitted")
        self._fence()
        try:
            reply = self._request("POST", "launch", {"hpc": hpc, **values})
            if reply.get("status") == "pending":
                self._update(hpc, progress="pending")
            else:
                self._update(hpc, progress="ready")

                def back() -> None:
                    with self._lock:
                        if self.state(hpc)["progress"] == "ready":
                            self._update(hpc, progress=None)
                timer = threading.Timer(5, back)
                timer.daemon = True
                timer.start()
            return reply
        except Exception:
            self._update(hpc, progress=None)
            raise
        finally:
            self._update(hpc, busy=False)
            self._settle()

    # -- the Poll ------------------------------------------------------------------------------
    def _run_poll(self) -> None:
        wait = 0.0  # Poll.start(): the first tick at once
        while not self._stopping.is_set():
            self._wake.wait(wait)
            if self._stopping.is_set():
                return
            woken = self._wake.is_set()
            self._wake.clear()
            if woken:
                self._last_wait = 0.0  # a refresh: lumino's state.interval is IMMEDIATE
            try:
                self._poll_once()
            except Exception:
                # 'rejected': Private.sleep(frequency, state)
                self.rejected += 1
                low = self._interval
                high = max(low, self._last_wait * BACKOFF_GROWTH)
                wait = min(self.max_seconds, random.uniform(low, high))
            else:
                wait = self._interval
            self._last_wait = wait

    def _poll_once(self) -> None:
        self.refresh()
        self._retune()
        with self._lock:
            troubled = any(
                (e := s["entry"]) is not None and e.get("login") != "required"
                and (e.get("stale") is True or (e.get("status") == "unknown" and e.get("error")))
                for s in self._states.values())
        if troubled:
            raise SlurmTrouble()

    def _frequency(self) -> float:
        with self._lock:
            waiting = any(
                s["busy"] or (s["entry"] or {}).get("status") == "pending"
                or s["progress"] == "pending" for s in self._states.values())
        return self.pending_poll_seconds if waiting else self.poll_seconds

    def _retune(self) -> None:
        next_interval = self._frequency()
        if next_interval != self._interval:
            sooner = next_interval < self._interval
            self._interval = next_interval
            if self._started and sooner:
                self._wake.set()  # poll.refresh(): a tick now

    def _fence(self) -> None:
        with self._lock:
            self._applied = self._issued
        self._retune()

    def _settle(self) -> None:
        self._fence()
        with contextlib.suppress(Exception):  # (the model: .catch(() => undefined))
            self.refresh()
        self._retune()

    def _apply(self, status: dict[str, Any]) -> None:
        for hpc, entry in status.items():
            if hpc in STATUS_KEYS or not isinstance(entry, dict):
                continue
            before = self.state(hpc)
            progress = before["progress"]
            if before["busy"] and progress in ("submitted", "pending"):
                progress = {"pending": "pending", "running": "running"}.get(
                    entry.get("status"), progress)
            elif not before["busy"] and (
                    entry.get("status") == "idle"
                    # (a launch that answered "pending" has run since)
                    or (entry.get("status") == "running" and progress in ("pending", "submitted"))):
                progress = None
            self._update(hpc, entry=entry, progress=progress)

    def _update(self, hpc: str, **change: Any) -> None:
        with self._lock:
            self._states[hpc] = {**self.state(hpc), **change}

    # -- status, while partitions are asked -----------------------------------------------------
    def _follow_options(self) -> None:
        for tries in range(20):
            if not self._pending_options() or self._stopping.wait(min(tries + 1, 5)):
                return
            try:
                status = self._request("GET", "status")
            except Exception:
                return
            self.config = {**self.config,
                           "clusterOptions": (status.get("config") or {}).get("clusterOptions")}

    def _pending_options(self) -> list[str]:
        options = self.config.get("clusterOptions") or {}
        return [h for h, o in options.items() if (o or {}).get("partitionsPending")]

    # -- plumbing ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        self.requests[f"{method} {path}"] += 1
        code, reply = self._call(method, path, body)
        if code >= 400:
            raise RequestFailed(f"{method} {path}: {code} {reply}")
        return reply

    def _spawn(self, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, daemon=True)
        self._threads.append(t)
        t.start()
