"""A login node that offers the plain "password" method (not keyboard-interactive): without a
login it is LoginRequired; with one, the server's single password question is relayed as a
prompt we make, and a wrong password is LoginFailed. A real paramiko SSH server on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import paramiko
import pytest

from jupyter_hpc_manager.config import ClusterConfig
from jupyter_hpc_manager.errors import LoginFailed, LoginRequired
from jupyter_hpc_manager.login import LoginAttempt
from jupyter_hpc_manager.ssh import SSHConnection, SSHSettings

USER, PASSWORD = "alice", "correct horse"


class PasswordServer(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        ok = (username, password) == (USER, PASSWORD)
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED


@pytest.fixture
def login_node(tmp_path):
    """(port, known_hosts file) of an SSH server that takes passwords only."""
    key = paramiko.ECDSAKey.generate()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n")
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            t = paramiko.Transport(sock)
            t.add_server_key(key)
            t.start_server(server=PasswordServer())
            transports.append(t)

    threading.Thread(target=serve, daemon=True).start()
    yield port, str(known)
    listener.close()
    for t in transports:
        t.close()


def connection(port: int, known: str) -> SSHConnection:
    cluster = ClusterConfig(name="pw", host="127.0.0.1", port=port, user=USER, known_hosts=known,
                            identity_file="")
    return SSHConnection(cluster, SSHSettings(connect_timeout=5, use_system_known_hosts=False,
                                              ssh_config_file="/nonexistent"),
                         logging.getLogger("test"))


async def answer_once(ssh: SSHConnection, answer: str) -> tuple[object, list]:
    loop = asyncio.get_running_loop()
    attempt = LoginAttempt("pw", loop, timeout=10)
    attempt.task = loop.run_in_executor(None, ssh.connect, attempt)
    round_ = await attempt.next_round()
    assert round_ is not None
    attempt.answer([answer])
    assert await attempt.next_round() is None
    return attempt.task, list(round_.prompts)


async def test_the_password_method_is_relayed(login_node):
    port, known = login_node
    ssh = connection(port, known)
    with pytest.raises(LoginRequired, match="asks for a password or one-time code"):
        await asyncio.get_running_loop().run_in_executor(None, ssh.connect)
    task, prompts = await answer_once(ssh, PASSWORD)
    assert prompts == [(f"Password for {USER}: ", False)]
    assert (await task).is_authenticated()
    ssh.close()


async def test_a_wrong_password_is_login_failed(login_node):
    port, known = login_node
    ssh = connection(port, known)
    task, _ = await answer_once(ssh, "wrong")
    with pytest.raises(LoginFailed, match="refused the login"):
        await task
    ssh.close()
