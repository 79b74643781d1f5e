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
import datetime
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
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web
from traitlets import Unicode

from .errors import HPCError, JobError, NotFoundError, SshError
from .slurm import REMOTE_DIR, JobState
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
# Seconds a kernel whose step ended waits for the cluster's word on its job (ended: the kernel
# is dead with the reason; still running: the kernel died by itself and is restarted).
VERDICT_TIMEOUT = 30.0
REFUSED_HOLD = 0.5  # seconds a local connection the kernel's port refused is held
IOPUB_SETTLE = 0.5  # seconds an iopub connection runs before the others go (see PortBridge)
IOPUB_WAIT = 3.0  # seconds the others wait at most for one
TAKE_BACK_PAUSE = 2.0  # seconds between tries to take a kernel back while not connected
TAKE_BACK_MARGIN = 2.0  # seconds before the step's watcher gives up that we give up
# What srun says when the job it was to run in has ended.
JOB_GONE = re.compile(r"(has expired|Invalid job id|invalid job|Job has already finished|"
                      r"Requested node configuration is not available|already completing)", re.I)

# The manager of this server (set when the extension loads): kernel provisioners, which
# jupyter_client makes from a kernelspec, find their cluster through it.
_manager: SessionManager | None = None


# The provisioners of this server's kernels (to end them with their job), and the browsers'
# websockets of each kernel (closed then, so that JupyterLab reads the kernel's reason).
_provisioners: weakref.WeakSet[JobKernelProvisioner] = weakref.WeakSet()
_websockets: dict[str, weakref.WeakSet[NoDelayKernelConnection]] = {}


def end_kernels(cluster: Cluster) -> None:
    """The kernels of the job that cluster last saw end die with it, the reason said."""
    end = cluster.last_end
    if end is None:
        return
    for p in list(_provisioners):
        if p.hpc == cluster.name and p.job_id == end.job_id and p._gone is None:
            p.job_ended(end.describe(cluster.name))


async def shutdown_job_kernels(kernel_manager: Any, log: logging.Logger) -> None:
    """Shut down this server's kernels that run in jobs (the server is stopping), at once and
    all together; what fails is logged (its step's watcher cancels it later)."""
    if kernel_manager is None:
        return
    ids = [kid for kid in list(kernel_manager.list_kernel_ids())
           if isinstance(getattr(kernel_manager.get_kernel(kid), "provisioner", None),
                         JobKernelProvisioner)]
    results = await asyncio.gather(
        *(kernel_manager.shutdown_kernel(kid, now=True) for kid in ids), return_exceptions=True)
    for kid, result in zip(ids, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("jupyter-hpc-manager: kernel %s did not shut down: %s", kid, result)


def kernel_activity(hpc: str, job: str) -> float | None:
    """How many seconds ago a kernel of hpc's job was last in use, as the Jupyter server saw
    it: 0 while one is busy, else since its last iopub message (output, idle; an idle kernel
    says nothing); None: no kernel."""
    now = datetime.datetime.now(datetime.timezone.utc)
    best: float | None = None
    for p in list(_provisioners):
        if p.hpc != hpc or p.job_id != job or p._gone is not None:
            continue
        if getattr(p.parent, "execution_state", None) == "busy":
            return 0.0  # computing (a long cell says nothing until it is done)
        last = getattr(p.parent, "last_activity", None)
        if last is not None:
            ago = max(0.0, (now - last).total_seconds())
            best = ago if best is None else min(best, ago)
    return best


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
# The job's folder, as its script wrote it (no slurmctld query on the start's path; a job of an
# older version has no such file: scontrol then).
wd=$(cat "$HOME/{remote_dir}/job-"{job}".wd" 2>/dev/null)
[ -n "$wd" ] || wd=$({scontrol} show job {job} 2>/dev/null | sed -n 's/^ *WorkDir=//p')
# The step writes its own id before it becomes the kernel (SLURM_STEP_ID), so squeue is not
# asked for it either.
{srun} --jobid={job} --overlap -N1 -n1 -w {node} --input=none --job-name={name} \
  ${{wd:+--chdir="$wd"}} sh -c 'echo "$SLURM_JOB_ID.$SLURM_STEP_ID" > "$0"; exec "$@"' \
  "$dir/{name}.step" {argv} > "$log" 2>&1 &
pid=$!
i=0
until grep -q '"control_port": [1-9]' "$f" 2>/dev/null && tail -c 3 "$f" | grep -q '}}'; do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$f" "$dir/{name}.step"
    printf '{{"error": "the kernel exited before it started"}}\n'
    tail -n 20 "$log" | sed 's/^/log: /'
    rm -f "$log"
    exit 1
  fi
  i=$((i + 1))
  if [ "$i" -gt {tries} ]; then
    kill "$pid" 2>/dev/null; sleep 0.2; kill "$pid" 2>/dev/null
    rm -f "$f" "$dir/{name}.step"
    printf '{{"error": "the kernel did not bind its ports in time"}}\n'
    tail -n 20 "$log" | sed 's/^/log: /'
    rm -f "$log"
    exit 1
  fi
  sleep 0.02
done
step=$(cat "$dir/{name}.step" 2>/dev/null)
rm -f "$dir/{name}.step"
case "$step" in
  *.[0-9]*) ;;
  *) step=$({squeue} -h -s -j {job} -o '%i %j' 2>/dev/null |
       awk -v n={name} '$2 == n {{print $1; exit}}') ;;
esac
ports=$(tr -d ' \n' < "$f" | grep -o '"[a-z]*_port":[0-9]*' | tr '\n' ',')
rm -f "$f"
printf '{{"step": "%s", "ports": {{%s"pid": %s}}}}\n' "$step" "$ports" "$pid"
{watch}
wait "$pid"
status=$?
[ -n "$step" ] && {scancel} --quiet "$step" 2>/dev/null
tail -n 20 "$log" | sed 's/^/log: /'
rm -f "$log" "$dir/{name}".claim*
exit "$status"
"""

# The channel closed (stdin ends: the Jupyter server stopped, was killed, or lost the
# connection): the step ends too, unless a server takes it back within {grace} s (a claim, see
# CLAIM_SCRIPT, after a new login), or the shell that started this watcher has ended (its step
# is over). (An asynchronous list's stdin is /dev/null unless redirected: the channel's,
# explicitly. Its output is not the channel's: the channel ends when that shell does.)
WATCH = r"""
(
  cat <&3 > /dev/null
  n=0
  while [ "$n" -lt {grace} ]; do
    [ -e "$dir/{name}.claim{next}" ] && exit 0
    kill -0 $$ 2>/dev/null || exit 0
    sleep 1
    n=$((n + 1))
  done
  [ -n "$step" ] && {scancel} --quiet "$step"
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -f "$dir/{name}".claim*
) > /dev/null 2>&1 &
"""

# A server takes a running kernel back over a new connection (after a login, or a network
# drop): the step's old watcher sees the claim and leaves it be; this shell watches it now, and
# ends when the step does (asked of squeue: the step may run from another login node).
CLAIM_SCRIPT = r"""
umask 077
exec 3<&0
dir="$HOME/{remote_dir}/kernels"
step={step}
pid=
running() {{
  {squeue} -h -s -j {job} -o '%i' 2>/dev/null | grep -qx "$step"
}}
if ! running; then
  printf '{{"error": "the kernel is no longer running in the job"}}\n'
  exit 1
fi
touch "$dir/{name}.claim{gen}"
printf '{{"step": "%s"}}\n' "$step"
{watch}
while running; do sleep {every}; done
exit 0
"""
CLAIM_POLL = 10  # seconds between a claimed step's looks at squeue (whether it still runs)


def step_command(*, remote_dir: str, name: str, job: str, node: str, argv: list[str],
                 size: int, grace: int = 0, srun: str = "srun", squeue: str = "squeue",
                 scancel: str = "scancel", scontrol: str = "scontrol") -> str:
    """The login node's shell command that starts a kernel as a step of the job; argv's
    ``{connection_file}`` is the file the kernel reads (each item quoted)."""
    words = ['"$f"' if a == "{connection_file}" else shlex.quote(a) for a in argv]
    watch = WATCH.format(name=shlex.quote(name), grace=int(grace), next=1, scancel=scancel)
    script = STEP_SCRIPT.format(remote_dir=remote_dir, name=shlex.quote(name),
                                job=shlex.quote(job), node=shlex.quote(node),
                                argv=" ".join(words), size=int(size),
                                tries=int(START_TIMEOUT * 50), srun=srun, squeue=squeue,
                                scancel=scancel, scontrol=scontrol, watch=watch)
    return "sh -c " + shlex.quote(script)


def claim_command(*, remote_dir: str, name: str, job: str, step: str, generation: int,
                  grace: int, squeue: str = "squeue", scancel: str = "scancel") -> str:
    """The login node's shell command that takes a running kernel's step back (generation: how
    many times it was taken back, this one included)."""
    watch = WATCH.format(name=shlex.quote(name), grace=int(grace), next=int(generation) + 1,
                         scancel=scancel)
    script = CLAIM_SCRIPT.format(remote_dir=remote_dir, name=shlex.quote(name),
                                 job=shlex.quote(job), step=shlex.quote(step),
                                 gen=int(generation), squeue=squeue, every=CLAIM_POLL,
                                 watch=watch)
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
        # The channel ended with the connection, not with the step (which may run on, for
        # kernel_reconnect_seconds): when that was (time.monotonic()), else None.
        self.lost_at: float | None = None
        self.log_tail: list[str] = []
        self.ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, cluster: Cluster, command: str, stdin: bytes,
                    ports: dict[str, int] | None = None) -> KernelStep:
        """Run command (STEP_SCRIPT, or CLAIM_SCRIPT with the ports known) on an exec channel
        of cluster's connection until it says which step runs the kernel."""
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
            step.ports = ports if ports is not None else {
                k: int(v) for k, v in reply["ports"].items() if k in PORTS}
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
        if status == -1:
            # No exit status: did the connection go? (paramiko's thread closes the channels
            # a moment before it clears the flag read here.)
            transport = chan.get_transport()
            for _ in range(40):
                if transport is None or not transport.is_active():
                    self.lost_at = time.monotonic()
                    break
                await asyncio.sleep(0.05)
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
        """End the step (its shell cancels it when the channel closes; scancel says so now;
        a step whose connection was lost is cancelled if the cluster can be reached)."""
        if self.step and (self.running or self.lost_at is not None):
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
        # IOPub goes first when the server's sockets come back (a dropped connection, a
        # restart): a reply whose output is published before the server's SUB socket has
        # joined again would lose that output (zmq's "slow joiner"). Until an iopub connection
        # has run for IOPUB_SETTLE, the other channels wait (at most IOPUB_WAIT).
        self._iopub_open = 0
        self._iopub_since = 0.0
        self._iopub_up = asyncio.Event()
        # Every iopub connection ended (a drop, a restart): the sockets come back. Not at
        # the kernel's start (the server nudges a new kernel until iopub answers).
        self._rejoining = False

    async def _iopub_settled(self) -> None:
        if not self._rejoining:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._iopub_up.wait(), IOPUB_WAIT)
        wait = self._iopub_since + IOPUB_SETTLE - time.monotonic()
        if self._iopub_up.is_set():
            if wait > 0:
                await asyncio.sleep(wait)
            self._rejoining = False

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
        try:
            await self._relay(name, reader, writer)
        finally:
            writer.close()  # (also when cancelled: the bridge closes, the server stops)

    async def _relay(self, name: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tunnel = self._tunnels.get(name)
        if tunnel is None:
            return
        if name != "iopub_port":
            await self._iopub_settled()
        try:
            conn = await tunnel.connect()
        except (HPCError, OSError, RuntimeError):  # (RuntimeError: the server is stopping)
            # (zmq connects again at once, every 0.1 s: held a moment, not a channel-open
            # round trip per 0.1 s and port while the kernel is down or restarting)
            await asyncio.sleep(REFUSED_HOLD)
            return
        if name == "iopub_port":
            self._iopub_open += 1
            if self._iopub_open == 1:
                self._iopub_since = time.monotonic()
                self._iopub_up.set()

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
            if name == "iopub_port":
                self._iopub_open -= 1
                if self._iopub_open == 0:
                    self._iopub_up.clear()
                    self._rejoining = True
            conn.close()

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
    _gone: str | None = None  # why the kernel is dead (its job ended, or its step was lost)
    _restartable = False  # _gone, but the job may still run: a restart may start a new step
    _launched = False
    _verdict: asyncio.Task[None] | None = None  # asking whether the step's job has ended
    _taking_back: asyncio.Task[None] | None = None  # claiming the step after a lost connection
    _name = ""  # the step's job name (hpc-kernel-...), also its files' on the login node
    _generation = 0  # how many times the step was taken back

    # -- jupyter_client's provisioner interface --------------------------------------------------
    @property
    def has_process(self) -> bool:
        return self._step is not None or self._gone is not None

    async def poll(self) -> int | None:
        """From memory (the restarter calls it every 3 s): None while the step runs, and
        while the cluster is asked whether the step ended with its job (a kernel whose job
        ended is dead for good, with the reason, not restarted: see job_ended)."""
        if self._gone is not None:
            return None  # (dead, said so in the kernel's model: nothing to restart)
        if self._step is None:
            return self._exit if self._exit is not None else 0
        if self._step.running:
            return None
        if self._step.lost_at is not None:
            # The connection went, the step may run on: taken back once connected again.
            if self._taking_back is None:
                self._taking_back = asyncio.ensure_future(self._take_back(self._step))
            return None
        if self._verdict is None:
            self._verdict = asyncio.ensure_future(self._ask_verdict(self._step))
        if not self._verdict.done():
            return None
        return None if self._gone is not None else self._step.exit_status

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
        if self._taking_back is not None:
            self._taking_back.cancel()
            self._taking_back = None
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
        _provisioners.add(self)
        if self._gone is not None and not self._restartable:
            raise NotFoundError(self._gone)  # (a restart asked for after the job ended)
        self._gone, self._restartable = None, False
        if session is None or not session.running or session.job_id != self.job_id:
            if self._launched:  # a restart after the job ended: the kernel is dead
                self.job_ended(self._why_not_running(cluster))
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
                               grace=cluster.config.kernel_reconnect_seconds,
                               srun=cluster.config.srun, squeue=cluster.config.squeue,
                               scancel=cluster.config.scancel,
                               scontrol=cluster.config.scontrol)
        try:
            step = await KernelStep.start(cluster, command, stdin)
        except JobError as exc:
            # The job has ended (scancel, walltime) under a kernel the restarter brings back:
            # not an error (the restarter would try again for ever), a dead kernel.
            self.job_ended(f"{self._why_not_running(cluster)} ({exc.message})")
            return self.connection_info
        self._hold(cluster, step)
        assert self._bridge is not None
        self._bridge.retarget(node, step.ports)
        self._step, self._exit, self._launched = step, None, True
        self._verdict = self._taking_back = None
        self._name, self._generation = name, 0
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
    def job_ended(self, why: str) -> None:
        """The kernel's job has ended: the kernel is dead for good, and says why."""
        self._dead(f"{why}, and this kernel ended with it. To go on, launch a new job from "
                   "the HPC panel and choose its kernel.", restartable=False)

    def _dead(self, message: str, restartable: bool) -> None:
        """The kernel is dead, not to be restarted by the restarter. Its model (GET
        api/kernels/<id>) reads execution_state dead with message as its reason; its
        browsers' websockets are closed, so that JupyterLab reads the model and shows the
        reason in the notebook (a dialog). restartable: a restart the user asks for may start
        a new step (the job still runs)."""
        if self._gone is not None:
            return
        self._gone, self._restartable = message, restartable
        self._exit = 1
        if self._step is not None:
            self._step.close()
            self._forget(self._step.exit_status)
        self.log.warning("jupyter-hpc-manager: kernel %s on %s: %s", self.kernel_id, self.hpc,
                         message)
        km = self.parent
        if km is not None:
            km.stop_restarter()
            if hasattr(km, "reason"):  # (jupyter_server's kernel manager)
                km.reason = self._gone
                km.execution_state = "dead"
        # (not 1000: JupyterLab takes a normal close for good and would not look again; on
        # any other code it reconnects, is refused, reads the model and shows the reason)
        for ws in list(_websockets.get(self.kernel_id or "", ())):
            with contextlib.suppress(Exception):
                ws.websocket_handler.close(4410, "the kernel is dead")

    async def _ask_verdict(self, step: KernelStep) -> None:
        """Ask the cluster (its one state) whether the job of step, which has ended, has
        ended too: until an answer taken after the step ended says the job still runs, or
        VERDICT_TIMEOUT. A job that ended reaches job_ended (the session's change does)."""
        try:
            cluster = self._cluster()
        except HPCError:  # (the server is stopping)
            return
        since = cluster.services.clock()
        deadline = time.monotonic() + VERDICT_TIMEOUT
        while self._gone is None and time.monotonic() < deadline:
            try:
                hit = await asyncio.wait_for(cluster.observe(refresh=True),
                                             max(0.1, deadline - time.monotonic()))
            except (asyncio.TimeoutError, HPCError):
                return
            s = cluster.session
            if s is None or s.job_id != self.job_id or not s.running:
                self.job_ended(self._why_not_running(cluster))
                return
            obs = hit.value
            job = next((j for j in obs.jobs if j.job_id == self.job_id), None)
            if obs.taken_clock >= since and job is not None and job.state is JobState.RUNNING:
                return  # the job runs on: the kernel died by itself (restarted, as locally)
            await asyncio.sleep(min(1.0, cluster.settings.poll_interval))

    async def _take_back(self, old: KernelStep) -> None:
        """old's channel ended with the connection, and its step may run on (its watcher waits
        kernel_reconnect_seconds for a claim): claim it over the connection as soon as there
        is one again (a login at an MFA site: nothing here connects on its own there). The
        kernel's local ports stay; zmq reconnects through them. A step that is gone by then
        goes the way of a step that ended (the job asked); one not taken back in time is
        dead, with the reason."""
        cluster = self._cluster()
        grace = cluster.config.kernel_reconnect_seconds
        assert old.lost_at is not None
        deadline = old.lost_at + max(0.0, grace - TAKE_BACK_MARGIN)
        self.log.warning("jupyter-hpc-manager: kernel %s on %s lost its connection; its step "
                         "%s waits %d s to be taken back", self.kernel_id, self.hpc, old.step,
                         grace)
        while self._gone is None and self._step is old:
            if time.monotonic() >= deadline or not old.step:
                self._dead(f"The connection to {self.hpc} was lost for more than {grace} s, "
                           f"so this kernel's step of job {self.job_id} was cancelled there. "
                           "Restart the kernel to start a new one in the job.",
                           restartable=True)
                return
            command = claim_command(remote_dir=REMOTE_DIR, name=self._name, job=self.job_id,
                                    step=old.step, generation=self._generation + 1,
                                    grace=grace, squeue=cluster.config.squeue,
                                    scancel=cluster.config.scancel)
            try:
                step = await KernelStep.start(cluster, command, b"", ports=old.ports)
            except SshError:  # not connected (a login is needed) or refused: again soon
                await asyncio.sleep(TAKE_BACK_PAUSE)
                continue
            except HPCError as exc:  # the step has ended meanwhile
                self.log.info("jupyter-hpc-manager: kernel %s on %s not taken back: %s",
                              self.kernel_id, self.hpc, exc.message)
                old.lost_at = None  # (poll asks whether its job ended)
                return
            if self._step is not old or self._gone is not None:
                step.close()
                return
            self._generation += 1
            self._hold(cluster, step)
            self._step = step
            self.log.info("jupyter-hpc-manager: kernel %s on %s taken back (step %s of job %s)",
                          self.kernel_id, self.hpc, step.step, self.job_id)
            return

    @staticmethod
    def _hold(cluster: Cluster, step: KernelStep) -> None:
        cluster.kernels_running += 1
        step.ended.add_done_callback(lambda _: _count_down(cluster))

    def _why_not_running(self, cluster: Cluster) -> str:
        """Why this kernel's job runs no kernel of ours any more, as the cluster knows it."""
        end = cluster.last_end
        if end is not None and end.job_id == self.job_id:
            return end.describe(self.hpc)
        if cluster.detached == self.job_id:
            return (f"{self.hpc}'s session was stopped in this server (job {self.job_id} "
                    "keeps running without it)")
        return f"{self.hpc}'s job {self.job_id} is no longer running"

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

    async def prepare(self) -> None:
        # A kernel whose job has ended refuses new websockets: JupyterLab, whose websocket
        # the server closed, tries again, reads the kernel's model (dead, with the reason) and
        # shows the reason in the notebook, instead of reconnecting for ever.
        provisioner = getattr(self.kernel_manager, "provisioner", None)
        if isinstance(provisioner, JobKernelProvisioner) and provisioner._gone is not None:
            raise web.HTTPError(410, provisioner._gone)
        await super().prepare()

    def connect(self) -> Any:
        with contextlib.suppress(AttributeError, OSError):
            self.websocket_handler.set_nodelay(True)
        _websockets.setdefault(self.kernel_id, weakref.WeakSet()).add(self)
        return super().connect()

    def disconnect(self) -> None:  # type: ignore[override]  # (sync in the subclass too)
        conns = _websockets.get(self.kernel_id)
        if conns is not None:
            conns.discard(self)
            if not conns:
                del _websockets[self.kernel_id]
        super().disconnect()


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
        end_kernels(cluster)
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
