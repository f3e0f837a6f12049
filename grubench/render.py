"""Text for people: the one mean ± std formatter, run summaries, and the table renderers
(Markdown, LaTeX, CSV)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping
from typing import Any

from grubench.runs import grid_points, show
from grubench.stats import Cell, Table


def mean_std_of(values: list[Any]) -> str:
    """`format_mean_std` of the finite values (sample std, ddof=1); "n/a" when there are none."""
    xs = [x for x in values if x is not None and math.isfinite(x)]
    if not xs:
        return "n/a"
    std = statistics.stdev(xs) if len(xs) > 1 else math.nan
    return format_mean_std(statistics.fmean(xs), std)


def format_mean_std(mean: float, std: float) -> str:
    """`mean ± std` to three significant digits of the mean, std to the same decimals;
    scientific notation below 1e-3; just the mean when std is NaN (one value)."""
    if not math.isfinite(mean):
        return "n/a"
    scale = abs(mean) if mean != 0 else abs(std) if math.isfinite(std) else 0.0
    if 0 < scale < 1e-3:
        body = f"{mean:.2e}"
        return body if not math.isfinite(std) else f"{body} ± {std:.1e}"
    decimals = 0 if scale == 0 else max(0, 2 - math.floor(math.log10(scale)))
    body = f"{mean:.{decimals}f}"
    return body if not math.isfinite(std) else f"{body} ± {std:.{decimals}f}"


def _counts(cell: Cell) -> str:
    parts = [f"n={cell.n}"] + [
        f"{k} {name}"
        for name, k in (
            ("diverged", cell.diverged),
            ("failed", cell.failed),
            ("missing", cell.missing),
        )
        if k
    ]
    return f"({', '.join(parts)})"


def _layout(table: Table) -> tuple[list[str], list[tuple[tuple, bool]]]:
    """The header and, for each data column, (col, is_paper_column)."""
    head = [*table.row_keys]
    columns: list[tuple[tuple, bool]] = []
    for col in table.cols:
        head.append(table.col_label(col))
        columns.append((col, False))
        if col in table.paper_cols:
            head.append(f"{table.col_label(col)} (paper)")
            columns.append((col, True))
    return head, columns


def _paper_text(cell: Cell | None) -> str:
    return "—" if cell is None or cell.paper is None else f"{cell.paper:g}"


def render_markdown(table: Table) -> str:
    """A padded Markdown table, then the notes as paragraphs."""
    head, columns = _layout(table)
    grid = [head]
    for row in table.rows:
        line = table.row_label(row)
        for col, is_paper in columns:
            cell = table.cells.get((row, col))
            if is_paper:
                line.append(_paper_text(cell))
            elif cell is None:
                line.append("—")
            else:
                body = format_mean_std(cell.mean, cell.std)
                line.append(f"{f'**{body}**' if cell.best else body} {_counts(cell)}")
        grid.append([c.replace("|", r"\|") for c in line])
    return "\n\n".join([_markdown_grid(grid), *table.notes])


def latex_escape(text: str) -> str:
    """Text safe in LaTeX: special characters escaped, ± and — as math and dashes."""
    out = []
    for ch in text:
        out.append(
            {
                "\\": r"\textbackslash{}",
                "&": r"\&",
                "%": r"\%",
                "$": r"\$",
                "#": r"\#",
                "_": r"\_",
                "{": r"\{",
                "}": r"\}",
                "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}",
                "±": r"$\pm$",
                "—": "---",
                "–": "--",
                "≥": r"$\geq$",
                "×": r"$\times$",
            }.get(ch, ch)
        )
    return "".join(out)


def render_latex(table: Table) -> str:
    """A booktabs tabular, then the notes in small print."""
    head, columns = _layout(table)
    spec = "l" * len(table.row_keys) + "r" * len(columns)
    lines = [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in head) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        line = [latex_escape(v) for v in table.row_label(row)]
        for col, is_paper in columns:
            cell = table.cells.get((row, col))
            if is_paper:
                line.append(latex_escape(_paper_text(cell)))
            elif cell is None:
                line.append("---")
            else:
                body = latex_escape(format_mean_std(cell.mean, cell.std))
                body = rf"\textbf{{{body}}}" if cell.best else body
                line.append(f"{body} {latex_escape(_counts(cell))}")
        lines.append(" & ".join(line) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = [latex_escape(n) + r"\par" for n in table.notes]
    return "\n".join(lines + ["", r"\smallskip", r"{\footnotesize", *notes, "}"])


def _csv_number(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def render_csv(table: Table) -> str:
    """One line per row: the row keys, then per column mean, std, n, diverged, failed, missing
    (and the paper's value where --paper gives one); full precision, empty where none."""
    head = [*table.row_keys]
    for col in table.cols:
        label = table.col_label(col)
        head += [f"{label} {s}" for s in ("mean", "std", "n", "diverged", "failed", "missing")]
        if col in table.paper_cols:
            head.append(f"{label} paper")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for row in table.rows:
        line = ["" if v is None else show(v) for v in row]
        for col in table.cols:
            c = table.cells.get((row, col))
            if c is None:
                line += ["", "", "0", "0", "0", "0"]
            else:
                line += [
                    _csv_number(c.mean),
                    _csv_number(c.std),
                    str(c.n),
                    str(c.diverged),
                    str(c.failed),
                    str(c.missing),
                ]
            if col in table.paper_cols:
                line.append(_csv_number(c.paper if c else None))
        writer.writerow(line)
    return buf.getvalue().rstrip("\n")


def _markdown_grid(cells: list[list[str]]) -> str:
    """A padded Markdown table: the first row is the header."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(cells[0]), sep, *map(fmt, cells[1:])])


def summary_table(runs: list[dict[str, Any]]) -> str:
    """One Markdown row per run (per grid point of a population, with its values): what it
    was, its test numbers (mean ± std over seeds), speed."""
    grid = any((r.get("members") or [{}])[0].get("values") for r in runs)
    head = [
        *(["grid"] if grid else []),
        "model",
        "task",
        "seq_len",
        "hidden",
        "depth",
        "params",
        "seeds",
        "status",
        "test_loss",
        "baseline",
        "test_accuracy",
        "step_ms",
    ]
    rows = []
    for r in runs:
        m, sp = r.get("metrics", {}), r.get("speed", {})
        base = r.get("baselines", {}).get("loss")
        values = (r.get("members") or [{}])[0].get("values") or {}
        rows.append(
            [
                *([" ".join(f"{k}={v:g}" for k, v in values.items())] if grid else []),
                r.get("model"),
                r.get("task"),
                r.get("seq_len"),
                r.get("hidden"),
                r.get("depth"),
                r.get("params"),
                len(r.get("seeds", [])),
                r.get("status"),
                mean_std_of(m.get("test_loss", [])),
                "n/a" if base is None else format_mean_std(base, math.nan),
                mean_std_of(m.get("test_accuracy", [])),
                f"{sp['step_time_ms']:.2f}" if "step_time_ms" in sp else "n/a",
            ]
        )
    return _markdown_grid([head] + [[str(c) for c in row] for row in rows])


def format_summary(results: Mapping[str, Any]) -> str:
    """A few lines a person reads at the end of a run: with a grid, one per grid point."""
    base = results["baselines"]["loss"]
    base_text = "n/a" if base is None else format_mean_std(base, math.nan)
    sp = results["speed"]
    points = grid_points(dict(results))
    seeds = list(dict.fromkeys(results["seeds"]))
    size = f", {len(results['seeds'])} members" if len(points) > 1 else ""
    lines = [
        f"{results['model']} on {results['task']} (seq_len={results['seq_len']}, "
        f"hidden={results['hidden']}, depth={results['depth']}, params={results['params']}, "
        f"seeds={seeds}{size}): {results['status']}",
    ]
    for point in points:
        m = point["metrics"]
        ms = lambda k, m=m: mean_std_of(m.get(k, []))
        values = (point.get("members") or [{}])[0].get("values") or {}
        where = "  ".join(f"{k}={v:g}" for k, v in values.items())
        lines.append(
            f"  {where + ': ' if where else ''}test_loss {ms('test_loss')}  (baseline "
            f"{base_text})  test_accuracy {ms('test_accuracy')}  gap {ms('gap')}"
        )
    if sp:
        lines.append(
            f"  step {sp['step_time_ms']:.2f} ms  compile {sp['compile_s']:.1f} s  "
            f"{sp['tokens_per_s']:.0f} tokens/s  wall {results['wall_s']:.0f} s"
        )
        if sp.get("stream_step_ms") is not None:
            lines.append(
                f"  streaming step (batch 1) {1e3 * sp['stream_step_ms']:.0f} us  "
                f"params {results['memory'].get('param_bytes', 0) / 1e3:.1f} kB"
            )
    if results.get("error"):
        lines.append(f"  {results['error']}")
    return "\n".join(lines)


RENDERERS = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}
