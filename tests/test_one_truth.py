"""One truth per cluster: status, cluster-status and the proxy agree about a session while SLURM
is slow, stopped or gone, and never show a running job as idle; a launch whose sbatch times
out queues one job; a state SLURM has that we never saw is shown as it is."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import subprocess
import time

import pytest
from test_slow_scheduler import wrapper

from conftest import whoami
from jupyter_process import MFA_USER, SANDBOX_USER, slurm_jobs, squeue_of

SLOW_FLAG = "squeue-is-slow"


@pytest.fixture
def cluster_settings(cluster_settings: dict, cluster_tmp: pathlib.Path):
    echo = dict(cluster_settings["echo1"])
    echo.pop("job_name")
    flag = cluster_tmp / SLOW_FLAG
    # squeue that turns slow (9 s, past status_wait) once the test says so.
    slow = wrapper(cluster_tmp, "squeue-turns-slow",
                   f'[ -e {flag} ] && sleep 9\nexec squeue "$@"\n')
    # sbatch that answers after command_timeout (3 s here), and then queues the job all the same.
    late = wrapper(cluster_tmp, "sbatch-late",
                   'script=$(cat); sleep 4; printf "%s\\n" "$script" | sbatch "$@"\n')
    # squeue on a SLURM with a state we never saw (the held job's PENDING, renamed).
    future = wrapper(cluster_tmp, "squeue-future-state",
                     'squeue "$@" | sed "s/|PENDING|/|HELD_BY_A_NEWER_SLURM|/"\n')
    return {
        "echo1": cluster_settings["echo1"],
        "turns": dict(echo, job_name="test-hpc-turns", squeue=slow),
        "late": dict(echo, job_name="test-hpc-late", sbatch=late),
        "future": dict(echo, job_name="test-hpc-future", squeue=future),
    }


@pytest.fixture
def hpc_config() -> dict:
    return {"launch_timeout": 60.0, "poll_interval": 0.5, "use_system_known_hosts": False,
            "status_wait": 2.0, "command_timeout": 3.0}


@pytest.fixture
def slow_flag(cluster_tmp: pathlib.Path):
    flag = cluster_tmp / SLOW_FLAG
    flag.unlink(missing_ok=True)
    yield flag
    flag.unlink(missing_ok=True)


async def agree_running(api, jp_fetch, hpc: str, job_id: str, url: str, *,
                        refresh: bool) -> dict:
    """cluster-status, status and the proxy all say job_id runs (cluster-status's entry is
    returned, for what it says about freshness)."""
    params = {"refresh": "true"} if refresh else None
    code, cs = await api("GET", "cluster-status", params=params)
    entry = cs[hpc]
    assert code == 200 and (entry["status"], entry["jobId"], entry.get("url")) == (
        "running", job_id, url), entry
    code, s = await api("GET", "status")
    session = s["sessions"][hpc]
    assert (session["status"], session["jobId"], session.get("url")) == ("running", job_id,
                                                                         url), session
    code, me = await whoami(jp_fetch, hpc)
    assert code == 200 and me["jobId"] == job_id
    return entry


async def test_a_squeue_slower_than_status_wait_right_after_a_launch(
        api, jp_fetch, jp_base_url, slow_flag, clean_slurm):
    code, first = await api("GET", "cluster-status", params={"refresh": "true"})
    assert first["turns"] == {"status": "idle"}
    code, reply = await api("POST", "launch", body={"hpc": "turns", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    url = f"{jp_base_url}hpc/turns/code/"
    slow_flag.touch()  # from now on squeue takes 9 s; status_wait is 2 s
    for refresh in (True, False, True):
        entry = await agree_running(api, jp_fetch, "turns", reply["jobId"], url,
                                    refresh=refresh)
        assert entry["stale"] is True and "not answered yet" in entry["error"], entry
    slow_flag.unlink()
    # Once squeue answers again, the same session, fresh.
    for _ in range(60):
        code, cs = await api("GET", "cluster-status", params={"refresh": "true"})
        if not cs["turns"].get("stale"):
            break
        await asyncio.sleep(1)
    assert "stale" not in cs["turns"] and "error" not in cs["turns"], cs["turns"]
    await agree_running(api, jp_fetch, "turns", reply["jobId"], url, refresh=False)


@contextlib.contextmanager
def slurmctld_stopped():
    """slurmctld hung (SIGSTOP): squeue waits for it until its own timeout."""
    pid = int(pathlib.Path("/run/slurm/slurmctld.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_slurmctld_stopped_then_killed_never_shows_the_running_session_idle(
        api, jp_fetch, jp_base_url, clean_slurm):
    code, first = await api("GET", "cluster-status", params={"refresh": "true"})
    assert first["echo1"] == {"status": "idle"}
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    url = f"{jp_base_url}hpc/echo1/code/"
    job = reply["jobId"]
    # (SLURM saves its jobs to disk in the background: a SIGKILL before that loses the job, so
    # wait until the saved state is newer than the launch.)
    launched = time.time()
    saved = pathlib.Path("/var/lib/slurm/slurmctld/job_state")
    for _ in range(300):
        if saved.stat().st_mtime > launched:
            break
        await asyncio.sleep(0.1)
    with slurmctld_stopped():
        for refresh in (True, False, True):
            entry = await agree_running(api, jp_fetch, "echo1", job, url, refresh=refresh)
            assert entry["stale"] is True and entry["error"], entry
    # Killed: squeue fails at once (connection refused); still the same running session.
    pid = int(pathlib.Path("/run/slurm/slurmctld.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    try:
        stale = None
        for _ in range(40):
            await asyncio.sleep(1.1)  # (past refresh_min_interval: each is a new squeue)
            stale = await agree_running(api, jp_fetch, "echo1", job, url, refresh=True)
            if "not answered yet" not in stale.get("error", ""):
                break
        assert stale is not None and stale["stale"] is True, stale
        # The failure's own words: SLURM's, or the bound of a squeue that keeps retrying.
        assert ("squeue on echo1 failed" in stale["error"]
                or "took longer than 3 s" in stale["error"]), stale
    finally:
        subprocess.run(["/usr/sbin/slurmctld"], check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(1.1)
        code, cs = await api("GET", "cluster-status", params={"refresh": "true"})
        if not cs["echo1"].get("stale"):
            break
    assert (cs["echo1"]["status"], cs["echo1"]["jobId"]) == ("running", job), cs["echo1"]
    assert "stale" not in cs["echo1"]


async def test_an_sbatch_past_command_timeout_queues_one_job_and_the_retry_connects(
        api, jp_base_url, clean_slurm):
    # sbatch answers after command_timeout and queues its job all the same: the launch looks
    # for its token (the job's comment) before it calls anything failed.
    code, first = await api("POST", "launch", body={"hpc": "late", "mem": "1G"})
    jobs = slurm_jobs()
    assert [j["name"] for j in jobs] == ["test-hpc-late"], jobs
    job = jobs[0]["id"]
    assert squeue_of(job, "%k").startswith("jupyter-hpc-manager:")
    if code == 200:
        assert (first["status"], first["jobId"]) == ("running", job), first
    else:  # (only if the job showed up after the look's bound)
        assert code == 500 and "try again" in first["error"], first
    code, retry = await api("POST", "launch", body={"hpc": "late", "mem": "1G"})
    assert (code, retry["status"], retry["jobId"]) == (200, "connected", job), retry
    assert [j["id"] for j in slurm_jobs()] == [job]  # exactly one job


async def test_a_held_job_in_a_state_we_never_saw_is_shown_as_it_is(
        api, filled_node, clean_slurm, manager):
    manager.clusters["future"].settings.launch_timeout = 3.0
    code, reply = await api("POST", "launch", body={"hpc": "future", "mem": "1G"})
    assert (code, reply["status"]) == (200, "pending"), reply
    job = reply["jobId"]
    subprocess.run(["runuser", "-u", SANDBOX_USER, "--", "scontrol", "hold", job], check=True)
    code, cs = await api("GET", "cluster-status", params={"refresh": "true"})
    entry = cs["future"]
    # The squeue of this cluster names the state in a way we never saw: the job is alive
    # (pending, never idle or unknown), the state shown as SLURM printed it, with its reason.
    assert (entry["status"], entry["jobId"], entry["slurmState"]) == (
        "pending", job, "HELD_BY_A_NEWER_SLURM"), entry
    assert entry["reason"] == "JobHeldUser" and "held by you" in entry["reasonText"]
    assert "error" not in entry and "stale" not in entry
    code, s = await api("GET", "status")
    assert (s["sessions"]["future"]["status"], s["sessions"]["future"]["jobId"]) == (
        "pending", job)
    # The other clusters answer as ever, and a second launch there finds the held job.
    assert cs["echo1"] == {"status": "idle"}
    code, again = await api("POST", "launch", body={"hpc": "future", "mem": "1G"})
    assert (code, again["status"], again["jobId"]) == (200, "pending", job), again
    assert [j["id"] for j in slurm_jobs()] == [job]
    assert [j["name"] for j in slurm_jobs(MFA_USER)] == ["filler"]  # another user's job


async def test_a_stop_that_times_out_while_slurmctld_hangs_still_ends_as_the_users(
        api, clean_slurm):
    """Stop (cancel) while slurmctld hangs: the stop fails within command_timeout and the
    session still runs (never idle). The scancel was queued all the same: when slurmctld comes
    back the job ends, and it ended because the user stopped it, not "outside this server"."""
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    job = reply["jobId"]
    with slurmctld_stopped():
        code, stopped = await api("POST", "stop", "echo1", body={"cancelJob": True})
        assert code >= 500 and "echo1" in stopped["error"], (code, stopped)
        code, s = await api("GET", "status")
        entry = s["sessions"]["echo1"]
        assert (entry["status"], entry["jobId"]) == ("running", job), entry
    deadline = time.monotonic() + 60
    while slurm_jobs() and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert slurm_jobs() == [], "the queued scancel did not cancel the job"
    for _ in range(60):
        code, cs = await api("GET", "cluster-status", params={"refresh": "true"})
        if cs["echo1"]["status"] == "idle":
            break
        await asyncio.sleep(1.1)
    code, s = await api("GET", "status")
    entry = s["sessions"]["echo1"]
    assert entry["status"] == "idle" and entry["lastEnd"]["jobId"] == job, entry
    assert entry["lastEnd"]["reason"] == "stopped", entry["lastEnd"]
