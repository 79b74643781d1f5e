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
# (%S is the start time: of a running job, when it started; of a pending one, SLURM's estimate,
# if its scheduler has made one. %b is what the job asked per node besides CPUs: its GPUs. %k is
# the job's comment, where a launch leaves its submit token.)
SQUEUE_FIELDS = ("jobid", "state", "node", "time_left", "time_limit", "cpus", "memory",
                 "start_time", "partition", "gres", "account", "qos", "name", "comment", "reason")
SQUEUE_FORMAT = "%i|%T|%N|%L|%l|%C|%m|%S|%P|%b|%a|%q|%j|%k|%r"
# A launch's token, in the job's comment: a retry after an sbatch that timed out finds the job
# that sbatch queued instead of queuing a second one.
COMMENT_PREFIX = "jupyter-hpc-manager:"
SQUEUE_DELIMITER = "|"

# Where the job keeps its files on the cluster, relative to the user's home (the exec channel's
# working directory). The connection file holds the IDE's password: mode 0600 in a 0700 folder.
REMOTE_DIR = ".jupyter-hpc-manager"
REMOTE_LOG_DIR = f"{REMOTE_DIR}/logs"
OUTPUT_OPTION = "--output="  # sbatch's, with the log's path relative to the home


class JobState(str, enum.Enum):
    """What the contract calls a cluster's status."""

    IDLE = "idle"
    PENDING = "pending"
    RUNNING = "running"
    UNKNOWN = "unknown"


# The states in which SLURM has let the job go (or is letting it go: COMPLETING): its session is
# over. SLURM adds states between releases; any state not listed here is a job SLURM still holds.
ENDED_STATES = frozenset({
    "COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED",
})


def map_state(slurm_state: str) -> JobState:
    """Map a SLURM job state (``%T``) to the contract's status, by one rule: RUNNING runs, a
    state of ENDED_STATES has ended (idle), and every other state, known to us or not
    (PENDING, CONFIGURING, REQUEUE_HOLD, SUSPENDED, a state of a later SLURM), is a job that is
    still alive: pending, never idle, so that nobody is offered a second launch while SLURM
    holds the first job. The state itself is kept beside it (``SqueueJob.slurm_state``) and
    shown as it is."""
    state = slurm_state.strip().upper().split(" ", 1)[0].rstrip("+")
    if state == "RUNNING":
        return JobState.RUNNING
    if state in ENDED_STATES:
        return JobState.IDLE
    return JobState.PENDING


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
    partition: str | None = None
    gpus: str | None = None  # as asked: "2" or "type:2"
    account: str | None = None
    qos: str | None = None
    estimated_start: str | None = None  # a pending job's expected start, where SLURM has one
    token: str | None = None  # the submit token of the launch that queued it (its comment)


def gpus_of(tres_per_node: str) -> str | None:
    """The GPUs in squeue's ``%b`` (``gres:gpu:2``, ``gres/gpu:a100:1``, ``gpu:2``, ``N/A``), as
    a launch writes them (``2``, ``a100:1``); None without GPUs."""
    for item in tres_per_node.split(","):
        item = item.strip()
        for prefix in ("gres:", "gres/"):
            if item.startswith(prefix):
                item = item[len(prefix):]
        name, _, rest = item.partition(":")
        if name == "gpu":
            return rest or "1"
    return None


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
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*\+?(?: by \d+)?", f["state"]):
        raise SlurmParseError(f"squeue printed a job state we cannot read: {f['state']!r}")
    state = map_state(f["state"])
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
        partition=_optional(f["partition"]),
        gpus=gpus_of(f["gres"]),
        account=_optional(f["account"]),
        qos=_optional(f["qos"]),
        estimated_start=_optional(f["start_time"]) if state is JobState.PENDING else None,
        token=_token(f["comment"]),
    )


def _token(comment: str) -> str | None:
    comment = comment.strip()
    return comment[len(COMMENT_PREFIX):] if comment.startswith(COMMENT_PREFIX) else None


def parse_squeue(output: str) -> list[SqueueJob]:
    return [parse_squeue_line(line) for line in output.splitlines() if line.strip()]


def job_gone(job: SqueueJob | None, absent_before: int) -> bool:
    """The one rule for a job we follow, given what squeue now says of it (None: not listed)
    and how many looks before this one in a row missed it: an ended state is believed at once;
    absence on the second look in a row (squeue may miss a job for a moment: right after sbatch,
    or while slurmctld restarts)."""
    if job is None:
        return absent_before >= 1
    return job.state is JobState.IDLE


# Why a session ended, as the contract's lastEnd.reason says it.
END_REASONS = ("idle", "walltime", "stopped", "slurm", "failed")
_FAILED_STATES = frozenset({"FAILED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY"})
_WALLTIME_STATES = frozenset({"TIMEOUT", "DEADLINE"})


def end_reason(slurm_state: str | None, seconds_left: float | None) -> str:
    """Why a job we followed ended, from the state squeue last gave it (None: it left the
    queue unseen) and how many seconds of its time limit were left by then (None: unknown):
    ``walltime``, ``failed`` or ``slurm`` (cancelled or ended outside this server). A job seen
    COMPLETING or gone with its time used up has reached its limit (squeue rarely shows
    TIMEOUT: the job is gone a moment later)."""
    state = (slurm_state or "").strip().upper().split(" ", 1)[0].rstrip("+")
    if state in _WALLTIME_STATES:
        return "walltime"
    if state in _FAILED_STATES:
        return "failed"
    if state in ("", "COMPLETING") and seconds_left is not None and seconds_left <= 0:
        return "walltime"
    return "slurm"


def normal_duration(text: str, seconds: int | None) -> str:
    """squeue prints 5 minutes as '5:00'; the contract speaks HH:MM:SS."""
    return text if seconds is None else format_duration(seconds)


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


# SLURM's pending reasons in words (the code stays beside them, for the admins).
REASON_WORDS = {
    "Resources": "waiting for free nodes",
    "Priority": "other jobs are ahead in the queue",
    "PartitionConfig": "the request exceeds what the partition allows",
    "PartitionTimeLimit": "the time asked exceeds the partition's limit",
    "PartitionDown": "the partition is down",
    "ReqNodeNotAvail": "the nodes it needs are unavailable (maintenance?)",
    "Dependency": "waiting for another job",
    "JobHeldUser": "held by you",
    "JobHeldAdmin": "held by an administrator",
    "BeginTime": "waiting for its start time",
    "QOSMaxCpuPerUserLimit": "your CPU limit is reached by other jobs",
    "QOSMaxGRESPerUser": "your GPU limit is reached by other jobs",
    "AssocGrpCpuLimit": "your group CPU limit is reached",
    "InvalidAccount": "the account is not valid for you",
    "InvalidQOS": "the QOS is not valid for you",
}


def explain_reason(reason: str | None) -> str | None:
    """``Resources: waiting for free nodes``; an unknown code as it is."""
    if not reason:
        return None
    words = REASON_WORDS.get(reason)
    return f"{reason}: {words}" if words else reason


def assoc_command(sacctmgr: str) -> str:
    """The user's accounts and QOS (``account|qos1,qos2`` lines), where SLURM keeps accounting.
    The user is the login's own (no value of ours in the command)."""
    return (shell_join([sacctmgr, "--noheader", "--parsable2", "show", "associations"])
            + ' where user="$(id -un)" format=account,qos')


def parse_assoc(output: str) -> tuple[list[str], list[str]]:
    accounts: list[str] = []
    qos: list[str] = []
    for line in output.splitlines():
        account, _, qos_list = line.strip().partition("|")
        if account and account not in accounts:
            accounts.append(account)
        for q in qos_list.split(","):
            if q and q not in qos:
                qos.append(q)
    return accounts, qos


# -- what a cluster offers: one sinfo call --------------------------------------------------------

# One line per partition and kind of node (sinfo groups nodes that print alike). %P ends in "*"
# for the default partition; %c and %m may end in "+" where a line's nodes differ.
SINFO_FIELDS = ("partition", "avail", "time_limit", "cpus", "memory", "gres", "nodes")
SINFO_FORMAT = "%P|%a|%l|%c|%m|%G|%D"


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    max_time_seconds: int | None  # None: no limit
    max_cpus_per_node: int
    max_mem_per_node_mb: int
    gpus: dict[str, int]  # type ("gpu" when untyped) -> GPUs on its largest node
    state: str  # "up", or what sinfo said (down, drain, inact)

    @property
    def gpu_total(self) -> int:
        return max(self.gpus.values(), default=0)


def sinfo_argv(sinfo: str) -> list[str]:
    return [sinfo, "--noheader", f"--format={SINFO_FORMAT}"]


def sinfo_command(sinfo: str) -> str:
    return shell_join(sinfo_argv(sinfo))


def _count(text: str) -> int:
    m = re.match(r"\d+", text.strip())
    if not m:
        raise SlurmParseError(f"sinfo printed a count that is not a number: {text!r}")
    return int(m[0])


def gpus_offered(gres: str) -> dict[str, int]:
    """GPUs per node in sinfo's ``%G``: ``gpu:2``, ``gpu:tesla:2(S:0-1)``, ``(null)``."""
    found: dict[str, int] = {}
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        kind = parts[1] if len(parts) >= 3 else "gpu"
        try:
            found[kind] = found.get(kind, 0) + int(parts[-1])
        except ValueError as exc:
            raise SlurmParseError(f"sinfo printed GPUs we cannot read: {gres!r}") from exc
    return found


def parse_sinfo(output: str) -> list[Partition]:
    """Partitions in sinfo's order, each with the largest of its nodes' resources."""
    merged: dict[str, Partition] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != len(SINFO_FIELDS):
            raise SlurmParseError(f"sinfo printed {len(fields)} fields where "
                                  f"{len(SINFO_FIELDS)} were asked: {line!r}")
        f = dict(zip(SINFO_FIELDS, (x.strip() for x in fields), strict=True))
        name = f["partition"].rstrip("*")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise SlurmParseError(f"sinfo printed a partition name we cannot use: {name!r}")
        limit = f["time_limit"].upper()
        part = Partition(
            name=name,
            default=f["partition"].endswith("*"),
            max_time_seconds=None if limit in ("INFINITE", "UNLIMITED") else parse_duration(limit),
            max_cpus_per_node=_count(f["cpus"]),
            max_mem_per_node_mb=_count(f["memory"]),
            gpus=gpus_offered(f["gres"]),
            state=f["avail"].lower(),
        )
        old = merged.get(name)
        if old is not None:
            part = Partition(
                name, old.default or part.default, old.max_time_seconds,
                max(old.max_cpus_per_node, part.max_cpus_per_node),
                max(old.max_mem_per_node_mb, part.max_mem_per_node_mb),
                {k: max(old.gpus.get(k, 0), part.gpus.get(k, 0))
                 for k in {*old.gpus, *part.gpus}},
                "up" if "up" in (old.state, part.state) else old.state)
        merged[name] = part
    return list(merged.values())


def format_mem_mb(mb: int) -> str:
    """Megabytes as a launch writes memory: ``195G`` where it divides, else ``200000M``."""
    for unit, size in (("T", 1024 * 1024), ("G", 1024)):
        if mb >= size and mb % size == 0:
            return f"{mb // size}{unit}"
    return f"{mb}M"


def mem_mb(mem: str) -> int:
    """A launch's memory (validated: digits and K, M, G or T) in megabytes, rounded up."""
    n, unit = int(mem[:-1]), mem[-1].upper()
    return {"K": -(-n // 1024), "M": n, "G": n * 1024, "T": n * 1024 * 1024}[unit]


@dataclass(frozen=True)
class JobRequest:
    """A validated launch request (see validation.py); every value is safe as one argv item."""

    cpus: int
    mem: str
    time: str
    partition: str | None = None  # None: SLURM's default (the cluster's default is filled in)
    gpus: str | None = None  # "2" or "type:2"
    account: str | None = None
    qos: str | None = None
    workdir: str | None = None  # relative to the home, or absolute; None: the home


def sbatch_argv(
    sbatch: str,
    job_name: str,
    request: JobRequest,
    *,
    token: str | None = None,
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
        f"{OUTPUT_OPTION}{REMOTE_LOG_DIR}/%x-%j.log",
    ]
    if request.partition:
        argv.append(f"--partition={request.partition}")
    if request.account:
        argv.append(f"--account={request.account}")
    if request.qos:
        argv.append(f"--qos={request.qos}")
    if request.gpus:
        argv.append(f"--gres=gpu:{request.gpus}")
    if token:
        argv.append(f"--comment={COMMENT_PREFIX}{token}")
    if request.workdir:
        # The job's working directory, where VS Code opens (sbatch runs in the home, so a
        # relative path is the home's).
        argv.append(f"--chdir={request.workdir}")
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
    """Make the job's private folders (sbatch's --output needs its folder), then submit. SLURM
    takes a relative --output from the job's working directory, which --chdir moves: ours is
    made absolute with the login shell's $HOME (the only word not quoted; no user value)."""
    words = []
    for item in sbatch:
        if item.startswith(OUTPUT_OPTION):
            words.append(f'{OUTPUT_OPTION}"$HOME"/{shlex.quote(item[len(OUTPUT_OPTION):])}')
        else:
            words.append(shlex.quote(item))
    return (shell_join(["mkdir", "-p", "-m", "700", REMOTE_DIR, REMOTE_LOG_DIR]) + " && "
            + " ".join(words))


def scancel_command(scancel: str, job_ids: Iterable[str]) -> str:
    return shell_join([scancel, *sorted(job_ids)])


def read_connection_command(job_id: str) -> str:
    return shell_join(["cat", "--", connection_file(job_id)])


def log_tail_command(job_name: str, job_id: str, lines: int = 20) -> str:
    return shell_join(["tail", "-n", str(lines), "--", log_file(job_name, job_id)])


# The job script. Only admin-configured text (prologue, IDE command) and the server's own URL
# (quoted) are placed in it, never a user's value; the user's choices travel as sbatch argv
# (the folder as --chdir: VS Code opens the job's working directory). The IDE gets its password
# through its environment (never a command line, which other users can read in /proc) and writes
# nothing secret anywhere but the 0600 connection file, which the job removes when it ends.
JOB_SCRIPT_TEMPLATE = """#!/bin/bash
# Generated by jupyter-hpc-manager: VS Code (code-server) for one user on one compute node.
umask 077
workdir=$PWD
node=$(hostname)
# Threaded libraries use the CPUs the job has, not every core of the node.
threads=${{SLURM_CPUS_PER_TASK:-1}}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
# The editor's Ports view links a web app on this node through the Jupyter server's proxy.
export VSCODE_PROXY_URI={proxy_uri}
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
  rm -f "$conn" "$conn.tmp" "$state_dir/job-$SLURM_JOB_ID.wd"
  if [ -n "$ide_pid" ]; then
    kill -TERM -- "-$ide_pid" 2>/dev/null
    sleep 1
    kill -KILL -- "-$ide_pid" 2>/dev/null
  fi
}}
trap cleanup EXIT
# The job's folder, for the notebook kernels started in it later (kernels.py).
printf '%s\\n' "$workdir" > "$state_dir/job-$SLURM_JOB_ID.wd"
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
  "$workdir" &
ide_pid=$!

fmt='{{"host": "%s", "port": %s, "password": "%s", "jobId": "%s"}}\\n'
printf "$fmt" "$node" "$port" "$secret" "$SLURM_JOB_ID" > "$conn.tmp"
mv -f "$conn.tmp" "$conn"

wait "$ide_pid"
status=$?
echo "jupyter-hpc-manager: the IDE exited with status $status"
exit "$status"
"""


def job_script(job_name: str, *, prologue: str = "", ide_command: str = "code-server",
               proxy_uri: str = "") -> str:
    """``proxy_uri``: where the IDE's port proxy is reached from the browser, with code-server's
    ``{{port}}`` placeholder (VSCODE_PROXY_URI)."""
    return JOB_SCRIPT_TEMPLATE.format(
        remote_dir=REMOTE_DIR,
        job_name=job_name,
        prologue=prologue.rstrip() or ":",
        ide_command=ide_command,
        proxy_uri=shlex.quote(proxy_uri),
    )
