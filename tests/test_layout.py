"""The package layout's rules (DESIGN.md, "Required stack and layout"), checked on the source.

- The core is pure: a module in `sentinel.core` imports only the core, the config schema,
  `sentinel.errors`, numpy and non-I/O standard-library modules (no Kafka, HTTP, sockets,
  logging set-up, filesystem or clock).
- Serving never imports TensorFlow: the daemon's scoring path loads and scores a model in a
  fresh interpreter with neither `tensorflow` nor `keras` in `sys.modules`.
- No import cycle inside `sentinel`: the graph counts every import statement, at module level
  *and* inside functions (a lazy import still ties two modules together), except those under
  ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sentinel"

# The standard library the core may use: values, arithmetic, parsing. Everything else (os,
# pathlib, io, time, socket, http, urllib, logging, threading, subprocess, ...) is I/O,
# a clock or concurrency, and belongs at the edges.
CORE_STDLIB = frozenset({
    "__future__", "abc", "bisect", "collections", "dataclasses", "datetime", "enum",
    "functools", "hashlib", "heapq", "itertools", "json", "math", "operator", "re",
    "statistics", "typing", "unicodedata",
})
CORE_SENTINEL = ("sentinel.core", "sentinel.config.schema", "sentinel.errors")
CORE_THIRD_PARTY = frozenset({"numpy"})


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import statement in `path`,
    at any depth, relative imports resolved; not those under ``if TYPE_CHECKING:``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST) -> Iterator[tuple[str, list[str], int]]:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, [], child.lineno
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                yield base, [alias.name for alias in child.names], child.lineno
            yield from walk(child)

    yield from walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))


def core_violations(path: Path) -> list[str]:
    bad = []
    for imported, _, line in imports(path):
        top = imported.partition(".")[0]
        if top == "sentinel":
            ok = any(imported == allowed or imported.startswith(allowed + ".")
                     for allowed in CORE_SENTINEL)
        else:
            ok = top in CORE_STDLIB or top in CORE_THIRD_PARTY
        if not ok:
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    return bad


def test_core_modules_import_only_the_core_the_config_schema_numpy_and_pure_stdlib():
    core = [path for name, path in modules().items() if name.startswith("sentinel.core")]
    assert len(core) >= 8, "the core package moved or is empty"
    violations = [v for path in core for v in core_violations(path)]
    assert not violations, "the core must stay pure (no I/O, no clock):\n" + "\n".join(violations)


def import_graph() -> dict[str, set[str]]:
    """Module -> the Sentinel modules it imports (``from pkg import submodule`` points at the
    submodule, ``from module import name`` at the module)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for imported, names, _ in imports(path):
            if imported.partition(".")[0] != "sentinel":
                continue
            targets = [f"{imported}.{n}" for n in names if f"{imported}.{n}" in known]
            if len(targets) < len(names) or not names:
                targets.append(imported)
            graph[name].update(t for t in targets if t in known and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the DFS path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_sentinel_has_no_import_cycle():
    graph = import_graph()
    assert "sentinel.core.pipeline" in graph and graph["sentinel.cli"], "graph is empty"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


SERVING = """
import json, sys
import numpy as np
import sentinel.model, sentinel.model.artifact, sentinel.model.fastlstm
import sentinel.daemon.daemon, sentinel.daemon.hotswap, sentinel.runner, sentinel.cli
loaded = None
if len(sys.argv) > 2:
    from sentinel.config.load import parse_config
    from sentinel.model.artifact import load_model
    config = parse_config(json.loads(sys.argv[2]))
    model = load_model(sys.argv[1], config)
    windows = np.random.default_rng(0).random((4, config.window_steps, len(config.features)))
    risk = model.scorer.score(windows)
    loaded = [model.scorer.runtime, len(risk)]
print(json.dumps({"loaded": loaded,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))}))
"""


def serving_modules(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", SERVING, *args], capture_output=True,
                            text=True, timeout=120, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_serving_imports_never_load_tensorflow():
    assert serving_modules()["heavy"] == []


@pytest.mark.slow
def test_loading_and_scoring_a_model_never_loads_tensorflow(trained):
    import yaml

    from tests.testkit.daemon import BASE_CONFIG

    model_dir, _ = trained
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw["training"] = {"lstm_units": [8, 4]}
    report = serving_modules(str(model_dir), json.dumps(raw))
    assert report["loaded"][1] == 4 and report["loaded"][0] != "tensorflow"
    assert report["heavy"] == []
