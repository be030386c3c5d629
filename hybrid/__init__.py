"""Learned closures inside the `solvers` systems, for any system: hybrid models and
ensembles, coarse-graining, training through rollouts, uncertainty, metrics,
long-rollout stability, persistence and figures.

The folders, one concept each: `closures` (network architectures), `coarse_graining`
(filters, graph renormalization), `data` (trajectories, data sets on disk),
`training` (`fit`), `uq` (Bayesian ensembles, stochastic term, calibration),
`metrics`, `stability_tests` (`stability`), `viz` (figures); `testing` holds
`assert_stable` for your own test suite."""

from . import closures as closures
from . import coarse_graining as coarse_graining
from . import data as data
from . import metrics as metrics
from . import testing as testing
from . import training as training
from . import uq as uq
from . import viz as viz
from ._ensemble import Ensemble as Ensemble
from ._ensemble import RolloutBlowupWarning as RolloutBlowupWarning
from ._evaluate import evaluate as evaluate
from ._evaluate import physics_rollouts as physics_rollouts
from ._hybrid import CorrectedSolver as CorrectedSolver
from ._hybrid import Hybrid as Hybrid
from ._hybrid import zero_closure as zero_closure
from ._io import load as load
from ._io import save as save
from .coarse_graining import coarse_grain as coarse_grain
from .data import Trajectories as Trajectories
from .stability_tests import AbstractStabilityDiagnostics as AbstractStabilityDiagnostics
from .stability_tests import ClusterDiagnostics as ClusterDiagnostics
from .stability_tests import EnergyDiagnostics as EnergyDiagnostics
from .stability_tests import Field1DDiagnostics as Field1DDiagnostics
from .stability_tests import StabilityReport as StabilityReport
from .stability_tests import VorticityDiagnostics as VorticityDiagnostics
from .stability_tests import stability as stability
from .training import fit as fit
from .uq import calibrate as calibrate
