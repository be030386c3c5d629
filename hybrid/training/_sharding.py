r"""Member-parallel ensembles: the leading member axis of an ensemble's parameters and
optimiser state sharded over devices with `jax.sharding`, and the vmapped training
step and rollout run block by block, one block of members per device.

Members never talk to each other, so the ensemble is embarrassingly parallel. Placing
the member-stacked arrays with a `NamedSharding` (`shard_members`) and calling the
vmapped, jitted program on them gives the right numbers, but XLA's automatic
partitioner does not split every operation along a vmapped batch axis: it gathers the
whole ensemble around FFTs and grouped (vmapped) convolutions, so the spectral solvers
and stencil closures would run replicated on every device. `member_parallel` wraps the
vmapped function in `jax.shard_map` instead: each device runs it on its own block of
members with no communication at all (checked in tests/test_sharding.py on the
compiled program). The same code runs on one CPU, several GPUs, or several hosts
(`jax.distributed.initialize()` first; every process builds the same full arrays from
the run's seed and contributes its own shards; `members_mesh` then gives every
process the same number of devices, and `fit` gathers the trained members back onto
every process; DISTRIBUTED.md).

Usage (what `Trainer.step` becomes)::

    mesh = members_mesh(M)
    params, opt_state, anchors, keys = shard_members((params, opt_state, anchors, keys), mesh)
    data = replicate(data, mesh)
    step = eqx.filter_jit(member_parallel(jax.vmap(member_step), mesh, member_args=(0, 1, 2, 3)))
    params, opt_state, metrics = step(params, opt_state, anchors, keys, data)

Inside `member_parallel` a device sees only its block of members, so everything that
differs between members must come in as a member-stacked argument (parameters,
optimiser state, anchors, *per-member keys*); a function that splits one key into
`M` keys inside would not match the block.

$M$ not divisible by the device count: an array axis can only be split into equal
blocks, so `members_mesh` uses the largest number of devices $d \le$ `len(devices)`
that divides $M$ (e.g. $M = 6$ on 4 devices: 3 devices with 2 members each; $M = 7$
on 4: 1 device). Padding the ensemble to a multiple of the device count was the
alternative; it would spend up to $d-1$ members' compute on dummies and put members
into the optimiser state and checkpoints that are not part of the ensemble. Choose $M$
a multiple of the device count to use them all.
"""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

MEMBERS = "members"


def members_mesh(size: int, devices: Sequence[Any] | None = None) -> Mesh:
    """A 1D mesh with axis `'members'` over the largest number of `devices` (default
    `jax.devices()`, every device of every process) that divides the ensemble `size`.

    With one device, or a `size` sharing no factor with the device count, the mesh has
    one device and sharding is a no-op.

    Several processes (`jax.distributed`): every process must hold members (a process
    without any would have nothing to train and no result), so the mesh takes the
    same number $k$ of devices from each of the $P$ processes, the largest with
    $kP$ dividing `size`, in process order (members $[0, M/P)$ on process 0, ...).
    Raises `ValueError` when `size` is not a multiple of $P$ or `devices` leaves a
    process out.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"`size` must be a positive int (the number of members), got {size!r}.")
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must not be empty.")
    n_proc = jax.process_count()
    if n_proc == 1:
        d = max(k for k in range(1, len(devices) + 1) if size % k == 0)
        chosen = devices[:d]
    else:
        by_process = [[x for x in devices if x.process_index == p] for p in range(n_proc)]
        left_out = [p for p, ds in enumerate(by_process) if not ds]
        if left_out:
            raise ValueError(f"`devices` must include devices of every one of the {n_proc} "
                             f"processes; processes {left_out} have none.")
        if size % n_proc:
            raise ValueError(f"`size` ({size} members) must be a multiple of the number of "
                             f"processes ({n_proc}), so that every process trains members.")
        per = min(len(ds) for ds in by_process)
        k = max(k for k in range(1, per + 1) if size % (k * n_proc) == 0)
        chosen = [x for ds in by_process for x in ds[:k]]
    # Auto axis: the partitioner propagates the member sharding through vmap and jit.
    return Mesh(np.array(chosen), (MEMBERS,), axis_types=(AxisType.Auto,))


def _put(x, sharding: NamedSharding):
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    # Multi-host: every process holds the same full array and gives its own shards.
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _leading_size(tree: PyTree) -> int | None:
    sizes = {x.shape[0] for x in jtu.tree_leaves(tree) if eqx.is_array(x) and x.ndim >= 1}
    if len(sizes) > 1:
        raise ValueError(
            "every array of an ensemble pytree must carry the member axis first; found "
            f"leading sizes {sorted(sizes)}."
        )
    return sizes.pop() if sizes else None


def shard_members(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every array of `tree` (parameters, optimiser state, anchors, ... each with
    the member axis first, as `jax.vmap`/`eqx.filter_vmap` build them) sharded along
    its leading axis over `mesh`'s `'members'` axis; non-array leaves are kept.

    0-d arrays (e.g. a shared step counter) are replicated. Raises `ValueError` if the
    leading sizes differ or are not divisible by the mesh size (build the mesh with
    `members_mesh(M)`).
    """
    size = _leading_size(tree)
    n = mesh.shape[MEMBERS]
    if size is not None and size % n:
        raise ValueError(
            f"the member axis ({size}) is not divisible by the mesh's {n} devices: build the "
            "mesh with members_mesh(M)."
        )
    split = NamedSharding(mesh, PartitionSpec(MEMBERS))
    whole = NamedSharding(mesh, PartitionSpec())
    return jtu.tree_map(
        lambda x: _put(x, split if x.ndim >= 1 else whole) if eqx.is_array(x) else x, tree
    )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every array of `tree` (training data, shared physics, initial states) copied to
    every device of `mesh`: the inputs every member reads."""
    whole = NamedSharding(mesh, PartitionSpec())
    return jtu.tree_map(lambda x: _put(x, whole) if eqx.is_array(x) else x, tree)


def constrain_members(tree: PyTree, mesh: Mesh) -> PyTree:
    """Inside `jit`: ask for every array of `tree` with a leading axis to stay sharded
    along `'members'` (`jax.lax.with_sharding_constraint`), e.g. on the outputs of the
    vmapped step so the partitioner never gathers them. Identity outside `jit`'s
    semantics (values unchanged)."""
    split = NamedSharding(mesh, PartitionSpec(MEMBERS))
    return jtu.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, split)
        if eqx.is_array(x) and jnp.ndim(x) >= 1
        else x,
        tree,
    )


def member_devices(tree: PyTree) -> int:
    """Into how many blocks the member axis of `tree`'s arrays is split (the smallest
    over its arrays with a leading axis; 1 when unsharded or replicated): a check that
    sharding took effect."""
    blocks = [
        x.shape[0] // x.sharding.shard_shape(x.shape)[0]
        for x in jtu.tree_leaves(tree)
        if isinstance(x, jax.Array) and x.ndim >= 1 and x.shape[0] > 0
    ]
    return min(blocks) if blocks else 1


def member_parallel(
    fn: Callable[..., Any],
    mesh: Mesh,
    *,
    member_args: Sequence[int],
) -> Callable[..., Any]:
    """`fn` (a function vmapped over members, e.g. `jax.vmap(member_step)`) run with
    `jax.shard_map`: each device of `mesh` calls it on its own block of members, with
    no communication between devices.

    **Arguments:**

    - `fn`: takes positional arguments; those at `member_args` carry the member axis
      first on every array, the others are the same for every member (data, physics,
      static configuration) and are replicated. Every array it returns must carry the
      member axis first (as `jax.vmap` returns them). Non-array leaves (static parts of
      `eqx.Module`s) pass through unchanged.
    - `mesh`: from `members_mesh`.
    - `member_args`: indices of the member-stacked arguments.

    **Returns:** a function with `fn`'s signature; call it inside `jit` (or wrap it in
    `eqx.filter_jit`). With a 1-device mesh it computes exactly what `fn` does.
    """
    member_args = tuple(int(i) for i in member_args)

    def wrapped(*args):
        for i in member_args:
            if not -len(args) <= i < len(args):
                raise ValueError(
                    f"`member_args` index {i} is out of range for {len(args)} arguments."
                )
        stacked = {i % len(args) for i in member_args}
        dynamic, static = eqx.partition(args, eqx.is_array)
        n = mesh.shape[MEMBERS]
        size = _leading_size(tuple(dynamic[i] for i in sorted(stacked)))
        if size is not None and size % n:
            raise ValueError(
                f"the member axis ({size}) is not divisible by the mesh's {n} devices: build "
                "the mesh with members_mesh(M)."
            )
        if n == 1:
            # nothing to split; plain vmap also keeps diffrax's checkpointed while
            # loops (its adaptive/RK solvers) differentiable, which inside shard_map
            # they are not with the jax versions we test
            return fn(*args)
        specs = tuple(PartitionSpec(MEMBERS) if i in stacked else PartitionSpec()
                      for i in range(len(args)))
        out_static = []

        def local(*dyn):
            out = fn(*eqx.combine(dyn, static))
            out_dyn, out_st = eqx.partition(out, eqx.is_array)
            out_static.append(out_st)
            return out_dyn

        # check_vma=False: replicated inputs and closed-over constants (initial states,
        # data) meet member-varying values in scan carries; with no collectives in
        # `fn` there is nothing for the check to protect.
        out_dyn = jax.shard_map(local, mesh=mesh, in_specs=specs,
                                out_specs=PartitionSpec(MEMBERS), check_vma=False)(*dynamic)
        return eqx.combine(out_dyn, out_static[0])

    return wrapped
