"""grubench-verdicts on a hand-written sweep: selection per cell, how each kind of evidence is
read, the verdict wording, and bad input."""

from pathlib import Path

import pytest
from test_report import write_run

from grubench import verdicts
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


def claim(expects, kind="test", metric="test_loss") -> Claim:
    return Claim("toy claim", (Evidence("toy", metric, ("seq_len",), expects, kind=kind),))


def test_a_setting_counts_only_where_the_test_is_significant(root):
    settings, notes = verdicts.score(claim("lower").evidence[0], root, 0.05)
    by_where = {s.where: s for s in settings}
    assert [s.reading for s in settings] == ["for", "undecided"]
    decided = by_where["seq_len=10"]
    assert decided.test is not None and decided.test.diff == pytest.approx(-0.5)
    assert decided.gru is not None and decided.gru.mean == pytest.approx(0.12)  # rate 1e-2 only
    assert verdicts.verdict(settings) == "supported in 1 of 2 settings, against in none"
    assert any(n.startswith("budget: every cell the same — 2 values of trainer.lr") for n in notes)
    assert any(n.startswith("selected: in each cell the trainer.lr") for n in notes)

    settings, _ = verdicts.score(claim("higher").evidence[0], root, 0.05)
    assert verdicts.verdict(settings) == "contradicted in 1 of 2 settings, for in none"


def test_exact_evidence_counts_by_sign_and_context_is_not_counted(root):
    bytes_ = "memory.train_step_bytes"
    settings, _ = verdicts.score(claim("lower", "exact", bytes_).evidence[0], root, 0.05)
    assert [s.reading for s in settings] == ["for", "for"]
    settings, _ = verdicts.score(claim("lower", "context").evidence[0], root, 0.05)
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
