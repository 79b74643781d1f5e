#!/usr/bin/env python
"""Hub-scale numbers, against the sandbox JupyterHub (`make hub-up`), baselines in the same run:

  1. memory (RSS) of one idle single-user server of the Hub's environment, as alice: without the
     extension, with it, and with it after its panel's first status call (SSH connections open)
  2. squeue calls per minute that N idle open panels cause (N = 1 and 10 simulated clients of the
     REST API, polling as the sidebar does: cluster-status every 30 s), against a plain cron
     running squeue once a minute per user; counted on the cluster side, over --minutes
  3. time from the Hub's login form to a running VS Code (Chromium: log in, launch from the
     panel, open VS Code, the Explorer lists the home folder), median of --runs
"""

from __future__ import annotations

import argparse
import json
import pathlib
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

from hubtools import HUB, SANDBOX, hub_api  # noqa: E402
from jupyter_process import (  # noqa: E402
    TOKEN,
    Server,
    cancel_all_jobs,
    free_port,
    home_file,
    sandbox_cluster,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="for the polling rows")
    parser.add_argument("--runs", type=int, default=3, help="logins to VS Code")
    args = parser.parse_args()
    code, _ = hub_api("GET", "")
    if code != 200:
        raise SystemExit("the sandbox JupyterHub is not up: make hub-up")
    cancel_all_jobs()

    without, with_ext, with_ssh = idle_server_memory()
    rates = panel_polling(args.minutes, (1, 10))
    logins = login_to_vscode(args.runs)

    print()
    print("| idle single-user server (RSS MiB) | without the extension | with it | with it, "
          "SSH to 2 clusters open |")
    print("|---|---:|---:|---:|")
    print(f"| alice, the Hub's environment | {without:.0f} | {with_ext:.0f} "
          f"(+{with_ext - without:.0f}) | {with_ssh:.0f} (+{with_ssh - without:.0f}) |")
    print()
    print(f"| squeue calls per minute, one user, 2 clusters, over {args.minutes:g} min | "
          "ours | cron of squeue once a minute |")
    print("|---|---:|---:|")
    for n, rate in rates.items():
        print(f"| {n} idle open panel{'s' if n > 1 else ''} | {rate:.2f} | 1.00 |")
    print()
    med = [statistics.median(col) for col in zip(*logins, strict=True)]
    print(f"| Hub login to a running VS Code (s, median of {len(logins)}) | login to "
          "JupyterLab (spawn) | launch to running | open to the Explorer | total |")
    print("|---|---:|---:|---:|---:|")
    print(f"| alice, Chromium | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.1f} | {med[3]:.1f} |")


if __name__ == "__main__":
    main()
