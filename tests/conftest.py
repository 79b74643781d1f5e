"""Fixtures for tests against the real sandbox cluster (sandbox/up.sh): OpenSSH sshd on
127.0.0.1:2222, SLURM, code-server. A sandbox that is not up fails the tests; it never skips."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import pwd
import shutil
import subprocess
import time
import uuid

import pytest

import jupyter_process
from jupyter_process import MFA_USER, squeue_of

pytest_plugins = ("pytest_jupyter.jupyter_server",)

ROOT = jupyter_process.ROOT
SANDBOX_USER = jupyter_process.SANDBOX_USER


@pytest.fixture(scope="session")
def sandbox_cluster() -> dict:
    try:
        return jupyter_process.sandbox_cluster()
    except jupyter_process.SandboxDown as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def cluster_tmp() -> pathlib.Path:
    """A folder the cluster user can write (for canaries and the squeue counter)."""
    path = pathlib.Path(f"/tmp/jhm-tests-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o755)
    user = pwd.getpwnam(SANDBOX_USER)
    os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def counting_squeue(cluster_tmp: pathlib.Path) -> pathlib.Path:
    """An squeue for the cluster that logs each call on the cluster side, so tests count the
    queries that really ran there."""
    script = cluster_tmp / "squeue-counting"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{cluster_tmp}/squeue-calls.log"\n'
        'exec squeue "$@"\n'
    )
    script.chmod(0o755)
    return script


def squeue_calls(cluster_tmp: pathlib.Path, job_name: str) -> int:
    log = cluster_tmp / "squeue-calls.log"
    if not log.exists():
        return 0
    return sum(f"--name={job_name} " in line + " " for line in log.read_text().splitlines())


class StepClock:
    """The status caches' clock, moved by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def step_clock(manager) -> StepClock:
    """Give the manager (the clusters' ages) and every cluster's caches (squeue's and sinfo's)
    a clock the test moves."""
    clock = StepClock()
    manager.services.clock = clock
    for cluster in manager.clusters.values():
        cluster.squeue_cache.clock = cluster.sinfo_cache.clock = clock
    return clock


@pytest.fixture
def clean_slurm():
    """No job of the sandbox user before or after the test."""
    jupyter_process.cancel_all_jobs()
    yield
    jupyter_process.cancel_all_jobs()


@pytest.fixture
def filled_node(clean_slurm):
    """Another user's job holds every CPU of the node for ten minutes: a launch meanwhile is
    pending, with SLURM's reason ("Resources") and, soon, its estimated start."""
    out = subprocess.run(
        ["runuser", "-u", MFA_USER, "--", "sbatch", "--parsable", "--job-name=filler",
         "--cpus-per-task=16", "--mem=1G", "--time=00:10:00", "--partition=debug",
         "--output=/dev/null", "--wrap=sleep 600"],
        capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()
    for _ in range(60):
        if squeue_of(out, "%T") == "RUNNING":
            break
        time.sleep(0.5)
    yield out
    subprocess.run(["scancel", out], check=False)


@pytest.fixture(scope="session")
def echo_ide(cluster_tmp: pathlib.Path) -> str:
    """tests/resources/echo_ide.py where the cluster user can run it, as an ide_command."""
    target = cluster_tmp / "echo_ide.py"
    shutil.copy(ROOT / "tests" / "resources" / "echo_ide.py", target)
    target.chmod(0o755)
    return f"python3 {target}"


@pytest.fixture
def cluster_settings(sandbox_cluster: dict, counting_squeue: pathlib.Path,
                     cluster_tmp: pathlib.Path, echo_ide: str) -> dict:
    """gemini and apollo on the sandbox, plus clusters that fail in known ways."""
    good = dict(sandbox_cluster, squeue=str(counting_squeue))
    wrong_key = cluster_tmp / "other_known_hosts"
    if not wrong_key.exists():
        # A known_hosts that names the sandbox with some other key: a changed host key.
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(cluster_tmp / "other_key")], check=True)
        other = (cluster_tmp / "other_key.pub").read_text().split()[:2]
        wrong_key.write_text(f"[127.0.0.1]:2222 {' '.join(other)}\n")
    empty_known = cluster_tmp / "empty_known_hosts"
    empty_known.touch()
    return {
        "gemini": dict(good, job_name="test-hpc-gemini"),
        "apollo": dict(good, job_name="test-hpc-apollo"),
        # sbatch refuses its jobs (a feature no node has; nothing we check before submitting).
        "broken": dict(good, job_name="test-hpc-broken",
                       extra_sbatch_args=["--constraint=nosuchfeature"]),
        "dies": dict(good, job_name="test-hpc-dies",
                     prologue="echo 'module load: no such module code-server' >&2\nexit 3"),
        "offline": dict(good, port=2299, job_name="test-hpc-offline"),
        "stranger": dict(good, known_hosts=str(empty_known), job_name="test-hpc-stranger"),
        "changed": dict(good, known_hosts=str(wrong_key), job_name="test-hpc-changed"),
        "echo1": dict(good, job_name="test-hpc-echo1", ide_command=echo_ide),
        "echo2": dict(good, job_name="test-hpc-echo2", ide_command=echo_ide),
    }


@pytest.fixture
def hpc_config() -> dict:
    """Per-test overrides of c.HPCManager (besides clusters)."""
    return {"launch_timeout": 60.0, "poll_interval": 0.5, "use_system_known_hosts": False}


@pytest.fixture
def jp_server_config(cluster_settings: dict, hpc_config: dict, tmp_path: pathlib.Path):
    from traitlets.config import Config

    return Config({
        "ServerApp": {
            "jpserver_extensions": {"jupyter_hpc_manager": True},
            "allow_unauthenticated_access": False,
        },
        "HPCManager": {
            "clusters": cluster_settings,
            "default_hpc": "gemini" if "gemini" in cluster_settings else min(cluster_settings),
            "state_file": str(tmp_path / "state" / "state.json"),
            **hpc_config,
        },
    })


@pytest.fixture
def manager(jp_serverapp):
    """The extension's SessionManager inside the test server."""
    return jp_serverapp.web_app.settings["hpc_manager"]


@pytest.fixture
def api_raw(http_server_client, jp_auth_header, jp_base_url):
    """Like api, with the path (after api/hpc/) sent exactly as given, already URL-encoded."""

    async def call(method: str, path: str, body=None):
        response = await http_server_client.fetch(
            f"{jp_base_url}api/hpc/{path}", method=method, headers=dict(jp_auth_header),
            body=json.dumps(body or {}) if method == "POST" else None, raise_error=False)
        return response.code, json.loads(response.body)

    return call


@pytest.fixture
def api(jp_fetch):
    """Call the contract: returns (status code, JSON body) and never raises on 4xx/5xx."""

    async def call(method: str, *path: str, body=None, params=None, **kw):
        kwargs = {"method": method, "raise_error": False, "params": params, **kw}
        if method == "POST":
            kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
        response = await jp_fetch("api", "hpc", *path, **kwargs)
        text = response.body.decode() if response.body else ""
        return response.code, (json.loads(text) if text else None)

    return call


async def settled_status(api, refresh: bool = False) -> dict:
    """`status` once every cluster's partitions are in (or have failed): status answers from
    memory and asks sinfo in the background (partitionsPending) for a later call."""
    params = {"refresh": "true"} if refresh else None
    for _ in range(200):
        code, status = await api("GET", "status", params=params)
        assert code == 200, status
        options = status["config"]["clusterOptions"]
        if not any(o["partitionsPending"] for o in options.values()):
            return status
        params = None
        await asyncio.sleep(0.1)
    raise AssertionError(f"partitions still pending after 20 s: {options}")


async def whoami(jp_fetch, hpc: str) -> tuple[int, dict | None]:
    """Ask the echo IDE (tests/resources/echo_ide.py) of a cluster, through the proxy, which job
    serves it: (HTTP status, its answer)."""
    r = await jp_fetch("hpc", hpc, "code", "whoami", raise_error=False)
    return r.code, json.loads(r.body) if r.code == 200 else None
