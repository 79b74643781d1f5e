"""Checks on user input. Each parser returns a value that is safe as one argv item, or raises
ValidationError naming the field and what it must look like. Nothing here touches the cluster."""

from __future__ import annotations

import re
from typing import Any

from . import slurm
from .errors import NotAllowed, ValidationError
from .slurm import JobRequest, Partition

# The fields of a launch besides the cluster; a preset may set any of them.
PRESET_FIELDS = ("partition", "gpus", "cpus", "mem", "time", "account", "qos", "workdir")

_MEM = re.compile(r"^([1-9][0-9]{0,8})([KMGT])$", re.IGNORECASE)
# HH:MM:SS (hours up to 999) or D-HH:MM:SS (hours 0-23); the OpenAPI file states the same.
_TIME = re.compile(r"^(?:([0-9]{1,3})-([0-9]{1,2})|([0-9]{1,3})):([0-5][0-9]):([0-5][0-9])$")


def parse_cpus(value: Any, max_cpus: int) -> int:
    message = f"Invalid CPU value: must be integer 1-{max_cpus}"
    if isinstance(value, bool):
        raise ValidationError(message, {"field": "cpus"})
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,4}", value):
        n = int(value)
    else:
        raise ValidationError(message, {"field": "cpus"})
    if not 1 <= n <= max_cpus:
        raise ValidationError(message, {"field": "cpus"})
    return n


def parse_mem(value: Any) -> str:
    m = _MEM.match(value) if isinstance(value, str) else None
    if not m:
        raise ValidationError(
            "Invalid memory value: must be a whole number with a unit K, M, G or T, like 40G or "
            "100M",
            {"field": "mem"},
        )
    return f"{m[1]}{m[2].upper()}"


def parse_time(value: Any) -> str:
    m = _TIME.match(value) if isinstance(value, str) else None
    message = "Invalid time value: must be HH:MM:SS or D-HH:MM:SS"
    if not m:
        raise ValidationError(message, {"field": "time"})
    days, day_hours, hours, minutes, seconds = m.groups()
    hours = hours if days is None else day_hours
    if days is not None and int(hours) > 23:
        raise ValidationError(message + " (hours 0-23 with days)", {"field": "time"})
    if not any(int(x or 0) for x in (days, hours, minutes, seconds)):
        raise ValidationError("Invalid time value: must be longer than zero", {"field": "time"})
    return value


def parse_hpc(value: Any, clusters: Any) -> str:
    if not isinstance(value, str) or value not in clusters:
        shown = value if isinstance(value, str) and len(value) <= 64 else "(not shown)"
        raise ValidationError(
            f"Unknown HPC cluster: {shown!r}; configured: {', '.join(clusters) or 'none'}",
            {"field": "hpc"},
        )
    return value


def parse_bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"Invalid {field} value: must be true or false", {"field": field})
    return value


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # a SLURM partition, account or QOS name
_GPUS = re.compile(r"^(?:([A-Za-z0-9_.-]{1,32}):)?([0-9]{1,3})$")
_WORKDIR = re.compile(r"^[^\x00-\x1f\x7f]{1,4096}$")


def parse_name(value: Any, field: str) -> str | None:
    """A partition, account or QOS name; None or "" means none given."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValidationError(f"Invalid {field} value: letters, digits, '_', '.' and '-' only "
                              "(1-64)", {"field": field})
    return value


def parse_gpus(value: Any) -> str | None:
    """GPUs: a count (``2``) or ``type:count`` (``a100:1``); 0, "" or None: none."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    m = _GPUS.match(value) if isinstance(value, str) else None
    if not m or not 0 <= int(m[2]) <= 999:
        raise ValidationError("Invalid gpus value: a count like 2, or type:count like a100:1",
                              {"field": "gpus"})
    if int(m[2]) == 0:
        return None
    return f"{m[1]}:{int(m[2])}" if m[1] else str(int(m[2]))


def parse_workdir(value: Any) -> str | None:
    """The folder VS Code opens, on the cluster: absolute, or relative to the home (``~/x`` or
    ``x``). None for the home itself. Its existence is checked on the cluster."""
    if value is None or value in ("", "~", "~/"):
        return None
    if (not isinstance(value, str) or not _WORKDIR.match(value)
            or (value.startswith("~") and not value.startswith("~/"))):
        raise ValidationError("Invalid workdir value: a folder on the cluster, like ~/project or "
                              "/scratch/me (no control characters; ~user is not supported)",
                              {"field": "workdir"})
    return value[2:] if value.startswith("~/") else value


def _parsers(max_cpus: int) -> dict[str, Any]:
    """Each launch field's parser: the one set of rules for launches, presets and settings."""
    return {
        "cpus": lambda v: parse_cpus(v, max_cpus), "mem": parse_mem, "time": parse_time,
        "partition": lambda v: parse_name(v, "partition"), "gpus": parse_gpus,
        "account": lambda v: parse_name(v, "account"), "qos": lambda v: parse_name(v, "qos"),
        "workdir": parse_workdir,
    }


def parse_request(values: dict[str, Any], max_cpus: int) -> JobRequest:
    """A launch's fields (defaults and preset already merged in), each checked."""
    parsers = _parsers(max_cpus)
    return JobRequest(**{field: parsers[field](values.get(field)) for field in PRESET_FIELDS})


def parse_preset(preset: dict[str, Any]) -> None:
    """Each field a preset sets is a valid launch value (CPUs against max_cpus at launch)."""
    parsers = _parsers(9999)
    for field, value in preset.items():
        parsers[field](str(value))


def check_partition(request: JobRequest, partitions: list[Partition],
                    cluster: str) -> Partition | None:
    """The request against what its partition allows (from sinfo): the partition it names (or
    the default one), or ValidationError naming the limit."""
    name = request.partition
    if name is None:
        part = next((p for p in partitions if p.default), None)
        if part is None:
            return None
    else:
        part = next((p for p in partitions if p.name == name), None)
        if part is None:
            raise ValidationError(
                f"Unknown partition {name!r} on {cluster}; it has: "
                f"{', '.join(p.name for p in partitions) or 'none'}", {"field": "partition"})
    seconds = slurm.parse_duration(request.time)
    if part.max_time_seconds is not None and seconds is not None and \
            seconds > part.max_time_seconds:
        raise ValidationError(
            f"time {request.time} exceeds partition {part.name}'s MaxTime "
            f"{slurm.format_duration(part.max_time_seconds)}", {"field": "time"})
    if request.cpus > part.max_cpus_per_node:
        raise ValidationError(
            f"cpus {request.cpus} exceeds partition {part.name}'s {part.max_cpus_per_node} CPUs "
            "per node", {"field": "cpus"})
    if slurm.mem_mb(request.mem) > part.max_mem_per_node_mb:
        raise ValidationError(
            f"mem {request.mem} exceeds partition {part.name}'s "
            f"{slurm.format_mem_mb(part.max_mem_per_node_mb)} per node", {"field": "mem"})
    if request.gpus:
        kind, _, count = request.gpus.rpartition(":")
        if not part.gpus:
            raise ValidationError(f"partition {part.name} has no GPUs", {"field": "gpus"})
        have = part.gpus.get(kind) if kind else part.gpu_total
        if have is None:
            offered = ", ".join(f"{k}:{n}" for k, n in part.gpus.items())
            raise ValidationError(f"partition {part.name} has no GPU of type {kind} (it has "
                                  f"{offered})", {"field": "gpus"})
        if int(count) > have:
            raise ValidationError(f"gpus {request.gpus} exceeds partition {part.name}'s {have} "
                                  "GPUs per node", {"field": "gpus"})
    return part


def check_time_change(new_time: Any, state: slurm.JobState, limit_seconds: int | None,
                      elapsed_seconds: int, partition: Partition | None,
                      hpc: str) -> tuple[str, int, str]:
    """A change of a job's TimeLimit against what SLURM lets its owner do: lower it at any
    time (above what the job has used: lowering it below ends the job, which is what Stop is
    for), raise it only while the job pends and up to its partition's MaxTime. Returns (the
    limit as sbatch writes it, its seconds, "lower" or "raise"); ValidationError (400) for a
    bad value, NotAllowed (403) for a raise of a running job."""
    text = parse_time(new_time)
    seconds = slurm.parse_duration(text)
    assert seconds is not None  # (parse_time accepted it)
    if limit_seconds is not None and seconds == limit_seconds:
        return text, seconds, "same"
    if limit_seconds is None or seconds > limit_seconds:
        if state is not slurm.JobState.PENDING:
            raise NotAllowed(
                f"SLURM lets only an operator raise the time limit of a running job: ask your "
                f"site's support to extend job on {hpc}, or give time back instead",
                {"field": "time"})
        if partition is not None and partition.max_time_seconds is not None and \
                seconds > partition.max_time_seconds:
            raise ValidationError(
                f"time {text} exceeds partition {partition.name}'s MaxTime "
                f"{slurm.format_duration(partition.max_time_seconds)}", {"field": "time"})
        return text, seconds, "raise"
    if seconds <= elapsed_seconds + MIN_LEFT:
        raise ValidationError(
            f"time {text} is not more than the {slurm.format_duration(elapsed_seconds)} the job "
            f"has run (plus {MIN_LEFT // 60} minute): to end the job, stop it",
            {"field": "time"})
    return text, seconds, "lower"


MIN_LEFT = 60  # seconds a lowered time limit leaves the job at least
