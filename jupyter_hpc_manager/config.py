"""Configuration: the clusters and the defaults, as traitlets with help text.

``c.HPCManager.clusters`` maps a cluster name to a dict of ``ClusterConfig`` traits; the dicts are
coerced into ``ClusterConfig`` objects at start-up and every bad value is reported by name."""

from __future__ import annotations

import os
import re
from typing import Any

from traitlets import (
    Bool,
    Dict,
    Enum,
    Float,
    HasTraits,
    Int,
    List,
    TraitError,
    Unicode,
    default,
    validate,
)
from traitlets.config import LoggingConfigurable

from . import validation
from .errors import ValidationError
from .validation import PRESET_FIELDS

CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SAFE_WORD = re.compile(r"^[A-Za-z0-9_.,@%+=:/-]+$")


class ClusterConfig(HasTraits):
    """One cluster: how to reach its login node and how to run the IDE job there."""

    name = Unicode(help="The cluster's name, as used in the REST API and the UI.")
    host = Unicode(
        help="Login node: a host name or address, or a Host alias from ~/.ssh/config."
    )
    port = Int(
        0, help="SSH port of the login node; 0 means ~/.ssh/config's Port, else 22."
    )
    user = Unicode(
        "", help="SSH user on the cluster; empty means ~/.ssh/config's User, else the local user."
    )
    identity_file = Unicode(
        "",
        help="Private key file; empty means ~/.ssh/config's IdentityFile, else ssh-agent and the "
        "default keys in ~/.ssh.",
    )
    known_hosts = Unicode(
        "",
        help="Extra known_hosts file pinning the login node's key (checked with the system and "
        "user known_hosts). Unknown or changed host keys are always refused.",
    )
    proxy_jump = Unicode(
        "",
        help="Jump host(s) to reach the login node through, [user@]host[:port] or a Host alias, "
        "several separated by commas and crossed in that order (like ssh -J a,b); empty means "
        "~/.ssh/config's ProxyJump, if any. A jump host that asks for a password or code is "
        "logged in to from the sidebar, like the login node.",
    )
    job_name = Unicode(
        help="SLURM job name that marks this cluster's IDE job; one such job per user and cluster."
    )
    partition = Unicode(
        "", help="SLURM partition used when a launch names none (sbatch --partition); empty: "
        "SLURM's default partition.")
    account = Unicode(
        "", help="SLURM account used when a launch names none (sbatch --account); empty: the "
        "user's default account.")
    qos = Unicode("", help="SLURM QOS used when a launch names none (sbatch --qos); empty: none.")
    presets = Dict(
        help="Named launch presets offered on this cluster, each a dict of launch fields "
        "(partition, gpus, cpus, mem, time, account, qos, workdir), e.g. {'gpu-small': "
        "{'partition': 'gpu', 'gpus': '1', 'cpus': '8', 'mem': '64G', 'time': '04:00:00'}}. A "
        "launch with preset=<name> takes these for the fields it does not give itself.")
    prologue = Unicode(
        "",
        help="Shell lines run in the job before the IDE starts, e.g. 'module load code-server'.",
    )
    ide_command = Unicode(
        "code-server",
        help="Command that starts code-server on the compute node (the job adds --auth "
        "password, --bind-addr and its folders).",
    )
    sbatch = Unicode(
        "sbatch",
        help="sbatch command on the login node (a full path if it is not on the PATH of a "
        "non-interactive SSH session).",
    )
    squeue = Unicode("squeue", help="squeue command on the login node.")
    sinfo = Unicode("sinfo", help="sinfo command on the login node (reads the partitions).")
    sacctmgr = Unicode(
        "sacctmgr", help="sacctmgr command on the login node (reads the user's accounts and "
        "QOS where SLURM keeps accounting); empty: do not ask.")
    scancel = Unicode("scancel", help="scancel command on the login node.")
    max_sessions = Int(
        8, help="Commands (SSH exec channels) run at once on the login node's one connection; "
        "keep it below its sshd's MaxSessions (OpenSSH's default is 10). A login node that "
        "refuses a channel teaches a lower number; forwarded channels (the IDE) do not count.")
    max_kernels = Int(
        4, help="Notebook kernels that run at once in this cluster's job. Each holds one of "
        "max_sessions' exec channels while it runs (its five ports are forwarded channels, "
        "which do not count): keep it below max_sessions, so that commands always have some.")
    kernels = Dict(
        help="The kernels a job on this cluster offers, by name, as kernelspecs say them: "
        "{'python3': {'display_name': 'Python 3', 'language': 'python', 'argv': ['python', "
        "'-m', 'ipykernel_launcher', '-f', '{connection_file}']}}. Empty: the job is asked "
        "(kernel_discovery).")
    kernel_discovery = Unicode(
        "jupyter kernelspec list --json",
        help="Command run inside the running job (a step: srun --overlap) that lists the "
        "kernels its environment offers, as `jupyter kernelspec list --json` prints them. "
        "Admin-configured (it runs in a shell on the node); empty: only `kernels`.")
    srun = Unicode("srun", help="srun command on the login node (starts kernels in the job).")
    kernel_encryption = Enum(
        ["auto", "required", "disabled"], "auto",
        help="CurveZMQ for the kernels' traffic on the node, which other users of the node can "
        "reach (the HMAC key only keeps them from running code). auto: where the node's "
        "ipykernel declares it (metadata.supported_encryption, ipykernel 7.3+); required: a "
        "kernel without it does not start; disabled: HMAC only.")
    kernel_reconnect_seconds = Int(
        600, help="How long a notebook kernel's step outlives a lost connection to the login "
        "node (the network, a login that expired at an MFA site, a Jupyter server that was "
        "killed), waiting for this server to connect or log in again and take the kernel "
        "back; then the step is cancelled. 0: the step ends with its connection. A server "
        "that stops normally shuts its kernels down at once.")
    idle_cancel_minutes = Float(
        None, allow_none=True,
        help="This cluster's idle auto-cancel, in minutes (overrides "
        "HPCManager.idle_cancel_minutes; 0: off here; unset: the server's setting).")
    scontrol = Unicode("scontrol", help="scontrol command on the login node (time changes; the "
                       "folder of a job started by an older version, for its kernels).")
    threads = Int(
        4, help="Threads of this cluster's own for blocking SSH work (connecting, logging in, "
        "commands, opening channels): a hung login node or a login waiting for a code uses "
        "its own, never another cluster's.")
    extra_sbatch_args = List(
        Unicode(), help="More sbatch options, one argv item each, e.g. ['--qos=interactive']."
    )

    @default("job_name")
    def _default_job_name(self) -> str:
        return f"hpc-code-{self.name}"

    @validate("name")
    def _check_name(self, proposal: Any) -> str:
        value = proposal["value"]
        if not CLUSTER_NAME.match(value):
            raise TraitError(f"cluster name {value!r} must match {CLUSTER_NAME.pattern}")
        return str(value)

    @validate("host")
    def _check_host(self, proposal: Any) -> str:
        value = proposal["value"]
        if not value or not SAFE_WORD.match(value):
            raise TraitError(f"host {value!r} must be a host name, address or ssh-config alias")
        return str(value)

    @validate("max_sessions", "threads", "max_kernels")
    def _check_at_least_one(self, proposal: Any) -> int:
        value = proposal["value"]
        if value < 1:
            raise TraitError(f"{proposal['trait'].name} {value!r} must be 1 or more")
        return int(value)

    @validate("idle_cancel_minutes")
    def _check_idle(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is not None and value < 0:
            raise TraitError(f"idle_cancel_minutes {value!r} must be 0 or more")
        return value

    @validate("kernel_reconnect_seconds")
    def _check_not_negative(self, proposal: Any) -> int:
        value = proposal["value"]
        if value < 0:
            raise TraitError(f"{proposal['trait'].name} {value!r} must be 0 or more")
        return int(value)

    @validate("port")
    def _check_port(self, proposal: Any) -> int:
        value = proposal["value"]
        if not 0 <= value <= 65535:
            raise TraitError(f"port {value!r} must be 1-65535 (or 0 for the default)")
        return int(value)

    @validate("user")
    def _check_user(self, proposal: Any) -> str:
        value = proposal["value"]
        if value and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", value):
            raise TraitError(f"user {value!r} is not a valid user name")
        return str(value)

    @validate("identity_file", "known_hosts")
    def _expand_path(self, proposal: Any) -> str:
        # Whether the file is there is the user's matter, not the server's: under JupyterHub one
        # config serves everybody, so a user without this key gets the error on that cluster's
        # status (ssh.py), and the server starts.
        return os.path.expanduser(proposal["value"])

    @validate("job_name")
    def _check_job_name(self, proposal: Any) -> str:
        value = proposal["value"]
        if not JOB_NAME.match(value):
            raise TraitError(f"job_name {value!r} must match {JOB_NAME.pattern}")
        return str(value)

    @validate("proxy_jump")
    def _check_jump(self, proposal: Any) -> str:
        value = proposal["value"]
        hop = r"([A-Za-z0-9_.-]+@)?[A-Za-z0-9_.-]+(:[0-9]+)?"
        if value and not re.match(rf"^{hop}(,{hop})*$", value):
            raise TraitError(f"proxy_jump {value!r} must be [user@]host[:port] or a Host alias, "
                             "or several of them separated by commas (crossed in that order)")
        return str(value)

    @validate("presets")
    def _check_presets(self, proposal: Any) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name, preset in proposal["value"].items():
            if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_. -]{0,63}$",
                                                         name):
                raise TraitError(f"preset name {name!r} must be letters, digits, '_', '.', '-' "
                                 "or spaces (1-64)")
            if not isinstance(preset, dict):
                raise TraitError(f"preset {name!r} must be a dict of launch fields")
            unknown = set(preset) - set(PRESET_FIELDS)
            if unknown:
                raise TraitError(f"preset {name!r} has unknown field(s) "
                                 f"{', '.join(sorted(map(str, unknown)))}; known: "
                                 f"{', '.join(PRESET_FIELDS)}")
            try:
                validation.parse_preset(preset)
            except ValidationError as exc:
                raise TraitError(f"preset {name!r}: {exc.message}") from exc
            out[name] = {k: str(v) for k, v in preset.items()}
        return out

    @validate("partition", "account", "qos")
    def _check_slurm_name(self, proposal: Any) -> str:
        # The launch's own rule (a default that every launch would refuse stops start-up).
        try:
            return validation.parse_name(proposal["value"], proposal["trait"].name) or ""
        except ValidationError as exc:
            raise TraitError(f"{proposal['trait'].name} {proposal['value']!r}: "
                             f"{exc.message}") from exc

    @validate("ide_command", "sbatch", "squeue", "scancel", "sinfo")
    def _check_command(self, proposal: Any) -> str:
        value = proposal["value"].strip()
        if not value:
            raise TraitError(f"{proposal['trait'].name} must not be empty")
        return str(value)



def cluster_help() -> str:
    """HPCManager.clusters' help: every per-cluster setting with its own help (so that
    ``jupyter hpc-manager --help-all`` documents them)."""
    lines = ["Clusters by name, each a dict of settings. Example:",
             '{"gemini": {"host": "login.gemini.example.org", "user": "alice", '
             '"partition": "short"}}. The settings:']
    for name, trait in sorted(ClusterConfig.class_traits().items()):
        if name != "name":
            lines.append(f"  {name}: {' '.join(trait.help.split())}")
    return "\n".join(lines)


class HPCManager(LoggingConfigurable):
    """Settings of jupyter-hpc-manager (``c.HPCManager.*`` in jupyter_server_config.py)."""

    clusters = Dict(config=True, help=cluster_help())
    default_hpc = Unicode(
        "", config=True, help="Cluster used when a request names none; empty: the first one."
    )
    default_cpus = Unicode("2", config=True, help="CPUs of a launch that gives none.")
    default_mem = Unicode("40G", config=True, help="Memory of a launch that gives none.")
    default_time = Unicode(
        "12:00:00", config=True,
        help="Walltime of a launch that gives none (HH:MM:SS or D-HH:MM:SS).",
    )
    max_cpus = Int(128, config=True, help="Largest CPU count a user may ask for.")
    cache_ttl = Int(
        120, config=True,
        help="Seconds cluster-status answers from its cache before it asks SLURM again.",
    )
    pending_cache_ttl = Float(
        10.0, config=True,
        help="Seconds cluster-status answers from its cache while this server's own job pends "
        "(at most cache_ttl). The server follows its queued job for every open tab at once, "
        "one squeue per cluster per this many seconds, so a card turns running soon after the "
        "job starts; sidebars never ask it to skip the cache for that.",
    )
    status_wait = Float(
        5.0, config=True,
        help="Seconds cluster-status waits for a cluster's squeue. A cluster that has not "
        "answered by then is shown by its last answer (or as unknown, still being asked) and "
        "its query goes on, so one hung login node does not hold up the others.",
    )
    refresh_min_interval = Float(
        1.0, config=True,
        help="Seconds after a status query during which ?refresh=true shares that query's "
        "answer instead of asking SLURM again (so many tabs cannot flood the login node).",
    )
    launch_timeout = Float(
        30.0, config=True,
        help="Seconds a launch's request may take, from its start: by then it answers 'running' "
        "or 'pending' (the job stays queued and the sidebar follows it). Keep it below the read "
        "timeout of every proxy in front of Jupyter (nginx's proxy_read_timeout is 60 s).",
    )
    poll_interval = Float(
        1.0, config=True, help="Seconds between squeue polls while a launch waits."
    )
    stop_timeout = Float(
        15.0, config=True,
        help="Seconds a stop with cancelJob waits for the job to leave squeue.",
    )
    executor_threads = Int(
        8, config=True, help="Threads for the server's own blocking work (writing the session "
        "record). SSH work runs on each cluster's own threads (the clusters' `threads`)."
    )
    ssh_timeout = Float(
        15.0, config=True, help="Seconds to connect and authenticate to a login node."
    )
    ide_timeout = Float(
        60.0, config=True,
        help="Seconds the IDE may take to answer a request, to send the next part of an answer, "
        "or to take the next part of an upload, before the proxy gives up with 504 (nginx's "
        "proxy_read_timeout is 60 s). An IDE whose health check takes longer has its "
        "websockets closed (it is checked every half of this while any is open).",
    )
    command_timeout = Float(
        30.0, config=True, help="Seconds a command on the login node may take."
    )
    keepalive_interval = Int(
        30, config=True, help="Seconds between SSH keepalives on an idle connection (0: off)."
    )
    login_timeout = Float(
        120.0, config=True,
        help="Seconds a login to a cluster that asks for a password or one-time code waits for "
             "the user's answers before it is given up (OpenSSH's own LoginGraceTime is 120 s).",
    )
    idle_cancel_minutes = Float(
        0.0, config=True,
        help="Cancel a running job that nobody has used for this many minutes, so that it gives "
        "its allocation back: no input in its VS Code (typing, clicks, requests; not the "
        "editor's own keep-alives and pings), no notebook kernel of it busy, no Keep from the "
        "panel; the panel's polling never counts. 0 (the default): never. A cluster's own "
        "idle_cancel_minutes overrides it.",
    )
    idle_warning_minutes = Float(
        5.0, config=True,
        help="How many minutes before an idle cancel the panel warns (with a Keep it button).",
    )
    extend_command = Unicode(
        "", config=True,
        help="Where a site lets users raise a running job's time limit through a tool of its "
        "own (SLURM lets only operators do it): that command, run on the login node with two "
        "more argv items, the job id and the new limit (HH:MM:SS or D-HH:MM:SS). Empty: such a "
        "raise is refused with 403, saying so.",
    )
    cancel_jobs_on_shutdown = Bool(
        False, config=True,
        help="Cancel the jobs of this server's sessions when the server stops (for example when "
        "JupyterHub's culler stops it). By default they keep running until their walltime, and "
        "the next server finds them again.",
    )
    state_file = Unicode(
        "", config=True,
        help="Where the small record of sessions lives; empty: jupyter_hpc_manager/state.json "
        "under Jupyter's data dir.",
    )
    ssh_config_file = Unicode(
        "~/.ssh/config", config=True, help="OpenSSH client config read for host aliases."
    )
    use_system_known_hosts = Bool(
        True, config=True,
        help="Also trust /etc/ssh/ssh_known_hosts and ~/.ssh/known_hosts (keys are verified "
        "either way).",
    )

    @validate("clusters")
    def _coerce_clusters(self, proposal: Any) -> dict[str, ClusterConfig]:
        out: dict[str, ClusterConfig] = {}
        for name, spec in proposal["value"].items():
            if isinstance(spec, ClusterConfig):
                out[name] = spec
                continue
            if not isinstance(spec, dict):
                raise TraitError(f"clusters[{name!r}] must be a dict of settings, not {spec!r}")
            unknown = set(spec) - set(ClusterConfig.class_trait_names()) - {"name"}
            if unknown:
                raise TraitError(
                    f"clusters[{name!r}] has unknown setting(s) {', '.join(sorted(unknown))}; "
                    f"known: {', '.join(sorted(ClusterConfig.class_trait_names()))}"
                )
            if "host" not in spec:
                raise TraitError(f"clusters[{name!r}] needs a 'host'")
            try:
                out[name] = ClusterConfig(name=name, **spec)
            except TraitError as exc:
                raise TraitError(f"clusters[{name!r}]: {exc}") from exc
        job_names = [c.job_name for c in out.values()]
        dup = {j for j in job_names if job_names.count(j) > 1}
        if dup:
            raise TraitError(
                f"clusters share the job_name {', '.join(sorted(dup))}: each needs its own")
        return out

    @validate("default_cpus")
    def _check_cpus(self, proposal: Any) -> str:
        # Against max_cpus in check(), once every setting is loaded (their order is not known).
        return str(self._check(validation.parse_cpus, proposal, 9999))

    @validate("default_mem")
    def _check_mem(self, proposal: Any) -> str:
        return str(self._check(validation.parse_mem, proposal))

    @validate("default_time")
    def _check_time(self, proposal: Any) -> str:
        return str(self._check(validation.parse_time, proposal))

    @staticmethod
    def _check(parse: Any, proposal: Any, *args: Any) -> Any:
        try:
            return parse(proposal["value"], *args)
        except ValidationError as exc:
            raise TraitError(f"{proposal['trait'].name} {proposal['value']!r}: {exc}") from exc

    @validate("refresh_min_interval", "pending_cache_ttl")
    def _check_non_negative(self, proposal: Any) -> float:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} {proposal['value']!r} must be 0 or more")
        return float(proposal["value"])

    @validate("max_cpus", "cache_ttl", "executor_threads")
    def _check_positive_int(self, proposal: Any) -> int:
        if proposal["value"] < (0 if proposal["trait"].name == "cache_ttl" else 1):
            raise TraitError(f"{proposal['trait'].name} {proposal['value']!r} is too small")
        return int(proposal["value"])

    @validate("launch_timeout", "poll_interval", "stop_timeout", "ssh_timeout", "command_timeout",
              "ide_timeout",
              "status_wait", "login_timeout")
    def _check_positive_float(self, proposal: Any) -> float:
        if proposal["value"] <= 0:
            raise TraitError(f"{proposal['trait'].name} {proposal['value']!r} must be above 0")
        return float(proposal["value"])

    @validate("idle_cancel_minutes", "idle_warning_minutes")
    def _check_minutes(self, proposal: Any) -> float:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} {proposal['value']!r} must be 0 or more")
        return float(proposal["value"])

    def idle_cancel_seconds(self, cluster: ClusterConfig) -> float | None:
        """The idle auto-cancel of cluster, in seconds; None: off."""
        own: float | None = cluster.idle_cancel_minutes
        minutes = float(self.idle_cancel_minutes if own is None else own)
        return minutes * 60.0 if minutes > 0 else None

    def check(self) -> None:
        """Cross-setting checks, run once at start-up after every trait is loaded."""
        if not self.clusters:
            self.log.warning("jupyter-hpc-manager: no clusters configured (c.HPCManager.clusters)")
            return
        if self.default_hpc and self.default_hpc not in self.clusters:
            raise TraitError(
                f"default_hpc {self.default_hpc!r} is not a configured cluster "
                f"({', '.join(self.clusters)})"
            )
        try:
            validation.parse_cpus(self.default_cpus, self.max_cpus)
        except ValidationError as exc:
            raise TraitError(f"default_cpus {self.default_cpus!r} with max_cpus {self.max_cpus}: "
                             f"{exc.message}") from exc

    @property
    def default_cluster(self) -> str | None:
        if self.default_hpc:
            return self.default_hpc
        return next(iter(self.clusters), None)
