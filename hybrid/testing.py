"""Assertions for your own test suite: is a trained hybrid model stable?

```python
import hybrid.testing


def test_my_closure_is_stable():
    model = hybrid.Hybrid(physics, eqx.tree_deserialise_leaves("closure.eqx", closure))
    hybrid.testing.assert_stable(model, y0s, steps=2000, dt=0.05, max_energy_drift=0.5)
```
"""

from typing import Any

import numpy as np
from jaxtyping import ArrayLike, Float

import solvers

from .stability_tests import StabilityReport, stability

__all__ = ["assert_stable"]


def _threshold_failures(report: StabilityReport, name: str, label: str, limit: float | None,
                        *, upper: bool, absolute: bool, unit: str) -> list[str]:
    """Lines for the rollouts (that did not blow up) whose `name` breaks `limit`."""
    if limit is None:
        return []
    values = getattr(report, name)
    if values is None:
        raise ValueError(
            f"`{label}` was given but the diagnostics ({report.diagnostics}) measure no "
            f"{name.replace('_', ' ')}"
            + (" (pass a `reference` of at least 2 steps)" if name == "corr_time" else "")
            + "."
        )
    values = np.asarray(values)
    blow = np.asarray(report.blowup_step)
    lines = []
    for index in np.ndindex(values.shape):
        if blow[index] >= 0:
            continue  # already reported as a blow-up
        v = float(values[index])
        x = abs(v) if absolute else v
        bad = (x > limit) if upper else (x < limit)
        if not np.isfinite(v) or bad:
            lines.append(f"{report.rollout_name(index)}: {unit.format(v=v)} "
                         f"{'exceeds' if upper else 'is below'} `{label}`={limit:g}")
    return lines


def assert_stable(
    model: Any,
    y0s: Float[ArrayLike, "B *state"],  # noqa: F821
    *,
    steps: int,
    dt: float,
    physics: solvers.AbstractSystem | None = None,
    energy_factor: float = 10.0,
    max_energy_drift: float | None = None,
    max_enstrophy_drift: float | None = None,
    max_spectrum_departure: float | None = None,
    min_corr_time: float | None = None,
    max_lines: int = 10,
    **kwargs: Any,
) -> StabilityReport:
    r"""Assert that `model` stays stable over long rollouts from every `y0s`.

    Runs `hybrid.stability` and raises `AssertionError` if any rollout (every
    trajectory, and every member of an `Ensemble`) blows up — a NaN/Inf state, or an
    energy above `energy_factor` x the reference energy — or breaks one of the
    optional thresholds. The message names each failing rollout (trajectory and
    member), the diagnostic, the step and time it happened, the value and the bound:

    ```
    AssertionError: model is not stable: 1 of 4 rollouts failed over 200 steps of
    dt=0.1 (t=20):
      trajectory 1 (member 1): blew up: energy above the bound 2.5 (= 10 x
      reference) at step 29 (t=2.9); then non-finite state (NaN/Inf) at step 140
      (t=14)
    ```

    (one line per failing rollout, wrapped here). Drift, spectrum and decorrelation
    failures read like "trajectory 0: energy drift +0.83 exceeds `max_energy_drift`=0.5".

    **Arguments:**

    - `model`, `y0s`, `steps`, `dt`, `physics`, `energy_factor`: as `hybrid.stability`.
    - `max_energy_drift`, `max_enstrophy_drift`: bounds on $|\delta_E|$, $|\delta_Z|$,
      the relative drift of the mean over the second half (`hybrid.stability`);
      `None` (default) does not check.
    - `max_spectrum_departure`: bound on the spectrum departure (decades for spectra).
    - `min_corr_time`: lower bound on the decorrelation time against `reference`.
    - `max_lines`: failing rollouts listed in the message (the rest are counted).
    - `**kwargs`: any other keyword of `hybrid.stability` (`reference`, `save_every`,
      `physics_batched`, `solver_dt`, `diagnostics`, `t0`, `args_fn`, ...).

    **Returns:** the `StabilityReport`, when every check passes.
    """
    for name, value in (("max_energy_drift", max_energy_drift),
                        ("max_enstrophy_drift", max_enstrophy_drift),
                        ("max_spectrum_departure", max_spectrum_departure),
                        ("min_corr_time", min_corr_time)):
        if value is not None and not float(value) >= 0:
            raise ValueError(f"`{name}` must be >= 0 or None, got {value!r}.")
    if not isinstance(max_lines, int) or max_lines < 1:
        raise ValueError(f"`max_lines` must be a positive int, got {max_lines!r}.")
    report = stability(model, y0s, steps=steps, dt=dt, physics=physics,
                       energy_factor=energy_factor, **kwargs)
    failures = report.blowup_messages()
    failures += _threshold_failures(report, "energy_drift", "max_energy_drift",
                                    max_energy_drift, upper=True, absolute=True,
                                    unit="energy drift {v:+.4g}")
    failures += _threshold_failures(report, "enstrophy_drift", "max_enstrophy_drift",
                                    max_enstrophy_drift, upper=True, absolute=True,
                                    unit="enstrophy drift {v:+.4g}")
    failures += _threshold_failures(report, "spectrum_departure", "max_spectrum_departure",
                                    max_spectrum_departure, upper=True, absolute=False,
                                    unit=f"{report.profile_name} departure " + "{v:.4g}")
    failures += _threshold_failures(report, "corr_time", "min_corr_time", min_corr_time,
                                    upper=False, absolute=False, unit="corr_time {v:.4g}")
    if not failures:
        return report
    n_failed = len({line.split(":")[0] for line in failures})
    half = steps - steps // 2
    head = (f"model is not stable: {n_failed} of {int(np.size(report.blowup_step))} rollouts "
            f"failed over {steps} steps of dt={report.dt:g} (t={steps * report.dt:g})")
    if len(failures) > len(report.blowup_messages()):
        head += (f"; drifts and departures are over the second half, steps "
                 f"{steps - half + 1}..{steps}")
    shown = failures[:max_lines]
    if len(failures) > max_lines:
        shown.append(f"... and {len(failures) - max_lines} more")
    raise AssertionError(head + ":\n  " + "\n  ".join(shown))
