"""`--import MODULE`: the modules of one's own that register envs (or randomizations) before a
command builds its env, so that `python -m experiments.train --env mylab/hopper --import
mylab.envs` trains an env that `envs.register` added."""

from __future__ import annotations

import argparse
import importlib


def add_option(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--import",
    dest="imports",
    metavar="MODULE",
    action="append",
    default=[],
    help="a module to import first (repeatable), e.g. one that calls envs.register",
  )


def import_modules(parser: argparse.ArgumentParser, modules: list[str]) -> None:
  """Imports each module; one that cannot be imported is a parser error naming it."""
  for module in modules:
    try:
      importlib.import_module(module)
    except ImportError as error:
      parser.error(f"--import {module}: {error}")
