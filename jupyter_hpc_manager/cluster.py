"""One cluster's session life: launch, follow, stop, adopt and attach the IDE; and the one state
every answer about the cluster is made from (``view``). How the cluster is reached is the login
node's (login_node.py), what SLURM is asked the scheduler client's (scheduler.py); the data is
in models.py, and the REST shapes in contract.py.

Two rules keep a slow or flaky scheduler from misleading us:
- One truth: a view is made from the session this server holds and the newest observation of
  the current generation (the generation moves when a launch or stop begins and ends). An older
  observation is never shown, nor applied: an old answer never forgets, adopts or changes a
  session. While SLURM does not answer, a held session is shown as last known, ``stale``, with
  the reason; never idle.
- The job is the source of truth: a live job of ours that we do not hold is adopted (unless the
  user stopped it without cancelling), a held job that squeue misses is believed gone on the
  second look in a row (slurm.job_gone, for status and launch alike), and a failed query
  changes nothing (unknown is not idle)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from . import slurm, validation
from .cache import CacheHit, TTLCache
from .config import ClusterConfig, HPCManager
from .errors import (
    HPCError,
    JobError,
    LockError,
    NotAllowed,
    NotFoundError,
    SshError,
    TunnelError,
    ValidationError,
)
from .ide import IDE
from .login_node import LoginNode
from .models import (
    ClusterView,
    LastEnd,
    LaunchOutcome,
    LoginDone,
    LoginPrompt,
    Observation,
    Offer,
    Session,
    StopOutcome,
    TimeOutcome,
    utcnow_iso,
)
from .scheduler import Scheduler, last_lines
from .slurm import JobRequest, JobState, SqueueJob
from .ssh import SSHConnection
from .tunnel import Tunnel

IDE_CHECK_INTERVAL = 0.2  # seconds between looks for a running job's IDE during a launch


@dataclass
class Services:
    """What every cluster shares, handed down by the manager."""

    settings: HPCManager
    log: logging.Logger
    clock: Callable[[], float]
    commands: Counter[str]  # commands run on login nodes, by kind (tests count them)
    changed: Callable[[Cluster], Awaitable[None]]  # a session changed: persist, fix activeHpc
    ide_url: Callable[[str], str]


class Cluster:
    def __init__(self, config: ClusterConfig, ssh: SSHConnection, services: Services) -> None:
        self.name = config.name
        self.config = config
        self.services = services
        self.settings = services.settings
        self.log = services.log
        self.node = LoginNode(config.name, ssh, services.settings, services.log,
                              services.commands, on_lost=self._close_ide,
                              threads=config.threads, max_sessions=config.max_sessions)
        self.scheduler = Scheduler(config, self.node, services.log)
        self.operation = asyncio.Lock()  # a launch or stop; others meanwhile get 429
        # Attaching to the IDE (reading the connection file, logging in) waits its turn.
        self.attaching = asyncio.Lock()
        self.session: Session | None = None
        self.detached: str | None = None  # a job the user stopped without cancelling it
        self.last_end: LastEnd | None = None  # how the last session followed here ended
        self._cancel_asked: tuple[str, str] | None = None  # (job, reason) of the last scancel
        # Idle auto-cancel: the running job the clock is for, and when it was last used (the
        # manager's clock).
        self._idle_job: str | None = None
        self._last_input = 0.0
        self.generation = 0  # moves when a launch or stop begins and ends
        self.observation: Observation | None = None  # the newest one (see view())
        self._op_observation: Observation | None = None  # an operation's last word from SLURM
        self.squeue_cache: TTLCache[Observation] = TTLCache(
            self._squeue_ttl, self._clock, min_refresh=self.settings.refresh_min_interval)
        self.sinfo_cache: TTLCache[Offer] = TTLCache(
            self.settings.cache_ttl, self._clock, min_refresh=self.settings.refresh_min_interval)
        self.offer_error: str | None = None  # why the last sinfo failed (failures are not cached)
        self.kernels_running = 0  # notebook kernels running as steps of the job (kernels.py)
        self.offer_failed_at = float("-inf")

    def _squeue_ttl(self) -> float:
        """squeue's answers are fresh for cache_ttl; while this server's own job pends, for
        pending_cache_ttl: the server follows its queued job once for every open tab."""
        s = self.session
        if s is not None and s.status == JobState.PENDING:
            return min(self.settings.pending_cache_ttl, self.settings.cache_ttl)
        return self.settings.cache_ttl

    async def kernel_offer(self, job_id: str) -> dict[str, dict[str, Any]]:
        """The kernels the running job offers (see Scheduler.kernel_offer)."""
        node = self.session.node if self.session is not None else None
        return await self.scheduler.kernel_offer(job_id, node)

    def _clock(self) -> float:
        """The clock of SLURM's answers (their ages, the caches): the one tests move. The
        bounds of launches and stops are real time (_now)."""
        return self.services.clock()

    @property
    def ssh(self) -> SSHConnection:
        return self.node.ssh

    @property
    def busy(self) -> bool:
        return self.operation.locked()

    # -- the one state -----------------------------------------------------------------------
    def current_observation(self) -> Observation | None:
        """The newest observation if it is of the current generation (else None: it may predate
        the session's last change, and says nothing now)."""
        obs = self.observation
        return obs if obs is not None and obs.generation == self.generation else None

    def view(self, hit: CacheHit[Observation] | None = None, asking_for: float = 0.0,
             asked: bool = False) -> ClusterView:
        """The cluster as every answer shows it. ``asked``: this answer asked squeue (status
        does not); ``hit``: what it answered (None: not yet), ``asking_for``: for how long the
        query has been running (0 where a launch or stop began meanwhile)."""
        view = self._view(hit, asking_for, asked)
        if self.last_end is not None:
            view = replace(view, last_end=self.last_end)
        timeout = self.settings.idle_cancel_seconds(self.config)
        idle = self.idle_seconds()
        if timeout is not None and idle is not None and view.status is JobState.RUNNING:
            at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=max(0.0, timeout - idle))
            view = replace(view, idle_seconds=idle,
                           idle_cancel_at=at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return view

    def _view(self, hit: CacheHit[Observation] | None, asking_for: float,
              asked: bool) -> ClusterView:
        s = self.session
        login = self.node.login_state()
        if login == "required":
            return ClusterView(self.name, JobState.UNKNOWN, session=s,
                               job=s.job if s else None, error=self.node.login_required,
                               login=login)
        obs = self.current_observation()
        error = obs.error if obs is not None else None
        if error is None and asked and hit is None:
            error = (f"SLURM on {self.name} has not answered yet (asked {asking_for:.0f} s "
                     "ago); still asking")
        cached = hit is None or hit.cached
        now = self._clock()
        if s is not None:
            age = now - s.seen_clock if s.seen_clock is not None else 0.0
            url = self.services.ide_url(self.name) if s.running else None
            return ClusterView(self.name, s.status, session=s, job=s.job, taken_at=s.seen_at,
                               age=age, cached=cached, stale=error is not None, error=error,
                               login=login, url=url)
        if obs is None:
            if error is not None:
                return ClusterView(self.name, JobState.UNKNOWN, error=error, login=login)
            # (status, which does not ask: nothing is held here.)
            return ClusterView(self.name, JobState.IDLE, login=login, cached=True)
        age = now - obs.taken_clock
        if obs.error is not None:
            return ClusterView(self.name, JobState.UNKNOWN, taken_at=obs.taken_at, age=age,
                               cached=cached, error=obs.error, login=login)
        job = obs.job
        return ClusterView(self.name, job.state if job else JobState.IDLE, job=job,
                           taken_at=obs.taken_at, age=age, cached=cached, login=login)

    # -- asking SLURM --------------------------------------------------------------------------
    async def _observe(self) -> Observation:
        generation = self.generation
        taken_at, taken_clock = utcnow_iso(), self._clock()
        try:
            jobs = await self.scheduler.jobs()
            s = self.session
            if (s is not None and s.absent == 0 and generation == self.generation
                    and not self.busy and _find(jobs, s.job_id) is None):
                # Our job is missing: believed gone only on a second look (slurm.job_gone),
                # taken now, so that this answer is the one that says so.
                s.absent = 1
                await asyncio.sleep(self.settings.poll_interval)
                taken_at, taken_clock = utcnow_iso(), self._clock()
                jobs = await self.scheduler.jobs()
            obs = Observation(taken_at, taken_clock, generation,
                              job=slurm.pick_job(jobs, self.config.job_name), jobs=tuple(jobs))
        except HPCError as exc:
            obs = Observation(taken_at, taken_clock, generation, error=exc.message)
        except Exception as exc:
            # One cluster's surprise must not take the others' status down with it.
            self.log.exception("jupyter-hpc-manager: asking %s for its jobs failed", self.name)
            obs = Observation(taken_at, taken_clock, generation,
                              error=f"Unexpected error asking {self.name}: {type(exc).__name__}")
        if self.observation is None or obs.generation >= self.observation.generation:
            self.observation = obs
        # Apply it only if nothing happened on the cluster since the question was asked.
        if generation == self.generation and not self.busy and self._apply(obs):
            await self._changed()
        return obs

    async def observe(self, refresh: bool = False) -> CacheHit[Observation]:
        """What squeue says (from the cache within its TTL; refresh: ask now)."""
        hit = await self.squeue_cache.get(self._observe, refresh=refresh)
        if hit.value.generation != self.generation and hit.value.error is None:
            # A launch or stop began or ended while this was asked, so what squeue said may no
            # longer hold: ask again (the operation emptied the cache: this is a new query). A
            # failed query changed nothing and says nothing out of date.
            hit = await self.squeue_cache.get(self._observe, refresh=True)
        return hit

    def _apply(self, obs: Observation) -> bool:
        """Bring the session in line with SLURM; True if anything persisted changed."""
        if obs.error is not None:
            return False  # unknown is not idle
        job, session, changed = obs.job, self.session, False
        if session is not None:
            mine = _find(obs.jobs, session.job_id)
            if slurm.job_gone(mine, session.absent):
                self.log.info("jupyter-hpc-manager: job %s on %s has ended (%s)",
                              session.job_id, self.name,
                              mine.slurm_state if mine else "gone from the queue")
                self._forget(self._end_of(session, mine))
                session, changed = None, True
            elif mine is None:
                session.absent += 1  # missed once: the next look decides
                return False
            else:
                return session.follow(mine, obs.taken_at, obs.taken_clock)
        if self.detached is not None and (job is None or job.job_id != self.detached):
            self.detached, changed = None, True  # the job the user kept has ended
        if job is None or job.job_id == self.detached:
            return changed
        self.session = Session.from_job(self.name, job, obs.taken_at, obs.taken_clock)
        self.log.info("jupyter-hpc-manager: found job %s on %s (%s), not held by this server: "
                      "following it", job.job_id, self.name, job.slurm_state)
        return True

    async def _ask_in_operation(self) -> list[SqueueJob]:
        """squeue during a launch or stop; its answer is the operation's last word (kept as
        the observation of the generation the operation ends in)."""
        taken_at, taken_clock = utcnow_iso(), self._clock()
        jobs = await self.scheduler.jobs()
        self._op_observation = Observation(
            taken_at, taken_clock, self.generation,
            job=slurm.pick_job(jobs, self.config.job_name), jobs=tuple(jobs))
        return jobs

    # -- what the cluster offers ---------------------------------------------------------------
    async def offers(self, refresh: bool = False) -> CacheHit[Offer]:
        """The partitions (and accounts, QOS) from the cache within its TTL; refresh: ask."""
        return await self.sinfo_cache.get(self._read_offer, refresh=refresh)

    def offer_now(self, refresh: bool = False) -> tuple[Offer | str, bool]:
        """What the cluster offers, from memory (never waiting): the newest offer (with the
        last failure's words, if sinfo failed since), or why there is none; and whether sinfo
        is being asked (started here when nothing is fresh, or on refresh)."""
        if self.node.login_state() == "required":
            return "log in to see what this cluster offers", False
        # A failure is not cached (a launch's check asks again), but it is not asked again in
        # the background within status_wait of it, unless refreshed: a panel that follows
        # partitionsPending stops when the answer is in, even when it is a failure.
        if refresh or self._clock() - self.offer_failed_at >= self.settings.status_wait:
            self.sinfo_cache.start(self._read_offer, refresh=refresh)
        hit = self.sinfo_cache.peek()
        asking = self.sinfo_cache.is_asking()
        if hit is not None:
            return (replace(hit.value, error=self.offer_error) if self.offer_error
                    else hit.value), asking
        return self.offer_error or f"still asking {self.name} what it offers", asking

    async def _read_offer(self) -> Offer:
        """A failure is raised, never cached: one busy moment of slurmctld does not hide the
        partitions (or skip a launch's checks) for a whole TTL; the next caller asks again."""
        try:
            offer = await self.scheduler.offer()
        except HPCError as exc:
            self.offer_error, self.offer_failed_at = exc.message, self._clock()
            raise
        self.offer_error = None
        return offer

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
        if request.workdir is not None and not await self.scheduler.is_folder(request.workdir):
            raise ValidationError(f"workdir {request.workdir!r} is not a folder on "
                                  f"{self.name}", {"field": "workdir"})

    # -- logging in ----------------------------------------------------------------------------
    async def login(self, body: dict[str, Any]) -> LoginPrompt | LoginDone:
        outcome = await self.node.login(body)
        if isinstance(outcome, LoginDone):
            # What squeue and sinfo said while logged out says nothing now.
            self._new_generation()
            self.offer_error, self.offer_failed_at = None, float("-inf")
        return outcome

    async def logout(self) -> LoginDone:
        outcome = await self.node.logout()
        self._new_generation()
        return outcome

    def _new_generation(self) -> None:
        self.generation += 1
        self.squeue_cache.invalidate()

    # -- launch and stop -----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """A launch or stop runs alone on its cluster (anyone else meanwhile gets 429); status
        queries that overlap it apply nothing, and the cache is emptied. SLURM's last answer
        during the operation is the first observation of the generation it ends in."""
        if self.busy:
            raise LockError("Operation already in progress", {"hpc": self.name})
        async with self.operation:
            self._new_generation()
            self._op_observation = None
            try:
                yield
            except SshError as exc:
                # The login node could not be reached: that is the cluster's state now.
                self._op_observation = Observation(utcnow_iso(), self._clock(),
                                                   self.generation, error=exc.message)
                raise
            finally:
                self._new_generation()
                last, self._op_observation = self._op_observation, None
                if last is not None:
                    self.observation = replace(last, generation=self.generation)

    async def launch(self, request: JobRequest) -> LaunchOutcome:
        deadline = _now() + self.settings.launch_timeout
        async with self.exclusive():
            # Over a partition's limit, or a folder that is not there: nothing is submitted.
            await self.check(request)
            # A record we cannot write is found out before a job is submitted, not after.
            await self._changed()
            # A failed query raises here: when we cannot see the queue we must not submit.
            job = await self.scheduler.current_job(tries=2, pause=self.settings.poll_interval)
            existing = job is not None
            if job is not None:
                self.log.info("jupyter-hpc-manager: launch on %s finds job %s (%s); reconnecting",
                              self.name, job.job_id, job.slurm_state)
                if self.session is None or self.session.job_id != job.job_id:
                    self._forget()
                    self.session = Session.from_job(self.name, job, utcnow_iso(), self._clock())
            else:
                job_id = await self.scheduler.submit(
                    request, secrets.token_hex(8),
                    proxy_uri=self.services.ide_url(self.name) + "proxy/{{port}}/",
                    grace=self.settings.command_timeout, pause=self.settings.poll_interval)
                self._forget()
                self.session = Session(self.name, job_id, JobState.PENDING, str(request.cpus),
                                       request.mem, request.time, partition=request.partition,
                                       gpus=request.gpus, account=request.account,
                                       qos=request.qos)
            self.detached = None
            await self._changed()
            return await self._wait_ready(self.session, existing, deadline)

    async def _wait_ready(self, session: Session, existing: bool,
                          deadline: float) -> LaunchOutcome:
        """Follow the job until it runs and its IDE answers, or the launch's bound passes (then
        it is pending, and stays queued). A job that ends first is an error with its log's tail.
        A query that fails meanwhile (a busy controller, a dropped connection) is asked again:
        the job was submitted, so the launch goes on."""
        clock = _now
        problem: str | None = None
        job: SqueueJob | None = None
        ask_at = 0.0  # when to ask SLURM next: every poll_interval
        while True:
            if clock() >= ask_at:
                ask_at = clock() + self.settings.poll_interval
                try:
                    jobs = await self._ask_in_operation()
                except HPCError as exc:
                    problem = exc.message
                    self.log.info("jupyter-hpc-manager: launch on %s goes on after: %s",
                                  self.name, problem)
                else:
                    problem = None
                    assert self._op_observation is not None
                    job = _find(jobs, session.job_id)
                    if slurm.job_gone(job, session.absent):
                        await self._ended_early(session, job)
                    if job is None:
                        session.absent += 1
                    else:
                        session.follow(job, self._op_observation.taken_at,
                                       self._op_observation.taken_clock)
            if session.running and await self._attach(session):
                status = "connected" if existing else "running"
                self.log.info("jupyter-hpc-manager: %s session on %s: job %s on node %s",
                              status, self.name, session.job_id, session.node)
                return LaunchOutcome(status, self.name, session.job_id, session.node,
                                     url=self.services.ide_url(self.name))
            if clock() >= deadline:
                await self._changed()
                reason = job.reason if job is not None else None
                if problem is not None:
                    reason = f"SLURM did not answer: {problem}"
                elif job is not None and job.state is JobState.RUNNING:
                    reason = "The job runs; VS Code is still starting"
                self.log.info("jupyter-hpc-manager: job %s on %s not ready within the launch's "
                              "%.0f s (%s)", session.job_id, self.name,
                              self.settings.launch_timeout, reason)
                return LaunchOutcome("pending", self.name, session.job_id, session.node,
                                     reason=reason)
            # Once the job runs, its IDE is looked for often (a cat or a health check over the
            # open connection, nothing for slurmctld), so the launch answers soon after the IDE
            # listens; SLURM is still asked only every poll_interval.
            wait = min(ask_at, deadline) - clock()
            if session.running:
                wait = min(wait, IDE_CHECK_INTERVAL)
            await asyncio.sleep(max(0.0, wait))

    async def _ended_early(self, session: Session, job: SqueueJob | None) -> None:
        tail = await self.scheduler.log_tail(session.job_id)
        state = job.slurm_state if job else "gone from the queue"
        self._forget(LastEnd(session.job_id, "failed", utcnow_iso(), state))
        await self._changed()
        self.log.warning("jupyter-hpc-manager: job %s on %s ended before its IDE came up (%s)",
                         session.job_id, self.name, state)
        raise JobError(
            f"Job {session.job_id} on {self.name} ended before the IDE came up ({state})"
            + (f": {last_lines(tail, 3)}" if tail else ""),
            {"hpc": self.name, "jobId": session.job_id, "log": tail},
        )

    async def stop(self, cancel: bool, reason: str = "stopped") -> StopOutcome:
        async with self.exclusive():
            session = self.session
            cancelled: list[str] | None = None
            if cancel:
                cancelled = await self._cancel(session, reason)
                self.detached = None
            else:
                # The job keeps running and is not taken up again until a launch asks for it.
                kept = session.job_id if session else None
                if kept is None and self.observation is not None and self.observation.job:
                    kept = self.observation.job.job_id
                self.detached = kept or self.detached
            self._forget(LastEnd(session.job_id, reason, utcnow_iso())
                         if cancel and session is not None else None)
            await self._changed()
        self.log.info("jupyter-hpc-manager: stopped %s%s", self.name,
                      f"; cancelled job {', '.join(cancelled)}" if cancelled else
                      f"; job {session.job_id} keeps running" if session and not cancel else "")
        return StopOutcome(self.name, cancelled)

    async def _cancel(self, session: Session | None, reason: str) -> list[str]:
        try:
            jobs = await self._ask_in_operation()
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
        if session is not None:
            # (a scancel that times out may still reach slurmctld: if the job then ends, it
            # ended for this reason, not behind our back)
            self._cancel_asked = (session.job_id, reason)
        await self.scheduler.cancel(ids)
        await self._wait_gone(ids)
        return sorted(ids)

    async def _wait_gone(self, ids: set[str]) -> None:
        deadline = _now() + self.settings.stop_timeout
        while _now() < deadline:
            try:
                if not any(j.job_id in ids for j in await self._ask_in_operation()):
                    return
            except HPCError as exc:
                self.log.info("jupyter-hpc-manager: stop on %s goes on after: %s", self.name,
                              exc.message)
            await asyncio.sleep(min(0.5, self.settings.poll_interval))
        self.log.warning("jupyter-hpc-manager: job(s) %s on %s still in squeue %.0f s after "
                         "scancel", ", ".join(sorted(ids)), self.name, self.settings.stop_timeout)

    def _forget(self, end: LastEnd | None = None) -> None:
        """Let the session go; end: how its job ended (None: it did not, or not for us)."""
        session, self.session = self.session, None
        if end is not None:
            self.last_end = end
        if session is not None and session.ide is not None:
            session.ide.close()
            self.log.info("jupyter-hpc-manager: closed the connections to VS Code on %s (job %s)",
                          self.name, session.job_id)

    # -- idle auto-cancel ----------------------------------------------------------------------
    def idle_seconds(self) -> float | None:
        """For how long nobody has used the running session (None: none runs). Its clock
        starts when this server first sees it run."""
        s = self.session
        if s is None or not s.running:
            return None
        now = self._clock()
        if self._idle_job != s.job_id:
            self._idle_job, self._last_input = s.job_id, now
        return max(0.0, now - self._last_input)

    def note_input(self, ago: float = 0.0) -> None:
        """A person used the running session (ago seconds ago): its idle clock starts again."""
        if self.idle_seconds() is not None:
            self._last_input = max(self._last_input, self._clock() - max(0.0, ago))

    async def cancel_if_idle(self) -> bool:
        """Cancel the running job if it has been idle for the cluster's idle_cancel_minutes
        (through stop with cancelJob; lastEnd says idle). True if it was."""
        timeout = self.settings.idle_cancel_seconds(self.config)
        idle = self.idle_seconds()
        if timeout is None or idle is None or idle < timeout or self.busy:
            return False
        if self.node.login_required is not None:
            # Nothing can run there until the user logs in again (the panel asks them to); the
            # clock goes on, and the first check after the login cancels.
            return False
        job = self.session.job_id if self.session else "?"
        self.log.warning("jupyter-hpc-manager: job %s on %s has been idle for %.0f minutes: "
                         "cancelling it (idle_cancel_minutes)", job, self.name, idle / 60)
        try:
            await self.stop(cancel=True, reason="idle")
        except HPCError as exc:
            self.log.warning("jupyter-hpc-manager: the idle cancel of %s failed: %s", self.name,
                             exc.message)
            return False
        return True

    # -- the job's time limit -------------------------------------------------------------------
    async def change_time(self, new_time: Any) -> TimeOutcome:
        """Set the held job's TimeLimit as SLURM lets its owner (validation.check_time_change);
        a raise of a running job goes to the site's extend_command where there is one."""
        async with self.exclusive():
            session = self.session
            if session is None:
                raise NotFoundError(f"No session on {self.name}", {"hpc": self.name})
            jobs = await self._ask_in_operation()
            job = _find(jobs, session.job_id)
            if job is None or job.state is JobState.IDLE:
                raise NotFoundError(f"Job {session.job_id} on {self.name} is no longer in the "
                                    "queue", {"hpc": self.name, "jobId": session.job_id})
            partition = None
            if job.state is JobState.PENDING and job.partition:
                try:  # (MaxTime; without it SLURM's own refusal is the answer)
                    offer = (await self.offers()).value
                    partition = next((p for p in offer.partitions or []
                                      if p.name == job.partition), None)
                except HPCError:
                    pass
            elapsed = max(0, (job.time_limit_seconds or 0) - (job.time_left_seconds or 0)) \
                if job.state is JobState.RUNNING else 0
            try:
                text, _, change = validation.check_time_change(
                    new_time, job.state, job.time_limit_seconds, elapsed, partition, self.name)
            except NotAllowed as exc:
                command = self.settings.extend_command
                if not command:
                    raise NotAllowed(f"{exc.message} (job {job.job_id})",
                                     {"hpc": self.name, "jobId": job.job_id}) from None
                text = validation.parse_time(new_time)
                await self.scheduler.extend(command, job.job_id, text)
                change = "extended"
            else:
                if change != "same":
                    await self.scheduler.set_time_limit(job.job_id, text)
            jobs = await self._ask_in_operation()
            now = _find(jobs, session.job_id)
            if now is not None and now.state is not JobState.IDLE:
                session.follow(now, utcnow_iso(), self._clock())
                text = session.walltime
            await self._changed()
        self.log.info("jupyter-hpc-manager: time limit of job %s on %s: %s (%s)",
                      session.job_id, self.name, text, change)
        return TimeOutcome(self.name, session.job_id, text, change)

    def _end_of(self, session: Session, job: SqueueJob | None) -> LastEnd:
        """How session's job ended, from what squeue says of it now (None: gone) or last said."""
        seen = job or session.job
        left = None
        if seen is not None and seen.time_left_seconds is not None and (
                session.seen_clock is not None):
            left = seen.time_left_seconds - (self._clock() - session.seen_clock)
        state = job.slurm_state if job is not None else None
        reason = slurm.end_reason(state, left)
        if self._cancel_asked is not None and self._cancel_asked[0] == session.job_id and (
                state is None or state.startswith("CANCELLED")):
            reason = self._cancel_asked[1]  # our scancel that did not answer in time did it
        return LastEnd(session.job_id, reason, utcnow_iso(), state)

    async def _changed(self) -> None:
        await self.services.changed(self)

    # -- the IDE -------------------------------------------------------------------------------
    def _close_ide(self) -> None:
        """Drop the session's IDE handle (its channels died with the connection; the next
        request attaches anew over the connection then open; the connection file is kept)."""
        if self.session is not None and self.session.ide is not None:
            self.session.ide.close()
            self.session.ide = None

    async def ide(self) -> IDE:
        """The running session's IDE, attached (connection file read, logged in).
        NotFoundError when there is none: the proxy shows a page saying so."""
        self.node.need_login()
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
                session.connection = await self.scheduler.read_connection(session.job_id)
                if session.connection is None:
                    return False
            if session.ide is None:
                conn = session.connection
                session.ide = IDE(self.name, session.job_id, session.node,
                                  Tunnel(self.name, conn.host, conn.port, self.node.open_channel,
                                         timeout=self.settings.ide_timeout),
                                  conn.password, self.log, timeout=self.settings.ssh_timeout,
                                  ide_timeout=self.settings.ide_timeout)
            if not await session.ide.start():
                return False
        self.log.info("jupyter-hpc-manager: attached to VS Code on %s (job %s, node %s)",
                      self.name, session.job_id, session.node)
        return True

    async def aclose(self, cancel: bool = False) -> None:
        """The server is stopping: end queries and connection attempts still running, and every
        connection to the login node and the IDE. The job keeps running unless ``cancel``."""
        await self.squeue_cache.aclose()
        await self.sinfo_cache.aclose()
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
        if self.session is not None and self.session.ide is not None:
            self.session.ide.close()
        await self.node.aclose()


def _now() -> float:
    return asyncio.get_running_loop().time()


def _find(jobs: tuple[SqueueJob, ...] | list[SqueueJob], job_id: str) -> SqueueJob | None:
    return next((j for j in jobs if j.job_id == job_id), None)
