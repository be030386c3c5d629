"""Uncertainty: Bayesian approximations of closure ensembles (priors and anchors,
randomize-then-optimize target perturbations, randomized prior functions, MC dropout),
the stochastic closure term, spread calibration, and `calibrate`, which fits the last
two on validation data."""

from ._bayes import ChannelDropout as ChannelDropout
from ._bayes import GaussianPrior as GaussianPrior
from ._bayes import RandomizedPrior as RandomizedPrior
from ._bayes import anchor_penalty as anchor_penalty
from ._bayes import clear_dropout_masks as clear_dropout_masks
from ._bayes import draw_anchors as draw_anchors
from ._bayes import draw_dropout_masks as draw_dropout_masks
from ._bayes import freeze_non_trainable as freeze_non_trainable
from ._bayes import perturb_targets as perturb_targets
from ._bayes import prior_from_init as prior_from_init
from ._bayes import target_noise as target_noise
from ._bayes import trainable_filter as trainable_filter
from ._bayes import trajectory_target_noise as trajectory_target_noise
from ._bayes import with_mc_dropout as with_mc_dropout
from ._calibrate import calibrate as calibrate
from ._calibrate import noise_template as noise_template
from ._calibrate import residuals as residuals
from ._calibration import fit_spread_inflation as fit_spread_inflation
from ._calibration import inflate_spread as inflate_spread
from ._stochastic import FEATURES as FEATURES
from ._stochastic import AbstractNoise as AbstractNoise
from ._stochastic import DiagonalNoise as DiagonalNoise
from ._stochastic import NoiseSplitting as NoiseSplitting
from ._stochastic import StateDependentNoise as StateDependentNoise
from ._stochastic import StochasticSystem as StochasticSystem
from ._stochastic import cluster_modulus as cluster_modulus
from ._stochastic import fit_noise as fit_noise
from ._stochastic import gradient_magnitude as gradient_magnitude
from ._stochastic import noise_nll as noise_nll
from ._stochastic import noise_parameters as noise_parameters
from ._stochastic import rollout_residuals as rollout_residuals
