"""Run configuration: per-task keys and defaults, TOML files, `--set`, and refusal of
bad input before any work starts."""

import pytest

from neuroscale import build_config, builtin_tasks, load_config, task_class


@pytest.mark.parametrize("name", builtin_tasks())
def test_defaults_are_valid_and_round_trip(name, tmp_path):
    cls = task_class(name)
    cfg = build_config(cls)
    assert cfg.task == name
    path = tmp_path / "config.json"
    cfg.save(path)
    assert load_config(path, cls) == cfg
    toml = tmp_path / "config.toml"
    cfg.save_toml(toml)
    assert build_config(cls, file=toml) == cfg


def test_defaults_coarse_grain_by_at_least_8x_on_grids():
    for name in ("burgers", "navier-stokes"):
        cfg = build_config(task_class(name))
        assert cfg.fine_n >= 8 * cfg.coarse_n, name


def test_each_task_has_its_own_keys():
    # A key of another task is refused, not silently ignored (issue 10: `forcing` was
    # accepted and unused by Burgers; `viscosity` means nothing to Kuramoto).
    burgers, ns, kuramoto = (task_class(n) for n in ("burgers", "navier-stokes", "kuramoto"))
    with pytest.raises(ValueError, match="unknown config key `forcing` for task `burgers`"):
        build_config(burgers, sets=["forcing=none"])
    with pytest.raises(ValueError, match="unknown config key `viscosity` for task `kuramoto`"):
        build_config(kuramoto, sets=["viscosity=0.1"])
    with pytest.raises(ValueError, match="unknown config key `coupling`"):
        build_config(ns, sets=["coupling=2"])
    assert build_config(ns, sets=["forcing=none"]).forcing == "none"
    with pytest.raises(ValueError, match="`forcing` must be 'kolmogorov' or 'none'"):
        build_config(ns, sets=["forcing=random"])
    # the common keys of API.md exist for every task
    for cls in (burgers, ns, kuramoto):
        cfg = build_config(cls)
        for key in ("seed", "fine_n", "coarse_n", "members", "train_steps", "horizon",
                    "eval_horizon", "closure"):
            assert hasattr(cfg, key), (cls.name, key)
    assert hasattr(build_config(burgers), "viscosity")


def test_data_keys_are_what_shapes_the_data():
    cfg = build_config(task_class("burgers"))
    keys = set(cfg.data_dict())
    assert {"seed", "fine_n", "coarse_n", "viscosity", "save_dt", "n_train", "filter"} <= keys
    assert not keys & {"members", "width", "train_steps", "learning_rate", "closure"}


def test_layers_apply_in_order(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 3\nwidth = 16\nclosure = "attention"\n')
    cfg = build_config(task_class("burgers"), file=toml, sets=["width=24", "viscosity=0.03"])
    assert (cfg.seed, cfg.width, cfg.closure, cfg.viscosity) == (3, 24, "attention", 0.03)


def test_task_section_of_a_toml_file(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("seed = 5\n[burgers]\nwidth = 12\n[navier-stokes]\nwidth = 40\n")
    assert build_config(task_class("burgers"), file=toml).width == 12
    assert build_config(task_class("navier-stokes"), file=toml).width == 40
    assert build_config(task_class("burgers"), file=toml).seed == 5


@pytest.mark.parametrize(
    "sets, match",
    [
        (["nonsense=1"], "unknown config key `nonsense`"),
        (["width"], "KEY=VALUE"),
        (["width=0"], "`width` must be >= 1"),
        (["width=2.5"], "`width` must be an integer"),
        (["viscosity=-1"], "`viscosity` must be > 0"),
        (["learning_rate=abc"], "`learning_rate` must be a number"),
        (["curriculum=maybe"], "`curriculum` must be true or false"),
        (["mode=sideways"], "`mode` must be one of"),
        (["ensemble=bagging"], "`ensemble` must be one of"),
        (["closure=mlp"], "`closure` must be one of"),
        (["coarse_n=1024"], "`coarse_n` .* must be below `fine_n`"),
        (["horizon=10000"], "`horizon` .* must be below"),
        (["save_dt=0.07"], "`save_dt` .* must be a multiple of `dt`"),
        (["members=0"], "`members` must be >= 1"),
        (["stochastic_closure=gamma"], "`stochastic_closure` must be one of"),
        (["filter=box", "coarse_n=48"], "`coarse_n` must divide `fine_n`"),
    ],
)
def test_bad_values_are_refused(sets, match):
    with pytest.raises(ValueError, match=match):
        build_config(task_class("burgers"), sets=sets)


def test_one_member_is_a_deterministic_run():
    # issue 11: `members=1` is the deterministic baseline, no longer refused
    assert build_config(task_class("burgers"), sets=["members=1", "ensemble=deep"]).members == 1


def test_bad_task_and_file(tmp_path):
    with pytest.raises(ValueError, match="`system` must be one of"):
        task_class("heat")
    with pytest.raises(ValueError, match="cannot import"):
        task_class("no_such_module_xyz:Task")
    with pytest.raises(ValueError, match="has no 'Nope'"):
        task_class("neuroscale:Nope")
    with pytest.raises(ValueError, match="not a subclass of neuroscale.AbstractTask"):
        task_class("neuroscale:Config")
    burgers = task_class("burgers")
    with pytest.raises(ValueError, match="not found"):
        build_config(burgers, file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("width = = 3\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        build_config(burgers, file=bad)
    other = tmp_path / "other.toml"
    other.write_text('task = "kuramoto"\n')
    with pytest.raises(ValueError, match="is for task 'kuramoto'"):
        build_config(burgers, file=other)
