"""The package as a user installs it: no side effects on import, no import cycles, a wheel that
holds every config and runs from an empty folder, and a README whose Python runs."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import grubench
from helpers import TINY

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(grubench.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def test_importing_any_module_leaves_the_process_as_it_was():
    """Every grubench module imported: os.environ unchanged and glibc's allocator never
    touched; then runtime.configure() (what the entry points call) does both, so the check
    can fail."""
    script = f"""
import ctypes, importlib, os
opened = []
real = ctypes.CDLL
ctypes.CDLL = lambda name, *a, **k: (opened.append(str(name)), real(name, *a, **k))[1]
before = dict(os.environ)
for name in {sorted(_modules())!r}:
    importlib.import_module(name)
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
assert not any("libc.so" in n for n in opened), opened
from grubench import runtime
runtime.configure()
assert "--xla_cpu_multi_thread_eigen=false" in os.environ["XLA_FLAGS"]
assert any("libc.so" in n for n in opened) or not os.path.exists("/proc/self/maps")
print("ok")
"""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XLA_FLAGS", "GRUBENCH_MALLOC") and not k.startswith("MALLOC_")
    }
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-3000:]


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The grubench modules `name` imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m in modules and m != name}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["grubench.loop"] and "grubench.report" not in graph["grubench.plots"]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run():
    pytest.importorskip("torch")
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks, "the README has no Python example"
    for block in blocks:
        p = subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        assert p.returncode == 0, f"{block}\n{p.stderr[-3000:]}"


def test_readme_is_the_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for doc in (
        "docs/performance.md",
        "docs/results.md",
        "docs/reliability.md",
        "docs/extending.md",
    ):
        assert doc in text and (ROOT / doc).is_file(), doc
    for stale in ("previous round", "this round", "today's code", "this session"):
        assert stale not in text.lower(), stale


@pytest.mark.slow
def test_a_wheel_holds_every_config_and_runs_from_an_empty_folder(tmp_path):
    """Build the wheel, check it holds every shipped config, install it (no dependencies: they
    are this environment's) into a folder of its own, and run a preset from an empty folder:
    the configs come from the installed package, not from a checkout."""
    # From a copy of the sources: an in-tree build would leave build/ and egg-info behind,
    # whose stale files could end up in a later wheel.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "*.egg-info",
            "__pycache__",
            ".*_cache",
            "outputs",
            "multirun",
            "wandb",
        ),
    )
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("grubench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        str(p.relative_to(PACKAGE.parent))
        for p in PACKAGE.rglob("*")
        if p.suffix in (".yaml", ".json") or p.name == "py.typed"
    }
    assert shipped and shipped <= names, sorted(shipped - names)
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)

    site = tmp_path / "site"
    inst = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert inst.returncode == 0, inst.stderr[-3000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import grubench; print(grubench.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=empty,
        timeout=120,
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    sweep = empty / "outputs" / "sweep"
    p = subprocess.run(
        [
            str(site / "bin" / "grubench-train"),
            "-m",
            "+experiment=copy",
            *TINY,
            "task.train_size=64",
            "trainer.steps=2",
            "trainer.eval_every=2",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=empty,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    results = [json.loads(f.read_text()) for f in sorted(sweep.glob("*/results.json"))]
    assert [r["model"] for r in results] == ["gru", "lstm"]
    assert all(r["status"] == "completed" for r in results)
