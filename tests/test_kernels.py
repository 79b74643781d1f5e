"""Notebook kernels inside the running job, through a real Jupyter server (a subprocess, as a
user runs it) and the sandbox's SLURM: the job's kernelspecs appear and go; a kernel started
from one runs as a step of the job (its SLURM_JOB_ID, its node, the job's folder), answers
input(), is interrupted, restarts in the same job and ends with its step; a server that is
killed leaves no step behind; a job that ends takes its kernels with it."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
import websocket

from jupyter_hpc_manager import kernels

from jupyter_process import SANDBOX_USER, TOKEN, Server, home_file, slurm_jobs

KERNEL_DISCOVERY = "/opt/jupyter-hpc-sandbox/kernel-venv/bin/jupyter kernelspec list --json"
SPEC = "hpc-gemini-python3"


@pytest.fixture
def server(tmp_path, sandbox_cluster, clean_slurm, request):
    # (a test marked grace(s) sets kernel_reconnect_seconds)
    grace = request.node.get_closest_marker("grace")
    cluster = dict(sandbox_cluster, job_name=f"test-kernels-{uuid.uuid4().hex[:6]}",
                   kernel_discovery=KERNEL_DISCOVERY,
                   **({"kernel_reconnect_seconds": grace.args[0]} if grace else {}))
    s = Server(tmp_path / "server", {"gemini": cluster},
               extra="c.HPCManager.use_system_known_hosts = False\n")
    s.start()
    yield s
    s.stop()


def rest(server: Server, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{server.url}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        text = r.read()
        return r.status, (json.loads(text) if text else None)


def wait_for(what, check, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def kernel_steps(job_id: str) -> list[str]:
    """The job's steps that are kernels (squeue --steps), as SLURM lists them."""
    out = subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"],
                         capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if "hpc-kernel-" in line]


class Kernel:
    """A kernel through the Jupyter server's websocket, as JupyterLab talks to it."""

    def __init__(self, server: Server, kernel_id: str) -> None:
        self.server = server
        self.id = kernel_id
        url = server.url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
        self.ws = websocket.create_connection(
            url, header=[f"Authorization: token {TOKEN}"], timeout=60)
        self.session = uuid.uuid4().hex

    def send(self, msg_type: str, content: dict, channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel,
            "buffers": []}))
        return msg_id

    def execute(self, code: str, stdin: list[str] | None = None,
                interrupt_after: float | None = None, timeout: float = 60) -> dict:
        """Run code: its stdout text, the reply's status, the error's name (if any)."""
        msg_id = self.send("execute_request", {"code": code, "silent": False,
                                               "allow_stdin": stdin is not None,
                                               "store_history": False})
        out, reply, idle, started = "", None, False, time.monotonic()
        interrupted = False
        while reply is None or not idle:
            if (interrupt_after is not None and not interrupted
                    and time.monotonic() - started > interrupt_after):
                rest(self.server, "POST", f"api/kernels/{self.id}/interrupt")
                interrupted = True
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no answer to {code!r} in {timeout:.0f} s")
            self.ws.settimeout(1.0)
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out += msg["content"]["text"]
            elif kind == "input_request":
                self.send("input_reply", {"value": stdin.pop(0)}, channel="stdin")
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        return {"out": out, "status": reply["status"], "error": reply.get("ename")}

    def statuses_until_closed(self, timeout: float) -> list[str]:
        """The kernel's status messages until the server closes the websocket."""
        states: list[str] = []
        deadline = time.monotonic() + timeout
        self.ws.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                text = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException:
                self.ws.shutdown()
                return states
            if not text:  # (the close frame)
                self.ws.shutdown()
                return states
            msg = json.loads(text)
            if msg["header"]["msg_type"] == "status":
                states.append(msg["content"]["execution_state"])
        raise AssertionError(f"the websocket is still open after {timeout:.0f} s: {states}")

    def wait_status(self, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.ws.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if (msg["header"]["msg_type"] == "status"
                    and msg["content"]["execution_state"] == state):
                return
        raise AssertionError(f"no {state!r} status in {timeout:.0f} s")

    def close(self) -> None:
        self.ws.close()
        self.ws.shutdown()  # (the socket too, also when the server closed first)


def launch(server: Server, **more) -> dict:
    code, reply = server.call("POST", "launch", {"hpc": "gemini", "cpus": "2", "mem": "1G",
                                                 "time": "00:30:00", **more})
    assert code == 200 and reply["status"] == "running", reply
    return reply


def spec_of(server: Server) -> dict | None:
    return rest(server, "GET", "api/kernelspecs")[1]["kernelspecs"].get(SPEC)


def test_a_kernel_in_the_job_behaves_like_a_local_one(server):
    home_file(SANDBOX_USER, "kernel-test/a project/README", "the job's folder\n")
    job = launch(server, workdir="~/kernel-test/a project")["jobId"]
    # The launch has asked the job for its kernels: the specs are there, and the running
    # entry lists them (the sidebar refreshes the Launcher's specs when this list changes).
    spec = spec_of(server)
    display = f"Python 3 (ipykernel) on gemini (job {job}, node vm)"
    assert spec is not None and spec["spec"]["display_name"] == display
    assert spec["spec"]["interrupt_mode"] == "message"
    listed = [{"name": SPEC, "displayName": display}]
    assert server.call("GET", "cluster-status")[1]["gemini"]["kernels"] == listed
    assert server.call("GET", "status")[1]["sessions"]["gemini"]["kernels"] == listed

    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    try:
        # A step of the job, on its node, in the job's folder.
        ran = kernel.execute("import os, socket\n"
                             "print(os.environ['SLURM_JOB_ID'], os.environ.get('SLURM_STEP_ID'),"
                             " socket.gethostname(), os.getpid())\nprint(os.getcwd())")
        assert ran["status"] == "ok", ran
        first, cwd = ran["out"].splitlines()
        job_id, step_id, host, pid = first.split()
        assert job_id == job and step_id.isdigit()
        assert host == "vm"
        assert cwd == "/home/hpcuser/kernel-test/a project"
        assert kernel_steps(job) == [f"{job}.{step_id}"]

        # Its traffic on the node is CurveZMQ (the node's ipykernel declares it): others on
        # the node can neither run code (HMAC) nor read what it says.
        curve = kernel.execute("from ipykernel.kernelapp import IPKernelApp\n"
                               "print(IPKernelApp.instance().curve_secretkey is not None)")
        assert curve["out"].strip() == "True", curve

        # input() round trip.
        asked = kernel.execute("name = input('who? ')\nprint('hello', name)", stdin=["alice"])
        assert asked["out"].strip().endswith("hello alice"), asked

        # Interrupting time.sleep(100): message mode, the kernel lives on.
        stopped = kernel.execute("import time\ntime.sleep(100)", interrupt_after=2.0)
        assert stopped["error"] == "KeyboardInterrupt", stopped
        assert kernel.execute("print(6 * 7)")["out"].strip() == "42"

        # Restart: a new process, in the same job.
        rest(server, "POST", f"api/kernels/{model['id']}/restart")
        kernel.close()
        kernel = Kernel(server, model["id"])
        again = wait_for("the restarted kernel", lambda: kernel.execute(
            "import os\nprint(os.environ['SLURM_JOB_ID'], os.getpid())")["out"].split())
        assert again[0] == job and again[1] != pid
        assert len(kernel_steps(job)) == 1

        # Two notebooks: a second kernel of the same job.
        _, second = rest(server, "POST", "api/kernels", {"name": SPEC})
        other = Kernel(server, second["id"])
        assert other.execute("import os\nprint(os.environ['SLURM_JOB_ID'])")["out"].strip() == job
        assert len(kernel_steps(job)) == 2
        other.close()
        rest(server, "DELETE", f"api/kernels/{second['id']}")
        wait_for("the second kernel's step to end", lambda: len(kernel_steps(job)) == 1)
    finally:
        kernel.close()

    # Shutdown: the step ends; VS Code's job goes on.
    rest(server, "DELETE", f"api/kernels/{model['id']}")
    wait_for("the kernel's step to end", lambda: kernel_steps(job) == [])
    assert [j["state"] for j in slurm_jobs()] == ["RUNNING"]

    # The job ends: its kernelspec goes, and the entry no longer lists it.
    assert server.call("POST", "stop/gemini", {"cancelJob": True})[0] == 200
    assert spec_of(server) is None
    assert "kernels" not in server.call("GET", "cluster-status")[1]["gemini"]


@pytest.mark.grace(3)
def test_a_killed_server_leaves_no_kernel_step(server):
    """Its step waits kernel_reconnect_seconds (here 3) for the server to come back for it
    (as after a dropped connection), then is cancelled."""
    job = launch(server)["jobId"]
    wait_for("the job's kernelspec", lambda: spec_of(server))
    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    assert kernel.execute("print('up')")["out"].strip() == "up"
    assert len(kernel_steps(job)) == 1
    kernel.close()
    server.kill()  # SIGKILL: nothing of the server's own runs to clean up
    wait_for("the kernel's step to end", lambda: kernel_steps(job) == [], timeout=60)
    assert [j["state"] for j in slurm_jobs()] == ["RUNNING"]  # the job (VS Code) goes on


def test_a_stopped_server_ends_its_kernel_steps_at_once(server):
    """A server that stops (SIGTERM) shuts its kernels down before it lets its connections go:
    no step waits out kernel_reconnect_seconds (600 s here) for a server that will not come."""
    job = launch(server)["jobId"]
    wait_for("the job's kernelspec", lambda: spec_of(server))
    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    assert kernel.execute("print('up')")["out"].strip() == "up"
    kernel.close()
    server.stop()
    wait_for("the kernel's step to end", lambda: kernel_steps(job) == [], timeout=20)
    assert "cannot schedule new futures" not in server.log.read_text()


def test_a_job_that_ends_takes_its_kernel(server):
    job = launch(server)["jobId"]
    wait_for("the job's kernelspec", lambda: spec_of(server))
    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    try:
        assert kernel.execute("print('up')")["out"].strip() == "up"
        subprocess.run(["scancel", job], check=True)
        # The server closes the notebook's websocket (JupyterLab then reads the kernel's model
        # and shows its reason) without a "restarting" on the way: a restart cannot work.
        states = kernel.statuses_until_closed(timeout=120)
        assert "restarting" not in states, states
        # The kernel is dead, says why, and stays listed (a notebook that opens it reads why).
        _, now = rest(server, "GET", f"api/kernels/{model['id']}")
        assert now["execution_state"] == "dead", now
        assert f"gemini's job {job} ended outside this server" in now["reason"], now
        assert "launch a new job from the HPC panel" in now["reason"], now
        # A restart asked for says the same, and starts nothing.
        with pytest.raises(urllib.error.HTTPError) as refused:
            rest(server, "POST", f"api/kernels/{model['id']}/restart")
        refused.value.close()
        assert refused.value.code == 500
    finally:
        kernel.close()
    assert kernel_steps(job) == []
    # Nothing of the kernel's is left on the cluster (its connection file, its log).
    assert not list(pathlib.Path("/home/hpcuser/.jupyter-hpc-manager/kernels").glob("*"))
    # The server's sockets knocked at the gone kernel's ports meanwhile: each refusal is ours
    # to handle, not a line of paramiko's on the server's terminal (there were dozens).
    assert "open FAILED" not in server.log.read_text()


def test_a_kernel_that_dies_by_itself_is_restarted_in_the_job(server):
    """As a local kernel: the process exits (os._exit) while its job runs on; the server
    restarts it, in the same job, and the notebook goes on."""
    job = launch(server)["jobId"]
    wait_for("the job's kernelspec", lambda: spec_of(server))
    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    try:
        pid = kernel.execute("import os\nprint(os.getpid())")["out"].strip()
        kernel.send("execute_request", {"code": "import os; os._exit(3)", "silent": False,
                                        "allow_stdin": False, "store_history": False})
        kernel.wait_status("restarting", timeout=90)
        again = wait_for("the restarted kernel", lambda: kernel.execute(
            "import os\nprint(os.environ['SLURM_JOB_ID'], os.getpid())")["out"].split())
        assert again[0] == job and again[1] != pid
        assert len(kernel_steps(job)) == 1
        assert rest(server, "GET", f"api/kernels/{model['id']}")[1]["execution_state"] != "dead"
    finally:
        kernel.close()
        rest(server, "DELETE", f"api/kernels/{model['id']}")


def test_a_hung_kernel_is_restarted_from_the_notebook(server):
    """The kernel hangs on its node (SIGSTOP: it answers nothing, not even an interrupt): the
    notebook's Restart still works (the step is ended, as a local kernel is killed), the new
    kernel runs in the same job, and the hung process is gone."""
    job = launch(server)["jobId"]
    wait_for("the job's kernelspec", lambda: spec_of(server))
    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    try:
        pid = int(kernel.execute("import os\nprint(os.getpid())")["out"].strip())
        os.kill(pid, signal.SIGSTOP)  # (the job's node is this machine)
        code, _ = rest(server, "POST", f"api/kernels/{model['id']}/restart")
        assert code == 200
        kernel.close()
        kernel = Kernel(server, model["id"])
        again = wait_for("the restarted kernel", lambda: kernel.execute(
            "import os\nprint(os.environ['SLURM_JOB_ID'], os.getpid())")["out"].split())
        assert again[0] == job and int(again[1]) != pid
        wait_for("the hung process to be gone", lambda: not pathlib.Path(f"/proc/{pid}").exists())
        assert len(kernel_steps(job)) == 1
    finally:
        kernel.close()
        rest(server, "DELETE", f"api/kernels/{model['id']}")


def _exists(server: Server, kernel_id: str) -> bool:
    try:
        rest(server, "GET", f"api/kernels/{kernel_id}")
        return True
    except urllib.error.HTTPError:
        return False


def test_a_gpu_jobs_kernel_sees_its_gpu(server):
    code, reply = server.call("POST", "launch", {"hpc": "gemini", "partition": "gpu",
                                                 "gpus": "1", "cpus": "1", "mem": "1G",
                                                 "time": "00:30:00"})
    assert code == 200 and reply["status"] == "running", reply
    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    try:
        ran = kernel.execute("import os\nprint(os.environ.get('CUDA_VISIBLE_DEVICES'), "
                             "os.environ['SLURMD_NODENAME'])")
        devices, node = ran["out"].split()
        assert node == reply["node"] == "vm-gpu"
        assert devices == "0"  # the job's one GPU, as SLURM gives it to the job's steps
    finally:
        kernel.close()
        rest(server, "DELETE", f"api/kernels/{model['id']}")


async def test_a_job_without_kernels_is_asked_once_not_per_poll(api, manager, clean_slurm):
    # echo1's job has no `jupyter` on its PATH (the default kernel_discovery fails there).
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    for _ in range(5):
        await api("GET", "status")
        await api("GET", "cluster-status")
    assert manager.commands["kernels"] == 1
    code, status = await api("GET", "cluster-status")
    assert "kernels" not in status["echo1"]


async def test_kernel_websockets_have_no_nagle_delay(jp_fetch, jp_ws_fetch, manager):
    """The server's end of a kernel's websocket (any kernel's: a local one here) has
    TCP_NODELAY: with Nagle on, each small frame of a reply after the first waits for the
    browser's delayed ACK, about 40 ms per `1+1` (bench/kernel.py)."""
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(r.body)["id"]
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        connections = list(kernels._websockets.get(kernel_id, ()))
        assert len(connections) == 1, "the websocket is not jupyter-hpc-manager's"
        sock = connections[0].websocket_handler.ws_connection.stream.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        ws.close()
        while await asyncio.wait_for(ws.read_message(), 10) is not None:
            pass  # (until the server's close: the socket is closed then)
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
