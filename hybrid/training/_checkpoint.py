"""Orbax checkpoints of a training run, with a signature so that only the same run
resumes from them."""

import hashlib
import json
from pathlib import Path
from typing import Any

import jax.tree_util as jtu
import numpy as np
import orbax.checkpoint as ocp

from .. import _distributed

SIGNATURE = "fit.json"
LOG = "train_log.jsonl"


def data_digest(*arrays: Any) -> str:
    """SHA-256 of arrays' bytes, shapes and dtypes: what the training saw."""
    h = hashlib.sha256()
    for x in arrays:
        a = np.ascontiguousarray(np.asarray(x))
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Checkpoints:
    """The checkpoint folder of one `fit`: orbax steps (parameters, optimiser state,
    step), `fit.json` (the signature of the run) and `train_log.jsonl`.

    Several processes (`jax.distributed`): every process makes the same calls; orbax
    writes each process's shards of the member-sharded arrays and process 0 its
    metadata; `fit.json` and the log are written by process 0 alone."""

    def __init__(self, directory: str | Path, signature: dict[str, Any]):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.signature = json.loads(json.dumps(signature))
        path = self.directory / SIGNATURE
        stored = json.loads(path.read_text()) if path.exists() else None
        # every process reads before process 0 writes: they all take the same branch
        _distributed.barrier("hybrid.fit: checkpoint signature")
        if stored is not None:
            if stored != self.signature:
                diff = {k: (stored.get(k), self.signature.get(k))
                        for k in sorted(set(stored) | set(self.signature))
                        if stored.get(k) != self.signature.get(k)}
                raise ValueError(
                    f"`checkpoint_dir` {self.directory} holds checkpoints of another training "
                    f"run; differing (stored, given): {diff}. Use another `checkpoint_dir`."
                )
        elif _distributed.is_primary():
            _distributed.write_atomic(path, json.dumps(self.signature, indent=1) + "\n")
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
        )

    @staticmethod
    def _tree(params, opt_state, step):
        return {"params": jtu.tree_leaves(params), "opt_state": jtu.tree_leaves(opt_state),
                # NumPy, not a jax.Array on this process's device: several processes
                # can only save arrays that are global or host values
                "step": np.asarray(step, np.int32)}

    def restore(self, params, opt_state):
        """`(params, opt_state, step)` of the latest checkpoint, or the given ones at step
        0 when there is none; the log is cut back to that step."""
        latest = self.manager.latest_step()
        step = 0
        if latest is not None:
            restored = self.manager.restore(
                latest, args=ocp.args.StandardRestore(self._tree(params, opt_state, 0)))
            params = jtu.tree_unflatten(jtu.tree_structure(params), restored["params"])
            opt_state = jtu.tree_unflatten(jtu.tree_structure(opt_state), restored["opt_state"])
            step = int(restored["step"])
        log = self.directory / LOG
        if log.exists() and _distributed.is_primary():
            # what a crash logged after the restored checkpoint is redone by this run
            kept = [line for line in log.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= step]
            log.write_text("".join(line + "\n" for line in kept))
        return params, opt_state, step

    def save(self, step: int, params, opt_state) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(self._tree(params, opt_state, step)))

    def log(self, record: dict[str, Any]) -> None:
        if not _distributed.is_primary():
            return
        with (self.directory / LOG).open("a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def read_log(directory: str | Path) -> list[dict[str, Any]]:
    """The records of `train_log.jsonl` in a checkpoint folder (empty if none)."""
    path = Path(directory) / LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
