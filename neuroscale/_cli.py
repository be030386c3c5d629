"""The `neuroscale` command line (API.md): a thin layer over the run folder."""

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

    train = sub.add_parser("train", help="train a closure ensemble for SYSTEM (or --task)")
    train.add_argument("system", nargs="?", default=None,
                       help="burgers, navier-stokes, kuramoto or graph-burgers")
    train.add_argument("--task", metavar="MODULE:CLASS",
                       help="a task of your own: a neuroscale.AbstractTask subclass, as "
                       "module.path:Class or path/to/file.py:Class")
    train.add_argument("--out", required=True, help="run folder (checkpoints, data, model)")
    train.add_argument("--config", help="TOML file of configuration keys")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a configuration key (repeatable)")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run exactly where it stopped")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    dist = train.add_argument_group(
        "several processes (jax.distributed; DISTRIBUTED.md)",
        "every process runs the same command; data generation and the ensemble's "
        "members are split over them, process 0 writes the run folder's files")
    dist.add_argument("--distributed", action="store_true",
                      help="start jax.distributed, detecting the cluster (SLURM, Open MPI)")
    dist.add_argument("--coordinator", metavar="HOST:PORT",
                      help="by hand: process 0's address (implies --distributed)")
    dist.add_argument("--num-processes", type=int, metavar="N", help="by hand: N processes")
    dist.add_argument("--process-id", type=int, metavar="I", help="by hand: this one, 0..N-1")

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


def print_summary(metrics: dict) -> None:
    """The key numbers of an evaluated run."""
    h, b = metrics["hybrid"], metrics["baseline"]
    print(f"hybrid   rmse {h['rmse']:.4g}  corr_time {h['corr_time']:.3g}  "
          f"(one member: rmse {h['member_rmse']:.4g})")
    print(f"baseline rmse {b['rmse']:.4g}  corr_time {b['corr_time']:.3g}")
    for k, v in metrics.get("finer", {}).items():
        print(f"plain {k:>3} (n={v['n']}) rmse {v['rmse']:.4g}  corr_time {v['corr_time']:.3g}")
    uq = metrics["uq"]
    if uq.get("spread_skill") is not None:
        print(f"uq: crps {uq['crps']:.4g}  spread/skill {uq['spread_skill']:.3g}  "
              f"coverage90 {uq['coverage90']:.3g}")
    print(f"stability: {json.dumps(metrics['stability'])}")


def _task(args):
    from ._config import build_config
    from ._task import task_class, task_name

    if args.command == "demo":
        cls = task_class("burgers")
        return cls(build_config(cls, sets=args.sets))
    if (args.system is None) == (args.task is None):
        raise ValueError("`neuroscale train` takes a SYSTEM (burgers, navier-stokes, kuramoto, "
                         "graph-burgers) "
                         "or `--task MODULE:CLASS`, one of the two.")
    spec = args.system or args.task
    if args.task is not None and ":" in spec:
        module, _, cls_name = spec.rpartition(":")
        if module.endswith(".py"):
            spec = f"{Path(module).resolve()}:{cls_name}"
    cls = task_class(spec)
    return cls(build_config(cls, file=args.config, sets=args.sets, name=task_name(cls, spec)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("demo", "train"):
            task = _task(args)
        else:
            task = None
            if not (Path(args.dir) / "config.json").exists():
                raise ValueError(f"`DIR` {args.dir} holds no run (config.json missing).")
            if not (Path(args.dir) / "model" / "ensemble.json").exists():
                raise ValueError(f"`DIR` {args.dir} holds no trained model (model/ missing): "
                                 "train first.")
            if getattr(args, "factor", None) is not None and args.factor < 1:
                raise ValueError(f"`--factor` must be >= 1, got {args.factor}.")
    except ValueError as e:
        print(f"neuroscale: error: {e}", file=sys.stderr)
        return 2

    if args.command == "train" and (args.distributed or args.coordinator is not None
                                    or args.num_processes is not None
                                    or args.process_id is not None):
        from ._distributed import initialize

        try:
            initialize(args.coordinator, args.num_processes, args.process_id)
        except ValueError as e:
            print(f"neuroscale: error: {e}", file=sys.stderr)
            return 2

    from ._run import evaluate_run, stability_run, train_run

    progress = not args.quiet
    if args.command == "stability":
        report = stability_run(args.dir, factor=args.factor, figure=not args.no_figure,
                               progress=progress)
        print(report.summary())
        print(f"wrote the stability block of {Path(args.dir) / 'metrics.json'}")
        return 0
    if args.command == "evaluate":
        metrics = evaluate_run(args.dir, progress=progress, figures=not args.no_figures)
        print_summary(metrics)
        print(f"wrote {Path(args.dir) / 'metrics.json'}")
        return 0
    out = Path(args.out)
    t0 = time.perf_counter()
    resume = getattr(args, "resume", False) or (
        args.command == "demo" and (out / "checkpoints").exists())
    try:
        train_run(task, out, resume=resume, progress=progress)
    except ValueError as e:
        print(f"neuroscale: error: {e}", file=sys.stderr)
        return 2
    print(f"trained {task.cfg.members} members in {time.perf_counter() - t0:.0f} s -> {out}")
    if args.command == "demo":
        metrics = evaluate_run(out, progress=progress)
        print_summary(metrics)
        print(f"total {time.perf_counter() - t0:.0f} s; report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
