"""Named configurations. `default` is what `make train` runs.

The Brax and Playground presets copy their source's published `ppo.train` keyword arguments
(fields not set here keep PPOConfig's defaults, which are Brax's: gae_lambda 0.95, clipping
0.3, policy (32,) * 4 and value (256,) * 5 swish MLPs). num_evals is the published one except
where rounding num_timesteps up to whole chunks of iterations would add more than 10%.

The Brax presets other than the default run on Brax's "mjx" pipeline (MuJoCo's physics); on a
CPU, `--env_backend generalized` runs rollouts about 5x faster.
"""

from __future__ import annotations

import dataclasses

from ppo_jax import PPOConfig

# MuJoCo Playground's PPO settings for the DM Control Suite
# (mujoco_playground/config/dm_control_suite_params.py, brax_ppo_config; no per-env override
# for CheetahRun, WalkerWalk or HumanoidWalk). Its num_resets_per_eval=10 is left at 0; here
# every auto-reset draws a fresh initial state, where Playground's wrapper returns an env to the
# state cached at its last reset.
_PLAYGROUND_DM_CONTROL = {
  "num_timesteps": 60_000_000,
  "num_evals": 10,  # 9 chunks of 7 iterations: 61.9M steps
  "reward_scaling": 10.0,
  "episode_length": 1000,
  "normalize_observations": True,
  "action_repeat": 1,
  "unroll_length": 30,
  "num_minibatches": 32,
  "num_updates_per_batch": 16,
  "discounting": 0.995,
  "learning_rate": 1e-3,
  "entropy_cost": 1e-2,
  "num_envs": 2048,
  "batch_size": 1024,
  "policy_hidden_layer_sizes": (32, 32, 32, 32),
  "value_hidden_layer_sizes": (256, 256, 256, 256, 256),
}


def dm_control_cpu(name: str, **overrides) -> PPOConfig:
  """A Playground DM Control Suite task with settings that learn on a CPU in minutes.

  Playground's own settings (2048 envs, 60M steps) are for accelerators; these collect
  65,536 steps per iteration in 64 envs (32 unrolls of 32 steps each, 32 minibatches of 64
  segments, 10 epochs), CleanRL's discount 0.99, no entropy bonus and unscaled rewards, for
  20 iterations (1.31M steps) with an evaluation every 4.

  GAE is computed again on every minibatch of whole segments (`recompute_advantages`, the
  default), as Brax's trainer does: on CartpoleSwingup, 3 seeds, this took the evaluation return at 524k
  steps from 260 (once per iteration) to 733, where Brax's own trainer had 329.
  """
  settings = dict(
    num_timesteps=1_300_000,
    num_evals=6,  # 5 chunks of 4 iterations: 1.31M steps
    num_eval_envs=32,
    episode_length=1000,
    action_repeat=1,
    num_envs=64,
    unroll_length=32,
    batch_size=64,
    num_minibatches=32,
    num_updates_per_batch=10,
    learning_rate=3e-4,
    discounting=0.99,
    entropy_cost=0.0,
    reward_scaling=1.0,
    normalize_observations=True,
  )
  return PPOConfig(env=f"playground/{name}", **{**settings, **overrides})


def _brax(name: str, **published) -> PPOConfig:
  """A Brax env on the mjx pipeline with the settings every Brax PPO entry shares."""
  shared = dict(
    episode_length=1000,
    normalize_observations=True,
    action_repeat=1,
    num_minibatches=32,
    learning_rate=3e-4,
  )
  return PPOConfig(env=f"brax/{name}", env_backend="mjx", **{**shared, **published})


# Brax training colab (notebooks/training.ipynb) train_fns["ant"].
_BRAX_ANT = dict(
  num_timesteps=50_000_000,
  num_evals=10,  # 9 chunks of 17 iterations: 50.1M steps
  reward_scaling=10.0,
  unroll_length=5,
  num_updates_per_batch=4,
  discounting=0.97,
  entropy_cost=1e-2,
  num_envs=4096,
  batch_size=2048,
)


def _playground_robot(name: str, **published) -> PPOConfig:
  """A Playground robot with its published settings (mujoco_playground/config/
  locomotion_params.py or manipulation_params.py, brax_ppo_config; network_factory's keywords
  are fields here). These need MuJoCo Menagerie on disk (`envs.make` says where) and thousands
  of envs on an accelerator: they cannot be trained on this project's CPU machines."""
  shared = dict(
    reward_scaling=1.0,
    normalize_observations=True,
    action_repeat=1,
    learning_rate=3e-4,
    num_minibatches=32,
    discounting=0.97,
    batch_size=256,
    num_envs=8192,
    num_updates_per_batch=4,
  )
  return PPOConfig(env=f"playground/{name}", **{**shared, **published})


# Playground's locomotion and manipulation robots, asymmetric actor-critics (the value network
# sees "privileged_state") as published; they cannot be trained here (see _playground_robot).
_ROBOT_NETWORKS = dict(
  policy_hidden_layer_sizes=(512, 256, 128),
  value_hidden_layer_sizes=(512, 256, 128),
  policy_obs_key="state",
  value_obs_key="privileged_state",
)
PLAYGROUND_ROBOTS: dict[str, PPOConfig] = {
  "playground_go1_joystick_flat_terrain": _playground_robot(
    "Go1JoystickFlatTerrain",
    num_timesteps=200_000_000,
    num_evals=10,  # 9 chunks of 140 iterations: 206M steps
    episode_length=1000,
    unroll_length=20,
    entropy_cost=1e-2,
    max_grad_norm=1.0,
    num_resets_per_eval=10,
    **_ROBOT_NETWORKS,
  ),
  "playground_g1_joystick_flat_terrain": _playground_robot(
    "G1JoystickFlatTerrain",
    num_timesteps=200_000_000,
    num_evals=20,
    episode_length=1000,
    unroll_length=20,
    clipping_epsilon=0.2,
    entropy_cost=5e-3,
    max_grad_norm=1.0,
    num_resets_per_eval=1,
    **_ROBOT_NETWORKS,
  ),
  "playground_leap_cube_rotate_z_axis": _playground_robot(
    "LeapCubeRotateZAxis",
    num_timesteps=100_000_000,
    num_evals=10,
    episode_length=500,
    unroll_length=40,
    entropy_cost=1e-2,
    num_resets_per_eval=1,
    **_ROBOT_NETWORKS,
  ),
  # A symmetric one: the published networks see "state" both.
  "playground_panda_pick_cube": _playground_robot(
    "PandaPickCube",
    num_timesteps=20_000_000,
    num_evals=2,  # published 4 would round 20M steps up to 24.6M; 1 chunk of 130: 21.3M
    episode_length=150,
    unroll_length=10,
    num_updates_per_batch=8,
    learning_rate=1e-3,
    entropy_cost=2e-2,
    num_envs=2048,
    batch_size=512,
    num_resets_per_eval=10,
    policy_hidden_layer_sizes=(32, 32, 32, 32),
    value_hidden_layer_sizes=(256, 256, 256, 256, 256),
  ),
}

PRESETS: dict[str, PPOConfig] = {
  **PLAYGROUND_ROBOTS,
  # Brax's published settings for inverted_pendulum, on 1024 envs, with GAE on every minibatch as
  # Brax's trainer computes it: solved (1000) at 819k steps on 3 seeds, where GAE once per
  # iteration had 1000 on none of them at 1.15M.
  "brax_inverted_pendulum": PPOConfig(
    env="brax/inverted_pendulum",
    num_timesteps=2_000_000,
    num_envs=1024,
    batch_size=1024,
    unroll_length=5,
    num_minibatches=32,
    num_updates_per_batch=4,
    episode_length=1000,
    learning_rate=3e-4,
    entropy_cost=1e-2,
    discounting=0.97,
    reward_scaling=10.0,
    normalize_observations=True,
    num_evals=14,  # 13 chunks of one iteration: 2.13M steps
  ),
  # TRPO's own settings for the same task: one natural-gradient step per iteration, so many
  # more, smaller batches than PPO's (256 envs x 32 steps = 8,192 per step, 260 steps), the
  # value network fitted by 5 epochs of 4 minibatches; Brax's env settings otherwise.
  "brax_inverted_pendulum_trpo": PPOConfig(
    env="brax/inverted_pendulum",
    algorithm="trpo",
    num_timesteps=2_000_000,
    num_envs=256,
    batch_size=64,
    unroll_length=32,
    num_minibatches=4,
    num_updates_per_batch=5,
    episode_length=1000,
    learning_rate=1e-3,
    discounting=0.97,
    reward_scaling=10.0,
    normalize_observations=True,
    trpo_max_kl=0.01,
    num_evals=21,  # 20 chunks of 13 iterations: 2.13M steps
  ),
  # Brax training colab (notebooks/training.ipynb) train_fns["inverted_double_pendulum"].
  "brax_inverted_double_pendulum": _brax(
    "inverted_double_pendulum",
    num_timesteps=20_000_000,
    num_evals=20,  # 19 chunks of 7 iterations: 21.8M steps (Brax rounds up the same way)
    reward_scaling=10.0,
    unroll_length=5,
    num_updates_per_batch=4,
    discounting=0.97,
    entropy_cost=1e-2,
    num_envs=2048,
    batch_size=1024,
  ),
  # Brax training colab (notebooks/training.ipynb) train_fns["ant"].
  "brax_ant": _brax("ant", **_BRAX_ANT),
  # Brax training colab (notebooks/training.ipynb) train_fns["humanoid"].
  "brax_humanoid": _brax(
    "humanoid",
    num_timesteps=50_000_000,
    num_evals=10,  # 9 chunks of 17 iterations: 50.1M steps
    reward_scaling=0.1,
    unroll_length=10,
    num_updates_per_batch=8,
    discounting=0.97,
    entropy_cost=1e-3,
    num_envs=2048,
    batch_size=1024,
  ),
  # Brax training colab (notebooks/training.ipynb) train_fns["halfcheetah"].
  "brax_halfcheetah": _brax(
    "halfcheetah",
    num_timesteps=50_000_000,
    num_evals=18,  # Brax's 20 would round up to 56.0M steps; 17 chunks of 9 give 50.1M
    reward_scaling=1.0,
    unroll_length=20,
    num_updates_per_batch=8,
    discounting=0.95,
    entropy_cost=1e-3,
    num_envs=2048,
    batch_size=512,
  ),
  # Brax publishes only SAC for hopper; these are its PPO settings for ant (train_fns["ant"]),
  # the closest published entry: the same Gym-style healthy reward and termination on a fall.
  "brax_hopper": _brax("hopper", **_BRAX_ANT),
  # CleanRL-like settings (ppo_continuous_action: 10 epochs, gamma 0.99, lr 3e-4, clip 0.2,
  # grad norm 0.5, no entropy bonus) on 64 envs: Playground's big-batch DM Control settings,
  # scaled down to what a CPU can run, do not learn this task.
  "playground_cartpole_balance": PPOConfig(
    env="playground/CartpoleBalance",
    num_timesteps=1_000_000,
    num_evals=6,  # 5 chunks of 25 iterations: 1.02M steps
    reward_scaling=1.0,
    episode_length=1000,
    normalize_observations=True,
    action_repeat=1,
    unroll_length=32,
    num_minibatches=4,
    num_updates_per_batch=10,
    discounting=0.99,
    learning_rate=3e-4,
    entropy_cost=0.0,
    clipping_epsilon=0.2,
    max_grad_norm=0.5,
    num_envs=64,
    batch_size=64,
  ),
  # MuJoCo Playground, dm_control_suite_params.brax_ppo_config("CheetahRun").
  "playground_cheetah_run": PPOConfig(env="playground/CheetahRun", **_PLAYGROUND_DM_CONTROL),
  # MuJoCo Playground, dm_control_suite_params.brax_ppo_config("WalkerWalk").
  "playground_walker_walk": PPOConfig(env="playground/WalkerWalk", **_PLAYGROUND_DM_CONTROL),
  # MuJoCo Playground, dm_control_suite_params.brax_ppo_config("HumanoidWalk").
  "playground_humanoid_walk": PPOConfig(env="playground/HumanoidWalk", **_PLAYGROUND_DM_CONTROL),
  # The built-in continuous cart-pole; solved (475 of 500) within ~200k steps.
  "cartpole_balance": PPOConfig(
    env="builtin/cartpole_balance",
    num_timesteps=300_000,
    num_envs=64,
    batch_size=64,
    num_minibatches=8,
    unroll_length=32,
    num_updates_per_batch=4,
    episode_length=500,
    learning_rate=1e-3,
    entropy_cost=1e-3,
    discounting=0.99,
    reward_scaling=1.0,
    num_evals=6,
  ),
  # The cart-pole whose policy sees a noisy state and whose critic sees the true one
  # (value_obs_key="state" gives the symmetric actor-critic to compare with).
  "cartpole_privileged": PPOConfig(
    env="builtin/cartpole_privileged",
    num_timesteps=300_000,
    num_envs=64,
    batch_size=64,
    num_minibatches=8,
    unroll_length=32,
    num_updates_per_batch=4,
    episode_length=500,
    learning_rate=1e-3,
    entropy_cost=1e-3,
    discounting=0.99,
    reward_scaling=1.0,
    num_evals=6,
    value_obs_key="privileged_state",
  ),
  # The built-in Pendulum-v1 swing-up; small-batch, many-epoch PPO in the style of CleanRL.
  "pendulum_swingup": PPOConfig(
    env="builtin/pendulum_swingup",
    num_timesteps=1_000_000,
    num_evals=9,  # 8 chunks of 4 iterations: 1.05M steps
    episode_length=200,
    num_envs=64,
    unroll_length=64,
    batch_size=64,
    num_minibatches=8,
    num_updates_per_batch=10,
    discounting=0.99,
    learning_rate=1e-3,
    entropy_cost=0.0,
    reward_scaling=0.1,
  ),
}
# Brax's reacher (a two-joint arm) at a CPU budget, on Brax's positional pipeline (on a CPU about
# twice the speed of generalized): Brax's reacher discount, action repeat, epochs, entropy cost
# and reward scaling; 128 envs, 40,960 steps per iteration, 50 iterations (2.05M steps).
PRESETS["brax_reacher_cpu"] = dataclasses.replace(
  _brax(
    "reacher",
    num_timesteps=2_048_000,
    num_evals=11,  # 10 chunks of 5 iterations
    num_eval_envs=32,
    reward_scaling=5.0,
    action_repeat=4,
    unroll_length=20,
    num_minibatches=4,
    num_updates_per_batch=8,
    discounting=0.95,
    learning_rate=1e-3,
    entropy_cost=1e-3,
    num_envs=128,
    batch_size=128,
  ),
  env_backend="positional",
)
# Domain randomization examples (envs/randomization.py): Brax's ant with per-env friction, link
# masses and actuator gains, Brax's reacher with per-env link masses and actuator gears, and the
# built-in cart-pole with per-env masses, pole length and actuator force.
PRESETS["brax_ant_randomized"] = dataclasses.replace(PRESETS["brax_ant"], randomization="brax_ant")
PRESETS["brax_reacher_randomized"] = dataclasses.replace(
  PRESETS["brax_reacher_cpu"], randomization="brax_reacher"
)
PRESETS["cartpole_randomized"] = dataclasses.replace(
  PRESETS["cartpole_balance"], randomization="cartpole"
)
PRESETS["default"] = PRESETS["brax_inverted_pendulum"]
