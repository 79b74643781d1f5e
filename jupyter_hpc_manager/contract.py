"""The REST contract's JSON shapes (camelCase, the contract's field names), made from our own
objects in one place; the manager and the handlers never spell a contract field themselves."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from . import slurm
from .slurm import JobState

if TYPE_CHECKING:
    from .cluster import Observation, Offer, Session
    from .config import ClusterConfig, HPCManager


def utcnow_iso() -> str:
    """Contract timestamps: ISO 8601 UTC with milliseconds and a Z."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def error_body(message: str, details: dict[str, Any]) -> dict[str, Any]:
    """The contract's error body (plus message, which JupyterLab's ResponseError reads)."""
    return {"error": message, "message": message, "details": details,
            "timestamp": utcnow_iso()}


def normal_duration(text: str, seconds: int | None) -> str:
    """squeue prints 5 minutes as '5:00'; the contract speaks HH:MM:SS."""
    return text if seconds is None else slurm.format_duration(seconds)


def session_entry(session: Session | None, url: str | None) -> dict[str, Any]:
    """One cluster in `status`: the session this server holds there."""
    if session is None:
        return {"status": JobState.IDLE.value}
    entry: dict[str, Any] = {
        "status": session.status.value,
        "jobId": session.job_id,
        "node": session.node,
        "cpus": session.cpus,
        "memory": session.memory,
        "walltime": session.walltime,
        "startedAt": session.started_at,
    }
    entry.update(asked(session.partition, session.gpus, session.account, session.qos))
    if url is not None:
        entry["url"] = url
    return entry


def cluster_entry(obs: Observation, age: float, url: str | None) -> dict[str, Any]:
    """One cluster in `cluster-status`: what its squeue said (``age`` seconds ago)."""
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
        timeLimit=normal_duration(job.time_limit, job.time_limit_seconds),
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
    if url is not None:
        entry["url"] = url
    return entry


def asked(partition: str | None, gpus: str | None, account: str | None,
          qos: str | None) -> dict[str, Any]:
    """What a job asked for besides CPUs and memory (the fields SLURM reports)."""
    found = {"partition": partition, "gpus": gpus, "account": account, "qos": qos}
    return {k: v for k, v in found.items() if v is not None}


def cluster_status(entries: dict[str, dict[str, Any]], *, active: str | None, updated_at: str,
                   cached: bool, age: float, ttl: int) -> dict[str, Any]:
    return {**entries, "activeHpc": active, "updatedAt": updated_at, "cached": cached,
            "cacheAge": int(age), "cacheTtl": ttl}


def status(entries: dict[str, dict[str, Any]], active: str | None,
           config: HPCManager, options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "sessions": entries,
        "activeHpc": active,
        "config": {
            "defaultHpc": config.default_cluster,
            "defaultCpus": config.default_cpus,
            "defaultMem": config.default_mem,
            "defaultTime": config.default_time,
            "maxCpus": config.max_cpus,
            "clusters": list(config.clusters),
            "clusterOptions": options,
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


def cluster_options(cluster: ClusterConfig, offer: Offer | str) -> dict[str, Any]:
    """What a cluster offers a launch: its partitions (null, with partitionsError, where sinfo
    could not be asked: the plain fields still launch), the user's accounts and QOS (null where
    SLURM keeps no accounting: type them), the admin's presets, and the cluster's defaults."""
    options: dict[str, Any] = {
        "partitions": None, "accounts": None, "qos": None,
        "presets": {name: dict(p) for name, p in cluster.presets.items()},
        "defaultPartition": cluster.partition or None,
        "defaultAccount": cluster.account or None,
        "defaultQos": cluster.qos or None,
    }
    if isinstance(offer, str):
        options["partitionsError"] = offer
    elif offer.partitions is None:
        options["partitionsError"] = offer.error
    else:
        options.update(partitions=[partition(p) for p in offer.partitions],
                       accounts=offer.accounts, qos=offer.qos)
    return options


def launch_reply(status: str, session: Session, url: str | None = None,
                 reason: str | None = None) -> dict[str, Any]:
    """`running`/`connected` (with the IDE's url) or `pending` (with SLURM's reason)."""
    reply: dict[str, Any] = {"status": status, "jobId": session.job_id, "node": session.node,
                             "hpc": session.hpc}
    if url is not None:
        reply["url"] = url
    if status == "pending":
        reply["reason"] = reason
        reply["reasonText"] = slurm.explain_reason(reason)
    return reply


def launch_check(hpc: str, request: slurm.JobRequest) -> dict[str, Any]:
    return {"ok": True, "hpc": hpc, "request": {
        "cpus": str(request.cpus), "mem": request.mem, "time": request.time,
        "partition": request.partition, "gpus": request.gpus, "account": request.account,
        "qos": request.qos, "workdir": request.workdir}}


def switch_reply(hpc: str) -> dict[str, Any]:
    return {"status": "switched", "hpc": hpc}


def stop_reply(hpc: str, cancelled: list[str] | None) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": "stopped", "hpc": hpc}
    if cancelled is not None:
        reply["cancelledJobs"] = cancelled
    return reply


def login_reply(hpc: str) -> dict[str, Any]:
    return {"status": "connected", "hpc": hpc}


def logout_reply(hpc: str) -> dict[str, Any]:
    return {"status": "disconnected", "hpc": hpc}


def needs_login(entry: dict[str, Any], why: str) -> dict[str, Any]:
    """A cluster entry (status or cluster-status) for a cluster that needs a login: unknown
    (never idle), the reason, and the job we hold there, without a URL that cannot work now."""
    kept: dict[str, Any] = {k: entry[k] for k in ("jobId", "node", "cpus", "memory", "walltime",
                                                  "startedAt") if k in entry}
    return {**kept, "status": JobState.UNKNOWN.value, "error": why, "login": "required"}
