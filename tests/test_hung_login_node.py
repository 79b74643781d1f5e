"""What hangs on a login node: one that takes the TCP connection and never speaks SSH (its
cluster reads unknown with an error within ssh_timeout, and no other cluster waits for it), and
a command that never ends (bounded by command_timeout, exit status included)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from conftest import whoami


@pytest.fixture(scope="module")
def hung_login_node():
    """A port that completes the TCP handshake (the kernel's backlog) and never sends an SSH
    banner."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


@pytest.fixture
def cluster_settings(cluster_settings: dict, hung_login_node: int, cluster_tmp) -> dict:
    hung = dict(cluster_settings["echo1"], job_name="test-hpc-hung", port=hung_login_node)
    # squeue answers, closes its output, and goes on running: the exit status never comes.
    lingering = cluster_tmp / "squeue-lingers"
    lingering.write_text('#!/bin/bash\nsqueue "$@"\nexec >&- 2>&-\nsleep 30\n')
    lingering.chmod(0o755)
    lingers = dict(cluster_settings["echo1"], job_name="test-hpc-lingers",
                   squeue=str(lingering))
    return {"echo1": cluster_settings["echo1"], "gemini": cluster_settings["gemini"],
            "hung": hung, "lingers": lingers}


@pytest.fixture
def hpc_config(hpc_config: dict) -> dict:
    return {**hpc_config, "ssh_timeout": 15.0, "status_wait": 2.0, "command_timeout": 4.0}


async def test_a_command_whose_exit_status_never_comes_is_bounded(api, manager, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "lingers", "mem": "1G"})
    assert code == 502 and "took longer than 4 s" in reply["error"], reply
    assert manager.commands["sbatch"] == 0  # the queue could not be read: nothing submitted
    # Status asks on its own: "still asking" until the bound passes, then the error; unknown
    # all along.
    for _ in range(20):
        code, status = await api("GET", "cluster-status")
        assert status["lingers"]["status"] == "unknown", status["lingers"]
        if "took longer" in status["lingers"]["error"]:
            break
        await asyncio.sleep(1)
    assert "took longer than 4 s" in status["lingers"]["error"]


async def test_a_hung_login_node_is_unknown_in_time_and_slows_no_other_cluster(
        api, jp_fetch, jp_base_url, manager, clean_slurm):
    # Several callers wait for the hung node at once: a launch, a switch, a status query.
    hung = [asyncio.ensure_future(api("POST", "launch", body={"hpc": "hung", "mem": "1G"})),
            asyncio.ensure_future(api("POST", "switch", "hung"))]
    code, first = await api("GET", "cluster-status", params={"refresh": "true"})
    # Answered without the hung node: the others fresh, the hung one unknown, still being asked.
    assert first["hung"]["status"] == "unknown" and "not answered yet" in first["hung"]["error"]
    assert first["echo1"] == {"status": "idle"}
    # Meanwhile another cluster launches, opens its IDE and stops, while the hung node still
    # has not answered (its bound, ssh_timeout, is 15 s).
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    assert (await whoami(jp_fetch, "echo1"))[1]["jobId"] == reply["jobId"]
    code, s = await api("GET", "status")
    assert s["sessions"]["echo1"]["status"] == "running"
    assert not any(task.done() for task in hung), "the other cluster waited for the hung one"
    # The hung node's own callers get its error once the bound passes.
    (lcode, launched), (scode, switched) = await asyncio.gather(*hung)
    assert lcode == 502 and "did not start SSH within 15 s" in launched["error"], launched
    assert (scode, switched["error"]) == (400, "No running session on hung")
    code, later = await api("GET", "cluster-status")
    assert later["hung"]["status"] == "unknown"
    assert "did not start SSH within 15 s" in later["hung"]["error"]
    assert later["echo1"]["status"] == "running"
    assert manager.commands["sbatch"] == 1


async def test_status_answers_from_memory_while_a_login_node_hangs(api, manager):
    # status never waits for a cluster: the hung node's sinfo is asked in the background
    # (partitionsPending), and the healthy clusters' partitions come with later calls while
    # the hung node's connection attempt (bounded by ssh_timeout, 15 s) still runs.
    code, first = await api("GET", "status")
    assert code == 200
    hung = first["config"]["clusterOptions"]["hung"]
    assert (hung["partitions"], hung["partitionsPending"]) == (None, True)
    for _ in range(100):
        code, status = await api("GET", "status")
        options = status["config"]["clusterOptions"]
        if options["echo1"]["partitions"] is not None:
            break
        await asyncio.sleep(0.1)
    assert [p["name"] for p in options["echo1"]["partitions"]] == ["debug", "gpu", "long"]
    assert options["hung"]["partitionsPending"] is True
    assert manager.clusters["hung"].sinfo_cache.is_asking()  # it has not answered yet
    assert status["sessions"]["hung"] == {"status": "idle"}
