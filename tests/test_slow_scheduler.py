"""A busy cluster, made on the sandbox: squeue that takes seconds (before or after it queries),
sbatch that takes 3 s, squeue that fails now and then with a busy controller's message.
Launches and stops are polled the way the sidebar polls them (cluster-status?refresh=true every
0.5 s). (A hung login node: test_hung_login_node.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

import pytest

from conftest import step_clock, whoami
from jupyter_process import slurm_jobs

BUSY = "slurm_load_jobs error: Socket timed out on send/recv operation"


def wrapper(folder: pathlib.Path, name: str, body: str) -> str:
    """A command on the cluster (the sandbox's login node) standing in for a SLURM one."""
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def cluster_settings(cluster_settings: dict, cluster_tmp: pathlib.Path):
    base = dict(cluster_settings["echo1"])
    base.pop("job_name")
    slow_after = wrapper(cluster_tmp, "squeue-slow-after",
                         'out=$(squeue "$@"); rc=$?; sleep 2; printf "%s\\n" "$out"; exit $rc\n')
    slow_before = wrapper(cluster_tmp, "squeue-slow-before", 'sleep 2; exec squeue "$@"\n')
    # Every other call fails the way a busy slurmctld answers; the count lives on the cluster.
    flaky = wrapper(cluster_tmp, "squeue-flaky", f"""
count={cluster_tmp}/flaky-count
n=$(cat "$count" 2>/dev/null || echo 0); echo $((n + 1)) > "$count"
if [ $((n % 2)) = 1 ]; then echo "{BUSY}" >&2; exit 1; fi
exec squeue "$@"
""")
    slow_sbatch = wrapper(cluster_tmp, "sbatch-slow", 'sleep 3; exec sbatch "$@"\n')
    slow_sinfo = wrapper(cluster_tmp, "sinfo-slow", 'sleep 3; exec sinfo "$@"\n')
    # sinfo that fails on its second call (a busy controller), and answers again after.
    flaky_sinfo = wrapper(cluster_tmp, "sinfo-flaky", f"""
count={cluster_tmp}/flaky-sinfo-count
n=$(cat "$count" 2>/dev/null || echo 0); echo $((n + 1)) > "$count"
if [ "$n" = 1 ]; then echo "{BUSY}" >&2; exit 1; fi
exec sinfo "$@"
""")
    return {
        **cluster_settings,
        "slowafter": dict(base, job_name="test-hpc-slowafter", squeue=slow_after),
        "slowbefore": dict(base, job_name="test-hpc-slowbefore", squeue=slow_before),
        "flaky": dict(base, job_name="test-hpc-flaky", squeue=flaky),
        "slowsubmit": dict(base, job_name="test-hpc-slowsubmit", sbatch=slow_sbatch),
        "slowsinfo": dict(base, job_name="test-hpc-slowsinfo", sinfo=slow_sinfo),
        "flakysinfo": dict(base, job_name="test-hpc-flakysinfo", sinfo=flaky_sinfo),
    }


@contextlib.asynccontextmanager
async def polling(api, seen: list, every: float = 0.5):
    """The sidebar during a launch: cluster-status?refresh=true every half second."""

    async def poll() -> None:
        while True:
            code, status = await api("GET", "cluster-status", params={"refresh": "true"})
            assert code == 200, status
            seen.append(status)
            await asyncio.sleep(every)

    task = asyncio.ensure_future(poll())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert seen, "the poller never got an answer"


async def assert_session_runs(api, jp_fetch, hpc: str, job_id: str, url: str) -> None:
    """status, cluster-status and the IDE all agree that job_id runs, and it is the only job."""
    code, s = await api("GET", "status")
    assert (s["sessions"][hpc]["status"], s["sessions"][hpc]["jobId"]) == ("running", job_id)
    code, cs = await api("GET", "cluster-status", params={"refresh": "true"})
    assert (cs[hpc]["status"], cs[hpc]["jobId"], cs[hpc].get("url")) == ("running", job_id, url)
    code, me = await whoami(jp_fetch, hpc)
    assert code == 200 and me["jobId"] == job_id
    assert [j["id"] for j in slurm_jobs()] == [job_id]  # exactly one job


async def assert_session_gone(api, jp_fetch, hpc: str, job_id: str) -> None:
    """After a stop with cancelJob: idle, the stop said as how the session ended."""
    assert slurm_jobs() == []
    ended = {"jobId": job_id, "reason": "stopped"}
    code, s = await api("GET", "status")
    entry = s["sessions"][hpc]
    assert entry == {"status": "idle", "lastEnd": {**ended, "at": entry["lastEnd"]["at"]}}
    code, cs = await api("GET", "cluster-status", params={"refresh": "true"})
    assert cs[hpc] == entry
    code, _ = await whoami(jp_fetch, hpc)
    assert code == 404


@pytest.mark.parametrize("hpc", ["slowafter", "slowbefore"])
async def test_launch_and_stop_while_the_panel_polls_a_slow_squeue(
        api, jp_fetch, jp_base_url, hpc, clean_slurm):
    """squeue takes 2 s (its answer printed before or after the wait); the panel's polls start
    at several moments of the launch. Every launch runs and opens, with one job; every stop
    with cancelJob ends it, and nothing polled in between undoes either."""
    url = f"{jp_base_url}hpc/{hpc}/code/"
    for offset in (0.4, 1.2, 1.9):
        seen: list = []
        launch = asyncio.ensure_future(api("POST", "launch", body={"hpc": hpc, "mem": "1G"}))
        await asyncio.sleep(offset)
        async with polling(api, seen):
            code, reply = await launch
        assert (code, reply["status"], reply.get("url")) == (200, "running", url), (offset, reply)
        await assert_session_runs(api, jp_fetch, hpc, reply["jobId"], url)

        seen = []
        stop = asyncio.ensure_future(api("POST", "stop", hpc, body={"cancelJob": True}))
        await asyncio.sleep(offset)
        async with polling(api, seen):
            code, stopped = await stop
        assert (code, stopped["cancelledJobs"]) == (200, [reply["jobId"]]), stopped
        await assert_session_gone(api, jp_fetch, hpc, reply["jobId"])
        # What the polls showed was never a contradiction: no url for an idle cluster.
        for status in seen:
            assert status[hpc]["status"] in ("idle", "pending", "running"), status[hpc]
            if status[hpc]["status"] != "running":
                assert "url" not in status[hpc]


async def test_a_slow_sbatch_while_polling_makes_one_job_that_opens(
        api, jp_fetch, jp_base_url, clean_slurm):
    seen: list = []
    launch = asyncio.ensure_future(api("POST", "launch", body={"hpc": "slowsubmit",
                                                                "mem": "1G"}))
    async with polling(api, seen):
        code, reply = await launch
    assert (code, reply["status"]) == (200, "running"), reply
    await assert_session_runs(api, jp_fetch, "slowsubmit", reply["jobId"],
                              f"{jp_base_url}hpc/slowsubmit/code/")
    # Polls while sbatch ran saw the cluster idle, then the job; never an error.
    assert all(s["slowsubmit"]["status"] != "unknown" for s in seen)


async def test_a_squeue_that_fails_now_and_then_neither_fails_a_launch_nor_ends_a_session(
        api, jp_fetch, jp_base_url, cluster_tmp, clean_slurm):
    count = cluster_tmp / "flaky-count"
    count.write_text("1\n")  # the launch's first look at the queue fails
    count.chmod(0o666)
    code, reply = await api("POST", "launch", body={"hpc": "flaky", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    url = f"{jp_base_url}hpc/flaky/code/"
    failures = 0
    for _ in range(6):
        await asyncio.sleep(1.1)  # past refresh_min_interval: each is a new squeue
        code, cs = await api("GET", "cluster-status", params={"refresh": "true"})
        entry = cs["flaky"]
        # A failed squeue shows the held session as last known, stale, with SLURM's own words;
        # never idle, never without its job.
        if entry.get("stale"):
            failures += 1
            assert BUSY in entry["error"]
        else:
            assert "error" not in entry
        assert (entry["status"], entry["jobId"], entry["url"]) == ("running", reply["jobId"],
                                                                   url)
        # Whatever squeue said this time, the session stands and the IDE answers.
        code, s = await api("GET", "status")
        assert s["sessions"]["flaky"]["status"] == "running"
        assert (await whoami(jp_fetch, "flaky"))[0] == 200
    assert failures >= 2  # the failures really happened
    assert int(count.read_text()) >= 8
    assert [j["id"] for j in slurm_jobs()] == [reply["jobId"]]
    # A stop that meets a failing squeue still cancels the job it knows.
    code, stopped = await api("POST", "stop", "flaky", body={"cancelJob": True})
    assert (code, stopped["cancelledJobs"]) == (200, [reply["jobId"]]), stopped
    assert slurm_jobs() == []


@pytest.mark.parametrize("hpc_config", [{"launch_timeout": 60.0, "poll_interval": 0.5,
                                         "use_system_known_hosts": False, "status_wait": 1.0}])
async def test_a_slow_or_failing_sinfo_holds_up_nothing_and_is_not_remembered(
        api, manager, cluster_tmp, clean_slurm):
    clock = step_clock(manager)
    (cluster_tmp / "flaky-sinfo-count").unlink(missing_ok=True)  # (its second call fails)
    # status answers from memory: the first call knows no partitions yet and starts asking
    # (partitionsPending); later calls have them as each sinfo answers, the fast ones first.
    code, status = await api("GET", "status")
    options = status["config"]["clusterOptions"]
    assert options["slowsinfo"]["partitions"] is None
    assert options["slowsinfo"]["partitionsPending"] is True
    assert "still asking" in options["slowsinfo"]["partitionsError"]
    for _ in range(100):
        await asyncio.sleep(0.1)
        code, status = await api("GET", "status")
        options = status["config"]["clusterOptions"]
        if options["echo1"]["partitions"] is not None:
            break
    assert [p["name"] for p in options["echo1"]["partitions"]] == ["debug", "gpu", "long"]
    assert options["echo1"]["partitionsPending"] is False
    assert options["slowsinfo"]["partitions"] is None  # (its sinfo takes 3 s)
    assert options["slowsinfo"]["partitionsPending"] is True
    await asyncio.sleep(3)
    code, status = await api("GET", "status")
    assert status["config"]["clusterOptions"]["slowsinfo"]["partitions"] is not None
    # Its launch waits for sinfo (a launch is checked) and runs.
    code, reply = await api("POST", "launch", body={"hpc": "slowsinfo", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply

    # sinfo fails once (its second call): the last good answer stands beside SLURM's words,
    # and the next refresh asks again (a failure is not cached).
    async def settled(refresh: bool) -> dict:
        code, status = await api("GET", "status", params={"refresh": str(refresh).lower()})
        for _ in range(100):
            if not status["config"]["clusterOptions"]["flakysinfo"]["partitionsPending"]:
                break
            await asyncio.sleep(0.1)
            code, status = await api("GET", "status")
        return status["config"]["clusterOptions"]["flakysinfo"]

    first = await settled(refresh=False)
    assert first["partitions"] is not None and "partitionsError" not in first
    clock.now += 2  # (past refresh_min_interval: a refresh asks again)
    failed = await settled(refresh=True)
    assert BUSY in failed["partitionsError"]
    assert failed["partitions"] == first["partitions"]
    clock.now += 2
    again = await settled(refresh=True)
    assert again["partitions"] == first["partitions"] and "partitionsError" not in again
    assert (cluster_tmp / "flaky-sinfo-count").read_text().strip() == "3"
