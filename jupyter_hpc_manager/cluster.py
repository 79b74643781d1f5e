"""One cluster: its settings, its SSH connection, its launch/stop and attach locks, the session
this server holds there and what its squeue last said. Everything that changes one cluster's
state happens here; the manager (sessions.py) is a registry of these plus what spans clusters.

Two rules keep a slow or flaky scheduler from misleading us:
- A status query applies what it saw only if no launch or stop ran on the cluster since it began
  (``generation``) and none runs now: an old answer never forgets, adopts or changes a session.
- The job is the source of truth: a live job of ours that we do not hold is adopted (unless the
  user stopped it without cancelling), and a failed query never changes anything (unknown is
  not idle)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paramiko

from . import contract, slurm, validation
from .cache import CacheHit, TTLCache
from .config import ClusterConfig, HPCManager
from .errors import (
    ConnectionLost,
    HPCError,
    JobError,
    LockError,
    LoginFailed,
    LoginRequired,
    NotFoundError,
    SshError,
    TunnelError,
    ValidationError,
)
from .ide import IDE
from .login import LoginAttempt
from .slurm import JobRequest, JobState, SqueueJob
from .ssh import CommandResult, SSHConnection
from .tunnel import Tunnel

T = TypeVar("T")
_SAFE_HOST = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
LIVE = (JobState.PENDING, JobState.RUNNING)
IDE_CHECK_INTERVAL = 0.2  # seconds between looks for a running job's IDE during a launch


@dataclass(frozen=True)
class Connection:
    """Where the IDE listens and its password; the password never leaves the server."""

    host: str
    port: int
    password: str = field(repr=False)


@dataclass
class Session:
    """A job this server holds on a cluster (the persisted part has no password)."""

    hpc: str
    job_id: str
    status: JobState  # PENDING or RUNNING: a session whose job ended is forgotten
    cpus: str
    memory: str
    walltime: str
    started_at: str | None = None
    node: str | None = None
    partition: str | None = None
    gpus: str | None = None
    account: str | None = None
    qos: str | None = None
    # In memory only: where the IDE listens (with its password) and the IDE once attached.
    connection: Connection | None = field(default=None, repr=False, compare=False)
    ide: IDE | None = field(default=None, repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self.status is JobState.RUNNING

    def record(self) -> dict[str, Any]:
        return {"hpc": self.hpc, "job_id": self.job_id, "status": self.status.value,
                "cpus": self.cpus, "memory": self.memory, "walltime": self.walltime,
                "started_at": self.started_at, "node": self.node, "partition": self.partition,
                "gpus": self.gpus, "account": self.account, "qos": self.qos}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Session:
        status = JobState(d["status"])
        if status not in LIVE:
            raise ValueError(f"status {status.value}")
        return cls(
            hpc=str(d["hpc"]), job_id=str(d["job_id"]), status=status,
            cpus=str(d["cpus"]), memory=str(d["memory"]), walltime=str(d["walltime"]),
            started_at=d.get("started_at"), node=d.get("node"), partition=d.get("partition"),
            gpus=d.get("gpus"), account=d.get("account"), qos=d.get("qos"),
        )

    @classmethod
    def from_job(cls, hpc: str, job: SqueueJob) -> Session:
        session = cls(hpc, job.job_id, job.state, job.cpus, job.memory,
                      contract.normal_duration(job.time_limit, job.time_limit_seconds),
                      job.start_time, job.node)
        session.follow(job)
        return session

    def _facts(self) -> tuple[Any, ...]:
        return (self.status, self.node, self.started_at, self.cpus, self.memory, self.walltime,
                self.partition, self.gpus, self.account, self.qos)

    def follow(self, job: SqueueJob) -> bool:
        """Take what SLURM says about our job; True if anything changed."""
        before = self._facts()
        self.status, self.node, self.started_at = job.state, job.node, job.start_time
        self.cpus, self.memory = job.cpus, job.memory
        self.walltime = contract.normal_duration(job.time_limit, job.time_limit_seconds)
        self.partition, self.gpus = job.partition, job.gpus
        self.account, self.qos = job.account, job.qos
        if self.ide is not None:
            self.ide.node = job.node
        return before != self._facts()


@dataclass(frozen=True)
class Observation:
    """What one squeue said about one cluster (or why it could not be asked), when it was
    asked (ISO, for updatedAt), and the cluster's generation then."""

    taken_at: str
    generation: int
    job: SqueueJob | None = None
    error: str | None = None


@dataclass(frozen=True)
class Offer:
    """What a cluster offers a launch: its partitions (one sinfo), and the user's accounts and
    QOS where SLURM keeps accounting (None where they cannot be read)."""

    partitions: list[slurm.Partition] | None
    error: str | None = None  # why the partitions could not be read
    accounts: list[str] | None = None
    qos: list[str] | None = None


@dataclass
class Services:
    """What every cluster shares, handed down by the manager."""

    settings: HPCManager
    log: logging.Logger
    clock: Callable[[], float]
    blocking: Callable[..., Awaitable[Any]]  # run a blocking call in the executor
    commands: Counter[str]  # commands run on login nodes, by kind (tests count them)
    changed: Callable[[Cluster], Awaitable[None]]  # a session changed: persist, fix activeHpc
    ide_url: Callable[[str], str]


class Cluster:
    def __init__(self, config: ClusterConfig, ssh: SSHConnection, services: Services) -> None:
        self.name = config.name
        self.config = config
        self.ssh = ssh
        self.services = services
        self.settings = services.settings
        self.log = services.log
        self.operation = asyncio.Lock()  # a launch or stop; others meanwhile get 429
        # Attaching to the IDE (reading the connection file, logging in) waits its turn.
        self.attaching = asyncio.Lock()
        self.session: Session | None = None
        self.detached: str | None = None  # a job the user stopped without cancelling it
        self.generation = 0  # moves when a launch or stop begins and ends
        self.status: TTLCache[Observation] = TTLCache(
            self.settings.cache_ttl, services.clock, min_refresh=self.settings.refresh_min_interval)
        self.last: CacheHit[Observation] | None = None  # the newest answer, with its clock time
        self._last_at = 0.0
        self.offer: TTLCache[Offer] = TTLCache(
            self.settings.cache_ttl, services.clock, min_refresh=self.settings.refresh_min_interval)
        self._connecting: asyncio.Future[paramiko.Transport] | None = None
        # A login node that asks for a password or code: why a login is needed now (None: it
        # is not), whether the connection we hold took a person's answers (then it is not
        # replaced on our own when it drops), and the login under way.
        self.login_required: str | None = None
        self.interactive = False
        self._login: LoginAttempt | None = None

    @property
    def busy(self) -> bool:
        return self.operation.locked()

    # -- logging in ----------------------------------------------------------------------------
    def login_state(self) -> str | None:
        """"required", "connected" (a logged-in connection is open), or None for a cluster
        that needs no login (keys)."""
        if self.login_required is None and self.interactive and self.ssh.current() is None:
            self._lost(f"The connection to {self.name} was closed: log in again from "
                       "JupyterLab. A job there keeps running.")
        if self.login_required is not None:
            return "required"
        return "connected" if self.interactive else None

    def _lost(self, why: str) -> None:
        """The logged-in connection is gone: nothing more runs here until the user logs in."""
        self.login_required = why
        self.log.info("jupyter-hpc-manager: %s", why)
        self._close_ide()  # its channels died with the connection

    def _close_ide(self) -> None:
        """Drop the session's IDE handle (the next request attaches anew, over the connection
        then open; the job's connection file is kept)."""
        if self.session is not None and self.session.ide is not None:
            self.session.ide.close()
            self.session.ide = None

    def need_login(self) -> None:
        if self.login_state() == "required":
            assert self.login_required is not None
            raise LoginRequired(self.login_required, {"hpc": self.name, "login": "required"})

    async def login(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a login (no loginId) or answer its current round of prompts. Answers: the
        next round, or connected. A refusal or an expired attempt ends it (LoginFailed)."""
        if "loginId" not in body:
            if "answers" in body:
                raise ValidationError("answers need the loginId of the round they answer",
                                      {"field": "loginId"})
            return await self._start_login()
        login_id = body["loginId"]
        if not isinstance(login_id, str):
            raise ValidationError("loginId must be a string", {"field": "loginId"})
        attempt = self._login
        if (attempt is None or attempt.finished
                or not secrets.compare_digest(attempt.id.encode(), login_id.encode())):
            raise LoginFailed(f"This login to {self.name} has ended (it succeeded, was refused "
                              "or expired): start a new one", {"hpc": self.name})
        attempt.answer(body.get("answers"))
        return await self._login_step(attempt)

    async def _start_login(self) -> dict[str, Any]:
        if self._login is not None and not self._login.finished:
            raise LockError(f"A login to {self.name} is already under way", {"hpc": self.name})
        if self.ssh.current() is not None:
            return contract.login_reply(self.name)
        attempt = LoginAttempt(self.name, asyncio.get_running_loop(),
                               self.settings.login_timeout)
        self._login = attempt
        self.log.info("jupyter-hpc-manager: logging in to %s", self.name)
        attempt.task = asyncio.ensure_future(self.services.blocking(self.ssh.connect, attempt))
        attempt.task.add_done_callback(_retrieve)
        return await self._login_step(attempt)

    async def _login_step(self, attempt: LoginAttempt) -> dict[str, Any]:
        round_ = await attempt.next_round()
        if round_ is not None:
            return attempt.reply(round_)
        assert attempt.task is not None
        try:
            attempt.task.result()
        except HPCError as exc:
            self.log.info("jupyter-hpc-manager: login to %s failed: %s", self.name, exc.message)
            raise
        self.login_required = None
        self.interactive = attempt.used
        self.status.invalidate()  # what squeue said while logged out says nothing now
        self.log.info("jupyter-hpc-manager: logged in to %s", self.name)
        return contract.login_reply(self.name)

    async def logout(self) -> dict[str, Any]:
        """Close the connection (and end a login under way). A job keeps running; a cluster
        that needs a login needs it again, one with keys reconnects when next used."""
        if self._login is not None and not self._login.finished:
            self._login.cancel()
        transport = self.ssh.current()
        if transport is not None:
            await self.services.blocking(self.ssh.drop, transport)
        if self.interactive or self.login_required is not None:
            self._lost(f"You logged out of {self.name}: log in again from JupyterLab to use "
                       "it. A job there keeps running.")
        else:
            self._close_ide()
        self.status.invalidate()
        self.log.info("jupyter-hpc-manager: logged out of %s", self.name)
        return contract.logout_reply(self.name)

    # -- SSH -----------------------------------------------------------------------------------
    async def transport(self) -> paramiko.Transport:
        """The live connection, opened if needed. Concurrent callers share one attempt (which
        runs in one executor thread and is bounded by ssh_timeout); nobody holds a lock."""
        transport = self.ssh.current()
        if transport is not None:
            return transport
        # A cluster that needs a person's answers is not tried again on our own: a login node
        # counts failed logins (and may lock the account).
        self.need_login()
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> paramiko.Transport:
        try:
            transport: paramiko.Transport = await self.services.blocking(self.ssh.connect)
            return transport
        except LoginRequired as exc:
            if self.ssh.current() is None:  # (a login that succeeded meanwhile wins)
                self._lost(exc.message)
            raise

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(transport, *args) in the executor; a connection found dead before anything ran
        on it is replaced once."""
        for attempt in (1, 2):
            transport = await self.transport()
            try:
                result: T = await self.services.blocking(fn, transport, *args)
                return result
            except ConnectionLost:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def run(self, kind: str, command: str, stdin: str | None = None) -> CommandResult:
        self.services.commands[kind] += 1
        return await self._call(self.ssh.run, command, stdin)

    async def open_channel(self, host: str, port: int) -> paramiko.Channel:
        return await self._call(self.ssh.open_channel, host, port)

    # -- SLURM ---------------------------------------------------------------------------------
    async def squeue(self) -> list[SqueueJob]:
        result = await self.run("squeue", slurm.squeue_command(self.config.squeue,
                                                               self.config.job_name))
        if result.exit_status != 0:
            why = _last_lines(result.stderr) or f"exit {result.exit_status}"
            raise JobError(f"squeue on {self.name} failed: {why}", {"hpc": self.name})
        try:
            return slurm.parse_squeue(result.stdout)
        except slurm.SlurmParseError as exc:
            raise JobError(f"squeue on {self.name} printed what we cannot read: {exc}",
                           {"hpc": self.name}) from exc

    async def current_job(self, tries: int = 1) -> SqueueJob | None:
        """Our live job, if any. With tries > 1 a query SLURM failed (a busy controller's
        "Socket timed out") is asked again after a pause; an SSH failure is not."""
        for attempt in range(1, tries + 1):
            try:
                return slurm.pick_job(await self.squeue(), self.config.job_name)
            except JobError as exc:
                if attempt == tries:
                    raise
                self.log.info("jupyter-hpc-manager: asking %s again: %s", self.name,
                              exc.message)
                await asyncio.sleep(self.settings.poll_interval)
        raise AssertionError("unreachable")

    async def _observe(self) -> Observation:
        generation = self.generation
        taken_at = contract.utcnow_iso()
        try:
            obs = Observation(taken_at, generation, job=await self.current_job())
        except HPCError as exc:
            obs = Observation(taken_at, generation, error=exc.message)
        except Exception as exc:
            # One cluster's surprise must not take the others' status down with it.
            self.log.exception("jupyter-hpc-manager: asking %s for its jobs failed", self.name)
            obs = Observation(taken_at, generation,
                              error=f"Unexpected error asking {self.name}: {type(exc).__name__}")
        self.last, self._last_at = CacheHit(obs, 0.0, False), self.services.clock()
        # Apply it only if nothing happened on the cluster since the question was asked.
        if generation == self.generation and not self.busy and self._apply(obs):
            await self._changed()
        return obs

    async def observe(self, refresh: bool = False) -> CacheHit[Observation]:
        """What squeue says (from the cache within its TTL; refresh: ask now)."""
        hit = await self.status.get(self._observe, refresh=refresh)
        if hit.value.generation != self.generation and hit.value.error is None:
            # A launch or stop began or ended while this was asked, so what squeue said may no
            # longer hold: ask again (the operation emptied the cache: this is a new query). A
            # failed query changed nothing and says nothing out of date.
            hit = await self.status.get(self._observe, refresh=True)
        return hit

    async def offers(self, refresh: bool = False) -> CacheHit[Offer]:
        """The partitions (and accounts, QOS) from the cache within its TTL; refresh: ask."""
        return await self.offer.get(self._read_offer, refresh=refresh)

    async def _read_offer(self) -> Offer:
        """sinfo (and sacctmgr). A failure is raised, never cached: one busy moment of
        slurmctld does not hide the partitions (or skip a launch's checks) for a whole TTL; the
        next caller asks again."""
        result = await self.run("sinfo", slurm.sinfo_command(self.config.sinfo))
        if result.exit_status != 0:
            why = _last_lines(result.stderr) or f"exit {result.exit_status}"
            raise JobError(f"sinfo on {self.name} failed: {why}", {"hpc": self.name})
        try:
            partitions = slurm.parse_sinfo(result.stdout)
        except slurm.SlurmParseError as exc:
            raise JobError(f"sinfo on {self.name} printed what we cannot read: {exc}",
                           {"hpc": self.name}) from exc
        accounts = qos = None
        if self.config.sacctmgr:
            try:
                result = await self.run("sacctmgr", slurm.assoc_command(self.config.sacctmgr))
                if result.exit_status == 0 and result.stdout.strip():
                    accounts, qos = slurm.parse_assoc(result.stdout)
            except HPCError:
                pass  # no accounting here: accounts and QOS are typed, not chosen
        return Offer(partitions, None, accounts, qos)

    async def check(self, request: JobRequest) -> None:
        """Refuse a request over its partition's limits (known from sinfo; a cluster whose sinfo
        fails launches unchecked, and SLURM judges) or a folder that is not there. An SSH failure
        is the launch's error."""
        try:
            offer = (await self.offers()).value
        except JobError as exc:
            self.log.info("jupyter-hpc-manager: launch on %s goes on unchecked: %s", self.name,
                          exc.message)
            offer = Offer(None, exc.message)
        if offer.partitions is not None:
            validation.check_partition(request, offer.partitions, self.name)
        for name, value, yours in (("account", request.account, offer.accounts),
                                   ("qos", request.qos, offer.qos)):
            if value is not None and yours is not None and value not in yours:
                raise ValidationError(f"{name} {value} is not one of yours on {self.name} "
                                      f"({', '.join(yours)})", {"field": name})
        if request.workdir is not None:
            result = await self.run("test", slurm.shell_join(["test", "-d", request.workdir]))
            if result.exit_status != 0:
                raise ValidationError(f"workdir {request.workdir!r} is not a folder on "
                                      f"{self.name}", {"field": "workdir"})

    def previous(self) -> CacheHit[Observation] | None:
        """The newest answer, as a cached one (for a query that has not answered yet)."""
        if self.last is None:
            return None
        return CacheHit(self.last.value, self.services.clock() - self._last_at, True)

    def _apply(self, obs: Observation) -> bool:
        """Bring the session in line with SLURM; True if anything changed."""
        if obs.error is not None:
            return False  # unknown is not idle
        job, session, changed = obs.job, self.session, False
        if session is not None and (job is None or job.job_id != session.job_id):
            self.log.info("jupyter-hpc-manager: job %s on %s has ended", session.job_id,
                          self.name)
            self._forget()
            session, changed = None, True
        if self.detached is not None and (job is None or job.job_id != self.detached):
            self.detached, changed = None, True  # the job the user kept has ended
        if job is None:
            return changed
        if session is None:
            if job.job_id == self.detached:
                return changed
            self.session = Session.from_job(self.name, job)
            self.log.info("jupyter-hpc-manager: found job %s on %s (%s), not held by this server:"
                          " following it", job.job_id, self.name, job.slurm_state)
            return True
        return session.follow(job) or changed

    def _forget(self) -> None:
        session, self.session = self.session, None
        if session is not None and session.ide is not None:
            session.ide.close()
            self.log.info("jupyter-hpc-manager: closed the connections to VS Code on %s (job %s)",
                          self.name, session.job_id)

    async def _changed(self) -> None:
        await self.services.changed(self)

    # -- launch and stop -----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """A launch or stop runs alone on its cluster (anyone else meanwhile gets 429); status
        queries that overlap it do not apply what they saw, and the cache is emptied."""
        if self.busy:
            raise LockError("Operation already in progress", {"hpc": self.name})
        async with self.operation:
            self.generation += 1
            self.status.invalidate()
            try:
                yield
            finally:
                self.generation += 1
                self.status.invalidate()

    async def launch(self, request: JobRequest) -> dict[str, Any]:
        async with self.exclusive():
            # Over a partition's limit, or a folder that is not there: nothing is submitted.
            await self.check(request)
            # A record we cannot write is found out before a job is submitted, not after.
            await self._changed()
            # A failed query raises here: when we cannot see the queue we must not submit.
            job = await self.current_job(tries=2)
            existing = job is not None
            if job is not None:
                self.log.info("jupyter-hpc-manager: launch on %s finds job %s (%s); reconnecting",
                              self.name, job.job_id, job.slurm_state)
                if self.session is None or self.session.job_id != job.job_id:
                    self._forget()
                    self.session = Session.from_job(self.name, job)
            else:
                job_id = await self._submit(request)
                self._forget()
                self.session = Session(self.name, job_id, JobState.PENDING, str(request.cpus),
                                       request.mem, request.time, partition=request.partition,
                                       gpus=request.gpus, account=request.account,
                                       qos=request.qos)
            self.detached = None
            await self._changed()
            return await self._wait_ready(self.session, existing)

    async def _submit(self, request: JobRequest) -> str:
        c = self.config
        # (The cluster's default partition, account and QOS are in the request already.)
        argv = slurm.sbatch_argv(c.sbatch, c.job_name, request, extra_args=c.extra_sbatch_args)
        script = slurm.job_script(c.job_name, prologue=c.prologue, ide_command=c.ide_command,
                                  proxy_uri=self.services.ide_url(self.name) + "proxy/{{port}}/")
        try:
            result = await self.run("sbatch", slurm.submit_command(argv), stdin=script)
        except SshError as exc:
            # sbatch may have submitted the job before the connection broke or the command ran
            # out of time: look before calling it a failure, so the job is never lost.
            with contextlib.suppress(HPCError):
                job = await self.current_job()
                if job is not None:
                    self.log.warning("jupyter-hpc-manager: sbatch on %s: %s; its job %s is "
                                     "queued all the same", self.name, exc.message, job.job_id)
                    return job.job_id
            raise
        if result.exit_status != 0:
            message = _last_lines(result.stderr) or f"sbatch exited {result.exit_status}"
            self.log.warning("jupyter-hpc-manager: sbatch on %s refused the job: %s",
                             self.name, message)
            raise JobError(f"SLURM refused the job on {self.name}: {message}",
                           {"hpc": self.name, "stderr": result.stderr.strip()[-2000:]})
        try:
            job_id = slurm.parse_sbatch_job_id(result.stdout)
        except slurm.SlurmParseError as exc:
            raise JobError(f"sbatch on {self.name}: {exc}", {"hpc": self.name}) from exc
        self.log.info("jupyter-hpc-manager: launch on %s submitted job %s (cpus=%s mem=%s "
                      "time=%s partition=%s gpus=%s)", self.name, job_id, request.cpus,
                      request.mem, request.time, request.partition, request.gpus)
        return job_id

    async def _wait_ready(self, session: Session, existing: bool) -> dict[str, Any]:
        """Follow the job until it runs and its IDE answers, or the bound passes (then it is
        pending, and stays queued). A job that ends first is an error with its log's tail. A
        query that fails meanwhile (a busy controller, a dropped connection) is asked again:
        the job was submitted, so the launch goes on."""
        clock = self.services.clock
        deadline = clock() + self.settings.launch_timeout
        absent = 0
        problem: str | None = None
        job: SqueueJob | None = None
        ask_at = 0.0  # when to ask SLURM next: every poll_interval
        while True:
            if clock() >= ask_at:
                ask_at = clock() + self.settings.poll_interval
                try:
                    jobs = await self.squeue()
                except HPCError as exc:
                    problem = exc.message
                    self.log.info("jupyter-hpc-manager: launch on %s goes on after: %s",
                                  self.name, problem)
                else:
                    problem = None
                    job = next((j for j in jobs if j.job_id == session.job_id), None)
                    # An ended job is gone for sure; an absent one is believed on the second
                    # look.
                    if (job is not None and job.state is JobState.IDLE) or (job is None and
                                                                            absent):
                        await self._ended_early(session, job)
                    absent = 1 if job is None else 0
                    if job is not None:
                        session.follow(job)
            if session.running and await self._attach(session):
                status = "connected" if existing else "running"
                self.log.info("jupyter-hpc-manager: %s session on %s: job %s on node %s",
                              status, self.name, session.job_id, session.node)
                return contract.launch_reply(status, session, url=self.services.ide_url(self.name))
            if clock() >= deadline:
                await self._changed()
                reason = job.reason if job is not None else None
                if problem is not None:
                    reason = f"SLURM did not answer: {problem}"
                elif job is not None and job.state is JobState.RUNNING:
                    reason = "The job runs; VS Code is still starting"
                self.log.info("jupyter-hpc-manager: job %s on %s not ready after %.0f s (%s)",
                              session.job_id, self.name, self.settings.launch_timeout, reason)
                return contract.launch_reply("pending", session, reason=reason)
            # Once the job runs, its IDE is looked for often (a cat or a health check over the
            # open connection, nothing for slurmctld), so the launch answers soon after the IDE
            # listens; SLURM is still asked only every poll_interval.
            wait = ask_at - clock()
            if session.running:
                wait = min(wait, IDE_CHECK_INTERVAL)
            await asyncio.sleep(max(0.0, wait))

    async def _ended_early(self, session: Session, job: SqueueJob | None) -> None:
        tail = await self._log_tail(session.job_id)
        self._forget()
        await self._changed()
        state = job.slurm_state if job else "gone from the queue"
        self.log.warning("jupyter-hpc-manager: job %s on %s ended before its IDE came up (%s)",
                         session.job_id, self.name, state)
        raise JobError(
            f"Job {session.job_id} on {self.name} ended before the IDE came up ({state})"
            + (f": {_last_lines(tail, 3)}" if tail else ""),
            {"hpc": self.name, "jobId": session.job_id, "log": tail},
        )

    async def stop(self, cancel: bool) -> dict[str, Any]:
        async with self.exclusive():
            session = self.session
            cancelled: list[str] | None = None
            if cancel:
                cancelled = await self._cancel(session)
                self.detached = None
            else:
                # The job keeps running and is not taken up again until a launch asks for it.
                kept = session.job_id if session else None
                if kept is None and self.last is not None and self.last.value.job is not None:
                    kept = self.last.value.job.job_id
                self.detached = kept or self.detached
            self._forget()
            await self._changed()
        self.log.info("jupyter-hpc-manager: stopped %s%s", self.name,
                      f"; cancelled job {', '.join(cancelled)}" if cancelled else
                      f"; job {session.job_id} keeps running" if session and not cancel else "")
        return contract.stop_reply(self.name, cancelled)

    async def _cancel(self, session: Session | None) -> list[str]:
        try:
            jobs = await self.squeue()
            ids = {j.job_id for j in jobs
                   if j.name == self.config.job_name and j.state is not JobState.IDLE}
        except HPCError:
            if session is None:
                raise
            ids = set()  # we know our job; cancel it even when the queue cannot be read
        if session is not None:
            ids.add(session.job_id)
        if not ids:
            return []
        result = await self.run("scancel", slurm.scancel_command(self.config.scancel, ids))
        if result.exit_status != 0 and "Invalid job id" not in result.stderr:
            raise JobError(f"scancel on {self.name} failed: {_last_lines(result.stderr)}",
                           {"hpc": self.name, "jobIds": sorted(ids)})
        await self._wait_gone(ids)
        return sorted(ids)

    async def _wait_gone(self, ids: set[str]) -> None:
        deadline = self.services.clock() + self.settings.stop_timeout
        while self.services.clock() < deadline:
            try:
                if not any(j.job_id in ids for j in await self.squeue()):
                    return
            except HPCError as exc:
                self.log.info("jupyter-hpc-manager: stop on %s goes on after: %s", self.name,
                              exc.message)
            await asyncio.sleep(min(0.5, self.settings.poll_interval))
        self.log.warning("jupyter-hpc-manager: job(s) %s on %s still in squeue %.0f s after "
                         "scancel", ", ".join(sorted(ids)), self.name, self.settings.stop_timeout)

    # -- the IDE -------------------------------------------------------------------------------
    async def ide(self) -> IDE:
        """The running session's IDE, attached (connection file read, logged in).
        NotFoundError when there is none: the proxy shows a page saying so."""
        self.need_login()
        session = self.session
        if session is None or not session.running:
            raise NotFoundError(f"No VS Code session is running on {self.name}.")
        if (session.ide is None or not session.ide.ready) and not await self._attach(session):
            if session.connection is None:
                raise NotFoundError(f"VS Code on {self.name} has not started yet.")
            raise TunnelError(f"VS Code on {self.name} (node {session.node}) does not answer.",
                              {"hpc": self.name})
        assert session.ide is not None
        return session.ide

    async def _attach(self, session: Session) -> bool:
        """Connection file, tunnel, an HTTP answer from code-server, a login: True when all
        are there (False: not yet). One attempt at a time per cluster."""
        async with self.attaching:
            if session.ide is not None and session.ide.ready:
                return True
            if self.session is not session:
                raise NotFoundError(f"No VS Code session is running on {self.name}.")
            if session.connection is None:
                session.connection = await self._read_connection(session.job_id)
                if session.connection is None:
                    return False
            if session.ide is None:
                conn = session.connection
                session.ide = IDE(self.name, session.job_id, session.node,
                                  Tunnel(self.name, conn.host, conn.port, self.open_channel),
                                  conn.password, self.log, timeout=self.settings.ssh_timeout)
            if not await session.ide.start():
                return False
        self.log.info("jupyter-hpc-manager: attached to VS Code on %s (job %s, node %s)",
                      self.name, session.job_id, session.node)
        return True

    async def _read_connection(self, job_id: str) -> Connection | None:
        result = await self.run("cat", slurm.read_connection_command(job_id))
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
            raise JobError(f"The IDE's connection file for job {job_id} on {self.name} is "
                           "malformed", {"hpc": self.name, "jobId": job_id}) from exc
        return Connection(host, port, password)

    async def _log_tail(self, job_id: str) -> str:
        try:
            result = await self.run("tail", slurm.log_tail_command(self.config.job_name, job_id))
        except HPCError:
            return ""
        return result.stdout.strip() if result.exit_status == 0 else ""

    async def aclose(self, cancel: bool = False) -> None:
        """The server is stopping: end queries and connection attempts still running, and every
        connection to the login node and the IDE. The job keeps running unless ``cancel``."""
        await self.status.aclose()
        await self.offer.aclose()
        if cancel and self.session is not None:
            job = self.session.job_id
            try:
                await asyncio.wait_for(self.stop(cancel=True), self.settings.command_timeout)
                self.log.info("jupyter-hpc-manager: cancelled job %s on %s as the server stops",
                              job, self.name)
            except (HPCError, asyncio.TimeoutError) as exc:
                self.log.warning("jupyter-hpc-manager: could not cancel job %s on %s as the "
                                 "server stops: %s", job, self.name,
                                 getattr(exc, "message", None) or "timed out")
        if self._login is not None and not self._login.finished:
            self._login.cancel()  # a thread waiting for answers gives up
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        if self.session is not None and self.session.ide is not None:
            self.session.ide.close()
        self.ssh.close()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a background attempt's outcome seen (the login step that reads it may be gone)."""
    if not future.cancelled():
        future.exception()


def _last_lines(text: str, n: int = 2) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[-n:])
