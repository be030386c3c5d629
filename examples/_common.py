"""Printing shared by the examples (run them from anywhere: each puts this folder on
`sys.path` when run as a script)."""


def _fmt(x, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def print_metrics(metrics: dict, seconds: float) -> None:
    """The key numbers of an evaluated run (`hybrid._evaluate.evaluate`'s metrics)."""
    h, b = metrics["hybrid"], metrics["baseline"]
    print(f"\n{metrics['system']}: coarse_n={metrics['coarse_n']} from fine_n={metrics['fine_n']}, "
          f"{metrics['members']} members, {metrics['n_test']} held-out trajectories")
    print(f"  hybrid     rmse {h['rmse']:.4g}   corr_time {h['corr_time']:.3g}")
    print(f"  no closure rmse {b['rmse']:.4g}   corr_time {b['corr_time']:.3g}")
    print(f"  rmse ratio hybrid / no closure: {metrics['rmse_ratio_vs_baseline']:.3f}")
    for k, v in metrics.get("finer", {}).items():
        print(f"  plain solver {k} (n={v['n']}) rmse {v['rmse']:.4g}")
    uq = metrics["uq"]
    print(f"  ensemble: crps {uq['crps']:.4g}, spread/skill {uq['spread_skill']:.3g}, "
          f"coverage90 {uq['coverage90']:.3g}")
    s = metrics["stability"]
    verdict = "stable" if s["stable"] else f"blew up at step {s['blowup_step']}"
    profile = s.get("profile") or "spectrum"
    print(f"  long rollouts, {s['horizon_steps']} steps: {verdict}; energy drift "
          f"{_fmt(s.get('energy_drift'))}, {profile} departure "
          f"{_fmt(s.get('spectrum_departure'))}")
    print(f"  {seconds:.0f} s in all")
