"""No code execution from files, no paths out of the store, the app local and XSRF-protected.

The source scan covers influence/, app/, bench/, scripts/ and tests/. A line may opt out with
the comment '# unsafe: test fixture' (tests that build hostile files need to).
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from influence import jobs, store
from influence.errors import StoreError
from test_reliability import REPO, faults

SCANNED = ["influence", "app", "bench", "scripts", "tests"]
OPT_OUT = "# unsafe: test fixture"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def python_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py") if ".venv" not in p.parts)


def unsafe_loads(path: Path) -> list[str]:
    """Deserialisation that can run code: pickle-family loads, torch.load without weights_only=True,
    np.load / allow_pickle=True, pandas read_pickle, torch.jit.load, Unpicklers without find_class."""
    source = path.read_text()
    lines = source.splitlines()
    out = []

    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path

    def flag(node: ast.AST, why: str) -> None:
        entry = f"{shown}:{node.lineno}: {why}"
        if OPT_OUT not in lines[node.lineno - 1] and not any(o.startswith(f"{shown}:{node.lineno}:") for o in out):
            out.append(entry)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in PICKLE_MODULES:
            for alias in node.names:
                if alias.name in ("load", "loads", "Unpickler", "open"):
                    flag(node, f"from {node.module} import {alias.name}")
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            if any(b.endswith("Unpickler") for b in bases):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if "find_class" not in methods:
                    flag(node, f"class {node.name}({', '.join(bases)}) does not restrict find_class")
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        module, _, attr = name.rpartition(".")
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        if module in PICKLE_MODULES and attr in ("load", "loads", "Unpickler", "open"):
            flag(node, f"{name}(...)")
        if attr == "load" and module in ("torch", "torch.serialization"):
            w = keywords.get("weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                flag(node, "torch.load without weights_only=True")
        if name in ("torch.jit.load", "pd.read_pickle", "pandas.read_pickle") or attr == "read_pickle":
            flag(node, f"{name}(...)")
        for key in ("allow_pickle", "weights_only"):
            v = keywords.get(key)
            if v is not None and not (isinstance(v, ast.Constant) and v.value is (key == "weights_only")):
                flag(node, f"{name}(..., {key}={ast.unparse(v)})")
    return out


def test_no_unsafe_deserialisation_anywhere_in_the_source():
    scanned = python_files()
    assert len(scanned) > 30
    problems = [p for f in scanned for p in unsafe_loads(f)]
    assert not problems, "\n".join(problems)
    faults("security", len(scanned), "Python files scanned for pickle/torch.load (0 findings)")


def test_the_scan_finds_what_it_must(tmp_path, monkeypatch):
    bad = (
        "import pickle, torch, numpy as np, pandas as pd\n"
        "pickle.loads(b'')\n"  # unsafe: test fixture (scanner input, never run)
        "torch.load('x')\n"  # unsafe: test fixture (scanner input, never run)
        "torch.load('x', weights_only=False)\n"  # unsafe: test fixture (scanner input, never run)
        "np.load('x', allow_pickle=True)\n"
        "pd.read_pickle('x')\n"
        "class U(pickle.Unpickler):\n    pass\n"
        "from pickle import loads\n"
        "torch.load('x')  # unsafe: test fixture\n"
        "torch.load('x', map_location='cpu', weights_only=True)\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(bad)
    found = unsafe_loads(path)
    assert sorted(int(f.split(":")[1]) for f in found) == [2, 3, 4, 5, 6, 7, 9], found


def test_restricted_unpickler_is_the_only_unpickler_and_refuses_globals():
    from influence.data import builtin

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    payload = pickle.dumps(Evil(), protocol=2)  # serialised only; never loaded with pickle
    with pytest.raises(pickle.UnpicklingError):
        builtin._NumpyUnpickler(io.BytesIO(payload)).load()


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/gan_influence_pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_hostile_files_with_valid_checksums_are_refused_not_executed(tmp_path):
    """An attacker who rewrites a run file *and* its manifest entry still runs no code."""
    marker = Path("/tmp/gan_influence_pwned")
    marker.unlink(missing_ok=True)
    run = store.Run(store.store_root(tmp_path), "victim")
    hostile_pickle = pickle.dumps(_Boom())
    buf = io.BytesIO()
    torch.save({"w": _Boom()}, buf)  # a torch file whose pickle names os.system
    run.write("weights/generator.pt", buf.getvalue())
    run.write("checkpoint/state.pt", hostile_pickle)
    buf = io.BytesIO()
    np.save(buf, np.array([_Boom()], dtype=object), allow_pickle=True)  # unsafe: test fixture
    run.write("weights/final.npy", buf.getvalue())
    for read in (lambda: run.read_state_dict("weights/generator.pt"), lambda: run.read_state_dict("checkpoint/state.pt"),
                 lambda: run.read_npy("weights/final.npy")):
        with pytest.raises(StoreError):
            read()
    assert not marker.exists()
    faults("security", 3, "hostile pickles with matching checksums (torch file, raw pickle, object .npy): refused")


# ---------------------------------------------------------------- paths from users
TRAVERSAL = ["..", ".", "../x", "x/..", "a/b", "/etc", "\\x", "x\n", "\nx", "x\x00", "", " ", "a" * 129, "..x",
             "x..", "-x", ".x", "~", "x/", "C:x", "x y", "é"]


FUZZED = {"run ids": 0, "paths inside a run": 0}


@pytest.fixture(scope="module", autouse=True)
def report_fuzz_counts():
    yield
    for kind, n in FUZZED.items():
        faults("bad-input", n, f"fuzzed {kind}")


@settings(max_examples=200, deadline=None)
@given(run_id=st.sampled_from(TRAVERSAL) | st.text(max_size=40))
def test_run_ids_from_users_stay_in_the_store(run_id):
    FUZZED["run ids"] += 1
    root = Path("/nonexistent-store")
    try:
        store.check_run_id(run_id)
    except StoreError:
        return
    run = store.Run(root, run_id)
    assert run.dir.parent == root and run.dir.name == run_id
    assert run_id == run_id.strip() and "/" not in run_id and "\\" not in run_id and ".." not in run_id
    assert run_id.isascii() and run_id.isprintable() and not run_id.startswith(".")


def test_explicit_traversal_run_ids_are_refused(tmp_path):
    refused = TRAVERSAL
    for run_id in refused:
        with pytest.raises(StoreError):
            store.Run(tmp_path, run_id)
        with pytest.raises(StoreError):
            jobs.job_dir(tmp_path, run_id)
    faults("bad-input", 2 * len(refused), "traversal run ids / job keys (explicit)")


@settings(max_examples=200, deadline=None)
@given(rel=st.sampled_from(["../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "", ".", "a/./../..",
                            "x\x00y", "~/x", "weights/../../x"]) | st.text(max_size=30))
def test_paths_inside_a_run_stay_inside(tmp_path_factory, rel):
    FUZZED["paths inside a run"] += 1
    root = tmp_path_factory.getbasetemp() / "paths"
    run = store.Run(root, "r")
    try:
        p = run.path(rel)
    except StoreError:
        return
    assert run.dir.resolve() in p.parents


def test_a_symlink_out_of_the_run_folder_is_refused(tmp_path):
    run = store.Run(store.store_root(tmp_path / "store"), "r")
    run.dir.mkdir()
    (run.dir / "out").symlink_to(tmp_path)
    with pytest.raises(StoreError, match="leaves the run folder"):
        run.path("out/secret")
    with pytest.raises(StoreError, match="leaves the run folder"):
        run.write("out/x.json", b"{}")
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------- the server
def test_streamlit_listens_locally_with_xsrf_protection():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert server["address"] == "127.0.0.1"
    assert server.get("enableXsrfProtection", True) is True  # Streamlit's default is on; never turned off
    assert config.get("browser", {}).get("gatherUsageStats") is False


def test_nothing_in_the_repository_turns_xsrf_off_or_listens_on_all_interfaces():
    offenders = []
    for path in [*python_files(), *(REPO / "scripts").glob("*.sh"), *(REPO / ".streamlit").glob("*.toml")]:
        if path.name == Path(__file__).name:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0].lower().replace(" ", "")
            if ("xsrf" in code and "false" in code) or "server.address=0.0.0.0" in code or "address=\"0.0.0.0\"" in code:
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_uploaded_zip_members_are_never_extracted(tmp_path):
    """The folder source reads members in memory; a traversal member writes nothing anywhere."""
    from influence.config import DataConfig
    from influence.data import load_dataset

    img = io.BytesIO()
    from PIL import Image

    Image.new("L", (28, 28), 255).save(img, format="PNG")
    up = tmp_path / "up" / "x.zip"
    up.parent.mkdir()
    with zipfile.ZipFile(up, "w") as z:
        for i in range(3):
            z.writestr(f"ok{i}.png", img.getvalue())
        z.writestr("../../escaped.png", img.getvalue())
    ds = load_dataset(DataConfig(source="folder", root=str(up)), 0, tmp_path / "cache")
    assert [n for n, _ in ds.skipped] == ["../../escaped.png"]
    assert sorted(p.name for p in tmp_path.rglob("*") if "cache" not in p.relative_to(tmp_path).parts) == ["up", "x.zip"]
