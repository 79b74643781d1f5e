"""Pure SLURM logic: build the sbatch command line and job script, parse squeue, map states,
parse and format SLURM durations. No I/O here, so all of it is tested without a cluster."""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# One squeue line per job. The job name is ours (validated), so it cannot hold the delimiter;
# the reason comes last because it is free text and is allowed to.
SQUEUE_FIELDS = ("jobid", "state", "node", "time_left", "time_limit", "cpus", "memory",
                 "start_time", "name", "reason")
SQUEUE_FORMAT = "%i|%T|%N|%L|%l|%C|%m|%S|%j|%r"
SQUEUE_DELIMITER = "|"

# Where the job keeps its files on the cluster, relative to the user's home (the exec channel's
# working directory). The connection file holds the IDE's password: mode 0600 in a 0700 folder.
REMOTE_DIR = ".jupyter-hpc-manager"
REMOTE_LOG_DIR = f"{REMOTE_DIR}/logs"


class JobState(str, enum.Enum):
    """What the contract calls a cluster's status."""

    IDLE = "idle"
    PENDING = "pending"
    RUNNING = "running"
    UNKNOWN = "unknown"


_PENDING_STATES = frozenset({
    "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
    "SUSPENDED", "STOPPED", "SIGNALING", "SPECIAL_EXIT", "RESV_DEL_HOLD", "STAGE_OUT",
})
_ENDED_STATES = frozenset({
    "COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED",
})


def map_state(slurm_state: str) -> JobState:
    """Map a SLURM job state (``%T``) to the contract's status.

    A job that is still alive in any form counts as pending, never idle, so that nobody is
    offered a second launch while SLURM still holds the first job."""
    state = slurm_state.strip().upper().split(" ", 1)[0].rstrip("+")
    if state == "RUNNING":
        return JobState.RUNNING
    if state in _ENDED_STATES:
        return JobState.IDLE
    if state in _PENDING_STATES:
        return JobState.PENDING
    raise ValueError(f"unknown SLURM job state {slurm_state!r}")


class SlurmParseError(ValueError):
    """squeue or sbatch printed something we do not understand."""


_DURATION = re.compile(
    r"^(?:(?P<days>\d+)-)?(?:(?P<a>\d+):)?(?:(?P<b>\d+):)?(?P<c>\d+)$"
)
_NO_DURATION = frozenset({"UNLIMITED", "NOT_SET", "N/A", "", "INFINITE", "PARTITION_LIMIT"})


def parse_duration(text: str) -> int | None:
    """Seconds in a SLURM duration as squeue prints ``%L``/``%l``.

    ``MM:SS``, ``HH:MM:SS``, ``D-HH:MM:SS`` (also ``D-HH`` and ``D-HH:MM``); ``INVALID`` is what
    ``%L`` shows once the limit is reached while the job still runs, so it means 0 left;
    ``UNLIMITED``, ``NOT_SET`` and ``N/A`` mean there is no number (None)."""
    text = text.strip()
    if text.upper() == "INVALID":
        return 0
    if text.upper() in _NO_DURATION:
        return None
    m = _DURATION.match(text)
    if not m:
        raise SlurmParseError(f"not a SLURM duration: {text!r}")
    days = int(m["days"] or 0)
    parts = [int(p) for p in (m["a"], m["b"], m["c"]) if p is not None]
    if m["days"] is not None:
        # With days the fields are hours[:minutes[:seconds]].
        hours, minutes, seconds = [*parts, 0, 0, 0][:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        # A bare number is minutes in SLURM's syntax.
        hours, minutes, seconds = 0, parts[0], 0
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def format_duration(seconds: int) -> str:
    """``HH:MM:SS`` below a day, ``D-HH:MM:SS`` from a day on (SLURM's own way)."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


def format_human(seconds: int) -> str:
    """Short words for a person: ``1d 2h``, ``10h 58m``, ``5m``, ``42s``."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


@dataclass(frozen=True)
class SqueueJob:
    job_id: str
    slurm_state: str
    state: JobState
    node: str | None
    time_left: str
    time_left_seconds: int | None
    time_limit: str
    time_limit_seconds: int | None
    cpus: str
    memory: str
    start_time: str | None
    name: str
    reason: str | None


def _optional(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "N/A", "(null)", "None") else value


def parse_squeue_line(line: str) -> SqueueJob:
    fields = line.split(SQUEUE_DELIMITER, len(SQUEUE_FIELDS) - 1)
    if len(fields) != len(SQUEUE_FIELDS):
        raise SlurmParseError(
            f"squeue printed {len(fields)} fields where {len(SQUEUE_FIELDS)} were asked: {line!r}"
        )
    f = dict(zip(SQUEUE_FIELDS, (x.strip() for x in fields), strict=True))
    if not re.fullmatch(r"\d+(?:_\d+)?", f["jobid"]):
        raise SlurmParseError(f"squeue printed a job id that is not a number: {f['jobid']!r}")
    try:
        state = map_state(f["state"])
    except ValueError as exc:
        raise SlurmParseError(str(exc)) from exc
    time_left_seconds = parse_duration(f["time_left"])
    time_limit_seconds = parse_duration(f["time_limit"])
    reason = _optional(f["reason"])
    return SqueueJob(
        job_id=f["jobid"],
        slurm_state=f["state"],
        state=state,
        node=_optional(f["node"]) if state is JobState.RUNNING else None,
        time_left=f["time_left"],
        time_left_seconds=time_left_seconds,
        time_limit=f["time_limit"],
        time_limit_seconds=time_limit_seconds,
        cpus=f["cpus"],
        memory=f["memory"],
        start_time=_optional(f["start_time"]) if state is JobState.RUNNING else None,
        name=f["name"],
        reason=None if reason == "None" else reason,
    )


def parse_squeue(output: str) -> list[SqueueJob]:
    return [parse_squeue_line(line) for line in output.splitlines() if line.strip()]


def pick_job(jobs: Iterable[SqueueJob], job_name: str) -> SqueueJob | None:
    """The job that stands for this cluster's session: a running one before a pending one,
    the oldest first. Ended jobs (COMPLETING, ...) do not count."""
    live = [j for j in jobs if j.name == job_name and j.state is not JobState.IDLE]
    if not live:
        return None
    return min(live, key=lambda j: (j.state is not JobState.RUNNING, _job_sort_key(j.job_id)))


def _job_sort_key(job_id: str) -> tuple[int, int]:
    head, _, tail = job_id.partition("_")
    return int(head), int(tail or 0)


def squeue_argv(squeue: str, job_name: str) -> list[str]:
    """One query per cluster: the user's jobs with this session's job name."""
    return [squeue, "--me", "--noheader", f"--name={job_name}", f"--format={SQUEUE_FORMAT}"]


@dataclass(frozen=True)
class JobRequest:
    """A validated launch request (see validation.py); every value is safe as one argv item."""

    cpus: int
    mem: str
    time: str


def sbatch_argv(
    sbatch: str,
    job_name: str,
    request: JobRequest,
    *,
    partition: str | None = None,
    account: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    argv = [
        sbatch,
        "--parsable",
        f"--job-name={job_name}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={request.cpus}",
        f"--mem={request.mem}",
        f"--time={request.time}",
        f"--output={REMOTE_LOG_DIR}/%x-%j.log",
    ]
    if partition:
        argv.append(f"--partition={partition}")
    if account:
        argv.append(f"--account={account}")
    argv.extend(extra_args)
    return argv


def parse_sbatch_job_id(stdout: str) -> str:
    """``sbatch --parsable`` prints ``jobid[;cluster]`` on its last line; anything before is
    chatter from the site's submit filters."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise SlurmParseError("sbatch printed no job id")
    job_id = lines[-1].split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmParseError(f"sbatch printed no job id: {lines[-1]!r}")
    return job_id


def shell_join(argv: Sequence[str]) -> str:
    """The SSH exec request is a string for the remote shell: quote every item."""
    return " ".join(shlex.quote(a) for a in argv)


def connection_file(job_id: str) -> str:
    return f"{REMOTE_DIR}/job-{job_id}.json"


def log_file(job_name: str, job_id: str) -> str:
    return f"{REMOTE_LOG_DIR}/{job_name}-{job_id}.log"


# -- the command lines run on the login node (each value quoted; the job script goes on stdin) --

def squeue_command(squeue: str, job_name: str) -> str:
    return shell_join(squeue_argv(squeue, job_name))


def submit_command(sbatch: Sequence[str]) -> str:
    """Make the job's private folders (sbatch's --output needs its folder), then submit."""
    return (shell_join(["mkdir", "-p", "-m", "700", REMOTE_DIR, REMOTE_LOG_DIR]) + " && "
            + shell_join(sbatch))


def scancel_command(scancel: str, job_ids: Iterable[str]) -> str:
    return shell_join([scancel, *sorted(job_ids)])


def read_connection_command(job_id: str) -> str:
    return shell_join(["cat", "--", connection_file(job_id)])


def log_tail_command(job_name: str, job_id: str, lines: int = 20) -> str:
    return shell_join(["tail", "-n", str(lines), "--", log_file(job_name, job_id)])


# The job script. Only admin-configured text (prologue, IDE command) is placed in it, never a
# user's value; the user's choices travel as sbatch argv. The IDE gets its password through its
# environment (never a command line, which other users can read in /proc) and writes nothing
# secret anywhere but the 0600 connection file, which the job removes when it ends.
JOB_SCRIPT_TEMPLATE = """#!/bin/bash
# Generated by jupyter-hpc-manager: VS Code (code-server) for one user on one compute node.
umask 077
node=$(hostname)
echo "jupyter-hpc-manager: job $SLURM_JOB_ID started on $node at $(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
state_dir="$HOME/{remote_dir}"
mkdir -p "$state_dir"
chmod 700 "$state_dir"
conn="$state_dir/job-$SLURM_JOB_ID.json"
ide_dir="$state_dir/{job_name}"
mkdir -p "$ide_dir/data" "$ide_dir/extensions"

# --- prologue (configured by the administrator) ---
{prologue}
# --- end of prologue ---

pick_port() {{
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
  else
    while :; do
      p=$(( (RANDOM << 15 | RANDOM) % 40000 + 20000 ))
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {{ echo "$p"; return; }}
    done
  fi
}}
port=$(pick_port)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')

ide_pid=
cleanup() {{
  rm -f "$conn" "$conn.tmp"
  if [ -n "$ide_pid" ]; then
    kill -TERM -- "-$ide_pid" 2>/dev/null
    sleep 1
    kill -KILL -- "-$ide_pid" 2>/dev/null
  fi
}}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

echo "jupyter-hpc-manager: starting the IDE on $node port $port"
# Its own session, so that stopping the job stops every process the IDE started.
PASSWORD="$secret" setsid {ide_command} \\
  --auth password \\
  --bind-addr "0.0.0.0:$port" \\
  --user-data-dir "$ide_dir/data" \\
  --extensions-dir "$ide_dir/extensions" \\
  --config "$ide_dir/config.yaml" \\
  --disable-telemetry --disable-update-check --disable-workspace-trust \\
  "$HOME" &
ide_pid=$!

fmt='{{"host": "%s", "port": %s, "password": "%s", "jobId": "%s"}}\\n'
printf "$fmt" "$node" "$port" "$secret" "$SLURM_JOB_ID" > "$conn.tmp"
mv -f "$conn.tmp" "$conn"

wait "$ide_pid"
status=$?
echo "jupyter-hpc-manager: the IDE exited with status $status"
exit "$status"
"""


def job_script(job_name: str, *, prologue: str = "", ide_command: str = "code-server") -> str:
    return JOB_SCRIPT_TEMPLATE.format(
        remote_dir=REMOTE_DIR,
        job_name=job_name,
        prologue=prologue.rstrip() or ":",
        ide_command=ide_command,
    )
