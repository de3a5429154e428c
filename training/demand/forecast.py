"""Next-period forecasts of share and purchase volumes by exponential smoothing (statsmodels' Holt-Winters
``ExponentialSmoothing``), scored against the naive forecast (the last period again) by MASE.

Per series the last period is held out: the smoothing variant (level only, or a damped additive trend) is
chosen on the :data:`VALIDATION_PERIODS` periods before it (one-step forecasts from a rolling origin: one
period alone chose by noise), then refit on all but the last period and scored on it. MASE divides a
series' absolute error by its mean one-step change over the fitted part (Hyndman & Koehler, 2006,
https://doi.org/10.1016/j.ijforecast.2006.03.001), so series of any volume average together; the naive
forecast's MASE on the same period is its baseline.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

VARIANTS = ("level", "damped_trend")
"""Exponential smoothing variants the validation period chooses between."""
VALIDATION_PERIODS = 3
"""Periods before the held-out one on which the variant is chosen."""
MIN_PERIODS = 4 + VALIDATION_PERIODS + 1
"""Fewest periods a series needs: four to fit, the validation periods, one to score."""


def smooth_forecast(history: np.ndarray, variant: str) -> float:
    """The next value of ``history`` by exponential smoothing (``level``: simple; ``damped_trend``: Holt's
    damped additive trend), never below 0; a flat history is its own forecast."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    history = np.asarray(history, dtype=np.float64)
    if np.ptp(history) == 0:
        return float(history[-1])
    trend = {"level": None, "damped_trend": "add"}[variant]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = ExponentialSmoothing(history, trend=trend, damped_trend=trend is not None,
                                   initialization_method="estimated").fit()
    return max(float(fit.forecast(1)[0]), 0.0)


def mase_scale(history: np.ndarray) -> float:
    """Mean absolute one-step change of ``history``: the naive forecast's in-sample error (MASE's denominator)."""
    return float(np.mean(np.abs(np.diff(history)))) if len(history) > 1 else 0.0


@dataclass(frozen=True)
class SeriesScore:
    """One series' held-out period: the smoothed and the naive forecast and their MASE."""

    variant: str
    actual: float
    forecast: float
    naive: float
    mase: float
    naive_mase: float
    next_forecast: float


def score_series(values: np.ndarray) -> SeriesScore | None:
    """The variant chosen on the validation periods, scored on the last; ``next_forecast`` refits on every
    period. None for a series too short (:data:`MIN_PERIODS`) or flat before its last period (no scale)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < MIN_PERIODS:
        return None
    fitted, actual = values[:-1], float(values[-1])
    scale = mase_scale(fitted)
    if scale == 0:
        return None
    origins = range(len(fitted) - VALIDATION_PERIODS, len(fitted))
    valid_errors = {v: sum(abs(smooth_forecast(fitted[:t], v) - fitted[t]) for t in origins) for v in VARIANTS}
    variant = min(VARIANTS, key=lambda v: (valid_errors[v], VARIANTS.index(v)))
    forecast, naive = smooth_forecast(fitted, variant), float(fitted[-1])
    return SeriesScore(variant, actual, forecast, naive, abs(forecast - actual) / scale, abs(naive - actual) / scale,
                       smooth_forecast(values, variant))
