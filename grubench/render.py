"""Text for people: the one mean ± std formatter, run summaries, and the table renderers
(Markdown, LaTeX, CSV)."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from grubench.inference import moments
from grubench.runs import direction, grid_points, is_run_level, key_value, show, varying_keys
from grubench.stats import Cell, Comparison, MultiTable, Table, as_multi, bold_rule


def mean_std_of(values: list[Any]) -> str:
    """`format_mean_std` of the finite values (sample std, ddof=1); "n/a" when there are none."""
    _, mean, std = moments(values)
    return format_mean_std(mean, std)  # "n/a" without a mean


def _last_place(std: float) -> int:
    """The power of ten of the last of `std`'s two significant figures (after rounding:
    0.0996 is 0.10, last place -2)."""
    return int(f"{std:.1e}".split("e")[1]) - 1


def number_format(mean: float, std: float) -> Callable[[float], str]:
    """How `format_mean_std` writes the mean, for other numbers of its cell (the ends of its
    confidence interval): to the decimal place of the std's second significant figure, or
    three significant digits of the mean where there is no std (NaN, one value) or it is 0;
    scientific notation where the mean and the std are both under 1e-3 (a mean near zero
    beside a larger std is written in the std's decimals)."""
    spread = math.isfinite(std) and std > 0
    scale = max(abs(mean), std if spread else 0.0)
    if 0 < scale < 1e-3:
        exp = int(f"{scale:e}".split("e")[1])
        digits = max(0, exp - _last_place(std)) if spread else 2
        return lambda x: f"{x:.{digits}e}"
    if spread:
        last = _last_place(std)
        if last > 0:  # std >= 100: round to its tens, hundreds, ...
            return lambda x: f"{round(x, -last):.0f}"
        return lambda x: f"{x:.{-last}f}"
    decimals = 0 if scale == 0 else max(0, 2 - math.floor(math.log10(scale)))
    return lambda x: f"{x:.{decimals}f}"


def format_mean_std(mean: float, std: float) -> str:
    """`mean ± std`: the std to two significant figures and the mean to the same decimal
    place (0.349 ± 0.006 is "0.3490 ± 0.0060"), scientific notation for a mean under 1e-3
    ("5.30e-05 ± 1.2e-06"); a std of 0 as "± 0" beside three significant digits of the
    mean; just the mean when std is NaN (one value); "n/a" without a mean."""
    if not math.isfinite(mean):
        return "n/a"
    fmt = number_format(mean, std)
    if not math.isfinite(std):
        return fmt(mean)
    if std == 0:
        return f"{fmt(mean)} ± 0"
    sci = "e" in fmt(mean)
    std_text = f"{std:.1e}" if sci else fmt(std)
    return f"{fmt(mean)} ± {std_text}"


def format_interval(cell: Cell) -> str:
    """ "[lo, hi]", the cell's confidence interval to its mean's decimals; "" without one."""
    if not (math.isfinite(cell.ci_low) and math.isfinite(cell.ci_high)):
        return ""
    fmt = number_format(cell.mean, cell.std)
    return f"[{fmt(cell.ci_low)}, {fmt(cell.ci_high)}]"


def format_p(p: float) -> str:
    """A p-value to two significant figures (three between 0.01 and 0.1, where α usually
    lies: 0.0496 is not printed as 0.05), "<0.001" below that, "—" where untested."""
    if not math.isfinite(p):
        return "—"
    return "<0.001" if p < 1e-3 else f"{p:#.3g}" if 0.01 <= p < 0.1 else f"{p:#.2g}"


def format_difference(c: Comparison) -> str:
    """ "-0.012 [-0.030, 0.006]": the difference and its interval, to the decimal place of the
    second significant figure of the interval's half-width."""
    if not math.isfinite(c.diff):
        return "—"
    if not (math.isfinite(c.ci_low) and math.isfinite(c.ci_high)):
        return format_mean_std(c.diff, math.nan)
    fmt = number_format(c.diff, (c.ci_high - c.ci_low) / 2)
    return f"{fmt(c.diff)} [{fmt(c.ci_low)}, {fmt(c.ci_high)}]"


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


def _label(multi: MultiTable, column: _Column, with_metric: bool, sides: bool = True) -> str:
    """A column's header: "gru"; "gru (ours)" beside "gru (paper)" where a paper's column
    follows it (unless not `sides`); "test_loss gru" where several metrics share one header
    row (`with_metric`)."""
    t, col, is_paper = column
    label = t.col_label(col)
    if with_metric and len(multi.tables) > 1:
        label = f"{t.metric} {label}"
    if col not in t.paper_cols or not sides:
        return label
    return label + (" (paper)" if is_paper else " (ours)")


def _paper_text(cell: Cell | None) -> str:
    return "—" if cell is None or cell.paper is None else f"{cell.paper:g}"


def _cell_text(cell: Cell, show_ci: bool) -> str:
    """ "mean ± std" and, with `show_ci`, its "[lo, hi]"."""
    body = format_mean_std(cell.mean, cell.std)
    ci = format_interval(cell) if show_ci else ""
    return f"{body} {ci}" if ci else body


def render_markdown(table: Table | MultiTable) -> str:
    """A padded Markdown table; with --compare the comparisons under it, and across tasks
    their summary (`comparison_grid`, `cross_grid`); then the notes as paragraphs. Several
    metrics: a block of columns per metric, headed "METRIC COLUMN"."""
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
                body = _cell_text(cell, multi.options.show_ci)
                line.append(f"{f'**{body}**' if cell.best else body} {_counts(cell)}")
        grid.append(line)
    grids = [grid]
    if multi.comparisons:
        grids.append(comparison_grid(multi))
    if multi.cross:
        grids.append(cross_grid(multi))
    tables = [_markdown_grid([[c.replace("|", r"\|") for c in ln] for ln in g]) for g in grids]
    return "\n\n".join([*tables, *multi.all_notes()])


def comparison_grid(multi: MultiTable) -> list[list[str]]:
    """The comparisons as rows of text, the header first: the row keys, the metric (where
    there are several), the pair ("gru − lstm"), the difference with its interval, the n
    each side, p and p Holm-corrected."""
    several = len(multi.tables) > 1
    pct = f"{100 * multi.options.level:g}%"
    head = [*multi.row_keys, *(["metric"] if several else [])]
    head += ["comparison", f"difference [{pct} CI]", "n", "p", "p (Holm)"]
    out = [head]
    for c in multi.comparisons:
        out.append(
            [
                *(show(v) for v in c.row),
                *([c.metric] if several else []),
                multi.pair_label(c.a, c.b),
                format_difference(c),
                f"{c.n[0]}, {c.n[1]}",
                format_p(c.p_value),
                format_p(c.p_adjusted),
            ]
        )
    return out


def cross_grid(multi: MultiTable) -> list[list[str]]:
    """The cross-task summary as rows of text, the header first."""
    several = len(multi.tables) > 1
    head = [*(["metric"] if several else []), "comparison", "wins", "ties", "losses"]
    head += ["mean normalised score", "rows (tasks)"]
    out = [head]
    score = lambda x: "—" if not math.isfinite(x) else f"{x:.3f}"
    for r in multi.cross:
        out.append(
            [
                *([r.metric] if several else []),
                multi.pair_label(r.a, r.b, " vs "),
                str(r.wins),
                str(r.ties),
                str(r.losses),
                f"{score(r.score_a)} vs {score(r.score_b)}",
                f"{r.rows} ({r.tasks})",
            ]
        )
    return out


def latex_escape(text: str) -> str:
    """Text safe in LaTeX: special characters escaped, ± and — as math and dashes, and the
    sign of a negative number ("-0.12", "= -3") as a minus, not a hyphen."""
    out = []
    for i, ch in enumerate(text):
        if ch == "-" and i and text[i - 1] == "-":  # "--select" stays two hyphens, no en dash
            out.append("{}")
        before, after = text[i - 1] if i else " ", text[i + 1 : i + 2]
        if ch == "-" and before in " (=[," and after and after in "0123456789.":
            out.append(r"$-$")
            continue
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
                "−": r"$-$",
                "<": r"$<$",
                ">": r"$>$",
                "α": r"$\alpha$",
                "…": r"\ldots{}",
            }.get(ch, ch)
        )
    return "".join(out)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def table_caption(table: Table | MultiTable) -> str:
    """The caption of a table (plain text): the metrics, mean ± std over what, n when it is the
    same in every cell of a metric, which way is better and what bold means."""
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
    rule = bold_rule(multi.options)
    if len(multi.tables) == 1 and (way := direction(multi.metrics[0])):
        text += f"; {way} is better, {rule}"
    elif any(ways.values()):
        text += (
            f"; {rule} ("
            + "; ".join(
                f"{way} is better for {_and(names)}" for way, names in ways.items() if names
            )
            + ")"
        )
    if multi.options.show_ci:
        text += f"; [lo, hi]: the mean's {multi.options.ci_name()}"
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


def _latex_cell(
    cell: Cell, with_n: bool, siunitx: bool, show_ci: bool = False
) -> tuple[str, str, str]:
    """(the mean, the std, the counts) of one of our cells, as LaTeX; without siunitx the
    first holds `mean ± std` and the second is empty; with `show_ci` the counts begin with
    the interval "[lo, hi]"."""
    extra = " ".join(
        x for x in (format_interval(cell) if show_ci else "", _counts(cell, with_n)) if x
    )
    counts = latex_escape(extra)
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
            else _latex_cell(c, with_n[t.metric], siunitx, multi.options.show_ci)
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
    for grid in ([comparison_grid(multi)] if multi.comparisons else []) + (
        [cross_grid(multi)] if multi.cross else []
    ):
        out += [r"\par\medskip", *_latex_grid(grid)]
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


def _latex_grid(grid: list[list[str]]) -> list[str]:
    """A booktabs tabular of text cells (the header first): the text columns left-aligned,
    those of numbers right-aligned."""
    numeric = [
        all(re.match(r"^[-<\d.]|^—$", row[i]) for row in grid[1:]) for i in range(len(grid[0]))
    ]
    spec = "".join("r" if n else "l" for n in numeric)
    line = lambda row: " & ".join(latex_escape(c) for c in row) + r" \\"
    return [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        line(grid[0]),
        r"\midrule",
        *map(line, grid[1:]),
        r"\bottomrule",
        r"\end{tabular}",
    ]


def _csv_number(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


CSV_CELL = ("mean", "std", "ci_low", "ci_high", "n", "diverged", "failed", "missing")
CSV_COMPARISON = ("diff", "diff_ci_low", "diff_ci_high", "p_value", "p_adjusted")


def render_csv(table: Table | MultiTable) -> str:
    """One line per row: the row keys, then per column mean, std, ci_low, ci_high (the mean's
    confidence interval), n, diverged, failed, missing (and the paper's value where --paper
    gives one); with --compare, per pair of columns compared, "A - B" diff, diff_ci_low,
    diff_ci_high, p_value, p_adjusted (Holm). Full precision, empty where none. Several
    metrics: a group of columns per metric, each named "METRIC COLUMN mean" and so on. The
    cross-task summary is not in the CSV: it follows from these columns."""
    multi = as_multi(table)
    head = [*multi.row_keys]
    pairs: dict[str, list[tuple[tuple, tuple]]] = {}
    for comp in multi.comparisons:
        if (comp.a, comp.b) not in pairs.setdefault(comp.metric, []):
            pairs[comp.metric].append((comp.a, comp.b))
    by_key = {(x.metric, x.row, x.a, x.b): x for x in multi.comparisons}
    several = len(multi.tables) > 1
    for t in multi.tables:
        for col in multi.cols:
            label = _label(multi, (t, col, False), True, sides=False)
            head += [f"{label} {s}" for s in CSV_CELL]
            if col in t.paper_cols:
                head.append(f"{label} paper")
        for a, b in pairs.get(t.metric, []):
            label = (f"{t.metric} " if several else "") + multi.pair_label(a, b, " - ")
            head += [f"{label} {s}" for s in CSV_COMPARISON]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for row in multi.rows:
        line = ["" if v is None else show(v) for v in row]
        for t in multi.tables:
            for col in multi.cols:
                c = t.cells.get((row, col))
                if c is None:
                    line += ["", "", "", "", "0", "0", "0", "0"]
                else:
                    line += [
                        _csv_number(c.mean),
                        _csv_number(c.std),
                        _csv_number(c.ci_low),
                        _csv_number(c.ci_high),
                        str(c.n),
                        str(c.diverged),
                        str(c.failed),
                        str(c.missing),
                    ]
                if col in t.paper_cols:
                    line.append(_csv_number(c.paper if c else None))
            for a, b in pairs.get(t.metric, []):
                test = by_key.get((t.metric, row, a, b))
                if test is None:
                    line += [""] * len(CSV_COMPARISON)
                else:
                    line += [
                        _csv_number(x)
                        for x in (
                            test.diff,
                            test.ci_low,
                            test.ci_high,
                            test.p_value,
                            test.p_adjusted,
                        )
                    ]
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
