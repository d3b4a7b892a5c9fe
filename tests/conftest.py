"""Makes JAX strict for every test, and lets tests share compiled programs.

`jax_numpy_rank_promotion="raise"` turns the silent (B, 1) - (B,) -> (B, B) broadcast
into an exception, so a shape bug fails a test instead of corrupting a number.

Many tests train the same tiny configs; a persistent compilation cache, private to this test
session and deleted after it, compiles each distinct program once. `make test` runs the tests in
pytest-xdist workers: the process that starts the session makes the cache directory and passes
it on in `PPO_JAX_TEST_CACHE`, so every worker loads what another has compiled. Tracing (and so
every retrace check) still happens in each test.
"""

import atexit
import os
import shutil
import tempfile

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

_CACHE = os.environ.get("PPO_JAX_TEST_CACHE")
if _CACHE is None:  # the session's first process: it makes the directory and removes it
  _CACHE = tempfile.mkdtemp(prefix="ppo_jax_test_compilation_cache_")
  os.environ["PPO_JAX_TEST_CACHE"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
