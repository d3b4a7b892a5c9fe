"""Makes JAX strict for every test: implicit rank promotion is an error.

`jax_numpy_rank_promotion="raise"` turns the silent (B, 1) - (B,) -> (B, B) broadcast
into an exception, so a shape bug fails a test instead of corrupting a number.
"""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
