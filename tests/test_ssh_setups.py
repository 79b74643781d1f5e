"""Clusters reached the way researchers already reach them: a ~/.ssh/config alias with HostName,
User, Port, IdentityFile and ProxyJump (a second sshd on 127.0.0.2 is the jump host), keys from
ssh-agent, a passphrase-protected key with no agent, and a changed host key."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from jupyter_process import SANDBOX


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """An ssh-agent holding the sandbox user's key."""
    sock = tmp_path_factory.mktemp("agent") / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    for _ in range(50):
        if sock.exists():
            break
        time.sleep(0.1)
    subprocess.run(["ssh-add", "-q", str(SANDBOX / "hpcuser_ed25519")], check=True,
                   env={**os.environ, "SSH_AUTH_SOCK": str(sock)})
    yield str(sock)
    proc.terminate()
    proc.wait()


@pytest.fixture
def ssh_config(tmp_path, sandbox_cluster):
    path = tmp_path / "ssh_config"
    key = sandbox_cluster["identity_file"]
    path.write_text(f"""\
Host hpc-login
    HostName 127.0.0.1
    Port 2222
    User hpcuser
    IdentityFile {key}
    ProxyJump hpc-jump

Host hpc-jump
    HostName 127.0.0.2
    Port 2222
    User hpcuser
    IdentityFile {key}
""")
    return path


@pytest.fixture
def locked_key(tmp_path):
    key = tmp_path / "locked_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(key)],
                   check=True)
    return key


@pytest.fixture
def cluster_settings(sandbox_cluster, ssh_config, locked_key):
    common = {"known_hosts": sandbox_cluster["known_hosts"], "partition": "debug",
              "ide_command": sandbox_cluster["ide_command"]}
    return {
        "aliased": dict(common, host="hpc-login", job_name="ssh-hpc-aliased"),
        "agent": dict(common, host="127.0.0.1", port=2222, user="hpcuser",
                      job_name="ssh-hpc-agent"),
        "locked": dict(common, host="127.0.0.1", port=2222, user="hpcuser",
                       identity_file=str(locked_key), job_name="ssh-hpc-locked"),
        # Per-user facts, as one JupyterHub config meets them for a user who lacks them: they
        # belong in that cluster's status, and the server starts.
        "nokey": dict(common, host="127.0.0.1", port=2222, user="hpcuser",
                      identity_file="~/.ssh/no_such_key_ed25519", job_name="ssh-hpc-nokey"),
        "badknown": dict(common, host="127.0.0.1", port=2222, user="hpcuser",
                         identity_file=sandbox_cluster["identity_file"],
                         known_hosts=str(SANDBOX), job_name="ssh-hpc-badknown"),
        "noknown": dict(common, host="127.0.0.1", port=2222, user="hpcuser",
                        identity_file=sandbox_cluster["identity_file"],
                        known_hosts="~/.ssh/no_such_known_hosts", job_name="ssh-hpc-noknown"),
    }


@pytest.fixture
def hpc_config(ssh_config):
    return {"launch_timeout": 60.0, "poll_interval": 0.5, "use_system_known_hosts": False,
            "ssh_config_file": str(ssh_config)}


def accepted(log: str) -> int:
    text = (SANDBOX / log).read_text(errors="replace")
    return text.count("Accepted publickey for hpcuser")


async def test_an_ssh_config_alias_with_proxyjump_carries_commands_and_the_tunnel(
        api, jp_fetch, manager, clean_slurm, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    jump_before = accepted("sshd-jump.log")
    code, reply = await api("POST", "launch", body={"hpc": "aliased", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    # The commands went through the jump host: it accepted our login.
    assert accepted("sshd-jump.log") == jump_before + 1
    assert manager.clusters["aliased"].ssh.current().is_active()
    # The tunnel too: the workbench through the proxy.
    r = await jp_fetch("hpc", "aliased", "code/", params={"folder": "/home/hpcuser"},
                       raise_error=False)
    assert r.code == 200 and b"workbench" in r.body
    assert accepted("sshd-jump.log") == jump_before + 1  # one connection, reused
    code, _ = await api("POST", "stop", "aliased", body={"cancelJob": True})
    assert code == 200


async def test_keys_from_ssh_agent(api, agent, monkeypatch, clean_slurm):
    monkeypatch.setenv("SSH_AUTH_SOCK", agent)
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert code == 200, status
    assert status["agent"] == {"status": "idle"}


async def test_a_passphrase_key_without_an_agent_is_a_clear_error(api, manager, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    code, reply = await api("POST", "launch", body={"hpc": "locked", "mem": "1G"})
    assert code == 502
    assert "passphrase" in reply["error"] and "ssh-agent" in reply["error"]
    assert manager.commands["sbatch"] == 0
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert status["locked"]["status"] == "unknown"
    assert "passphrase" in status["locked"]["error"]


async def test_a_users_missing_key_or_known_hosts_is_that_clusters_error_not_the_servers(
        api, manager, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert code == 200  # the server started and answers
    home = os.path.expanduser("~")
    for hpc, words in (("nokey", f"{home}/.ssh/no_such_key_ed25519 set for cluster 'nokey' "
                                 "does not exist"),
                       ("badknown", f"Cannot read the known_hosts file {SANDBOX}"),
                       ("noknown", f"{home}/.ssh/no_such_known_hosts set for cluster "
                                   "'noknown' does not exist"),
                       ("agent", "no key to offer")):
        assert status[hpc]["status"] == "unknown", (hpc, status[hpc])
        assert words in status[hpc]["error"], (hpc, status[hpc]["error"])
    code, reply = await api("POST", "launch", body={"hpc": "nokey", "mem": "1G"})
    assert code == 502 and "does not exist" in reply["error"]
    assert manager.commands["sbatch"] == 0
    code, status = await api("GET", "cluster-status")
    assert status["aliased"]["status"] == "idle"  # the other clusters are not affected
