"""A run that waits says so, and a run that stalls names the line it is stuck on.

`Watchdog.watch(name, waiting_for)` guards a block (a phase of `ppo_jax.phases`): every
`interval` seconds the block runs, a thread prints "<name>: still waiting for <waiting_for> after
N s". At its second line for a phase of that name it also dumps the stack of every thread to
stderr (`faulthandler`), once per phase name in a run, so that a run stuck in a compilation, a
device call or a lock says where. `stacks_on_signal` lets one ask a running process for the same
dump (`kill -USR1 <pid>`).

The interval is 30 s unless `$PPO_JAX_WATCHDOG_SECONDS` says otherwise.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator

INTERVAL_VARIABLE = "PPO_JAX_WATCHDOG_SECONDS"
DEFAULT_INTERVAL = 30.0


def interval() -> float:
  """Seconds between a waiting phase's lines: $PPO_JAX_WATCHDOG_SECONDS, else 30.

  Raises:
    ValueError: the variable is set to something other than a positive number of seconds.
  """
  text = os.environ.get(INTERVAL_VARIABLE, "").strip()
  if not text:
    return DEFAULT_INTERVAL
  try:
    seconds = float(text)
  except ValueError:
    seconds = float("nan")
  if not seconds > 0 or seconds == float("inf"):
    raise ValueError(f"{INTERVAL_VARIABLE} ({text!r}) must be a positive number of seconds")
  return seconds


def dump_stacks(file=None) -> None:
  """Writes every thread's Python stack to `file` (stderr by default), flushed.

  `faulthandler` writes straight to the file descriptor, which works however stuck the
  interpreter is; a stream without one (a test's captured stderr) gets `traceback`'s text.
  """
  file = sys.stderr if file is None else file
  try:
    fileno = file.fileno()
  except (AttributeError, OSError, io.UnsupportedOperation):
    fileno = None
  file.flush()
  if fileno is not None:
    faulthandler.dump_traceback(fileno, all_threads=True)
    return
  names = {thread.ident: thread.name for thread in threading.enumerate()}
  for ident, frame in sys._current_frames().items():
    file.write(f"Thread {ident:#x} ({names.get(ident, '?')}), most recent call last:\n")
    file.write("".join(traceback.format_stack(frame)))
  file.flush()


def stacks_on_signal(signum: int | None = None) -> int | None:
  """Makes signal `signum` (SIGUSR1 by default) dump every thread's stack to stderr, and the
  process go on. Returns the signal, or None where the platform has no such signal."""
  signum = getattr(signal, "SIGUSR1", None) if signum is None else signum
  if signum is None:
    return None
  faulthandler.register(signum, file=sys.stderr, all_threads=True, chain=False)
  return signum


class Watchdog:
  """Lines (and once per phase name, stacks) while a guarded block runs too long.

  Args:
    say: writes a line where it will be seen (`ppo_jax.console.Console.alert`).
    interval_seconds: seconds between lines; `interval()` by default.
    dump: writes every thread's stack (`dump_stacks` by default).
  """

  def __init__(
    self,
    say: Callable[[str], None] = lambda line: None,
    interval_seconds: float | None = None,
    dump: Callable[[], None] = dump_stacks,
  ):
    self.say, self.dump = say, dump
    self.interval = interval() if interval_seconds is None else interval_seconds
    self._dumped: set[str] = set()

  @contextlib.contextmanager
  def watch(self, name: str, waiting_for: str) -> Iterator[None]:
    """Guards the block as phase `name`; `waiting_for` completes "still waiting for ..."."""
    started, done = time.perf_counter(), threading.Event()

    def run():
      lines = 0
      while not done.wait(self.interval):
        lines += 1
        waited = time.perf_counter() - started
        self.say(f"{name}: still waiting for {waiting_for} after {waited:.0f} s")
        if lines == 2 and name not in self._dumped:
          self._dumped.add(name)
          self.say(f"{name}: the stack of every thread follows, on stderr")
          self.dump()

    thread = threading.Thread(target=run, name=f"watchdog {name}", daemon=True)
    thread.start()
    try:
      yield
    finally:
      done.set()
