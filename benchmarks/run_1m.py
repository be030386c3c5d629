"""A graph task at a million nodes, end to end, stage by stage: what `neuroscale train
TASK --config benchmarks/TASK_1m.toml` followed by `neuroscale evaluate` does, with
the wall time, CPU time and peak memory (resident set) of every stage.

Two processes, as on the command line: `train` (graph, renormalization, the fine
system, reference data of the train and validation splits, training, calibration)
and `evaluate` (graph and renormalization again, the test split, the a-posteriori
evaluation, the long stability rollouts, report and figures). Each runs the real
pipeline functions (`neuroscale.train_run`, `neuroscale.evaluate_run`); the stages
are timed by wrapping the calls they make, some of them private to the pipeline
(`neuroscale._data.dataset`, the cached graph of `neuroscale.tasks._network`): a
measuring instrument, not an example to copy, and it must move with them. A
stage's peak memory is the largest resident set sampled every 0.1 s while it ran;
the process peak is `ru_maxrss`. The load average (1 min) is read before and after
every stage: on a shared machine the wall times are only as good as the load beside
them.

    python benchmarks/run_1m.py --task kuramoto --out runs/kuramoto_1m
    python benchmarks/run_1m.py --task graph-burgers --out runs/gb_1m
    python benchmarks/run_1m.py --task kuramoto --nodes 3000000 --out runs/k3m \\
        --set coarse_n=32
    python benchmarks/run_1m.py --table runs/kuramoto_1m     # print a finished run

`--config` defaults to `benchmarks/<task>_1m.toml`; `--nodes` sets `fine_n`; `--set
KEY=VALUE` overrides any key. An interrupted run continues with `--resume` (the data
sets resume chunk by chunk, training from its checkpoints).
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class _Recorder:
    """Stages of one process: wall and CPU time, peak resident set (sampled), load.
    Stages may nest (the pipeline's calls inside `train_run`)."""

    def __init__(self, phase: str):
        self.phase = phase
        self.rows: list[dict] = []
        self._active: list[dict] = []
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            rss = _rss_bytes()
            for peak in list(self._active):
                peak[0] = max(peak[0], rss)
            time.sleep(0.1)

    def stage(self, name: str, fn, *args, **kwargs):
        peak = [_rss_bytes()]
        load0, wall0, cpu0 = _load(), time.perf_counter(), time.process_time()
        self._active.append(peak)
        try:
            return fn(*args, **kwargs)
        finally:
            self._active = [p for p in self._active if p is not peak]
            row = {
                "phase": self.phase, "stage": name,
                "wall_s": time.perf_counter() - wall0,
                "cpu_s": time.process_time() - cpu0,
                "peak_rss_gb": max(peak[0], _rss_bytes()) / 2**30,
                "load_before": load0, "load_after": _load(),
            }
            self.rows.append(row)
            print(f"[{self.phase}] {name}: {row['wall_s']:.1f} s, peak "
                  f"{row['peak_rss_gb']:.2f} GB, load {load0:.1f} -> {row['load_after']:.1f}",
                  flush=True)

    def wrap(self, owner, attr: str, name):
        """Replace `owner.attr` by a timed version; `name` a string or a function of
        the call's arguments."""
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            label = name(*args, **kwargs) if callable(name) else name
            return self.stage(label, original, *args, **kwargs)

        setattr(owner, attr, timed)


def _child(args) -> None:
    import neuroscale
    from neuroscale import _run
    from neuroscale._config import load_config

    out = Path(args.out)
    rec = _Recorder(args.child)
    start = time.perf_counter()
    if args.child == "train":
        cls = neuroscale.task_class(args.task)
        cfg = neuroscale.build_config(cls, file=args.config, sets=args.set)
        task = cls(cfg)
    else:
        cls = neuroscale.task_class(json.loads((out / "config.json").read_text())["task"])
        task = cls(load_config(out / "config.json", cls))
    # the run's derived arrays (renormalization, transport flow) in DIR/data/derived, as
    # train_run and evaluate_run keep them: computed by the first process, read by the next
    with _run.derived_store(out):
        _stages(args, out, rec, task, start)


def _stages(args, out: Path, rec: "_Recorder", task, start: float) -> None:
    import jax
    import jax.random as jr

    import hybrid
    from neuroscale import _data, _run
    from neuroscale.tasks import _network

    cfg = task.cfg
    graph = rec.stage("graph", _network._graph, cfg.seed, cfg.fine_n, float(cfg.avg_degree))
    rec.stage("renormalization", _network.network, cfg)

    def fine_system():
        # The fine system with its column layout, built once per run and cached.
        fine, y0 = task.sample(jr.PRNGKey(0))
        if hasattr(fine, "system"):
            fine.system()
        return jax.block_until_ready(y0)

    rec.stage("fine system", fine_system)

    def split_label(task_, out_, split, **kw):
        path = Path(out_) / "data" / split
        meta = path / "zarr.json"
        done = meta.is_file() and json.loads(meta.read_text())["attributes"].get("complete")
        return f"data: {split}" + (" (read)" if done else "")

    rec.wrap(_data, "dataset", split_label)
    rec.wrap(hybrid, "fit", "training")
    rec.wrap(hybrid, "calibrate", "calibration")
    rec.wrap(hybrid, "evaluate", "evaluation")
    rec.wrap(_run, "run_stability", "stability")
    if args.child == "train":
        rec.stage("train_run (all)", _run.train_run, task, out, resume=args.resume,
                  progress=not args.quiet)
        info = {"graph_edges": int(graph[0].n_edges)}
    else:
        metrics = rec.stage("evaluate_run (all)", _run.evaluate_run, out,
                            progress=not args.quiet)
        info = {"metrics": {k: metrics[k] for k in ("hybrid", "baseline", "uq", "stability",
                                                    "rmse_ratio_vs_baseline")}}
    info.update(phase=args.child, total_wall_s=time.perf_counter() - start,
                process_peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                stages=rec.rows)
    (out / f"stages_{args.child}.json").write_text(json.dumps(info, indent=2) + "\n")


def _table(out: Path) -> str:
    lines = ["| phase | stage | wall (s) | CPU (s) | peak RSS (GB) | load before -> after |",
             "|---|---|---|---|---|---|"]
    totals, metrics_line = [], None
    for phase in ("train", "evaluate"):
        path = out / f"stages_{phase}.json"
        if not path.exists():
            continue
        info = json.loads(path.read_text())
        for r in info["stages"]:
            if r["stage"].endswith("(all)"):
                continue
            lines.append(f"| {phase} | {r['stage']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                         f"{r['peak_rss_gb']:.2f} | {r['load_before']:.1f} -> "
                         f"{r['load_after']:.1f} |")
        lines.append(f"| {phase} | **process total** | **{info['total_wall_s']:.1f}** | | "
                     f"**{info['process_peak_rss_gb']:.2f}** | |")
        totals.append(info["total_wall_s"])
        if "metrics" in info:
            m = info["metrics"]
            metrics_line = (
                f"hybrid rmse {m['hybrid']['rmse']:.4g} (corr_time "
                f"{m['hybrid']['corr_time']:.3g}), coarse physics alone {m['baseline']['rmse']:.4g}"
                f" (corr_time {m['baseline']['corr_time']:.3g}): ratio "
                f"{m['rmse_ratio_vs_baseline']:.3f}; uq {json.dumps(m['uq'])}; stability "
                f"{json.dumps(m['stability'])}")
    lines.append(f"\ntrain + evaluate: {sum(totals):.0f} s wall ({sum(totals) / 60:.1f} min)")
    if metrics_line is not None:
        lines.append(metrics_line)
    cfg = json.loads((out / "config.json").read_text())
    lines.append(f"config: fine_n {cfg['fine_n']}, coarse_n {cfg['coarse_n']}, n_train "
                 f"{cfg['n_train']}, n_val {cfg['n_val']}, n_test {cfg['n_test']}, t_train "
                 f"{cfg['t_train']}, fine_dt {cfg['fine_dt']}, train_steps {cfg['train_steps']}, "
                 f"members {cfg['members']}, horizon {cfg['horizon']}, eval_horizon "
                 f"{cfg['eval_horizon']}, stability_factor {cfg['stability_factor']}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="kuramoto", choices=("kuramoto", "graph-burgers"))
    parser.add_argument("--out", help="run folder")
    parser.add_argument("--config", help="TOML (default benchmarks/<task>_1m.toml)")
    parser.add_argument("--nodes", type=int, help="fine_n (default: the TOML's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--table", metavar="DIR", help="print the stage table of a run")
    parser.add_argument("--child", choices=("train", "evaluate"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(_table(Path(args.table)))
        return
    if args.out is None:
        parser.error("--out is required")
    if args.config is None:
        args.config = str(HERE / f"{args.task.replace('-', '_')}_1m.toml")
    if args.nodes is not None:
        args.set = [f"fine_n={args.nodes}", *args.set]
    if args.child:
        _child(args)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    base = [sys.executable, __file__, "--task", args.task, "--out", args.out,
            "--config", args.config, *(f"--set={s}" for s in args.set)]
    if args.quiet:
        base.append("--quiet")
    for phase in ("train", "evaluate"):
        cmd = base + ["--child", phase] + (["--resume"] if args.resume and phase == "train"
                                           else [])
        subprocess.run(cmd, check=True)
    print(_table(Path(args.out)))


if __name__ == "__main__":
    main()
