"""Budgets per cluster: a login node that allows two sessions (sshd's MaxSessions 2) serves a
dozen concurrent requests over its one connection; hung login nodes and logins waiting for a
code hold only their own cluster's threads. And a hung IDE: requests answer 504 after
ide_timeout, bodies to an IDE that fails or hangs end promptly, websockets are closed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

import mfa
from conftest import whoami
from jupyter_process import MFA_USER, SANDBOX, free_port


@pytest.fixture(scope="module")
def tight_login_node(tmp_path_factory):
    """The sandbox's login node again, on another port, allowing two sessions per connection
    (sshd's MaxSessions 2, as some sites set it); its own log counts connections."""
    folder = tmp_path_factory.mktemp("tight-sshd")
    port = free_port()
    config = (SANDBOX / "sshd_config").read_text()
    config = re.sub(r"(?m)^ListenAddress .*$", f"ListenAddress 127.0.0.1:{port}", config)
    config = re.sub(r"(?m)^PidFile .*$", f"PidFile {folder}/sshd.pid", config)
    config = re.sub(r"(?m)^MaxSessions .*$", "MaxSessions 2", config)
    (folder / "sshd_config").write_text(config)
    log = folder / "sshd.log"
    subprocess.run(["/usr/sbin/sshd", "-f", str(folder / "sshd_config"), "-E", str(log)],
                   check=True)
    key = (SANDBOX / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {' '.join(key)}\n")
    known.chmod(0o644)
    yield {"port": port, "known_hosts": str(known), "log": log}
    os.kill(int((folder / "sshd.pid").read_text()), signal.SIGTERM)


@pytest.fixture(scope="module")
def hung_login_node():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


@pytest.fixture
def cluster_settings(cluster_settings: dict, sandbox_cluster: dict, echo_ide: str,
                     tight_login_node: dict, hung_login_node: int) -> dict:
    echo = dict(cluster_settings["echo1"])
    as_mfauser = dict(sandbox_cluster, user=MFA_USER, ide_command=echo_ide)
    return {
        "echo1": cluster_settings["echo1"],
        "echo2": cluster_settings["echo2"],
        "tight": dict(echo, job_name="test-hpc-tight", port=tight_login_node["port"],
                      known_hosts=tight_login_node["known_hosts"]),
        **{f"hung{i}": dict(echo, job_name=f"test-hpc-hung{i}", port=hung_login_node)
           for i in (1, 2, 3)},
        "mfa": dict(as_mfauser, port=mfa.PASSWORD_PORT, identity_file="",
                    job_name="test-hpc-mfa"),
        "mfakey": dict(as_mfauser, port=mfa.KEY_PORT, job_name="test-hpc-mfakey",
                       identity_file=str(SANDBOX / "mfauser_ed25519")),
    }


@pytest.fixture
def hpc_config(hpc_config: dict) -> dict:
    return {**hpc_config, "ssh_timeout": 12.0, "login_timeout": 60.0, "ide_timeout": 3.0,
            "status_wait": 1.0}


def connections(log: pathlib.Path) -> int:
    return log.read_text().count("Accepted publickey")


async def test_a_login_node_allowing_two_sessions_serves_twelve_requests_on_one_connection(
        api, jp_fetch, manager, tight_login_node, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "tight", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    opened = connections(tight_login_node["log"])
    assert opened == 1
    calls = [
        *(api("POST", "check-launch", body={"hpc": "tight", "workdir": f"/tmp/../tmp{'/.' * i}"})
          for i in range(5)),  # each runs its own `test -d` on the login node
        *(api("GET", "cluster-status", params={"refresh": "true"}) for _ in range(2)),
        api("GET", "status"),
        *(whoami(jp_fetch, "tight") for _ in range(4)),
    ]
    answers = await asyncio.gather(*calls)
    assert len(answers) == 12
    assert [code for code, _ in answers] == [200] * 12, [
        (code, body) for code, body in answers if code != 200]
    assert all(body["jobId"] == reply["jobId"] for _, body in answers[-4:])
    # The refused channels failed nothing and dropped nothing: the same one connection.
    assert connections(tight_login_node["log"]) == opened
    assert manager.clusters["tight"].node.sessions.limit <= 2
    code, again = await api("POST", "launch", body={"hpc": "tight", "mem": "1G"})
    assert (code, again["status"], again["jobId"]) == (200, "connected", reply["jobId"])


async def test_hung_login_nodes_and_waiting_logins_hold_up_no_other_cluster(
        api, jp_fetch, manager, clean_slurm):
    # Two logins that wait for a person's answer (each holds a thread until login_timeout).
    for hpc in ("mfa", "mfakey"):
        code, prompt = await api("POST", "login", hpc, body={})
        assert (code, prompt["status"]) == (200, "prompt"), prompt
    # Three login nodes that take the connection and never speak SSH (ssh_timeout: 12 s),
    # asked by launches and status at once.
    hung = [asyncio.ensure_future(api("POST", "launch", body={"hpc": f"hung{i}", "mem": "1G"},
                                      request_timeout=60)) for i in (1, 2, 3)]
    code, first = await api("GET", "cluster-status", params={"refresh": "true"})
    assert all(first[f"hung{i}"]["status"] == "unknown" for i in (1, 2, 3))
    # The healthy cluster launches, answers status and serves its IDE meanwhile.
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    code, s = await api("GET", "status")
    assert s["sessions"]["echo1"]["status"] == "running"
    code, me = await whoami(jp_fetch, "echo1")
    assert code == 200 and me["jobId"] == reply["jobId"]
    # ... while all of those still wait.
    assert not any(task.done() for task in hung)
    assert all(not manager.clusters[h].node._login.finished for h in ("mfa", "mfakey"))
    for h in ("mfa", "mfakey"):
        await api("POST", "logout", h)
    results = await asyncio.gather(*hung)
    assert all(code == 502 for code, _ in results), results


def ide_pids(manager, hpc: str) -> list[int]:
    """The IDE's processes on the node (the echo IDE: one python process on its port)."""
    port = manager.session(hpc).connection.port
    out = subprocess.run(["pgrep", "-f", "echo_ide.py"], capture_output=True, text=True)
    pids = []
    for pid in map(int, out.stdout.split()):
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
        if f"SLURM_JOB_ID={manager.session(hpc).job_id}".encode() in env:
            pids.append(pid)
    assert pids, (port, out.stdout)
    return pids


def hang(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def wake(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


async def test_a_hung_ide_answers_504_and_its_websockets_are_closed(
        api, jp_fetch, jp_base_url, jp_http_port, jp_auth_header, manager, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert code == 200
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}hpc/echo1/code/ws?answers=1000"
    ws = await websocket_connect(HTTPRequest(url, headers=dict(jp_auth_header)))
    ws.write_message("ping")
    assert await ws.read_message() is not None
    tunnel = manager.session("echo1").ide.tunnel
    tasks_before = len(asyncio.all_tasks())
    pids = ide_pids(manager, "echo1")
    hang(pids)
    try:
        # A GET, a small POST and a 2 MiB PUT: each 504 after ide_timeout (3 s here).
        r = await jp_fetch("hpc", "echo1", "code", "small", raise_error=False)
        assert r.code == 504 and b"did not" in r.body, r.body[:300]
        body = os.urandom(2 * 1024 * 1024)
        for method, data in (("POST", b"x" * 100), ("PUT", body)):
            r = await jp_fetch("hpc", "echo1", "code", "echo", method=method, body=data,
                               raise_error=False, request_timeout=120)
            assert r.code == 504, (method, r.code, r.body[:300])
        # The websocket is closed once the IDE's health check goes unanswered.
        while await ws.read_message() is not None:
            pass
        assert ws.close_code is None or ws.close_code != 1000
    finally:
        wake(pids)
        ws.close()
    # Nothing left behind: no channel to the IDE beyond the pool's, no task.
    await asyncio.sleep(0.5)
    assert tunnel.connections <= 1, tunnel.connections
    assert len(asyncio.all_tasks()) <= tasks_before
    # The IDE answers again once it runs.
    r = await jp_fetch("hpc", "echo1", "code", "echo", method="PUT", body=body,
                       raise_error=False, request_timeout=120)
    info = json.loads(r.body)
    assert info["bodySha256"] == hashlib.sha256(body).hexdigest()


async def test_a_body_to_an_ide_that_goes_away_mid_body_ends_with_502(
        api, jp_fetch, manager, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert code == 200
    tunnel = manager.session("echo1").ide.tunnel
    pids = ide_pids(manager, "echo1")
    tasks_before = len(asyncio.all_tasks())
    body = os.urandom(16 * 1024 * 1024)
    hang(pids)  # the upload stalls part-way (the IDE reads nothing)...

    async def killed_soon():
        await asyncio.sleep(1.0)
        for pid in pids:  # ... and then the IDE is gone
            os.kill(pid, signal.SIGKILL)
        wake(pids)

    killer = asyncio.ensure_future(killed_soon())
    r = await jp_fetch("hpc", "echo1", "code", "echo", method="PUT", body=body,
                       raise_error=False, request_timeout=120)
    await killer
    assert r.code in (502, 504), (r.code, r.body[:300])
    for _ in range(100):  # (the login node closes the channels of a dead IDE soon after)
        if tunnel.connections == 0:
            break
        await asyncio.sleep(0.1)
    assert tunnel.connections == 0
    assert len(asyncio.all_tasks()) <= tasks_before
