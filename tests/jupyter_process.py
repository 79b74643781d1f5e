"""A real `jupyter server` process with the extension, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import pathlib
import pwd
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
SANDBOX = ROOT / ".sandbox"
SANDBOX_USER = "hpcuser"
MFA_USER = "mfauser"  # the cluster user of the MFA login nodes
JUPYTER = str(pathlib.Path(sys.executable).with_name("jupyter"))
TOKEN = "test-token-for-process-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_jobs(user: str = SANDBOX_USER) -> list[dict]:
    """The user's jobs as SLURM itself lists them (asked directly, not through our code)."""
    out = subprocess.run(
        ["squeue", "-h", "-u", user, "-o", "%i|%j|%T"], capture_output=True, text=True,
        check=True,
    ).stdout
    return [dict(zip(("id", "name", "state"), line.split("|"), strict=True))
            for line in out.splitlines() if line.strip()]


def squeue_of(job_id: str, fmt: str) -> str:
    """A field of a job as SLURM lists it (asked directly, not through our code)."""
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", fmt], capture_output=True,
                          text=True, check=True).stdout.strip()


def cancel_all_jobs() -> None:
    users = (SANDBOX_USER, MFA_USER)
    for user in users:
        subprocess.run(["scancel", "-u", user], check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not any(slurm_jobs(u) for u in users):
            return
        time.sleep(0.25)
    raise AssertionError(f"jobs still queued after scancel: {[slurm_jobs(u) for u in users]}")


def home_file(user: str, path: str, content: str) -> None:
    """A file in a sandbox user's home, made as if by them (every folder on its way too)."""
    pw = pwd.getpwnam(user)
    full = os.path.join(pw.pw_dir, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(content)
    part = full
    while part != pw.pw_dir:
        os.chown(part, pw.pw_uid, pw.pw_gid)
        part = os.path.dirname(part)


class SandboxDown(RuntimeError):
    pass


def sandbox_cluster() -> dict:
    """Cluster settings for the sandbox that sandbox/up.sh started; SandboxDown if it is not up."""
    key, known, pid = (SANDBOX / n for n in ("hpcuser_ed25519", "known_hosts", "sshd.pid"))
    if not (key.exists() and known.exists() and pid.exists()):
        raise SandboxDown("the sandbox cluster is not up: run `make sandbox-up` (or `make test`)")
    try:
        os.kill(int(pid.read_text()), 0)
    except (OSError, ValueError) as exc:
        raise SandboxDown("the sandbox's sshd is not running: run `make sandbox-up`") from exc
    return {
        "host": "127.0.0.1",
        "port": 2222,
        "user": "hpcuser",
        "identity_file": str(key),
        "known_hosts": str(known),
        "partition": "debug",
        "ide_command": "/opt/jupyter-hpc-sandbox/bin/code-server",
    }


class Server:
    """`jupyter server` with the sandbox clusters, as a subprocess."""

    token = TOKEN

    def __init__(self, workdir: pathlib.Path, clusters: dict, extra: str = "",
                 base_url: str = "/") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "jupyter_server_config.py"
        self.config.write_text(
            "c = get_config()  # noqa\n"
            f"c.HPCManager.clusters = {clusters!r}\n"
            f"c.HPCManager.state_file = {str(workdir / 'state.json')!r}\n"
            "c.HPCManager.launch_timeout = 60.0\n"
            "c.HPCManager.poll_interval = 0.5\n"
            + extra
        )
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> subprocess.Popen:
        (self.workdir / "root").mkdir(exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = self._popen(log)
        if wait:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
                try:
                    if self.call("GET", "health")[0] == 200:
                        return self.proc
                except OSError:
                    pass
                time.sleep(0.2)
            raise AssertionError("server did not answer in 60 s")
        return self.proc

    def _popen(self, log) -> subprocess.Popen:
        return subprocess.Popen(
            [JUPYTER, "server", f"--config={self.config}", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
             f"--ServerApp.root_dir={self.workdir / 'root'}", "--allow-root",
             f"--ServerApp.base_url={self.base_url}"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime")},
        )

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{self.url}api/hpc/{path}", method=method,
            data=json.dumps(body or {}).encode() if method == "POST" else None,
            headers={"Authorization": f"token {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def fetch(self, path: str):
        """GET a page of the server (with the token); the response, whatever its status."""
        request = urllib.request.Request(f"{self.url}{path}",
                                         headers={"Authorization": f"token {TOKEN}"})
        try:
            return urllib.request.urlopen(request, timeout=120)
        except urllib.error.HTTPError as e:
            return e

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
