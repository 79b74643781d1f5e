#!/usr/bin/env python
"""The IDE data path over a slow network: our proxy against OpenSSH `ssh -L`, same delay, one run.

Issue 18. A delay sits between the Jupyter server and the login node (the sandbox's sshd on
127.0.0.1:2222). The kernel here has no `tc netem` ("Specified qdisc kind is unknown"), so this
script starts a relay of its own in front of sshd (a subprocess: an asyncio TCP relay on a free
loopback port) that holds every chunk RTT/2 in each direction. It is pipelined: each chunk is
forwarded at its arrival time + RTT/2, in order, without waiting for the ones before it, so the
delay does not cap bandwidth; its sockets have TCP_NODELAY. (Only the TCP handshake itself is not
delayed; every path makes its SSH connection before anything is measured.) The relay ends TCP
on each side, so TCP's own waits (slow start, Nagle's wait for an ACK) happen over loopback,
not across the delay: what is emulated is the round trips of SSH and of HTTP. Our proxy's
cluster and `ssh -L` both connect to the relay's port, so both pay the same delay; the login
node to the compute node is the LAN (no delay).

Two `ssh -L` baselines: `ssh -N -L` (forwarding only: the issue's), and `ssh -L` with a command
running ("+cmd", as when the same ssh holds a shell). OpenSSH sets TCP_NODELAY on its connection
when a session starts (ssh_packet_set_interactive), so `-N` keeps Nagle's algorithm: a small
message waits for the ACK of the one before, here the peer's 40 ms delayed ACK (a websocket
round trip takes 44 ms at RTT 0, with or without the relay; a few ms with +cmd).

Rows, as ratios ours / ssh -L (times: lower is better; goal 1.0 or better on every row):
  - VS Code cold load in Chromium: a real code-server job; a fresh browser context (cold cache)
    opens our proxy's URL (with Jupyter's login cookie, as from JupyterLab) or ssh -L's (login
    page and password included), until the Explorer lists a file of the home folder; one
    unmeasured load on each path first, then alternating runs, median (--vscode-runs; off with
    --no-vscode)
  - a 50 MiB download and a 50 MiB upload (PUT, checked by the IDE's SHA-256), on a kept-alive
    connection as a browser has, median of --runs
  - 8 concurrent small requests, p50 (and requests per second)
  - a websocket round trip, p50 (a message answered by two frames, bench/proxy.py's)
The echo IDE (tests/resources/echo_ide.py) serves every row but the first.

Diagnosis (where round trips go): times in RTTs; time to first byte; each direction's SSH window
against window/RTT; a cold burst (8 requests at once on new connections, our pool empty); and
the SSH channels each path opened. sshd's LogLevel VERBOSE does not log direct-tcpip channels,
so they are counted as the TCP connections sshd makes to the IDE's port (/proc/net/tcp, sampled;
a closed one stays there in TIME_WAIT): one per channel.

    flock /tmp/sandbox.lock .venv/bin/python bench/wan.py [--rtt-ms 30] [--no-vscode]

About 3 minutes at 30 ms (1 with --no-vscode); --rtt-ms 0 and --no-relay show what the relay
itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import functools
import hashlib
import json
import os
import pathlib
import pwd
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from proxy import (  # noqa: E402
    MIB,
    Target,
    jupyter_cookie,
    login,
    pct,
    small_concurrent,
    websocket_rounds,
)

from jupyter_process import (  # noqa: E402
    SANDBOX,
    SANDBOX_USER,
    Server,
    cancel_all_jobs,
    home_file,
    sandbox_cluster,
)

SSHD = ("127.0.0.1", 2222)
OURS, SSH_N, SSH_SESSION = "ours", "ssh -N -L", "ssh -L +cmd"
PATHS = (OURS, SSH_N, SSH_SESSION)
# Our forwarding channels' window (jupyter_hpc_manager/ssh.py) and OpenSSH's for direct-tcpip
# channels, both ways (channels.c: CHAN_TCP_WINDOW_DEFAULT, 64 packets of 32 KiB).
OPENSSH_WINDOW = 2 * MIB


# -- the relay (runs as its own process: `wan.py --serve-relay`) --------------------------------
_EOF, _CLOSE = object(), object()


class DelayLine:
    """One direction of a relayed connection: what `src` reads reaches `dst` `delay` s later, in
    order. Pipelined (each chunk has its own due time); memory bounded by pausing `src`."""

    HIGH = 64 * MIB

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, src: asyncio.Transport,
                 dst: asyncio.Transport, dst_end: _End) -> None:
        self.loop, self.delay, self.src, self.dst, self.dst_end = loop, delay, src, dst, dst_end
        self.queue: collections.deque[tuple[float, object]] = collections.deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False
        self.dst_full = False

    def put(self, item: object) -> None:
        if self.delay <= 0 and not self.queue:
            self._deliver(item)
        else:
            self.queue.append((self.loop.time() + self.delay, item))
            if isinstance(item, bytes):
                self.queued += len(item)
            if self.timer is None:
                self.timer = self.loop.call_at(self.queue[0][0], self._flush)
        self.flow()

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time() + 0.0005
        while self.queue and self.queue[0][0] <= now:
            item = self.queue.popleft()[1]
            if isinstance(item, bytes):
                self.queued -= len(item)
            self._deliver(item)
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)
        self.flow()

    def _deliver(self, item: object) -> None:
        if self.dst.is_closing():
            return
        if item is _CLOSE:
            self.dst.close()
        elif item is _EOF:
            if self.dst.can_write_eof():
                self.dst.write_eof()
            self.dst_end.sent_eof = True
            if self.dst_end.got_eof:
                self.dst.close()
        else:
            self.dst.write(item)  # type: ignore[arg-type]

    def flow(self) -> None:
        stop = self.queued > self.HIGH or self.dst_full
        if stop != self.paused and not self.src.is_closing():
            (self.src.pause_reading if stop else self.src.resume_reading)()
            self.paused = stop


class _End(asyncio.Protocol):
    """One socket of a relayed pair: `out` carries what it reads, `into` writes to it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.out: DelayLine | None = None
        self.into: DelayLine | None = None
        self.got_eof = self.sent_eof = self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.out is not None:
            self.out.put(data)

    def eof_received(self) -> bool:
        self.got_eof = True
        if self.out is not None:
            self.out.put(_EOF)
        return not self.sent_eof  # (False: both ways ended, the transport closes)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.out is not None:
            self.out.put(_CLOSE)

    def pause_writing(self) -> None:
        if self.into is not None:
            self.into.dst_full = True
            self.into.flow()

    def resume_writing(self) -> None:
        if self.into is not None:
            self.into.dst_full = False
            self.into.flow()


async def _relay(rtt_ms: float, max_seconds: float, target: tuple[str, int] = SSHD) -> None:
    loop = asyncio.get_running_loop()
    delay = rtt_ms / 2000

    async def pair(client: _End) -> None:
        assert client.transport is not None
        try:
            _, upstream = await loop.create_connection(_End, *target)
        except OSError:
            client.transport.close()
            return
        assert upstream.transport is not None
        if client.lost:
            upstream.transport.close()
            return
        client.out = upstream.into = DelayLine(loop, delay, client.transport,
                                               upstream.transport, upstream)
        upstream.out = client.into = DelayLine(loop, delay, upstream.transport,
                                               client.transport, client)
        client.transport.resume_reading()

    tasks: set[asyncio.Task[None]] = set()

    class Client(_End):
        """An accepted connection: it reads nothing until its connection to sshd is made."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            transport.pause_reading()  # type: ignore[attr-defined]
            task = loop.create_task(pair(self))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await loop.create_server(Client, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Ends with its parent (stdin closes) and after max_seconds in any case.
    done = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: os.read(sys.stdin.fileno(), 4096)
                    or (done.done() or done.set_result(None)))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done, max_seconds)
    server.close()


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Relay:
    """The relay subprocess; its port."""

    def __init__(self, rtt_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-relay", "--rtt-ms", str(rtt_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_die_with_parent)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise SystemExit("the relay did not start")
        self.port = int(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


# -- counting SSH channels: sshd's TCP connections to an IDE's port ------------------------------
class ChannelWatch:
    """Distinct connections to the given ports (sshd's side of each direct-tcpip channel), from
    /proc/net/tcp sampled every 0.1 s (a closed connection stays listed in TIME_WAIT)."""

    def __init__(self) -> None:
        self.ports: set[int] = set()
        self.seen: dict[int, set[tuple[str, str]]] = collections.defaultdict(set)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, port: int) -> None:
        with self._lock:
            self.ports.add(port)
        self.sample()
        if not self._thread.is_alive():
            self._thread.start()

    def sample(self) -> None:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as f:
                for line in f.readlines()[1:]:
                    local, remote = line.split()[1:3]
                    port = int(remote.rsplit(":", 1)[1], 16)
                    if port in self.ports:
                        with self._lock:
                            self.seen[port].add((local, remote))

    def count(self, port: int) -> int:
        self.sample()
        with self._lock:
            return len(self.seen[port])

    def _run(self) -> None:
        deadline = time.monotonic() + 3600
        while not self._stop.wait(0.1) and time.monotonic() < deadline:
            self.sample()

    def stop(self) -> None:
        self._stop.set()


# -- measurements ---------------------------------------------------------------------------------
def download(t: Target, size: int, channels: Callable[[], int]) -> tuple[float, float, int]:
    """(time to the first byte, total) s of GET /big on a kept-alive connection, and the SSH
    channels opened meanwhile."""
    conn = t.connect()
    try:
        t.get(conn, t.small)  # the browser's connection is already open
        before = channels()
        t0 = time.perf_counter()
        conn.request("GET", f"{t.prefix}big?n={size}", headers=t.headers)
        response = conn.getresponse()
        first = response.read(1)
        ttfb = time.perf_counter() - t0
        n = len(first)
        while chunk := response.read(MIB):
            n += len(chunk)
        total = time.perf_counter() - t0
        opened = channels() - before
    finally:
        conn.close()
    if response.status != 200 or n != size:
        raise SystemExit(f"{t.name}: download: {response.status}, {n} of {size} bytes")
    return ttfb, total, opened


def upload(t: Target, body: bytes, digest: str,
           channels: Callable[[], int]) -> tuple[float, float, int]:
    """(from the last byte written to the answer, total) s of PUT /echo on a kept-alive
    connection, checked by the IDE's length and SHA-256 of what arrived; and the SSH channels
    opened meanwhile."""
    conn = t.connect()
    try:
        t.get(conn, t.small)
        before = channels()
        t0 = time.perf_counter()
        conn.request("PUT", f"{t.prefix}echo", body=body,
                     headers={**t.headers, "Content-Type": "application/octet-stream"})
        t1 = time.perf_counter()
        response = conn.getresponse()
        answer = response.read()
        total = time.perf_counter() - t0
        opened = channels() - before
    finally:
        conn.close()
    info = json.loads(answer) if response.status == 200 else {}
    if info.get("bodyLength") != len(body) or info.get("bodySha256") != digest:
        raise SystemExit(f"{t.name}: upload: {response.status} {answer[:200]!r}")
    return total - (t1 - t0), total, opened


def cold_burst(t: Target, workers: int = 8) -> list[float]:
    """8 requests at once, each on a new connection (a page's first requests)."""
    out: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def work() -> None:
        conn = t.connect()
        barrier.wait(30)
        t0 = time.perf_counter()
        t.get(conn, t.small)
        elapsed = time.perf_counter() - t0
        conn.close()
        with lock:
            out.append(elapsed)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    if len(out) != workers:
        raise SystemExit(f"{t.name}: cold burst: {len(out)} of {workers} answered")
    return out


def vscode_load(browser, url: str, marker: str, cookie: dict | None = None,
                password: str | None = None) -> tuple[float, int, int]:
    """Seconds from opening `url` in a fresh context (cold cache) to the Explorer listing
    `marker`, logging in on code-server's page if `password`; and the requests and websockets
    the page made."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    counts = {"requests": 0, "websockets": 0}
    context.on("request", lambda _: counts.__setitem__("requests", counts["requests"] + 1))
    try:
        if cookie:
            context.add_cookies([cookie])
        page = context.new_page()
        page.on("websocket", lambda _: counts.__setitem__("websockets", counts["websockets"] + 1))
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=120_000)
        if password is not None:
            field = page.locator("input[name=password]")
            field.wait_for(timeout=120_000)
            field.fill(password)
            field.press("Enter")
        page.get_by_text(marker).first.wait_for(timeout=180_000)
        elapsed = time.perf_counter() - t0
    finally:
        context.close()
    return elapsed, counts["requests"], counts["websockets"]


def listen_overflows() -> int:
    """The kernel's count of connections a full listen queue dropped (its SYN is sent again
    after 1 s), all sockets of this network namespace."""
    lines = pathlib.Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


# -- setup ----------------------------------------------------------------------------------------
def known_hosts_for(port: int, folder: pathlib.Path) -> str:
    key = (SANDBOX / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    path = folder / "known_hosts"
    path.write_text(f"[127.0.0.1]:{port} {' '.join(key)}\n")
    return str(path)


def connection_info(job_id: str) -> dict:
    home = pwd.getpwnam(SANDBOX_USER).pw_dir
    return json.loads(pathlib.Path(
        home, ".jupyter-hpc-manager", f"job-{job_id}.json").read_text())


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what}: nothing listens on {port} after 30 s")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def launch_all(server: Server, names: list[str]) -> dict[str, dict]:
    """Launch on every cluster at once; each reply (running) by name."""
    replies: dict[str, dict] = {}

    def one(name: str) -> None:
        replies[name] = server.call("POST", "launch", {"hpc": name, "mem": "1G"})[1]

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for th in threads:
        th.start()
    for th in threads:
        th.join(180)
    for name in names:
        if replies.get(name, {}).get("status") != "running":
            raise SystemExit(f"launch on {name} failed: {replies.get(name)}\n"
                             f"{server.log.read_text()[-3000:]}")
    return replies


# -- the report -----------------------------------------------------------------------------------
def rtts(seconds: float, rtt: float) -> str:
    return f"{seconds / rtt:.1f}" if rtt > 0 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="round trip time added")
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3, help="downloads and uploads per path")
    parser.add_argument("-n", type=int, default=800, help="requests in the 8-concurrent row")
    parser.add_argument("--ws-rounds", type=int, default=100)
    parser.add_argument("--vscode", action=argparse.BooleanOptionalAction, default=True,
                        help="the VS Code cold-load row (Chromium, a code-server job)")
    parser.add_argument("--vscode-runs", type=int, default=5, help="loads per path, alternating")
    parser.add_argument("--no-relay", action="store_true",
                        help="straight to sshd, no relay (to see what the relay itself costs)")
    parser.add_argument("--serve-relay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--relay-to", type=int, default=SSHD[1], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:
        asyncio.run(_relay(args.rtt_ms, 1800, ("127.0.0.1", args.relay_to)))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # (the finally blocks run)
    started = time.monotonic()
    rtt = 0.0 if args.no_relay else args.rtt_ms / 1000
    cluster = sandbox_cluster()
    cancel_all_jobs()
    size = args.size_mib * MIB
    relay = server = None
    watch = ChannelWatch()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="jhm-bench-wan-"))
    ide_dir = pathlib.Path(tempfile.mkdtemp(prefix="jhm-bench-wan-ide-"))
    ide_dir.chmod(0o755)
    shutil.copy(ROOT / "tests" / "resources" / "echo_ide.py", ide_dir / "echo_ide.py")
    tag = uuid.uuid4().hex[:6]
    marker = f"wan-bench-{tag}.txt"
    code_job = f"wan-bench-code-{tag}"
    results: dict[str, dict[str, Any]] = {name: {} for name in PATHS}
    tunnels: list[subprocess.Popen] = []
    clusters: dict[str, dict] = {}
    try:
        if args.no_relay:
            port, known = SSHD[1], cluster["known_hosts"]
        else:
            relay = Relay(args.rtt_ms)
            port, known = relay.port, known_hosts_for(relay.port, tmp)
        via = dict(cluster, host="127.0.0.1", port=port, known_hosts=known)
        clusters["bench"] = dict(via, job_name=f"wan-bench-echo-{tag}",
                                 ide_command=f"python3 {ide_dir / 'echo_ide.py'}")
        if args.vscode:
            clusters["vscode"] = dict(via, job_name=code_job)  # the default: code-server
            home_file(SANDBOX_USER, marker, "a file in the home folder\n")
            home_file(SANDBOX_USER, f".jupyter-hpc-manager/{code_job}/data/User/settings.json",
                      json.dumps({"workbench.startupEditor": "none"}))
        server = Server(tmp / "server", clusters,
                        extra="c.HPCManager.use_system_known_hosts = False\n")
        server.start()
        replies = launch_all(server, list(clusters))
        infos = {name: connection_info(replies[name]["jobId"]) for name in clusters}
        echo, echo_port = infos["bench"], int(infos["bench"]["port"])
        watch.watch(echo_port)
        # Two ssh -L baselines: -N (forwarding only), and with a command running (as when the
        # same ssh also holds a shell; OpenSSH sets TCP_NODELAY only once a session starts).
        forwards: dict[str, dict[str, int]] = {}
        for baseline, session in ((SSH_N, False), (SSH_SESSION, True)):
            argv = ["ssh", "-T", "-F", "none", "-p", str(port), "-i",
                    cluster["identity_file"], "-o", f"UserKnownHostsFile={known}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                    "-o", "ExitOnForwardFailure=yes"]
            if not session:
                argv.append("-N")
            forwards[baseline] = dict(zip(clusters, free_ports(len(clusters)), strict=True))
            for name, local in forwards[baseline].items():
                argv += ["-L", f"127.0.0.1:{local}:{infos[name]['host']}:{infos[name]['port']}"]
            argv.append(f"{cluster['user']}@127.0.0.1")
            if session:
                argv.append("cat")  # (ends when this ssh does: its input closes)
            tunnels.append(subprocess.Popen(argv, stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL,
                                            preexec_fn=_die_with_parent))
            wait_port(forwards[baseline]["bench"], tunnels[-1], baseline)
        jcookie = jupyter_cookie(server.port)
        targets = [Target(OURS, server.port, "/hpc/bench/code/",
                          {"Cookie": jcookie, "Origin": f"http://127.0.0.1:{server.port}"},
                          pid=server.proc.pid)]
        for baseline, local in forwards.items():
            targets.append(Target(baseline, local["bench"], "/", {
                "Cookie": login(local["bench"], echo["password"])}))
        print(f"setup {time.monotonic() - started:.0f} s (sshd through port {port}, "
              f"RTT {args.rtt_ms if relay else 0:g} ms)", flush=True)

        # Throughput, alternating, on connections the client has open already.
        body = os.urandom(size)
        digest = hashlib.sha256(body).hexdigest()
        for _ in range(args.runs):
            for t in targets:
                count = functools.partial(watch.count, echo_port)
                results[t.name].setdefault("down", []).append(download(t, size, count))
                results[t.name].setdefault("up", []).append(upload(t, body, digest, count))
        del body

        # Small requests: first a cold burst (our pool empty: its idle timeout passed), then
        # the 8-concurrent row, counting the channels each opened.
        from jupyter_hpc_manager.upstream import IDLE_TIMEOUT

        time.sleep(IDLE_TIMEOUT + 0.5)
        for t in targets:
            before, overflows = watch.count(echo_port), listen_overflows()
            results[t.name]["burst"] = cold_burst(t)
            results[t.name]["burst_channels"] = watch.count(echo_port) - before
            results[t.name]["burst_overflows"] = listen_overflows() - overflows
        for t in targets:
            before = watch.count(echo_port)
            results[t.name]["conc"] = small_concurrent(t, args.n)
            results[t.name]["conc_channels"] = watch.count(echo_port) - before
        for t in targets:
            results[t.name]["ws"] = websocket_rounds(t, args.ws_rounds)
        print(f"echo rows done at {time.monotonic() - started:.0f} s", flush=True)

        if args.vscode:
            from playwright.sync_api import sync_playwright

            from chromium import CHROMIUM, CHROMIUM_ARGS

            code_port = int(infos["vscode"]["port"])
            watch.watch(code_port)
            loads: dict[str, dict] = {OURS: dict(
                url=f"{server.url}hpc/vscode/code/", cookie={
                    "name": jcookie.split("=", 1)[0], "value": jcookie.split("=", 1)[1],
                    "url": server.url})}
            for baseline, local in forwards.items():
                loads[baseline] = dict(url=f"http://127.0.0.1:{local['vscode']}/",
                                       password=infos["vscode"]["password"])
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for i in range(args.vscode_runs + 1):  # the first round: not counted
                        for name in PATHS if i % 2 == 0 else PATHS[::-1]:
                            before = watch.count(code_port)
                            load = vscode_load(browser, marker=marker, **loads[name])
                            channels = watch.count(code_port) - before
                            key = "vscode" if i else "vscode_first"
                            results[name].setdefault(key, []).append((*load, channels))
                            print(f"  VS Code {'run ' + str(i) if i else 'first load'}, "
                                  f"{name}: {load[0]:.2f} s, {load[1]} requests, "
                                  f"{channels} channels", flush=True)
                finally:
                    browser.close()
    finally:
        watch.stop()
        for tunnel in tunnels:
            tunnel.terminate()
            tunnel.wait(10)
        if server is not None:
            with contextlib.suppress(Exception):
                for name in clusters:
                    server.call("POST", f"stop/{name}", {"cancelJob": True})
            server.stop()
        if relay is not None:
            relay.stop()
        cancel_all_jobs()
        home = pwd.getpwnam(SANDBOX_USER).pw_dir
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(home, marker))
        for job_name in (c["job_name"] for c in clusters.values()):  # (each job's folder)
            shutil.rmtree(os.path.join(home, ".jupyter-hpc-manager", job_name),
                          ignore_errors=True)
        shutil.rmtree(ide_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, results, rtt, size, time.monotonic() - started)


def report(args: argparse.Namespace, results: dict, rtt: float, size: int,
           elapsed: float) -> None:
    med = statistics.median
    r = results
    # Each row: its name, the shown value and the time compared, for every path.
    rows: list[tuple[str, dict[str, tuple[str, float]]]] = []
    if "vscode" in r[OURS]:
        rows.append((f"VS Code cold load, s (median of {len(r[OURS]['vscode'])})", {
            n: (f"{v:.2f}", v) for n in PATHS
            for v in [med(x[0] for x in r[n]["vscode"])]}))
    for key, what in (("down", "download"), ("up", "upload")):
        rows.append((f"{args.size_mib} MiB {what}, MB/s (median of {len(r[OURS][key])})", {
            n: (f"{size / v / 1e6:.0f}", v) for n in PATHS
            for v in [med(x[1] for x in r[n][key])]}))
    rows.append((f"8 concurrent small requests p50, ms ({args.n} requests)", {
        n: (f"{pct(r[n]['conc'][0], 0.5):.1f} ({r[n]['conc'][1]:.0f} req/s)",
            pct(r[n]["conc"][0], 0.5) / 1000) for n in PATHS}))
    rows.append((f"websocket round trip p50, ms ({args.ws_rounds} rounds)", {
        n: (f"{pct(r[n]['ws'], 0.5):.1f}", pct(r[n]["ws"], 0.5) / 1000) for n in PATHS}))

    print()
    relayed = "no relay (sshd directly)" if args.no_relay else f"RTT {args.rtt_ms:g} ms"
    print(f"WAN bench, {relayed}, {elapsed:.0f} s in all. Ratios: our time / ssh -L's "
          "(lower is better; goal <= 1.0)")
    print()
    print(f"| row | {' | '.join(PATHS)} | ours / {SSH_N} | ours / {SSH_SESSION} | "
          f"time in RTTs: {', '.join(PATHS)} |")
    print("|---|" + "---:|" * (len(PATHS) + 3))
    worse = []
    for name, by in rows:
        ratios = []
        for baseline in (SSH_N, SSH_SESSION):
            ratio = round(by[OURS][1] / by[baseline][1], 2)  # (as shown)
            ratios.append(f"{ratio:.2f}" + (" (worse)" if ratio > 1.0 else ""))
            if ratio > 1.0:
                worse.append(f"{name} vs {baseline}")
        print(f"| {name} | {' | '.join(by[n][0] for n in PATHS)} | {' | '.join(ratios)} | "
              f"{', '.join(rtts(by[n][1], rtt) for n in PATHS)} |")

    print()
    print(f"| where the round trips go | {' | '.join(PATHS)} |")
    print("|---|" + "---:|" * len(PATHS))

    def line(label: str, cell) -> None:
        print(f"| {label} | {' | '.join(cell(n) for n in PATHS)} |")

    def ms_rtts(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ({rtts(seconds, rtt)} RTT)"

    line("download: time to the first byte, ms",
         lambda n: ms_rtts(med(x[0] for x in r[n]["down"])))
    line("upload: from the last byte written to the answer, ms",
         lambda n: ms_rtts(med(x[0] for x in r[n]["up"])))
    line("new SSH channels during the downloads, uploads (each run: only the transfer)",
         lambda n: f"{sum(x[2] for x in r[n]['down'])}, {sum(x[2] for x in r[n]['up'])}")
    if rtt > 0:
        from jupyter_hpc_manager.ssh import CHANNEL_WINDOW

        def window(size: int) -> str:
            return f"{size // MIB} MiB: {size / rtt / 1e6:.0f} MB/s"

        line("download: the channel window we grant the IDE's side (the data in flight), "
             "window/RTT", lambda n: window(CHANNEL_WINDOW if n == OURS else OPENSSH_WINDOW))
        line("upload: the window sshd grants, window/RTT", lambda n: window(OPENSSH_WINDOW))
    line("cold burst: 8 requests at once on new connections, p50 / max ms",
         lambda n: f"{ms_rtts(pct(r[n]['burst'], 0.5) / 1000)} / {max(r[n]['burst']) * 1000:.0f}")
    line("new SSH channels in the cold burst", lambda n: str(r[n]["burst_channels"]))
    line("listen queue overflows in the cold burst (a SYN dropped: 1 s more)",
         lambda n: str(r[n]["burst_overflows"]))
    line("new SSH channels in the 8-concurrent row", lambda n: str(r[n]["conc_channels"]))
    line("8 concurrent: p95 ms", lambda n: f"{pct(r[n]['conc'][0], 0.95):.1f}")
    line("websocket: p95 ms", lambda n: f"{pct(r[n]['ws'], 0.95):.1f}")
    line("Jupyter server CPU per small request (8 concurrent), ms",
         lambda n: "-" if r[n]["conc"][2] is None else f"{r[n]['conc'][2]:.2f}")
    if "vscode" in r[OURS]:
        line("VS Code first (unmeasured) load, s",
             lambda n: ", ".join(f"{x[0]:.2f}" for x in r[n]["vscode_first"]))
        line("VS Code loads, s", lambda n: ", ".join(f"{x[0]:.2f}" for x in r[n]["vscode"]))
        for i, what in ((1, "browser requests"), (2, "websockets"), (3, "new SSH channels")):
            line(f"VS Code load: {what} (median)",
                 lambda n, i=i: f"{med(x[i] for x in r[n]['vscode']):.0f}")
    print()
    print("worse than 1.0: " + ("; ".join(worse) if worse else "none"))


if __name__ == "__main__":
    main()
