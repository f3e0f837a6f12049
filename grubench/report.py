"""Reading finished runs back: a side-by-side summary of every results.json under a sweep."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from grubench.results import read


def load_runs(*dirs: str | Path) -> list[dict[str, Any]]:
    """Every results.json below `dirs`, sorted by path (a sweep's job order)."""
    paths = sorted(p for d in dirs for p in Path(d).rglob("results.json"))
    return [read(p) | {"path": str(p.parent)} for p in paths]


def _mean_std(xs: list) -> str:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.4f}"
    return f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs):.4f}"


def summary_table(runs: list[dict[str, Any]]) -> str:
    """One Markdown row per run: what it was, its test numbers (mean ± std over seeds), speed."""
    head = ["model", "task", "seq_len", "hidden", "depth", "params", "seeds", "status",
            "test_loss", "baseline", "test_accuracy", "step_ms"]
    rows = []
    for r in runs:
        m, sp = r.get("metrics", {}), r.get("speed", {})
        base = r.get("baselines", {}).get("loss")
        rows.append([
            r.get("model"), r.get("task"), r.get("seq_len"), r.get("hidden"), r.get("depth"),
            r.get("params"), len(r.get("seeds", [])), r.get("status"),
            _mean_std(m.get("test_loss", [])), "n/a" if base is None else f"{base:.4f}",
            _mean_std(m.get("test_accuracy", [])),
            f"{sp['step_time_ms']:.2f}" if "step_time_ms" in sp else "n/a",
        ])
    cells = [head] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(cells[0]), sep, *map(fmt, cells[1:])])


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; keep report importable alone
    Callback = object  # type: ignore[misc,assignment]


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, print the sweep's runs side by side and write
    them to summary.md in the sweep directory."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from grubench.results import atomic_write_text

        sweep_dir = Path(config.hydra.sweep.dir)
        runs = load_runs(sweep_dir)
        if not runs:
            return
        table = summary_table(runs)
        atomic_write_text(sweep_dir / "summary.md", table + "\n")
        print(f"\n{table}\n(written to {sweep_dir / 'summary.md'})", flush=True)
