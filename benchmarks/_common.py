"""Shared by the benchmark scripts: timing and the machine/version header."""

import datetime
import os
import platform
import statistics
import time
from importlib import metadata

import jax


def time_call(fn, *args, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time (s) of `fn(*args)`, compiled and warmed up first."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def header(packages=("jax", "diffrax", "equinox")) -> str:
    """Machine, versions and date, as a markdown line to print above a table."""
    versions = []
    for p in packages:
        try:
            versions.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{p} (not installed)")
    dev = jax.devices()[0]
    return (
        f"_{datetime.date.today().isoformat()}; {platform.platform()}; "
        f"{os.cpu_count()} CPUs; {platform.processor() or platform.machine()}; "
        f"jax device: {dev.platform} ({dev.device_kind}); {', '.join(versions)}_"
    )


def table(rows: list[dict]) -> str:
    """A markdown table from a list of dicts with the same keys."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
