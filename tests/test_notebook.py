"""notebooks/throughput.ipynb: committed without outputs, and runs end to end on a tiny sweep.

The run executes a copy of the notebook in a kernel of this very interpreter (a kernelspec
written to a temporary folder), so nothing has to be registered with Jupyter and the repository
file is never written. `python tests/test_notebook.py --strip` clears the committed notebook's
outputs in place.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "throughput.ipynb"
FIGURES = 4  # SPS vs num_envs, rollout/update split, ratio, compile time

# Two sweep points of the built-in cart-pole with tiny networks and 512 steps per iteration.
TINY = {
  "PRESET": "cartpole_balance",
  "NUM_ENVS": [8, 16],
  "ITERATIONS": 1,
  "REPEATS": 1,
  "DEVICES": [2],
  "config": {
    "num_timesteps": 1024,
    "batch_size": 16,
    "num_minibatches": 4,
    "unroll_length": 8,
    "num_updates_per_batch": 1,
    "episode_length": 100,
    "policy_hidden_layer_sizes": [8],
    "value_hidden_layer_sizes": [8],
  },
}


def strip(nb: nbformat.NotebookNode) -> bool:
  """Clears outputs and execution counts in place; True if anything changed."""
  changed = False
  for cell in nb.cells:
    if cell.cell_type != "code":
      continue
    if cell.outputs or cell.execution_count is not None or "execution" in cell.metadata:
      changed = True
    cell.outputs = []
    cell.execution_count = None
    cell.metadata.pop("execution", None)
  return changed


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  dirty = [
    index
    for index, cell in enumerate(nb.cells)
    if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
  ]
  assert not dirty, (
    f"{NOTEBOOK.name}: code cells {dirty} carry outputs or execution counts; "
    "clear them with `python tests/test_notebook.py --strip`"
  )


def test_first_code_cell_holds_the_parameters():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  first = next(cell for cell in nb.cells if cell.cell_type == "code")
  assert "parameters" in first.metadata.get("tags", [])
  for name in ("PRESET", "NUM_ENVS", "ITERATIONS"):
    assert f"{name} =" in first.source


def this_interpreters_kernel(folder: Path) -> KernelManager:
  """A kernel manager whose only kernelspec runs ipykernel on `sys.executable`."""
  spec = folder / "kernels" / "ppo_jax_test"
  spec.mkdir(parents=True)
  argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
  (spec / "kernel.json").write_text(
    json.dumps({"argv": argv, "display_name": "ppo_jax test", "language": "python"})
  )
  specs = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
  return KernelManager(kernel_name="ppo_jax_test", kernel_spec_manager=specs)


def text_of(cell: nbformat.NotebookNode) -> str:
  """What a code cell printed."""
  return "".join(
    output.get("text", "") for output in cell.outputs if output.output_type == "stream"
  )


@pytest.mark.slow
def test_notebook_runs_on_a_tiny_sweep(tmp_path, monkeypatch):
  monkeypatch.setenv("THROUGHPUT_NOTEBOOK_OVERRIDES", json.dumps(TINY))
  monkeypatch.setenv("MPLBACKEND", "Agg")  # the notebook's `%matplotlib inline` still renders PNGs
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)  # executed in memory, never written back
  client = NotebookClient(
    nb,
    km=this_interpreters_kernel(tmp_path),
    timeout=120,
    startup_timeout=60,
    resources={"metadata": {"path": str(tmp_path)}},
  )
  client.execute()

  texts = [text_of(cell) for cell in nb.cells if cell.cell_type == "code"]
  text = "\n".join(texts)
  assert sys.executable in text, "the kernel ran another interpreter"
  assert "PRESET='cartpole_balance' NUM_ENVS=[8, 16]" in text
  table = next(t for t in texts if "rollout compile s" in t)
  header, _, *rows = table.splitlines()[1:]
  for column in ("envs", "train SPS", "rollout SPS", "ratio", "rollout s", "update s", "compile s"):
    assert column in header
  assert [row.split()[0] for row in rows] == ["8", "16"]
  by_devices = next(t for t in texts if "rollout SPS" in t and "devices" in t)
  counts = [line.split()[0] for line in by_devices.splitlines()[2:]]
  assert counts == ["2"], by_devices  # the kernel made 2 CPU devices as asked

  images = [
    output
    for cell in nb.cells
    if cell.cell_type == "code"
    for output in cell.outputs
    if "image/png" in output.get("data", {})
  ]
  assert len(images) == FIGURES


if __name__ == "__main__":
  if sys.argv[1:] != ["--strip"]:
    sys.exit(f"usage: python {sys.argv[0]} --strip   (clears {NOTEBOOK.name}'s outputs)")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  if strip(notebook):
    nbformat.write(notebook, NOTEBOOK)
  print(f"{NOTEBOOK}: no outputs")
