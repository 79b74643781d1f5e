"""The session manager: one per Jupyter server, a registry of Cluster objects (cluster.py) plus
what spans clusters: the active cluster, the persisted record, the executor for blocking SSH
work, and cluster-status's bounded wait. No tornado here."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from . import validation
from .cache import TTLCache
from .cluster import Cluster, Services
from .config import HPCManager
from .errors import HPCError, NotFoundError, StateError, ValidationError
from .ide import IDE
from .kernels import KernelSpecs, kernel_activity
from .models import (
    Board,
    ClusterView,
    LaunchCheck,
    LaunchOutcome,
    LoginDone,
    LoginPrompt,
    Session,
    StopOutcome,
    TimeOutcome,
)
from .slurm import JobRequest
from .ssh import SSHConnection, SSHSettings
from .state import StateStore

T = TypeVar("T")
KERNELS_WAIT = 5.0  # seconds a launch waits for the job's kernels to be known
IDLE_CHECK = 30.0  # seconds between looks for idle sessions (less for short idle timeouts)


class SessionManager:
    def __init__(self, config: HPCManager, state_path: str, log: logging.Logger,
                 clock: Callable[[], float] = time.monotonic, base_url: str = "/") -> None:
        self.config = config
        self.base_url = base_url
        self.log = log
        self.executor = ThreadPoolExecutor(config.executor_threads, thread_name_prefix="hpc-ssh")
        self.commands: collections.Counter[str] = collections.Counter()
        self.connections_opened = 0
        self._count_lock = threading.Lock()
        self._version = 0  # of the record: the newest is never overwritten by an older one
        services = Services(settings=config, log=log, clock=clock,
                            commands=self.commands, changed=self._changed,
                            ide_url=self.ide_url)
        self.services = services
        # The kernelspecs of running jobs (kernels.py; set by the extension, which owns the
        # server's KernelSpecManager).
        self.kernel_specs: KernelSpecs | None = None
        self._idle_task: asyncio.Task[None] | None = None
        ssh_settings = SSHSettings(
            connect_timeout=config.ssh_timeout,
            command_timeout=config.command_timeout,
            keepalive_interval=config.keepalive_interval,
            ssh_config_file=config.ssh_config_file,
            use_system_known_hosts=config.use_system_known_hosts,
        )
        self.clusters: dict[str, Cluster] = {
            name: Cluster(c, SSHConnection(c, ssh_settings, log, on_connect=self._count),
                          services)
            for name, c in config.clusters.items()
        }
        self.store = StateStore(state_path, log)
        record = self.store.load()
        for hpc, d in (record.get("sessions") or {}).items():
            if hpc in self.clusters:
                try:
                    self.clusters[hpc].session = Session.from_record(d)
                except (KeyError, TypeError, ValueError):
                    log.warning("jupyter-hpc-manager: dropping a bad session record for %s", hpc)
        for hpc, job_id in (record.get("detached") or {}).items():
            if hpc in self.clusters and isinstance(job_id, str):
                self.clusters[hpc].detached = job_id
        active = record.get("activeHpc")
        self.active_hpc: str | None = active if self.session(active) is not None else None
        held = [c.session for c in self.clusters.values() if c.session is not None]
        if held:
            log.info("jupyter-hpc-manager: found sessions from before the restart: %s",
                     ", ".join(f"{s.hpc} job {s.job_id}" for s in held))

    # -- plumbing ----------------------------------------------------------------------------
    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    def _count(self) -> None:
        with self._count_lock:
            self.connections_opened += 1

    def session(self, hpc: Any) -> Session | None:
        cluster = self.clusters.get(hpc) if isinstance(hpc, str) else None
        return cluster.session if cluster is not None else None

    def _record(self) -> dict[str, Any]:
        return {
            "activeHpc": self.active_hpc,
            "sessions": {n: c.session.record() for n, c in self.clusters.items() if c.session},
            "detached": {n: c.detached for n, c in self.clusters.items() if c.detached},
        }

    async def _save(self) -> None:
        """Write the record as it is now. Writes run in the executor and may finish out of
        order: each carries its version, and the store keeps the newest."""
        self._version += 1
        await self._blocking(self.store.save, self._record(), self._version)

    async def _changed(self, cluster: Cluster) -> None:
        """A cluster's session changed: the active role moves off a cluster without a running
        session (and to one that runs when there is none: a pending launch that ran later),
        and the record is written."""
        self._sync_kernels(cluster)
        runs = cluster.session is not None and cluster.session.running
        if self.active_hpc is None and runs:
            self.active_hpc = cluster.name
        elif self.active_hpc == cluster.name and not runs:
            running = [c.name for c in self.clusters.values()
                       if c.session is not None and c.session.running]
            self.active_hpc = running[0] if running else None
        if cluster.busy:
            await self._save()  # a launch or stop: a record that cannot be written is its error
            return
        try:
            await self._save()
        except StateError as exc:
            # What SLURM said stays true in memory; the record is written with the next change.
            self.log.warning("jupyter-hpc-manager: %s", exc.message)

    def _cluster(self, hpc: Any) -> Cluster:
        return self.clusters[validation.parse_hpc(hpc, self.clusters)]

    def ide_url(self, hpc: str) -> str:
        return f"{self.base_url.rstrip('/')}/hpc/{hpc}/code/"

    # -- what every answer about the clusters is made from -----------------------------------
    async def board(self, refresh: bool = False) -> Board:
        """Every cluster's view after one squeue each (from each cluster's cache within the
        TTL). A cluster whose query has not answered within status_wait of its start is shown
        from what it last said (a held session as last known, stale) and its query goes on:
        one hung login node holds up neither the others nor the next calls (which join its
        query and do not wait for it again)."""
        for cluster in self.clusters.values():
            self._note_kernels(cluster)
        views = await asyncio.gather(*(self._view(c, refresh) for c in self.clusters.values()))
        for cluster in self.clusters.values():
            self._sync_kernels(cluster)  # (a session restored from the record, too)
        return Board(self._with_kernels(views), self.active_hpc)

    async def _view(self, cluster: Cluster, refresh: bool) -> ClusterView:
        if cluster.node.login_state() == "required":
            return cluster.view()  # not asked: it cannot be, until the user logs in
        hit = await self._bounded(cluster.squeue_cache, cluster.observe(refresh))
        return cluster.view(hit, cluster.squeue_cache.asking_for(), asked=True)

    async def _bounded(self, cache: TTLCache[Any], ask: Awaitable[T]) -> T | None:
        """What a cluster's cached query answers, waiting at most until status_wait after that
        query began (None if it has not answered by then: it goes on, shielded in the cache,
        and later callers join it without waiting again)."""
        query = asyncio.ensure_future(ask)
        await asyncio.sleep(0)  # let it start (or join the query already running)
        wait = max(0.0, self.config.status_wait - cache.asking_for())
        done, _ = await asyncio.wait([query], timeout=wait)
        if done:
            return query.result()
        query.cancel()
        return None

    def status(self, refresh: bool = False) -> Board:
        """The sessions this server holds and what each cluster offers a launch, from memory:
        nothing here waits for a cluster. Partitions not known yet are asked for in the
        background (partitionsPending) and come with a later call."""
        for cluster in self.clusters.values():
            self._note_kernels(cluster)
        views = [c.view() for c in self.clusters.values()]
        offers = {c.name: c.offer_now(refresh) for c in self.clusters.values()}
        for cluster in self.clusters.values():
            self._sync_kernels(cluster)
        return Board(self._with_kernels(views), self.active_hpc, offers)

    def _with_kernels(self, views: Iterable[ClusterView]) -> list[ClusterView]:
        """Each running job's view with the kernelspecs written for it."""
        if self.kernel_specs is None:
            return list(views)
        specs = self.kernel_specs
        return [replace(v, kernels=specs.of(v.name, v.session.job_id if v.session else None))
                for v in views]

    def _sync_kernels(self, cluster: Cluster) -> None:
        """The job's kernelspecs follow its session (written once it runs, gone when it ends)."""
        if self.kernel_specs is not None:
            self.kernel_specs.sync(cluster)

    def parse_launch(self, body: dict[str, Any]) -> tuple[Cluster, JobRequest]:
        """The cluster and the request: the body's fields, then the preset's, then the
        cluster's and the server's defaults, each checked."""
        c = self.config
        cluster = self._cluster(body.get("hpc", c.default_cluster))
        cc = cluster.config
        values: dict[str, Any] = {"cpus": c.default_cpus, "mem": c.default_mem,
                                  "time": c.default_time, "partition": cc.partition or None,
                                  "account": cc.account or None, "qos": cc.qos or None}
        preset = body.get("preset")
        if preset not in (None, ""):
            if not isinstance(preset, str) or preset not in cc.presets:
                shown = preset if isinstance(preset, str) and len(preset) <= 64 else "(not shown)"
                raise ValidationError(
                    f"Unknown preset {shown!r} on {cluster.name}; it has: "
                    f"{', '.join(cc.presets) or 'none'}", {"field": "preset"})
            values.update(cc.presets[preset])
        values.update({k: body[k] for k in validation.PRESET_FIELDS if k in body})
        return cluster, validation.parse_request(values, c.max_cpus)

    async def check_launch(self, body: dict[str, Any]) -> LaunchCheck:
        """What a launch with this body would ask for, or the 400 it would get; nothing is
        submitted (the sidebar checks its form with it: one set of rules, the server's)."""
        cluster, request = self.parse_launch(body)
        await cluster.check(request)
        return LaunchCheck(cluster.name, request)

    async def launch(self, body: dict[str, Any]) -> LaunchOutcome:
        cluster, request = self.parse_launch(body)
        outcome = await cluster.launch(request)
        self._sync_kernels(cluster)
        if self.kernel_specs is not None and outcome.status != "pending":
            # The job's kernels are asked at once: the panel's next look finds them.
            await self.kernel_specs.settled(cluster.name, KERNELS_WAIT)
        if outcome.status != "pending":
            self.active_hpc = cluster.name
            await self._save()
        return outcome

    async def switch(self, hpc: Any) -> str:
        cluster = self._cluster(hpc)
        cluster.node.need_login()
        await cluster.observe()  # (from the cache; a session that ended is not switched to)
        session = cluster.session
        if session is None or not session.running:
            raise ValidationError(f"No running session on {cluster.name}", {"hpc": cluster.name})
        if self.active_hpc != cluster.name:
            previous, self.active_hpc = self.active_hpc, cluster.name
            try:
                await self._save()
            except HPCError:
                self.active_hpc = previous
                raise
        self.log.info("jupyter-hpc-manager: switched to %s (job %s)", cluster.name,
                      session.job_id)
        return cluster.name

    async def stop(self, hpc: Any, body: dict[str, Any]) -> StopOutcome:
        cancel = validation.parse_bool(body.get("cancelJob", False), "cancelJob")
        if hpc is None:
            hpc = self.active_hpc or self.config.default_cluster
        cluster = self._cluster(hpc)
        try:
            return await cluster.stop(cancel)
        finally:
            self._sync_kernels(cluster)

    def watches_idle(self, hpc: str) -> bool:
        """Whether hpc has idle auto-cancel on (else nobody needs to know what counts as use)."""
        cluster = self.clusters.get(hpc)
        return cluster is not None and self.config.idle_cancel_seconds(cluster.config) is not None

    def note_input(self, hpc: str) -> None:
        """A person used hpc's IDE (the proxy saw a request or input on a websocket)."""
        cluster = self.clusters.get(hpc)
        if cluster is not None:
            cluster.note_input()

    async def keep(self, hpc: Any) -> ClusterView:
        """The user keeps the running session: its idle clock starts again."""
        cluster = self._cluster(hpc)
        cluster.node.need_login()
        if cluster.idle_seconds() is None:
            raise NotFoundError(f"No running session on {cluster.name}", {"hpc": cluster.name})
        cluster.note_input()
        self.log.info("jupyter-hpc-manager: %s kept (its idle clock starts again)",
                      cluster.name)
        return cluster.view()

    async def change_time(self, hpc: Any, body: dict[str, Any]) -> TimeOutcome:
        cluster = self._cluster(hpc)
        if "time" not in body:
            raise ValidationError("Missing time: give the new limit as HH:MM:SS or "
                                  "D-HH:MM:SS", {"field": "time"})
        return await cluster.change_time(body["time"])

    # -- idle auto-cancel ----------------------------------------------------------------------
    def start_idle_watch(self) -> None:
        """Check the running sessions for idleness, in the background, while any cluster has
        idle auto-cancel on."""
        if self._idle_task is None and any(
                self.config.idle_cancel_seconds(c.config) for c in self.clusters.values()):
            self._idle_task = asyncio.ensure_future(self._idle_watch())

    async def _idle_watch(self) -> None:
        timeouts = [t for c in self.clusters.values()
                    if (t := self.config.idle_cancel_seconds(c.config)) is not None]
        every = min(IDLE_CHECK, min(timeouts) / 6)
        while True:
            await asyncio.sleep(every)
            # Side by side: one cluster's slow scancel does not hold up the others' cancels.
            await asyncio.gather(*(self._check_idle(c) for c in self.clusters.values()))

    async def _check_idle(self, cluster: Cluster) -> None:
        self._note_kernels(cluster)
        try:
            if await cluster.cancel_if_idle():
                self._sync_kernels(cluster)
        except Exception:  # (the watch goes on for the others)
            self.log.exception("jupyter-hpc-manager: idle check of %s", cluster.name)

    def _note_kernels(self, cluster: Cluster) -> None:
        """A notebook kernel of the running job that was busy is use of the session."""
        if self.config.idle_cancel_seconds(cluster.config) is None:
            return
        s = cluster.session
        if s is not None and s.running:
            ago = kernel_activity(cluster.name, s.job_id)
            if ago is not None:
                cluster.note_input(ago)

    async def login(self, hpc: Any, body: dict[str, Any]) -> LoginPrompt | LoginDone:
        return await self._cluster(hpc).login(body)

    async def logout(self, hpc: Any) -> LoginDone:
        return await self._cluster(hpc).logout()

    async def ide(self, hpc: str | None) -> IDE:
        """The attached IDE the proxy serves at hpc/code/ (hpc None: the active cluster) or
        hpc/<cluster>/code/. NotFoundError when there is none."""
        if hpc is None:
            hpc = self.active_hpc
            if hpc is None:
                raise NotFoundError("No VS Code session is active.")
        cluster = self.clusters.get(hpc)
        if cluster is None:
            raise NotFoundError(f"There is no cluster named {hpc[:64]!r}.")
        return await cluster.ide()

    async def aclose(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        cancel = self.config.cancel_jobs_on_shutdown
        await asyncio.gather(*(c.aclose(cancel) for c in self.clusters.values()))
        self.executor.shutdown(wait=False, cancel_futures=True)
