"""Shared by the benchmark scripts: interleaved timing, the machine/version header and
markdown tables."""

import argparse
import dataclasses
import datetime
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata

import jax

# `--one-core`: one core and one XLA thread, set before XLA's CPU backend starts (on the
# first computation, after this import). XLA's idle threads spin, so on several cores
# a process's CPU time overstates its work; on one core CPU time and wall time agree.
ONE_CORE = "--one-core" in sys.argv
if ONE_CORE:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _calibrate(fn: Callable, args: tuple, min_time: float) -> int:
    """Calls per sample so that one sample lasts about `min_time` seconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, math.ceil(min_time / once))


@dataclasses.dataclass
class Samples:
    """Seconds per call, one entry per repeat: wall-clock time, and CPU time of this
    process (all its threads). On a machine shared with other jobs, CPU time is the
    steadier measure: it leaves out the time spent waiting for a core."""

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)


def _sample(fn: Callable, args: tuple, number: int, into: Samples) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(number):
        out = fn(*args)
    jax.block_until_ready(out)
    into.cpu.append((time.process_time() - cpu) / number)
    into.wall.append((time.perf_counter() - wall) / number)


def time_interleaved(
    fns: Sequence[Callable],
    args: tuple,
    *,
    repeats: int = 15,
    min_time: float = 0.02,
    warmup: int = 2,
) -> list[Samples]:
    """Time each `fn(*args)`, in turn: each repeat times every function once, in an
    order that rotates between repeats, so that load from other processes hits all of
    them alike. Each sample averages enough calls to last about `min_time`. Functions
    are compiled and warmed up first.

    **Returns:** one `Samples` (wall and CPU seconds per call, `repeats` each) per
    function.
    """
    for fn in fns:
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    numbers = [_calibrate(fn, args, min_time) for fn in fns]
    samples = [Samples() for _ in fns]
    order = list(range(len(fns)))
    for r in range(repeats):
        rotated = order[r % len(order):] + order[: r % len(order)]
        for i in rotated:
            _sample(fns[i], args, numbers[i], samples[i])
    return samples


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of the per-repeat ratios a/b of interleaved samples: robust to load
    that drifts during the run (both sides of a pair saw about the same load)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def compare(a: Samples, b: Samples, a_name: str = "ours", b_name: str = "peer") -> dict:
    """The columns every comparison reports: each side's median CPU time per call, and
    the ratio a/b by CPU time (median of the per-repeat ratios: the headline figure)
    and by wall time (fastest sample of each side)."""
    return {
        f"{a_name} (ms)": statistics.median(a.cpu) * 1e3,
        f"{b_name} (ms)": statistics.median(b.cpu) * 1e3,
        f"{a_name}/{b_name} (CPU)": paired_ratio(a.cpu, b.cpu),
        f"{a_name}/{b_name} (wall, fastest)": min(a.wall) / min(b.wall),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(packages: Sequence[str] = ("jax", "jaxlib", "diffrax", "equinox")) -> str:
    """Machine (CPU model, cores, load), library versions and date, as markdown lines
    to print above a table."""
    versions = []
    for p in packages:
        try:
            versions.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{p} (not installed)")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    dev = jax.devices()[0]
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"_{now}; CPU: {_cpu_model()}, {cores} cores ({platform.machine()})"
        f"{', one XLA thread (--one-core)' if ONE_CORE else ''}; "
        f"load average at the end (1, 5, 15 min): {load}; jax device: {dev.platform}; "
        f"Python {platform.python_version()}; {', '.join(versions)}_"
    )


def table(rows: list[dict]) -> str:
    """A markdown table from a list of dicts with the same keys."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timing_parser(doc: str | None, *, repeats: int, min_time: float,
                  quick_help: str = "3 repeats") -> argparse.ArgumentParser:
    """The options every timing script shares: `--repeats`, `--min-time` (seconds per
    sample) and `--quick` (see `parse_timing_args`)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--min-time", type=float, default=min_time, help="seconds per sample")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--one-core", action="store_true",
                        help="one core and one XLA thread: CPU time = wall time")
    return parser


def parse_timing_args(parser: argparse.ArgumentParser, quick_repeats: int = 3):
    """Parse; `--quick` lowers the repeats to `quick_repeats`."""
    args = parser.parse_args()
    if args.quick:
        args.repeats = quick_repeats
    return args


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend (figures to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# The graph Burgers configuration of the small benchmark runs (bench_noise, bench_scaling):
# the example's graph (examples/graph_burgers.py). At the default spacing 1 the cluster
# means barely move and the cluster model alone is near exact.
GRAPH_BURGERS_SMALL = dict(fine_n=3000, coarse_n=16, avg_degree=8.0, spacing=0.25,
                           fine_dt=0.02, n_train=8, n_val=4, n_test=4, t_train=10.0,
                           train_steps=300, horizon=10, heads=2, depth=2)
