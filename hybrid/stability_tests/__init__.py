"""Long-rollout stability tests of hybrid models: `stability(...)` (exported as
`hybrid.stability`) measures blow-up, energy and enstrophy drift, spectrum departure
and decorrelation far past the training horizon; `hybrid.testing.assert_stable` turns
it into an assertion for your own test suite."""

from ._diagnostics import AbstractStabilityDiagnostics as AbstractStabilityDiagnostics
from ._diagnostics import ClusterDiagnostics as ClusterDiagnostics
from ._diagnostics import EnergyDiagnostics as EnergyDiagnostics
from ._diagnostics import Field1DDiagnostics as Field1DDiagnostics
from ._diagnostics import VorticityDiagnostics as VorticityDiagnostics
from ._diagnostics import default_diagnostics as default_diagnostics
from ._engine import stability as stability
from ._report import StabilityReport as StabilityReport
