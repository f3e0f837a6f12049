"""grubench-verdicts on a hand-written sweep: selection per cell, how each kind of evidence is
read, the verdict wording, and bad input."""

import math
from pathlib import Path

import pytest
from test_report import write_run

from grubench import verdicts
from grubench.inference import holm
from grubench.verdicts import Claim, Evidence

SEEDS = range(5)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Preset `toy`: gru and lstm at seq_len 10 and 20, each over learning rates 1e-3 and 1e-2
    (1e-2 best on validation for both). At the chosen rate and seq_len 10 the GRU's test loss
    is 0.5 lower; at seq_len 20 both are the same. The GRU's train-step bytes are smaller."""
    for model in ("gru", "lstm"):
        for seq_len in (10, 20):
            for lr in (1e-3, 1e-2):
                chosen = lr == 1e-2
                base = 0.1 if model == "gru" and seq_len == 10 else 0.6
                test = [(base if chosen else 5.0) + 0.01 * i for i in SEEDS]
                val = [0.1 if chosen else 0.9] * 5
                write_run(
                    tmp_path / "toy",
                    f"{model}-{seq_len}-{lr}",
                    model=model,
                    seq_len=seq_len,
                    lr=lr,
                    seeds=SEEDS,
                    metrics={"test_loss": test, "best_val_loss": val, "val_loss": val},
                    extra={"memory": {"train_step_bytes": 100 if model == "gru" else 130}},
                )
    return tmp_path


def claim(expects, kind="test", metric="test_loss", other="lstm") -> Claim:
    evidence = Evidence("toy", metric, ("seq_len",), expects, other=other, kind=kind)
    return Claim("toy claim", (evidence,))


def scored(c: Claim, root: Path) -> tuple[list[verdicts.Setting], list[str]]:
    settings, notes = verdicts.score(c.evidence[0], root)
    verdicts.judge(settings, 0.05)
    return settings, notes


def test_a_setting_counts_only_where_the_test_is_significant(root):
    settings, notes = scored(claim("lower"), root)
    by_where = {s.where: s for s in settings}
    assert [s.reading for s in settings] == ["for", "undecided"]
    decided = by_where["seq_len=10"]
    assert decided.test is not None and decided.test.diff == pytest.approx(-0.5)
    assert decided.gru is not None and decided.gru.mean == pytest.approx(0.12)  # rate 1e-2 only
    assert verdicts.verdict(settings) == "supported in 1 of 2 settings, against in none"
    assert any(n.startswith("budget: every cell the same — 2 values of trainer.lr") for n in notes)
    assert any(n.startswith("selected: in each cell the trainer.lr") for n in notes)

    settings, _ = scored(claim("higher"), root)
    assert verdicts.verdict(settings) == "contradicted in 1 of 2 settings, for in none"


def test_exact_evidence_counts_by_sign_and_context_is_not_counted(root):
    bytes_ = "memory.train_step_bytes"
    settings, _ = scored(claim("lower", "exact", bytes_), root)
    assert [s.reading for s in settings] == ["for", "for"]
    settings, _ = scored(claim("lower", "context"), root)
    assert [s.reading for s in settings] == ["shown", "shown"]
    assert verdicts.verdict(settings) == "undecided: no setting of 0 differs significantly"


def test_the_document_lists_commands_verdicts_and_evidence(root):
    text = verdicts.render(root, 0.05, [claim("lower")])
    assert "grubench-train -m +experiment=toy hydra.sweep.dir=ROOT/toy" in text
    assert "| toy claim | supported in 1 of 2 settings, against in none |" in text
    row = next(ln for ln in text.splitlines() if "| seq_len=10 |" in ln)
    assert "-0.50" in row and "| for |" in row and "lstm: 0.620 ± 0.016 (n=5)" in row


def test_bad_input_is_one_line(tmp_path, capsys):
    assert verdicts.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("grubench-verdicts: error: ")
        and "no sweep of recall, counting, speed" in err
    )
    assert "\n" not in err
    assert verdicts.main([str(tmp_path), "--alpha", "2"]) == 2
    assert "--alpha 2" in capsys.readouterr().err
    assert verdicts.main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().endswith("nowhere: no such directory")


def toy(root: Path, values: dict, metric: str = "test_loss") -> Path:
    """Preset `toy` at one learning rate: {(model, seq_len): per-seed values, or "failed"}."""
    for (model, seq_len), got in values.items():
        failed = got == "failed"
        metrics = None if failed else {metric: got, "best_val_loss": [0.1] * len(got)}
        write_run(
            root / "toy",
            f"{model}-{seq_len}",
            model=model,
            seq_len=seq_len,
            seeds=SEEDS,
            status="failed" if failed else "completed",
            metrics=metrics,
        )
    return root


def test_a_claim_corrects_its_settings_together_and_can_be_mixed(tmp_path):
    low = [0.10, 0.11, 0.12, 0.13, 0.14]
    high = [0.60, 0.61, 0.62, 0.63, 0.64]
    root = toy(
        tmp_path, {("gru", 10): low, ("lstm", 10): high, ("gru", 20): high, ("lstm", 20): low}
    )
    settings, _ = scored(claim("lower"), root)
    assert [s.reading for s in settings] == ["for", "against"]
    assert verdicts.verdict(settings) == "mixed: for in 1, against in 1 of 2 settings"
    raw = [s.test.p_value for s in settings]
    assert [s.test.p_adjusted for s in settings] == pytest.approx(holm(raw))


def test_the_difference_is_always_gru_minus_the_other(tmp_path):
    # "elman" sorts before "gru": the table's comparison is elman − gru, read as gru − elman
    low, high = [0.1 + 0.01 * i for i in SEEDS], [0.6 + 0.01 * i for i in SEEDS]
    root = toy(tmp_path, {("gru", 10): low, ("elman", 10): high})
    (s,), _ = scored(claim("lower", other="elman"), root)
    assert s.test.diff == pytest.approx(-0.5) and s.test.ci_high < 0 and s.reading == "for"
    assert s.gru.mean == pytest.approx(0.12) and s.other.mean == pytest.approx(0.62)


def test_time_to_target_counts_only_where_every_seed_got_there(tmp_path):
    fast = [100.0, 100.0, math.nan, math.nan, math.nan]  # 2 seeds got there early, 3 never
    slow = [400.0, 420.0, 440.0, 460.0, 480.0]
    never = [math.nan] * 5
    values = {("gru", 10): fast, ("lstm", 10): slow, ("gru", 20): slow[::-1], ("lstm", 20): slow}
    values |= {("gru", 30): never, ("lstm", 30): never}
    root = toy(tmp_path, values, "steps_to_target")
    settings, _ = scored(claim("lower", metric="steps_to_target"), root)
    first, second, third = settings
    assert first.reading == "undecided" and first.why == "reached in 2/5 vs 5/5 seeds"
    assert second.reading == "undecided" and second.why == "no difference"
    assert third.reading == "undecided" and third.why == "no seed of either reached the target"


def test_a_failed_cell_is_no_data_not_undecided(tmp_path):
    low = [0.1 + 0.01 * i for i in SEEDS]
    root = toy(tmp_path, {("gru", 10): low, ("lstm", 10): "failed"})
    settings, notes = scored(claim("lower"), root)
    assert [(s.reading, s.why) for s in settings] == [("no data", "a cell has no finished value")]
    assert verdicts.verdict(settings) == (
        "undecided: no setting of 1 differs significantly; 1 without a test or data"
    )
    assert any("failed" in n for n in notes)


def test_the_command_writes_the_document(root, monkeypatch, capsys):
    monkeypatch.setattr(verdicts, "CLAIMS", (claim("lower"),))
    out = root / "verdicts.md"
    assert verdicts.main([str(root), "--out", str(out)]) == 0
    assert "| toy claim | supported in 1 of 2 settings, against in none |" in out.read_text()
    assert f"wrote {out}" in capsys.readouterr().err
