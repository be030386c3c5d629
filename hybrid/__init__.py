"""Learned closures inside the `solvers` systems: hybrid models, ensembles,
coarse-graining, training and evaluation."""

from . import closures as closures
from ._ensemble import Ensemble as Ensemble
from ._hybrid import CorrectedSolver as CorrectedSolver
from ._hybrid import Hybrid as Hybrid
from ._hybrid import zero_closure as zero_closure
