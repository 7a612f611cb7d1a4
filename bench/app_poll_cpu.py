"""CPU the app itself burns while a user watches a training job (Streamlit server + the browser tab).

    .venv/bin/python bench/app_poll_cpu.py [--seconds 30] [--store DIR]

On a 2-core machine every core-second the app spends drawing progress is taken from the job's
worker, so this is the app's share of a training job's slowdown. A fake job plays the worker: it
holds the job's lock and rewrites status.json every 0.5 s with new step counts and losses (as
`jobs.run_job` does), so the Train page's job panel polls and redraws as it would for a real run.
The app runs under `streamlit run`, watched by one headless Chromium tab (Playwright). Reported:
CPU seconds of the server and of all Chromium processes over the window, and cores used.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    return total


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from influence import jobs, store
    from influence.config import apply_overrides, preset

    root = Path(args.store or tempfile.mkdtemp(prefix="gie-poll-")).resolve()
    cfg = apply_overrides(preset("toy2d"), [f"seed={int(time.time()) % 100000}"])
    spec = {"kind": "train", "params": {"config": cfg.to_dict()}}
    key = jobs.job_key(spec)
    d = jobs.job_dir(root, key)
    store.write_json(d / "spec.json", spec)
    lock = jobs.JobLock(d / "lock")
    assert lock.acquire()
    stop = threading.Event()

    def worker() -> None:  # what run_job writes while training: a status every 0.5 s
        started, step = time.time(), 0
        while not stop.is_set():
            step += 50
            store.write_json(d / "status.json", {
                "key": key, "state": "running", "started": started, "updated": time.time(), "stage": "train",
                "done": step, "total": 10**7, "seconds": time.time() - started, "eta": 100.0,
                "info": {"epoch": step // 100 + 1, "loss_d": 1.3 + 0.01 * (step % 7), "loss_g": 0.7}, "stages": {}})
            time.sleep(0.5)

    feeder = threading.Thread(target=worker, daemon=True)
    feeder.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                               "--server.headless", "true", "--server.address", "127.0.0.1"], cwd=REPO,
                              env={**os.environ, "GAN_INFLUENCE_STORE": str(root)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1440, "height": 1200})
            tab.set_default_timeout(600_000)
            tab.goto(url)
            tab.get_by_text("Training toy2d").first.wait_for()
            tab.wait_for_timeout(5000)  # settle: first draw, caches
            browser_pid = browser_root_pid()
            pids = descendants(server.pid) + (descendants(browser_pid) if browser_pid else [])
            before, t0 = cpu_seconds(pids), time.perf_counter()
            time.sleep(args.seconds)
            pids = descendants(server.pid) + (descendants(browser_pid) if browser_pid else [])
            spent, wall = cpu_seconds(pids) - before, time.perf_counter() - t0
            server_s = cpu_seconds(descendants(server.pid))
            browser.close()
        print(json.dumps({"window_s": round(wall, 1), "app_cpu_s": round(spent, 2),
                          "cores_used": round(spent / wall, 3), "server_cpu_total_s": round(server_s, 1)}))
    finally:
        stop.set()
        lock.release()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


def browser_root_pid() -> int | None:
    """The headless Chromium this process launched (through Playwright's driver)."""
    me = os.getpid()
    for pid in descendants(me):
        try:
            if "chrom" in Path(f"/proc/{pid}/comm").read_text():
                return pid
        except OSError:
            continue
    return None


if __name__ == "__main__":
    sys.exit(main())
