"""Run configuration: defaults, TOML files, `--set`, and refusal of bad input before
any work starts."""

import pytest

from hybrid._config import SYSTEMS, Config, build_config


@pytest.mark.parametrize("system", SYSTEMS)
def test_defaults_are_valid_and_round_trip(system, tmp_path):
    cfg = build_config(system)
    assert cfg.system == system
    path = tmp_path / "config.json"
    cfg.save(path)
    assert Config.load(path) == cfg
    toml = tmp_path / "config.toml"
    cfg.save_toml(toml)
    assert build_config(system, file=toml) == cfg


def test_defaults_coarse_grain_by_at_least_8x_on_grids():
    for system in ("burgers", "navier-stokes"):
        cfg = build_config(system)
        assert cfg.fine_n >= 4 * cfg.coarse_n, system
    burgers = build_config("burgers")
    assert burgers.fine_n // burgers.coarse_n >= 8


def test_layers_apply_in_order(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 3\nwidth = 16\nclosure = "attention"\n')
    cfg = build_config("burgers", file=toml, sets=["width=24", "viscosity=0.03"])
    assert (cfg.seed, cfg.width, cfg.closure, cfg.viscosity) == (3, 24, "attention", 0.03)


def test_system_section_of_a_toml_file(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("seed = 5\n[burgers]\nwidth = 12\n[navier-stokes]\nwidth = 40\n")
    assert build_config("burgers", file=toml).width == 12
    assert build_config("navier-stokes", file=toml).width == 40
    assert build_config("burgers", file=toml).seed == 5


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
        (["members=1"], "`members` must be >= 2"),
        (["filter=box", "coarse_n=48"], "`coarse_n` must divide `fine_n`"),
    ],
)
def test_bad_values_are_refused(sets, match):
    with pytest.raises(ValueError, match=match):
        build_config("burgers", sets=sets)


def test_bad_system_and_file(tmp_path):
    with pytest.raises(ValueError, match="`system` must be one of"):
        build_config("heat")
    with pytest.raises(ValueError, match="not found"):
        build_config("burgers", file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("width = = 3\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        build_config("burgers", file=bad)
    other = tmp_path / "other.toml"
    other.write_text('system = "kuramoto"\n')
    with pytest.raises(ValueError, match="is for system 'kuramoto'"):
        build_config("burgers", file=other)
    with pytest.raises(ValueError, match="`viscosity` does not apply to kuramoto"):
        build_config("kuramoto", sets=["viscosity=0.1"])
