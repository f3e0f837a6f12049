"""Reading finished runs back: per-sweep summaries and paper-style comparison tables.

Two entry points:

* `summary_table` / `SweepSummary`: one Markdown row per run, written to `summary.md` at the end
  of a Hydra multirun.
* `grubench-report DIR...` (`main`): every results.json below the given directories, pivoted
  into one table of a single metric. Rows and columns are keyed by flat result keys (model,
  task, hidden, depth, seq_len, train_size, params) or dotted config keys (trainer.lr, ...).

The table's contract:

* A cell pools every run whose row and column keys match; runs that differ only in seed are
  pooled as more seeds. If the pooled runs differ in anything else, a note under the table says
  which keys, so nothing is averaged over unknowingly.
* A cell shows mean ± sample std (ddof=1) over the pooled values and `n`, the number of values.
  Per-seed metrics (`metrics.*`) pool seeds; per-run quantities (speed.*, memory.*, params,
  wall_s) pool runs, one value each, and say so under the table.
* Diverged seeds and failed runs never enter a mean and are never dropped silently: the cell
  counts them beside n (n + diverged + failed + missing = every seed the cell's runs tried) and a
  note under the table names each such run.
* The best cell of each row (two or more cells with values) is bold: lower is better for losses,
  gaps, MSE, times, bytes, compile time and parameter counts; higher for accuracies and
  tokens/s; a metric of neither kind gets no bold.
* `--paper NAME` adds the published number (grubench/papers.json) beside each cell whose task,
  model, metric and seq_len the paper reports, and prints the citation under the table.
* Bad input (no results.json, an unreadable directory or file, an unknown key, metric or paper)
  ends with one line `grubench-report: error: ...` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grubench.errors import GrubenchError, ReportError
from grubench.render import RENDERERS, render_markdown, summary_table
from grubench.results import atomic_write_text
from grubench.runs import (
    available_metrics,
    check_keys,
    check_metric,
    load_paper,
    load_papers,
    read_runs,
)
from grubench.stats import Table, build_table, select_best

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; keep report importable alone
    Callback = object  # type: ignore[misc,assignment]


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, print the sweep's runs side by side and write
    them to summary.md in the sweep directory; write report.md, the default comparison table
    (test_loss by task, seq_len x model); and with `logger=wandb`, log the table and the plots
    to W&B in the sweep's group."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = read_runs([sweep_dir])
        except ReportError:
            return
        table = summary_table(runs)
        atomic_write_text(sweep_dir / "summary.md", table + "\n")
        print(f"\n{table}\n(written to {sweep_dir / 'summary.md'})", flush=True)
        if "test_loss" in available_metrics(runs):
            atomic_write_text(sweep_dir / "report.md", render_markdown(default_table(runs)) + "\n")
        logger = getattr(config, "logger", None)
        if logger is not None and logger.name == "wandb":
            from grubench.plots import write_plots
            from grubench.tracking import log_sweep

            plots = write_plots(runs, sweep_dir / "plots")
            log_sweep(logger, logger.group or sweep_dir.name, sweep_dir, runs, plots.files)


def default_table(runs: list[dict[str, Any]]) -> Table:
    """A sweep's report.md: test_loss by task, seq_len (and any grid key but the learning
    rate) x model; where the runs are populations over learning rates, each cell's rate is
    chosen on validation (best_val_loss) and scored on test, never averaged over rates."""
    grid = list(dict.fromkeys(k for r in runs for m in r.get("members") or [] for k in m["values"]))
    rows = ["task", "seq_len", *(k for k in grid if k != "trainer.lr")]
    note = None
    if "trainer.lr" in grid:
        runs, note = select_best(runs, [*rows, "model"], "trainer.lr", "best_val_loss")
    table = build_table(runs, rows, ["model"], "test_loss", None)
    if note:
        table.notes.append(note)
    return table


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise ReportError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="grubench-report",
        description="Tables (and plots) comparing runs: every results.json below DIR..., one "
        "metric pivoted over rows x cols, mean ± std over seeds per cell.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep or run directories")
    p.add_argument(
        "--rows",
        default="task,seq_len",
        help="comma-separated row keys: flat (model, task, hidden, depth, seq_len, "
        "train_size, params) or dotted config keys (default: task,seq_len)",
    )
    p.add_argument("--cols", default="model", help="column key(s) (default: model)")
    p.add_argument(
        "--metric",
        default="test_loss",
        help="a metrics key (test_loss, val_accuracy, gap, ...), speed.KEY, "
        "memory.KEY, params or wall_s (default: test_loss)",
    )
    p.add_argument("--format", default="markdown", choices=sorted(RENDERERS))
    p.add_argument("--out", metavar="FILE", help="write the table here (default: stdout)")
    p.add_argument("--plots", metavar="DIR", help="also write PNG and SVG plots into DIR")
    p.add_argument(
        "--select",
        metavar="KEY",
        help="model selection: per cell keep only the runs with the best value of "
        "KEY (e.g. trainer.lr), judged by --by",
    )
    p.add_argument(
        "--by",
        metavar="METRIC",
        default="best_val_loss",
        help="the metric --select judges by (default: best_val_loss)",
    )
    p.add_argument(
        "--paper",
        metavar="NAME",
        help="put a paper's published numbers beside ours (grubench/papers.json: "
        + ", ".join(sorted(_paper_names()))
        + ")",
    )
    return p


def _paper_names() -> list[str]:
    try:
        return list(load_papers())
    except (OSError, ValueError, KeyError):  # pragma: no cover - a broken install
        return []


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """grubench-report: 0 on success, 2 (one line on stderr) on bad input."""
    try:
        args = _parser().parse_args(argv)
        paper = load_paper(args.paper) if args.paper else None
        runs = read_runs(args.dirs)
        selected = None
        if args.select:
            check_keys(runs, [args.select], "--select")
            check_metric(runs, args.by)
            runs, selected = select_best(
                runs, _keys(args.rows) + _keys(args.cols), args.select, args.by
            )
        table = build_table(runs, _keys(args.rows), _keys(args.cols), args.metric, paper)
        if selected:
            table.notes.append(selected)
        text = RENDERERS[args.format](table)
        if args.out:
            try:
                atomic_write_text(args.out, text + "\n")
            except OSError as e:
                raise ReportError(f"{args.out}: cannot write ({e.strerror})") from None
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print(text)
        if args.format == "csv":  # the notes have no place in the CSV itself
            for note in table.notes:
                print(note, file=sys.stderr)
        if args.plots:
            from grubench.plots import write_plots

            result = write_plots(runs, args.plots)
            for line in result.skipped:
                print(f"plots: {line}", file=sys.stderr)
            for path in result.files:
                print(f"wrote {path}", file=sys.stderr)
    except GrubenchError as e:  # bad input, or a plugin task that fails to load
        print(f"grubench-report: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
