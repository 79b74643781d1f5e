"""The REST contract against the real sandbox: sshd, SLURM and code-server."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.parse

import pytest

from conftest import squeue_calls, step_clock
from jupyter_process import slurm_jobs

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HMS = re.compile(r"^(\d+-)?\d\d:\d\d:\d\d$")


def assert_error_body(body: dict, status_text: str | None = None) -> None:
    assert set(body) >= {"error", "message", "details", "timestamp"}
    assert body["error"] == body["message"]
    assert ISO_Z.match(body["timestamp"])
    if status_text is not None:
        assert status_text in body["error"], body


# -- read-only endpoints -----------------------------------------------------------------------

async def test_health(api):
    assert await api("GET", "health") == (200, {"status": "ok"})


async def test_status_shape_with_config_defaults(api, clean_slurm):
    code, body = await api("GET", "status")
    assert code == 200
    assert set(body) >= {"sessions", "activeHpc", "config"}
    assert body["sessions"]["gemini"] == {"status": "idle"}
    assert body["sessions"]["apollo"] == {"status": "idle"}
    assert body["activeHpc"] is None
    assert body["config"]["defaultHpc"] == "gemini"
    assert (body["config"]["defaultCpus"], body["config"]["defaultMem"],
            body["config"]["defaultTime"]) == ("2", "40G", "12:00:00")


async def test_cluster_status_idle_unknown_and_cache_fields(api, clean_slurm):
    code, body = await api("GET", "cluster-status", params={"refresh": "true"})
    assert code == 200
    assert body["gemini"] == {"status": "idle"}
    assert body["apollo"] == {"status": "idle"}
    # A cluster that cannot be asked is unknown with the reason, never idle.
    assert body["offline"]["status"] == "unknown"
    assert "2299" in body["offline"]["error"]
    assert body["stranger"]["status"] == "unknown"
    assert "not known" in body["stranger"]["error"]
    assert body["changed"]["status"] == "unknown"
    assert "CHANGED" in body["changed"]["error"]
    assert body["cached"] is False and body["cacheAge"] == 0 and body["cacheTtl"] == 120
    assert ISO_Z.match(body["updatedAt"])
    assert body["activeHpc"] is None


# -- authentication ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "health"), ("GET", "status"), ("GET", "cluster-status"), ("POST", "launch"),
     ("POST", "switch/gemini"), ("POST", "stop"), ("POST", "stop/gemini")],
)
async def test_every_route_refuses_requests_without_a_token(
        method, path, http_server_client, jp_base_url, manager, clean_slurm):
    response = await http_server_client.fetch(
        f"{jp_base_url}api/hpc/{path}", method=method, body="{}" if method == "POST" else None,
        raise_error=False)
    assert response.code == 403
    assert_error_body(json.loads(response.body))
    assert sum(manager.commands.values()) == 0  # nothing ran on the cluster
    assert slurm_jobs() == []


async def test_post_with_cookie_but_no_xsrf_is_refused(
        jp_serverapp, http_server_client, jp_base_url, manager, clean_slurm):
    """A browser session (cookie) must send the XSRF token on POSTs."""
    client = http_server_client
    token = jp_serverapp.identity_provider.token
    login = await client.fetch(
        f"{jp_base_url}api/hpc/health?token={token}", follow_redirects=False, raise_error=False)
    cookies = "; ".join(c.split(";", 1)[0] for c in login.headers.get_list("Set-Cookie"))
    assert "username-" in cookies
    status = await client.fetch(
        f"{jp_base_url}api/hpc/health", headers={"Cookie": cookies}, raise_error=False)
    assert status.code == 200  # the cookie alone is a login for GETs
    launch = await client.fetch(
        f"{jp_base_url}api/hpc/launch", method="POST", body="{}", headers={"Cookie": cookies},
        raise_error=False)
    assert launch.code == 403
    assert "xsrf" in json.loads(launch.body)["error"].lower()
    assert slurm_jobs() == []


# -- validation and injection ------------------------------------------------------------------

BAD_LAUNCHES = [
    ({"cpus": "0"}, "Invalid CPU value: must be integer 1-128"),
    ({"cpus": "129"}, "Invalid CPU value: must be integer 1-128"),
    ({"cpus": "two"}, "Invalid CPU value: must be integer 1-128"),
    ({"cpus": 2.5}, "Invalid CPU value: must be integer 1-128"),
    ({"mem": "40"}, "Invalid memory value"),
    ({"mem": "40GB"}, "Invalid memory value"),
    ({"time": "12:00"}, "Invalid time value"),
    ({"time": "1-25:00:00"}, "Invalid time value"),
    ({"hpc": "nosuch"}, "Unknown HPC cluster"),
]


@pytest.mark.parametrize(("body", "message"), BAD_LAUNCHES)
async def test_bad_launch_values_are_400_and_run_nothing(api, manager, body, message):
    code, reply = await api("POST", "launch", body={"hpc": "gemini", **body})
    assert code == 400
    assert_error_body(reply, message)
    assert sum(manager.commands.values()) == 0


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"gemini"', "{", "\xff\xfe", "\r\n\r\n"])
async def test_bodies_that_are_not_a_json_object_are_400(api, manager, raw):
    code, reply = await api("POST", "launch", body=raw.encode("latin-1"))
    assert code == 400
    assert_error_body(reply, "JSON")
    assert sum(manager.commands.values()) == 0


async def test_oversized_body_is_400(api, manager):
    code, reply = await api("POST", "launch", body=json.dumps({"pad": "x" * 100_000}))
    assert code == 400
    assert_error_body(reply, "too large")


INJECTION_TEMPLATES = [
    "; touch {canary}", "$(touch {canary})", "`touch {canary}`", "\ntouch {canary}\n",
    "' ; touch {canary} ; '", '" ; touch {canary} ; "', "&& touch {canary}", "| touch {canary}",
]


async def test_shell_metacharacters_in_every_field_are_400_and_nothing_runs(
        api_raw, manager, cluster_tmp, clean_slurm):
    canary = cluster_tmp / "canary"
    requests = []
    for template in INJECTION_TEMPLATES:
        payload = template.format(canary=canary)
        for field, good in (("cpus", "2"), ("mem", "1G"), ("time", "00:10:00"),
                            ("hpc", "gemini")):
            requests.append(("launch", {"hpc": "gemini", "cpus": "2", "mem": "1G",
                                        "time": "00:10:00", field: good + payload}))
        requests.append(("stop", {"cancelJob": payload}))
        quoted = urllib.parse.quote("gemini" + payload, safe="")
        requests.append((f"switch/{quoted}", {}))
        requests.append((f"stop/{quoted}", {}))
    for path, body in requests:
        code, reply = await api_raw("POST", path, body=body)
        assert code == 400, (path, body, reply)
        assert_error_body(reply)
    assert not canary.exists()
    assert sum(manager.commands.values()) == 0
    assert slurm_jobs() == []


async def test_unknown_endpoint_is_a_json_404(api):
    code, reply = await api("GET", "no-such-thing")
    assert code == 404
    assert_error_body(reply, "No such endpoint")


async def test_unknown_cluster_in_path_is_400(api):
    code, reply = await api("POST", "switch", "atlantis")
    assert code == 400
    assert_error_body(reply, "Unknown HPC cluster")
    code, reply = await api("POST", "stop", "atlantis")
    assert code == 400


# -- launch, reconnect, stop -------------------------------------------------------------------

async def test_launch_runs_the_ide_then_reconnects_then_stop_keeps_or_cancels_the_job(
        api, manager, clean_slurm):
    code, reply = await api("POST", "launch",
                            body={"hpc": "gemini", "cpus": "2", "mem": "1G", "time": "00:30:00"})
    assert code == 200, reply
    assert reply["status"] == "running" and reply["hpc"] == "gemini"
    assert reply["node"] == socket.gethostname()
    job_id = reply["jobId"]
    assert [(j["id"], j["name"], j["state"]) for j in slurm_jobs()] == [
        (job_id, "test-hpc-gemini", "RUNNING")]
    # The IDE really runs and read its connection file: the manager holds host, port, password.
    session = manager.session("gemini")
    assert session.connection is not None and session.connection.port > 0
    assert "password" not in json.dumps(reply)

    code, status = await api("GET", "cluster-status")
    assert code == 200 and status["cached"] is False  # the launch invalidated the cache
    g = status["gemini"]
    assert g["status"] == "running" and g["jobId"] == job_id
    assert set(g) >= {"jobId", "node", "timeLeft", "timeLeftSeconds", "timeLeftHuman",
                      "timeLimit", "timeLimitSeconds", "cpus", "memory", "startTime"}
    assert g["timeLimit"] == "00:30:00" and g["timeLimitSeconds"] == 1800
    assert 1700 < g["timeLeftSeconds"] <= 1800
    assert HMS.match(g["timeLeft"]) and re.match(r"^\d+m$", g["timeLeftHuman"])
    assert (g["cpus"], g["memory"]) == ("2", "1G")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$", g["startTime"])
    assert status["activeHpc"] == "gemini"

    code, s = await api("GET", "status")
    assert s["sessions"]["gemini"]["jobId"] == job_id
    assert s["sessions"]["gemini"]["status"] == "running"
    assert s["sessions"]["gemini"]["walltime"] == "00:30:00"
    assert s["activeHpc"] == "gemini"

    # A second launch finds the job: connected, no second sbatch.
    code, again = await api("POST", "launch", body={"hpc": "gemini"})
    assert (code, again["status"], again["jobId"]) == (200, "connected", job_id)
    assert manager.commands["sbatch"] == 1

    # Stop without cancelJob: the job keeps running and a later launch reconnects to it.
    code, stopped = await api("POST", "stop", "gemini", body={})
    assert (code, stopped["status"], stopped["hpc"]) == (200, "stopped", "gemini")
    assert [j["id"] for j in slurm_jobs()] == [job_id]
    code, s = await api("GET", "status")
    assert s["sessions"]["gemini"] == {"status": "idle"} and s["activeHpc"] is None
    code, again = await api("POST", "launch", body={})
    assert (again["status"], again["jobId"]) == ("connected", job_id)

    # Stop with cancelJob (default cluster: the active one): the job leaves squeue.
    code, stopped = await api("POST", "stop", body={"cancelJob": True})
    assert (code, stopped["status"], stopped["hpc"]) == (200, "stopped", "gemini")
    assert slurm_jobs() == []
    code, status = await api("GET", "cluster-status")
    # How the last session ended (additive; a stop that kept the job running ended nothing).
    ended = status["gemini"].pop("lastEnd")
    assert status["gemini"] == {"status": "idle"}
    assert (ended["jobId"], ended["reason"]) == (job_id, "stopped")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", ended["at"])
    code, s = await api("GET", "status")
    assert s["sessions"]["gemini"]["lastEnd"] == ended


async def test_the_connection_file_is_private_and_removed_when_the_job_ends(api, clean_slurm):
    import os
    import pwd
    import stat

    code, reply = await api("POST", "launch", body={"hpc": "apollo", "mem": "1G"})
    assert code == 200, reply
    home = pwd.getpwnam("hpcuser").pw_dir
    path = os.path.join(home, ".jupyter-hpc-manager", f"job-{reply['jobId']}.json")
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with open(path) as f:
        data = json.load(f)
    assert set(data) >= {"host", "port", "password"} and len(data["password"]) >= 32
    # The password is not on any process's command line.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert data["password"].encode() not in f.read()
        except FileNotFoundError:
            pass
    code, _ = await api("POST", "stop", "apollo", body={"cancelJob": True})
    assert code == 200
    for _ in range(40):
        if not os.path.exists(path):
            break
        await asyncio.sleep(0.25)
    assert not os.path.exists(path)


@pytest.mark.parametrize("hpc_config", [{"launch_timeout": 3.0, "poll_interval": 0.5,
                                         "use_system_known_hosts": False}])
async def test_a_job_still_queued_at_the_bound_is_pending_with_its_reason(
        api, manager, clean_slurm, filled_node):
    # Another user's job holds the node's 16 CPUs: SLURM keeps ours pending.
    code, reply = await api("POST", "launch", body={"hpc": "gemini", "cpus": "4", "mem": "1G"})
    assert code == 200, reply
    assert reply["status"] == "pending" and reply["jobId"]
    assert reply["reason"]
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    g = status["gemini"]
    assert (g["status"], g["jobId"], g["node"]) == ("pending", reply["jobId"], None)
    assert g["reason"] == reply["reason"]
    assert g["cpus"] == "4"
    # Launching again does not submit a second job.
    code, again = await api("POST", "launch", body={"hpc": "gemini"})
    assert (again["status"], again["jobId"]) == ("pending", reply["jobId"])
    assert manager.commands["sbatch"] == 1
    assert len(slurm_jobs()) == 1
    code, _ = await api("POST", "stop", "gemini", body={"cancelJob": True})
    assert slurm_jobs() == []


async def test_sbatch_refusals_carry_slurms_message(api, clean_slurm):
    # (What sinfo tells, partitions and their limits, is refused before sbatch: see
    # test_launch_options.py. This is what only sbatch knows.)
    code, reply = await api("POST", "launch", body={"hpc": "broken", "mem": "1G"})
    assert code == 500
    assert_error_body(reply, "Invalid feature specification")
    assert reply["details"]["type"] == "JobError"
    assert slurm_jobs() == []


async def test_a_job_that_dies_before_the_ide_runs_is_an_error_with_its_log(
        api, manager, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "dies", "mem": "1G"})
    assert code == 500
    assert_error_body(reply, "ended before the IDE came up")
    assert "no such module code-server" in reply["details"]["log"]
    assert manager.session("dies") is None


async def test_unreachable_cluster_launch_is_502_and_submits_nothing(api, manager, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "offline", "mem": "1G"})
    assert code == 502
    assert_error_body(reply, "127.0.0.1:2299")
    assert reply["details"]["type"] == "SshError"
    assert manager.commands["sbatch"] == 0


async def test_unknown_and_changed_host_keys_are_refused_naming_the_host(api, manager):
    code, reply = await api("POST", "launch", body={"hpc": "stranger", "mem": "1G"})
    assert code == 502
    assert_error_body(reply, "[127.0.0.1]:2222")
    assert "not known" in reply["error"] and "SHA256:" in reply["error"]
    code, reply = await api("POST", "launch", body={"hpc": "changed", "mem": "1G"})
    assert code == 502
    assert_error_body(reply, "CHANGED")
    assert "[127.0.0.1]:2222" in reply["error"]
    assert "SHA256:" in reply["error"]  # the fingerprint it offered, to compare with the admin's
    assert manager.commands["sbatch"] == 0


# -- switch ------------------------------------------------------------------------------------

async def test_switch_needs_a_running_session(api, clean_slurm):
    code, reply = await api("POST", "switch", "apollo")
    assert code == 400
    assert_error_body(reply, "No running session on apollo")
    for hpc in ("gemini", "apollo"):
        code, reply = await api("POST", "launch", body={"hpc": hpc, "mem": "1G"})
        assert (code, reply["status"]) == (200, "running"), reply
    code, s = await api("GET", "status")
    assert s["activeHpc"] == "apollo"  # the last launch
    code, reply = await api("POST", "switch", "gemini")
    assert (code, reply) == (200, {"status": "switched", "hpc": "gemini"})
    code, s = await api("GET", "cluster-status")
    assert s["activeHpc"] == "gemini"
    # Stopping the active cluster hands the active role to the other running session.
    code, _ = await api("POST", "stop", body={"cancelJob": True})
    code, s = await api("GET", "status")
    assert s["activeHpc"] == "apollo" and s["sessions"]["gemini"]["status"] == "idle"
    assert s["sessions"]["gemini"]["lastEnd"]["reason"] == "stopped"


# -- locks and the cache -----------------------------------------------------------------------

async def test_concurrent_launches_on_one_cluster_make_one_job(api, manager, clean_slurm):
    results = await asyncio.gather(*(
        api("POST", "launch", body={"hpc": "gemini", "mem": "1G"}) for _ in range(12)))
    codes = sorted(code for code, _ in results)
    assert codes.count(200) == 1 and codes.count(429) == 11, codes
    for code, reply in results:
        if code == 429:
            assert_error_body(reply, "Operation already in progress")
    assert len([j for j in slurm_jobs() if j["name"] == "test-hpc-gemini"]) == 1
    assert manager.commands["sbatch"] == 1


async def test_stop_while_launching_is_429(api, clean_slurm):
    launch = asyncio.ensure_future(api("POST", "launch", body={"hpc": "gemini", "mem": "1G"}))
    await asyncio.sleep(0.05)
    code, reply = await api("POST", "stop", "gemini", body={"cancelJob": True})
    assert code == 429
    assert_error_body(reply, "Operation already in progress")
    code, reply = await launch
    assert code == 200


async def test_cache_one_squeue_per_cluster_within_the_ttl(api, manager, cluster_tmp,
                                                           clean_slurm):
    clock = step_clock(manager)

    def calls() -> tuple[int, int]:
        return (squeue_calls(cluster_tmp, "test-hpc-gemini"),
                squeue_calls(cluster_tmp, "test-hpc-apollo"))

    g0, a0 = calls()
    code, first = await api("GET", "cluster-status", params={"refresh": "true"})
    clock.now += 45
    code, second = await api("GET", "cluster-status")
    assert first["cached"] is False and second["cached"] is True
    assert second["cacheAge"] == 45
    assert calls() == (g0 + 1, a0 + 1)  # two calls within the TTL: one squeue per cluster
    code, third = await api("GET", "cluster-status", params={"refresh": "true"})
    assert third["cached"] is False
    assert calls() == (g0 + 2, a0 + 2)  # refresh=true: a new one
    # Twenty concurrent refreshes share one query.
    clock.now += 5
    replies = await asyncio.gather(*(api("GET", "cluster-status", params={"refresh": "true"})
                                     for _ in range(20)))
    assert all(code == 200 for code, _ in replies)
    assert calls() == (g0 + 3, a0 + 3)
    # Past the TTL a plain call asks again.
    clock.now += 121
    code, late = await api("GET", "cluster-status")
    assert late["cached"] is False
    assert calls() == (g0 + 4, a0 + 4)


async def test_launch_and_stop_invalidate_the_cache(api, clean_slurm):
    await api("GET", "cluster-status")
    code, cached = await api("GET", "cluster-status")
    assert cached["cached"] is True and cached["gemini"]["status"] == "idle"
    await api("POST", "launch", body={"hpc": "gemini", "mem": "1G"})
    code, after = await api("GET", "cluster-status")
    assert after["cached"] is False and after["gemini"]["status"] == "running"
    await api("POST", "stop", "gemini", body={"cancelJob": True})
    code, after = await api("GET", "cluster-status")
    assert after["cached"] is False and after["gemini"]["status"] == "idle"


async def test_the_event_loop_stays_free_while_a_launch_waits(api, clean_slurm, filled_node):
    """SSH work runs in executor threads: health answers while a launch is in flight."""
    launch = asyncio.ensure_future(
        api("POST", "launch", body={"hpc": "gemini", "cpus": "4", "mem": "1G"}))
    await asyncio.sleep(0.2)
    for _ in range(5):
        assert await api("GET", "health") == (200, {"status": "ok"})
    assert not launch.done()
    # Another cluster's lock is free: its stop is answered (not 429) while gemini's launch,
    # which holds gemini's lock, still waits.
    code, reply = await api("POST", "stop", "apollo", body={})
    assert (code, reply) == (200, {"status": "stopped", "hpc": "apollo"})
    assert not launch.done()
    launch.cancel()


# -- SSH ---------------------------------------------------------------------------------------

async def test_one_persistent_connection_with_nodelay_reopened_after_a_drop(
        api, manager, clean_slurm):
    import subprocess

    clock = step_clock(manager)
    for _ in range(5):
        clock.now += 5
        code, _ = await api("GET", "cluster-status", params={"refresh": "true"})
        assert code == 200
    opened = manager.connections_opened
    # One each for the six reachable clusters, kept across five queries.
    assert opened == 6
    transport = manager.clusters["gemini"].ssh.current()
    assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    # Kill the sshd processes serving our connections: the drop a network blip causes.
    subprocess.run(["pkill", "-f", "sshd: hpcuser"], check=False)
    for _ in range(50):
        if not transport.is_active():
            break
        await asyncio.sleep(0.1)
    clock.now += 5
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert code == 200
    assert status["gemini"]["status"] == "idle"  # answered, not unknown
    assert manager.connections_opened > opened
    assert manager.clusters["gemini"].ssh.current() not in (None, transport)


@pytest.mark.parametrize("name", ["ünïcödé", "集群", "a" * 5000, "gemini\u0000", "../../etc",
                                  "%00", "gemini%20"])
async def test_odd_cluster_names_in_paths_and_bodies_are_400(api, api_raw, manager, name):
    quoted = urllib.parse.quote(name, safe="")
    for path in (f"switch/{quoted}", f"stop/{quoted}"):
        code, reply = await api_raw("POST", path)
        assert code == 400, (path, code)
        assert_error_body(reply, "Unknown HPC cluster")
    code, reply = await api("POST", "launch", body={"hpc": name})
    assert code == 400
    assert_error_body(reply, "Unknown HPC cluster")
    assert len(reply["error"]) < 300  # a huge name is not echoed back whole
    assert sum(manager.commands.values()) == 0
