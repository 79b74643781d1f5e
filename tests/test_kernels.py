"""Notebook kernels inside the running job, through a real Jupyter server (a subprocess, as a
user runs it) and the sandbox's SLURM: the job's kernelspecs appear and go; a kernel started
from one runs as a step of the job (its SLURM_JOB_ID, its node, the job's folder), answers
input(), is interrupted, restarts in the same job and ends with its step; a server that is
killed leaves no step behind; a job that ends takes its kernels with it."""

from __future__ import annotations

import json
import pathlib
import subprocess
import time
import urllib.request
import uuid

import pytest
import websocket

from jupyter_process import TOKEN, Server, slurm_jobs

KERNEL_DISCOVERY = "/opt/jupyter-hpc-sandbox/kernel-venv/bin/jupyter kernelspec list --json"
SPEC = "hpc-gemini-python3"


@pytest.fixture
def server(tmp_path, sandbox_cluster, clean_slurm):
    cluster = dict(sandbox_cluster, job_name=f"test-kernels-{uuid.uuid4().hex[:6]}",
                   kernel_discovery=KERNEL_DISCOVERY)
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

    def close(self) -> None:
        self.ws.close()


def launch(server: Server) -> dict:
    code, reply = server.call("POST", "launch", {"hpc": "gemini", "cpus": "2", "mem": "1G",
                                                 "time": "00:30:00"})
    assert code == 200 and reply["status"] == "running", reply
    return reply


def spec_of(server: Server) -> dict | None:
    return rest(server, "GET", "api/kernelspecs")[1]["kernelspecs"].get(SPEC)


def test_a_kernel_in_the_job_behaves_like_a_local_one(server):
    job = launch(server)["jobId"]
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
                             " socket.gethostname(), os.getcwd(), os.getpid())")
        assert ran["status"] == "ok", ran
        job_id, step_id, host, cwd, pid = ran["out"].split()
        assert job_id == job and step_id.isdigit()
        assert host == "vm"
        assert cwd == "/home/hpcuser"
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


def test_a_killed_server_leaves_no_kernel_step(server):
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


def test_a_job_that_ends_takes_its_kernel(server):
    job = launch(server)["jobId"]
    wait_for("the job's kernelspec", lambda: spec_of(server))
    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    try:
        assert kernel.execute("print('up')")["out"].strip() == "up"
        subprocess.run(["scancel", job], check=True)
        # The kernel is dead (the server says so), not "idle" for ever.
        wait_for("the kernel to be dead", lambda: rest(
            server, "GET", f"api/kernels/{model['id']}")[1]["execution_state"] == "dead"
            if _exists(server, model["id"]) else True, timeout=120)
    finally:
        kernel.close()
    assert kernel_steps(job) == []
    # Nothing of the kernel's is left on the cluster (its connection file, its log).
    assert not list(pathlib.Path("/home/hpcuser/.jupyter-hpc-manager/kernels").glob("*"))


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
