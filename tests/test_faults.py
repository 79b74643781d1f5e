"""Faults around a running session: the login node's sshd restarted, the job cancelled behind
our back, the job reaching its walltime. All against the real sandbox."""

from __future__ import annotations

import asyncio
import subprocess
import time

from jupyter_process import SANDBOX, slurm_jobs


async def launch(api, hpc: str, **body) -> dict:
    code, reply = await api("POST", "launch", body={"hpc": hpc, "mem": "1G", **body})
    assert (code, reply["status"]) == (200, "running"), reply
    return reply


def restart_sshd() -> None:
    """What an admin's `systemctl restart ssh` plus a dropped network does to us: the listener
    and every connection it served go away, then a new listener comes up."""
    pid = int((SANDBOX / "sshd.pid").read_text())
    subprocess.run(["kill", str(pid)], check=True)
    subprocess.run(["pkill", "-f", "sshd: hpcuser"], check=False)
    for _ in range(50):
        if subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode:
            break
        time.sleep(0.1)
    subprocess.run(["/usr/sbin/sshd", "-f", str(SANDBOX / "sshd_config"), "-E",
                    str(SANDBOX / "sshd.log")], check=True)


async def test_sshd_restart_the_ide_works_again_through_the_same_url(
        api, jp_fetch, manager, clean_slurm):
    await launch(api, "gemini")

    async def workbench() -> int:
        r = await jp_fetch("hpc", "code/", params={"folder": "/home/hpcuser"},
                           raise_error=False, follow_redirects=False)
        return r.code

    assert await workbench() == 200
    old = manager.clusters["gemini"].ssh.current()
    restart_sshd()
    # No user action: the next requests bring the tunnel back by themselves within seconds.
    codes = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        codes.append(await workbench())
        if codes[-1] == 200:
            break
        await asyncio.sleep(0.5)
    assert codes[-1] == 200, codes
    assert manager.clusters["gemini"].ssh.current() not in (None, old)
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert status["gemini"]["status"] == "running"


async def test_job_cancelled_behind_our_back_is_idle_and_the_url_says_so(
        api, jp_fetch, clean_slurm):
    reply = await launch(api, "echo1")
    r = await jp_fetch("hpc", "echo1", "code", "small", raise_error=False)
    assert r.code == 200
    subprocess.run(["scancel", reply["jobId"]], check=True)
    while slurm_jobs():
        await asyncio.sleep(0.25)
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    ended = status["echo1"].pop("lastEnd")
    assert status["echo1"] == {"status": "idle"}
    assert (ended["jobId"], ended["reason"]) == (reply["jobId"], "slurm")  # not by us
    r = await jp_fetch("hpc", "echo1", "code", "small", raise_error=False)
    assert r.code == 404 and b"No VS Code session is running on echo1" in r.body
    code, s = await api("GET", "status")
    assert s["sessions"]["echo1"] == {"status": "idle", "lastEnd": ended}


async def test_a_job_reaching_its_walltime_is_idle_and_the_url_says_so(
        api, jp_fetch, manager, clean_slurm):
    reply = await launch(api, "echo1", time="00:01:00")
    code, status = await api("GET", "cluster-status")
    assert 0 <= status["echo1"]["timeLeftSeconds"] <= 60
    deadline = time.monotonic() + 180
    while slurm_jobs() and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert slurm_jobs() == [], "SLURM did not end the job at its time limit"
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    ended = status["echo1"].pop("lastEnd")
    assert status["echo1"] == {"status": "idle"}
    assert (ended["jobId"], ended["reason"]) == (reply["jobId"], "walltime")
    assert manager.session("echo1") is None
    r = await jp_fetch("hpc", "echo1", "code", "small", raise_error=False)
    assert r.code == 404 and b"No VS Code session" in r.body
    assert reply["jobId"]
