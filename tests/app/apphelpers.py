"""Helpers for the app tests: open the app on a page, read what it says, fake a job folder, serve the app on a
local port (also for bench/screenshots.py)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path, PurePosixPath

from influence import jobs, store

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app"
MAIN = str(APP / "main.py")
sys.path.insert(0, str(APP))  # the app's helper package `explorer`, as Streamlit puts it on the path

PAGES = {
    "train": "views/train_page.py",
    "influence": "views/influence_page.py",
    "curate": "views/curate_page.py",
    "cleanse": "views/cleanse_page.py",
    "validate": "views/validate_page.py",
    "playground": "views/playground_page.py",
    "samples": "views/samples_page.py",
}
CLEANSED = 20  # instances removed by the rich store's cleansing attempt


def open_app(page: str | None = None, run_id: str | None = None, timeout: float = 90):
    """AppTest of the whole app (navigation, sidebar) showing `page`, with `run_id` as the current run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=timeout)
    if run_id is not None:
        at.session_state["run_id"] = run_id
    at.run()
    if page is not None:
        at.switch_page(PAGES[page]).run()
    return at


def texts(at) -> str:
    """Everything the page says (markdown, captions, alerts, titles), for assertions."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def use_store(monkeypatch, root: Path) -> Path:
    monkeypatch.setenv(store.ENV_STORE, str(root))
    return root


def tiny_run_id(root: Path) -> str:
    return next(r["run_id"] for r in store.list_runs(root) if r["run_id"].startswith("tiny-"))


def write_job(root: Path, spec: dict, **status) -> str:
    """A job folder as a worker leaves it, without running anything."""
    key = jobs.job_key(spec)
    d = jobs.job_dir(root, key)
    store.write_json(d / "spec.json", spec)
    store.write_json(d / "status.json", {"key": key, "updated": time.time(), **status})
    return key


def removal_on_disk(root: Path, run_id: str) -> list[int]:
    path = root / run_id / "app" / "removal.json"
    return store.read_json(path)["ids"] if path.exists() else []


def shown_as(shown: str, paths) -> bool:
    """Whether a card's shortened file name ("IM…000003…png") is the name of one of `paths`, read the way a person
    does: each ellipsis stands for some left-out characters."""
    pattern = re.compile(".+".join(re.escape(part) for part in shown.split("…")))
    return any(pattern.fullmatch(PurePosixPath(p).name) for p in paths)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(root, log_path, env: dict | None = None):
    """`streamlit run app/main.py` over `root` on a free local port, until the block ends (`env`: more of the
    server's environment, which its job workers inherit)."""
    port = _free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                                 "--server.headless", "true", "--server.address", "127.0.0.1"],
                                cwd=REPO, env={**os.environ, store.ENV_STORE: str(root), "PYTHONPATH": str(REPO), **(env or {})},
                                stdout=log,
                                stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 90
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"streamlit did not start; see {log_path}") from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
