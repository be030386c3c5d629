r"""Bayesian approximations of closure ensembles, as pure pieces of one vmapped,
jit-compiled training step (every function here acts on *one* member; `jax.vmap` /
`eqx.filter_vmap` over the leading member axis makes the ensemble).

- **Anchored ensembles** (the default): member $m$ minimises its data loss plus
  `anchor_penalty`, a pull towards its own draw $a_m$ from the prior
  (`GaussianPrior`, `prior_from_init`), with the Bayesian weight
  $\sigma_\epsilon^2 / (N s_i^2)$ per parameter (Pearce et al. 2020).
- **Randomize-then-optimize**: each member also fits its own fixed perturbation of
  the targets, $\tilde y_m = y + \epsilon_m$, $\epsilon_m \sim \mathcal N(0, \sigma_\epsilon^2)$
  (`perturb_targets`, `target_noise`, `trajectory_target_noise`). For a linear-Gaussian
  model this makes the members *exact, independent* posterior samples:
  $\theta_m = \arg\min \|\tilde y_m - X\theta\|^2/\sigma_\epsilon^2
  + \|\theta - a_m\|^2_{\Sigma_0^{-1}}
  = \Sigma(X^\top \tilde y_m/\sigma_\epsilon^2 + \Sigma_0^{-1} a_m)$ is Gaussian with the
  posterior mean and covariance $\Sigma = (X^\top X/\sigma_\epsilon^2 + \Sigma_0^{-1})^{-1}$.
  Without the perturbation (Pearce et al.'s version, anchors from the prior) the
  covariance is $\Sigma\,\Sigma_0^{-1}\Sigma \preceq \Sigma$: right where the prior
  dominates, too small where the data do (by the factor $s^2_{post}/s^2_{prior}$ per
  eigendirection). Pearce et al. correct this with a data-dependent anchor
  distribution, which they then approximate by the prior; perturbing the targets
  instead is exact and needs nothing but $\sigma_\epsilon$.
- **Plain deep ensembles**: no anchor term (`noise_var=0`), independent initialisations.
- **Randomized prior functions** (`RandomizedPrior`): a fixed, untrained random
  network added to the trainable one (Osband et al. 2018).
- **MC dropout** (`with_mc_dropout`, `draw_dropout_masks`): channel dropout kept at
  inference with one mask per trajectory, so a rollout is a deterministic function of
  its mask.

The stochastic closure term lives in `_stochastic.py`, post-hoc spread calibration in
`_calibration.py`, member sharding in `_sharding.py`.

**References:** T. Pearce, F. Leibfried, A. Brintrup, M. Zaki, A. Neely, "Uncertainty in
neural networks: approximately Bayesian ensembling", AISTATS 2020; J. M. Bardsley,
A. Solonen, H. Haario, M. Laine, "Randomize-then-optimize", SIAM J. Sci. Comput. 36,
A1895 (2014); I. Osband, J. Aslanides, A. Cassirer, "Randomized prior functions for
deep reinforcement learning", NeurIPS 2018; Y. Gal, Z. Ghahramani, "Dropout as a
Bayesian approximation", ICML 2016.
"""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree


def _is_none(x: Any) -> bool:
    return x is None


# ----------------------------------------------------------------------------------------
# priors and anchors


class GaussianPrior(eqx.Module):
    r"""Independent Gaussian prior on every floating parameter of a model,
    $\theta_i \sim \mathcal N(\mu_i, s_i^2)$.

    **Arguments:**

    - `mean`: the model's arrays, `eqx.filter(model, eqx.is_array)` (so `None` at its
      non-array leaves): the prior mean of each floating array, and the value of each
      non-floating array (which has no prior).
    - `std`: the same structure with, per floating array, its prior standard
      deviation (0-d, one value for the leaf, or the leaf's shape), and `None` for
      leaves without a prior.

    Build it by hand when the prior is known, or with `prior_from_init` from a model's
    initialisation.
    """

    mean: PyTree
    std: PyTree

    def sample(self, *, key: PRNGKeyArray) -> PyTree:
        r"""One draw $\mu + s\,\xi$, $\xi \sim \mathcal N(0, I)$, with the structure of
        `mean` (non-floating leaves are returned as they are). `eqx.combine` it with
        the model's static part to get a model."""
        leaves, treedef = jtu.tree_flatten(self.std, is_leaf=_is_none)
        means = treedef.flatten_up_to(self.mean)
        drawn = [
            i
            for i, (s, mu) in enumerate(zip(leaves, means, strict=True))
            if s is not None and mu is not None
        ]
        sizes = [int(np.prod(jnp.shape(means[i]))) for i in drawn]
        dtype = jnp.result_type(*[means[i] for i in drawn]) if drawn else jnp.float32
        # one draw for every parameter at once: one random-bits kernel to compile
        xi = jr.normal(key, (sum(sizes),), dtype)
        out = list(means)
        offsets = np.cumsum([0] + sizes)
        for i, a, b in zip(drawn, offsets[:-1], offsets[1:], strict=True):
            mu = means[i]
            dt = jnp.result_type(mu)
            noise = xi[a:b].reshape(jnp.shape(mu)).astype(dt)
            out[i] = mu + jnp.asarray(leaves[i], dt) * noise
        return jtu.tree_unflatten(treedef, out)


def prior_from_init(
    make: Callable[[PRNGKeyArray], Any],
    *,
    key: PRNGKeyArray,
    num_draws: int = 32,
    min_std: float | None = None,
) -> GaussianPrior:
    r"""The Gaussian prior that matches a model's initialisation, leaf by leaf.

    The initialisers of `equinox.nn` draw every element of a weight or bias leaf
    i.i.d. (uniform on $\pm 1/\sqrt{\text{fan-in}}$, std $1/\sqrt{3\,\text{fan-in}}$),
    so one mean and one standard deviation per leaf, pooled over the leaf's elements
    and `num_draws` initialisations, describe it; the prior is the Gaussian with those
    moments. Anchors can then be drawn from it (`GaussianPrior.sample`) or, as
    `hybrid._train` does, be the members' own initialisations, which have the same
    moments.

    **Arguments:**

    - `make`: `key -> model`, e.g. `task.make_closure`.
    - `key`: a `jax.random` key.
    - `num_draws`: initialisations pooled, default 32.
    - `min_std`: floor of the prior std. A leaf that the initialiser sets to a
      constant (a zero bias, a LayerNorm scale) has no spread, i.e. an infinitely
      strong prior; without `min_std` such leaves raise `ValueError`. Good values: the
      std of the layer's weights, or a value that expresses how far the leaf may move.

    **Returns:** a `GaussianPrior` whose structure is `eqx.filter(make(key), eqx.is_array)`.
    """
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(f"`num_draws` must be an int >= 2, got {num_draws!r}.")
    if min_std is not None and not min_std > 0:
        raise ValueError(f"`min_std` must be None or positive, got {min_std!r}.")
    draws = eqx.filter(_init_draws(make, jr.split(key, num_draws)), eqx.is_array)
    flat, treedef = jtu.tree_flatten_with_path(draws)
    means, stds, constant = [], [], []
    for path, x in flat:
        if not eqx.is_inexact_array(x):
            means.append(x[0])
            stds.append(None)
            continue
        # moments on the host: a one-off, not worth compiling a reduction per leaf
        host = np.asarray(x)
        mu, sd = float(host.mean()), float(host.std())
        if not sd > 0:
            if min_std is None:
                constant.append(jtu.keystr(path))
            sd = 0.0 if min_std is None else float(min_std)
        elif min_std is not None:
            sd = max(sd, float(min_std))
        means.append(jnp.full(x.shape[1:], mu, x.dtype))
        stds.append(jnp.asarray(sd, x.dtype))
    if constant:
        raise ValueError(
            "the initialisation is constant (zero prior std) for the leaves "
            f"{', '.join(constant)}: pass `min_std` to give them a prior."
        )
    return GaussianPrior(treedef.unflatten(means), treedef.unflatten(stds))


@eqx.filter_jit
def _init_draws(make, keys):
    # one compiled program (cached per `make`), not one dispatch per primitive
    return eqx.filter_vmap(make)(keys)


def draw_anchors(prior: GaussianPrior, size: int, *, key: PRNGKeyArray) -> PyTree:
    """`size` independent draws from `prior`, stacked on a leading member axis (the
    `anchors` argument of the vmapped training step)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"`size` must be a positive int, got {size!r}.")
    return _draw(prior, jr.split(key, size))


@eqx.filter_jit
def _draw(prior, keys):
    return jax.vmap(lambda k: prior.sample(key=k))(keys)


def anchor_penalty(
    params: PyTree,
    anchor: PyTree,
    prior_std: PyTree,
    *,
    noise_var: Float[ArrayLike, ""],
    num_data: int | float,
) -> Float[Array, ""]:
    r"""The anchor regulariser of one member with the Bayesian weight,

    $$R(\theta) = \frac{\sigma_\epsilon^2}{N} \sum_i \frac{(\theta_i - a_i)^2}{s_i^2},$$

    to be *added to a data loss that is the mean squared error over the N data*:
    $\frac1N\|y - f_\theta\|^2 + R(\theta)$ is $\frac{2\sigma_\epsilon^2}{N}$ times the
    negative log posterior with likelihood $\mathcal N(f_\theta, \sigma_\epsilon^2)$ and
    prior $\mathcal N(a, \operatorname{diag} s^2)$ centred on the anchor, so its
    minimiser is that posterior's mode (Pearce et al. 2020, eq. 5). A minibatch MSE is
    an unbiased estimate of the full-data MSE, so `num_data` is the size of the whole
    training set, not of the batch.

    Leaves under a `RandomizedPrior.prior` are left out (they are not trained), as are
    leaves whose `prior_std` is `None`.

    **Arguments:**

    - `params`: the member's arrays (`eqx.filter(model, eqx.is_array)`).
    - `anchor`: its anchor, same structure.
    - `prior_std`: `GaussianPrior.std` (0-d or leaf-shaped per leaf; `None` = no prior).
    - `noise_var`: $\sigma_\epsilon^2$, the likelihood's noise variance *in the units
      of the MSE it is added to* (for a normalised MSE, the normalised noise
      variance). 0 gives a plain deep ensemble.
    - `num_data`: $N$, the number of scalar residuals the full-data MSE averages.

    **Returns:** a 0-d array.

    **Reference:** T. Pearce et al., AISTATS 2020.
    """
    if not num_data > 0:
        raise ValueError(f"`num_data` must be positive, got {num_data!r}.")
    mask = trainable_filter(params)
    stds, treedef = jtu.tree_flatten(prior_std, is_leaf=_is_none)
    try:
        ps = treedef.flatten_up_to(params)
        anc = treedef.flatten_up_to(anchor)
        ms = treedef.flatten_up_to(mask)
    except (ValueError, TypeError) as e:
        raise ValueError(
            "`params`, `anchor` and `prior_std` must have the same structure "
            f"(the model's arrays): {e}"
        ) from None
    total = jnp.zeros(())
    for s, p, a, train in zip(stds, ps, anc, ms, strict=True):
        if s is None or p is None or train is not True:
            continue
        total = total + jnp.sum(jnp.square((p - a) / s))
    return jnp.asarray(noise_var) / num_data * total


# ----------------------------------------------------------------------------------------
# randomize-then-optimize: per-member perturbation of the targets


def perturb_targets(
    targets: Float[ArrayLike, "..."], noise_std: Float[ArrayLike, "..."], *, key: PRNGKeyArray
) -> Float[Array, "..."]:
    r"""A member's perturbed targets $\tilde y = y + \sigma_\epsilon \xi$,
    $\xi \sim \mathcal N(0, I)$, for a data set held whole.

    Draw it *once per member* (the member's own key, not the step's) and keep it for
    the whole training: the member is the minimiser for one fixed perturbation. See the
    module docstring for why this makes anchored ensembles exact for linear-Gaussian
    models.

    **Arguments:** `targets` (any shape); `noise_std` $\sigma_\epsilon$ (broadcastable);
    `key`.

    **Returns:** an array of `targets`' shape.
    """
    targets = jnp.asarray(targets)
    dtype = targets.dtype if jnp.issubdtype(targets.dtype, jnp.inexact) else jnp.result_type(float)
    xi = jr.normal(key, targets.shape, dtype)
    return targets + jnp.asarray(noise_std, dtype) * xi


def target_noise(
    key: PRNGKeyArray,
    index: Int[ArrayLike, ""] | Sequence[Int[ArrayLike, ""]],
    shape: tuple[int, ...],
    noise_std: Float[ArrayLike, "..."],
    dtype: Any = None,
) -> Float[Array, "..."]:
    r"""The perturbation $\sigma_\epsilon \xi$ of data item `index` for the member
    whose fixed key is `key`: a function of `(key, index)` only, so the same member
    sees the same perturbation of the same item at every training step, whatever
    window or batch the item comes in, without storing a perturbed copy of the data.

    **Arguments:**

    - `key`: the member's own key, fixed for the whole training run.
    - `index`: an integer (may be traced) or a tuple of them, e.g. `(trajectory, time)`.
    - `shape`: of one item; `noise_std`: broadcastable to it; `dtype`: default float.

    **Returns:** `Float[Array, "*shape"]`.
    """
    indices = index if isinstance(index, (tuple, list)) else (index,)
    for i in indices:
        key = jr.fold_in(key, i)
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jnp.asarray(noise_std, dtype) * jr.normal(key, tuple(shape), dtype)


def trajectory_target_noise(
    key: PRNGKeyArray,
    trajectory: Int[ArrayLike, ""],
    times: Int[ArrayLike, " h"],
    shape: tuple[int, ...],
    noise_std: Float[ArrayLike, "..."],
    dtype: Any = None,
) -> Float[Array, " h *shape"]:
    r"""`target_noise` of the saved states `times` (absolute save indices) of
    trajectory `trajectory`: what to add to a rollout window's target
    `ys[trajectory, times]` in randomize-then-optimize training.

    **Returns:** `[len(times), *shape]`.
    """
    return jax.vmap(lambda t: target_noise(key, (trajectory, t), shape, noise_std, dtype))(
        jnp.asarray(times)
    )


# ----------------------------------------------------------------------------------------
# randomized prior functions


class RandomizedPrior(eqx.Module):
    r"""A trainable closure plus a fixed random prior function,
    $c(t, y) = c_\theta(t, y) + \beta\, p(t, y)$ (Osband et al. 2018).

    The prior network $p$ is drawn once (its own initialisation) and never trained:
    its parameters enter through `jax.lax.stop_gradient`, so their gradient is exactly
    zero, and `trainable_filter` marks them frozen (use it to partition the model or
    with `freeze_non_trainable` on the optimiser, and `anchor_penalty` skips them).
    Gradients with respect to the *state* still flow through $p$, so a rollout's
    gradient is exact. Where the data constrain $c$ the trainable part learns to
    cancel $p$; elsewhere the members keep their different priors, which is the spread.

    **Arguments:**

    - `trainable`: a closure `(t, y, args) -> dy` (an `eqx.Module`).
    - `prior`: a closure of the same kind, typically the same architecture with its own
      key. With `hybrid.closures` give it a sizeable output (e.g. `init_scale=1.0`) or
      a large `scale`: the default `init_scale=1e-2` makes a near-zero prior.
    - `scale`: $\beta$, default 1.0 (static).

    **Reference:** I. Osband, J. Aslanides, A. Cassirer, NeurIPS 2018.
    """

    trainable: Callable
    prior: Callable
    scale: float = eqx.field(static=True, default=1.0)

    def __call__(self, t: ArrayLike, y: PyTree[Array], args: Any = None) -> PyTree[Array]:
        frozen = jtu.tree_map(
            lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, self.prior
        )
        out = self.trainable(t, y, args)
        return jtu.tree_map(lambda a, b: a + self.scale * b, out, frozen(t, y, args))


def trainable_filter(tree: PyTree) -> PyTree[bool]:
    """Filter spec of the trained parameters: `True` at floating arrays, `False` at
    everything under a `RandomizedPrior.prior`, at drawn dropout masks and at
    non-floating leaves. Use with `eqx.partition` or `freeze_non_trainable`."""

    def spec(node):
        if isinstance(node, RandomizedPrior):
            return RandomizedPrior(
                trainable_filter(node.trainable),
                jtu.tree_map(lambda _: False, node.prior),
                node.scale,
            )
        if isinstance(node, ChannelDropout):
            # a drawn mask is a sample, not a parameter
            mask = None if node.mask is None else False
            return ChannelDropout(trainable_filter(node.layer), node.rate, node.channels, mask)
        return eqx.is_inexact_array(node)

    return jtu.tree_map(
        spec, tree, is_leaf=lambda x: isinstance(x, (RandomizedPrior, ChannelDropout))
    )


def freeze_non_trainable(optimizer: Any) -> Any:
    """`optimizer` for the leaves `trainable_filter` marks `True`, zero updates for the
    rest (e.g. `RandomizedPrior.prior`), whatever the optimiser does with zero
    gradients (weight decay would otherwise move them)."""
    import optax

    def labels(params):
        return jtu.tree_map(lambda b: "train" if b else "frozen", trainable_filter(params))

    return optax.multi_transform(
        {"train": optimizer, "frozen": optax.set_to_zero()}, param_labels=labels
    )


# ----------------------------------------------------------------------------------------
# MC dropout with one mask per trajectory


class ChannelDropout(eqx.Module):
    r"""A layer whose *input channels* are dropped by a stored mask,
    $\mathrm{layer}(x \odot m / (1 - p))$ with $m \in \{0, 1\}^{C}$ broadcast over the
    spatial axes of a channels-first input.

    With `mask=None` it is the layer itself: the mean network of inverted dropout
    (what training stores and a deterministic evaluation uses). `draw_dropout_masks`
    fills the masks; the layer then computes the same thing at every call, so a whole
    rollout uses one mask.

    **Arguments:** `layer` (`(x, *, key=None) -> y`, e.g. `eqx.nn.Conv`); `rate` $p$ in
    [0, 1); `channels` $C$ (default: `layer.in_channels` or `layer.in_features`);
    `mask` `Float[Array, "C"]` or `None`.
    """

    layer: Callable
    rate: float = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    mask: Float[Array, " C"] | None = None

    def __init__(self, layer: Callable, rate: float, channels: int | None = None, mask=None):
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"`rate` must be in [0, 1), got {rate!r}.")
        if channels is None:
            channels = getattr(layer, "in_channels", getattr(layer, "in_features", None))
            if not isinstance(channels, int):
                raise ValueError(
                    f"cannot tell the input channels of {type(layer).__name__}: pass "
                    "`channels`."
                )
        self.layer = layer
        self.rate = float(rate)
        self.channels = int(channels)
        self.mask = mask

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        if self.mask is None:
            return self.layer(x)
        if x.shape[0] != self.channels:
            raise ValueError(
                f"ChannelDropout expects {self.channels} channels first, got input of "
                f"shape {x.shape}."
            )
        keep = (self.mask / (1.0 - self.rate)).astype(x.dtype)
        return self.layer(x * keep.reshape((self.channels,) + (1,) * (x.ndim - 1)))


def _default_dropout_where(closure):
    layers = getattr(closure, "layers", None)
    if isinstance(layers, tuple) and len(layers) > 1:
        return layers[1:]  # the hidden channels of a StencilClosure
    head = getattr(closure, "head", None)
    if head is not None:
        return (head,)  # the fused features of a MultiscaleAttentionClosure
    raise ValueError(
        f"no default dropout sites for {type(closure).__name__}: pass `where`, a "
        "function closure -> tuple of the layers whose input channels to drop."
    )


def with_mc_dropout(
    closure: Any,
    rate: float,
    *,
    where: Callable[[Any], Any] | None = None,
) -> Any:
    r"""`closure` with channel dropout (`ChannelDropout`) on the inputs of the layers
    `where(closure)`, i.e. on hidden channels, masks unset.

    Default sites: the inputs of every convolution after the first of a
    `StencilClosure` (its hidden channels), the input of a `MultiscaleAttentionClosure`'s
    head. Dropping whole channels, not single grid values, keeps the closure a
    translation-equivariant stencil for every mask.

    Training draws new masks per rollout window (`draw_dropout_masks` with the step's
    key), inference one mask per member and trajectory, kept for the whole rollout
    ("one mask per trajectory"): a per-step mask would be white noise in time, which
    averages out over a rollout instead of representing an uncertain closure.

    **Arguments:** `closure`; `rate` $p$ in [0, 1) (good values 0.05–0.2); `where`.

    **Returns:** the wrapped closure (an `eqx.Module` like `closure`).

    **Reference:** Y. Gal, Z. Ghahramani, ICML 2016; J. Tompson et al., CVPR 2015
    (channel dropout).
    """
    where = _default_dropout_where if where is None else where

    def sites(c):
        s = where(c)
        return tuple(s) if isinstance(s, (tuple, list)) else (s,)

    return eqx.tree_at(sites, closure, replace_fn=lambda layer: ChannelDropout(layer, rate))


def _is_dropout(x: Any) -> bool:
    return isinstance(x, ChannelDropout)


def draw_dropout_masks(closure: Any, *, key: PRNGKeyArray) -> Any:
    r"""One realisation of an MC-dropout closure: every `ChannelDropout` gets a mask
    $m_c \sim \mathrm{Bernoulli}(1 - p)$ drawn from `key`.

    For an ensemble of $M$ realisations over $B$ trajectories, use one key per
    (member, trajectory), e.g. `jr.fold_in(jr.fold_in(key, m), b)`, and keep the
    realisation for the whole rollout. Inside a vmapped step it is traceable.
    """
    leaves, treedef = jtu.tree_flatten(closure, is_leaf=_is_dropout)
    sites = [i for i, x in enumerate(leaves) if _is_dropout(x)]
    if not sites:
        raise ValueError("`closure` has no ChannelDropout layers: use `with_mc_dropout`.")
    keys = jr.split(key, len(sites))
    dtype = jnp.result_type(float)
    for i, k in zip(sites, keys, strict=True):
        d = leaves[i]
        mask = jr.bernoulli(k, 1.0 - d.rate, (d.channels,)).astype(dtype)
        leaves[i] = ChannelDropout(d.layer, d.rate, d.channels, mask)
    return jtu.tree_unflatten(treedef, leaves)


def clear_dropout_masks(closure: Any) -> Any:
    """The mean network: every `ChannelDropout` mask set to `None` (what to store)."""
    return jtu.tree_map(
        lambda d: ChannelDropout(d.layer, d.rate, d.channels, None) if _is_dropout(d) else d,
        closure,
        is_leaf=_is_dropout,
    )
