"""Brax's `ppo.train` keywords (Brax 0.14) against PPOConfig's fields.

A keyword of `brax.training.agents.ppo.train.train` is either a PPOConfig field of the same
name and meaning, so that a Brax or MuJoCo Playground config dict ports by
`PPOConfig(env=..., **config)`, or it stands in `NOT_SUPPORTED` with the reason. The network
fields in `NETWORK_KEYWORDS` are keywords of Brax's `ppo.networks.make_ppo_networks`, which
Brax's trainer takes through `network_factory`. `tests/test_config.py` checks both lists
against Brax's signatures.
"""

from __future__ import annotations

# PPOConfig fields named after `make_ppo_networks` keywords (Brax's `activation` is a
# function; here it is the function's name in flax.linen).
NETWORK_KEYWORDS = (
  "policy_hidden_layer_sizes",
  "value_hidden_layer_sizes",
  "activation",
  "distribution_type",
  "state_dependent_std",
  "init_noise_std",
  "policy_obs_key",
  "value_obs_key",
)

# `ppo.train` keyword -> why PPOConfig has no field of that name.
NOT_SUPPORTED = {
  "environment": "an Env object in Brax; a PPOConfig names its env (`env`), so that a config "
  "stays a value that checkpoints and the CLI can hold",
  "network_factory": "a function in Brax (Playground's dicts keep its keyword arguments); the "
  "networks are set by the fields named after its keywords (NETWORK_KEYWORDS)",
  "max_devices_per_host": "in Brax, a cap on the local devices its pmap uses in each host "
  "process; here training runs over every device of every process (`ppo_jax.sharding`), "
  "and `train(cfg, devices=[...])` names the devices to use, a choice that belongs to the "
  "machine rather than to the config",
  "wrap_env": "every env is wrapped by `envs.Environment` (time limit, action repeat, "
  "auto-reset with the true final observation)",
  "wrap_env_fn": "the wrapper is `envs.Environment`",
  "randomization_fn": "a function in Brax; `randomization` names one registered in "
  "`envs.RANDOMIZATIONS` (same signature), so that checkpoints, presets and the CLI name it",
  "vision": "observations are state vectors; no pixel pipeline",
  "augment_pixels": "observations are state vectors; no pixel pipeline",
  "use_distributional_critic": "the value network predicts the mean return only",
  "normalize_observations_std_eps": "the observation statistics are Welford's, with a fixed "
  "std floor of 1e-3",
  "normalize_observations_mode": "the observation statistics are Welford's (no EMA mode)",
  "normalize_until_count": "the observation statistics take in every rollout",
  "use_pmap_on_reset": "envs are reset inside the jitted program, with no pmap",
  "eval_env": "evaluation runs the training env's definition in `num_eval_envs` fresh envs",
  "log_training_metrics": "training metrics are always kept, every iteration "
  "(metrics.jsonl, TensorBoard, `TrainResult.metrics`)",
  "training_metrics_steps": "training metrics are always kept, every iteration",
  "run_evals": "evaluations always run, `num_evals` of them",
  "progress_fn": "an argument of `train` (`progress_fn`), not part of the config",
  "policy_params_fn": "the run directory keeps checkpoints and the final policy (`load_policy`)",
  "save_checkpoint_path": "checkpoints go to `train`'s run directory",
  "restore_checkpoint_path": "`train(cfg, run_dir, resume=True)` continues a run",
  "restore_params": "`train(cfg, run_dir, resume=True)` continues a run",
  "restore_value_fn": "`train(cfg, run_dir, resume=True)` restores the whole state",
}
