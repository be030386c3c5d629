"""Member sharding: on one device a no-op; on 4 (forced host) devices the vmapped
training step and the vmapped ensemble solve run member-parallel and give the
unsharded numbers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from hybrid import training as H

ROOT = Path(__file__).resolve().parents[1]

# The program run on 1 device in-process and on 4 in a subprocess: M closures trained
# for two steps through Burgers rollouts (vmapped, anchored, Adam), then one vmapped
# ensemble solve. Prints what it measured as JSON.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import equinox as eqx, jax, jax.numpy as jnp, jax.random as jr, numpy as np, optax
    jax.config.update("jax_enable_x64", True)
    import solvers
    from hybrid import Ensemble, Hybrid
    from hybrid import training as H
    from hybrid.closures import StencilClosure

    def run(m, shard):
        physics = solvers.Burgers1D(16, 0.1)
        x = physics.grid
        y0 = jnp.sin(x) + 0.2
        ts = np.array([0.0, 0.1, 0.2])
        target = jnp.stack([y0, 0.9 * y0, 0.8 * y0])
        make = lambda k: StencilClosure(1, key=k, width=4, depth=2, init_scale=1.0)
        ens = Ensemble.init(make, size=m, key=jr.PRNGKey(0), physics=physics)
        params, static = eqx.partition(ens.members, eqx.is_array)
        anchors = params
        opt = optax.adam(1e-2)
        opt_state = jax.vmap(opt.init)(params)
        if shard:
            mesh = H.members_mesh(m)
            params, opt_state, anchors = H.shard_members((params, opt_state, anchors), mesh)
            y0, target = H.replicate((y0, target), mesh)

        def member_step(p, s, a):
            def loss(q):
                sol = solvers.solve(Hybrid(physics, eqx.combine(q, static)), y0, ts, dt=0.05)
                reg = sum(jnp.sum((u - v) ** 2) for u, v in
                          zip(jax.tree.leaves(q), jax.tree.leaves(a)))
                return jnp.mean((sol.ys - target) ** 2) + 1e-3 * reg
            value, g = jax.value_and_grad(loss)(p)
            updates, s = opt.update(g, s, p)
            return optax.apply_updates(p, updates), s, value

        def rollouts(members):
            return Ensemble(members, physics).solve(y0, ts, dt=0.05).ys

        step = jax.vmap(member_step)
        if shard:
            step = H.member_parallel(step, mesh, member_args=(0, 1, 2))
            rollouts = H.member_parallel(rollouts, mesh, member_args=(0,))
        step = jax.jit(step)
        hlo = step.lower(params, opt_state, anchors).compile().as_text()
        collectives = sum(hlo.count(op) for op in
                          ("all-gather", "all-reduce", "all-to-all", "collective-permute"))
        for _ in range(2):
            params, opt_state, loss = step(params, opt_state, anchors)
        ys = eqx.filter_jit(rollouts)(eqx.combine(params, static))
        leaves = jax.tree.leaves(params) + jax.tree.leaves(opt_state)
        return {
            "devices": len(jax.devices()),
            "params": [np.asarray(v).tolist() for v in jax.tree.leaves(params)],
            "loss": np.asarray(loss).tolist(),
            "ys": np.asarray(ys).tolist(),
            "blocks_state": H.member_devices((params, opt_state)),
            "blocks_ys": H.member_devices(ys),
            "devices_ys": len(ys.sharding.device_set),
            "collectives": collectives,
            "shard_shapes": sorted({tuple(s.data.shape[:1]) for x in leaves if x.ndim
                                    for s in x.addressable_shards}),
        }

    m = int(sys.argv[1])
    meshes = {k: H.members_mesh(k).shape[H.MEMBERS] for k in (1, 2, 6, 7, 8, 9, 12)}
    print("RESULT" + json.dumps({"plain": run(m, False), "sharded": run(m, True),
                                 "meshes": meshes}))
    """
)


def _run(members: int, devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(members)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def _same(plain: dict, sharded: dict) -> None:
    # Same arithmetic per member, but XLA fuses the sharded program differently, so
    # round-off differs: the flux-form closure's output bias has a gradient that is 0 up
    # to round-off, which Adam normalises into ~1e-10 updates differing by ~1e-13.
    for a, b in zip(plain["params"], sharded["params"], strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sharded["loss"], plain["loss"], rtol=1e-10)
    np.testing.assert_allclose(sharded["ys"], plain["ys"], rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_members_sharded_over_four_devices():
    # 8 members on 4 devices: 2 per device, through the step and the solve
    out = _run(8, 4)
    plain, sharded = out["plain"], out["sharded"]
    assert sharded["devices"] == 4
    _same(plain, sharded)
    assert plain["blocks_state"] == 1 and plain["blocks_ys"] == 1
    assert sharded["blocks_state"] == 4  # params and optimiser state, after training
    assert sharded["blocks_ys"] == 4 and sharded["devices_ys"] == 4  # the rollouts
    assert sharded["shard_shapes"] == [[2]]
    # member-parallel: the compiled step moves no data between devices
    assert sharded["collectives"] == 0
    # the mesh: the largest number of the 4 devices that divides M
    assert out["meshes"] == {"1": 1, "2": 2, "6": 3, "7": 1, "8": 4, "9": 3, "12": 4}


@pytest.mark.slow
def test_members_not_divisible_by_devices():
    # 6 members on 4 devices: the largest divisor, 3 devices with 2 members each
    out = _run(6, 4)
    _same(out["plain"], out["sharded"])
    assert out["sharded"]["blocks_state"] == 3 and out["sharded"]["devices_ys"] == 3
    assert out["sharded"]["shard_shapes"] == [[2]]
    assert out["sharded"]["collectives"] == 0


def test_single_device_is_a_no_op():
    # in this process JAX has one CPU device: sharding must not change anything
    mesh = H.members_mesh(4, jax.devices()[:1])
    assert mesh.shape[H.MEMBERS] == 1
    tree = {"w": jr.normal(jr.PRNGKey(0), (4, 3)), "count": jnp.zeros(4, jnp.int32),
            "step": jnp.asarray(3), "name": "static"}
    out = H.shard_members(tree, mesh)
    np.testing.assert_array_equal(out["w"], tree["w"])
    assert out["name"] == "static" and int(out["step"]) == 3
    assert H.member_devices(out) == 1
    f = jax.jit(jax.vmap(lambda w: jnp.sin(w).sum()))
    np.testing.assert_array_equal(f(out["w"]), f(tree["w"]))
    with pytest.raises(ValueError, match="leading sizes"):
        H.shard_members({"a": jnp.zeros((4, 2)), "b": jnp.zeros((3,))}, mesh)
    rep = H.replicate({"data": jnp.ones((5, 2))}, mesh)
    np.testing.assert_array_equal(rep["data"], 1.0)
    # with_sharding_constraint inside jit leaves values unchanged
    g = eqx.filter_jit(lambda t: H.constrain_members(t, mesh))
    np.testing.assert_array_equal(g(out)["w"], tree["w"])
    # member_parallel on one device computes what the vmapped function does
    fn = jax.vmap(lambda w, c, x: (jnp.sin(w) * x, c + 1), in_axes=(0, 0, None))
    par = jax.jit(H.member_parallel(fn, mesh, member_args=(0, 1)))
    x = jnp.arange(3.0)
    for a, b in zip(par(out["w"], out["count"], x), fn(tree["w"], tree["count"], x),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="`member_args` index 5 is out of range"):
        H.member_parallel(fn, mesh, member_args=(5,))(out["w"], out["count"], x)
