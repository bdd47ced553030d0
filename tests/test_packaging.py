"""Packaging and layering: one ``splinecam.*`` namespace, every package listed, imports point one way.

Installed, the repository's top-level folders are ``splinecam.engines``, ``splinecam.live``, … and no
generic top-level ``engines`` / ``training`` lands in site-packages. Dependencies point one way:
``live → engines ← training``, ``benchmarks → live, engines``, the CLI (``splinecam/``) on top; and
no module imports another that imports it back (no circle, function-level imports included).
"""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import REPO

FOLDERS = {"splinecam": "splinecam", "engines": "splinecam.engines", "live": "splinecam.live",
           "training": "splinecam.training", "benchmarks": "splinecam.benchmarks"}
ALLOWED = {"engines": {"engines"}, "live": {"live", "engines"}, "training": {"training", "engines"},
           "benchmarks": {"benchmarks", "live", "engines"},
           "top": {"top", "engines", "live", "training", "benchmarks"}}


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, pkg in FOLDERS.items():
        for p in (REPO / folder).rglob("*.py"):
            parts = [x for x in p.relative_to(REPO / folder).with_suffix("").parts if x != "__init__"]
            mods[".".join([pkg, *parts])] = p
    return mods


def _import_graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if not t.startswith("splinecam"):
                    continue
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges[name].add(t)
    return edges


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED and parts[1] != "top" else "top"


def test_every_package_is_listed_in_setup_cfg():
    cfg = _setup_cfg()
    listed = set(cfg["options"]["packages"].split())
    dirs = {".".join([FOLDERS[p.relative_to(REPO).parts[0]], *p.parent.relative_to(REPO).parts[1:]])
            for folder in FOLDERS for p in (REPO / folder).rglob("__init__.py")}
    assert dirs == listed, f"setup.cfg packages: missing {sorted(dirs - listed)}, stale {sorted(listed - dirs)}"
    mapping = dict(line.split(" = ") for line in cfg["options"]["package_dir"].strip().splitlines())
    assert mapping == {v: k for k, v in FOLDERS.items()}


def test_no_import_points_up_a_layer():
    bad = [f"{a} → {b}" for a, bs in _import_graph().items() for b in bs if _layer(b) not in ALLOWED[_layer(a)]]
    assert not bad, "imports against the layering (live → engines ← training, benchmarks → live, engines):\n" + \
        "\n".join(sorted(bad))


def test_no_import_circle():
    edges = _import_graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(_modules()):
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_nothing_installed_signals_other_processes():
    """The installed package never sends a signal to another process (os.kill / os.killpg other than to
    itself, SIGSTOP / SIGCONT anywhere): pausing a training run for a benchmark is a development tool
    (tools/pause_training.py), and tools/ is not a package."""
    bad = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("SIGSTOP", "SIGCONT", "SIGTSTP"):
                bad.append(f"{name}:{node.lineno} {node.attr}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in
                    ("kill", "killpg", "pthread_kill") and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("os", "signal")):
                target = ast.unparse(node.args[0]) if node.args else ""
                if target not in ("os.getpid()",):
                    bad.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert not bad, "signals to other processes from the installed package:\n" + "\n".join(bad)
    listed = set(_setup_cfg()["options"]["packages"].split())
    assert not any("tools" in p.split(".") for p in listed) and not (REPO / "tools" / "__init__.py").exists()


def test_version_is_written_once():
    assert _setup_cfg()["metadata"]["version"].strip() == "attr: splinecam.__version__"
    hits = [p for p in _modules().values() if "__version__ =" in p.read_text()]
    assert hits == [REPO / "splinecam" / "__init__.py"]


def test_generic_names_are_not_importable_outside_the_repository(tmp_path):
    code = ("import importlib.util as u, sys\n"
            "bad = [n for n in ('engines', 'live', 'training', 'benchmarks') if u.find_spec(n)]\n"
            "import splinecam.engines, splinecam.live, splinecam.training, splinecam.benchmarks, splinecam.cli\n"
            "print(','.join(bad))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"generic top-level packages importable: {out.stdout}"
    helped = subprocess.run([sys.executable, "-m", "splinecam", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "demo" in helped.stdout


@pytest.mark.slow
def test_wheel_carries_configs_weights_and_assets(tmp_path):
    """A non-editable wheel holds the data files under the splinecam namespace (and nothing top-level else)."""
    import shutil

    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ beside the sources
    for rel in filter(None, tracked.stdout.split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No module named" in r.stderr and "setuptools" in r.stderr:
        pytest.skip("setuptools is not importable for a no-isolation build here")
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("splinecam-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"splinecam"}, tops
    assert "splinecam/engines/tpsmm/configs/vox-256.yaml" in names
    assert "splinecam/engines/fomm/configs/fomm-vox-256.yaml" in names
    assert any(n.startswith("splinecam/engines/weights/") and n.endswith(".safetensors") for n in names)
    assert "splinecam/live/assets/mona.jpg" in names and "splinecam/live/assets/webcam.mp4" in names
