"""Coarse-graining: filters from fine periodic fields to coarse grids
(`coarse_grain`), and the renormalization of a graph into clusters on several
scales (`renormalize`, `Renormalization`) for many-body systems on networks."""

from ._filters import METHODS as METHODS
from ._filters import box_coarse_grain as box_coarse_grain
from ._filters import coarse_grain as coarse_grain
from ._filters import spectral_resample as spectral_resample
from ._renormalize import GAUSSIAN_TO_LORENTZIAN as GAUSSIAN_TO_LORENTZIAN
from ._renormalize import Renormalization as Renormalization
from ._renormalize import angular_clusters as angular_clusters
from ._renormalize import cluster_coupling as cluster_coupling
from ._renormalize import kmeans as kmeans
from ._renormalize import node_influence as node_influence
from ._renormalize import renormalize as renormalize
from ._renormalize import spectral_clusters as spectral_clusters
from ._renormalize import spectral_embedding as spectral_embedding
