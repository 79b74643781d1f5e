"""Clusters whose login nodes ask for a password and a one-time code (the sandbox's MFA sshds:
127.0.0.1:2223 password + TOTP, :2224 key + TOTP, PAM with libpam-google-authenticator). The
prompts are relayed over REST, round by round; after the login everything uses that one
connection; when it drops, the cluster needs a login again and its job stays unknown."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import time

import pytest

import jupyter_process
import mfa
from conftest import whoami
from jupyter_process import MFA_USER, SANDBOX


@pytest.fixture
def ssh_config(sandbox_cluster: dict, cluster_tmp: pathlib.Path) -> str:
    """Host aliases for two jump hosts in a row: jump1 (the sandbox's jump host), then jump2."""
    path = cluster_tmp / "ssh_config_two_hops"
    path.write_text(
        "Host jump1\n  HostName 127.0.0.2\n  Port 2222\n  User hpcuser\n"
        f"  IdentityFile {sandbox_cluster['identity_file']}\n"
        "Host jump2\n  HostName 127.0.0.1\n  Port 2222\n  User hpcuser\n"
        f"  IdentityFile {sandbox_cluster['identity_file']}\n")
    return str(path)


@pytest.fixture
def cluster_settings(cluster_settings: dict, sandbox_cluster: dict, echo_ide: str) -> dict:
    as_mfauser = dict(sandbox_cluster, user=MFA_USER, ide_command=echo_ide)
    return {
        "echo1": cluster_settings["echo1"],
        "mfa": dict(as_mfauser, port=mfa.PASSWORD_PORT, identity_file="",
                    job_name="test-hpc-mfa"),
        "mfakey": dict(as_mfauser, port=mfa.KEY_PORT, job_name="test-hpc-mfakey",
                       identity_file=str(SANDBOX / "mfauser_ed25519")),
        # The login node with keys, behind a jump host that asks for a password and a code.
        "mfajump": dict(cluster_settings["echo1"], job_name="test-hpc-mfajump",
                        proxy_jump=f"{MFA_USER}@127.0.0.1:{mfa.PASSWORD_PORT}"),
        "twohops": dict(cluster_settings["echo1"], job_name="test-hpc-twohops",
                        proxy_jump="jump1,jump2"),
    }


@pytest.fixture
def hpc_config(hpc_config: dict, ssh_config: str, request) -> dict:
    extra = {}
    if request.node.get_closest_marker("idle_cancel"):
        extra["idle_cancel_minutes"] = 0.1  # 6 s: the watch looks every second
    return {**hpc_config, "login_timeout": 20.0, "keepalive_interval": 1,
            "ssh_config_file": ssh_config, **extra}


@pytest.fixture
def secrets_seen() -> list[str]:
    """Every password and code a test typed (none may show up in a log or a reply)."""
    return [mfa.password()]


@pytest.fixture
def replies() -> list[dict]:
    return []


@pytest.fixture
def api(api, replies: list[dict]):
    """The contract, with every reply kept (to look for secrets in them)."""
    async def call(*args, **kwargs):
        code, reply = await api(*args, **kwargs)
        replies.append(reply)
        return code, reply
    return call


async def log_in(api, hpc: str, seen: list[str], *, code: str | None = None) -> list[dict]:
    """The whole login over REST, answering each round as a person would; the rounds seen."""
    rounds = []
    code = code or mfa.fresh_code()  # (before the login starts: it may have to wait for one)
    code_, reply = await api("POST", "login", hpc, body={})
    while reply["status"] == "prompt":
        assert code_ == 200, reply
        rounds.append(reply)
        answers = []
        for prompt in reply["prompts"]:
            if "assword" in prompt["text"]:
                answers.append(mfa.password())
            else:
                answers.append(code)
                seen.append(code)
        code_, reply = await api("POST", "login", hpc,
                                 body={"loginId": reply["loginId"], "answers": answers})
    assert (code_, reply) == (200, {"status": "connected", "hpc": hpc}), reply
    return rounds


async def drop_and_wait(manager, hpc: str):
    """Drop hpc's logged-in connection (as a network would) and wait until the cluster has
    noticed (by the connection's own end); its login node."""
    assert mfa.drop_connections(hpc) > 0
    node = manager.clusters[hpc].node
    for _ in range(100):
        if node.login_required is not None:
            break
        await asyncio.sleep(0.1)
    assert node.login_required is not None
    return node


def texts(rounds: list[dict]) -> list[list[str]]:
    return [[p["text"] for p in r["prompts"]] for r in rounds]


async def test_totp_matches_oathtool():
    step = 59_000_000
    assert mfa.totp(step) == mfa.oathtool_code(step)


async def test_password_then_code_over_rest(api, manager, secrets_seen, caplog, replies):
    caplog.set_level(logging.DEBUG)
    # Before a login: unknown (not idle), why, and login required; the login node was tried
    # once, and is not tried again by later queries (it counts failures).
    tried = None
    for _ in range(3):
        code, status = await api("GET", "cluster-status", params={"refresh": "true"})
        entry = status["mfa"]
        assert entry["status"] == "unknown" and entry["login"] == "required", entry
        assert "asks for a password or one-time code" in entry["error"]
        assert status["echo1"] == {"status": "idle"}  # no login: no login field
        tried = tried or mfa.connections("mfa")
        assert mfa.connections("mfa") == tried
    code, s = await api("GET", "status")
    assert s["sessions"]["mfa"]["status"] == "unknown"
    assert s["sessions"]["mfa"]["login"] == "required"
    # Nothing runs on a cluster that needs a login.
    code, reply = await api("POST", "launch", body={"hpc": "mfa", "mem": "1G"})
    assert code == 401 and reply["details"]["type"] == "login_required", reply
    assert manager.commands["sbatch"] == 0

    rounds = await log_in(api, "mfa", secrets_seen)
    assert texts(rounds) == [["Password: "], ["Verification code: "]]
    assert all(p["echo"] is False for r in rounds for p in r["prompts"])
    assert {r["loginId"] for r in rounds} == {rounds[0]["loginId"]}
    assert rounds[0]["host"] == f"login node {MFA_USER}@127.0.0.1:{mfa.PASSWORD_PORT}"
    code, status = await api("GET", "cluster-status")
    assert status["mfa"] == {"status": "idle", "login": "connected"}, status["mfa"]
    code, s = await api("GET", "status")
    assert s["sessions"]["mfa"] == {"status": "idle", "login": "connected"}
    # Logging in again while connected: connected at once, no new connection.
    opened = mfa.connections("mfa")
    assert await api("POST", "login", "mfa", body={}) == (200, {"status": "connected",
                                                                "hpc": "mfa"})
    assert mfa.connections("mfa") == opened
    # Log out: the connection closes and the cluster needs a login again.
    assert await api("POST", "logout", "mfa") == (200, {"status": "disconnected", "hpc": "mfa"})
    code, status = await api("GET", "cluster-status")
    assert status["mfa"]["login"] == "required" and "logged out" in status["mfa"]["error"]
    assert_never_shown(secrets_seen, replies, caplog.text)


async def test_key_then_code_and_keepalive(api, secrets_seen, caplog, replies):
    caplog.set_level(logging.DEBUG)
    code, status = await api("GET", "cluster-status")
    assert "accepted the key and asks for a one-time code" in status["mfakey"]["error"]
    rounds = await log_in(api, "mfakey", secrets_seen)
    assert texts(rounds) == [["Verification code: "]]  # the key went first, on its own
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert status["mfakey"] == {"status": "idle", "login": "connected"}
    # keepalive_interval is 1 s: the idle connection carries keepalives, which the login node
    # answers (its log shows them).
    seen = mfa.sshd_log("mfakey").count("keepalive@lag.net")
    await asyncio.sleep(3)
    assert mfa.sshd_log("mfakey").count("keepalive@lag.net") >= seen + 2
    assert_never_shown(secrets_seen, replies, caplog.text)


async def test_a_wrong_code_fails_and_a_new_attempt_starts_at_once(api, secrets_seen):
    code, first = await api("POST", "login", "mfakey", body={})
    wrong = mfa.wrong_code()
    code, reply = await api("POST", "login", "mfakey",
                            body={"loginId": first["loginId"], "answers": [wrong]})
    assert code == 401 and reply["details"]["type"] == "login_failed", reply
    assert "refused the login" in reply["error"]
    assert "loginId" not in reply
    # The attempt is over: its id answers nothing more.
    code, again = await api("POST", "login", "mfakey",
                            body={"loginId": first["loginId"], "answers": [wrong]})
    assert code == 401 and "has ended" in again["error"]
    await log_in(api, "mfakey", secrets_seen)


async def test_bad_answers_are_a_400_and_the_attempt_goes_on(api, secrets_seen):
    code, first = await api("POST", "login", "mfa", body={})
    for body, field in (({"loginId": None}, "loginId"), ({"answers": ["x"]}, "loginId")):
        code, reply = await api("POST", "login", "mfa", body=body)
        assert code == 400 and reply["details"]["field"] == field, reply
    for bad in ([], ["a", "b"], "secret", [1]):
        code, reply = await api("POST", "login", "mfa",
                                body={"loginId": first["loginId"], "answers": bad})
        assert code == 400 and reply["details"]["field"] == "answers", reply
    code, second = await api("POST", "login", "mfa",
                             body={"loginId": first["loginId"], "answers": [mfa.password()]})
    assert second["prompts"][0]["text"] == "Verification code: "
    code, reply = await api("POST", "login", "mfa", body={"loginId": second["loginId"],
                                                          "answers": [mfa.fresh_code()]})
    assert reply == {"status": "connected", "hpc": "mfa"}


async def test_one_login_at_a_time_and_an_unanswered_one_expires(api, manager, secrets_seen):
    manager.clusters["mfa"].settings.login_timeout = 2.0
    code, first = await api("POST", "login", "mfa", body={})
    assert first["status"] == "prompt" and first["expiresIn"] <= 2
    code, second = await api("POST", "login", "mfa", body={})
    assert code == 429 and "already under way" in second["error"]
    assert "loginId" not in second and "loginId" not in second["details"]
    await asyncio.sleep(3)  # nobody answers
    code, late = await api("POST", "login", "mfa",
                           body={"loginId": first["loginId"], "answers": [mfa.password()]})
    assert code == 401 and late["details"]["type"] == "login_failed", late
    code, status = await api("GET", "cluster-status")
    assert status["mfa"]["login"] == "required"
    # A new attempt starts at once, and succeeds.
    manager.clusters["mfa"].settings.login_timeout = 20.0
    await log_in(api, "mfa", secrets_seen)


async def test_an_answer_that_is_pending_when_the_attempt_expires_gets_401(api, manager):
    manager.clusters["mfa"].settings.login_timeout = 2.0
    code, first = await api("POST", "login", "mfa", body={})
    code, second = await api("POST", "login", "mfa",
                             body={"loginId": first["loginId"], "answers": [mfa.password()]})
    assert second["prompts"][0]["text"] == "Verification code: "
    code, third = await api("POST", "login", "mfa", body={})
    assert code == 429
    await asyncio.sleep(2.5)
    code, reply = await api("POST", "login", "mfa",
                            body={"loginId": second["loginId"], "answers": ["123456"]})
    assert code == 401 and reply["details"]["type"] == "login_failed"


async def test_a_dropped_connection_needs_a_login_and_the_job_is_found_again(
        api, jp_fetch, manager, secrets_seen, caplog, replies, clean_slurm):
    caplog.set_level(logging.DEBUG)
    await log_in(api, "mfakey", secrets_seen)
    code, launched = await api("POST", "launch", body={"hpc": "mfakey", "mem": "1G"})
    assert (code, launched["status"]) == (200, "running"), launched
    job = launched["jobId"]
    assert [j["id"] for j in jupyter_process.slurm_jobs(MFA_USER)] == [job]
    # The IDE through the proxy, over the logged-in connection.
    assert (await whoami(jp_fetch, "mfakey"))[1]["jobId"] == job
    opened = mfa.connections("mfakey")

    # Noticed by the connection's own end, with no request asking: reads change nothing.
    node = await drop_and_wait(manager, "mfakey")
    assert "log in again" in node.login_required
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    entry = status["mfakey"]
    assert entry["status"] == "unknown" and entry["jobId"] == job, entry  # never idle
    assert "log in again" in entry["error"] and "url" not in entry
    code, s = await api("GET", "status")
    assert s["sessions"]["mfakey"]["status"] == "unknown"
    assert s["sessions"]["mfakey"]["jobId"] == job
    # The IDE's URL answers a page that says to log in again from JupyterLab.
    r = await jp_fetch("hpc", "mfakey", "code", "whoami", raise_error=False)
    assert r.code == 401 and b"log in again from JupyterLab" in r.body
    # Nothing reconnected on its own.
    assert mfa.connections("mfakey") == opened
    # The job kept running; a new login finds it and the IDE answers again.
    assert [j["id"] for j in jupyter_process.slurm_jobs(MFA_USER)] == [job]
    await log_in(api, "mfakey", secrets_seen)
    code, status = await api("GET", "cluster-status")
    assert status["mfakey"]["status"] == "running" and status["mfakey"]["jobId"] == job
    assert status["mfakey"]["login"] == "connected"
    assert (await whoami(jp_fetch, "mfakey"))[1]["jobId"] == job
    code, stopped = await api("POST", "stop", "mfakey", body={"cancelJob": True})
    assert stopped["cancelledJobs"] == [job]
    assert_never_shown(secrets_seen, replies, caplog.text)


@pytest.mark.idle_cancel
async def test_an_idle_job_behind_a_dropped_login_is_cancelled_after_the_next_login(
        api, manager, secrets_seen, caplog, clean_slurm):
    """Idle auto-cancel at an MFA site whose connection dropped: nothing can reach the cluster
    until the user logs in again, so the job is neither cancelled nor tried on every check (no
    failure logged each second); the first check after the login cancels it, and says why."""
    await log_in(api, "mfakey", secrets_seen)
    code, launched = await api("POST", "launch", body={"hpc": "mfakey", "mem": "1G"})
    assert (code, launched["status"]) == (200, "running"), launched
    job = launched["jobId"]
    await drop_and_wait(manager, "mfakey")
    caplog.clear()
    await asyncio.sleep(15)  # more than twice the idle timeout, a check every second
    assert [j["id"] for j in jupyter_process.slurm_jobs(MFA_USER)] == [job]
    code, status = await api("GET", "cluster-status")
    entry = status["mfakey"]
    assert (entry["status"], entry["jobId"], entry["login"]) == ("unknown", job, "required")
    tried = [r.getMessage() for r in caplog.records
             if "mfakey" in r.getMessage() and "idle" in r.getMessage()]
    assert tried == [], tried

    await log_in(api, "mfakey", secrets_seen)
    for _ in range(60):
        if not jupyter_process.slurm_jobs(MFA_USER):
            break
        await asyncio.sleep(0.5)
    assert jupyter_process.slurm_jobs(MFA_USER) == [], "the idle job was not cancelled"
    for _ in range(60):
        code, s = await api("GET", "status")
        entry = s["sessions"]["mfakey"]
        if entry["status"] == "idle":
            break
        await asyncio.sleep(0.5)
    assert (entry["status"], entry["lastEnd"]["jobId"], entry["lastEnd"]["reason"]) == (
        "idle", job, "idle"), entry


async def test_a_jump_host_that_asks_for_a_code_and_two_jump_hosts(api, manager, secrets_seen):
    jump1 = mfa.accepted("sshd-jump.log")  # only twohops goes through 127.0.0.2
    rounds = await log_in(api, "mfajump", secrets_seen)
    # The prompts say which host asks: here the jump host, not the login node behind it.
    assert texts(rounds) == [["Password: "], ["Verification code: "]]
    assert {r["host"] for r in rounds} == {f"jump host {MFA_USER}@127.0.0.1:{mfa.PASSWORD_PORT}"}
    code, status = await api("GET", "cluster-status", params={"refresh": "true"})
    assert status["mfajump"] == {"status": "idle", "login": "connected"}
    # Two jump hosts in a row (jump1, then jump2, then the login node), all with keys.
    assert status["twohops"] == {"status": "idle"}, status["twohops"]
    assert mfa.accepted("sshd-jump.log") == jump1 + 1
    ssh = manager.clusters["twohops"].ssh
    assert len(ssh._jumps[ssh.current()]) == 2


def assert_never_shown(secrets: list[str], replies: list[dict], log: str) -> None:
    for text in (json.dumps(replies), log):
        for secret in secrets:
            assert secret not in text, "a password or code was written out"


def sync_log_in(server: jupyter_process.Server, hpc: str, seen: list[str]) -> None:
    code = mfa.fresh_code()
    status, reply = server.call("POST", f"login/{hpc}", {})
    while reply.get("status") == "prompt":
        answers = [mfa.password() if "assword" in p["text"] else code for p in reply["prompts"]]
        status, reply = server.call("POST", f"login/{hpc}",
                                    {"loginId": reply["loginId"], "answers": answers})
    seen.append(code)
    assert (status, reply) == (200, {"status": "connected", "hpc": hpc}), reply


def test_a_server_restart_needs_a_new_login_and_then_finds_the_job(
        tmp_path, sandbox_cluster, echo_ide, secrets_seen, clean_slurm):
    server = jupyter_process.Server(tmp_path, {"mfakey": dict(
        sandbox_cluster, user=MFA_USER, port=mfa.KEY_PORT, ide_command=echo_ide,
        identity_file=str(SANDBOX / "mfauser_ed25519"), job_name="test-hpc-restart")})
    server.start()
    try:
        sync_log_in(server, "mfakey", secrets_seen)
        code, launched = server.call("POST", "launch", {"hpc": "mfakey", "mem": "1G"})
        assert (code, launched["status"]) == (200, "running"), launched
        server.kill()  # nothing of the connection survives the process
        server.start()
        code, status = server.call("GET", "cluster-status")
        entry = status["mfakey"]
        assert entry["login"] == "required" and entry["status"] == "unknown", entry
        assert entry["jobId"] == launched["jobId"]  # from the record: still ours
        sync_log_in(server, "mfakey", secrets_seen)
        code, status = server.call("GET", "cluster-status")
        assert (status["mfakey"]["status"], status["mfakey"]["jobId"]) == (
            "running", launched["jobId"])
        whoami = json.loads(server.fetch("hpc/mfakey/code/whoami").read())
        assert whoami["jobId"] == launched["jobId"]
    finally:
        server.stop()
    log = server.log.read_text()
    assert "logged in to mfakey" in log
    for secret in secrets_seen:
        assert secret not in log


def test_a_dropped_connection_keeps_the_kernel_and_a_login_takes_it_back(
        tmp_path, sandbox_cluster, echo_ide, secrets_seen, clean_slurm):
    """A notebook's kernel in the job, at an MFA site whose connection drops: the cluster says
    "log in again", the kernel is neither restarted nor dead (its step waits in the job), and
    after the login the same kernel process answers the same notebook."""
    from test_kernels import KERNEL_DISCOVERY, Kernel, kernel_steps, rest, wait_for

    server = jupyter_process.Server(tmp_path, {"mfakey": dict(
        sandbox_cluster, user=MFA_USER, port=mfa.KEY_PORT, ide_command=echo_ide,
        identity_file=str(SANDBOX / "mfauser_ed25519"), job_name="test-hpc-mfa-kernel",
        kernel_discovery=KERNEL_DISCOVERY)})
    server.start()
    kernel = None
    try:
        sync_log_in(server, "mfakey", secrets_seen)
        code, launched = server.call("POST", "launch", {"hpc": "mfakey", "mem": "1G"})
        assert (code, launched["status"]) == (200, "running"), launched
        job = launched["jobId"]
        wait_for("the job's kernelspec", lambda: "hpc-mfakey-python3" in rest(
            server, "GET", "api/kernelspecs")[1]["kernelspecs"])
        _, model = rest(server, "POST", "api/kernels", {"name": "hpc-mfakey-python3"})
        kernel = Kernel(server, model["id"])
        ran = kernel.execute("import os, getpass\nprint(getpass.getuser(), os.getpid())")
        user, pid = ran["out"].split()
        assert user == MFA_USER
        steps = kernel_steps(job)
        assert len(steps) == 1

        assert mfa.drop_connections("mfakey") > 0
        entry = wait_for("the cluster to say log in again", lambda: (
            lambda e: e if e.get("login") == "required" else None)(
                server.call("GET", "cluster-status")[1]["mfakey"]))
        assert "log in again" in entry["error"] and entry["jobId"] == job, entry
        # Two restarter polls later: not restarted, not dead; its step still runs in the job.
        time.sleep(7)
        assert rest(server, "GET", f"api/kernels/{model['id']}")[1]["execution_state"] != "dead"
        assert kernel_steps(job) == steps

        sync_log_in(server, "mfakey", secrets_seen)
        again = kernel.execute("print(os.getpid())", timeout=120)
        assert again["out"].strip() == pid  # the same process, found again where it ran
        assert kernel_steps(job) == steps
        # And it is this server's again: a shutdown ends its step.
        rest(server, "DELETE", f"api/kernels/{model['id']}")
        wait_for("the kernel's step to end", lambda: kernel_steps(job) == [])
    finally:
        if kernel is not None:
            kernel.close()
        server.stop()
    log = server.log.read_text()
    assert "taken back" in log
    for secret in secrets_seen:
        assert secret not in log
