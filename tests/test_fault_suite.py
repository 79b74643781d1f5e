"""The fault suite: what fails around a session, and what the researcher sees. Real sshd, SLURM,
code-server and Jupyter server processes; faults made the way they happen (signals, daemons
stopped, files that cannot be written)."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import time
import urllib.request

import pytest

from jupyter_process import SANDBOX, TOKEN, Server, slurm_jobs

pytestmark = pytest.mark.timeout(600)


def sshd_pids() -> list[int]:
    """The sandbox login node's listener and every connection it serves."""
    out = subprocess.run(["pgrep", "-f", "sshd: hpcuser"], capture_output=True, text=True)
    return [int((SANDBOX / "sshd.pid").read_text()), *map(int, out.stdout.split())]


def stop_sshd() -> None:
    for pid in sshd_pids():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(0.5)


def start_sshd() -> None:
    subprocess.run(["/usr/sbin/sshd", "-f", str(SANDBOX / "sshd_config"), "-E",
                    str(SANDBOX / "sshd.log")], check=True)
    time.sleep(0.3)


def workbench(server: Server, hpc: str = "gemini") -> int:
    request = urllib.request.Request(f"{server.url}hpc/{hpc}/code/?folder=/home/hpcuser",
                                     headers={"Authorization": f"token {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status if b"workbench" in r.read() else -1
    except urllib.error.HTTPError as e:
        return e.code


def test_10_sigkill_restarts_find_the_same_job_and_the_ide_each_time(
        tmp_path, sandbox_cluster, clean_slurm):
    server = Server(tmp_path, {"gemini": dict(sandbox_cluster, job_name="kill-hpc-gemini")})
    server.start()
    try:
        code, reply = server.call("POST", "launch", {"hpc": "gemini", "mem": "1G"})
        assert (code, reply["status"]) == (200, "running"), reply
        job_id = reply["jobId"]
        assert workbench(server) == 200
        for cycle in range(10):
            server.kill()
            server.start()
            code, status = server.call("GET", "cluster-status")
            assert (status["gemini"]["status"], status["gemini"]["jobId"]) == (
                "running", job_id), (cycle, status)
            assert workbench(server) == 200, cycle  # the IDE URL works again
            if cycle % 5 == 4:
                code, again = server.call("POST", "launch", {"hpc": "gemini"})
                assert (again["status"], again["jobId"]) == ("connected", job_id)
            assert [j["id"] for j in slurm_jobs()] == [job_id], cycle  # no orphan, no duplicate
    finally:
        server.stop()


async def test_sshd_down_is_unknown_and_refuses_launch_then_recovers(api, jp_fetch, clean_slurm,
                                                                    caplog):
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert code == 200
    stop_sshd()
    try:
        code, status = await api("GET", "cluster-status", params={"refresh": "true"})
        # No session there: unknown. The running session: as last known, stale, never idle.
        assert status["gemini"]["status"] == "unknown", status["gemini"]
        assert (status["echo1"]["status"], status["echo1"]["jobId"]) == ("running",
                                                                         reply["jobId"])
        assert status["echo1"]["stale"] is True
        for hpc in ("gemini", "echo1"):
            assert "2222" in status[hpc]["error"], status[hpc]
        code, refused = await api("POST", "launch", body={"hpc": "gemini", "mem": "1G"})
        assert code == 502 and refused["details"]["type"] == "SshError"
        assert [j["id"] for j in slurm_jobs()] == [reply["jobId"]]  # nothing submitted
        r = await jp_fetch("hpc", "echo1", "code", "small", raise_error=False)
        assert r.code == 502  # the IDE cannot be reached: said so, not hung
        # The server's log says the status the browser got.
        said = [m.getMessage() for m in caplog.records
                if "/hpc/echo1/code/small ->" in m.getMessage()]
        assert said and all(" -> 502 " in m for m in said), said
    finally:
        start_sshd()
    await asyncio.sleep(1.1)  # past the refresh coalescing window
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert status["gemini"] == {"status": "idle"}
    assert status["echo1"]["status"] == "running"
    r = await jp_fetch("hpc", "echo1", "code", "small", raise_error=False)
    assert r.code == 200
    code, reply = await api("POST", "launch", body={"hpc": "gemini", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running")


async def test_slurmctld_down_is_unknown_and_refuses_launch_then_recovers(api, clean_slurm):
    pid = int(pathlib.Path("/run/slurm/slurmctld.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.1)
    try:
        # squeue waits for the controller a while: until it gives up, the cluster reads
        # "not answered yet"; then SLURM's error. Unknown all along, never idle.
        deadline = time.monotonic() + 90
        while True:
            code, status = await api("GET", "cluster-status", params={"refresh": "true"},
                                     request_timeout=120)
            assert status["gemini"]["status"] == "unknown", status["gemini"]
            if "squeue" in status["gemini"]["error"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.1)
        assert "squeue" in status["gemini"]["error"]
        code, refused = await api("POST", "launch", body={"hpc": "gemini", "mem": "1G"},
                                  request_timeout=120)
        assert code == 500 and "squeue" in refused["error"]
        assert refused["details"]["type"] == "JobError"
    finally:
        subprocess.run(["/usr/sbin/slurmctld"], check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(1.1)
        code, status = await api("GET", "cluster-status", params={"refresh": "true"})
        if status["gemini"]["status"] == "idle":
            break
    assert status["gemini"] == {"status": "idle"}
    assert slurm_jobs() == []  # the refused launch submitted nothing
    code, reply = await api("POST", "launch", body={"hpc": "gemini", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply


async def test_ide_killed_on_the_node_is_seen_and_a_launch_brings_it_back(
        api, jp_fetch, manager, clean_slurm):
    code, first = await api("POST", "launch", body={"hpc": "gemini", "mem": "1G"})
    assert code == 200
    # The IDE dies (out of memory, a crash): its whole process group.
    conn = manager.session("gemini").connection
    out = subprocess.run(["pgrep", "-u", "hpcuser", "-f", f"0.0.0.0:{conn.port}"],
                         capture_output=True, text=True).stdout.split()
    assert out
    for pid in out:
        os.killpg(os.getpgid(int(pid)), signal.SIGKILL)
    while slurm_jobs():
        await asyncio.sleep(0.25)
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    ended = status["gemini"].pop("lastEnd")
    assert status["gemini"] == {"status": "idle"}  # the job ended with its IDE
    assert ended["jobId"] == first["jobId"] and ended["reason"] in ("failed", "slurm"), ended
    r = await jp_fetch("hpc", "gemini", "code/", raise_error=False)
    assert r.code == 404 and b"No VS Code session" in r.body
    code, second = await api("POST", "launch", body={"hpc": "gemini", "mem": "1G"})
    assert (code, second["status"]) == (200, "running")
    assert second["jobId"] != first["jobId"]
    r = await jp_fetch("hpc", "gemini", "code/", params={"folder": "/home/hpcuser"},
                       raise_error=False)
    assert r.code == 200 and b"workbench" in r.body


async def test_an_unwritable_state_file_is_a_clear_error_and_the_record_stays(
        api, manager, tmp_path, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert code == 200
    # A second running session, launched last: gemini is the active cluster, so switching to
    # echo1 has to write the record (a switch to the active cluster writes nothing).
    code, other = await api("POST", "launch", body={"hpc": "gemini", "mem": "1G"})
    assert (code, other["status"]) == (200, "running"), other
    held = sorted([reply["jobId"], other["jobId"]])
    state = pathlib.Path(manager.store.path)
    before = state.read_bytes()
    assert json.loads(before)["activeHpc"] == "gemini"
    subprocess.run(["chattr", "+i", str(state.parent)], check=True)
    try:
        code, refused = await api("POST", "launch", body={"hpc": "echo2", "mem": "1G"})
        assert code == 500
        assert "Cannot save the session record" in refused["error"]
        assert str(state) in refused["error"]
        assert refused["details"]["type"] == "StateError"
        assert sorted(j["id"] for j in slurm_jobs()) == held  # nothing submitted
        code, refused = await api("POST", "switch", "echo1")
        assert code == 500, refused
        assert "Cannot save the session record" in refused["error"]
        assert str(state) in refused["error"]
        assert refused["details"]["type"] == "StateError"
        code, status = await api("GET", "status")
        assert status["activeHpc"] == "gemini"  # the refused switch changed nothing
        assert state.read_bytes() == before  # the previous record, whole
        assert json.loads(before)["sessions"]["echo1"]["job_id"] == reply["jobId"]
    finally:
        subprocess.run(["chattr", "-i", str(state.parent)], check=True)
    code, ok = await api("POST", "launch", body={"hpc": "echo2", "mem": "1G"})
    assert (code, ok["status"]) == (200, "running")
