"""The app against what issue 23 found: folders in the store that are not runs (23.10), upload limits (23.7)."""

from __future__ import annotations

import os
import shutil

import pytest

from apphelpers import open_app, texts, tiny_run_id


@pytest.mark.parametrize("page", ["train", "influence"])
def test_a_copied_run_folder_does_not_break_the_run_picker(app_store, page):
    """'<id> (copy)' in the store: before, the sidebar's run picker raised on every page."""
    run_id = tiny_run_id(app_store)
    shutil.copytree(app_store / run_id, app_store / f"{run_id} (copy)")
    at = open_app(page)
    assert not at.exception, at.exception
    assert at.sidebar.selectbox[0].value == run_id
    assert f"`{run_id} (copy)`" in texts(at) and "not a run" in texts(at)


def test_a_removal_csv_upload_has_a_size_limit_with_a_clear_message(app_store):
    """Issue 23.7: the CSV uploader took anything up to the server's limit, and parsing cost ~140x the size."""
    from explorer import curation

    from influence.errors import ConfigError
    from influence.removal import MAX_REMOVAL_BYTES

    with pytest.raises(ConfigError, match=f"at most {MAX_REMOVAL_BYTES >> 20} MB"):
        curation.read_removal_upload(b"1\n" * (MAX_REMOVAL_BYTES // 2 + 1), 1000)
    at = open_app("curate")
    uploader = at.file_uploader(key=f"import-{tiny_run_id(app_store)}")
    assert uploader.proto.max_upload_size_mb == MAX_REMOVAL_BYTES >> 20  # the browser refuses larger files


def _listening(pid: int) -> list[tuple[str, int]]:
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return [(c.laddr.ip, c.laddr.port) for p in procs for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN]


def test_the_app_started_from_another_folder_listens_on_loopback_only(tmp_path):
    """Issue 23.13: `.streamlit/config.toml` was read from the working directory only, so `streamlit run
    app/main.py` started elsewhere listened on every interface. The app's own folder holds the config now
    (Streamlit reads it next to the main script): the actual listening socket is checked."""
    import socket
    import subprocess
    import sys
    import time

    from apphelpers import MAIN

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", MAIN, "--server.port", str(port),
                             "--server.headless", "true"], cwd=tmp_path, env={**env, "HOME": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, bound = time.time() + 60, []
        while time.time() < deadline and proc.poll() is None and not bound:
            bound = [a for a in _listening(proc.pid) if a[1] == port]
            time.sleep(0.2)
        assert bound, (proc.poll(), proc.stdout.read() if proc.poll() is not None else "")
        assert all(ip in ("127.0.0.1", "::1") for ip, _ in bound), bound
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_app_refuses_to_serve_the_network_unless_asked():
    """The last line of defence of 23.13 (a Streamlit that reads no script-folder config): every page shows only
    the reason, in one line, when the address is not loopback and nobody set it."""
    from explorer.widgets import exposure_problem

    for address in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        assert exposure_problem(address, set_by_user=False) is None
    for address in (None, "", "0.0.0.0", "::", "192.168.1.5"):
        problem = exposure_problem(address, set_by_user=False)
        assert problem.startswith("Refusing to serve") and "\n" not in problem
        assert exposure_problem(address, set_by_user=True) is None  # --server.address 0.0.0.0: the user asked
