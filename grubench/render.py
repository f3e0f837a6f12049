"""Text for people: the one mean ± std formatter, run summaries, and the table renderers
(Markdown, LaTeX, CSV)."""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from grubench.runs import direction, grid_points, is_run_level, key_value, show, varying_keys
from grubench.stats import Cell, MultiTable, Table, as_multi


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


def _counts(cell: Cell, with_n: bool = True) -> str:
    """ "(n=3, 1 diverged)": n unless `with_n` is False (a caption states it), then the values
    left out; "" when there is nothing to say."""
    parts = [f"n={cell.n}"] if with_n else []
    parts += [
        f"{k} {name}"
        for name, k in (
            ("diverged", cell.diverged),
            ("failed", cell.failed),
            ("missing", cell.missing),
        )
        if k
    ]
    return f"({', '.join(parts)})" if parts else ""


# A data column of a rendered table: the metric's Table, the column's key values, and whether
# it is the paper's column beside ours.
_Column = tuple[Table, tuple, bool]


def _columns(multi: MultiTable) -> list[_Column]:
    """The data columns: each metric a block of the columns' values (and paper columns)."""
    out: list[_Column] = []
    for t in multi.tables:
        for col in multi.cols:
            out.append((t, col, False))
            if col in t.paper_cols:
                out.append((t, col, True))
    return out


def _label(multi: MultiTable, column: _Column, with_metric: bool) -> str:
    """A column's header: "gru", "gru (paper)"; "test_loss gru" where several metrics share
    one header row (`with_metric`)."""
    t, col, is_paper = column
    label = t.col_label(col)
    if with_metric and len(multi.tables) > 1:
        label = f"{t.metric} {label}"
    return label + (" (paper)" if is_paper else "")


def _paper_text(cell: Cell | None) -> str:
    return "—" if cell is None or cell.paper is None else f"{cell.paper:g}"


def render_markdown(table: Table | MultiTable) -> str:
    """A padded Markdown table, then the notes as paragraphs. Several metrics: a block of
    columns per metric, headed "METRIC COLUMN"."""
    multi = as_multi(table)
    columns = _columns(multi)
    grid = [[*multi.row_keys, *(_label(multi, c, True) for c in columns)]]
    for row in multi.rows:
        line = [show(v) for v in row]
        for t, col, is_paper in columns:
            cell = t.cells.get((row, col))
            if is_paper:
                line.append(_paper_text(cell))
            elif cell is None:
                line.append("—")
            else:
                body = format_mean_std(cell.mean, cell.std)
                line.append(f"{f'**{body}**' if cell.best else body} {_counts(cell)}")
        grid.append([c.replace("|", r"\|") for c in line])
    return "\n\n".join([_markdown_grid(grid), *multi.all_notes()])


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


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def table_caption(table: Table | MultiTable) -> str:
    """The caption of a table (plain text): the metrics, mean ± std over what, n when it is the
    same in every cell of a metric, and which way is better."""
    multi = as_multi(table)
    groups: dict[tuple[str, int | None], list[str]] = {}
    for t in multi.tables:
        unit = "runs (each measured once)" if is_run_level(t.metric) else "seeds"
        groups.setdefault((unit, t.uniform_n()), []).append(t.metric)
    text = "; ".join(
        f"{_and(names)}: mean ± std (ddof=1) over {unit}, "
        + (f"n = {n} per cell" if n is not None else "n in each cell")
        for (unit, n), names in groups.items()
    )
    ways = {way: [m for m in multi.metrics if direction(m) == way] for way in ("lower", "higher")}
    if len(multi.tables) == 1 and (way := direction(multi.metrics[0])):
        text += f"; {way} is better, best of each row in bold"
    elif any(ways.values()):
        text += (
            "; best of each row in bold ("
            + "; ".join(
                f"{way} is better for {_and(names)}" for way, names in ways.items() if names
            )
            + ")"
        )
    return text + "."


def table_label(table: Table | MultiTable) -> str:
    """The default \\label: tab:grubench-METRIC[-METRIC...], in characters safe in a key."""
    key = "-".join(as_multi(table).metrics)
    return "tab:grubench-" + re.sub(r"[^A-Za-z0-9:.]+", "-", key).strip("-")


_NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")


def _siunitx_value(mean: float, std: float) -> tuple[str, str | None, int] | None:
    """`format_mean_std`'s digits as siunitx reads them: (the mean's mantissa, the std in the
    mantissa's units or None, the exponent); None when the text is not a number."""
    m_text, _, s_text = format_mean_std(mean, std).partition(" ± ")
    if not _NUMBER.fullmatch(m_text) or (s_text and not _NUMBER.fullmatch(s_text)):
        return None
    mantissa, _, exp_text = m_text.partition("e")
    exp = int(exp_text) if exp_text else 0
    unc = format(Decimal(s_text).scaleb(-exp), "f") if s_text else None
    return mantissa, unc, exp


def _siunitx_format(numbers: list[tuple[str, int]]) -> str:
    """The `table-format` that holds every (mantissa, exponent) of a column: sign, integer and
    decimal digits, exponent digits."""
    if not numbers:
        return "1.0"
    ints = decs = exp = 0
    sign = any(m.startswith("-") for m, _ in numbers)
    for mantissa, e in numbers:
        whole, _, frac = mantissa.lstrip("-").partition(".")
        ints, decs = max(ints, len(whole)), max(decs, len(frac))
        exp = max(exp, len(str(abs(e))) if e else 0)
    return f"{'+' if sign else ''}{ints}.{decs}" + (f"e-{exp}" if exp else "")


def _latex_cell(cell: Cell, with_n: bool, siunitx: bool) -> tuple[str, str, str]:
    """(the mean, the std, the counts) of one of our cells, as LaTeX; without siunitx the
    first holds `mean ± std` and the second is empty."""
    counts = latex_escape(_counts(cell, with_n))
    bold = (lambda x: rf"\bfseries {x}") if cell.best else (lambda x: x)
    if siunitx:
        value = _siunitx_value(cell.mean, cell.std)
        if value is None:  # n/a: text, which an S column must not parse
            return "{" + latex_escape(format_mean_std(cell.mean, cell.std)) + "}", "", counts
        mantissa, unc, exp = value
        power = f"e{exp}" if exp else ""
        return bold(mantissa + power), bold(unc + power) if unc is not None else "", counts
    body = latex_escape(format_mean_std(cell.mean, cell.std))
    return (rf"\textbf{{{body}}}" if cell.best else body), "", counts


def render_latex(
    table: Table | MultiTable,
    caption: str | None = None,
    label: str | None = None,
    siunitx: bool = False,
) -> str:
    """A `table` float: a booktabs tabular (several metrics: a header row of metrics over their
    blocks of columns), the notes in small print, `\\caption` and `\\label` (default
    `table_label`). `table_caption` is the caption, or, when `caption` (LaTeX, used as given)
    replaces it, the first note: it states n where a metric's n is the same in every cell,
    and those cells omit it. `siunitx`: our means and stds in siunitx S columns of their own
    with ± between, aligned on the decimal marker (bold by \\bfseries), the counts in a text
    column beside them; the fragment needs booktabs (and siunitx)."""
    multi = as_multi(table)
    columns = _columns(multi)
    with_n = {t.metric: t.uniform_n() is None for t in multi.tables}
    body: list[list[str]] = [[latex_escape(show(v)) for v in row] for row in multi.rows]
    spec = ["l"] * len(multi.row_keys)
    width: list[int] = []  # physical columns of each data column
    for t, col, is_paper in columns:
        cells = [t.cells.get((row, col)) for row in multi.rows]
        if is_paper:
            texts = [_paper_text(c) for c in cells]
            if siunitx:
                texts = ["---" if x == "—" else rf"\num{{{x}}}" for x in texts]
            spec.append("c" if siunitx else "r")
            width.append(1)
            for line, x in zip(body, texts, strict=True):
                line.append(latex_escape(x) if not siunitx else x)
            continue
        parts = [
            ("{---}" if siunitx else "---", "", "")
            if c is None
            else _latex_cell(c, with_n[t.metric], siunitx)
            for c in cells
        ]
        if siunitx:
            # Mean and std in S columns of their own, "±" between them: aligned on the
            # decimal marker (siunitx's own separate uncertainty spaces the ± unevenly).
            values = [v for c in cells if c is not None and (v := _siunitx_value(c.mean, c.std))]
            groups = [[(m, e) for m, _, e in values]]
            stds = [(u, e) for _, u, e in values if u is not None]
            if stds:
                groups.append(stds)
            spec.append(
                r"@{${}\pm{}$}".join(f"S[table-format={_siunitx_format(g)}]" for g in groups)
            )
            counted = any(counts for _, _, counts in parts)
            if counted:
                spec.append(r"@{\,}l")
            width.append(len(groups) + counted)
            for line, (num, std, counts) in zip(body, parts, strict=True):
                line += [num, *([std] if stds else []), *([counts] if counted else [])]
        else:
            spec.append("r")
            width.append(1)
            for line, (num, _, counts) in zip(body, parts, strict=True):
                line.append(f"{num} {counts}" if counts else num)

    def head(text: str, w: int, s_column: bool) -> str:
        if w > 1:
            return rf"\multicolumn{{{w}}}{{c}}{{{text}}}"
        return "{" + text + "}" if s_column else text

    lines = [r"\toprule"]
    if len(multi.tables) > 1:  # the metrics over their blocks of columns
        top, rules, at = [""] * len(multi.row_keys), [], len(multi.row_keys) + 1
        for t in multi.tables:
            w = sum(w for (tt, _, _), w in zip(columns, width, strict=True) if tt is t)
            top.append(rf"\multicolumn{{{w}}}{{c}}{{{latex_escape(t.metric)}}}")
            rules.append(rf"\cmidrule(lr){{{at}-{at + w - 1}}}")
            at += w
        lines += [" & ".join(top) + r" \\", " ".join(rules)]
    names = [latex_escape(k) for k in multi.row_keys]
    for column, w in zip(columns, width, strict=True):
        text = latex_escape(_label(multi, column, False))
        names.append(head(text, w, siunitx and not column[2]))
    lines += [" & ".join(names) + r" \\", r"\midrule"]
    lines += [" & ".join(line) + r" \\" for line in body]
    lines += [r"\bottomrule", r"\end{tabular}"]

    # A caption of the user's own: ours (n, mean ± std over what) opens the notes instead.
    notes = multi.notes if caption is None else [table_caption(multi), *multi.notes]
    out = [r"% needs \usepackage{booktabs}" + (r" and \usepackage{siunitx}" if siunitx else "")]
    out += [r"\begin{table}[t]", r"\centering"]
    if siunitx:  # bold (\bfseries) is seen with detect-weight; math mode keeps Type 1 fonts
        out.append(r"\sisetup{detect-weight, group-digits=none}")
    out += [rf"\begin{{tabular}}{{{''.join(spec)}}}", *lines]
    if notes:
        out += [r"\par\smallskip", r"{\footnotesize\raggedright"]
        out += [latex_escape(n) + r"\par" for n in notes]
        out.append("}")
    out += [
        rf"\caption{{{latex_escape(table_caption(multi)) if caption is None else caption}}}",
        rf"\label{{{label or table_label(multi)}}}",
        r"\end{table}",
    ]
    return "\n".join(out)


def _csv_number(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def render_csv(table: Table | MultiTable) -> str:
    """One line per row: the row keys, then per column mean, std, n, diverged, failed, missing
    (and the paper's value where --paper gives one); full precision, empty where none. Several
    metrics: a group of columns per metric, each named "METRIC COLUMN mean" and so on."""
    multi = as_multi(table)
    head = [*multi.row_keys]
    for t in multi.tables:
        for col in multi.cols:
            label = _label(multi, (t, col, False), True)
            head += [f"{label} {s}" for s in ("mean", "std", "n", "diverged", "failed", "missing")]
            if col in t.paper_cols:
                head.append(f"{label} paper")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for row in multi.rows:
        line = ["" if v is None else show(v) for v in row]
        for t in multi.tables:
            for col in multi.cols:
                c = t.cells.get((row, col))
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
                if col in t.paper_cols:
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
    was (every key that varies among the runs has a column, so no two rows of different
    configs look alike), its test numbers (mean ± std over seeds), speed."""
    grid = any((r.get("members") or [{}])[0].get("values") for r in runs)
    fixed = ("model", "task", "seq_len", "hidden", "depth")
    grid_keys = {k for r in runs for m in r.get("members") or [] for k in m.get("values") or {}}
    more = [k for k in varying_keys(runs) if k not in fixed and k not in grid_keys]
    head = [
        *(["grid"] if grid else []),
        *fixed,
        *more,
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
                *(show(key_value(r, k)) for k in more),
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
