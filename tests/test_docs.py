"""The documentation (README.md and docs/*.md) checked against the code.

Every fenced Python block parses; every shell command names a module, option, make target, extra
and file that exist (the arguments of `python -m MODULE ...` go through the module's own argparse
parser); the fast commands and the Python blocks whose first line is RUN_MARKER run; every
relative link and anchor resolves; inline code that names a module, function or repository path
names one that exists; the configuration page's table lists every PPOConfig field with its
default; and the README stays a landing page that links every page.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))
README_MAX_LINES = 200
RUN_MARKER = "# runs in the docs test"  # first line of a Python block that the test runs
SHELL_LANGUAGES = ("bash", "sh", "console")
RUN_TIMEOUT_S = 120
# Arguments that only read: a command made of these runs in the test.
FAST_ARGUMENTS = {"--help", "-h", "--list"}
# Top-level folders of the repository: a path under one of them must exist.
REPOSITORY_FOLDERS = ("ppo_jax", "envs", "experiments", "tests", "notebooks", "docs")
# Inline code like `health.json` names a file, not an attribute of the module `health`.
FILE_SUFFIXES = {"json", "jsonl", "png", "npz", "mp4", "gif", "onnx", "py", "md", "ipynb", "csv"}
WRAPPERS = {"srun", "sudo", "time", "env"}


class Block(NamedTuple):
  page: Path
  line: int  # of the opening fence, 1-based
  language: str
  text: str

  @property
  def where(self) -> str:
    return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
  blocks, lines, start, language = [], page.read_text().splitlines(), None, ""
  for number, line in enumerate(lines, 1):
    if start is None and line.startswith("```"):
      start, language, body = number, line[3:].strip(), []
    elif start is not None and line.startswith("```"):
      blocks.append(Block(page, start, language, "\n".join(body) + "\n"))
      start = None
    elif start is not None:
      body.append(line)
  assert start is None, f"{page.name}:{start}: unclosed code fence"
  return blocks


def prose(page: Path) -> str:
  """The page without its fenced blocks."""
  return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
PYTHON_BLOCKS = [block for block in BLOCKS if block.language == "python"]
SHELL_BLOCKS = [block for block in BLOCKS if block.language in SHELL_LANGUAGES]


# Shell commands.


def shell_commands(block: Block) -> list[list[str]]:
  """The commands of a shell block as argument lists: continuation lines joined, comments
  dropped, `a && b` and `a | b` split, environment assignments and wrappers (srun) removed."""
  text = block.text.replace("\\\n", " ")
  lines = text.splitlines()
  if block.language == "console":
    lines = [line[2:] for line in lines if line.startswith("$ ")]
  commands = []
  for line in lines:
    tokens = shlex.split(line, comments=True)
    command: list[str] = []
    for token in [*tokens, "&&"]:
      if token in ("&&", "||", "|", ";"):
        while command and (
          re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", command[0]) or (command[0] in WRAPPERS)
        ):
          command.pop(0)
        if command:
          commands.append(command)
        command = []
      else:
        command.append(token)
  return commands


def is_python(word: str) -> bool:
  return Path(word).name in ("python", "python3")


def repository_paths(tokens: list[str]) -> list[str]:
  """Tokens that are paths under a folder of the repository."""
  return [t for t in tokens if re.fullmatch(rf"({'|'.join(REPOSITORY_FOLDERS)})/[\w./-]*", t)]


def make_targets() -> set[str]:
  text = (ROOT / "Makefile").read_text()
  return set(re.findall(r"^([\w.-]+)\s*:(?!=)", text, flags=re.M))


def extras() -> set[str]:
  text = (ROOT / "pyproject.toml").read_text()
  section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
  return set(re.findall(r"^([\w-]+)\s*=", section, flags=re.M))


class Parsed(Exception):
  """Raised in place of going on once a module's parser has parsed its arguments."""

  def __init__(self, parser: argparse.ArgumentParser, namespace, extra: list[str]):
    super().__init__()
    self.parser, self.namespace, self.extra = parser, namespace, extra


def parse_module_arguments(module: str, arguments: list[str], monkeypatch) -> str | None:
  """Parses `arguments` with the parser `module`'s main() builds; an error message, or None.

  The parser's parse_known_args is replaced for the call, so main() stops right after parsing,
  before it trains, writes or imports anything more.
  """
  original = argparse.ArgumentParser.parse_known_args

  def parse_and_stop(self, args=None, namespace=None):
    namespace, extra = original(self, args, namespace)
    raise Parsed(self, namespace, extra)

  main = importlib.import_module(module).main
  with monkeypatch.context() as patch:
    patch.setattr(argparse.ArgumentParser, "parse_known_args", parse_and_stop)
    errors = io.StringIO()
    try:
      with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        main(arguments)
    except Parsed as parsed:
      if parsed.extra:
        return f"unknown arguments {parsed.extra}"
      return check_parsed(module, parsed)
    except SystemExit as exit:
      return None if exit.code == 0 else errors.getvalue().strip().splitlines()[-1]
  return "main() returned without parsing its arguments"


def check_parsed(module: str, parsed: Parsed) -> str | None:
  """What the module itself checks after parsing: presets, config overrides, comparisons."""
  from experiments.presets import PRESETS
  from ppo_jax import PPOConfig

  args = vars(parsed.namespace)
  fields = {field.name for field in dataclasses.fields(PPOConfig)}
  overrides = {name: value for name, value in args.items() if name in fields}
  try:
    if module == "experiments.compare":
      from experiments import compare

      with contextlib.redirect_stderr(io.StringIO()):
        compare.build_configs(parsed.parser, parsed.namespace)
    elif "preset" in args and not args.get("resume") and not args.get("list"):
      if args["preset"] not in PRESETS:
        return f"no preset {args['preset']!r}"
      dataclasses.replace(PRESETS[args["preset"]], **overrides)
  except (ValueError, TypeError) as error:
    return str(error)
  except SystemExit:
    return "the module's own checks rejected the arguments"
  return None


def test_shell_commands_name_what_exists(monkeypatch):
  targets, known_extras = make_targets(), extras()
  failures = []
  for block in SHELL_BLOCKS:
    for command in shell_commands(block):
      problem = None
      missing = [p for p in repository_paths(command) if not (ROOT / p).exists()]
      if missing:
        problem = f"no such path {missing}"
      elif is_python(command[0]) and command[1:2] == ["-m"]:
        module = command[2]
        if importlib.util.find_spec(module) is None:
          problem = f"no module {module}"
        else:
          problem = parse_module_arguments(module, command[3:], monkeypatch)
      elif is_python(command[0]) and command[1:2] == ["-c"]:
        try:
          ast.parse(command[2])
        except SyntaxError as error:
          problem = f"python -c does not parse: {error}"
      elif command[0] == "make":
        unknown = [t for t in command[1:] if "=" not in t and t not in targets]
        problem = f"no make target {unknown}" if unknown else None
      elif command[0] == "pip" and "-e" in command:
        asked = {e for t in command for e in re.findall(r"\[([\w,-]+)\]", t)}
        unknown = {e for group in asked for e in group.split(",")} - known_extras
        problem = f"no extra {sorted(unknown)} in pyproject.toml" if unknown else None
      if problem:
        failures.append(f"{block.where}: {' '.join(command)}: {problem}")
  assert not failures, "\n".join(failures)


def test_fast_commands_run():
  fast = {
    tuple(command[1:])
    for block in SHELL_BLOCKS
    for command in shell_commands(block)
    if is_python(command[0])
    and command[1:2] == ["-m"]
    and len(command) > 3
    and set(command[3:]) <= FAST_ARGUMENTS
  }
  assert ("-m", "experiments.train", "--list") in fast
  assert ("-m", "experiments.train", "--help") in fast
  for arguments in sorted(fast):
    done = subprocess.run(
      [sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, f"python {' '.join(arguments)}:\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), f"python {' '.join(arguments)} printed nothing"


# Python blocks.


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.where)
def test_python_block_parses(block):
  ast.parse(block.text, filename=block.where)


RUNNABLE = [block for block in PYTHON_BLOCKS if block.text.startswith(RUN_MARKER)]


def test_some_python_blocks_run_in_the_test():
  assert len(RUNNABLE) >= 2


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: block.where)
def test_marked_python_block_runs(block):
  done = subprocess.run(
    [sys.executable, "-c", block.text],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=RUN_TIMEOUT_S,
  )
  assert done.returncode == 0, f"{block.where}:\n{done.stderr[-2000:]}"


# Links and inline code.


def slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
  return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose(page), flags=re.M)}


def test_relative_links_resolve():
  failures = []
  for page in PAGES:
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
      if re.match(r"[a-z]+:", target):  # https:, mailto:
        continue
      path, _, anchor = target.partition("#")
      resolved = (page.parent / path).resolve() if path else page
      if not resolved.exists():
        failures.append(f"{page.relative_to(ROOT)}: {target}: no such file")
        continue
      if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        failures.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
  assert not failures, "\n".join(failures)


def inline_code(page: Path) -> list[str]:
  return re.findall(r"`([^`\n]+)`", prose(page))


def resolves(dotted: str) -> bool:
  """Whether a dotted name is a module, or an attribute path of one."""
  parts = dotted.split(".")
  for cut in range(len(parts), 0, -1):
    try:
      target = importlib.import_module(".".join(parts[:cut]))
    except ImportError:
      continue
    for name in parts[cut:]:
      if not hasattr(target, name):
        return False
      target = getattr(target, name)
    return True
  return False


def test_inline_code_names_what_exists():
  # `result` also names what `train` returns in the pages' examples (result.metrics, ...).
  modules = {p.stem for p in (ROOT / "ppo_jax").glob("*.py")} - {"__init__", "result"}
  targets = make_targets()
  failures = []
  for page in PAGES:
    for code in inline_code(page):
      where = f"{page.relative_to(ROOT)}: `{code}`"
      name = code.removesuffix("()")
      if re.fullmatch(r"[\w.]+", name) and name.rsplit(".", 1)[-1] not in FILE_SUFFIXES:
        first = name.split(".")[0]
        if first in ("ppo_jax", "envs", "experiments") and "." in name:
          if not resolves(name):
            failures.append(f"{where}: does not resolve")
        elif first in modules and "." in name and not resolves(f"ppo_jax.{name}"):
          failures.append(f"{where}: ppo_jax.{name} does not resolve")
      for path in repository_paths([code.split(" ")[0]]):
        if not (ROOT / path).exists():
          failures.append(f"{where}: no such path")
      module = re.match(r"python -m ([\w.]+)", code)
      if module and importlib.util.find_spec(module[1]) is None:
        failures.append(f"{where}: no module {module[1]}")
      target = re.match(r"make ([\w-]+)", code)
      if target and target[1] not in targets:
        failures.append(f"{where}: no make target {target[1]}")
  assert not failures, "\n".join(failures)


# The pages themselves.


def test_every_config_field_is_in_the_configuration_table():
  from ppo_jax import PPOConfig

  table = (ROOT / "docs/configuration.md").read_text().split("## Every field", 1)[1]
  documented = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", table, flags=re.M))
  defaults = {field.name: repr(field.default) for field in dataclasses.fields(PPOConfig)}
  assert set(documented) == set(defaults), set(documented) ^ set(defaults)
  wrong = {name: (documented[name], defaults[name]) for name in defaults}
  assert {k: v for k, v in wrong.items() if v[0] != v[1]} == {}


def test_the_readme_is_a_landing_page_that_links_every_page():
  assert len(README.read_text().splitlines()) <= README_MAX_LINES
  linked = {
    Path(t.partition("#")[0]).name for t in re.findall(r"\]\((docs/[^)\s]+)\)", prose(README))
  }
  pages = {page.name for page in (ROOT / "docs").glob("*.md")}
  assert pages <= linked, pages - linked


def feature_table(page: Path) -> list[str]:
  lines = page.read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("| feature |"))
  end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
  return lines[start:end]


def test_the_readme_feature_table_is_the_comparison_pages():
  assert feature_table(README) == feature_table(ROOT / "docs/comparison.md")
