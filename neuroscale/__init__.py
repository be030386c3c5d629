"""The `neuroscale` pipeline: tasks (one file per built-in system, or a user's
`AbstractTask` subclass), their configuration, run folders and the command line — a
thin layer over the `hybrid` library, which never imports it."""

from ._config import Config as Config
from ._config import build_config as build_config
from ._config import data_key as data_key
from ._config import load_config as load_config
from ._data import test_set as test_set
from ._data import validation_set as validation_set
from ._frontier import measure_frontier as measure_frontier
from ._frontier import time_alternating as time_alternating
from ._run import evaluate_run as evaluate_run
from ._run import load_run as load_run
from ._run import stability_run as stability_run
from ._run import train_run as train_run
from ._store import keep as keep
from ._store import run_store as run_store
from ._store import stored as stored
from ._task import AbstractTask as AbstractTask
from ._task import builtin_tasks as builtin_tasks
from ._task import task_class as task_class
