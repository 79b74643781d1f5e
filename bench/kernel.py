#!/usr/bin/env python
"""A notebook kernel inside the running job against a local kernel and `ssh -L`, one run.

Issue 20, point 7. Three kernels, the same ipykernel code:
  (a) job:    the job's kernel (spec hpc-bench-python3), started by our provisioner (a step of
              the job: srun --overlap) and reached through the five ports the Jupyter server
              bridges over the cluster's one SSH connection;
  (b) local:  the Jupyter server's own python3 kernel (ipykernel on this machine);
  (c) ssh -L: an ipykernel started by hand in the same job (`srun --jobid --overlap` over ssh,
              fixed ports picked here) and reached through `ssh -L`, five forwards. That ssh is a
              ControlMaster with a command running (OpenSSH turns Nagle off only once a session
              runs, see bench/wan.py), and each start of (c) runs its srun as a session
              multiplexed over it: the best case for ssh -L (no SSH handshake per start, as our
              server has none). One row more, (c-N): the same kernel through a plain
              `ssh -N -L` (five forwards, Nagle on), as the issue's baseline is usually written.

Clients, said per row:
  - ws: Jupyter's kernel websocket (what JupyterLab sees): (a) and (b) only. jupyter_server's
    (tornado's) websocket keeps Nagle's algorithm on, so each small frame after the first of a
    reply waits for the client's delayed ACK (~40 ms, the same for both kernels).
  - ws+nodelay: the same websocket with TCP_NODELAY, set by a patch in the bench's own server
    config (?nodelay=1): what the kernel path costs without that 40 ms.
  - jc: jupyter_client's BlockingKernelClient on a connection file: for (a) and (b) the one the
    Jupyter server wrote for the kernel (for (a): the bridge's local ports; the server stays in
    the path as the bridge), for (c) the forwarded ports. The like-for-like rows.

Rows:
  - kernel start (median of --starts): (a)/(b) from POST api/kernels {"name": spec} to the
    kernel_info reply (ws: on a websocket opened right after the POST; jc: on the connection
    file, read right after the POST); (c) from starting `ssh -S ctl login 'srun ... ipykernel'`
    to the kernel_info reply through the forwards, after its "--existing" banner said it bound
    its ports. Each start is shut down before the next.
  - `1+1`: execute_request to both execute_reply and the idle status, p50/p95 of --rounds.
  - 10 MB of output: `print('x' * 10_000_000)` to the idle status, all text received, median of
    --runs.
The bench's server raises jupyter_server's iopub_data_rate_limit (1 MB/s by default: 10 MB of
output would arrive as "IOPub data rate exceeded" on the websocket). Note that the server
watches every kernel's iopub itself (activity): for (a) each byte of output crosses the SSH
connection once for that watcher and once per client, for (c) once per client.
Ratios (a)/(b) and (a)/(c): lower is better. Goals (issue 20): `1+1` within +3 ms of the local
kernel on loopback; no worse than ssh -L ((a)/(c) <= 1.0) across the WAN delay.

--rtt-ms N puts bench/wan.py's relay (RTT/2 each way) between this machine and the sandbox's sshd:
our cluster and both ssh -L connect to it (the login node to the node stays the LAN). 0 (the
default): straight to sshd (loopback).

    flock /tmp/sandbox.lock .venv/bin/python bench/kernel.py [--rtt-ms 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import pwd
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import websocket
import zmq
from jupyter_client import BlockingKernelClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from wan import Relay, _die_with_parent, free_ports, known_hosts_for, wait_port  # noqa: E402

from jupyter_process import SANDBOX_USER, TOKEN, Server, sandbox_cluster  # noqa: E402

KERNEL_VENV = "/opt/jupyter-hpc-sandbox/kernel-venv"
KERNEL_DISCOVERY = f"{KERNEL_VENV}/bin/jupyter kernelspec list --json"
CLUSTER = "bench"
JOB_SPEC = f"hpc-{CLUSTER}-python3"
LOCAL_SPEC = "python3"
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
BIG = 10_000_000
BIG_CODE = f"print('x' * {BIG})"
# In the bench's server config: a kernel websocket opened with ?nodelay=1 gets TCP_NODELAY (tornado
# leaves Nagle on: each small frame after the first waits for the client's delayed ACK, ~40 ms).
WS_NODELAY = """
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler as _Handler
_open = _Handler.open
async def _open_nodelay(self, kernel_id):
    if self.get_query_argument("nodelay", ""):
        self.set_nodelay(True)
    await _open(self, kernel_id)
_Handler.open = _open_nodelay
"""
A, B, C, CN = "(a) job", "(b) local", "(c) ssh -L", "(c-N) ssh -N -L"


# -- the Jupyter server's REST API ----------------------------------------------------------------
def rest(server: Server, method: str, path: str, body: dict | None = None) -> Any:
    request = urllib.request.Request(
        f"{server.url}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        text = r.read()
        return json.loads(text) if text else None


def start_kernel(server: Server, spec: str) -> str:
    return rest(server, "POST", "api/kernels", {"name": spec})["id"]


def delete_kernel(server: Server, kernel_id: str) -> None:
    with contextlib.suppress(urllib.error.HTTPError):
        rest(server, "DELETE", f"api/kernels/{kernel_id}")


def connection_file(server: Server, kernel_id: str) -> dict:
    return json.loads((server.workdir / "runtime" / f"kernel-{kernel_id}.json").read_text())


# -- clients --------------------------------------------------------------------------------------
class WsKernel:
    """A kernel through the Jupyter server's websocket, as JupyterLab talks to it."""

    def __init__(self, server: Server, kernel_id: str, nodelay: bool = False) -> None:
        url = server.url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
        self.session = uuid.uuid4().hex
        query = f"session_id={self.session}" + ("&nodelay=1" if nodelay else "")
        self.ws = websocket.create_connection(
            f"{url}?{query}", header=[f"Authorization: token {TOKEN}"],
            timeout=120)  # (websocket-client sets TCP_NODELAY)

    def send(self, msg_type: str, content: dict, channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session,
                       "username": "bench", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel,
            "buffers": []}))
        return msg_id

    def kernel_info(self) -> None:
        msg_id = self.send("kernel_info_request", {})
        while True:
            msg = json.loads(self.ws.recv())
            if (msg["header"]["msg_type"] == "kernel_info_reply"
                    and msg["parent_header"].get("msg_id") == msg_id):
                return

    def execute(self, code: str) -> int:
        """Runs code until its reply and idle; the characters of stdout received."""
        msg_id = self.send("execute_request", {"code": code, "silent": False,
                                               "store_history": False, "allow_stdin": False})
        reply = idle = False
        chars = 0
        while not (reply and idle):
            msg = json.loads(self.ws.recv())
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "execute_reply":
                reply = True
                if msg["content"]["status"] != "ok":
                    raise SystemExit(f"ws: {code!r}: {msg['content']}")
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif kind == "stream":
                chars += len(msg["content"]["text"])
        return chars

    def close(self) -> None:
        self.ws.close()


class JcKernel:
    """A kernel through jupyter_client's BlockingKernelClient on connection info."""

    def __init__(self, info: dict) -> None:
        self.client = BlockingKernelClient()
        self.client.load_connection_info(info)
        self.client.start_channels(hb=False)
        self.shell = self.client.shell_channel
        self.iopub = self.client.iopub_channel
        self.poller = zmq.Poller()
        self.poller.register(self.shell.socket, zmq.POLLIN)
        self.poller.register(self.iopub.socket, zmq.POLLIN)

    def kernel_info(self, timeout: float = 90) -> None:
        """The kernel_info reply (asked again every 2 s: a kernel not bound yet)."""
        deadline = time.monotonic() + timeout
        sent = {self.client.kernel_info()}
        last = time.monotonic()
        while time.monotonic() < deadline:
            if self.shell.socket.poll(50):
                msg = self.shell.get_msg(timeout=0)
                if (msg["header"]["msg_type"] == "kernel_info_reply"
                        and msg["parent_header"].get("msg_id") in sent):
                    return
            elif time.monotonic() - last > 2:
                sent.add(self.client.kernel_info())
                last = time.monotonic()
        raise SystemExit(f"no kernel_info reply in {timeout:.0f} s")

    def execute(self, code: str) -> int:
        msg_id = self.client.execute(code, store_history=False)
        reply = idle = False
        chars = 0
        deadline = time.monotonic() + 120
        while not (reply and idle):
            if time.monotonic() > deadline:
                raise SystemExit(f"jc: no answer to {code!r}")
            for sock, _ in self.poller.poll(1000):
                channel = self.shell if sock is self.shell.socket else self.iopub
                msg = channel.get_msg(timeout=0)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "execute_reply":
                    reply = True
                    if msg["content"]["status"] != "ok":
                        raise SystemExit(f"jc: {code!r}: {msg['content']}")
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
                elif kind == "stream":
                    chars += len(msg["content"]["text"])
        return chars

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.client.shutdown()

    def close(self) -> None:
        self.client.stop_channels()


# -- (c): a kernel started by hand in the job, reached through ssh -L -----------------------------
class SshSide:
    """The ssh processes of (c): a ControlMaster (running `cat`) with five -L forwards, a plain
    `ssh -N` with five more, and kernels started by hand in the job over the master."""

    def __init__(self, cluster: dict, port: int, known: str, job: str, node: str,
                 folder: pathlib.Path, curve: bool) -> None:
        self.cluster, self.job, self.node = cluster, job, node
        self.curve: dict[str, str] = {}
        if curve:  # (the kernel's keypair; the client authenticates it with its public key)
            public, secret = zmq.curve_keypair()
            self.curve = {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}
        self.ctl = str(folder / "ctl")
        ports = free_ports(15)
        self.remote = dict(zip(PORTS, ports[:5], strict=True))  # the kernel's, on the node
        self.local = {"master": dict(zip(PORTS, ports[5:10], strict=True)),
                      "plain": dict(zip(PORTS, ports[10:], strict=True))}
        self.base = ["ssh", "-T", "-F", "none", "-p", str(port), "-i", cluster["identity_file"],
                     "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                     "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
        self.target = f"{cluster['user']}@127.0.0.1"
        self.procs: list[subprocess.Popen] = []
        self.key = str(uuid.uuid4())
        self.kernel: subprocess.Popen | None = None
        self.kernel_file = ""
        for which, extra in (("master", ["-o", "ControlMaster=yes", "-S", self.ctl]),
                             ("plain", ["-N"])):
            argv = [*self.base, *extra]
            for name in PORTS:
                argv += ["-L", f"127.0.0.1:{self.local[which][name]}:{node}:{self.remote[name]}"]
            argv.append(self.target)
            if which == "master":
                argv.append("cat")  # (a session runs: TCP_NODELAY; ends with its input)
            # (stderr: "open failed: connect failed" while no kernel listens, e.g. wait_port)
            self.procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE,
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL,
                                               preexec_fn=_die_with_parent))
            wait_port(self.local[which]["shell_port"], self.procs[-1], f"ssh -L ({which})")

    def info(self, which: str) -> dict:
        return {"transport": "tcp", "ip": "127.0.0.1", "key": self.key,
                "signature_scheme": "hmac-sha256", **self.local[which], **self.curve}

    def session(self, command: str, **kwargs: Any) -> subprocess.Popen:
        """A command on the login node, multiplexed over the master connection."""
        return subprocess.Popen([*self.base, "-o", "ControlMaster=no", "-S", self.ctl,
                                 self.target, command], **kwargs)

    def run(self, command: str) -> float:
        t0 = time.perf_counter()
        p = self.session(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
        _, err = p.communicate(timeout=60)
        if p.returncode != 0:
            raise SystemExit(f"{command!r}: {p.returncode} {err.decode()[-500:]}")
        return time.perf_counter() - t0

    def srun(self) -> str:
        return (f"srun --jobid={shlex.quote(self.job)} --overlap -N1 -n1 "
                f"-w {shlex.quote(self.node)} --input=none")

    def start_kernel(self) -> float:
        """Starts the kernel (srun over ssh) until its banner: the seconds that took."""
        self.kernel_file = f".jupyter-hpc-manager/kernels/bench-{secrets.token_hex(6)}.json"
        remote = {"transport": "tcp", "ip": "0.0.0.0", "key": self.key,
                  "signature_scheme": "hmac-sha256", **self.remote, **self.curve}
        data = json.dumps(remote).encode()
        script = (f"umask 077; mkdir -p .jupyter-hpc-manager/kernels; f={self.kernel_file}; "
                  f'head -c {len(data)} > "$f"; {self.srun()} -u {KERNEL_VENV}/bin/python -u '
                  f'-m ipykernel_launcher -f "$f"; rc=$?; rm -f "$f"; exit $rc')
        t0 = time.perf_counter()
        self.kernel = self.session(f"sh -c {shlex.quote(script)}", stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.kernel.stdin is not None and self.kernel.stdout is not None
        self.kernel.stdin.write(data)
        self.kernel.stdin.close()
        seen: list[str] = []
        for raw in self.kernel.stdout:
            line = raw.decode(errors="replace")
            seen.append(line)
            if "--existing" in line:
                break
        else:
            raise SystemExit("the kernel started by hand exited: " + "".join(seen[-20:]))
        elapsed = time.perf_counter() - t0
        out = self.kernel.stdout  # drained for the kernel's whole life (a full pipe blocks it)
        threading.Thread(target=lambda: [None for _ in out], daemon=True).start()
        return elapsed

    def stop_kernel(self, client: JcKernel | None) -> None:
        if self.kernel is None:
            return
        if client is not None:
            client.shutdown()
        try:
            self.kernel.wait(15)
        except subprocess.TimeoutExpired:
            self.kernel.terminate()
            self.kernel.wait(10)
        self.kernel = None

    def close(self) -> None:
        self.stop_kernel(None)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        with contextlib.suppress(OSError):
            os.unlink(self.ctl)


# -- measurements ---------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def start_via_server(server: Server, spec: str, client: str) -> tuple[float, float]:
    """(POST api/kernels's own time, to the kernel_info reply) s; the kernel is deleted after."""
    t0 = time.perf_counter()
    kernel_id = start_kernel(server, spec)
    posted = time.perf_counter() - t0
    k: WsKernel | JcKernel
    k = WsKernel(server, kernel_id) if client == "ws" else JcKernel(
        connection_file(server, kernel_id))
    try:
        k.kernel_info()
        total = time.perf_counter() - t0
    finally:
        k.close()
        delete_kernel(server, kernel_id)
    return posted, total


def start_by_hand(ssh: SshSide) -> tuple[float, float]:
    """(to the banner, to the kernel_info reply through ssh -L) s; shut down after."""
    t0 = time.perf_counter()
    banner = ssh.start_kernel()
    k = JcKernel(ssh.info("master"))
    try:
        k.kernel_info()
        total = time.perf_counter() - t0
    finally:
        ssh.stop_kernel(k)
        k.close()
    return banner, total


def steady(name: str, open_client: Callable[[], WsKernel | JcKernel], rounds: int, big: bool,
           out: dict[str, list[float]]) -> None:
    """One block: rounds of `1+1`, then (big) one 10 MB output; on a client of its own."""
    k = open_client()
    try:
        k.kernel_info()
        for _ in range(5):  # (warm-up)
            k.execute("1+1")
        for _ in range(rounds):
            out.setdefault("rt", []).append(timed(lambda: k.execute("1+1")))
        if big:
            t0 = time.perf_counter()
            chars = k.execute(BIG_CODE)
            out.setdefault("big", []).append(time.perf_counter() - t0)
            if chars < BIG:
                raise SystemExit(f"10 MB output, {name}: {chars} characters arrived")
    finally:
        k.close()


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="round trip time added in front of sshd (0: none, loopback)")
    parser.add_argument("--starts", type=int, default=5, help="kernel starts per path")
    parser.add_argument("--rounds", type=int, default=300, help="`1+1` round trips per path")
    parser.add_argument("--runs", type=int, default=3, help="10 MB outputs per path")
    parser.add_argument("--c-curve", choices=("same", "on", "off"), default="same",
                        help="CurveZMQ for (c): as the job kernel's spec offers it (same)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # (the finally blocks run)
    started = time.monotonic()
    cluster = sandbox_cluster()
    tag = uuid.uuid4().hex[:6]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="jhm-bench-kernel-"))
    ide_dir = pathlib.Path(tempfile.mkdtemp(prefix="jhm-bench-kernel-ide-"))
    ide_dir.chmod(0o755)
    shutil.copy(ROOT / "tests" / "resources" / "echo_ide.py", ide_dir / "echo_ide.py")
    relay = server = ssh = None
    job = ""
    kernels: list[str] = []
    res: dict[str, dict[str, dict[str, list[float]]]] = {}  # row -> path -> key -> values

    def add(row: str, path: str, key: str, value: float) -> None:
        res.setdefault(row, {}).setdefault(path, {}).setdefault(key, []).append(value)

    diag: dict[str, list[float]] = {}
    curve = c_curve = False
    try:
        if args.rtt_ms > 0:
            relay = Relay(args.rtt_ms)
            port, known = relay.port, known_hosts_for(relay.port, tmp)
        else:
            port, known = cluster["port"], cluster["known_hosts"]
        config = dict(cluster, host="127.0.0.1", port=port, known_hosts=known,
                      job_name=f"kernel-bench-{tag}", kernel_discovery=KERNEL_DISCOVERY,
                      ide_command=f"python3 {ide_dir / 'echo_ide.py'}")
        # (jupyter_server's default iopub_data_rate_limit, 1 MB/s, replaces 10 MB of output by
        # "IOPub data rate exceeded" on the websocket: raised here, for (a) and (b) alike)
        server = Server(tmp / "server", {CLUSTER: config},
                        extra="c.HPCManager.use_system_known_hosts = False\n"
                              "c.ServerApp.iopub_data_rate_limit = 1e12\n" + WS_NODELAY)
        server.start()
        code, reply = server.call("POST", "launch", {"hpc": CLUSTER, "cpus": "2", "mem": "2G",
                                                     "time": "00:20:00"})
        if code != 200 or reply.get("status") != "running":
            raise SystemExit(f"launch: {code} {reply}\n{server.log.read_text()[-3000:]}")
        job = reply["jobId"]
        node = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True,
                              text=True, check=True).stdout.strip()
        deadline = time.monotonic() + 30
        while JOB_SPEC not in rest(server, "GET", "api/kernelspecs")["kernelspecs"]:
            if time.monotonic() > deadline:
                raise SystemExit(f"no kernelspec {JOB_SPEC}\n{server.log.read_text()[-3000:]}")
            time.sleep(0.3)
        metadata = rest(server, "GET", "api/kernelspecs")["kernelspecs"][JOB_SPEC]["spec"].get(
            "metadata", {})
        offered = metadata.get("supported_encryption") or []
        c_curve = {"same": "curve" in offered, "on": True, "off": False}[args.c_curve]
        ssh = SshSide(cluster, port, known, job, node, tmp, c_curve)
        print(f"setup {time.monotonic() - started:.0f} s: job {job} on {node}, sshd through "
              f"port {port}, RTT {args.rtt_ms:g} ms", flush=True)

        # Where a start goes: an SSH session, an srun step of `true`, both over the master.
        for _ in range(args.starts):
            diag.setdefault("session", []).append(ssh.run("true"))
            diag.setdefault("srun", []).append(ssh.run(f"{ssh.srun()} true"))
            diag.setdefault("scontrol", []).append(ssh.run(f"scontrol show job {job} >/dev/null"))
            diag.setdefault("squeue", []).append(ssh.run(f"squeue -h -s -j {job} >/dev/null"))

        # Kernel starts, the paths taking turns.
        for _ in range(args.starts):
            for spec, path in ((JOB_SPEC, A), (LOCAL_SPEC, B)):
                for client in ("ws", "jc"):
                    posted, total = start_via_server(server, spec, client)
                    add(f"start {client}", path, "t", total)
                    add(f"start {client}", path, "post", posted)
            banner, total = start_by_hand(ssh)
            add("start jc", C, "t", total)
            add("start jc", C, "post", banner)
        print(f"starts done at {time.monotonic() - started:.0f} s", flush=True)

        # Steady state: one kernel per path; blocks of `1+1` and one 10 MB output, taking turns.
        job_kernel = start_kernel(server, JOB_SPEC)
        kernels.append(job_kernel)
        local_kernel = start_kernel(server, LOCAL_SPEC)
        kernels.append(local_kernel)
        curve = "curve_publickey" in connection_file(server, job_kernel)
        ssh.start_kernel()
        opens: list[tuple[str, str, Callable[[], WsKernel | JcKernel]]] = [
            ("ws", A, lambda: WsKernel(server, job_kernel)),
            ("ws", B, lambda: WsKernel(server, local_kernel)),
            ("ws+nodelay", A, lambda: WsKernel(server, job_kernel, nodelay=True)),
            ("ws+nodelay", B, lambda: WsKernel(server, local_kernel, nodelay=True)),
            ("jc", A, lambda: JcKernel(connection_file(server, job_kernel))),
            ("jc", B, lambda: JcKernel(connection_file(server, local_kernel))),
            ("jc", C, lambda: JcKernel(ssh.info("master"))),
            ("jc", CN, lambda: JcKernel(ssh.info("plain"))),
        ]
        blocks = max(args.runs, 1)
        for i in range(blocks):
            for client, path, open_client in opens:
                out: dict[str, list[float]] = {}
                steady(f"{path} {client}", open_client, args.rounds // blocks, i < args.runs, out)
                for key, values in out.items():
                    for v in values:
                        add(f"{key} {client}", path, "t", v)
        print(f"round trips and outputs done at {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if ssh is not None:
            ssh.close()
        if server is not None:
            for kernel_id in kernels:
                with contextlib.suppress(Exception):
                    delete_kernel(server, kernel_id)
            with contextlib.suppress(Exception):
                server.call("POST", f"stop/{CLUSTER}", {"cancelJob": True})
            server.stop()
        if job:
            subprocess.run(["scancel", job], check=False)
        if relay is not None:
            relay.stop()
        home = pwd.getpwnam(SANDBOX_USER).pw_dir
        shutil.rmtree(os.path.join(home, ".jupyter-hpc-manager", f"kernel-bench-{tag}"),
                      ignore_errors=True)
        shutil.rmtree(ide_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, res, diag, curve, c_curve, time.monotonic() - started)


def report(args: argparse.Namespace, res: dict, diag: dict, curve: bool, c_curve: bool,
           elapsed: float) -> None:
    med = statistics.median
    paths = (A, B, C, CN)
    rows: list[tuple[str, str, str, Callable[[list[float]], float], str]] = [
        # (label, result row, client shown, statistic, unit)
        (f"kernel start, median of {args.starts}", "start ws", "ws", med, "s"),
        (f"kernel start, median of {args.starts}", "start jc", "jc", med, "s"),
        ("`1+1` round trip p50", "rt ws", "ws", lambda v: pct(v, 0.5), "ms"),
        ("`1+1` round trip p95", "rt ws", "ws", lambda v: pct(v, 0.95), "ms"),
        ("`1+1` round trip p50", "rt ws+nodelay", "ws+nodelay", lambda v: pct(v, 0.5), "ms"),
        ("`1+1` round trip p95", "rt ws+nodelay", "ws+nodelay", lambda v: pct(v, 0.95), "ms"),
        ("`1+1` round trip p50", "rt jc", "jc", lambda v: pct(v, 0.5), "ms"),
        ("`1+1` round trip p95", "rt jc", "jc", lambda v: pct(v, 0.95), "ms"),
        (f"10 MB output to idle, median of {args.runs}", "big ws", "ws", med, "s"),
        (f"10 MB output to idle, median of {args.runs}", "big ws+nodelay", "ws+nodelay", med,
         "s"),
        (f"10 MB output to idle, median of {args.runs}", "big jc", "jc", med, "s"),
    ]
    print()
    print(f"Kernel bench, RTT {args.rtt_ms:g} ms in front of sshd "
          f"({'loopback' if args.rtt_ms <= 0 else 'relay of bench/wan.py'}), "
          f"{elapsed:.0f} s in all; CurveZMQ: (a) {'on' if curve else 'off'}, (c) "
          f"{'on' if c_curve else 'off'}, (b) off")
    print("client: ws = Jupyter's kernel websocket (JupyterLab's path, as jupyter_server ships it:"
          " Nagle on), ws+nodelay = the same with TCP_NODELAY set by the bench's server config, "
          "jc = jupyter_client BlockingKernelClient on the connection file")
    print()
    print(f"| row | client | {' | '.join(paths)} | (a)/(b) | (a)/(c) | (a)/(c-N) |")
    print("|---|---|" + "---:|" * (len(paths) + 3))
    values: dict[tuple[str, str], dict[str, float]] = {}
    for label, key, client, stat, unit in rows:
        by = {p: stat(v["t"]) for p, v in res.get(key, {}).items()}
        values[(label, client)] = by
        scale = 1000 if unit == "ms" else 1

        def cell(p: str, by=by, scale=scale) -> str:
            return f"{by[p] * scale:.{1 if scale == 1000 else 3}f}" if p in by else "-"

        def ratio(p: str, by=by) -> str:
            return f"{by[A] / by[p]:.2f}" if A in by and p in by else "-"

        print(f"| {label}, {unit} | {client} | {' | '.join(cell(p) for p in paths)} | "
              f"{ratio(B)} | {ratio(C)} | {ratio(CN)} |")

    for key, path in (("start ws", A), ("start ws", B), ("start jc", A), ("start jc", B),
                      ("start jc", C)):
        if path in res.get(key, {}):
            print(f"starts, {key.split()[1]}, {path}: "
                  + ", ".join(f"{v:.3f}" for v in res[key][path]["t"]) + " s")
    print()
    print("| where a start goes, s (median) | |")
    print("|---|---:|")
    for label, key, path in (("(a) ws: POST api/kernels answered", "start ws", A),
                             ("(a) jc: POST api/kernels answered", "start jc", A),
                             ("(b) jc: POST api/kernels answered", "start jc", B),
                             ("(c): ssh + srun + ipykernel to its --existing banner",
                              "start jc", C)):
        if path in res.get(key, {}):
            print(f"| {label} | {med(res[key][path]['post']):.3f} |")
    for label, key in (("an SSH session running `true` (multiplexed over the master)",
                        "session"), ("the same running `srun --overlap ... true` (a step)",
                                     "srun"),
                       ("the same running `scontrol show job J`", "scontrol"),
                       ("the same running `squeue -s -j J`", "squeue")):
        if key in diag:
            print(f"| {label} | {med(diag[key]):.3f} |")

    print()
    goals = []
    for client in ("ws", "ws+nodelay", "jc"):
        rt = values.get(("`1+1` round trip p50", client), {})
        if args.rtt_ms <= 0 and A in rt and B in rt:
            extra = (rt[A] - rt[B]) * 1000
            goals.append(f"`1+1` p50 ({client}) within +3 ms of local: "
                         f"{'yes' if extra <= 3 else 'NO'} ({extra:+.1f} ms)")
    worse = [f"{label} ({client}): {by[A] / by[C]:.2f}" for (label, client), by in values.items()
             if A in by and C in by and by[A] / by[C] > 1.0]
    goals.append("(a)/(c) <= 1.0 on every row: " + ("yes" if not worse else
                                                    "NO: " + "; ".join(worse)))
    for goal in goals:
        print("goal: " + goal)


if __name__ == "__main__":
    main()
