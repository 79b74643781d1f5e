#!/usr/bin/env python
"""Benchmark of the control plane against the sandbox, with its baselines measured in the same run:

  1. cached cluster-status vs Jupyter's own GET /api/status on the same server (target <= 1.5)
  2. cluster-status?refresh=true vs OpenSSH `ssh` running the same squeue over an open
     ControlMaster connection (target <= 1.5)
  3. SSH connections the login node accepted during 200 API calls (target: 1 per cluster)
  4. a launch's own overhead: POST launch to its reply, minus what SLURM and code-server took
     as seen in the same run (SLURM: sbatch's return, in the server's log, to the job's start,
     in the job log; code-server: the job's start to "HTTP server listening", in the job log),
     split into what comes before sbatch returns and after code-server listens. Real
     code-server, default poll_interval.

Requests alternate between the measured call and its baseline so both see the same noise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import pathlib
import pwd
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jupyter_hpc_manager import slurm  # noqa: E402

from jupyter_process import SANDBOX, TOKEN, Server, sandbox_cluster  # noqa: E402

HEADERS = {"Authorization": f"token {TOKEN}"}


def get(conn: http.client.HTTPConnection, path: str) -> float:
    t0 = time.perf_counter()
    conn.request("GET", path, headers=HEADERS)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - t0
    if response.status != 200:
        raise SystemExit(f"GET {path} -> {response.status}: {body[:300]!r}")
    return elapsed


def accepted_logins() -> int:
    log = SANDBOX / "sshd.log"
    return sum("Accepted publickey for hpcuser" in line
               for line in log.read_text(errors="replace").splitlines())


def stamp(pattern: str, text: str, fmt: str, utc: bool) -> float:
    """The time (epoch seconds) in the first line matching pattern (its group 1)."""
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        raise SystemExit(f"not found in the log: {pattern}")
    when = dt.datetime.strptime(m[1], fmt)
    return when.replace(tzinfo=dt.timezone.utc).timestamp() if utc else when.timestamp()


def launch_overhead(server: Server, job_name: str, runs: int) -> list[tuple[float, ...]]:
    """(total, SLURM, code-server, ours before sbatch returned, ours after it listened) per
    launch, in seconds."""
    home = pathlib.Path(pwd.getpwnam(sandbox_cluster()["user"]).pw_dir)
    out = []
    for _ in range(runs):
        t0 = time.time()
        code, reply = server.call("POST", "launch", {"hpc": "gemini", "mem": "1G"})
        t1 = time.time()
        if code != 200 or reply["status"] != "running":
            raise SystemExit(f"launch failed: {reply}")
        job = reply["jobId"]
        job_log = (home / ".jupyter-hpc-manager" / "logs" / f"{job_name}-{job}.log").read_text()
        submitted = stamp(rf"^\[I (\S+ \S+) .*launch on gemini submitted job {job} ",
                          server.log.read_text(), "%Y-%m-%d %H:%M:%S.%f", utc=False)
        started = stamp(rf"job {job} started on \S+ at (\S+)Z$", job_log,
                        "%Y-%m-%dT%H:%M:%S.%f", utc=True)
        listening = stamp(r"^\[(\S+)Z\] info  HTTP server listening on", job_log,
                          "%Y-%m-%dT%H:%M:%S.%f", utc=True)
        out.append((t1 - t0, started - submitted, listening - started, submitted - t0,
                    t1 - listening))
        code, _ = server.call("POST", "stop", {"cancelJob": True})
        if code != 200:
            raise SystemExit("stop failed")
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="requests per measurement")
    parser.add_argument("--launches", type=int, default=5, help="launches for row 4")
    args = parser.parse_args()
    cluster = sandbox_cluster()
    clusters = {"gemini": dict(cluster, job_name="bench-hpc-gemini"),
                "apollo": dict(cluster, job_name="bench-hpc-apollo")}
    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="jhm-bench-") as tmp:
        server = Server(pathlib.Path(tmp), clusters,
                        extra="c.HPCManager.refresh_min_interval = 0.0\n")
        logins_before = accepted_logins()
        server.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            # -- 3 first, from a cold server: every SSH connection it opens is counted.
            paths = ["/api/hpc/cluster-status", "/api/hpc/cluster-status?refresh=true",
                     "/api/hpc/status", "/api/hpc/health"]
            for i in range(200):
                get(conn, paths[i % len(paths)])
            time.sleep(0.5)  # sshd writes its log line asynchronously
            logins = accepted_logins() - logins_before

            # -- 1: cached cluster-status vs Jupyter's /api/status
            for _ in range(20):
                get(conn, "/api/status")
                get(conn, "/api/hpc/cluster-status")
            base, ours = [], []
            for _ in range(args.n):
                base.append(get(conn, "/api/status"))
                ours.append(get(conn, "/api/hpc/cluster-status"))
            b1, o1 = statistics.median(base), statistics.median(ours)
            rows.append(("cached cluster-status", ms(o1), "GET /api/status (Jupyter)", ms(b1),
                         f"{o1 / b1:.2f}"))

            # -- 2: refresh vs ssh over a ControlMaster connection running the same squeue
            control = pathlib.Path(tmp) / "cm.sock"
            ssh = ["ssh", "-p", str(cluster["port"]), "-i", cluster["identity_file"],
                   "-o", f"UserKnownHostsFile={cluster['known_hosts']}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                   "-o", f"ControlPath={control}", f"{cluster['user']}@{cluster['host']}"]
            master = subprocess.Popen([*ssh[:-1], "-o", "ControlMaster=yes", "-N", ssh[-1]])
            for _ in range(100):
                if control.exists():
                    break
                time.sleep(0.05)
            squeue = slurm.shell_join(slurm.squeue_argv("squeue", "bench-hpc-gemini"))
            try:
                def over_ssh() -> float:
                    t0 = time.perf_counter()
                    subprocess.run([*ssh, squeue], check=True, stdout=subprocess.DEVNULL)
                    return time.perf_counter() - t0

                for _ in range(5):
                    over_ssh()
                    get(conn, "/api/hpc/cluster-status?refresh=true")
                base, ours = [], []
                for _ in range(max(20, args.n // 2)):
                    base.append(over_ssh())
                    ours.append(get(conn, "/api/hpc/cluster-status?refresh=true"))
            finally:
                master.terminate()
                master.wait()
            b2, o2 = statistics.median(base), statistics.median(ours)
            rows.append(("refresh (2 clusters, 1 squeue each)", ms(o2),
                         "ssh ControlMaster squeue (1)", ms(b2), f"{o2 / b2:.2f}"))
        finally:
            server.stop()
        # -- 4: a launch's own overhead, with the poll interval users get by default
        server = Server(pathlib.Path(tmp) / "launch", clusters,
                        extra="c.HPCManager.poll_interval = 1.0\n")
        server.start()
        try:
            launches = launch_overhead(server, "bench-hpc-gemini", args.launches)
        finally:
            server.stop()

    print()
    print("| measure | ours (median ms) | baseline | baseline (median ms) | ratio |")
    print("|---|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1].strip()} | {r[2]} | {r[3].strip()} | {r[4]} |")
    print(f"| SSH connections opened during 200 API calls | {logins} | clusters | "
          f"{len(clusters)} | {logins / len(clusters):.2f} per cluster |")
    print()
    print("targets: cached ratio <= 1.5; refresh ratio <= 1.5; 1 connection per cluster")
    med = [statistics.median(col) for col in zip(*launches, strict=True)]
    print()
    print(f"launch overhead, median of {len(launches)} launches (seconds):")
    print("| POST launch to reply | SLURM: sbatch returned to job start | code-server: job start "
          "to listening | ours | of which before sbatch returned | after code-server listened |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} | {med[0] - med[1] - med[2]:.2f} | "
          f"{med[3]:.2f} | {med[4]:.2f} |")


if __name__ == "__main__":
    main()
