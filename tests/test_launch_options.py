"""The launch a real HPC user makes, against the sandbox's SLURM (partitions debug: default,
MaxTime 12:00:00; gpu: 2 GPUs of type tesla; long: MaxTime 2-00:00:00; one node, 16 CPUs):
what the cluster offers read from sinfo, limits checked before anything is submitted, GPUs,
account, QOS, folder and presets reaching the job, and a pending job's estimated start."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conftest import settled_status, step_clock, whoami
from jupyter_process import home_file, slurm_jobs, squeue_of


@pytest.fixture
def cluster_settings(cluster_settings: dict) -> dict:
    echo = dict(cluster_settings["echo1"], partition="")
    return {
        "echo1": dict(echo, presets={
            "gpu-small": {"partition": "gpu", "gpus": "1", "cpus": "2", "mem": "1G",
                          "time": "00:30:00"},
            "long-day": {"partition": "long", "time": "1-12:00:00", "mem": "2G"}}),
        "echo2": cluster_settings["echo2"],
        # SLURM without accounting here: sacctmgr fails (and says so in the log).
        "noacct": dict(echo, job_name="test-hpc-noacct", sacctmgr="/bin/false"),
        # A site whose sinfo fails (or is not installed): the plain fields still launch.
        "nosinfo": dict(echo, job_name="test-hpc-nosinfo", sinfo="/bin/false"),
    }


async def launch(api, **body):
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G", **body})
    return code, reply


async def test_what_the_cluster_offers_comes_from_sinfo(api, manager, caplog):
    caplog.set_level(logging.INFO)
    clock = step_clock(manager)
    status = await settled_status(api)
    options = status["config"]["clusterOptions"]
    # A failing sacctmgr: accounts and QOS are typed, not chosen, and the admin reads why.
    assert options["noacct"]["partitions"] is not None
    assert (options["noacct"]["accounts"], options["noacct"]["qos"]) == (None, None)
    assert "sacctmgr on noacct exited 1" in caplog.text
    parts = {p["name"]: p for p in options["echo1"]["partitions"]}
    assert list(parts) == ["debug", "gpu", "long"]
    assert parts["debug"] == {"name": "debug", "default": True, "maxTime": "12:00:00",
                              "maxTimeSeconds": 43200, "maxCpusPerNode": 16,
                              "maxMemPerNode": "200000M", "maxMemPerNodeMb": 200000,
                              "gpus": {}, "state": "up"}
    assert parts["gpu"]["gpus"] == {"tesla": 2} and not parts["gpu"]["default"]
    assert parts["long"]["maxTime"] == "2-00:00:00"
    assert options["echo1"]["presets"]["gpu-small"]["partition"] == "gpu"
    # The user's accounts and QOS, from SLURM's accounting (slurmdbd).
    assert options["echo1"]["accounts"] == ["proj-a", "proj-b"]
    assert sorted(options["echo1"]["qos"]) == ["interactive", "normal"]
    # Asked once per cluster, then from the cache (with the status TTL); the failing one is
    # asked again (a failure is never cached); refresh=true asks every cluster again.
    assert manager.commands["sinfo"] == 4
    clock.now += 60
    await settled_status(api)
    assert manager.commands["sinfo"] == 5
    clock.now += 2  # (refreshes within refresh_min_interval share one query)
    await settled_status(api, refresh=True)
    assert manager.commands["sinfo"] == 9
    # A cluster whose sinfo fails says why, and still launches with the plain fields.
    assert options["nosinfo"]["partitions"] is None
    assert "sinfo on nosinfo failed" in options["nosinfo"]["partitionsError"]


@pytest.mark.parametrize("body, field, message", [
    ({"time": "3-00:00:00"}, "time", "time 3-00:00:00 exceeds partition debug's MaxTime 12:00:00"),
    ({"partition": "long", "time": "3-00:00:00"}, "time",
     "time 3-00:00:00 exceeds partition long's MaxTime 2-00:00:00"),
    ({"cpus": "32"}, "cpus", "cpus 32 exceeds partition debug's 16 CPUs per node"),
    ({"mem": "300G"}, "mem", "mem 300G exceeds partition debug's 200000M per node"),
    ({"gpus": "1"}, "gpus", "partition debug has no GPUs"),
    ({"partition": "gpu", "gpus": "3"}, "gpus", "gpus 3 exceeds partition gpu's 2 GPUs per node"),
    ({"partition": "gpu", "gpus": "a100:1"}, "gpus",
     "partition gpu has no GPU of type a100 (it has tesla:2)"),
    ({"partition": "nope"}, "partition", "Unknown partition 'nope' on echo1; it has: debug, "
                                         "gpu, long"),
    ({"workdir": "no/such/folder"}, "workdir", "workdir 'no/such/folder' is not a folder on "
                                               "echo1"),
    ({"preset": "huge"}, "preset", "Unknown preset 'huge' on echo1; it has: gpu-small, "
                                   "long-day"),
    ({"account": "a;b"}, "account", "Invalid account value"),
    ({"account": "proj-z"}, "account", "account proj-z is not one of yours on echo1 (proj-a, "
                                       "proj-b)"),
    ({"qos": "premium"}, "qos", "qos premium is not one of yours on echo1"),
    ({"qos": "$(id)"}, "qos", "Invalid qos value"),
])
async def test_a_request_over_the_limits_is_refused_before_anything_is_submitted(
        api, manager, body, field, message, clean_slurm):
    code, reply = await launch(api, **body)
    assert code == 400 and reply["details"]["field"] == field, reply
    assert reply["error"].startswith(message), reply["error"]
    assert manager.commands["sbatch"] == 0 and slurm_jobs() == []


async def test_a_gpu_launch_with_account_qos_and_folder_reaches_the_job(
        api, jp_fetch, jp_base_url, clean_slurm):
    home_file("hpcuser", "launch-options/project/README", "a project\n")
    code, reply = await launch(api, partition="gpu", gpus="tesla:1", cpus="3", account="proj-b",
                               qos="interactive", workdir="~/launch-options/project")
    assert (code, reply.get("status")) == (200, "running"), reply
    job = reply["jobId"]
    # What SLURM has: the partition, the GPU, the account and QOS asked.
    assert squeue_of(job, "%P|%b|%a|%q") in ("gpu|gres:gpu:tesla:1|proj-b|interactive",
                                             "gpu|gres/gpu:tesla:1|proj-b|interactive")
    # The entries report what was asked, next to CPUs and memory.
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    entry = status["echo1"]
    assert (entry["partition"], entry["gpus"], entry["account"], entry["qos"]) == (
        "gpu", "tesla:1", "proj-b", "interactive")
    code, s = await api("GET", "status")
    assert s["sessions"]["echo1"]["partition"] == "gpu"
    assert s["sessions"]["echo1"]["gpus"] == "tesla:1"
    # The job: threads for its CPUs, the folder, and the port proxy's URL for the editor.
    who = (await whoami(jp_fetch, "echo1"))[1]
    assert who["env"]["OMP_NUM_THREADS"] == who["env"]["MKL_NUM_THREADS"] == \
        who["env"]["OPENBLAS_NUM_THREADS"] == "3"
    assert who["folder"] == who["cwd"] == "/home/hpcuser/launch-options/project"
    assert who["env"]["VSCODE_PROXY_URI"] == f"{jp_base_url}hpc/echo1/code/proxy/{{{{port}}}}/"
    assert who["env"]["SLURM_JOB_PARTITION"] == "gpu"


async def test_a_preset_fills_what_the_launch_does_not_give(api, manager, clean_slurm):
    code, reply = await launch(api, preset="gpu-small", cpus="1")
    assert (code, reply["status"]) == (200, "running"), reply
    # The preset's partition, GPUs and time; the launch's own CPUs and memory win.
    assert squeue_of(reply["jobId"], "%P|%C|%l") == "gpu|1|30:00"
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert status["echo1"]["gpus"] == "1"


async def test_without_sinfo_the_plain_fields_launch(api, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "nosinfo", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply


@pytest.mark.parametrize("hpc_config", [{"launch_timeout": 2.0, "poll_interval": 0.5,
                                         "use_system_known_hosts": False}])
async def test_a_pending_job_says_why_and_when_it_should_start(api, filled_node, clean_slurm):
    code, reply = await launch(api, cpus="4")
    assert (code, reply["status"]) == (200, "pending"), reply
    entry = {}
    for _ in range(60):  # the backfill scheduler estimates every few seconds
        code, status = await api("GET", "cluster-status", params={"refresh": "true"})
        entry = status["echo1"]
        if entry.get("estimatedStart"):
            break
        await asyncio.sleep(1)
    assert entry["status"] == "pending" and entry["reason"] == "Resources", entry
    assert entry["reasonText"] == "Resources: waiting for free nodes"
    # SLURM's own estimate (the filler's end), as squeue gives it.
    assert entry["estimatedStart"] == squeue_of(reply["jobId"], "%S")
    assert entry["estimatedStart"] >= squeue_of(filled_node, "%S")


async def test_check_launch_answers_what_launch_would_do_and_submits_nothing(api, manager):
    code, reply = await api("POST", "check-launch", body={"hpc": "echo1", "preset": "long-day",
                                                          "cpus": 4})
    assert code == 200, reply
    assert reply == {"ok": True, "hpc": "echo1", "request": {
        "cpus": "4", "mem": "2G", "time": "1-12:00:00", "partition": "long", "gpus": None,
        "account": None, "qos": None, "workdir": None}}
    # A cluster's own default partition (echo2's setting is "debug") is the request's.
    code, reply = await api("POST", "check-launch", body={"hpc": "echo2"})
    assert reply["request"]["partition"] == "debug", reply
    code, reply = await api("POST", "check-launch", body={"hpc": "echo1", "time": "13:00:00"})
    assert code == 400 and reply["error"] == ("time 13:00:00 exceeds partition debug's MaxTime "
                                              "12:00:00")
    assert manager.commands["sbatch"] == 0
