"""Known physics: differentiable systems, time steppers, graphs. Never imports
`hybrid`."""

from . import graphs as graphs
from ._burgers import Burgers1D as Burgers1D
from ._burgers_forcing import BurgersForcing as BurgersForcing
from ._burgers_forcing import random_smooth_field as random_smooth_field
from ._crank_nicolson_rk4 import CrankNicolsonRK4 as CrankNicolsonRK4
from ._etdrk4 import ETDRK4 as ETDRK4
from ._etdrk4 import with_fixed_step as with_fixed_step
from ._frequencies import gaussian_frequencies as gaussian_frequencies
from ._frequencies import lorentzian_frequencies as lorentzian_frequencies
from ._frequencies import wrapped_cauchy_phases as wrapped_cauchy_phases
from ._graph_burgers import GraphBurgers as GraphBurgers
from ._kuramoto import Kuramoto as Kuramoto
from ._kuramoto import coupling_value as coupling_value
from ._navier_stokes import NavierStokes2D as NavierStokes2D
from ._navier_stokes import random_vorticity as random_vorticity
from ._ns_diagnostics import energy as energy
from ._ns_diagnostics import energy_spectrum as energy_spectrum
from ._ns_diagnostics import enstrophy as enstrophy
from ._ns_diagnostics import velocity_from_vorticity as velocity_from_vorticity
from ._order_parameter import order_parameter as order_parameter
from ._order_parameter import ott_antonsen_order_parameter as ott_antonsen_order_parameter
from ._ott_antonsen import OttAntonsenNetwork as OttAntonsenNetwork
from ._ralston_rk3 import RalstonRK3 as RalstonRK3
from ._solution import Solution as Solution
from ._solve import solve as solve
from ._ssprk3 import SSPRK3 as SSPRK3
from ._system import AbstractSpectralSystem as AbstractSpectralSystem
from ._system import AbstractSystem as AbstractSystem
from ._term import SemiLinearTerm as SemiLinearTerm
