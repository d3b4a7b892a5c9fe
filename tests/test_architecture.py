"""The package's shape: no import cycle, a math layer that knows nothing of environments or
the runner, and functions and modules short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("ppo_jax", "envs")
MATH_LAYER = ("gae", "losses", "diagnostics", "distribution", "normalization", "trpo", "types")


def module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
  """The project modules `path` imports when it runs (imports for type checkers left out)."""
  tree = ast.parse(path.read_text())
  skipped = {
    id(node)
    for block in ast.walk(tree)
    if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
    for node in ast.walk(block)
  }
  found = set()
  for node in ast.walk(tree):
    if id(node) in skipped:
      continue
    if isinstance(node, ast.ImportFrom) and node.module:
      # `from ppo_jax import gae` imports the module ppo_jax.gae, not the package's __init__.
      names = [
        f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
        for alias in node.names
      ]
    elif isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    else:
      continue
    found |= {name for name in names if name in known}
  return found


def import_graph() -> dict[str, set[str]]:
  paths = [p for package in PACKAGES for p in (ROOT / package).glob("*.py")]
  known = {module_name(p) for p in paths}
  return {module_name(p): imports(p, known) for p in paths}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for module in graph[todo.pop()] - seen:
      seen.add(module)
      todo.append(module)
  return seen


def test_no_import_cycle():
  graph = import_graph()
  cyclic = [m for m in graph if m not in PACKAGES and m in reachable(graph, m)]
  assert not cyclic


def test_the_math_layer_knows_no_env_and_no_runner():
  graph = import_graph()
  for name in MATH_LAYER:
    reached = reachable(graph, f"ppo_jax.{name}")
    assert not {m for m in reached if m.startswith("envs") or m in PACKAGES}, name
    assert not reached & {"ppo_jax.runner", "ppo_jax.step", "ppo_jax.config"}, name


def test_functions_and_modules_are_short():
  for path in (ROOT / "ppo_jax").glob("*.py"):
    source = path.read_text()
    assert len(source.splitlines()) <= 400, path.name
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, ast.FunctionDef):
        assert node.end_lineno - node.lineno + 1 <= 80, f"{path.name}: {node.name}"
