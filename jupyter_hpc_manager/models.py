"""Plain data about a cluster: the session this server holds, what SLURM said, what a cluster
offers a launch, one cluster's state as shown, and the typed outcomes of launch, stop and login.
No I/O here; contract.py turns these into the REST contract's JSON."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import slurm
from .slurm import JobState, SqueueJob

if TYPE_CHECKING:
    from .ide import IDE

LIVE = (JobState.PENDING, JobState.RUNNING)


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
    """A job this server holds on a cluster, and SLURM's last word about it (the persisted part
    has neither the password nor the IDE)."""

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
    # What squeue last said of this job (None: not asked since the server started), when it was
    # asked (ISO and the manager's clock), and how many looks in a row missed it.
    job: SqueueJob | None = field(default=None, repr=False, compare=False)
    seen_at: str | None = field(default=None, compare=False)
    seen_clock: float | None = field(default=None, compare=False)
    absent: int = field(default=0, compare=False)
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
    def from_job(cls, hpc: str, job: SqueueJob, seen_at: str, seen_clock: float) -> Session:
        session = cls(hpc, job.job_id, job.state, job.cpus, job.memory,
                      slurm.normal_duration(job.time_limit, job.time_limit_seconds),
                      job.start_time, job.node)
        session.follow(job, seen_at, seen_clock)
        return session

    def _facts(self) -> tuple[Any, ...]:
        return (self.status, self.node, self.started_at, self.cpus, self.memory, self.walltime,
                self.partition, self.gpus, self.account, self.qos)

    def follow(self, job: SqueueJob, seen_at: str, seen_clock: float) -> bool:
        """Take what SLURM says about our job (a live one); True if a persisted fact changed."""
        before = self._facts()
        self.job, self.seen_at, self.seen_clock, self.absent = job, seen_at, seen_clock, 0
        self.status, self.node, self.started_at = job.state, job.node, job.start_time
        self.cpus, self.memory = job.cpus, job.memory
        self.walltime = slurm.normal_duration(job.time_limit, job.time_limit_seconds)
        self.partition, self.gpus = job.partition, job.gpus
        self.account, self.qos = job.account, job.qos
        if self.ide is not None:
            self.ide.node = job.node
        return before != self._facts()


@dataclass(frozen=True)
class LastEnd:
    """How the last session this server followed on a cluster ended (contract: lastEnd)."""

    job_id: str
    reason: str  # one of slurm.END_REASONS
    at: str  # ISO time it was found out
    slurm_state: str | None = None  # what squeue last said of the job, if it said anything

    def describe(self, hpc: str) -> str:
        """A sentence for a person: what happened to the job."""
        job = f"{hpc}'s job {self.job_id}"
        state = f" ({self.slurm_state})" if self.slurm_state else ""
        return {
            "idle": f"{job} was cancelled after being idle",
            "walltime": f"{job} reached its time limit{state}",
            "stopped": f"{job} was stopped from this server",
            "failed": f"{job} failed{state}",
        }.get(self.reason, f"{job} ended outside this server{state}")


@dataclass(frozen=True)
class Observation:
    """What one squeue said about one cluster (or why it could not be asked): when it was
    asked (ISO for updatedAt, and the manager's clock), and the cluster's generation then."""

    taken_at: str
    taken_clock: float
    generation: int
    job: SqueueJob | None = None  # our live job (the one pick_job chose)
    jobs: tuple[SqueueJob, ...] = ()  # every line of ours squeue printed
    error: str | None = None


@dataclass(frozen=True)
class Offer:
    """What a cluster offers a launch: its partitions (one sinfo), and the user's accounts and
    QOS where SLURM keeps accounting (None where they cannot be read)."""

    partitions: list[slurm.Partition] | None
    error: str | None = None  # why the partitions could not be read
    accounts: list[str] | None = None
    qos: list[str] | None = None


@dataclass(frozen=True)
class ClusterView:
    """One cluster as every answer shows it (status, cluster-status, the proxy's pages): made
    from the session the server holds and the newest observation of the current generation,
    never from an older one.

    ``status`` is the contract's word. ``job`` is SLURM's last line about the job shown (the
    held session's, or a job of ours that the server does not hold); ``age`` is how old that
    word is. ``stale``: the session is shown as last known because SLURM has not answered since
    (``error`` says why)."""

    name: str
    status: JobState
    session: Session | None = None
    job: SqueueJob | None = None
    taken_at: str | None = None
    age: float = 0.0
    cached: bool = False
    stale: bool = False
    error: str | None = None
    login: str | None = None  # "required" or "connected" for a cluster that asks for a login
    url: str | None = None
    # The running job's notebook kernels: (kernelspec name, display name) (kernels.py)
    kernels: tuple[tuple[str, str], ...] = ()
    last_end: LastEnd | None = None  # how the last session followed here ended
    # Idle auto-cancel (on for the cluster, a session running): for how long nobody has used
    # it, and when it will be cancelled (ISO).
    idle_seconds: float | None = None
    idle_cancel_at: str | None = None


# -- the outcomes of what a user asks --------------------------------------------------------------

@dataclass(frozen=True)
class LaunchOutcome:
    status: str  # "running", "connected" or "pending"
    hpc: str
    job_id: str
    node: str | None
    url: str | None = None
    reason: str | None = None  # of a pending job: SLURM's reason, or ours


@dataclass(frozen=True)
class LaunchCheck:
    hpc: str
    request: slurm.JobRequest


@dataclass(frozen=True)
class TimeOutcome:
    hpc: str
    job_id: str
    time_limit: str  # as SLURM now says it (HH:MM:SS or D-HH:MM:SS)
    change: str  # "lower", "raise", "same", or "extended" (the site's extend_command)


@dataclass(frozen=True)
class StopOutcome:
    hpc: str
    cancelled: list[str] | None  # None: the job was not cancelled (it keeps running)


@dataclass(frozen=True)
class LoginPrompt:
    """One round of prompts from one host, for the user to answer."""

    login_id: str
    host: str
    title: str
    instructions: str
    prompts: tuple[tuple[str, bool], ...]  # (text, echo)
    expires_in: int


@dataclass(frozen=True)
class LoginDone:
    hpc: str
    connected: bool  # False: logged out


@dataclass(frozen=True)
class Board:
    """Every cluster's view, the active cluster, and (for status) what each offers a launch:
    an Offer, or why there is none yet, and whether it is being asked."""

    views: list[ClusterView]
    active: str | None
    offers: dict[str, tuple[Offer | str, bool]] = field(default_factory=dict)
