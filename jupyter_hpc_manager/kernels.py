"""Notebook kernels inside the running job, over the cluster's one SSH connection.

- ``KernelSpecs`` writes a kernelspec per kernel the job offers ("Python 3 on gemini (job 1234,
  node vm)") into a folder of this server's own that its KernelSpecManager reads, and removes
  them when the job ends. What the job offers is asked inside the job (``kernel_discovery``,
  ``jupyter kernelspec list --json`` by default) or set per cluster (``kernels``).
- ``JobKernelProvisioner`` (entry point group ``jupyter_client.kernel_provisioners``, name
  ``hpc-job``) starts the kernel as a step of the job (``srun --jobid --overlap``). The
  connection file, with its HMAC key, travels on the exec channel's stdin and lives on the
  cluster only until the kernel has bound its ports (never in an argv or a log). The kernel's
  five ports are bridged to five local ports through ``direct-tcpip`` channels of the cluster's
  connection (the data path of the IDE: nothing blocks the event loop); the local ports stay
  across restarts, only their targets move.
- The step ends with its exec channel: when the Jupyter server stops, is killed, or loses the
  connection, the login node's shell sees its stdin close and cancels the step.

Each kernel holds one exec channel of the cluster's budget (``max_sessions``) while it runs; a
cluster runs at most ``max_kernels`` kernels at once, so that commands always have channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from traitlets import Unicode

from .errors import HPCError, JobError, NotFoundError
from .slurm import REMOTE_DIR
from .tunnel import Tunnel
from .upstream import ChannelConnection

if TYPE_CHECKING:
    from .cluster import Cluster
    from .sessions import SessionManager

PROVISIONER = "hpc-job"
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
SPEC_PREFIX = "hpc-"
START_TIMEOUT = 60.0  # seconds for a kernel step to bind its ports
RETRY = 300.0  # seconds before a job whose kernels could not be asked is asked again
# What srun says when the job it was to run in has ended.
JOB_GONE = re.compile(r"(has expired|Invalid job id|invalid job|Job has already finished|"
                      r"Requested node configuration is not available|already completing)", re.I)

# The manager of this server (set when the extension loads): kernel provisioners, which
# jupyter_client makes from a kernelspec, find their cluster through it.
_manager: SessionManager | None = None


def set_manager(manager: SessionManager | None) -> None:
    global _manager
    _manager = manager


# Run by the login node's shell. Every value is quoted by step_command; the connection file comes
# on stdin (its length is given), never on a command line. The step's output goes to a log file
# next to it, so nothing has to drain the channel; the channel stays open for the kernel's life.
STEP_SCRIPT = r"""
umask 077
exec 3<&0
dir="$HOME/{remote_dir}/kernels"
mkdir -p "$dir" || exit 70
f="$dir/{name}.json"
log="$dir/{name}.log"
head -c {size} > "$f"
wd=$(scontrol show job {job} 2>/dev/null | sed -n 's/^ *WorkDir=//p')
{srun} --jobid={job} --overlap -N1 -n1 -w {node} --input=none --job-name={name} \
  ${{wd:+--chdir="$wd"}} {argv} > "$log" 2>&1 &
pid=$!
i=0
until grep -q '"control_port": [1-9]' "$f" 2>/dev/null && tail -c 3 "$f" | grep -q '}}'; do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$f"
    printf '{{"error": "the kernel exited before it started"}}\n'
    tail -n 20 "$log" | sed 's/^/log: /'
    rm -f "$log"
    exit 1
  fi
  i=$((i + 1))
  if [ "$i" -gt {tries} ]; then
    kill "$pid" 2>/dev/null; sleep 0.2; kill "$pid" 2>/dev/null
    rm -f "$f"
    printf '{{"error": "the kernel did not bind its ports in time"}}\n'
    tail -n 20 "$log" | sed 's/^/log: /'
    rm -f "$log"
    exit 1
  fi
  sleep 0.02
done
step=$({squeue} -h -s -j {job} -o '%i %j' 2>/dev/null |
  awk -v n={name} '$2 == n {{print $1; exit}}')
ports=$(tr -d ' \n' < "$f" | grep -o '"[a-z]*_port":[0-9]*' | tr '\n' ',')
rm -f "$f"
printf '{{"step": "%s", "ports": {{%s"pid": %s}}}}\n' "$step" "$ports" "$pid"
# The Jupyter server went away (the channel closed: stdin ends): the step ends too. (An
# asynchronous list's stdin is /dev/null unless redirected: the channel's, explicitly.)
( cat <&3 > /dev/null; [ -n "$step" ] && {scancel} --quiet "$step"; kill "$pid" 2>/dev/null ) &
wait "$pid"
status=$?
[ -n "$step" ] && {scancel} --quiet "$step" 2>/dev/null
tail -n 20 "$log" | sed 's/^/log: /'
rm -f "$log"
exit "$status"
"""


def step_command(*, remote_dir: str, name: str, job: str, node: str, argv: list[str],
                 size: int, srun: str = "srun", squeue: str = "squeue",
                 scancel: str = "scancel") -> str:
    """The login node's shell command that starts a kernel as a step of the job; argv's
    ``{connection_file}`` is the file the kernel reads (each item quoted)."""
    words = ['"$f"' if a == "{connection_file}" else shlex.quote(a) for a in argv]
    script = STEP_SCRIPT.format(remote_dir=remote_dir, name=shlex.quote(name),
                                job=shlex.quote(job), node=shlex.quote(node),
                                argv=" ".join(words), size=int(size),
                                tries=int(START_TIMEOUT * 50), srun=srun, squeue=squeue,
                                scancel=scancel)
    return "sh -c " + shlex.quote(script)


class KernelStep:
    """One kernel process in the job: its exec channel (open while it runs) and what the
    login node reported (the step id, the ports the kernel bound)."""

    def __init__(self, cluster: Cluster, conn: ChannelConnection, release: Callable[[], None]):
        self.cluster = cluster
        self.conn = conn
        self._release = release
        self.step: str = ""
        self.ports: dict[str, int] = {}
        self.exit_status: int | None = None
        self.log_tail: list[str] = []
        self.ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, cluster: Cluster, command: str, stdin: bytes) -> KernelStep:
        node = cluster.node
        await node.sessions.acquire()
        try:
            chan = await node.call(_exec, node.ssh, command)
        except BaseException:
            node.sessions.release()
            raise
        step = cls(cluster, ChannelConnection(chan), node.sessions.release)
        try:
            await step.conn.send(stdin)
            line = await asyncio.wait_for(step._line(), START_TIMEOUT + 10)
            reply: dict[str, Any] = (json.loads(line) if line.startswith("{")
                                     else {"error": line or "no answer"})
            if "error" in reply:
                rest = await step._rest()
                message = (f"The kernel on {cluster.name} did not start: {reply['error']}"
                           + (f"\n{rest}" if rest else ""))
                if JOB_GONE.search(rest):
                    raise JobError(f"Its job on {cluster.name} has ended: {last_line(rest)}")
                raise HPCError(message)
            step.step = str(reply.get("step") or "")
            step.ports = {k: int(v) for k, v in reply["ports"].items() if k in PORTS}
        except BaseException:
            step.close()
            raise
        step._watch = asyncio.ensure_future(step._follow())
        return step

    async def _line(self) -> str:
        buf = b""
        while b"\n" not in buf:
            data = await self.conn.recv()
            if not data:
                break
            buf += data
        line, _, rest = buf.partition(b"\n")
        if rest:
            self.conn.unread(rest)
        return line.decode(errors="replace").strip()

    async def _rest(self) -> str:
        """What the login node's shell printed after its first line (the kernel's log tail),
        waiting at most 5 s for the end."""
        out = bytearray()

        async def read() -> None:
            while data := await self.conn.recv():
                out.extend(data)

        with contextlib.suppress(asyncio.TimeoutError, OSError):
            await asyncio.wait_for(read(), 5)  # (Python 3.10 has no asyncio.timeout)
        return "\n".join(ln.removeprefix("log: ") for ln in out.decode(errors="replace")
                         .splitlines()[-20:])

    async def _follow(self) -> None:
        """Until the step ends: its last output lines (the kernel's log tail), its status."""
        out = b""
        try:
            while data := await self.conn.recv():
                out = (out + data)[-8192:]
        except OSError:
            pass
        self.log_tail = [ln.removeprefix("log: ") for ln in
                         out.decode(errors="replace").splitlines()[-20:]]
        chan = self.conn.chan
        # (the exit status may come just after the end of the output)
        for _ in range(20):
            if chan.exit_status_ready() or chan.closed:
                break
            await asyncio.sleep(0.05)
        status = chan.exit_status if chan.exit_status_ready() else -1
        self.exit_status = status
        self.close()
        if not self.ended.done():
            self.ended.set_result(status)

    @property
    def running(self) -> bool:
        return not self.ended.done()

    async def signal(self, signum: int) -> None:
        """Signal the kernel's step only (never the job: code-server runs in it too)."""
        if not self.step:
            return
        name = signal.Signals(signum).name.removeprefix("SIG")
        await self.cluster.node.run("kernel", shlex.join(
            [self.cluster.config.scancel, "--quiet", f"--signal={name}", self.step]))

    async def stop(self) -> None:
        """End the step (its shell cancels it when the channel closes; scancel says so now)."""
        if self.step and self.running:
            with contextlib.suppress(HPCError):
                await self.cluster.node.run("kernel", shlex.join(
                    [self.cluster.config.scancel, "--quiet", self.step]))
        self.close()

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()
            self._release()


def _exec(transport: Any, ssh: Any, command: str) -> Any:
    """(in the cluster's threads) an exec channel running command."""
    chan = ssh.open_session(transport)
    try:
        chan.exec_command(command)
    except BaseException:
        chan.close()
        raise
    return chan


class PortBridge:
    """Five local ports (127.0.0.1) for one kernel, each forwarded to the kernel's port on its
    node through the cluster's SSH connection. The local ports stay across restarts: the
    kernel manager's sockets reconnect to them, and they lead to the new kernel."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.local: dict[str, int] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._tunnels: dict[str, Tunnel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> dict[str, int]:
        for name in PORTS:
            server = await asyncio.start_server(
                functools.partial(self._accept, name), "127.0.0.1", 0)
            self._servers.append(server)
            self.local[name] = server.sockets[0].getsockname()[1]
        return dict(self.local)

    def retarget(self, host: str, ports: dict[str, int]) -> None:
        """From now on, lead to the kernel at host:ports (the old kernel's connections close)."""
        for tunnel in self._tunnels.values():
            tunnel.close()
        self._tunnels = {name: Tunnel(self.cluster.name, host, port,
                                      self.cluster.node.open_channel)
                         for name, port in ports.items()}

    def _accept(self, name: str, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._pump(name, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, name: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tunnel = self._tunnels.get(name)
        if tunnel is None:
            writer.close()
            return
        try:
            conn = await tunnel.connect()
        except (HPCError, OSError):
            writer.close()
            return

        async def up() -> None:
            while data := await reader.read(65536):
                await conn.send(data)
            conn.shutdown_write()

        async def down() -> None:
            while data := await conn.recv():
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(up(), down())
        except (HPCError, OSError, ConnectionError):
            pass
        finally:
            conn.close()
            writer.close()

    def close(self) -> None:
        for server in self._servers:
            server.close()
        for tunnel in self._tunnels.values():
            tunnel.close()
        for task in list(self._tasks):
            task.cancel()
        self._servers.clear()
        self._tunnels.clear()


class JobKernelProvisioner(KernelProvisionerBase):
    """A kernel that runs as a step of this server's running job on a cluster (see the module's
    docstring). Its kernelspec (written by KernelSpecs) names the cluster, the job and the
    kernel's argv on the node."""

    hpc = Unicode(config=True, help="The cluster whose running job hosts the kernel.")
    job_id = Unicode(config=True, help="The job the kernelspec was written for.")

    _step: KernelStep | None = None
    _bridge: PortBridge | None = None
    _exit: int | None = None
    _gone: str | None = None  # why the job cannot run this kernel again (it has ended)
    _launched = False

    # -- jupyter_client's provisioner interface --------------------------------------------------
    @property
    def has_process(self) -> bool:
        return self._step is not None or self._gone is not None

    async def poll(self) -> int | None:
        """From memory (the restarter calls it every 3 s): None while the step runs."""
        if self._gone is not None:
            return 1
        if self._step is None:
            return self._exit if self._exit is not None else 0
        return None if self._step.running else self._step.exit_status

    async def wait(self) -> int | None:
        if self._step is None:
            return self._exit
        status = await self._step.ended
        self._forget(status)
        return status

    async def send_signal(self, signum: int) -> None:
        if self._step is not None and self._step.running:
            if signum in (signal.SIGKILL, signal.SIGTERM):
                await self._step.stop()
            else:
                await self._step.signal(signum)

    async def kill(self, restart: bool = False) -> None:
        if self._step is not None:
            await self._step.stop()

    async def terminate(self, restart: bool = False) -> None:
        if self._step is not None:
            await self._step.stop()

    async def cleanup(self, restart: bool = False) -> None:
        if self._step is not None:
            self._step.close()
            self._forget(self._step.exit_status)
        if not restart and self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Local ports for the kernel manager (the bridge's), and its connection file."""
        cluster = self._cluster()
        km = self.parent
        assert km is not None  # (the kernel manager that made this provisioner)
        if self._bridge is None:
            self._bridge = PortBridge(cluster)
            await self._bridge.open()
        km.transport = "tcp"
        km.ip = "127.0.0.1"
        for name, port in self._bridge.local.items():
            setattr(km, name, port)
        # CurveZMQ between this server and the kernel on the shared node (the keys travel as
        # the HMAC key does: in the connection file on the channel's stdin).
        policy = cluster.config.kernel_encryption
        if policy != "disabled" and km.curve_publickey is None:
            if supports_curve(self.kernel_spec.metadata):
                km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()
            elif policy == "required":
                raise HPCError(f"The kernels of {self.hpc} do not support CurveZMQ "
                               "(kernel_encryption is required): ipykernel 7.3 or later needed")
        kwargs.pop("extra_arguments", None)
        km.write_connection_file()
        self.connection_info = km.get_connection_info()
        return await super().pre_launch(cmd=list(self.kernel_spec.argv), **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        cluster = self._cluster()
        session = cluster.session
        if self._gone is not None:
            return self.connection_info  # (see below: the job has ended; the kernel stays dead)
        if session is None or not session.running or session.job_id != self.job_id:
            if self._launched:  # a restart after the job ended: the kernel is dead
                self._gone, self._exit = f"job {self.job_id} on {self.hpc} has ended", 1
                return self.connection_info
            raise NotFoundError(f"Job {self.job_id} on {self.hpc} is no longer running: this "
                                "kernel's job has ended.")
        limit = cluster.config.max_kernels
        if cluster.kernels_running >= limit:
            raise HPCError(f"{self.hpc} runs {limit} kernels already (max_kernels); shut one "
                           "down first.")
        key = self.connection_info.get("key", b"")
        # The node's ports are reached from the login node (as the IDE's are): the kernel binds
        # every interface of the node; HMAC keeps others from executing (see the README).
        remote = {"transport": "tcp", "ip": "0.0.0.0",  # noqa: S104
                  "key": key.decode() if isinstance(key, bytes) else key,
                  "signature_scheme": self.connection_info.get("signature_scheme",
                                                               "hmac-sha256"),
                  "kernel_name": self.kernel_id or "", **{p: 0 for p in PORTS}}
        for field in ("curve_publickey", "curve_secretkey"):
            if field in self.connection_info:
                value = self.connection_info[field]
                remote[field] = value.decode() if isinstance(value, bytes) else value
        stdin = json.dumps(remote).encode()
        name = f"hpc-kernel-{secrets.token_hex(6)}"
        node = session.connection.host if session.connection else (session.node or "")
        command = step_command(remote_dir=REMOTE_DIR, name=name, job=session.job_id,
                               node=session.node or node, argv=cmd, size=len(stdin),
                               srun=cluster.config.srun, squeue=cluster.config.squeue,
                               scancel=cluster.config.scancel)
        try:
            step = await KernelStep.start(cluster, command, stdin)
        except JobError as exc:
            # The job has ended (scancel, walltime) under a kernel the restarter brings back:
            # a process that exited, not an error, so that the kernel is shown dead (an error
            # here would leave it listed as idle for ever).
            self._gone = exc.message
            self._exit = 1
            self.log.warning("jupyter-hpc-manager: kernel %s on %s: %s", self.kernel_id,
                             self.hpc, exc.message)
            return self.connection_info
        cluster.kernels_running += 1
        step.ended.add_done_callback(lambda _: _count_down(cluster))
        assert self._bridge is not None
        self._bridge.retarget(node, step.ports)
        self._step, self._exit, self._launched = step, None, True
        self.log.info("jupyter-hpc-manager: kernel %s on %s runs as step %s of job %s",
                      self.kernel_id, self.hpc, step.step or "(unknown)", session.job_id)
        return self.connection_info

    async def shutdown_requested(self, restart: bool = False) -> None:
        # (restart does not always reach terminate/kill: jupyter_client#1061)
        self._restarting = restart

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        info.update(hpc=self.hpc, job_id=self.job_id)
        return info

    # -- ours ---------------------------------------------------------------------------------
    def _cluster(self) -> Cluster:
        if _manager is None:
            raise HPCError("jupyter-hpc-manager is not loaded in this server")
        cluster = _manager.clusters.get(self.hpc)
        if cluster is None:
            raise NotFoundError(f"No cluster {self.hpc!r} is configured")
        return cluster

    def _forget(self, status: int | None) -> None:
        if self._step is not None:
            tail = self._step.log_tail
            if status not in (0, None) and tail:
                self.log.warning("jupyter-hpc-manager: kernel %s on %s ended (status %s): %s",
                                 self.kernel_id, self.hpc, status, " | ".join(tail[-5:]))
            self._step = None
        self._exit = status


class NoDelayKernelConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's kernel websocket, with TCP_NODELAY on the browser's socket. tornado
    leaves Nagle on for websockets, which holds every small reply back: 48 ms per `1+1`
    measured (local kernels too), 4.8 ms with it (bench/kernel.py)."""

    def connect(self) -> Any:
        with contextlib.suppress(AttributeError, OSError):
            self.websocket_handler.set_nodelay(True)
        return super().connect()


def use_nodelay_websockets(settings: dict[str, Any]) -> bool:
    """Make kernel websockets NoDelayKernelConnection, unless the server was configured with
    a class of its own (a gateway, an admin's choice). True if it was."""
    if settings.get("kernel_websocket_connection_class") is ZMQChannelsWebsocketConnection:
        settings["kernel_websocket_connection_class"] = NoDelayKernelConnection
        return True
    return False


def supports_curve(metadata: Any) -> bool:
    """Whether a kernelspec's metadata declares CurveZMQ (ipykernel 7.3+)."""
    found = (metadata or {}).get("supported_encryption") if isinstance(metadata, dict) else None
    if isinstance(found, str):
        found = [found]
    return isinstance(found, (list, tuple)) and "curve" in {str(f).lower() for f in found}


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _count_down(cluster: Cluster) -> None:
    cluster.kernels_running = max(0, cluster.kernels_running - 1)


class KernelSpecs:
    """The kernelspecs of the running jobs, in a folder of this server's own (added to its
    KernelSpecManager's kernel_dirs): written once a job runs and its kernels are known,
    removed when it ends (and at start: what an earlier server left)."""

    def __init__(self, log: logging.Logger, folder: str | None = None) -> None:
        self.log = log
        self.folder = folder or os.path.join(
            tempfile.gettempdir(), f"jupyter-hpc-manager-kernels-{os.getuid()}-{os.getpid()}")
        self.kernels_dir = os.path.join(self.folder, "kernels")
        shutil.rmtree(self.folder, ignore_errors=True)
        os.makedirs(self.kernels_dir, mode=0o700, exist_ok=True)
        # hpc -> (job, [(spec name, display name)])
        self._written: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        self._asking: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, tuple[str, float]] = {}  # hpc -> (job, when its asking failed)

    def of(self, hpc: str, job: str | None) -> tuple[tuple[str, str], ...]:
        """The kernelspecs written for hpc's job (name, display name)."""
        written = self._written.get(hpc)
        return tuple(written[1]) if written is not None and written[0] == job else ()

    def sync(self, cluster: Cluster) -> None:
        """Bring cluster's specs in line with its session (called when the session changes)."""
        s = cluster.session
        job = s.job_id if s is not None and s.running else None
        written = self._written.get(cluster.name)
        if written is not None and written[0] != job:
            self._remove(cluster.name)
        if job is None or cluster.name in self._written:
            return
        failed = self._failed.get(cluster.name)
        if failed is not None and failed[0] == job and time.monotonic() - failed[1] < RETRY:
            return
        task = self._asking.get(cluster.name)
        if task is None or task.done():
            self._asking[cluster.name] = asyncio.ensure_future(self._discover(cluster, job))

    async def settled(self, hpc: str, timeout: float) -> None:
        """Wait (at most timeout) for hpc's kernels to be asked: a launch answers with them."""
        task = self._asking.get(hpc)
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    async def _discover(self, cluster: Cluster, job: str) -> None:
        try:
            offered = await cluster.kernel_offer(job)
        except HPCError as exc:
            # Asked again only after a while: every status call syncs, and a site without
            # `jupyter` in the job would otherwise get an srun per panel poll.
            self._failed[cluster.name] = (job, time.monotonic())
            self.log.warning("jupyter-hpc-manager: the kernels of job %s on %s are not known: %s",
                             job, cluster.name, exc.message)
            return
        s = cluster.session
        if s is None or s.job_id != job or not s.running:
            return
        names: list[tuple[str, str]] = []
        for kernel, spec in offered.items():
            name = f"{SPEC_PREFIX}{cluster.name}-{kernel}".lower()
            path = os.path.join(self.kernels_dir, name)
            os.makedirs(path, exist_ok=True)
            display = spec.get("display_name") or kernel
            body = {
                "argv": spec["argv"],
                "display_name": f"{display} on {cluster.name} (job {job}, node {s.node})",
                "language": spec.get("language", "python"),
                "interrupt_mode": "message",
                "metadata": {
                    **({"supported_encryption": spec["metadata"]["supported_encryption"]}
                       if supports_curve(spec.get("metadata")) else {}),
                    "kernel_provisioner": {"provisioner_name": PROVISIONER,
                                           "config": {"hpc": cluster.name, "job_id": job}},
                    "jupyter_hpc_manager": {"hpc": cluster.name, "job": job, "node": s.node,
                                            "kernel": kernel},
                },
            }
            with open(os.path.join(path, "kernel.json"), "w") as f:
                json.dump(body, f, indent=1)
            names.append((name, body["display_name"]))
        self._written[cluster.name] = (job, names)
        self.log.info("jupyter-hpc-manager: kernels of job %s on %s: %s", job, cluster.name,
                      ", ".join(n for n, _ in names) or "(none)")

    def _remove(self, hpc: str) -> None:
        _, names = self._written.pop(hpc, ("", []))
        for name, _ in names:
            shutil.rmtree(os.path.join(self.kernels_dir, name), ignore_errors=True)
        task = self._asking.pop(hpc, None)
        if task is not None:
            task.cancel()

    def close(self) -> None:
        for task in self._asking.values():
            task.cancel()
        shutil.rmtree(self.folder, ignore_errors=True)
