"""The login node's shell scripts of a kernel's step (kernels.py), run by a local sh against
stub squeue and scancel: a step taken back after a lost connection is watched by the new
channel; one nobody takes back is cancelled when its grace runs out; one that is gone is
reported, not claimed. Every value is quoted."""

from __future__ import annotations

import json
import os
import pathlib
import select
import shlex
import subprocess
import sys
import time

import pytest

from jupyter_hpc_manager import kernels


@pytest.fixture
def cluster(tmp_path: pathlib.Path, monkeypatch) -> dict:
    """A home, and squeue/scancel stubs: squeue lists the step while `alive` exists; scancel
    records its argv and ends the step."""
    home = tmp_path / "home"
    home.mkdir()
    alive = tmp_path / "alive"
    calls = tmp_path / "scancel-calls"
    squeue = tmp_path / "squeue"
    squeue.write_text(f"#!/bin/sh\n[ -e {alive} ] && echo 1234.7\nexit 0\n")
    scancel = tmp_path / "scancel"
    scancel.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nrm -f {alive}\n')
    for stub in (squeue, scancel):
        stub.chmod(0o755)
    monkeypatch.setattr(kernels, "CLAIM_POLL", 0.1)
    (home / "jhm" / "kernels").mkdir(parents=True)
    return {"home": home, "alive": alive, "calls": calls, "squeue": str(squeue),
            "scancel": str(scancel), "kernels": home / "jhm" / "kernels"}


def claim(cluster: dict, grace: int, generation: int = 1) -> str:
    return kernels.claim_command(remote_dir="jhm", name="hpc-kernel-abc", job="1234",
                                 step="1234.7", generation=generation, grace=grace,
                                 squeue=cluster["squeue"], scancel=cluster["scancel"])


def run(cluster: dict, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[:2] == ["sh", "-c"]  # one shell, its script one quoted word
    return subprocess.run(argv, input=b"", capture_output=True, timeout=timeout,
                          env={**os.environ, "HOME": str(cluster["home"])})


def scancels(cluster: dict) -> list[str]:
    path = cluster["calls"]
    return path.read_text().splitlines() if path.exists() else []


def test_a_step_that_is_gone_is_not_claimed(cluster):
    done = run(cluster, claim(cluster, grace=5))
    assert done.returncode == 1
    assert json.loads(done.stdout.splitlines()[0]) == {
        "error": "the kernel is no longer running in the job"}
    assert scancels(cluster) == []
    assert list(cluster["kernels"].iterdir()) == []


def test_a_claimed_step_is_cancelled_when_its_new_channel_closes_and_nobody_claims_it(cluster):
    cluster["alive"].touch()
    # (stdin is empty: the channel closes at once; grace 1 s, no claim of generation 2)
    done = run(cluster, claim(cluster, grace=1))
    assert json.loads(done.stdout.splitlines()[0]) == {"step": "1234.7"}
    assert scancels(cluster) == ["--quiet 1234.7"]
    assert list(cluster["kernels"].iterdir()) == []  # its claim files went with it
    assert done.returncode == 0  # (it ended with its step)


def test_a_step_claimed_again_in_time_is_left_running(cluster):
    cluster["alive"].touch()
    (cluster["kernels"] / "hpc-kernel-abc.claim3").touch()  # the next server took it back

    proc = subprocess.Popen(shlex.split(claim(cluster, grace=30, generation=2)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "HOME": str(cluster["home"])})
    try:
        assert json.loads(proc.stdout.readline()) == {"step": "1234.7"}
        # Its claim, for the watcher of the channel before it.
        assert (cluster["kernels"] / "hpc-kernel-abc.claim2").exists()
        proc.stdin.close()  # this channel goes
        # The step still runs: this shell follows it until it ends, and cancels nothing.
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.5)
        cluster["alive"].unlink()  # the step ends (the kernel shut down)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert scancels(cluster) == []


def test_a_step_that_ends_ends_its_channel_even_while_its_watcher_waits(cluster):
    """The channel closed, the watcher waits out its grace; the step then ends by itself: the
    shell's output ends at once (the channel closes, the server sees the end) and the watcher
    goes too, cancelling nothing."""
    cluster["alive"].touch()
    proc = subprocess.Popen(shlex.split(claim(cluster, grace=60)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            env={**os.environ, "HOME": str(cluster["home"])})
    try:
        assert json.loads(proc.stdout.readline()) == {"step": "1234.7"}
        proc.stdin.close()
        time.sleep(0.5)  # (the watcher is in its grace now)
        cluster["alive"].unlink()
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready and proc.stdout.read() == b""  # the end of the output, not 60 s later
        assert proc.wait(5) == 0
        deadline = time.monotonic() + 5
        while watchers(cluster) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watchers(cluster) == []
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert scancels(cluster) == []


def watchers(cluster: dict) -> list[str]:
    """Shells still running with this test's home in their environment."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"HOME={cluster['home']}".encode() in env.split(b"\0"):
            found.append(pid)
    return found


def test_every_value_is_quoted():
    command = kernels.claim_command(remote_dir="jhm", name="hpc-kernel-abc",
                                    job="1234; touch /tmp/x", step="1234.7$(id)",
                                    generation=1, grace=5)
    script = shlex.split(command)[2]
    assert "'1234; touch /tmp/x'" in script and "'1234.7$(id)'" in script
    start = kernels.step_command(remote_dir="jhm", name="hpc-kernel-abc", job="1234",
                                 node="vm;id", argv=["python", "-f", "{connection_file}",
                                                     "a b"], size=10, grace=5)
    script = shlex.split(start)[2]
    assert "-w 'vm;id'" in script and "'a b'" in script and '-f "$f"' in script
    for cmd in (command, start):
        assert subprocess.run(["sh", "-n", "-c", shlex.split(cmd)[2]]).returncode == 0


@pytest.mark.parametrize("job_folder_known", [True, False])
def test_a_start_asks_slurmctld_nothing_but_srun(cluster, tmp_path, job_folder_known):
    """The start's path: the job's folder comes from the file its script wrote, the step's id
    from the step itself; squeue and scontrol (slurmctld, slow on a busy site) are not asked.
    A job of an older version (no folder file) still gets its folder, from scontrol."""
    folder = tmp_path / "a project"
    folder.mkdir()
    if job_folder_known:
        (cluster["home"] / "jhm" / "job-1234.wd").write_text(f"{folder}\n")
    asked = tmp_path / "asked"
    stubs = tmp_path / "bin"
    stubs.mkdir()
    # srun as SLURM runs a step: its options, then the command in the step's environment.
    (stubs / "srun").write_text(
        f'#!/bin/sh\necho "srun $*" >> {asked}\n'
        'while [ $# -gt 0 ]; do case "$1" in\n'
        '  --chdir=*) cd "${1#--chdir=}"; shift;;\n'
        '  -w) shift 2;;\n'
        '  -*) shift;;\n'
        '  *) break;;\nesac; done\n'
        'SLURM_JOB_ID=1234 SLURM_STEP_ID=7 exec "$@"\n')
    (stubs / "scontrol").write_text(
        f'#!/bin/sh\necho "scontrol $*" >> {asked}\necho "   WorkDir={folder}"\n')
    (stubs / "squeue").write_text(f'#!/bin/sh\necho "squeue $*" >> {asked}\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    # The "kernel": writes the ports it bound into its connection file, then runs.
    kernel = ("import json, os, sys, time; f = sys.argv[1]; "
              "json.dump({'control_port': 5001, 'shell_port': 5002}, open(f + '.tmp', 'w')); "
              "os.rename(f + '.tmp', f); time.sleep(30)")
    command = kernels.step_command(remote_dir="jhm", name="hpc-kernel-abc", job="1234",
                                   node="vm", argv=[sys.executable, "-c", kernel,
                                                    "{connection_file}"],
                                   size=2, grace=0, srun=str(stubs / "srun"),
                                   squeue=str(stubs / "squeue"), scancel=cluster["scancel"],
                                   scontrol=str(stubs / "scontrol"))
    env = {**os.environ, "HOME": str(cluster["home"]),
           "PATH": f"{stubs}:{os.environ['PATH']}"}
    proc = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b"{}")
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())
        assert reply["step"] == "1234.7"
        assert reply["ports"]["control_port"] == 5001 and reply["ports"]["shell_port"] == 5002
        calls = asked.read_text().splitlines()
        assert [c.split()[0] for c in calls] == (
            ["srun"] if job_folder_known else ["scontrol", "srun"]), calls
        assert f"--chdir={folder}" in calls[-1]
        assert not (cluster["kernels"] / "hpc-kernel-abc.step").exists()
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()
        proc.stdout.close()
