"""Sparse weighted graphs: the `Graph` container, random graph generators, and the
`ColumnLayout` of a graph for fast neighbour sums."""

from ._erdos_renyi import erdos_renyi as erdos_renyi
from ._graph import Graph as Graph
from ._graph import numpy_rng as numpy_rng
from ._graph import receiver_normalized as receiver_normalized
from ._hyperbolic import HyperbolicCoordinates as HyperbolicCoordinates
from ._hyperbolic import random_hyperbolic as random_hyperbolic
from ._layout import ColumnLayout as ColumnLayout
from ._ring import ring_lattice as ring_lattice
