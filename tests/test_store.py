"""The run store: atomic writes, checksums, damaged files, run ids."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from influence import store
from influence.errors import StoreError
from influence.estimator import EstimateOptions, estimate, result_dir
from influence.train import Trace

from _faults import COMMIT_POINTS, COMMITTED_FROM, HOOKS
from _helpers import copy_run, tree


def _flip_byte(path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_writes_are_atomic_checksummed_and_leave_no_temp_files(tmp_path):
    run = store.Run(store.store_root(tmp_path), "r1")
    run.write_json("a/config.json", {"x": 1})
    run.write_npy("b/arr.npy", np.arange(10.0))
    run.write_npy("b/arr.npy", np.arange(12.0))  # replaced in place
    run.write("c.bin", b"\x00\x01")
    store.write_bytes(tmp_path / "plain.txt", b"hello")
    assert not [p for p in tree(tmp_path) if p.endswith(".tmp")]
    assert run.read_json("a/config.json") == {"x": 1}
    assert np.array_equal(run.read_npy("b/arr.npy"), np.arange(12.0))
    assert np.array_equal(run.read_npy("b/arr.npy", mmap=True), np.arange(12.0))
    assert run.read_bytes("c.bin") == b"\x00\x01"
    import hashlib

    entry = run.manifest()["b/arr.npy"]
    assert entry["sha256"] == hashlib.sha256(run.path("b/arr.npy").read_bytes()).hexdigest()
    assert entry["size"] == run.path("b/arr.npy").stat().st_size


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    run = store.Run(store.store_root(tmp_path), "r1")
    run.write_json("x.json", {"v": 1})

    def disk_full(fd, data):
        import os

        os.close(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_write_file", disk_full)
    with pytest.raises(StoreError, match="No space left on device"):
        run.write_json("x.json", {"v": 2})
    monkeypatch.undo()
    assert run.read_json("x.json") == {"v": 1}
    assert not [p for p in tree(tmp_path) if p.endswith(".tmp")]


def _killed_writing(run: store.Run, rel: str, data: bytes, point: str) -> None:
    """A forked writer of `rel` SIGKILLed at `point` of the commit (tests/_faults.py)."""
    pid = os.fork()
    if pid == 0:  # only store code runs here
        hooks: dict = {}
        exec(HOOKS, hooks)
        hooks["install"]({"kill": "commit", "name": rel.rsplit("/", 1)[-1], "n": 1, "point": point})
        run.write(rel, data)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == signal.SIGKILL


@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_a_writer_killed_anywhere_in_a_commit_leaves_the_old_or_the_new_file_readable(tmp_path, point):
    """Issue 23.2: before the manifest lists the new file, the old one stays; from then on the new one reads
    back (a kill between the manifest update and the rename used to leave the old file "damaged"). The same for
    a file written for the first time, which is absent or new."""
    run = store.Run(store.store_root(tmp_path), "r1")
    run.write("a/x.bin", b"old" * 1000)
    _killed_writing(run, "a/x.bin", b"new" * 2000, point)
    _killed_writing(run, "a/first.bin", b"first" * 100, point)
    committed = COMMIT_POINTS.index(point) >= COMMIT_POINTS.index(COMMITTED_FROM)
    assert run.read_bytes("a/x.bin") == (b"new" * 2000 if committed else b"old" * 1000)
    assert run.exists("a/first.bin") == committed
    if committed:
        assert run.read_bytes("a/first.bin") == b"first" * 100
    run.remove_stale_temp_files(["", "a"])  # what a finished training does: nothing half-written is left
    assert not [p for p in tree(tmp_path) if p.endswith(".tmp")]
    assert run.read_bytes("a/x.bin") == (b"new" * 2000 if committed else b"old" * 1000)


def test_stale_temp_file_cleanup_finishes_a_committed_write_first(tmp_path):
    run = store.Run(store.store_root(tmp_path), "r1")
    _killed_writing(run, "w.npy", b"w" * 100, "manifest_renamed")
    run.remove_stale_temp_files([""])  # not read before the clean-up: still finished, not deleted
    assert run.read_bytes("w.npy") == b"w" * 100


def test_a_reader_racing_a_writer_never_sees_a_damaged_file(tmp_path):
    """Issue 23.4: `verify` read the manifest without the lock, so a read between a writer's manifest update and
    its rename called the file damaged (without the fix: hundreds of the reads below)."""
    run = store.Run(store.store_root(tmp_path), "r1")
    run.write("x.bin", b"\0" * 1000)
    pid = os.fork()
    if pid == 0:  # the writer: store code only
        for i in range(1, 60):
            run.write("x.bin", bytes([i]) * (1000 + i))
        os._exit(0)
    reads, damaged = 0, []
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        try:
            data = run.read_bytes("x.bin")
            assert len(set(data)) == 1 and len(data) == 1000 + data[0]  # one whole version
            reads += 1
        except StoreError as e:
            damaged.append(str(e))
    assert reads > 20 and not damaged, (reads, damaged[:3])


def test_an_artefact_lock_makes_the_second_writer_wait_report_and_obey_cancel(tmp_path):
    import threading

    from influence.errors import Cancelled
    from influence.progress import CancelToken

    run = store.Run(store.store_root(tmp_path), "r1")
    seen, token, order = [], CancelToken(), []
    with run.exclusive("train"):
        with run.exclusive("train"):  # the holder's own nested take does not wait
            pass

        def second():
            try:
                with run.exclusive("train", seen.append, token):
                    order.append("second")
            except Cancelled:
                order.append("cancelled")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert seen and seen[0].stage == "waiting" and "train of run r1" in seen[0].info["for"]
        order.append("first")
    t.join()
    assert order == ["first", "second"]  # waited for the holder, then held it
    with run.exclusive("train"):
        t = threading.Thread(target=second)
        t.start()
        token.set()
        t.join(timeout=5)
    assert order[-1] == "cancelled"


def test_damaged_and_unlisted_files_are_refused(tmp_path):
    run = store.Run(store.store_root(tmp_path), "r1")
    run.write_npy("w.npy", np.ones(100))
    _flip_byte(run.path("w.npy"))
    with pytest.raises(StoreError, match="'w.npy' is damaged"):
        run.read_npy("w.npy")
    run.path("stray.json").write_text("{}")
    with pytest.raises(StoreError, match="not in the manifest"):
        run.read_json("stray.json")
    with pytest.raises(StoreError, match="is missing"):
        run.read_json("nothing.json")


def test_a_corrupted_weights_file_fails_trace_load(toy_run, tmp_path):
    run = copy_run(toy_run, tmp_path)
    Trace.load(run)  # intact copy loads
    _flip_byte(run.path("weights/final.npy"))
    with pytest.raises(StoreError, match="weights/final.npy' is damaged"):
        Trace.load(run)
    # the same for the trace itself
    run2 = copy_run(toy_run, tmp_path / "second")
    _flip_byte(run2.path("trace/states.npy"), offset=1000)
    with pytest.raises(StoreError, match="trace/states.npy' is damaged"):
        Trace.load(run2)


def test_a_damaged_influence_result_is_recomputed(toy_run, tmp_path):
    run = copy_run(toy_run, tmp_path)
    good = estimate(toy_run, ["all"])["all"]
    scores = result_dir(run, "all", EstimateOptions(), Trace.load(run).final.shape[0]) / "scores.npy"
    _flip_byte(scores)
    with pytest.raises(StoreError):
        run.read_npy(str(scores.relative_to(run.dir)))
    again = estimate(run, ["all"])["all"]
    assert np.allclose(again.scores, good.scores, rtol=1e-12, atol=0)
    assert again.meta["seconds"] != good.meta["seconds"]  # really recomputed, not the damaged cache
    assert np.array_equal(run.read_npy(str(scores.relative_to(run.dir))), again.scores)  # and rewritten intact


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", "a/../b", "/abs", "a..b", "", ".hidden", "x\n", "a b", "é"])
def test_bad_run_ids_are_rejected(tmp_path, bad):
    with pytest.raises(StoreError, match="invalid run id"):
        store.check_run_id(bad)
    with pytest.raises(StoreError, match="invalid run id"):
        store.Run(tmp_path, bad)
    with pytest.raises(StoreError, match="invalid run id"):
        store.open_run(tmp_path, bad)


def test_good_run_ids_and_paths_that_leave_the_run(tmp_path):
    for good in ("tiny-s0-1e0f29c33c", "a", "A.b_c-1"):
        assert store.check_run_id(good) == good
    run = store.Run(tmp_path, "r1")
    for rel in ("../r2/x", "../../etc/passwd", "/etc/passwd", "a/../../x"):
        with pytest.raises(StoreError, match="leaves the run folder"):
            run.path(rel)
    with pytest.raises(StoreError, match="no run 'r1'"):
        store.open_run(tmp_path, "r1")


def test_list_runs_reports_damaged_runs(toy_run, tmp_path):
    root = store.store_root(tmp_path)
    ok = copy_run(toy_run, root)
    assert [r["run_id"] for r in store.list_runs(root)] == [ok.run_id]
    assert store.list_runs(root)[0]["summary"]["test"] == toy_run.read_json("summary.json")["test"]
    _flip_byte(ok.path("summary.json"), offset=3)
    (entry,) = store.list_runs(root)
    assert "damaged" in entry["problem"]


def test_a_copied_run_folder_is_skipped_and_named_not_fatal(toy_run, tmp_path, capsys):
    """Issue 23.10: '<id> (copy)' in the store made `gan-influence runs` exit 2 (and the app's run picker fail)."""
    import shutil

    from influence import cli

    root = store.store_root(tmp_path)
    ok = copy_run(toy_run, root)
    shutil.copytree(ok.dir, root / f"{ok.run_id} (copy)")
    (root / "notes").mkdir()  # a valid name without a config: not listed, not foreign
    assert [r["run_id"] for r in store.list_runs(root)] == [ok.run_id]
    assert store.foreign_folders(root) == [f"{ok.run_id} (copy)"]
    assert cli.main(["--store", str(root), "runs"]) == 0
    captured = capsys.readouterr()
    assert ok.run_id in captured.out and "(copy)" not in captured.out
    assert f"skipped 1 folder(s) in the store that are not runs (not a run id): '{ok.run_id} (copy)'" in captured.err
