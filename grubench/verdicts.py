"""grubench-verdicts: the GRU-folklore verdict table, generated from the presets' sweeps.

    grubench-verdicts ROOT [--out FILE] [--alpha A]

ROOT holds one sweep directory per preset, named as the preset (`grubench-train -m
+experiment=NAME hydra.sweep.dir=ROOT/NAME`). Each claim below names the presets, metrics and
table rows that bear on it and what it predicts for the GRU against the other cell. Every
setting (a table row) is scored as `grubench-report` scores it: each cell's learning rate
chosen on validation from the preset's grid (`grubench.selection`), GRU − other with a 95%
Welch interval and Welch's t-test, Holm-corrected across the settings of one line of evidence
(`grubench.stats`). A setting counts for or against a claim only where that test is
significant at α; the verdict says how many did, and "undecided" where none did.

Three kinds of evidence:
- test: values per seed, tested as above;
- exact: a deterministic measurement (XLA's memory accounting), one value per setting; its
  sign counts;
- context: shown beside the claim, not counted (a per-step time measured once per run, or
  seconds on a clock all of a population's members share).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grubench.errors import GrubenchError, ReportError
from grubench.render import format_difference, format_mean_std, format_p
from grubench.results import atomic_write_text
from grubench.runs import cell_label, read_runs
from grubench.selection import budget_note, default_select, select_best
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
            Evidence("lr_sensitivity", "test_loss", ("trainer.lr",), "higher"),
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


@dataclass
class Setting:
    """One row of one line of evidence: both cells, their test, and how it reads."""

    evidence: Evidence
    where: str
    gru: Cell | None
    other: Cell | None
    test: Comparison | None
    reading: Literal["for", "against", "undecided", "shown"]


def _reading(
    e: Evidence, c: Comparison | None, alpha: float
) -> Literal["for", "against", "undecided", "shown"]:
    if e.kind == "context":
        return "shown"
    if c is None or not math.isfinite(c.diff):
        return "undecided"
    if e.kind == "test" and not c.decided(alpha):
        return "undecided"
    if c.diff == 0:
        return "undecided"
    lower = c.diff < 0
    return "for" if lower == (e.expects == "lower") else "against"


def score(e: Evidence, root: Path, alpha: float) -> tuple[list[Setting], list[str]]:
    """The settings of one line of evidence, and the notes on how they were chosen."""
    runs = [r for r in read_runs([root / e.preset]) if r.get("model") in ("gru", e.other)]
    if not {r.get("model") for r in runs} >= {"gru", e.other}:
        raise ReportError(f"{root / e.preset}: no finished gru and {e.other} runs to compare")
    keys = [*e.rows, "model"]
    notes = []
    select = default_select(runs, keys)
    if select:
        notes.append(budget_note(runs, keys, select))
        runs, note = select_best(runs, keys, select, "best_val_loss")
        notes.append(note)
    options = StatsOptions(compare="model", alpha=alpha)
    multi = build_tables(runs, list(e.rows), ["model"], [e.metric], None, options)
    table = multi.tables[0]
    notes += multi.notes
    tests = {c.row: c for c in multi.comparisons}
    settings = []
    for row in table.rows:
        c = tests.get(row)
        if c is not None and c.a != ("gru",):  # columns sort by name: flip to GRU − other
            c = Comparison(
                c.metric,
                c.row,
                c.b,
                c.a,
                -c.diff,
                -c.ci_high,
                -c.ci_low,
                c.p_value,
                c.n[::-1],
                -c.shift,
                c.p_adjusted,
                c.shown,
            )
        settings.append(
            Setting(
                e,
                cell_label(list(e.rows), row),
                table.cells.get((row, ("gru",))),
                table.cells.get((row, (e.other,))),
                c,
                _reading(e, c, alpha),
            )
        )
    return settings, notes


def verdict(settings: Sequence[Setting]) -> str:
    """The claim's verdict from its counted settings."""
    counted = [s for s in settings if s.reading != "shown"]
    n = len(counted)
    pro = sum(s.reading == "for" for s in counted)
    con = sum(s.reading == "against" for s in counted)
    if pro and con:
        return f"mixed: for in {pro}, against in {con} of {n} settings"
    if pro:
        return f"supported in {pro} of {n} settings, against in none"
    if con:
        return f"contradicted in {con} of {n} settings, for in none"
    return f"undecided: no setting of {n} differs significantly"


def _cell(c: Cell | None) -> str:
    if c is None:
        return "—"
    text = format_mean_std(c.mean, c.std)
    missing = c.missing + c.diverged + c.failed
    return f"{text} (n={c.n}{f', {missing} without a value' if missing else ''})"


def _ratio(s: Setting) -> str:
    """GRU's mean over the other's, where both are positive: "0.73×"."""
    if s.gru is None or s.other is None or not (s.gru.mean > 0 and s.other.mean > 0):
        return "—"
    return f"{s.gru.mean / s.other.mean:.2f}×"


def _versions(roots: Sequence[dict[str, Any]]) -> str:
    seen = {tuple(sorted((r.get("versions") or {}).items())) for r in roots}
    seen.discard(())
    if not seen:
        return "not recorded in these runs"
    return " | ".join(", ".join(f"{k} {v}" for k, v in s) for s in sorted(seen))


def render(root: Path, alpha: float = 0.05, claims: Sequence[Claim] = CLAIMS) -> str:
    """The verdicts document (Markdown) for the sweeps under `root`."""
    blocks: list[tuple[Claim, list[Setting], list[tuple[Evidence, list[str]]]]] = []
    for claim in claims:
        settings: list[Setting] = []
        notes = []
        for e in claim.evidence:
            got, said = score(e, root, alpha)
            settings += got
            notes.append((e, said))
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
        f"Versions of the runs: {_versions(runs)}. Each setting's learning rate was chosen per "
        "cell on validation (best_val_loss) from its preset's grid; GRU − other is the "
        "difference of means with its 95% Welch interval; p is Welch's t-test, Holm-corrected "
        f"across the settings of one line of evidence; a setting counts only at p < {alpha:g}.",
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
            p = s.test.p_adjusted if s.test is not None else math.nan
            reading = {"shown": "context, not counted"}.get(s.reading, s.reading)
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise ReportError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """grubench-verdicts: 0 on success, 2 (one line on stderr) on bad input."""
    p = _Parser(
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
        missing = [n for n in presets() if not (root / n).is_dir()]
        if missing:
            raise ReportError(
                f"{root}: no sweep of {', '.join(missing)} (run grubench-train -m "
                f"+experiment=NAME hydra.sweep.dir={root}/NAME for each)"
            )
        text = render(root, args.alpha)
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
