"""Printing shared by the examples (run them from anywhere: each puts this folder on
`sys.path` when run as a script)."""


def _fmt(x, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def print_metrics(metrics: dict, seconds: float) -> None:
    """The key numbers of an evaluated run (`neuroscale.evaluate_run`'s metrics)."""
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


def run_example(system: str, doc: str, small: dict, quick: dict,
                argv: list[str] | None = None) -> dict:
    """The command line every system example shares: train `system` with the `small`
    (or `--quick`) configuration plus `--set KEY=VALUE` overrides into `--out`,
    evaluate, print the key numbers. **Returns:** the metrics."""
    import argparse
    import time
    from pathlib import Path

    from neuroscale import build_config, evaluate_run, task_class, train_run

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=f"out/examples/{system.replace('-', '_')}",
                        help="run folder")
    parser.add_argument("--quick", action="store_true", help="smallest settings (smoke test)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="override a configuration key")
    args = parser.parse_args(argv)
    cls = task_class(system)
    task = cls(build_config(cls, overrides=quick if args.quick else small, sets=args.sets))
    out = Path(args.out)
    t0 = time.perf_counter()
    # A folder from an earlier run with the same configuration is resumed (or reused).
    train_run(task, out, resume=(out / "config.json").exists(), progress=not args.quick)
    metrics = evaluate_run(out, progress=not args.quick)
    print_metrics(metrics, time.perf_counter() - t0)
    print(f"  report: {out / 'report.md'}")
    return metrics
