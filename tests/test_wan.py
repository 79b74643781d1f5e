"""A cluster 30 ms away (bench/wan.py's delay relay in front of the sandbox's login node, 15 ms
each way, as from a laptop at home to a university's cluster): the whole path works at that
distance, not only on loopback. A launch, VS Code through the proxy, and notebook kernels in the
job: a cell run right after each start gets its output (what a slow link loses first: zmq drops
what is published before a subscriber has joined), interrupt, restart, a second kernel, and
shutdown and stop leave nothing on the cluster. Times are not asserted (bench/kernel.py measures
them); what the user sees is."""

from __future__ import annotations

import json
import pathlib
import sys
import urllib.request

import pytest
from test_kernels import KERNEL_DISCOVERY, Kernel, kernel_steps, rest, wait_for

from jupyter_process import TOKEN, Server, slurm_jobs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
from wan import Relay, known_hosts_for

RTT_MS = 30
SPEC = "hpc-far-python3"


@pytest.fixture
def far_server(tmp_path, sandbox_cluster, echo_ide, clean_slurm):
    relay = Relay(RTT_MS)
    server = None
    try:
        cluster = dict(sandbox_cluster, port=relay.port,
                       known_hosts=known_hosts_for(relay.port, tmp_path),
                       job_name="test-hpc-far", ide_command=echo_ide,
                       kernel_discovery=KERNEL_DISCOVERY)
        server = Server(tmp_path / "server", {"far": cluster},
                        extra="c.HPCManager.use_system_known_hosts = False\n")
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        relay.stop()


def whoami(server: Server) -> dict:
    request = urllib.request.Request(f"{server.url}hpc/far/code/whoami",
                                     headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def test_a_cluster_30_ms_away_runs_vscode_and_notebook_kernels(far_server):
    server = far_server
    code, reply = server.call("POST", "launch", {"hpc": "far", "mem": "1G"})
    assert (code, reply["status"]) == (200, "running"), reply
    job = reply["jobId"]
    assert whoami(server)["jobId"] == job  # VS Code through the proxy, over the slow link
    wait_for("the job's kernelspec", lambda: SPEC in rest(
        server, "GET", "api/kernelspecs")[1]["kernelspecs"])

    # Three fresh kernels, each asked the moment it exists: every first cell gets its output.
    for _ in range(3):
        _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
        kernel = Kernel(server, model["id"])
        try:
            first = kernel.execute("import os\nprint(os.environ['SLURM_JOB_ID'])")
            assert (first["status"], first["out"].strip()) == ("ok", job), first
        finally:
            kernel.close()
        rest(server, "DELETE", f"api/kernels/{model['id']}")
    wait_for("the kernels' steps to end", lambda: kernel_steps(job) == [])

    _, model = rest(server, "POST", "api/kernels", {"name": SPEC})
    kernel = Kernel(server, model["id"])
    try:
        pid = kernel.execute("import os\nprint(os.getpid())")["out"].strip()
        stopped = kernel.execute("import time\ntime.sleep(100)", interrupt_after=2.0)
        assert stopped["error"] == "KeyboardInterrupt", stopped
        # A megabyte of output arrives whole.
        big = kernel.execute("print('x' * 1_000_000)")
        assert big["out"].strip() == "x" * 1_000_000
        rest(server, "POST", f"api/kernels/{model['id']}/restart")
        kernel.close()
        kernel = Kernel(server, model["id"])
        again = wait_for("the restarted kernel", lambda: kernel.execute(
            "import os\nprint(os.getpid())")["out"].strip())
        assert again != pid
        # A second notebook's kernel beside it, in the same job.
        _, second = rest(server, "POST", "api/kernels", {"name": SPEC})
        other = Kernel(server, second["id"])
        try:
            assert other.execute("print(6 * 7)")["out"].strip() == "42"
        finally:
            other.close()
        assert len(kernel_steps(job)) == 2
    finally:
        kernel.close()
    code, stopped = server.call("POST", "stop/far", {"cancelJob": True})
    assert (code, stopped["cancelledJobs"]) == (200, [job]), stopped
    wait_for("the job to leave the queue", lambda: slurm_jobs() == [])
    assert not list(pathlib.Path("/home/hpcuser/.jupyter-hpc-manager/kernels").glob("*"))
