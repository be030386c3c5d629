"""Known physics: differentiable systems, time steppers, graphs. Never imports
`hybrid`."""

from . import graphs as graphs
from ._burgers import Burgers1D as Burgers1D
from ._crank_nicolson_rk4 import CrankNicolsonRK4 as CrankNicolsonRK4
from ._etdrk4 import ETDRK4 as ETDRK4
from ._solution import Solution as Solution
from ._solve import solve as solve
from ._system import AbstractSpectralSystem as AbstractSpectralSystem
from ._system import AbstractSystem as AbstractSystem
from ._term import SemiLinearTerm as SemiLinearTerm
from ._burgers_forcing import BurgersForcing as BurgersForcing
from ._burgers_forcing import random_smooth_field as random_smooth_field
