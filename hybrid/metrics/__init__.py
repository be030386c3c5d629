"""A-posteriori metrics of rollouts: pointwise error, pattern correlation and the
decorrelation time, and probabilistic scores of ensembles (fair CRPS, unbiased
spread–skill, predictive-interval coverage, Gaussian NLL, rank histogram).

Shape conventions: a trajectory is `[T, *state]`, a batch of them `[B, T, *state]`,
an ensemble `[M, T, *state]` or `[M, B, T, *state]` (member axis first unless
`member_axis` says otherwise). Functions that need the time axis take `time_axis`:
by default it is 0 for 2-dim inputs (`[T, n]`) and 1 for more dims (`[B, T, *state]`);
axes before it are batch axes, axes after it are state axes. A single trajectory of
a 2D field, `[T, n, n]`, therefore needs `time_axis=0`.

Inputs may be NumPy or JAX arrays; results are JAX arrays (0-d for scalars). The
array functions are wrapped in `eqx.filter_jit` and may be called inside
`jax.jit`/`jax.vmap`.
"""

from ._deterministic import corr_time as corr_time
from ._deterministic import corr_time_per_trajectory as corr_time_per_trajectory
from ._deterministic import pearson_over_time as pearson_over_time
from ._deterministic import rmse as rmse
from ._deterministic import rmse_over_time as rmse_over_time
from ._probabilistic import coverage as coverage
from ._probabilistic import crps as crps
from ._probabilistic import crps_fair as crps_fair
from ._probabilistic import gaussian_nll as gaussian_nll
from ._probabilistic import predictive_quantile as predictive_quantile
from ._probabilistic import rank_histogram as rank_histogram
from ._probabilistic import spread_and_error as spread_and_error
from ._probabilistic import spread_skill as spread_skill
from ._probabilistic import uq_summary as uq_summary
