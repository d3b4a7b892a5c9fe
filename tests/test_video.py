"""Videos: frames go to an mp4 through imageio-ffmpeg (a GIF, saying why, only where that
fails); with an OpenGL backend for MuJoCo, rendered frames make an mp4 of as many frames.

Rendering needs a GL library MuJoCo can load: EGL with a GPU, or OSMesa on a CPU
(`apt-get install libosmesa6`, MUJOCO_GL=osmesa). Without one, the rendering tests are skipped
and say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import imageio_ffmpeg
import numpy as np
import pytest
from tiny import child_environment

from experiments import evaluate

FRAMES = 20


def read_frames(path):
  """(frames [N, H, W, 3] uint8, frames per second) of a video file, decoded by ffmpeg."""
  reader = imageio_ffmpeg.read_frames(str(path))
  meta = next(reader)
  width, height = meta["size"]
  frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
  return np.stack(frames), meta["fps"]


def moving_square(count, height=48, width=64):
  """[count, H, W, 3] uint8 frames of a white square moving right on grey."""
  frames = np.full((count, height, width, 3), 60, np.uint8)
  for t in range(count):
    frames[t, 16:32, 2 * t : 2 * t + 16] = 255
  return frames


def test_frames_make_an_mp4_with_every_frame(tmp_path):
  frames = moving_square(FRAMES)
  path, note = evaluate.write_video(tmp_path / "episode0", list(frames), fps=25.0)
  assert path == tmp_path / "episode0.mp4" and note is None
  decoded, fps = read_frames(path)
  assert decoded.shape == frames.shape and fps == 25.0
  # Lossy, but the picture is the one sent: the square is where it was.
  assert np.mean(np.abs(decoded.astype(int) - frames)) < 5.0


def test_odd_sizes_are_padded_to_even_ones(tmp_path):
  path, note = evaluate.write_video(tmp_path / "odd", list(moving_square(3, 45, 61)), fps=10.0)
  assert note is None
  assert read_frames(path)[0].shape == (3, 46, 62, 3)


def test_a_gif_when_no_mp4_can_be_written_says_why(tmp_path, monkeypatch):
  def no_ffmpeg(*args, **kwargs):
    raise RuntimeError("No ffmpeg exe could be found")

  monkeypatch.setattr(imageio_ffmpeg, "write_frames", no_ffmpeg)
  path, note = evaluate.write_video(tmp_path / "episode0", list(moving_square(FRAMES)), fps=25.0)
  assert path == tmp_path / "episode0.gif" and not (tmp_path / "episode0.mp4").exists()
  assert note == "GIF, since no mp4 could be written: RuntimeError: No ffmpeg exe could be found"
  from PIL import Image

  with Image.open(path) as gif:
    assert gif.n_frames == FRAMES


RENDER = textwrap.dedent(
  """
  import sys
  from pathlib import Path

  XML = '''<mujoco><worldbody><light pos="0 0 2"/>
    <body><freejoint/><geom type="box" size=".1 .1 .1" rgba="1 0 0 1"/></body>
    </worldbody></mujoco>'''
  try:  # a MUJOCO_GL whose library is missing breaks the import itself
    import mujoco

    model = mujoco.MjModel.from_xml_string(XML)
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, 120, 160)
  except Exception as error:  # no GL library MuJoCo can load
    print(f"{type(error).__name__}: {error}".splitlines()[0])
    sys.exit(3)
  frames = []
  for _ in range(int(sys.argv[2])):
    mujoco.mj_step(model, data)
    renderer.update_scene(data)
    frames.append(renderer.render())
  from experiments.evaluate import write_video

  path, note = write_video(Path(sys.argv[1]), frames, fps=30.0)
  print(path, note)
  """
)


def find_gl(path, frames):
  """(a MUJOCO_GL value with which MuJoCo renders here, or None; why the others did not).

  Tries the environment's MUJOCO_GL, else EGL (a GPU) and OSMesa (a CPU): each renders
  `frames` frames into path/<value>.mp4 in a fresh process.
  """
  tried = [os.environ["MUJOCO_GL"]] if os.environ.get("MUJOCO_GL") else ["egl", "osmesa"]
  failures = []
  for gl in tried:
    run = subprocess.run(
      [sys.executable, "-c", RENDER, str(path / gl), str(frames)],
      env={**child_environment(None), "MUJOCO_GL": gl},
      capture_output=True,
      text=True,
      timeout=300,
    )
    if run.returncode == 3:
      failures.append(f"MUJOCO_GL={gl}: {run.stdout.strip()}")
      continue
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(path / f"{gl}.mp4"), "None"]  # an mp4, no note
    return gl, failures
  return None, failures


def skip_without_gl(failures):
  pytest.skip(
    "no OpenGL backend MuJoCo can load here (" + "; ".join(failures) + "): on a CPU, "
    "`apt-get install libosmesa6` (MUJOCO_GL=osmesa); on a GPU, EGL (MUJOCO_GL=egl)"
  )


def test_rendered_frames_make_an_mp4_of_as_many_frames(tmp_path):
  gl, failures = find_gl(tmp_path, FRAMES)
  if gl is None:
    skip_without_gl(failures)
  frames, _ = read_frames(tmp_path / f"{gl}.mp4")
  assert frames.shape == (FRAMES, 120, 160, 3)
  assert frames.std() > 1.0  # a scene, not a blank picture


@pytest.mark.slow  # trains brax inverted_pendulum (~2 min on one CPU core)
def test_a_cli_run_renders_the_final_and_the_largest_kl_policies(tmp_path):
  gl, failures = find_gl(tmp_path, 1)
  if gl is None:
    skip_without_gl(failures)
  tiny_settings = {
    "num_timesteps": 2048,
    "num_envs": 8,
    "batch_size": 8,
    "num_minibatches": 4,
    "unroll_length": 8,
    "num_updates_per_batch": 2,
    "episode_length": 30,
    "policy_hidden_layer_sizes": "16,16",
    "value_hidden_layer_sizes": "16,16",
    "num_evals": 2,
    "num_eval_envs": 2,
  }
  run_dir = tmp_path / "run"
  flags = [arg for key, value in tiny_settings.items() for arg in (f"--{key}", str(value))]
  subprocess.run(
    [sys.executable, "-m", "experiments.train", "default", "--run_dir", str(run_dir), *flags],
    env={**child_environment(None), "MUJOCO_GL": gl},
    check=True,
    timeout=1200,
  )
  for folder in (run_dir, run_dir / "largest_kl" / "before", run_dir / "largest_kl" / "after"):
    (out,) = (folder / "eval").iterdir()
    results = json.loads((out / "returns.json").read_text())
    assert results["video"] == "episode0.mp4" and results["video_note"] is None, folder
    frames, _ = read_frames(out / "episode0.mp4")
    assert len(frames) == results["lengths"][0] > 0, folder


def test_policy_folders_are_the_run_and_its_largest_kl_pairs(tmp_path):
  def saved(folder):
    (folder / "policy").mkdir(parents=True)
    (folder / "policy" / "policy.json").write_text("{}")

  run = tmp_path / "run"
  for folder in ("largest_kl/after", "largest_kl/before", "other/before"):
    saved(run / folder)
  assert evaluate.policy_folders(run) == [run, run / "largest_kl/before", run / "largest_kl/after"]
  panel = tmp_path / "panel"  # a seed panel: one pair per seed
  for seed in (4, 3):
    for name in ("after", "before"):
      saved(panel / f"largest_kl/seed_{seed}/{name}")
  assert evaluate.policy_folders(panel) == [panel] + [
    panel / f"largest_kl/seed_{seed}/{name}" for seed in (3, 4) for name in ("before", "after")
  ]
  assert evaluate.policy_folders(tmp_path / "no_update_yet") == [tmp_path / "no_update_yet"]
