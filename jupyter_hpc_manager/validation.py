"""Checks on user input. Each parser returns a value that is safe as one argv item, or raises
ValidationError naming the field and what it must look like. Nothing here touches the cluster."""

from __future__ import annotations

import re
from typing import Any

from .errors import ValidationError

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
