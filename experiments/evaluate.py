"""Evaluate a run's final policy: per-episode returns, a step-by-step trace and a video.

python -m experiments.evaluate RUN_DIR [--episodes 10] [--deterministic] [--seed 0] [--no-video]

RUN_DIR may also be RUN_DIR/largest_kl/before or .../after: the policies around the update with
the largest KL, which the trainer saves; the same --seed gives both the same initial states.

Runs `--episodes` fresh envs in parallel for `max_episode_steps` steps (one jitted scan)
and keeps each env's first episode only. Everything goes to a new folder,
RUN_DIR/eval/<date>-<time>[-n]/, so an earlier evaluation is never overwritten:

  returns.json  per-episode returns, lengths and termination flags, their mean and std,
                the seed and whether actions were deterministic.
  trace.npz     observations [T, N, obs] (observations/<entry> of dict ones), actions [T, N, act] (clipped, as sent to the env),
                saturated [T, N] (fraction of action dimensions at the bounds, unclipped),
                rewards [T, N], terminations [T, N], truncations [T, N] and alive [T, N]
                (True up to and including the step that ends the env's first episode).
  episode0.mp4  episode 0 rendered by the source env's own renderer, encoded by the ffmpeg
                that imageio-ffmpeg ships (a .gif, with a note saying why, where that fails).
                Only Brax and Playground envs render, and only with MUJOCO_GL set (egl with a
                GPU, or osmesa on a CPU: apt-get install libosmesa6); otherwise a one-line
                note says why. A rendering failure never fails the evaluation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

import envs
from envs import Environment
from experiments import imports
from ppo_jax import checkpoint, health, load_policy, logger
from ppo_jax.distribution import DISTRIBUTIONS
from ppo_jax.normalization import entry
from ppo_jax.rollout import Trace, first_episodes, summarize, trace_arrays, trace_episodes
from ppo_jax.step import make_env

EVAL_DIR = "eval"
RETURNS_FILE = "returns.json"
TRACE_FILE = "trace.npz"
VIDEO_NAME = "episode0"
# Sources whose envs are MuJoCo models, rendered by their own `render`.
MUJOCO_SOURCES = ("brax/", "playground/")


def render_states(env: Environment) -> Callable[[Any], Any]:
  """What the source's `render` takes of its core state: Brax renders pipeline states,
  Playground renders whole core states."""
  if env.name.startswith("brax/"):
    return lambda core: core.pipeline_state
  return lambda core: core


def make_rollout(
  env: Environment,
  policy: Callable[..., jax.Array],
  num_episodes: int,
  record_env0: bool,
  saturation_bound: float = 1.0,
) -> Callable[[jax.Array], tuple[Trace, Any]]:
  """Returns rollout(key) -> (trace [T, N, ...], env 0's render states [T, ...] or None),
  as `ppo_jax.rollout.trace_episodes` records them.

  Args:
    env: the wrapped environment.
    policy: policy(obs [N, obs], key) -> action [N, act] in [-1, 1], as `load_policy` makes;
      a deterministic one ignores the key.
    num_episodes: N, envs run in parallel, one episode each.
    record_env0: also return env 0's render states before each step (for a video).
    saturation_bound: the policy distribution's (`DiagonalGaussian.saturation_bound`).
  """
  record = render_states(env) if record_env0 else None
  return lambda key: trace_episodes(env, policy, key, num_episodes, record, saturation_bound)


def one_line(error: BaseException) -> str:
  """'Type: message' of an exception, on one line."""
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def mujoco_import_error() -> str | None:
  """Why `import mujoco` fails under this process's MUJOCO_GL, or None when it works.

  A MUJOCO_GL whose library is missing (osmesa without libOSMesa) breaks the import itself,
  and with it every Brax and Playground env; a subprocess finds out without harming this one.
  """
  if "mujoco" in sys.modules or not os.environ.get("MUJOCO_GL", "").strip():
    return None
  try:
    probe = subprocess.run(
      [sys.executable, "-c", "import mujoco"], capture_output=True, text=True, timeout=300
    )
  except subprocess.TimeoutExpired:
    return "import mujoco timed out"
  if probe.returncode == 0:
    return None
  lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
  return lines[-1] if lines else f"import mujoco exited with status {probe.returncode}"


@contextlib.contextmanager
def mujoco_gl(value: str | None) -> Iterator[None]:
  """Sets MUJOCO_GL for the block (None: leaves it as it is), then restores it."""
  before = os.environ.get("MUJOCO_GL")
  if value is not None:
    os.environ["MUJOCO_GL"] = value
  try:
    yield
  finally:
    if before is None:
      os.environ.pop("MUJOCO_GL", None)
    else:
      os.environ["MUJOCO_GL"] = before


def rendering_unavailable(env_name: str, gl_error: str | None) -> str | None:
  """Why this env cannot be rendered here, known before any rendering; None if it may be.

  Args:
    env_name: "<source>/<name>".
    gl_error: `mujoco_import_error()`, for Brax and Playground envs.
  """
  if not env_name.startswith(MUJOCO_SOURCES):
    return f"{env_name} is a built-in task, which has no renderer"
  gl = os.environ.get("MUJOCO_GL", "").strip()
  if not gl:
    return "MUJOCO_GL is not set (set MUJOCO_GL=egl, or osmesa, to render headless)"
  if gl.lower() in ("disable", "disabled", "off", "false", "0"):
    return f"MUJOCO_GL={gl} disables rendering"
  if gl_error is not None:
    return f"MuJoCo cannot load its MUJOCO_GL={gl} backend ({gl_error})"
  return None


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> tuple[Path, str | None]:
  """Writes frames [H, W, 3] uint8 to path.mp4 (H.264, by the ffmpeg program imageio-ffmpeg
  ships), or to path.gif where that fails.

  Returns:
    (the file written, why it is a GIF or None).
  """
  mp4 = path.with_suffix(".mp4")
  try:
    import imageio_ffmpeg

    height, width = np.shape(frames[0])[:2]
    # Odd sizes are padded to even ones, which H.264 in yuv420p needs.
    writer = imageio_ffmpeg.write_frames(str(mp4), (width, height), fps=fps, macro_block_size=2)
    try:
      with warnings.catch_warnings():
        # JAX warns of any fork; this one only execs ffmpeg, which is safe.
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        writer.send(None)  # starts ffmpeg
      for frame in frames:
        writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
    finally:
      writer.close()  # ends ffmpeg, also after a failure
    return mp4, None
  except Exception as error:  # no imageio-ffmpeg, or its ffmpeg cannot run here
    mp4.unlink(missing_ok=True)
    from PIL import Image

    images = [Image.fromarray(np.asarray(frame)) for frame in frames]
    gif = path.with_suffix(".gif")
    images[0].save(gif, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return gif, f"GIF, since no mp4 could be written: {one_line(error)}"


def render_episode(
  env: Environment, states: Any, length: int, path: Path
) -> tuple[Path, str | None]:
  """Renders the first `length` of env 0's stacked render states [T, ...] to a video.

  Returns:
    What `write_video` returns.
  """
  states = jax.device_get(states)
  trajectory = [jax.tree.map(lambda x, t=t: x[t], states) for t in range(length)]
  frames = env.core.render(trajectory)
  fps = 1.0 / (float(getattr(env.core, "dt", 1.0 / 30.0)) * env.action_repeat)
  return write_video(path, frames, fps)


def policy_folders(run_dir: Path) -> list[Path]:
  """The run directory and the folders of the policies around its largest-KL update (before,
  after; one pair per seed of a panel): each is a RUN_DIR this script evaluates."""
  saved = (run_dir / health.LARGEST_KL_DIR).glob(f"**/before/{checkpoint.POLICY}/policy.json")
  pairs = sorted(path.parents[2] for path in saved)
  return [run_dir, *(pair / name for pair in pairs for name in ("before", "after"))]


def write_json(path: Path, data: dict[str, Any]) -> None:
  path.write_text(json.dumps(data, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description="Evaluate a run's final policy; results go to RUN_DIR/eval/<time>/.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument(
    "run_dir",
    type=Path,
    help="run directory, or a policy folder's parent such as RUN_DIR/largest_kl/before",
  )
  parser.add_argument("--episodes", type=int, default=10, help="episodes, run in parallel")
  parser.add_argument(
    "--deterministic", action="store_true", help="act with the mean action, not a sample"
  )
  parser.add_argument("--seed", type=int, default=0, help="seed of the resets and actions")
  parser.add_argument("--no-video", action="store_true", help="do not render episode 0")
  imports.add_option(parser)
  return parser


def main(argv: list[str] | None = None) -> Path:
  """Evaluates RUN_DIR's final policy; returns the new evaluation folder."""
  parser = build_parser()
  args = parser.parse_args(argv)
  imports.import_modules(parser, args.imports)
  run_dir: Path = args.run_dir
  if args.episodes < 1:
    parser.error(f"--episodes ({args.episodes}) must be >= 1")
  try:  # the config the policy was saved with
    cfg = checkpoint.load_policy_payload(run_dir)[0]
  except FileNotFoundError as error:
    parser.error(str(error))
  try:
    envs.check_name(cfg.env)
  except ValueError as error:  # e.g. an env registered by a module not imported (--import)
    parser.error(str(error))

  # A MUJOCO_GL that breaks `import mujoco` would break the env too: then it is made without GL.
  gl_error = mujoco_import_error() if cfg.env.startswith(MUJOCO_SOURCES) else None
  with mujoco_gl("disable" if gl_error is not None else None):
    env = make_env(cfg)
  no_video = "skipped (--no-video)" if args.no_video else rendering_unavailable(cfg.env, gl_error)
  saved = load_policy(run_dir, deterministic=args.deterministic)
  policy = lambda obs, key: saved(entry(obs, cfg.policy_obs_key), key)  # noqa: E731
  bound = DISTRIBUTIONS[cfg.distribution_type].saturation_bound
  rollout = jax.jit(make_rollout(env, policy, args.episodes, no_video is None, bound))
  trace, states = rollout(jax.random.PRNGKey(args.seed))
  trace = jax.device_get(trace)

  out = logger.new_directory(run_dir / EVAL_DIR)
  np.savez(out / TRACE_FILE, **trace_arrays(trace))
  results = {
    "env": cfg.env,
    "episodes": args.episodes,
    "deterministic": args.deterministic,
    "seed": args.seed,
    "max_episode_steps": env.max_episode_steps,
    **summarize(first_episodes(trace)),
    "video": None,
    "video_note": no_video,
  }
  write_json(out / RETURNS_FILE, results)  # before rendering, which may be slow or crash

  for i, (ret, length, terminated) in enumerate(
    zip(results["returns"], results["lengths"], results["terminated"], strict=True)
  ):
    ending = "terminated" if terminated else "truncated"
    print(f"episode {i}: return {ret:.2f}, length {length} ({ending})")
  mode = "deterministic" if args.deterministic else "sampled"
  print(
    f"{cfg.env}: mean return {results['mean_return']:.2f} +- {results['std_return']:.2f} over "
    f"{args.episodes} episodes ({mode} actions, seed {args.seed}), mean length "
    f"{results['mean_length']:.1f}, terminated {sum(results['terminated'])}/{args.episodes}"
  )

  if no_video is None:
    try:
      video, format_note = render_episode(env, states, results["lengths"][0], out / VIDEO_NAME)
      results["video"], results["video_note"] = video.name, format_note
    except Exception as error:  # a renderer that fails must not fail the evaluation
      no_video = f"the renderer failed ({one_line(error)})"
      results["video_note"] = no_video
    write_json(out / RETURNS_FILE, results)
  if results["video"] is not None:
    note = f" ({results['video_note']})" if results["video_note"] else ""
    print(f"video of episode 0: {out / results['video']}{note}")
  elif args.no_video:
    print(f"video: {no_video}")
  else:
    print(f"video: rendering is unavailable: {no_video}")
  print(f"wrote {out}")
  return out


if __name__ == "__main__":
  main()
