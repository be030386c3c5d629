"""Learned closures inside the `solvers` systems: hybrid models, ensembles,
coarse-graining, training, evaluation and long-rollout stability."""

from . import closures as closures
from . import testing as testing
from ._ensemble import Ensemble as Ensemble
from ._hybrid import CorrectedSolver as CorrectedSolver
from ._hybrid import Hybrid as Hybrid
from ._hybrid import zero_closure as zero_closure
from ._stability import AbstractStabilityDiagnostics as AbstractStabilityDiagnostics
from ._stability import ClusterDiagnostics as ClusterDiagnostics
from ._stability import EnergyDiagnostics as EnergyDiagnostics
from ._stability import Field1DDiagnostics as Field1DDiagnostics
from ._stability import StabilityReport as StabilityReport
from ._stability import VorticityDiagnostics as VorticityDiagnostics
from ._stability import stability as stability
