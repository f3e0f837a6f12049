"""Reading finished runs back: per-sweep summaries and paper-style comparison tables.

Two entry points:

* `summary_table` / `SweepSummary`: one Markdown row per run, written to `summary.md` at the end
  of a Hydra multirun.
* `grubench-report DIR...` (`main`): every results.json below the given directories, pivoted
  into one table of one or more metrics (a block of columns per metric). Rows and columns are
  keyed by flat result keys (model, task, hidden, depth, seq_len, train_size, params) or
  dotted config keys (trainer.lr, ...). LaTeX is a `table` float with a caption and a label.

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
* Each cell also has a confidence interval of its mean (`--ci LEVEL` shows it; Student-t, or
  `--ci-method bootstrap`); the CSV always carries ci_low, ci_high.
* The best cell of each row of a metric (two or more cells with values) is bold only where it
  beats the runner-up at `--alpha` (Welch's t-test, or `--test mwu`, `--paired`; p-values
  Holm-corrected across all the table's tests); a note names the rows with no significant
  winner. Lower is better for losses, MSE, times, bytes, compile time and parameter counts;
  higher for accuracies and tokens/s; a metric of neither kind gets no bold.
* `--compare KEY` (a column key) adds, per row, each pair of KEY's columns: the difference of
  means with its interval, p and Holm-adjusted p (a second table; CSV columns), and with rows
  over two or more tasks a summary of wins, ties and losses and the mean normalised score.
* `--paper NAME` adds the published number (grubench/papers.json) beside each cell whose task,
  model, metric and seq_len the paper reports, and prints the citation under the table.
* Bad input (no results.json, an unreadable directory or file, an unknown key, metric or paper)
  ends with one line `grubench-report: error: ...` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grubench.errors import GrubenchError, ReportError
from grubench.render import RENDERERS, render_latex, render_markdown, summary_table
from grubench.results import atomic_write_text
from grubench.runs import (
    available_metrics,
    canonical_key,
    check_keys,
    check_metric,
    key_value,
    load_paper,
    load_papers,
    read_runs,
    varying_keys,
)
from grubench.selection import BY, TUNED, budget_note, default_select, select_best
from grubench.stats import MultiTable, StatsOptions, build_tables, has_values

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; keep report importable alone
    Callback = object  # type: ignore[misc,assignment]


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, print the sweep's runs side by side and write
    them to summary.md in the sweep directory; write report.md, the default comparison table
    (`default_table`); and with `logger=wandb`, log the table and the plots to W&B in the
    sweep's group."""

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
            from grubench.tracking import log_sweep, sweep_name

            plots = write_plots(runs, sweep_dir / "plots")
            log_sweep(logger, sweep_name(logger.group, sweep_dir), sweep_dir, runs, plots.files)


# The metrics of a sweep's report.md, each where some run holds it.
DEFAULT_METRICS = ("test_loss", "test_accuracy", "test_bpc", "test_perplexity")


def default_table(runs: list[dict[str, Any]]) -> MultiTable:
    """A sweep's report.md: test_loss (and test_accuracy, bpc, perplexity where the runs have
    them) by task, seq_len and every other key that varies within them (seeds aside) x model,
    so no cell pools runs of different configs. A key that is constant in every cell (e.g.
    hidden sizes matched to each model) pools nothing and is left to summary.md. Where the
    runs are populations over learning rates, each cell's rate is chosen on validation
    (best_val_loss) and scored on test, never averaged over rates."""
    grid = {k for r in runs for m in r.get("members") or [] for k in m["values"]}
    select = TUNED in grid
    rows = ["task", "seq_len"]
    shown = {"task", "seq_len", "model"} | ({TUNED} if select else set())
    for key in varying_keys(runs):
        if canonical_key(key) in shown:
            continue
        cells: dict[tuple, set] = {}
        for r in runs:
            cell = tuple(key_value(r, k) for k in [*rows, "model"])
            cells.setdefault(cell, set()).add(key_value(r, key))
        if any(len(values) > 1 for values in cells.values()):
            rows.append(key)
    note = None
    if select:
        runs, note = select_best(runs, [*rows, "model"], TUNED, BY)
    metrics = [m for m in DEFAULT_METRICS if has_values(runs, m)] or ["test_loss"]
    table = build_tables(runs, rows, ["model"], metrics, None)
    if note:
        table.notes.append(note)
    return table


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are a ReportError (one line), not a usage block."""

    def error(self, message: str):
        raise ReportError(message)


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="grubench-report",
        description="Tables (and plots) comparing runs: every results.json below DIR..., "
        "one or more metrics pivoted over rows x cols, mean ± std over seeds per cell.",
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
        help="comma-separated metrics, a block of columns each: metrics keys (test_loss, "
        "val_accuracy, gap, ...), speed.KEY, memory.KEY, params or wall_s (default: test_loss)",
    )
    p.add_argument("--format", default="markdown", choices=sorted(RENDERERS))
    p.add_argument(
        "--caption",
        metavar="TEXT",
        help="LaTeX: the \\caption, LaTeX used as given (default: the metrics, mean ± std "
        "over what, n where every cell has the same)",
    )
    p.add_argument(
        "--label", metavar="KEY", help="LaTeX: the \\label (default: tab:grubench-METRIC)"
    )
    p.add_argument(
        "--latex-siunitx",
        action="store_true",
        help="LaTeX: numbers in siunitx S columns, aligned on the decimal marker",
    )
    p.add_argument("--out", metavar="FILE", help="write the table here (default: stdout)")
    p.add_argument(
        "--plots", metavar="DIR", help="also write the figures into DIR as PDF, PNG and SVG"
    )
    p.add_argument(  # the choices are grubench.plots.FIGSIZES and X_AXES (not imported here:
        # matplotlib loads only when plots are asked for)
        "--figsize",
        choices=["column", "page"],
        help="--plots width: one column (3.3 in) or the page (6.9 in); text >= 7 pt "
        "(default: page)",
    )
    p.add_argument(
        "--x",
        choices=["steps", "seconds"],
        help="the learning curves' x axis: training step, or seconds spent in training "
        "steps (default: steps)",
    )
    p.add_argument(
        "--select",
        metavar="KEY",
        help="model selection: per cell keep only the runs with the best value of KEY, "
        "judged by --by (default: trainer.lr wherever the runs differ in it and it is not a "
        "row or column; 'none' pools every run of a cell)",
    )
    p.add_argument(
        "--by",
        metavar="METRIC",
        default=BY,
        help=f"the metric --select judges by (default: {BY})",
    )
    p.add_argument(
        "--budget",
        action="store_true",
        help="say under the table what each cell was given: the values it was tuned over, "
        "its seeds and its steps, and whether every cell got the same",
    )
    p.add_argument(
        "--ci",
        metavar="LEVEL",
        type=float,
        nargs="?",
        const=95.0,
        help="show each cell's confidence interval [lo, hi] of the mean, at LEVEL percent "
        "(default 95; intervals are computed at this level for the CSV and the comparisons "
        "either way)",
    )
    p.add_argument(
        "--ci-method",
        choices=["t", "bootstrap"],
        default="t",
        help="intervals of means and differences: Student-t (Welch-Satterthwaite for a "
        "difference) or scipy's bootstrap (BCa, fixed seed) (default: t)",
    )
    p.add_argument(
        "--compare",
        metavar="KEY",
        help="a column key (e.g. model): per row, each pair of its columns' difference with "
        "its interval and p-value, under the table; across tasks, wins/ties/losses",
    )
    p.add_argument(
        "--test",
        choices=["welch", "mwu"],
        default="welch",
        help="the test of comparisons and of bold: Welch's t-test or Mann-Whitney U "
        "(default: welch); p-values Holm-corrected across the table",
    )
    p.add_argument(
        "--paired",
        action="store_true",
        help="pair values by seed (both cells must hold the same seeds and data): paired "
        "t-test, or Wilcoxon signed-rank with --test mwu",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="significance level for bold and wins (default: 0.05)",
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


def _latex_options(args: argparse.Namespace) -> dict[str, Any]:
    """render_latex's options, {} for another format; ReportError for a LaTeX-only option
    given with another format, or a label LaTeX cannot take."""
    given = [
        name
        for name, value in (
            ("--caption", args.caption),
            ("--label", args.label),
            ("--latex-siunitx", args.latex_siunitx),
        )
        if value
    ]
    if args.format != "latex":
        if given:
            raise ReportError(f"{given[0]} applies to --format latex only")
        return {}
    if args.label is not None and not re.fullmatch(r"[A-Za-z0-9:._/+-]+", args.label):
        raise ReportError(
            f"--label {args.label!r}: use letters, digits and : . _ / + - (no spaces)"
        )
    return {"caption": args.caption, "label": args.label, "siunitx": args.latex_siunitx}


def main(argv: Sequence[str] | None = None) -> int:
    """grubench-report: 0 on success, 2 (one line on stderr) on bad input."""
    try:
        return _main(argv)
    except BrokenPipeError:  # the reader (head, less) closed the pipe: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as Python's docs do
        return 0


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.ci is not None and 0 < args.ci <= 1:  # 0.95 meant as a fraction
            raise ReportError(f"--ci {args.ci:g}: give the level in percent, e.g. --ci 95")
        StatsOptions(  # bad --ci / --alpha: said before any file is read
            level=(95.0 if args.ci is None else args.ci) / 100, alpha=args.alpha
        )
        paper = load_paper(args.paper) if args.paper else None
        runs = read_runs(args.dirs)
        check_keys(runs, _keys(args.rows), "--rows")
        check_keys(runs, _keys(args.cols), "--cols")
        cells = _keys(args.rows) + _keys(args.cols)
        select = default_select(runs, cells) if args.select is None else args.select
        if args.by != BY:  # asked for: it must exist, and be chosen on, never test
            check_metric(runs, args.by)
        if args.by.startswith("test"):
            raise ReportError(
                f"--by {args.by}: choose on validation (best_val_loss, val_*), never on test"
            )
        unselected = None
        if select and args.select is None and args.by not in available_metrics(runs):
            unselected = (
                f"not selected: the runs differ in {select} but record no {args.by} to choose "
                "by, so each cell pools them (--select none says so without this note)."
            )
            select = None
        if select == "none":
            select = None
        elif select:
            check_keys(runs, [select], "--select")
            check_metric(runs, args.by)
        budget = budget_note(runs, cells, select) if args.budget else None
        selected = None
        if select:
            runs, selected = select_best(runs, cells, select, args.by)
            if args.select is None:
                selected = selected.replace(
                    "selected:",
                    f"selected (the default where runs differ in {select}; --select none "
                    "pools them):",
                    1,
                )
        latex = _latex_options(args)
        for name, value in (("--figsize", args.figsize), ("--x", args.x)):
            if value and not args.plots:
                raise ReportError(f"{name} applies to --plots only")
        options = StatsOptions(
            level=(95.0 if args.ci is None else args.ci) / 100,
            ci_method=args.ci_method,
            compare=args.compare,
            test=args.test,
            paired=args.paired,
            alpha=args.alpha,
            show_ci=args.ci is not None,
        )
        table = build_tables(
            runs, _keys(args.rows), _keys(args.cols), _keys(args.metric), paper, options
        )
        table.notes += [note for note in (budget, selected, unselected) if note]
        text = render_latex(table, **latex) if latex else RENDERERS[args.format](table)
        if args.out:
            try:
                atomic_write_text(args.out, text + "\n")
            except OSError as e:
                raise ReportError(f"{args.out}: cannot write ({e.strerror})") from None
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print(text)
        if args.format == "csv":  # the notes have no place in the CSV itself
            for note in table.all_notes():
                print(note, file=sys.stderr)
        if args.plots:
            from grubench.plots import write_plots

            result = write_plots(
                runs, args.plots, figsize=args.figsize or "page", x=args.x or "steps"
            )
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
