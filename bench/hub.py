#!/usr/bin/env python
"""Hub-scale numbers, against the sandbox JupyterHub (`make hub-up`), baselines in the same run:

  1. memory (RSS) of one idle single-user server of the Hub's environment, as alice: without the
     extension, with it, and with it after its panel's first status call (SSH connections open)
  2. squeue calls per minute that N idle open panels cause (N = 1 and 10 simulated clients of the
     REST API, polling as the sidebar does: cluster-status every 30 s), against a plain cron
     running squeue once a minute per user; counted on the cluster side, over --minutes
  3. time from the Hub's login form to a running VS Code (Chromium: log in, launch from the
     panel, open VS Code, the Explorer lists the home folder), median of --runs
  4. the squeue budget of --users users with the panel open (bench/panel.py: a simulated
     sidebar that polls as labextension/src/model.ts does), per cluster, per user and per
     minute, counted on the cluster side, in four states: idle; launching (the node filled by
     another user's job: the launch's own polling until launch_timeout, plus the panel's);
     pending (the job queued behind that job); running. The budget: one squeue per cluster per
     cache TTL per user outside a launch (pending_cache_ttl while the user's own job pends),
     plus the launch's own polling (one per poll_interval). The sandbox Hub has two users
     (alice, bob), so the users are independent `jupyter server` processes of this checkout
     (tests/jupyter_process.py's Server, each with its own SSH connection and caches), all as
     the sandbox's cluster user with job names of their own. `--parts budget` runs only this
     (about 3 x --minutes + 1 min)
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import itertools
import json
import math
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "hub"))

from panel import Panel  # noqa: E402

from hubtools import HUB, SANDBOX, hub_api  # noqa: E402
from jupyter_process import (  # noqa: E402
    MFA_USER,
    TOKEN,
    Server,
    cancel_all_jobs,
    free_port,
    home_file,
    sandbox_cluster,
    squeue_of,
)

HUB_VENV = pathlib.Path("/opt/jupyter-hpc-sandbox/hub-venv")


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no RSS for {pid}")


def get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def idle_server_memory() -> tuple[float, float, float]:
    """As alice, with the Hub's environment and its one config: jupyter server without the
    extension, with it, and with it after one cluster-status."""
    out = []
    for extension in (False, True):
        port = free_port()
        argv = ["runuser", "-u", "alice", "--", "env", f"JUPYTER_CONFIG_PATH={SANDBOX}/hub/etc",
                f"{HUB_VENV}/bin/jupyter", "server", f"--port={port}", "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
                "--ServerApp.root_dir=/home/alice"]
        if not extension:
            argv.append("--ServerApp.jpserver_extensions={'jupyter_hpc_manager': False}")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    get(f"{base}/api/status", TOKEN)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(2)  # settled
            server = next(int(p) for p in subprocess.run(
                ["pgrep", "-u", "alice", "-f", f"server --port={port} "], capture_output=True,
                text=True).stdout.split())
            out.append(rss_mib(server))
            if extension:
                get(f"{base}/api/hpc/cluster-status", TOKEN)
                time.sleep(2)
                out.append(rss_mib(server))
        finally:
            subprocess.run(["pkill", "-u", "alice", "-f", f"server --port={port} "], check=False)
            proc.wait(30)
    return out[0], out[1], out[2]


def panel_polling(minutes: float, panels: tuple[int, ...]) -> dict[int, float]:
    """squeue calls per minute and per user caused by N panels polling one user's server."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="jhm-bench-hub-"))
    folder.chmod(0o777)
    wrapper = folder / "squeue-counting"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{folder}/calls.log"\nexec squeue "$@"\n')
    wrapper.chmod(0o755)
    cluster = dict(sandbox_cluster(), squeue=str(wrapper))
    servers = {n: Server(folder / f"n{n}", {
        "gemini": dict(cluster, job_name=f"bench-poll{n}-gemini"),
        "apollo": dict(cluster, job_name=f"bench-poll{n}-apollo")}) for n in panels}
    stop = time.monotonic() + minutes * 60
    threads = []
    try:
        for n, server in servers.items():
            server.start()

            def poll(s: Server = server) -> None:
                # The sidebar: a status call when it opens, then every 30 s (pollSeconds).
                while time.monotonic() < stop:
                    s.call("GET", "cluster-status")
                    time.sleep(min(30, max(0, stop - time.monotonic())))

            threads += [threading.Thread(target=poll) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for server in servers.values():
            server.stop()
    log = (folder / "calls.log").read_text().splitlines() if (folder / "calls.log").exists() \
        else []
    return {n: sum(f"--name=bench-poll{n}-" in line for line in log) / minutes for n in panels}


# -- 4. the squeue budget ---------------------------------------------------------------------

BUDGET_CLUSTERS = ("gemini", "apollo")


def fill_node() -> str:
    """Another user's job holds every CPU of the debug node (tests/conftest.py's filled_node)."""
    job = subprocess.run(
        ["runuser", "-u", MFA_USER, "--", "sbatch", "--parsable", "--job-name=bench-filler",
         "--cpus-per-task=16", "--mem=1G", "--time=00:15:00", "--partition=debug",
         "--output=/dev/null", "--wrap=sleep 900"],
        capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()
    for _ in range(120):
        if squeue_of(job, "%T") == "RUNNING":
            return job
        time.sleep(0.5)
    raise SystemExit(f"the filler job {job} did not start")


def wait_until(what: str, test, seconds: float) -> float:
    deadline = time.monotonic() + seconds
    while not test():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {seconds:.0f} s")
        time.sleep(0.5)
    return time.time()


def squeue_budget(minutes: float, users: int, cache_ttl: int, pending_ttl: float,
                  poll_interval: float, launch_seconds: float) -> list[dict]:
    """Rows of squeue calls per cluster, per user and per minute, by state (see the module's
    docstring, part 4). Every call is counted by a wrapper on the cluster side, with its time."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="jhm-bench-budget-"))
    folder.chmod(0o777)
    log = folder / "calls.log"
    wrapper = folder / "squeue-counting"
    wrapper.write_text('#!/bin/sh\nprintf \'%s %s\\n\' "$(date +%s.%N)" "$*" >> '
                       f'"{log}"\nexec squeue "$@"\n')
    wrapper.chmod(0o755)
    shutil.copy(ROOT / "tests" / "resources" / "echo_ide.py", folder / "echo_ide.py")
    (folder / "echo_ide.py").chmod(0o755)
    cluster = dict(sandbox_cluster(), squeue=str(wrapper),
                   ide_command=f"python3 {folder / 'echo_ide.py'}")
    extra = (f"c.HPCManager.cache_ttl = {cache_ttl}\n"
             f"c.HPCManager.pending_cache_ttl = {pending_ttl}\n"
             f"c.HPCManager.poll_interval = {poll_interval}\n"
             f"c.HPCManager.launch_timeout = {launch_seconds}\n")
    names = [f"bench-u{i}" for i in range(users)]
    servers = [Server(folder / name, {
        hpc: dict(cluster, job_name=f"{name}-{hpc}") for hpc in BUDGET_CLUSTERS}, extra=extra)
        for name in names]
    panels: list[Panel] = []
    windows: dict[str, dict[str, tuple[float, float]]] = {}  # state -> user -> (from, to)
    launches: dict[str, str] = {}
    cancel_all_jobs()
    try:
        with concurrent.futures.ThreadPoolExecutor(users) as pool:
            list(pool.map(Server.start, servers))
        panels = [Panel(s.call) for s in servers]
        for p in panels:
            p.start()
        time.sleep(5)  # the first ticks (each cluster asked once) are behind us

        def everyone(t0: float, t1: float) -> dict[str, tuple[float, float]]:
            return dict.fromkeys(names, (t0, t1))

        print(f"bench: idle, {minutes:g} min", file=sys.stderr)
        t0 = time.time()
        time.sleep(minutes * 60)
        windows["idle"] = everyone(t0, time.time())

        filler = fill_node()
        print(f"bench: node filled (job {filler}); {users} launches", file=sys.stderr)
        launched: dict[str, tuple[float, float]] = {}

        def launch(i: int) -> None:
            start = time.time()
            reply = panels[i].launch("gemini", {"cpus": 1, "mem": "1G", "time": "00:20:00"})
            launched[names[i]] = (start, time.time())
            launches[names[i]] = reply.get("status", "?")

        with concurrent.futures.ThreadPoolExecutor(users) as pool:
            list(pool.map(launch, range(users)))
        windows["launching"] = launched
        time.sleep(2)  # the launch's end (a new generation: asked again) is behind us

        print(f"bench: pending, {minutes:g} min", file=sys.stderr)
        t0 = time.time()
        time.sleep(minutes * 60)
        windows["pending"] = everyone(t0, time.time())
        if not all(p.status_of("gemini") == "pending" for p in panels):
            print("bench: not every panel showed pending at the end: "
                  f"{[p.status_of('gemini') for p in panels]}", file=sys.stderr)

        subprocess.run(["scancel", filler], check=False)
        started = time.time()
        wait_until("every panel showing running", lambda: all(
            p.status_of("gemini") == "running" and p.interval == p.poll_seconds
            for p in panels), 180)
        running_after = time.time() - started
        time.sleep(1)
        print(f"bench: running (seen {running_after:.0f} s after the filler ended), "
              f"{minutes:g} min", file=sys.stderr)
        t0 = time.time()
        time.sleep(minutes * 60)
        windows["running"] = everyone(t0, time.time())
    finally:
        for p in panels:
            p.stop()
        cancel_all_jobs()
        with concurrent.futures.ThreadPoolExecutor(users) as pool:
            list(pool.map(Server.stop, servers))

    calls: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for line in log.read_text().splitlines() if log.exists() else []:
        stamp, *argv = line.split()
        for arg in argv:
            if arg.startswith("--name=bench-u"):
                user, _, hpc = arg.removeprefix("--name=").rpartition("-")
                calls[(user, hpc)].append(float(stamp))

    rows = []
    for state, spans in windows.items():
        for hpc in BUDGET_CLUSTERS:
            launching = state == "launching" and hpc == "gemini"
            own = state in ("pending", "launching") and hpc == "gemini"
            counts, rates, gaps, worst = [], [], [], (-10**9, 0, 0)
            for user, (t0, t1) in spans.items():
                seen = sorted(t for t in calls[(user, hpc)] if t0 <= t < t1)
                counts.append(len(seen))
                rates.append(len(seen) / ((t1 - t0) / 60))
                gaps += [b - a for a, b in itertools.pairwise(seen)]
                # What "one per period" allows in a window of t1 - t0 s: a call at its start,
                # then one per period.
                if launching:
                    # The launch: one look for a job of ours before sbatch, then squeue every
                    # poll_interval until its deadline; the panel meanwhile: one per
                    # pending_cache_ttl (the job pends).
                    allowed = (1 + math.floor((t1 - t0) / poll_interval) + 1
                               + math.floor((t1 - t0) / pending_ttl) + 1)
                else:
                    allowed = math.floor((t1 - t0) / (pending_ttl if own else cache_ttl)) + 1
                worst = max(worst, (len(seen) - allowed, len(seen), allowed))
            if launching:
                budget = 60 / poll_interval + 60 / pending_ttl
                budget_text = (f"launch: 60/poll_interval ({poll_interval:g} s) + panel: "
                               f"60/pending_cache_ttl ({pending_ttl:g} s) = {budget:.1f}, "
                               "+ 1 look before sbatch")
                gap_ok = True  # the launch's own polling is poll_interval apart by design
            else:
                ttl = pending_ttl if own else cache_ttl
                budget = 60 / ttl
                name = "pending_cache_ttl" if own else "cache_ttl"
                budget_text = f"60/{name} ({ttl:g} s) = {budget:.1f}"
                # at most one per TTL: no two calls closer than the TTL (0.25 s: the stamps
                # are taken by the wrapper, a moment after each call starts)
                gap_ok = not gaps or min(gaps) >= ttl - 0.25
            rows.append({
                "state": state, "hpc": hpc,
                "cluster": ("its job pends" if own and not launching else
                            "a launch waits on it" if launching else
                            "its job runs" if state == "running" and hpc == "gemini" else
                            "no job"),
                "seconds": statistics.mean(t1 - t0 for t0, t1 in spans.values()),
                "calls": sum(counts), "mean": statistics.mean(rates), "max": max(rates),
                "min_gap": min(gaps) if gaps else None, "worst": worst[1:],
                "budget_text": budget_text, "within": worst[0] <= 0 and gap_ok,
            })
    print(f"bench: the calls (with their times) and the servers' logs are in {folder}",
          file=sys.stderr)
    panel_requests: collections.Counter[str] = collections.Counter()
    for p in panels:
        panel_requests.update(p.requests)
    rows.append({"requests": dict(panel_requests), "launches": launches,
                 "backoffs": sum(p.rejected for p in panels)})
    return rows


def print_budget(rows: list[dict], users: int, minutes: float) -> None:
    *rows, extra = rows
    print()
    print(f"| squeue budget: {users} users, panel open, 2 clusters each | cluster | window "
          "(s, per user) | squeue calls (all users) | per cluster per user per minute: mean | "
          "max | calls of the busiest user / allowed in its window | closest two (s) | budget "
          "per minute | within |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        gap = f"{r['min_gap']:.1f}" if r["min_gap"] is not None else "-"
        count, allowed = r["worst"]
        print(f"| {r['state']} | {r['hpc']}: {r['cluster']} | {r['seconds']:.0f} | {r['calls']} "
              f"| {r['mean']:.2f} | {r['max']:.2f} | {count} / {allowed} | {gap} "
              f"| {r['budget_text']} | {'yes' if r['within'] else 'NO'} |")
    print()
    print(f"(allowed in a window of W s: W // period + 1 per source; closest two: the shortest "
          f"time between two calls of one user on one cluster. Panel requests, all users: "
          f"{extra['requests']}; launches answered: "
          f"{dict(collections.Counter(extra['launches'].values()))}; back-offs: "
          f"{extra['backoffs']}; {minutes:g} min per state)")


def login_to_vscode(runs: int) -> list[tuple[float, float, float, float]]:
    """(login to JupyterLab, launch to running, open to the Explorer's listing, total) s."""
    from playwright.sync_api import sync_playwright

    password = dict(line.split(":", 1) for line in
                    (SANDBOX / "hub-passwords").read_text().split())["alice"]
    marker = "bench-hub-marker.txt"
    home_file("alice", marker, "here\n")
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            "--disable-dev-shm-usage"])
        for _ in range(runs):
            subprocess.run(["scancel", "-u", "alice"], check=False)
            hub_api("DELETE", "users/alice/server")
            while (hub_api("GET", "users/alice")[1] or {}).get("servers"):
                time.sleep(0.5)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(f"{HUB}/hub/login")
            page.fill("#username_input", "alice")
            page.fill("#password_input", password)
            t0 = time.perf_counter()
            page.click("#login_submit")
            tab = page.get_by_role("tab", name="HPC")
            tab.wait_for(timeout=180_000)
            page.wait_for_timeout(300)
            if tab.get_attribute("aria-selected") != "true":
                tab.click()
            card = page.locator(".jp-HPCPanel-card[data-hpc=gemini]")
            launch = card.locator(".jp-HPCPanel-launch")
            launch.wait_for(timeout=60_000)
            t1 = time.perf_counter()
            launch.click()
            opener = card.locator(".jp-HPCPanel-open")
            opener.wait_for(timeout=180_000)
            t2 = time.perf_counter()
            with context.expect_page(timeout=60_000) as opened:
                opener.click()
            opened.value.get_by_text(marker).first.wait_for(timeout=180_000)
            t3 = time.perf_counter()
            out.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
            context.close()
        browser.close()
    subprocess.run(["scancel", "-u", "alice"], check=False)
    hub_api("DELETE", "users/alice/server")
    return out


PARTS = ("memory", "polling", "login", "budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0,
                        help="for the polling rows, and per state for the squeue budget")
    parser.add_argument("--runs", type=int, default=3, help="logins to VS Code")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"which parts, comma-separated (default: all of {', '.join(PARTS)})")
    parser.add_argument("--users", type=int, default=10, help="users for the squeue budget")
    parser.add_argument("--cache-ttl", type=int, default=30,
                        help="cache_ttl for the squeue budget (the server's default is 120)")
    parser.add_argument("--pending-cache-ttl", type=float, default=10.0,
                        help="pending_cache_ttl for the squeue budget (the server's default)")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="poll_interval for the squeue budget (the server's default)")
    parser.add_argument("--launch-timeout", type=float, default=30.0,
                        help="launch_timeout for the squeue budget (the server's default)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    if parts & {"memory", "login"}:
        code, _ = hub_api("GET", "")
        if code != 200:
            raise SystemExit("the sandbox JupyterHub is not up: make hub-up")
    cancel_all_jobs()

    if "memory" in parts:
        without, with_ext, with_ssh = idle_server_memory()
        print()
        print("| idle single-user server (RSS MiB) | without the extension | with it | with it, "
              "SSH to 2 clusters open |")
        print("|---|---:|---:|---:|")
        print(f"| alice, the Hub's environment | {without:.0f} | {with_ext:.0f} "
              f"(+{with_ext - without:.0f}) | {with_ssh:.0f} (+{with_ssh - without:.0f}) |")
    if "polling" in parts:
        rates = panel_polling(args.minutes, (1, 10))
        print()
        print(f"| squeue calls per minute, one user, 2 clusters, over {args.minutes:g} min | "
              "ours | cron of squeue once a minute |")
        print("|---|---:|---:|")
        for n, rate in rates.items():
            print(f"| {n} idle open panel{'s' if n > 1 else ''} | {rate:.2f} | 1.00 |")
    if "login" in parts:
        logins = login_to_vscode(args.runs)
        print()
        med = [statistics.median(col) for col in zip(*logins, strict=True)]
        print(f"| Hub login to a running VS Code (s, median of {len(logins)}) | login to "
              "JupyterLab (spawn) | launch to running | open to the Explorer | total |")
        print("|---|---:|---:|---:|---:|")
        print(f"| alice, Chromium | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.1f} "
              f"| {med[3]:.1f} |")
    if "budget" in parts:
        rows = squeue_budget(args.minutes, args.users, args.cache_ttl, args.pending_cache_ttl,
                             args.poll_interval, args.launch_timeout)
        print_budget(rows, args.users, args.minutes)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
