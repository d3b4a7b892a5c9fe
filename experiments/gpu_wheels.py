"""The wheels a bare GPU image lacks, for `make gpu-check`: prepared where pip reaches PyPI,
installed by the check where this Python lacks them (a GPU machine may reach no network).

python -m experiments.gpu_wheels [--dir .whl] [--python-version 3.12] [--extra SPEC ...]
make gpu-wheels

`prepare` downloads binary wheels for CPython 3.12 on x86-64 Linux of brax, mujoco, mujoco-mjx,
trimesh and tensorboardX and of everything they require, at the versions installed here (those
the tests pass with), leaving out jax, jaxlib and flax and all they require: the GPU image has
its own, built for its CUDA. `--extra` adds requirements of one's own choosing (e.g.
"playground==0.2.0" "mujoco-warp==X" "warp-lang==Y" for the Go1 stage). `install` puts the
wheels whose distribution this Python lacks into a folder of their own (pip --target), which
`experiments.gpu_check` puts on its children's PYTHONPATH.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOTS = ("brax", "mujoco", "mujoco-mjx", "trimesh", "tensorboardX")
NEVER = ("jax", "jaxlib", "flax")  # the GPU image's own, with all they require
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


def canonical(name: str) -> str:
  """A distribution's name as wheel files and importlib.metadata compare it."""
  return re.sub(r"[-_.]+", "_", name).lower()


def installed_closure(roots: tuple[str, ...], python_version: str) -> dict[str, str]:
  """{name: installed version} of `roots` and everything they require (for that Python on
  Linux, extras left out), as installed in this environment."""
  from packaging.requirements import Requirement  # here: a bare GPU image may lack it

  environment = {"python_version": python_version, "sys_platform": "linux", "extra": ""}
  found, todo = {}, list(roots)
  while todo:
    name = todo.pop()
    if canonical(name) in {canonical(n) for n in found}:
      continue
    try:
      distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
      continue  # not installed here: nothing to pin it to
    found[distribution.metadata["Name"]] = distribution.version
    for text in distribution.requires or []:
      requirement = Requirement(text)
      if requirement.marker is None or requirement.marker.evaluate(environment):
        todo.append(requirement.name)
  return found


def requirements(python_version: str, extra: tuple[str, ...] = ()) -> list[str]:
  """What `prepare` downloads: ROOTS' closure less NEVER's, pinned ("brax==0.14.2", ...)."""
  provided = {canonical(n) for n in installed_closure(NEVER, python_version)}
  wanted = installed_closure(ROOTS, python_version)
  pinned = [f"{n}=={v}" for n, v in sorted(wanted.items()) if canonical(n) not in provided]
  return pinned + list(extra)


def prepare(directory: Path, python_version: str = "3.12", extra: tuple[str, ...] = ()) -> None:
  """Downloads the wheels of `requirements` into `directory` (pip download, binary only)."""
  platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
  command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
  command += ["--python-version", python_version, "--implementation", "cp", *platforms]
  command += ["-d", str(directory), *requirements(python_version, extra)]
  print("$", " ".join(command), flush=True)
  subprocess.run(command, check=True)


def missing(directory: Path) -> list[Path]:
  """The wheels in `directory` whose distribution this Python does not have."""
  wheels = sorted(Path(directory).glob("*.whl"))
  have = {canonical(d.metadata["Name"]) for d in importlib.metadata.distributions()}
  return [wheel for wheel in wheels if canonical(wheel.name.split("-")[0]) not in have]


def install(directory: Path, target: Path) -> list[str]:
  """Installs the `missing` wheels into `target` (put first on sys.path here); their names."""
  wheels = missing(directory)
  if wheels:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    command += ["--no-compile", "--upgrade", "--target", str(target), *map(str, wheels)]
    subprocess.run(command, check=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
  return [wheel.name.split("-")[0] for wheel in wheels]


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dir", type=Path, default=Path(".whl"), help="where the wheels go")
  parser.add_argument("--python-version", default="3.12", help="the GPU image's Python")
  parser.add_argument("--extra", nargs="*", default=[], help="more requirements, pinned")
  args = parser.parse_args(argv)
  prepare(args.dir, args.python_version, tuple(args.extra))


if __name__ == "__main__":
  main()
