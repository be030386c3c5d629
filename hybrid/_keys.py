"""The random-key streams of the library: every key a function of the caller's key and
a named stream (`jax.random.fold_in`), so that no two uses share one by accident."""

import jax.random as jr
from jaxtyping import PRNGKeyArray

# One number per use, never reused. `fit`: initial members, the per-step window keys,
# the prior and its anchors, the members' fixed target perturbations. `calibrate`:
# the residual windows and the validation rollouts. `evaluate`: test rollouts. (The
# pipeline folds its own streams into the same root key: data splits 0, 1, 4, 7, the
# graph 10, calibration 20, evaluation 21, baselines 30+, observation noise 40+; none
# of them is a number here.)
STREAMS: dict[str, int] = {
    "members": 2,
    "steps": 3,
    "target_noise": 5,
    "prior": 6,
    "anchors": 8,
    "noise_fit": 11,
    "validation_rollouts": 12,
    "test_rollouts": 13,
}


def stream(key: PRNGKeyArray, name: str) -> PRNGKeyArray:
    """`key`'s sub-key for the named use (`STREAMS`)."""
    return jr.fold_in(key, STREAMS[name])
