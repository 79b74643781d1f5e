"""SSH to the login nodes: one persistent paramiko Transport per cluster, shared by every command
and every tunnel channel, host keys verified.

Everything here blocks; callers run it in the manager's executor, never on the event loop, and
every wait has a bound (connect_timeout for each step of a connection, command_timeout for a
command, the login attempt's deadline for a person's answers). Connecting takes no lock: the
per-cluster layer (cluster.py) makes concurrent callers share one attempt. paramiko and socket
errors are mapped to our errors here, once.

Keys and agents are tried first. A login node (or jump host) that wants more, a password or a
one-time code, raises LoginRequired, unless the connection is made for a LoginAttempt
(login.py): then its prompts are relayed to the user, host by host."""

from __future__ import annotations

import base64
import getpass
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paramiko

from .config import ClusterConfig
from .errors import (
    ChannelRefused,
    ConnectionLost,
    HostKeyError,
    LoginFailed,
    LoginRequired,
    SshError,
    TunnelError,
)

if TYPE_CHECKING:
    from .login import LoginAttempt

# The methods a person answers (a password, a one-time code), in the order we prefer them.
INTERACTIVE_METHODS = ("keyboard-interactive", "password")

DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
SYSTEM_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "~/.ssh/known_hosts")
# Forwarding channels: a larger window than paramiko's 2 MiB default keeps a fast download from
# stalling on window updates. The maximum packet is what we accept (the server sends no larger;
# RFC 4254 5.1): 128 KiB instead of 32 KiB means a quarter of the per-packet Python work in
# paramiko's transport thread; a raw channel read went from ~450 to ~900 MB/s here. (OpenSSH
# sends at most 256 KiB packets, so 128 KiB stays well inside what it produces.)
CHANNEL_WINDOW = 8 * 1024 * 1024
CHANNEL_PACKET = 128 * 1024


class _RefusedChannels(logging.Filter):
    """paramiko logs every channel the login node refuses as an ERROR ("Secsh channel N open
    FAILED"), to stderr when nothing else handles its logger. Each is ours to handle and to
    tell in our own words (a TunnelError, ChannelRefused); a kernel that is restarting or an
    IDE that has stopped would otherwise write lines by the dozen per second."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not (msg.startswith("Secsh channel") and "open FAILED" in msg)


logging.getLogger("paramiko.transport").addFilter(_RefusedChannels())


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SSHSettings:
    connect_timeout: float = 15.0
    command_timeout: float = 30.0
    keepalive_interval: int = 30
    ssh_config_file: str = "~/.ssh/config"
    use_system_known_hosts: bool = True


@dataclass(frozen=True)
class Endpoint:
    """Where a cluster's login node really is, after ~/.ssh/config has been applied."""

    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    proxy_jump: str | None = None

    @property
    def known_hosts_name(self) -> str:
        # OpenSSH writes non-22 ports as [host]:port in known_hosts.
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _lookup(host: str, ssh_config_file: str) -> dict:
    path = os.path.expanduser(ssh_config_file)
    if path and os.path.isfile(path):
        return dict(paramiko.SSHConfig.from_path(path).lookup(host))
    return {}


def _endpoint(host: str, looked_up: dict, port: int = 0, user: str = "",
              identity_file: str = "", proxy_jump: str | None = None) -> Endpoint:
    identity = (
        (identity_file,) if identity_file
        else tuple(os.path.expanduser(p) for p in looked_up.get("identityfile", []))
    )
    jump = proxy_jump if proxy_jump is not None else looked_up.get("proxyjump")
    return Endpoint(
        hostname=looked_up.get("hostname", host),
        port=port or int(looked_up.get("port", 22)),
        user=user or looked_up.get("user") or getpass.getuser(),
        identity_files=identity,
        proxy_jump=None if jump in (None, "", "none") else jump,
    )


def resolve_endpoint(cluster: ClusterConfig, ssh_config_file: str) -> Endpoint:
    """Apply ~/.ssh/config to the cluster's host, as `ssh` would; explicit settings win."""
    return _endpoint(cluster.host, _lookup(cluster.host, ssh_config_file), cluster.port,
                     cluster.user, cluster.identity_file, cluster.proxy_jump or None)


def resolve_jumps(spec: str, ssh_config_file: str) -> list[Endpoint]:
    """The hops of a ProxyJump value, ``[user@]host[:port]`` or Host aliases separated by
    commas, in the order they are crossed (as ``ssh -J a,b``). A hop's own ProxyJump is not
    followed: the list says the whole way."""
    hops = []
    for part in spec.split(","):
        user, _, hostport = part.strip().rpartition("@")
        host, _, port = hostport.partition(":")
        if not host or (port and not port.isdigit()):
            raise SshError(f"ProxyJump {spec!r}: {part.strip()!r} is not [user@]host[:port]")
        looked_up = _lookup(host, ssh_config_file)
        looked_up.pop("proxyjump", None)
        hops.append(_endpoint(host, looked_up, int(port or 0), user))
    return hops


class SSHConnection:
    """The Transport of one cluster's login node. Thread-safe. ``connect()`` makes a new one;
    ``run`` and ``open_channel`` use a given one, and raise ConnectionLost when it turns out
    dead before anything ran on it (so the caller may reconnect and try once more)."""

    def __init__(self, cluster: ClusterConfig, settings: SSHSettings,
                 log: logging.Logger, on_connect: Callable[[], None] | None = None) -> None:
        self.cluster = cluster
        self.settings = settings
        self.log = log
        self._on_connect = on_connect
        self._lock = threading.Lock()  # held only to swap the current transport, never to wait
        self._transport: paramiko.Transport | None = None
        # A transport reached through jump hosts, and the jump hosts' own transports.
        self._jumps: dict[paramiko.Transport, list[paramiko.Transport]] = {}
        self._closed = False

    # -- connecting --------------------------------------------------------------------------
    def _host_keys(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        files = list(SYSTEM_KNOWN_HOSTS) if self.settings.use_system_known_hosts else []
        for f in files:
            path = os.path.expanduser(f)
            if os.path.isfile(path):
                try:
                    keys.load(path)
                except (OSError, paramiko.SSHException) as exc:
                    self.log.warning("jupyter-hpc-manager: cannot read known_hosts %s: %s",
                                     path, exc)
        # The cluster's own file was named on purpose: if it cannot be read, say so (rather
        # than calling the login node's key unknown).
        path = self.cluster.known_hosts
        if path:
            try:
                keys.load(path)
            except FileNotFoundError as exc:
                raise SshError(f"The known_hosts file {path} set for cluster "
                               f"{self.cluster.name!r} does not exist", {"path": path}) from exc
            except (OSError, paramiko.SSHException) as exc:
                raise SshError(f"Cannot read the known_hosts file {path} set for cluster "
                               f"{self.cluster.name!r}: {getattr(exc, 'strerror', None) or exc}",
                               {"path": path}) from exc
        return keys

    def _verify_host_key(self, transport: paramiko.Transport, endpoint: Endpoint,
                         role: str = "login node") -> None:
        key = transport.get_remote_server_key()
        name = endpoint.known_hosts_name
        known = self._host_keys().lookup(name)
        where = f"the {role} of cluster {self.cluster.name!r} ({name})"
        if known is None:
            raise HostKeyError(
                f"Host key of {where} is not known: refusing to connect. Its {key.get_name()} key "
                f"is {fingerprint(key)}; if that is right, add it to known_hosts "
                f"(ssh-keyscan -p {endpoint.port} {endpoint.hostname}).",
                {"host": name, "fingerprint": fingerprint(key)},
            )
        expected = known.get(key.get_name())
        if expected is None or expected != key:
            raise HostKeyError(
                f"Host key of {where} has CHANGED: it now offers {key.get_name()} "
                f"{fingerprint(key)}, which known_hosts does not hold. Refusing to connect: "
                "someone may be intercepting the connection, or the host was reinstalled.",
                {"host": name, "fingerprint": fingerprint(key)},
            )

    def _keys(self, endpoint: Endpoint) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
        """The keys to offer (label, key) and those locked by a passphrase."""
        keys: list[tuple[str, paramiko.PKey]] = []
        locked: list[str] = []
        candidates = endpoint.identity_files or tuple(
            p for p in (os.path.expanduser(k) for k in DEFAULT_KEYS) if os.path.isfile(p)
        )
        for path in candidates:
            try:
                keys.append((path, paramiko.PKey.from_path(path)))
            except paramiko.PasswordRequiredException:
                locked.append(path)
            except TypeError as exc:
                # cryptography's word for an OpenSSH-format key that needs its passphrase.
                if "password" not in str(exc):
                    raise SshError(f"Cannot read the SSH key {path}: {exc}") from exc
                locked.append(path)
            except FileNotFoundError as exc:
                if endpoint.identity_files:
                    raise SshError(
                        f"The SSH key {path} set for cluster {self.cluster.name!r} does not "
                        "exist: create it (ssh-keygen) and add its public half to "
                        "~/.ssh/authorized_keys on the cluster, or ask your admin which key to "
                        "use", {"path": path}) from exc
            except (OSError, paramiko.SSHException, ValueError) as exc:
                if endpoint.identity_files:
                    raise SshError(f"Cannot read the SSH key {path}: "
                                   f"{getattr(exc, 'strerror', None) or exc}",
                                   {"path": path}) from exc
        return keys, locked

    def _auth(self, transport: paramiko.Transport, endpoint: Endpoint, deadline: float,
              role: str, login: LoginAttempt | None) -> None:
        """Keys first (files, then the agent); then, if the server asks for more or for
        something else, a password or code: relayed through ``login``, or LoginRequired."""
        tried: list[str] = []
        keys, locked = self._keys(endpoint)
        allowed: list[str] = []  # what the server accepts next, once it has said
        partial = False  # a key was accepted and the server wants a second factor
        agent = paramiko.Agent()
        try:
            keys.extend((f"ssh-agent key {k.get_name()}", k) for k in agent.get_keys())
            for label, key in keys:
                tried.append(label)
                # Each try waits for the server's answer at most until the connection's deadline.
                transport.auth_timeout = _remaining(deadline)
                try:
                    remaining = transport.auth_publickey(endpoint.user, key)
                except paramiko.BadAuthenticationType as exc:
                    allowed = list(exc.allowed_types)  # no key will do: it wants other methods
                    break
                except paramiko.AuthenticationException:
                    continue
                if transport.is_authenticated():
                    return
                allowed, partial = list(remaining), True
                break
        finally:
            agent.close()
        if not allowed:
            # Ask the server what it accepts ("none" is not counted as a failed try).
            transport.auth_timeout = _remaining(deadline)
            try:
                transport.auth_none(endpoint.user)
            except paramiko.BadAuthenticationType as exc:
                allowed = list(exc.allowed_types)
            except paramiko.AuthenticationException:
                pass
            if transport.is_authenticated():
                return
        target = f"{endpoint.user}@{endpoint.hostname}:{endpoint.port}"
        if any(m in allowed for m in INTERACTIVE_METHODS):
            if login is None:
                where = f"The {role} of {self.cluster.name!r} ({target})"
                raise LoginRequired(
                    (f"{where} accepted the key and asks for a one-time code" if partial else
                     f"{where} asks for a password or one-time code"
                     + (f" (it did not accept {', '.join(tried)})" if tried else ""))
                    + ": log in from JupyterLab.",
                    {"hpc": self.cluster.name, "login": "required", "host": endpoint.hostname})
            self._interactive(transport, endpoint, role, login, allowed)
            return
        if locked and not tried:
            raise SshError(
                f"The SSH key {', '.join(locked)} for {target} is protected by a passphrase and "
                "no ssh-agent offers it: load it into an agent (ssh-add) that the Jupyter server "
                "can reach.",
                {"host": endpoint.hostname},
            )
        raise SshError(
            f"SSH authentication to {target} failed"
            + (f" with {', '.join(tried)}" if tried else ": no key to offer (identity_file or "
               "ssh-agent)"),
            {"host": endpoint.hostname},
        )

    def _interactive(self, transport: paramiko.Transport, endpoint: Endpoint, role: str,
                     login: LoginAttempt, allowed: list[str]) -> None:
        """The server's prompts to the user and the answers back, bounded by the attempt's
        deadline. A refusal ends the attempt (LoginFailed): no answer is tried twice."""
        target = f"{endpoint.user}@{endpoint.hostname}:{endpoint.port}"
        host = f"{role} {target}"  # which host asks, for the user
        for _ in range(4):  # a server may chain methods (say, password then keyboard-interactive)
            transport.auth_timeout = _remaining(login.deadline) + 5
            try:
                if "keyboard-interactive" in allowed:
                    remaining = transport.auth_interactive(endpoint.user, login.handler(host))
                elif "password" in allowed:
                    remaining = transport.auth_password(endpoint.user,
                                                        login.password(host, endpoint.user))
                else:
                    break
            except (paramiko.AuthenticationException, EOFError) as exc:
                if login.expired:
                    raise LoginFailed(
                        f"The login to {self.cluster.name} expired: nothing was answered within "
                        f"{login.timeout:.0f} s. Start again.", {"hpc": self.cluster.name}) from exc
                raise LoginFailed(
                    f"The {role} of {self.cluster.name!r} ({target}) refused the login: a wrong "
                    "password or code? Start again (a code can be used once).",
                    {"hpc": self.cluster.name, "host": endpoint.hostname}) from exc
            if transport.is_authenticated():
                return
            allowed = list(remaining)
        raise SshError(f"The {role} of {self.cluster.name!r} ({target}) asks for "
                       f"{', '.join(allowed) or 'more'} after the login, which this extension "
                       "cannot answer", {"host": endpoint.hostname})

    def _tcp(self, endpoint: Endpoint, deadline: float, role: str = "login node") -> socket.socket:
        where = f"{endpoint.hostname}:{endpoint.port}"
        try:
            sock = socket.create_connection(
                (endpoint.hostname, endpoint.port), timeout=_remaining(deadline)
            )
        except OSError as exc:
            raise SshError(
                f"Cannot reach the {role} of {self.cluster.name!r} at {where}: "
                f"{exc.strerror or exc}",
                {"host": endpoint.hostname},
            ) from exc
        # Without TCP_NODELAY every small request/answer pays Nagle's ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def connect(self, login: LoginAttempt | None = None) -> paramiko.Transport:
        """A new, authenticated Transport, which becomes the current one. Bounded: the whole
        connection (jump hosts included) fails after connect_timeout; with ``login``, each
        host gets connect_timeout of its own besides the time the user takes to answer."""
        start = time.monotonic()

        def deadline() -> float:
            return (time.monotonic() if login else start) + self.settings.connect_timeout

        if self._transport is not None and not self._transport.is_active():
            self.log.info("jupyter-hpc-manager: SSH to %s was lost; reconnecting",
                          self.cluster.name)
        endpoint = resolve_endpoint(self.cluster, self.settings.ssh_config_file)
        hops = ([] if endpoint.proxy_jump is None
                else resolve_jumps(endpoint.proxy_jump, self.settings.ssh_config_file))
        # ProxyJump: an SSH connection to the first jump host, through it (direct-tcpip) one to
        # the next, and so on to the login node; each verified and authenticated on its own, as
        # `ssh -J`.
        jumps: list[paramiko.Transport] = []
        try:
            previous: Endpoint | None = None
            for hop in [*hops, endpoint]:
                role = "login node" if hop is endpoint else "jump host"
                until = deadline()
                if not jumps:
                    sock: socket.socket | paramiko.Channel = self._tcp(hop, until, role)
                else:
                    try:
                        sock = jumps[-1].open_channel(
                            "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0),
                            timeout=_remaining(until))
                    except (paramiko.SSHException, EOFError, OSError) as exc:
                        assert previous is not None
                        raise SshError(
                            f"The jump host {previous.hostname} cannot reach the {role} of "
                            f"{self.cluster.name!r} at {hop.hostname}:{hop.port}: {exc}",
                            {"host": hop.hostname},
                        ) from exc
                jumps.append(self._handshake(hop, sock, until, role, login))
                previous = hop
        except BaseException:
            for t in reversed(jumps):
                t.close()
            raise
        transport = jumps.pop()
        with self._lock:
            old, self._transport = self._transport, transport
            if jumps:
                self._jumps[transport] = jumps
            closed = self._closed
        if old is not None:
            self._close(old)
        if closed:  # the server stopped while we were connecting
            self._close(transport)
            raise ConnectionLost(f"SSH to {self.cluster.name!r} was closed")
        if self._on_connect:
            self._on_connect()
        return transport

    def _handshake(self, endpoint: Endpoint, sock: socket.socket | paramiko.Channel,
                   deadline: float, role: str = "login node",
                   login: LoginAttempt | None = None) -> paramiko.Transport:
        where = f"{endpoint.hostname}:{endpoint.port}"
        transport = paramiko.Transport(sock)
        # AES-GCM first: authenticated encryption, and the fastest cipher paramiko has here.
        options = transport.get_security_options()
        options.ciphers = tuple(sorted(options.ciphers, key=lambda c: "gcm" not in c))
        # A login node that takes the TCP connection and never speaks SSH (overloaded, hung)
        # must fail within the bound, not paramiko's own 15 s banner wait.
        # (A little later than our own bound, so that ours is the one that fires, with its
        # clearer message.)
        transport.banner_timeout = _remaining(deadline) + 5
        try:
            transport.start_client(timeout=_remaining(deadline))
            if not transport.is_active() or not getattr(transport, "initial_kex_done", True):
                # (start_client returns quietly when its time is up.)
                raise SshError(
                    f"The {role} of {self.cluster.name!r} at {where} accepted the connection "
                    f"but did not start SSH within {self.settings.connect_timeout:.0f} s",
                    {"host": endpoint.hostname})
            self._verify_host_key(transport, endpoint, role)
            self._auth(transport, endpoint, deadline, role, login)
        except SshError:
            transport.close()
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            raise SshError(f"SSH to {where} for {self.cluster.name!r} failed: {exc}",
                           {"host": endpoint.hostname}) from exc
        if self.settings.keepalive_interval:
            transport.set_keepalive(self.settings.keepalive_interval)
        self.log.info("jupyter-hpc-manager: SSH connected to %s's %s (%s@%s)",
                      self.cluster.name, role, endpoint.user, where)
        return transport

    def current(self) -> paramiko.Transport | None:
        """The open Transport, if there is one that is alive."""
        transport = self._transport
        return transport if transport is not None and transport.is_active() else None

    def _close(self, transport: paramiko.Transport) -> None:
        transport.close()
        with self._lock:
            jumps = self._jumps.pop(transport, [])
        for jump in reversed(jumps):
            jump.close()

    def drop(self, transport: paramiko.Transport) -> None:
        """Forget a transport that failed (the next caller connects again)."""
        with self._lock:
            if self._transport is transport:
                self._transport = None
        self._close(transport)

    def open_session(self, transport: paramiko.Transport) -> paramiko.Channel:
        """A new exec channel. ChannelRefused if the login node refused it or did not answer in
        time on a live connection (which is kept: at an MFA site a new one needs a person);
        ConnectionLost if the connection is dead. Nothing ran either way."""
        try:
            return transport.open_session(timeout=self.settings.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._open_failed(transport, exc) from exc

    def _open_failed(self, transport: paramiko.Transport, exc: BaseException) -> SshError:
        if isinstance(exc, paramiko.ChannelException) or (
                transport.is_active() and isinstance(exc, paramiko.SSHException)):
            prohibited = isinstance(exc, paramiko.ChannelException)
            why = exc.text if isinstance(exc, paramiko.ChannelException) else str(exc)
            return ChannelRefused(f"The login node of {self.cluster.name!r} refused a new "
                                  f"channel: {why}", {"host": self.cluster.host,
                                                      "prohibited": prohibited})
        self.drop(transport)
        return ConnectionLost(f"SSH channel to {self.cluster.name!r} failed: {exc}")

    def open_channel(self, transport: paramiko.Transport, host: str,
                     port: int) -> paramiko.Channel:
        """A direct-tcpip channel to host:port as seen from the login node."""
        try:
            return transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0),
                timeout=self.settings.connect_timeout,
                window_size=CHANNEL_WINDOW, max_packet_size=CHANNEL_PACKET,
            )
        except paramiko.ChannelException as exc:
            # The login node answered: it could not reach host:port. The transport is fine.
            raise TunnelError(
                f"The login node of {self.cluster.name!r} cannot reach {host}:{port}: "
                f"{exc.text or exc}", {"host": host, "port": port},
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._open_failed(transport, exc) from exc

    # -- commands ----------------------------------------------------------------------------
    def run(self, transport: paramiko.Transport, command: str, stdin: str | None = None,
            timeout: float | None = None,
            opened: Callable[[], None] | None = None) -> CommandResult:
        """Run one command line on the login node (its shell reads it: quote every value).
        Bounded by command_timeout from start to exit status. ``opened``: called once the
        login node has accepted the exec channel."""
        timeout = timeout or self.settings.command_timeout
        chan = self.open_session(transport)
        if opened is not None:
            opened()
        deadline = time.monotonic() + timeout
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin.encode())
            chan.shutdown_write()
            out = bytearray()
            while True:
                chan.settimeout(max(0.1, deadline - time.monotonic()))
                data = chan.recv(65536)
                if not data:
                    break
                out += data
            err = bytearray()
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            # (recv_exit_status() would wait for ever for a server that never sends it.)
            if not chan.status_event.wait(max(0.1, deadline - time.monotonic())):
                raise TimeoutError
            status = chan.recv_exit_status()
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
        except TimeoutError as exc:
            raise SshError(
                f"Command on {self.cluster.name!r} took longer than {timeout:.0f} s",
                {"command": command.split(" ", 1)[0]},
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SshError(f"SSH command on {self.cluster.name!r} failed: {exc}") from exc
        finally:
            chan.close()
        return CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            transport, self._transport = self._transport, None
        if transport is not None:
            self._close(transport)


def _remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


