"""Reference data: `Trajectories` (coarse trajectories in memory, the input of
training, calibration and evaluation) and data sets on disk (zarr v3): generated chunk
by chunk, resumable, read lazily, and readable by xarray and dask."""

from ._noise import observe as observe
from ._store import Dataset as Dataset
from ._store import generate_dataset as generate_dataset
from ._store import load_dataset as load_dataset
from ._trajectories import Trajectories as Trajectories
