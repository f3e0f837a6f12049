"""The statistics of a table's cells: summaries with confidence intervals (Student-t or a
seeded bootstrap), Holm's correction, and the exact-where-small rank test, on scipy.stats.
`grubench.stats` builds the tables from them."""

from __future__ import annotations

import inspect
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

CI_METHODS = ("t", "bootstrap")
# A fixed seed for scipy.stats.bootstrap: the same table every time it is printed.
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Summary:
    """n, mean, sample std (ddof=1) and a confidence interval of some values."""

    n: int
    mean: float
    std: float  # NaN when n < 2
    ci_low: float  # NaN when n < 2
    ci_high: float


def bootstrap_interval(
    data: tuple[Any, ...], statistic: Callable[..., Any], level: float
) -> tuple[float, float]:
    """scipy.stats.bootstrap's BCa interval with a fixed seed (its percentile interval where
    BCa is undefined, as for values that are nearly all equal)."""
    from scipy import stats as st

    seed: dict[str, Any] = (
        {"rng": BOOTSTRAP_SEED}  # scipy >= 1.15
        if "rng" in inspect.signature(st.bootstrap).parameters
        else {"random_state": BOOTSTRAP_SEED}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on degenerate resamples; handled below
        for method in ("BCa", "percentile"):
            ci = st.bootstrap(
                data, statistic, confidence_level=level, method=method, vectorized=True, **seed
            ).confidence_interval
            if math.isfinite(ci.low) and math.isfinite(ci.high):
                return float(ci.low), float(ci.high)
    return math.nan, math.nan


def mean_of(x: Any, axis: int = -1) -> Any:
    import numpy as np

    return np.mean(x, axis=axis)


def mean_difference(x: Any, y: Any, axis: int = -1) -> Any:
    import numpy as np

    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def moments(values: Sequence[float | None]) -> tuple[list[float], float, float]:
    """(the finite values, their mean, their sample std, ddof=1): NaN where there are too few
    values for either."""
    xs = [float(x) for x in values if x is not None and math.isfinite(x)]
    mean = statistics.fmean(xs) if xs else math.nan
    return xs, mean, statistics.stdev(xs) if len(xs) > 1 else math.nan


def summarize(values: Sequence[float | None], level: float = 0.95, method: str = "t") -> Summary:
    """The finite `values`' n, mean, std (ddof=1) and a `level` confidence interval of the
    mean: Student-t, mean ± t_{(1+level)/2, n-1} · std / sqrt(n) (scipy.stats.t), or with
    `method="bootstrap"` scipy.stats.bootstrap's (fixed seed). NaN where n is too small;
    [mean, mean] when every value is the same."""
    from scipy import stats as st

    xs, mean, std = moments(values)
    n = len(xs)
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan)
    if std == 0:
        return Summary(n, mean, 0.0, mean, mean)
    if method == "bootstrap":
        lo, hi = bootstrap_interval((xs,), mean_of, level)
    else:
        lo, hi = st.t.interval(level, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, float(lo), float(hi))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjustment of `pvalues`, in their order; NaN (no test) stays
    NaN and does not count among the m tests. Written out because scipy has only
    Benjamini-Hochberg (stats.false_discovery_control) and statsmodels is not a core
    dependency: with the m p-values sorted, p_(1) <= ... <= p_(m), the adjusted
    p_(i) = max over j <= i of min(1, (m - j + 1) p_(j))."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def rank_test(xa: Any, xb: Any) -> tuple[float, float]:
    """Mann-Whitney U, two-sided: (p, P(a > b) - 1/2). Exact by permutation where that is small
    enough (scipy's normal approximation, with ties, gives p below the smallest the test can
    give)."""
    from scipy import stats as st

    n = (len(xa), len(xb))
    exact = math.comb(n[0] + n[1], n[0]) <= 100_000
    method: Any = st.PermutationMethod(n_resamples=math.inf) if exact else "auto"
    u = st.mannwhitneyu(xa, xb, alternative="two-sided", method=method)
    return float(u.pvalue), float(u.statistic) / (n[0] * n[1]) - 0.5
