"""The REST contract's JSON shapes (camelCase, the contract's field names), made in this one
place from the typed models (models.py); nothing else spells a contract field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import slurm
from .models import (
    Board,
    ClusterView,
    LaunchCheck,
    LaunchOutcome,
    LoginDone,
    LoginPrompt,
    Offer,
    Session,
    StopOutcome,
    TimeOutcome,
    utcnow_iso,
)
from .slurm import JobState, SqueueJob

if TYPE_CHECKING:
    from .config import ClusterConfig, HPCManager


def error_body(message: str, details: dict[str, Any]) -> dict[str, Any]:
    """The contract's error body (plus message, which JupyterLab's ResponseError reads)."""
    return {"error": message, "message": message, "details": details,
            "timestamp": utcnow_iso()}


# -- status and cluster-status: both from the same view of each cluster -------------------------

def cluster_status(board: Board, ttl: int) -> dict[str, Any]:
    """`cluster-status`: each cluster as SLURM last described it (through the session held
    there), when it was asked, and whether that came from the cache."""
    entries = {v.name: cluster_entry(v) for v in board.views}
    seen = [v for v in board.views if v.taken_at is not None]
    return {**entries, "activeHpc": board.active,
            "updatedAt": min((v.taken_at for v in seen if v.taken_at), default=utcnow_iso()),
            "cached": bool(seen) and all(v.cached for v in seen),
            "cacheAge": int(max((v.age for v in seen), default=0.0)), "cacheTtl": ttl}


def cluster_entry(view: ClusterView) -> dict[str, Any]:
    """One cluster in `cluster-status`."""
    if view.login == "required":
        return _needs_login(view)
    entry: dict[str, Any] = {"status": view.status.value}
    if view.status in (JobState.PENDING, JobState.RUNNING):
        if view.job is not None:
            entry.update(_job_fields(view.job, view.age))
        elif view.session is not None:  # held, and not seen by squeue since (a restart)
            s = view.session
            entry.update(jobId=s.job_id, node=s.node, timeLimit=s.walltime, cpus=s.cpus,
                         memory=s.memory, startTime=s.started_at)
            entry.update(asked(s.partition, s.gpus, s.account, s.qos))
    _freshness(entry, view)
    if view.url is not None:
        entry["url"] = view.url
    _kernels(entry, view)
    _idle(entry, view)
    _last_end(entry, view)
    return entry


def _idle(entry: dict[str, Any], view: ClusterView) -> None:
    """Idle auto-cancel (additive, where it is on and a session runs)."""
    if view.idle_seconds is not None:
        entry["idleSeconds"] = int(view.idle_seconds)
        entry["idleCancelAt"] = view.idle_cancel_at


def _last_end(entry: dict[str, Any], view: ClusterView) -> None:
    """How the last session this server followed on the cluster ended (additive)."""
    end = view.last_end
    if end is not None:
        entry["lastEnd"] = {"jobId": end.job_id, "reason": end.reason, "at": end.at}


def _kernels(entry: dict[str, Any], view: ClusterView) -> None:
    """The running job's notebook kernels (additive): their kernelspec names, as the
    Launcher and the kernel picker show them."""
    if view.kernels and view.status is JobState.RUNNING:
        entry["kernels"] = [{"name": name, "displayName": display}
                            for name, display in view.kernels]


def _job_fields(job: SqueueJob, age: float) -> dict[str, Any]:
    entry: dict[str, Any] = {"jobId": job.job_id, "node": job.node,
                             "slurmState": job.slurm_state}
    left = job.time_left_seconds
    if job.state is JobState.RUNNING and left is not None:
        # An older answer still counts down: take off the time since squeue was asked.
        left = max(0, left - int(age))
        entry.update(timeLeft=slurm.format_duration(left), timeLeftSeconds=left,
                     timeLeftHuman=slurm.format_human(left))
    elif job.state is JobState.RUNNING:
        entry.update(timeLeft=job.time_left, timeLeftSeconds=None, timeLeftHuman=job.time_left)
    entry.update(
        timeLimit=slurm.normal_duration(job.time_limit, job.time_limit_seconds),
        timeLimitSeconds=job.time_limit_seconds,
        cpus=job.cpus,
        memory=job.memory,
        startTime=job.start_time,
    )
    entry.update(asked(job.partition, job.gpus, job.account, job.qos))
    if job.state is JobState.PENDING:
        entry["reason"] = job.reason
        entry["reasonText"] = slurm.explain_reason(job.reason)
        entry["estimatedStart"] = job.estimated_start
    return entry


def _freshness(entry: dict[str, Any], view: ClusterView) -> None:
    """A held session that SLURM has not confirmed since its last word is `stale`, with why;
    an unknown cluster says why; a logged-in cluster says so."""
    if view.stale:
        entry["stale"] = True
    if view.error is not None and (view.stale or view.status is JobState.UNKNOWN):
        entry["error"] = view.error
    if view.login is not None:
        entry["login"] = view.login


def session_entry(view: ClusterView) -> dict[str, Any]:
    """One cluster in `status`: the session this server holds there."""
    if view.login == "required":
        return _needs_login(view)
    s = view.session
    if s is None:
        entry: dict[str, Any] = {"status": (JobState.UNKNOWN if view.status is JobState.UNKNOWN
                                            else JobState.IDLE).value}
    else:
        entry = _session_fields(s)
    _freshness(entry, view)
    if view.url is not None:
        entry["url"] = view.url
    _kernels(entry, view)
    _idle(entry, view)
    _last_end(entry, view)
    return entry


def _session_fields(s: Session) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "status": s.status.value,
        "jobId": s.job_id,
        "node": s.node,
        "cpus": s.cpus,
        "memory": s.memory,
        "walltime": s.walltime,
        "startedAt": s.started_at,
    }
    entry.update(asked(s.partition, s.gpus, s.account, s.qos))
    return entry


def _needs_login(view: ClusterView) -> dict[str, Any]:
    """A cluster that needs a login (status and cluster-status alike): unknown (never idle),
    the reason, and the job we hold there, without a URL that cannot work now."""
    kept: dict[str, Any] = {}
    if view.session is not None:
        s = view.session
        kept = {"jobId": s.job_id, "node": s.node, "cpus": s.cpus, "memory": s.memory,
                "walltime": s.walltime, "startedAt": s.started_at}
    return {**kept, "status": JobState.UNKNOWN.value, "error": view.error, "login": "required"}


def asked(partition: str | None, gpus: str | None, account: str | None,
          qos: str | None) -> dict[str, Any]:
    """What a job asked for besides CPUs and memory (the fields SLURM reports)."""
    found = {"partition": partition, "gpus": gpus, "account": account, "qos": qos}
    return {k: v for k, v in found.items() if v is not None}


def status(board: Board, config: HPCManager) -> dict[str, Any]:
    return {
        "sessions": {v.name: session_entry(v) for v in board.views},
        "activeHpc": board.active,
        "config": {
            "defaultHpc": config.default_cluster,
            "defaultCpus": config.default_cpus,
            "defaultMem": config.default_mem,
            "defaultTime": config.default_time,
            "maxCpus": config.max_cpus,
            "idleWarningMinutes": config.idle_warning_minutes,
            "clusters": list(config.clusters),
            "clusterOptions": {
                name: cluster_options(config.clusters[name], offer, asking)
                for name, (offer, asking) in board.offers.items()},
        },
    }


def partition(p: slurm.Partition) -> dict[str, Any]:
    return {
        "name": p.name,
        "default": p.default,
        "maxTime": None if p.max_time_seconds is None else slurm.format_duration(
            p.max_time_seconds),
        "maxTimeSeconds": p.max_time_seconds,
        "maxCpusPerNode": p.max_cpus_per_node,
        "maxMemPerNode": slurm.format_mem_mb(p.max_mem_per_node_mb),
        "maxMemPerNodeMb": p.max_mem_per_node_mb,
        "gpus": dict(p.gpus),
        "state": p.state,
    }


def cluster_options(cluster: ClusterConfig, offer: Offer | str,
                    asking: bool = False) -> dict[str, Any]:
    """What a cluster offers a launch: its partitions (null, with partitionsError, where sinfo
    could not be asked or has not answered yet: the plain fields still launch;
    partitionsPending while it is being asked), the user's accounts and QOS (null where SLURM
    keeps no accounting: type them), the admin's presets, and the cluster's defaults."""
    options: dict[str, Any] = {
        "partitions": None, "accounts": None, "qos": None,
        "presets": {name: dict(p) for name, p in cluster.presets.items()},
        "defaultPartition": cluster.partition or None,
        "defaultAccount": cluster.account or None,
        "defaultQos": cluster.qos or None,
        "partitionsPending": asking,
    }
    if isinstance(offer, str):
        options["partitionsError"] = offer
        return options
    if offer.error is not None:  # (beside partitions: the last good answer, which stands)
        options["partitionsError"] = offer.error
    if offer.partitions is not None:
        options.update(partitions=[partition(p) for p in offer.partitions],
                       accounts=offer.accounts, qos=offer.qos)
    return options


# -- replies to what a user asks ----------------------------------------------------------------

def launch_reply(outcome: LaunchOutcome) -> dict[str, Any]:
    """`running`/`connected` (with the IDE's url) or `pending` (with SLURM's reason)."""
    reply: dict[str, Any] = {"status": outcome.status, "jobId": outcome.job_id,
                             "node": outcome.node, "hpc": outcome.hpc}
    if outcome.url is not None:
        reply["url"] = outcome.url
    if outcome.status == "pending":
        reply["reason"] = outcome.reason
        reply["reasonText"] = slurm.explain_reason(outcome.reason)
    return reply


def launch_check(check: LaunchCheck) -> dict[str, Any]:
    request = check.request
    return {"ok": True, "hpc": check.hpc, "request": {
        "cpus": str(request.cpus), "mem": request.mem, "time": request.time,
        "partition": request.partition, "gpus": request.gpus, "account": request.account,
        "qos": request.qos, "workdir": request.workdir}}


def switch_reply(hpc: str) -> dict[str, Any]:
    return {"status": "switched", "hpc": hpc}


def keep_reply(view: ClusterView) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": "kept", "hpc": view.name}
    _idle(reply, view)
    return reply


def time_reply(outcome: TimeOutcome) -> dict[str, Any]:
    return {"status": "updated" if outcome.change != "extended" else "extended",
            "hpc": outcome.hpc, "jobId": outcome.job_id, "timeLimit": outcome.time_limit,
            "change": outcome.change}


def stop_reply(outcome: StopOutcome) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": "stopped", "hpc": outcome.hpc}
    if outcome.cancelled is not None:
        reply["cancelledJobs"] = outcome.cancelled
    return reply


def login_reply(outcome: LoginPrompt | LoginDone) -> dict[str, Any]:
    if isinstance(outcome, LoginDone):
        return {"status": "connected" if outcome.connected else "disconnected",
                "hpc": outcome.hpc}
    return {
        "status": "prompt",
        "loginId": outcome.login_id,
        "host": outcome.host,
        "title": outcome.title,
        "instructions": outcome.instructions,
        "prompts": [{"text": text, "echo": echo} for text, echo in outcome.prompts],
        "expiresIn": outcome.expires_in,
    }
