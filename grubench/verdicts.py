"""grubench-verdicts: the GRU-folklore verdict table, generated from the presets' sweeps.

    grubench-verdicts ROOT [--out FILE] [--alpha A]

ROOT holds one sweep directory per preset, named as the preset (`grubench-train -m
+experiment=NAME hydra.sweep.dir=ROOT/NAME`). Each claim below names the presets, metrics and
table rows that bear on it and what it predicts for the GRU against the other cell. Every
setting (a table row) is scored as `grubench-report` scores it: each cell's learning rate
chosen on validation from the preset's grid (`grubench.selection`), GRU − other with a 95%
Welch interval and Welch's t-test (`grubench.stats`). The p-values of all a claim's tested
settings are Holm-corrected together, and a setting counts for or against the claim only
where its test is significant at α; the verdict says how many did, and "undecided" where none
did.

Three kinds of evidence:
- test: values per seed, tested as above;
- exact: a deterministic measurement (XLA's memory accounting), one value per setting; its
  sign counts;
- context: shown beside the claim, not counted (a per-step time measured once per run,
  seconds on a clock all of a population's members share, or a quantity that bears on the
  claim only in part).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from grubench.errors import GrubenchError, ReportError
from grubench.inference import holm
from grubench.render import format_difference, format_mean_std, format_p
from grubench.report import Parser
from grubench.results import atomic_write_text
from grubench.runs import cell_label, read_runs
from grubench.selection import BY, TUNED, budget_note, default_select, select_best
from grubench.stats import Cell, Comparison, StatsOptions, build_tables

Kind = Literal["test", "exact", "context"]


@dataclass(frozen=True)
class Evidence:
    """One line of evidence: `metric` of the GRU against `other` in the sweep of `preset`,
    one setting per value of `rows`; `expects`: the claim predicts the GRU's value is lower
    or higher than the other's."""

    preset: str
    metric: str
    rows: tuple[str, ...]
    expects: Literal["lower", "higher"]
    other: str = "lstm"
    kind: Kind = "test"


@dataclass(frozen=True)
class Claim:
    text: str
    evidence: tuple[Evidence, ...]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "GRU trains faster",
        (
            Evidence("recall", "steps_to_target", ("task.lag",), "lower"),
            Evidence("counting", "steps_to_target", ("task.language",), "lower"),
            Evidence("recall", "seconds_to_target", ("task.lag",), "lower", kind="context"),
            Evidence("speed", "speed.step_time_ms", ("hidden", "seq_len"), "lower", kind="context"),
        ),
    ),
    Claim(
        "GRU uses less memory",
        (
            Evidence(
                "memory",
                "memory.train_step_bytes",
                ("model.remat", "seq_len"),
                "lower",
                kind="exact",
            ),
        ),
    ),
    Claim(
        "GRU overfits less on small data",
        (
            Evidence("data_size", "gap", ("train_size",), "lower"),
            Evidence("dropout", "gap", ("model.dropout",), "lower"),
        ),
    ),
    Claim(
        "GRU avoids vanishing gradients (unlike the tanh-RNN)",
        (
            Evidence("seq_len", "grad_retained_end", ("seq_len",), "higher", other="rnn"),
            Evidence("seq_len", "test_accuracy", ("seq_len",), "higher", other="rnn"),
        ),
    ),
    Claim(
        "GRU has weaker long-term memory than the LSTM",
        (
            Evidence("counting", "test_accuracy", ("task.language",), "lower"),
            Evidence("recall", "test_accuracy", ("task.lag",), "lower"),
            Evidence("seq_len", "test_accuracy", ("seq_len",), "lower"),
        ),
    ),
    Claim(
        "GRU is less stable across learning rates",
        (
            Evidence("lr_sensitivity", "diverged", ("trainer.lr",), "higher"),
            # a higher loss at a rate is slower learning as much as instability: shown only
            Evidence("lr_sensitivity", "test_loss", ("trainer.lr",), "higher", kind="context"),
        ),
    ),
    Claim(
        "GRU loses to the LSTM in deep stacks",
        (Evidence("depth", "test_accuracy", ("depth",), "lower"),),
    ),
)


def presets(claims: Sequence[Claim] = CLAIMS) -> list[str]:
    """The presets `claims` read, in the order they are listed."""
    return list(dict.fromkeys(e.preset for c in claims for e in c.evidence))


Reading = Literal["for", "against", "undecided", "untested", "no data", "shown"]


@dataclass
class Setting:
    """One row of one line of evidence: both cells, their test (p_adjusted: Holm across the
    claim's tested settings), and how it reads, with why where it is not for or against."""

    evidence: Evidence
    where: str
    gru: Cell | None
    other: Cell | None
    test: Comparison | None
    reading: Reading = "undecided"
    why: str = ""


def _unreached(c: Cell | None) -> int:
    return 0 if c is None else c.missing + c.diverged + c.failed


def _read(s: Setting, alpha: float) -> None:
    """Set `s.reading` (and `s.why`) from its cells and its test."""
    e, c = s.evidence, s.test
    to_target = e.metric.endswith("_to_target")
    if e.kind == "context":
        s.reading = "shown"
    elif s.gru is None or s.other is None or not (s.gru.n or _unreached(s.gru)):
        s.reading, s.why = "no data", "a cell has no run"
    elif to_target and not (s.gru.n or s.other.n) and not (s.gru.failed or s.other.failed):
        s.reading, s.why = "undecided", "no seed of either reached the target"
    elif not (s.gru.n and s.other.n) and not to_target:
        s.reading, s.why = "no data", "a cell has no finished value"
    elif to_target and (_unreached(s.gru) or _unreached(s.other)):
        # Seeds that never reached the target are not in the mean: a cell whose few seeds
        # that got there did so early would look fast. Counted only where every seed did.
        k = s.gru.n + _unreached(s.gru), s.other.n + _unreached(s.other)
        s.reading = "undecided"
        s.why = f"reached in {s.gru.n}/{k[0]} vs {s.other.n}/{k[1]} seeds"
    elif c is None or not math.isfinite(c.diff) or c.diff == 0:
        s.reading, s.why = "undecided", "no difference"
    elif e.kind == "test" and not math.isfinite(c.p_value):
        s.reading, s.why = "untested", "under two values a side, or every value the same"
    elif e.kind == "test" and not c.decided(alpha):
        s.reading = "undecided"
    else:  # an exact measurement counts by its sign; a test, where it decided
        s.reading = "for" if (c.diff < 0) == (e.expects == "lower") else "against"


def _gru_first(c: Comparison) -> Comparison:
    """`c` as GRU − other (columns sort by name, so the other cell may come first)."""
    if c.a == ("gru",):
        return c
    return replace(
        c,
        a=c.b,
        b=c.a,
        diff=-c.diff,
        ci_low=-c.ci_high,
        ci_high=-c.ci_low,
        n=c.n[::-1],
        shift=-c.shift,
    )


def score(e: Evidence, root: Path) -> tuple[list[Setting], list[str]]:
    """The settings of one line of evidence (unread: `judge` reads a claim's together), and
    the notes on how their cells were chosen."""
    runs = [r for r in read_runs([root / e.preset]) if r.get("model") in ("gru", e.other)]
    lacking = [m for m in ("gru", e.other) if m not in {r.get("model") for r in runs}]
    if lacking:  # a sweep not yet run in full: one setting without data says so
        return [Setting(e, "—", None, None, None)], [f"no {lacking[0]} runs in {e.preset}."]
    keys = [*e.rows, "model"]
    notes = []
    select = default_select(runs, keys)
    if select:
        notes.append(budget_note(runs, keys, select))
        runs, note = select_best(runs, keys, select, BY)
        notes.append(note)
    elif TUNED in e.rows:
        notes.append(f"no selection: {TUNED} is the setting itself.")
    else:
        notes.append(f"no selection: one value of {TUNED}.")
    multi = build_tables(
        runs, list(e.rows), ["model"], [e.metric], None, StatsOptions(compare="model")
    )
    table = multi.tables[0]
    # The table's own bold and Holm notes do not apply: a claim corrects its settings together.
    notes += [n for n in multi.notes if not n.startswith(("tests:", "no bold:"))]
    tests = {c.row: _gru_first(c) for c in multi.comparisons}
    settings = [
        Setting(
            e,
            cell_label(list(e.rows), row),
            table.cells.get((row, ("gru",))),
            table.cells.get((row, (e.other,))),
            tests.get(row),
        )
        for row in table.rows
    ]
    return settings, notes


def judge(settings: list[Setting], alpha: float) -> None:
    """Read a claim's settings, in place: the p-values of its tested settings Holm-corrected
    together (the claim is decided on all of them at once), then each setting's reading."""
    tested = [
        s
        for s in settings
        if s.evidence.kind == "test" and s.test is not None and math.isfinite(s.test.p_value)
    ]
    for s, p in zip(tested, holm([s.test.p_value for s in tested if s.test]), strict=True):
        assert s.test is not None
        s.test = replace(s.test, p_adjusted=p)
    for s in settings:
        _read(s, alpha)


def verdict(settings: Sequence[Setting]) -> str:
    """The claim's verdict from its counted settings."""
    counted = [s for s in settings if s.reading != "shown"]
    n = len(counted)
    pro = sum(s.reading == "for" for s in counted)
    con = sum(s.reading == "against" for s in counted)
    idle = sum(s.reading in ("untested", "no data") for s in counted)
    aside = f"; {idle} without a test or data" if idle else ""
    if pro and con:
        return f"mixed: for in {pro}, against in {con} of {n} settings{aside}"
    if pro:
        return f"supported in {pro} of {n} settings, against in none{aside}"
    if con:
        return f"contradicted in {con} of {n} settings, for in none{aside}"
    return f"undecided: no setting of {n} differs significantly{aside}"


def _cell(c: Cell | None) -> str:
    if c is None:
        return "—"
    text = format_mean_std(c.mean, c.std)
    missing = _unreached(c)
    return f"{text} (n={c.n}{f', {missing} without a value' if missing else ''})"


def _ratio(s: Setting) -> str:
    """GRU's mean over the other's, where both are at least 0 and the other's is not: "0.73×"."""
    if s.gru is None or s.other is None or not (s.gru.mean >= 0 and s.other.mean > 0):
        return "—"
    return f"{s.gru.mean / s.other.mean:.2f}×"


def _versions(runs: Sequence[dict[str, Any]]) -> str:
    """The package versions the runs record, each set once; how many runs record none."""
    seen = {tuple(sorted((r.get("versions") or {}).items())) for r in runs}
    seen.discard(())
    without = {r["path"] for r in runs if not r.get("versions")}
    text = " | ".join(", ".join(f"{k} {v}" for k, v in s) for s in sorted(seen))
    if not without:
        return text
    total = len({r["path"] for r in runs})
    return f"{text or 'none recorded'} ({len(without)} of {total} runs record none)"


def render(root: Path, alpha: float = 0.05, claims: Sequence[Claim] = CLAIMS) -> str:
    """The verdicts document (Markdown) for the sweeps under `root`."""
    blocks: list[tuple[Claim, list[Setting], list[tuple[Evidence, list[str]]]]] = []
    for claim in claims:
        settings: list[Setting] = []
        notes = []
        for e in claim.evidence:
            got, said = score(e, root)
            settings += got
            notes.append((e, said))
        judge(settings, alpha)
        blocks.append((claim, settings, notes))
    runs = read_runs([root / p for p in presets(claims)])
    lines = [
        "# Verdicts on the GRU folklore",
        "",
        "Generated by `grubench-verdicts` from the sweeps of the presets below; do not edit by "
        "hand. How each setting is scored: [results.md](results.md#the-folklore-tested).",
        "",
        "```bash",
        *(f"grubench-train -m +experiment={p} hydra.sweep.dir=ROOT/{p}" for p in presets(claims)),
        f"grubench-verdicts ROOT --alpha {alpha:g} --out docs/verdicts.md",
        "```",
        "",
        f"Versions of the runs: {_versions(runs)}.",
        "",
        "Where a preset tunes the learning rate (a grid), each cell's rate was chosen on "
        "validation (best_val_loss) and its seeds at that rate are scored; the notes at the end "
        "say what was chosen. GRU − other is the difference of means with its 95% Welch "
        "interval. A *test* setting counts for or against a claim where Welch's t-test (the "
        "exact Mann–Whitney U where every seed of each cell is alike) gives p < "
        f"{alpha:g} after a Holm correction across all the tested settings of that claim; an "
        "*exact* setting (a deterministic measurement) counts by its sign; *context* is shown, "
        "not counted. A `_to_target` setting counts only where every seed of both cells "
        "reached the target.",
        "",
        "| claim | verdict |",
        "|---|---|",
        *(f"| {c.text} | {verdict(s)} |" for c, s, _ in blocks),
        "",
        "## Evidence",
        "",
        "| claim | preset | metric | setting | GRU | other | GRU − other [95% CI] | GRU / other "
        "| p (Holm) | reading |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for claim, settings, _ in blocks:
        for s in settings:
            e = s.evidence
            counted = s.test is not None and s.reading != "shown"
            p = s.test.p_adjusted if counted and s.test is not None else math.nan
            reading = {"shown": "context, not counted"}.get(s.reading, s.reading)
            reading += f" ({s.why})" if s.why else ""
            diff = format_difference(s.test) if s.test is not None else "—"
            lines.append(
                f"| {claim.text} | `{e.preset}` | {e.metric} ({e.kind}) | {s.where} | "
                f"{_cell(s.gru)} | {e.other}: {_cell(s.other)} | {diff} | {_ratio(s)} | "
                f"{format_p(p)} | {reading} |"
            )
    lines += ["", "## How each line was chosen", ""]
    for claim, _, notes in blocks:
        for e, said in notes:
            lines.append(f"- {claim.text}, `{e.preset}` {e.metric}: " + " ".join(said))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """grubench-verdicts: 0 on success, 2 (one line on stderr) on bad input."""
    p = Parser(
        prog="grubench-verdicts",
        description="The GRU-folklore verdict table from the presets' sweeps under ROOT "
        "(one directory per preset, named as the preset).",
    )
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--out", metavar="FILE", help="write the table here (default: stdout)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (0.05)")
    try:
        args = p.parse_args(argv)
        StatsOptions(alpha=args.alpha)
        root = Path(args.root)
        if not root.is_dir():
            raise ReportError(f"{root}: {'not a' if root.exists() else 'no such'} directory")
        missing = [n for n in presets(CLAIMS) if not (root / n).is_dir()]
        if missing:
            raise ReportError(
                f"{root}: no sweep of {', '.join(missing)} (run grubench-train -m "
                f"+experiment=NAME hydra.sweep.dir={root}/NAME for each)"
            )
        text = render(root, args.alpha, CLAIMS)
        if args.out:
            try:
                atomic_write_text(args.out, text)
            except OSError as e:
                raise ReportError(f"{args.out}: cannot write ({e.strerror})") from None
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print(text, end="")
    except GrubenchError as e:
        print(f"grubench-verdicts: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
