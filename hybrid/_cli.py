"""The `neuroscale` command line (API.md)."""

import argparse
import json
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroscale",
        description="Neural coarse-graining closures in differentiable solvers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="the main job: Burgers fine data, a closure ensemble trained end to end, "
        "a-posteriori evaluation, report.md with figures",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                      help="override a configuration key (repeatable)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    train = sub.add_parser("train", help="train a closure ensemble for SYSTEM")
    train.add_argument("system", help="burgers, navier-stokes or kuramoto")
    train.add_argument("--out", required=True, help="run folder (checkpoints, data, model)")
    train.add_argument("--config", help="TOML file of configuration keys")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a configuration key (repeatable)")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run exactly where it stopped")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    ev = sub.add_parser("evaluate", help="a-posteriori evaluation of the model in DIR")
    ev.add_argument("dir", help="a run folder written by `neuroscale train`")
    ev.add_argument("--no-figures", action="store_true", help="metrics.json only")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")

    st = sub.add_parser("stability", help="long rollouts of the model in DIR: blow-up, "
                        "drift, spectrum; updates the stability block of DIR/metrics.json")
    st.add_argument("dir", help="a run folder written by `neuroscale train`")
    st.add_argument("--factor", type=int, default=None, metavar="N",
                    help="rollout length in training horizons (default: the run's "
                    "stability_factor)")
    st.add_argument("--no-figure", action="store_true",
                    help="no stability_energy.png (energy against time)")
    st.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _print_summary(metrics: dict) -> None:
    h, b = metrics["hybrid"], metrics["baseline"]
    print(f"hybrid   rmse {h['rmse']:.4g}  corr_time {h['corr_time']:.3g}")
    print(f"baseline rmse {b['rmse']:.4g}  corr_time {b['corr_time']:.3g}")
    for k, v in metrics.get("finer", {}).items():
        print(f"plain {k:>3} (n={v['n']}) rmse {v['rmse']:.4g}  corr_time {v['corr_time']:.3g}")
    uq = metrics["uq"]
    print(f"uq: crps {uq['crps']:.4g}  spread/skill {uq['spread_skill']:.3g}  "
          f"coverage90 {uq['coverage90']:.3g}")
    print(f"stability: {json.dumps(metrics['stability'])}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ._config import build_config

    try:
        if args.command == "demo":
            cfg = build_config("burgers", sets=args.sets)
        elif args.command == "train":
            cfg = build_config(args.system, file=args.config, sets=args.sets)
        else:
            cfg = None
            if not (Path(args.dir) / "config.json").exists():
                raise ValueError(f"`DIR` {args.dir} holds no run (config.json missing).")
            if args.command == "stability" and not (Path(args.dir) / "model.eqx").exists():
                raise ValueError(f"`DIR` {args.dir} holds no trained model (model.eqx "
                                 "missing): train first.")
            if getattr(args, "factor", None) is not None and args.factor < 1:
                raise ValueError(f"`--factor` must be >= 1, got {args.factor}.")
    except ValueError as e:
        print(f"neuroscale: error: {e}", file=sys.stderr)
        return 2

    from ._evaluate import evaluate
    from ._train import train

    progress = not args.quiet
    if args.command == "stability":
        from ._stability import stability_of_run

        report = stability_of_run(args.dir, factor=args.factor, figure=not args.no_figure,
                                  progress=progress)
        print(report.summary())
        print(f"wrote the stability block of {Path(args.dir) / 'metrics.json'}")
        return 0
    if args.command == "evaluate":
        metrics = evaluate(args.dir, progress=progress, figures=not args.no_figures)
        _print_summary(metrics)
        print(f"wrote {Path(args.dir) / 'metrics.json'}")
        return 0
    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        train(cfg, out, resume=getattr(args, "resume", False) or args.command == "demo"
              and (out / "checkpoints").exists(), progress=progress)
    except ValueError as e:
        print(f"neuroscale: error: {e}", file=sys.stderr)
        return 2
    print(f"trained {cfg.members} members in {time.perf_counter() - t0:.0f} s -> {out}")
    if args.command == "demo":
        metrics = evaluate(out, progress=progress)
        _print_summary(metrics)
        print(f"total {time.perf_counter() - t0:.0f} s; report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
