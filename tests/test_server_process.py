"""The extension in a real `jupyter server` process: enabled by its shipped config, refusing to
start on bad configuration, and finding its job again after being killed with SIGKILL."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from jupyter_process import JUPYTER, ROOT, Server, slurm_jobs


@pytest.fixture
def server(tmp_path, sandbox_cluster, clean_slurm):
    clusters = {
        "gemini": dict(sandbox_cluster, job_name="proc-hpc-gemini"),
        "apollo": dict(sandbox_cluster, job_name="proc-hpc-apollo"),
    }
    s = Server(tmp_path, clusters)
    yield s
    s.stop()


def test_state_survives_sigkill_and_the_job_is_found_again(server):
    # A folder an older version's server left behind, and another user's: only ours goes.
    import os
    import pwd
    import tempfile

    stale = tempfile.mkdtemp(prefix="jhm-tunnels-")
    theirs = tempfile.mkdtemp(prefix="jhm-tunnels-")
    user = pwd.getpwnam("hpcuser")
    os.chown(theirs, user.pw_uid, user.pw_gid)
    server.start()
    assert not os.path.exists(stale) and os.path.exists(theirs)
    os.rmdir(theirs)
    code, reply = server.call("POST", "launch", {"hpc": "gemini", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    job_id = reply["jobId"]

    state = server.workdir / "state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    record = json.loads(state.read_text())
    assert record["activeHpc"] == "gemini"
    assert record["sessions"]["gemini"]["job_id"] == job_id
    assert "password" not in state.read_text()

    server.kill()
    assert [j["id"] for j in slurm_jobs()] == [job_id]  # the job outlives the server

    server.start()
    code, status = server.call("GET", "cluster-status?refresh=true")
    assert code == 200
    assert (status["gemini"]["status"], status["gemini"]["jobId"]) == ("running", job_id)
    assert status["activeHpc"] == "gemini"
    code, s = server.call("GET", "status")
    assert s["sessions"]["gemini"]["jobId"] == job_id
    code, again = server.call("POST", "launch", {"hpc": "gemini"})
    assert (code, again["status"], again["jobId"]) == (200, "connected", job_id)
    assert [j["id"] for j in slurm_jobs()] == [job_id]  # no duplicate
    code, _ = server.call("POST", "stop", {"cancelJob": True})
    assert code == 200 and slurm_jobs() == []


def test_a_lost_record_is_rebuilt_from_slurm(server):
    """The job, not the record, is the source of truth."""
    server.start()
    code, reply = server.call("POST", "launch", {"hpc": "apollo", "mem": "1G"})
    assert code == 200, reply
    server.kill()
    (server.workdir / "state.json").unlink()
    server.start()
    code, status = server.call("GET", "cluster-status")
    assert status["apollo"]["jobId"] == reply["jobId"]
    # Adopted on that status: the IDE's URL is given, status agrees, and the proxy attaches on
    # the first request (reading the job's connection file), with no launch.
    assert status["apollo"]["url"] == "/hpc/apollo/code/"
    code, s = server.call("GET", "status")
    assert (s["sessions"]["apollo"]["status"], s["sessions"]["apollo"]["jobId"]) == (
        "running", reply["jobId"])
    page = server.fetch("hpc/apollo/code/?folder=/home/hpcuser")
    assert page.status == 200 and b"workbench" in page.read()
    code, again = server.call("POST", "launch", {"hpc": "apollo"})
    assert (again["status"], again["jobId"]) == ("connected", reply["jobId"])


@pytest.mark.parametrize("cancel", [False, True])
def test_a_stopped_server_leaves_its_job_running_unless_told_to_cancel_it(
        tmp_path, sandbox_cluster, clean_slurm, cancel):
    """What happens to the job when JupyterHub (its culler, an admin) stops the server:
    c.HPCManager.cancel_jobs_on_shutdown."""
    s = Server(tmp_path, {"gemini": dict(sandbox_cluster, job_name="proc-hpc-shutdown")},
               extra=f"c.HPCManager.cancel_jobs_on_shutdown = {cancel}\n")
    s.start()
    code, reply = s.call("POST", "launch", {"hpc": "gemini", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    s.stop()  # SIGTERM: an orderly stop
    assert s.proc.returncode == 0
    if cancel:
        assert slurm_jobs() == []
        assert f"cancelled job {reply['jobId']} on gemini as the server stops" in \
            s.log.read_text()
    else:
        assert [j["id"] for j in slurm_jobs()] == [reply["jobId"]]
        s.start()  # and the next server finds it
        code, again = s.call("POST", "launch", {"hpc": "gemini"})
        assert (again["status"], again["jobId"]) == ("connected", reply["jobId"])
        s.stop()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("c.HPCManager.default_cpus = 'lots'\n", "default_cpus 'lots'"),
        ("c.HPCManager.default_hpc = 'atlantis'\n", "default_hpc 'atlantis'"),
        ("c.HPCManager.clusters = {'g': {'host': 'h', 'prot': 22}}\n", "prot"),
        ("c.HPCManager.clusters = {'g': {'host': 'h', 'port': 99999}}\n", "99999"),
        ("c.HPCManager.max_cpus = 0\n", "max_cpus 0"),
        # Wrong for every user of a JupyterHub alike: a type, a name the API reserves.
        ("c.HPCManager.clusters = {'g': {'host': 'h', 'port': 'ssh'}}\n", "port"),
        ("c.HPCManager.clusters = {'code': {'host': 'h'}}\n", "code are reserved"),
        # A cross-setting error (the default of 2 CPUs above the limit) stops it too.
        ("c.HPCManager.max_cpus = 1\n", "default_cpus '2' with max_cpus 1"),
    ],
)
def test_bad_configuration_stops_start_up_naming_the_value(tmp_path, sandbox_cluster, extra,
                                                           named):
    s = Server(tmp_path, {"gemini": sandbox_cluster}, extra=extra)
    proc = s.start(wait=False)
    try:
        code = proc.wait(60)
    finally:
        s.stop()
    assert code != 0
    log = s.log.read_text()
    assert "bad configuration" in log and named in log, log[-2000:]


def test_extension_is_enabled_by_the_shipped_config():
    out = subprocess.run([JUPYTER, "server", "extension", "list"], capture_output=True,
                         text=True, check=True)
    text = out.stdout + out.stderr
    assert "jupyter_hpc_manager" in text
    line = text[text.index("jupyter_hpc_manager"):].splitlines()
    assert "enabled" in line[0]
    assert any("jupyter_hpc_manager" in x and "OK" in x for x in line[1:4])
    shipped = ROOT / "jupyter-config" / "jupyter_server_config.d" / "jupyter_hpc_manager.json"
    assert json.loads(shipped.read_text())["ServerApp"]["jpserver_extensions"] == {
        "jupyter_hpc_manager": True}


def test_settings_are_documented_in_help_all():
    out = subprocess.run([JUPYTER, "hpc-manager", "--help-all"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("clusters", "default_hpc", "default_cpus", "default_mem", "default_time",
                 "max_cpus", "cache_ttl", "launch_timeout", "executor_threads", "login_timeout",
                 "status_wait"):
        assert f"--HPCManager.{name}" in out, name
    assert "Seconds cluster-status answers from its cache" in out
    # Every per-cluster setting, with its help.
    for name, words in (("presets", "Named launch presets"), ("qos", "SLURM QOS"),
                        ("sinfo", "reads the partitions"), ("sacctmgr", "accounts and QOS"),
                        ("proxy_jump", "several separated by commas"),
                        ("partition", "used when a launch names none")):
        assert f"  {name}: " in out and words in out, name
