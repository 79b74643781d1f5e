"""The session manager: one per Jupyter server. It holds the per-cluster locks, the sessions,
the persisted record and the status cache, and drives SLURM over SSH. No tornado here."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import slurm, validation
from .cache import TTLCache
from .config import HPCManager
from .errors import (
    HPCError,
    JobError,
    LockError,
    NotFoundError,
    TunnelError,
    ValidationError,
)
from .ide import IDEClient
from .slurm import JobRequest, JobState, SqueueJob
from .ssh import CommandResult, SSHPool, SSHSettings
from .state import StateStore
from .tunnel import Tunnel

T = TypeVar("T")
_SAFE_HOST = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")


def utcnow_iso() -> str:
    """Contract timestamps: ISO 8601 UTC with milliseconds and a Z."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass(frozen=True)
class Connection:
    """Where the IDE listens and its password; the password never leaves the server."""

    host: str
    port: int
    password: str = field(repr=False)


@dataclass
class Session:
    """A session this server holds on a cluster (the persisted part has no password)."""

    hpc: str
    job_id: str
    status: str
    cpus: str
    memory: str
    walltime: str
    started_at: str | None = None
    node: str | None = None
    # Held in memory only: where the IDE listens (with its password), the tunnel to it, and
    # code-server's session cookie once the proxy has logged in.
    connection: Connection | None = field(default=None, repr=False, compare=False)
    tunnel: Tunnel | None = field(default=None, repr=False, compare=False)
    ide_cookie: str | None = field(default=None, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        return {"hpc": self.hpc, "job_id": self.job_id, "status": self.status,
                "cpus": self.cpus, "memory": self.memory, "walltime": self.walltime,
                "started_at": self.started_at, "node": self.node}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Session:
        return cls(
            hpc=str(d["hpc"]), job_id=str(d["job_id"]), status=str(d["status"]),
            cpus=str(d["cpus"]), memory=str(d["memory"]), walltime=str(d["walltime"]),
            started_at=d.get("started_at"), node=d.get("node"),
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "jobId": self.job_id,
            "node": self.node,
            "cpus": self.cpus,
            "memory": self.memory,
            "walltime": self.walltime,
            "startedAt": self.started_at,
        }


@dataclass(frozen=True)
class Snapshot:
    """One round of squeue over every cluster, and when it was taken (updatedAt)."""

    taken_at: str
    observations: dict[str, Observation]


@dataclass(frozen=True)
class Observation:
    """What one squeue said about one cluster, or why it could not be asked."""

    job: SqueueJob | None = None
    error: str | None = None


class SessionManager:
    def __init__(self, config: HPCManager, state_path: str, log: logging.Logger,
                 clock: Callable[[], float] = time.monotonic, base_url: str = "/") -> None:
        self.config = config
        self.base_url = base_url
        self.clusters = config.clusters
        self.log = log
        self.clock = clock
        self.executor = ThreadPoolExecutor(config.executor_threads, thread_name_prefix="hpc-ssh")
        self.pool = SSHPool(
            self.clusters,
            SSHSettings(
                connect_timeout=config.ssh_timeout,
                command_timeout=config.command_timeout,
                keepalive_interval=config.keepalive_interval,
                ssh_config_file=config.ssh_config_file,
                use_system_known_hosts=config.use_system_known_hosts,
            ),
            log,
        )
        self.locks = {name: asyncio.Lock() for name in self.clusters}
        # Separate from the launch/stop locks: attaching to an IDE (tunnel, login) waits its turn
        # instead of answering 429.
        self.attach_locks = {name: asyncio.Lock() for name in self.clusters}
        # The tunnels' sockets: a folder only this server's user can enter (mkdtemp makes 0700).
        self.tunnel_dir = tempfile.mkdtemp(prefix="jhm-tunnels-")
        self.ide_client = IDEClient(self._tunnel_path, self._ide_channel,
                                    timeout=config.ssh_timeout)
        self.cache: TTLCache[Snapshot] = TTLCache(
            config.cache_ttl, clock, min_refresh=config.refresh_min_interval)
        self.commands: collections.Counter[str] = collections.Counter()
        self.store = StateStore(state_path, log)
        record = self.store.load()
        self.sessions: dict[str, Session] = {}
        for hpc, d in (record.get("sessions") or {}).items():
            if hpc in self.clusters:
                try:
                    self.sessions[hpc] = Session.from_record(d)
                except (KeyError, TypeError):
                    log.warning("jupyter-hpc-manager: dropping a bad session record for %s", hpc)
        active = record.get("activeHpc")
        self.active_hpc: str | None = active if active in self.sessions else None
        if self.sessions:
            log.info("jupyter-hpc-manager: found sessions from before the restart: %s",
                     ", ".join(f"{s.hpc} job {s.job_id}" for s in self.sessions.values()))

    # -- plumbing ----------------------------------------------------------------------------
    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    async def _run(self, hpc: str, kind: str, command: str,
                   stdin: str | None = None) -> CommandResult:
        self.commands[kind] += 1
        result: CommandResult = await self._blocking(self.pool[hpc].run, command, stdin)
        return result

    async def _save(self) -> None:
        record = {
            "activeHpc": self.active_hpc,
            "sessions": {hpc: s.record() for hpc, s in self.sessions.items()},
        }
        await self._blocking(self.store.save, record)

    def _cluster(self, hpc: Any) -> str:
        return validation.parse_hpc(hpc, self.clusters)

    async def _exclusively(self, hpc: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a launch or stop alone on its cluster (anyone else meanwhile gets 429), then
        forget the cached status, which it has made stale."""
        lock = self.locks[hpc]
        if lock.locked():
            raise LockError("Operation already in progress", {"hpc": hpc})
        async with lock:
            try:
                return await operation()
            finally:
                self.cache.invalidate()

    # -- SLURM -------------------------------------------------------------------------------
    async def _squeue(self, hpc: str) -> list[SqueueJob]:
        cluster = self.clusters[hpc]
        result = await self._run(hpc, "squeue", slurm.shell_join(
            slurm.squeue_argv(cluster.squeue, cluster.job_name)))
        if result.exit_status != 0:
            why = _last_lines(result.stderr) or f"exit {result.exit_status}"
            raise JobError(f"squeue on {hpc} failed: {why}", {"hpc": hpc})
        try:
            return slurm.parse_squeue(result.stdout)
        except slurm.SlurmParseError as exc:
            raise JobError(f"squeue on {hpc} printed what we cannot read: {exc}",
                           {"hpc": hpc}) from exc

    async def _current_job(self, hpc: str) -> SqueueJob | None:
        return slurm.pick_job(await self._squeue(hpc), self.clusters[hpc].job_name)

    async def _observe(self, hpc: str) -> Observation:
        try:
            return Observation(job=await self._current_job(hpc))
        except HPCError as exc:
            return Observation(error=exc.message)
        except Exception as exc:
            # One cluster's surprise must not take the others' status down with it.
            self.log.exception("jupyter-hpc-manager: asking %s for its jobs failed", hpc)
            return Observation(error=f"Unexpected error asking {hpc}: {type(exc).__name__}")

    async def _snapshot(self) -> Snapshot:
        names = list(self.clusters)
        taken_at = utcnow_iso()
        observations = await asyncio.gather(*(self._observe(h) for h in names))
        snapshot = dict(zip(names, observations, strict=True))
        await self._reconcile(snapshot)
        return Snapshot(taken_at, snapshot)

    async def _reconcile(self, snapshot: dict[str, Observation]) -> None:
        """Bring our sessions in line with what SLURM said; a cluster that could not be asked
        keeps its session untouched (unknown is not idle)."""
        changed = False
        for hpc, obs in snapshot.items():
            session = self.sessions.get(hpc)
            if session is None or obs.error is not None:
                continue
            job = obs.job
            if job is None or job.job_id != session.job_id:
                self.log.info("jupyter-hpc-manager: job %s on %s has ended", session.job_id, hpc)
                self._forget(hpc)
                changed = True
            elif (job.state.value, job.node, job.start_time) != (
                    session.status, session.node, session.started_at):
                session.status, session.node = job.state.value, job.node
                session.started_at = job.start_time
                changed = True
        if changed:
            await self._save()

    def _forget(self, hpc: str) -> None:
        session = self.sessions.pop(hpc, None)
        if session is not None:
            self._detach(session)
        if self.active_hpc == hpc:
            running = [h for h, s in self.sessions.items() if s.status == JobState.RUNNING.value]
            self.active_hpc = running[0] if running else None

    async def _read_connection(self, hpc: str, job_id: str) -> Connection | None:
        result = await self._run(hpc, "cat", slurm.shell_join(
            ["cat", "--", slurm.connection_file(job_id)]))
        if result.exit_status != 0:
            return None
        try:
            d = json.loads(result.stdout)
            host, port, password = d["host"], int(d["port"]), d["password"]
            if not (_SAFE_HOST.match(host) and 0 < port < 65536 and isinstance(password, str)
                    and len(password) >= 16):
                raise ValueError("bad values")
        except (ValueError, KeyError, TypeError) as exc:
            # Never echo the file: it holds the password.
            raise JobError(f"The IDE's connection file for job {job_id} on {hpc} is malformed",
                           {"hpc": hpc, "jobId": job_id}) from exc
        return Connection(host, port, password)

    # -- the IDE ---------------------------------------------------------------------------------
    def ide_url(self, hpc: str) -> str:
        return f"{self.base_url.rstrip('/')}/hpc/{hpc}/code/"

    def _tunnel_path(self, hpc: str) -> str | None:
        session = self.sessions.get(hpc)
        return session.tunnel.path if session and session.tunnel else None

    async def _ide_channel(self, hpc: str) -> Any:
        """A new channel to a cluster's IDE (the HTTP client's 'connect')."""
        session = self.sessions.get(hpc)
        if session is None or session.tunnel is None:
            raise TunnelError(f"No tunnel to {hpc}")
        return await self._blocking(session.tunnel.open_channel)

    def _open_tunnel(self, session: Session) -> None:
        if session.tunnel is None and session.connection is not None:
            path = os.path.join(self.tunnel_dir, f"{session.hpc}-{session.job_id}.sock")
            session.tunnel = Tunnel(self.pool[session.hpc], session.connection.host,
                                    session.connection.port, path, self.log)

    def _detach(self, session: Session) -> None:
        if session.tunnel is not None:
            session.tunnel.close()
            self.log.info("jupyter-hpc-manager: closed the tunnel to %s job %s",
                          session.hpc, session.job_id)
        session.tunnel = None
        session.ide_cookie = None

    async def _ide_ready(self, session: Session) -> bool:
        """TCP through the tunnel and an HTTP answer from code-server, then a login."""
        self._open_tunnel(session)
        if not await self.ide_client.healthy(session.hpc):
            return False
        assert session.connection is not None
        session.ide_cookie = await self.ide_client.login(session.hpc,
                                                         session.connection.password)
        return True

    async def ide_session(self, hpc: str | None) -> Session:
        """The running session whose IDE the proxy should serve, attached (tunnel open, logged
        in). NotFoundError when there is none: the proxy shows a page saying so."""
        if hpc is None:
            hpc = self.active_hpc
            if hpc is None:
                raise NotFoundError("No VS Code session is active.")
        if hpc not in self.clusters:
            raise NotFoundError(f"There is no cluster named {hpc[:64]!r}.")
        session = self.sessions.get(hpc)
        if session is None or session.status != JobState.RUNNING.value:
            raise NotFoundError(f"No VS Code session is running on {hpc}.")
        if session.ide_cookie is None or session.tunnel is None:
            async with self.attach_locks[hpc]:
                if session.ide_cookie is None or session.tunnel is None:
                    await self._attach(session)
        return session

    async def _attach(self, session: Session) -> None:
        if session.connection is None:
            session.connection = await self._read_connection(session.hpc, session.job_id)
            if session.connection is None:
                raise NotFoundError(f"VS Code on {session.hpc} has not started yet.")
        if not await self._ide_ready(session):
            raise TunnelError(f"VS Code on {session.hpc} (node {session.node}) does not answer.",
                              {"hpc": session.hpc})
        self.log.info("jupyter-hpc-manager: attached to VS Code on %s (job %s, node %s)",
                      session.hpc, session.job_id, session.node)

    async def relogin(self, session: Session) -> None:
        """code-server forgot our session (it restarted, or the cookie expired): log in again,
        once for however many requests noticed."""
        stale = session.ide_cookie
        async with self.attach_locks[session.hpc]:
            if session.ide_cookie == stale and session.connection is not None:
                self.log.info("jupyter-hpc-manager: logging in to VS Code on %s again (job %s)",
                              session.hpc, session.job_id)
                session.ide_cookie = await self.ide_client.login(session.hpc,
                                                                 session.connection.password)

    async def _log_tail(self, hpc: str, job_id: str) -> str:
        path = slurm.log_file(self.clusters[hpc].job_name, job_id)
        result = await self._run(hpc, "tail", slurm.shell_join(["tail", "-n", "20", "--", path]))
        return result.stdout.strip() if result.exit_status == 0 else ""

    # -- the contract ------------------------------------------------------------------------
    async def cluster_status(self, refresh: bool = False) -> dict[str, Any]:
        hit = await self.cache.get(self._snapshot, refresh=refresh)
        out: dict[str, Any] = {}
        for hpc, obs in hit.value.observations.items():
            out[hpc] = _cluster_entry(obs, hit.age)
            session = self.sessions.get(hpc)
            if (out[hpc]["status"] == JobState.RUNNING.value and session is not None
                    and session.job_id == out[hpc]["jobId"]):
                out[hpc]["url"] = self.ide_url(hpc)
        out.update(
            activeHpc=self.active_hpc,
            updatedAt=hit.value.taken_at,
            cached=hit.cached,
            cacheAge=int(hit.age),
            cacheTtl=self.config.cache_ttl,
        )
        return out

    def status(self) -> dict[str, Any]:
        c = self.config
        return {
            "sessions": {hpc: self._session_api(hpc) for hpc in self.clusters},
            "activeHpc": self.active_hpc,
            "config": {
                "defaultHpc": c.default_cluster,
                "defaultCpus": c.default_cpus,
                "defaultMem": c.default_mem,
                "defaultTime": c.default_time,
                "maxCpus": c.max_cpus,
                "clusters": list(self.clusters),
            },
        }

    def _session_api(self, hpc: str) -> dict[str, Any]:
        session = self.sessions.get(hpc)
        if session is None:
            return {"status": JobState.IDLE.value}
        d = session.to_api()
        if session.status == JobState.RUNNING.value:
            d["url"] = self.ide_url(hpc)
        return d

    def _parse_launch(self, body: dict[str, Any]) -> tuple[str, JobRequest]:
        c = self.config
        hpc = self._cluster(body.get("hpc", c.default_cluster))
        request = JobRequest(
            cpus=validation.parse_cpus(body.get("cpus", c.default_cpus), c.max_cpus),
            mem=validation.parse_mem(body.get("mem", c.default_mem)),
            time=validation.parse_time(body.get("time", c.default_time)),
        )
        return hpc, request

    async def launch(self, body: dict[str, Any]) -> dict[str, Any]:
        hpc, request = self._parse_launch(body)
        return await self._exclusively(hpc, lambda: self._launch(hpc, request))

    async def _launch(self, hpc: str, request: JobRequest) -> dict[str, Any]:
        cluster = self.clusters[hpc]
        # A record we cannot write is found out before a job is submitted, not after.
        await self._save()
        # A failed query raises here: when we cannot see the queue we must not submit.
        job = await self._current_job(hpc)
        if job is not None:
            job_id, existing = job.job_id, True
            self.log.info("jupyter-hpc-manager: launch on %s finds job %s (%s); reconnecting",
                          hpc, job_id, job.slurm_state)
            if hpc not in self.sessions or self.sessions[hpc].job_id != job_id:
                self.sessions[hpc] = Session(hpc, job_id, job.state.value, job.cpus, job.memory,
                                             _normal_duration(job.time_limit,
                                                              job.time_limit_seconds),
                                             job.start_time, job.node)
        else:
            existing = False
            argv = slurm.sbatch_argv(cluster.sbatch, cluster.job_name, request,
                                     partition=cluster.partition, account=cluster.account,
                                     extra_args=cluster.extra_sbatch_args)
            command = (slurm.shell_join(["mkdir", "-p", "-m", "700", slurm.REMOTE_DIR,
                                         slurm.REMOTE_LOG_DIR]) + " && "
                       + slurm.shell_join(argv))
            script = slurm.job_script(cluster.job_name, prologue=cluster.prologue,
                                      ide_command=cluster.ide_command)
            result = await self._run(hpc, "sbatch", command, stdin=script)
            if result.exit_status != 0:
                message = _last_lines(result.stderr) or f"sbatch exited {result.exit_status}"
                self.log.warning("jupyter-hpc-manager: sbatch on %s refused the job: %s",
                                 hpc, message)
                raise JobError(f"SLURM refused the job on {hpc}: {message}",
                               {"hpc": hpc, "stderr": result.stderr.strip()[-2000:]})
            try:
                job_id = slurm.parse_sbatch_job_id(result.stdout)
            except slurm.SlurmParseError as exc:
                raise JobError(f"sbatch on {hpc}: {exc}", {"hpc": hpc}) from exc
            self.log.info("jupyter-hpc-manager: launch on %s submitted job %s (cpus=%s mem=%s "
                          "time=%s)", hpc, job_id, request.cpus, request.mem, request.time)
            self.sessions[hpc] = Session(hpc, job_id, JobState.PENDING.value, str(request.cpus),
                                         request.mem, request.time)
        await self._save()
        return await self._wait_ready(hpc, job_id, existing)

    async def _wait_ready(self, hpc: str, job_id: str, existing: bool) -> dict[str, Any]:
        """Follow the job until it runs and its IDE wrote its connection file, or the bound
        passes (then it is pending, and stays queued). A job that ends first is an error with
        its log's tail."""
        deadline = self.clock() + self.config.launch_timeout
        session = self.sessions[hpc]
        while True:
            jobs = await self._squeue(hpc)
            job = next((j for j in jobs if j.job_id == job_id), None)
            if job is None or job.state is JobState.IDLE:
                tail = await self._log_tail(hpc, job_id)
                self._forget(hpc)
                await self._save()
                state = job.slurm_state if job else "gone from the queue"
                self.log.warning("jupyter-hpc-manager: job %s on %s ended before its IDE came "
                                 "up (%s)", job_id, hpc, state)
                raise JobError(
                    f"Job {job_id} on {hpc} ended before the IDE came up ({state})"
                    + (f": {_last_lines(tail, 3)}" if tail else ""),
                    {"hpc": hpc, "jobId": job_id, "log": tail},
                )
            session.status, session.node = job.state.value, job.node
            session.started_at = job.start_time
            session.cpus, session.memory = job.cpus, job.memory
            session.walltime = _normal_duration(job.time_limit, job.time_limit_seconds)
            if job.state is JobState.RUNNING:
                if session.connection is None:
                    session.connection = await self._read_connection(hpc, job_id)
                if session.connection is not None and await self._ide_ready(session):
                    self.active_hpc = hpc
                    await self._save()
                    status = "connected" if existing else "running"
                    self.log.info("jupyter-hpc-manager: %s session on %s: job %s on node %s",
                                  status, hpc, job_id, job.node)
                    return {"status": status, "jobId": job_id, "node": job.node, "hpc": hpc,
                            "url": self.ide_url(hpc)}
            if self.clock() >= deadline:
                await self._save()
                self.log.info("jupyter-hpc-manager: job %s on %s still %s after %.0f s",
                              job_id, hpc, job.slurm_state.lower(), self.config.launch_timeout)
                reason = job.reason
                if job.state is JobState.RUNNING:
                    reason = "The job runs; VS Code is still starting"
                return {"status": "pending", "jobId": job_id, "node": job.node, "hpc": hpc,
                        "reason": reason}
            await asyncio.sleep(self.config.poll_interval)

    async def switch(self, hpc: Any) -> dict[str, Any]:
        hpc = self._cluster(hpc)
        await self.cache.get(self._snapshot)
        session = self.sessions.get(hpc)
        if session is None or session.status != JobState.RUNNING.value:
            raise ValidationError(f"No running session on {hpc}", {"hpc": hpc})
        if self.active_hpc != hpc:
            previous, self.active_hpc = self.active_hpc, hpc
            try:
                await self._save()
            except HPCError:
                self.active_hpc = previous
                raise
        self.log.info("jupyter-hpc-manager: switched to %s (job %s)", hpc, session.job_id)
        return {"status": "switched", "hpc": hpc}

    async def stop(self, hpc: Any, body: dict[str, Any]) -> dict[str, Any]:
        cancel = validation.parse_bool(body.get("cancelJob", False), "cancelJob")
        if hpc is None:
            hpc = self.active_hpc or self.config.default_cluster
        name = self._cluster(hpc)
        return await self._exclusively(name, lambda: self._stop(name, cancel))

    async def _stop(self, hpc: str, cancel: bool) -> dict[str, Any]:
        session = self.sessions.get(hpc)
        cancelled: list[str] = []
        if cancel:
            cluster = self.clusters[hpc]
            jobs = await self._squeue(hpc)
            ids = {j.job_id for j in jobs
                   if j.name == cluster.job_name and j.state is not JobState.IDLE}
            if session is not None:
                ids.add(session.job_id)
            if ids:
                result = await self._run(hpc, "scancel", slurm.shell_join(
                    [cluster.scancel, *sorted(ids)]))
                if result.exit_status != 0 and "Invalid job id" not in result.stderr:
                    raise JobError(f"scancel on {hpc} failed: {_last_lines(result.stderr)}",
                                   {"hpc": hpc, "jobIds": sorted(ids)})
                cancelled = sorted(ids)
                await self._wait_gone(hpc, set(ids))
        self._forget(hpc)
        await self._save()
        self.log.info("jupyter-hpc-manager: stopped %s%s", hpc,
                      f"; cancelled job {', '.join(cancelled)}" if cancelled else
                      f"; job {session.job_id} keeps running" if session else "")
        reply: dict[str, Any] = {"status": "stopped", "hpc": hpc}
        if cancel:
            reply["cancelledJobs"] = cancelled
        return reply

    async def _wait_gone(self, hpc: str, ids: set[str]) -> None:
        deadline = self.clock() + self.config.stop_timeout
        while self.clock() < deadline:
            jobs = await self._squeue(hpc)
            if not any(j.job_id in ids for j in jobs):
                return
            await asyncio.sleep(min(0.5, self.config.poll_interval))
        self.log.warning("jupyter-hpc-manager: job(s) %s on %s still in squeue %.0f s after "
                         "scancel", ", ".join(sorted(ids)), hpc, self.config.stop_timeout)

    def close(self) -> None:
        for session in self.sessions.values():
            self._detach(session)
        self.ide_client.close()
        shutil.rmtree(self.tunnel_dir, ignore_errors=True)
        self.pool.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _last_lines(text: str, n: int = 2) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[-n:])


def _normal_duration(text: str, seconds: int | None) -> str:
    """squeue prints 5 minutes as '5:00'; the contract speaks HH:MM:SS."""
    return text if seconds is None else slurm.format_duration(seconds)


def _cluster_entry(obs: Observation, age: float) -> dict[str, Any]:
    if obs.error is not None:
        return {"status": JobState.UNKNOWN.value, "error": obs.error}
    job = obs.job
    if job is None:
        return {"status": JobState.IDLE.value}
    entry: dict[str, Any] = {"status": job.state.value, "jobId": job.job_id, "node": job.node}
    left = job.time_left_seconds
    if job.state is JobState.RUNNING and left is not None:
        # A cached answer still counts down: take off the time since squeue was asked.
        left = max(0, left - int(age))
        entry.update(timeLeft=slurm.format_duration(left), timeLeftSeconds=left,
                     timeLeftHuman=slurm.format_human(left))
    elif job.state is JobState.RUNNING:
        entry.update(timeLeft=job.time_left, timeLeftSeconds=None, timeLeftHuman=job.time_left)
    entry.update(
        timeLimit=_normal_duration(job.time_limit, job.time_limit_seconds),
        timeLimitSeconds=job.time_limit_seconds,
        cpus=job.cpus,
        memory=job.memory,
        startTime=job.start_time,
    )
    if job.state is JobState.PENDING:
        entry["reason"] = job.reason
    return entry

