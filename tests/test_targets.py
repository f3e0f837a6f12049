"""Time to target: the first evaluation at which a member has learned the task."""

import math

import pytest

from grubench.registry import TASKS
from grubench.targets import Target, time_to_target

ROWS = [
    {"step": 5, "train/seconds": 0.5, "train/loss_batch": [9.0, 9.0]},  # no curve here
    {"step": 10, "train/seconds": 1.0, "val/accuracy": [0.50, 0.90], "val/loss": [2.0, 1.0]},
    {"step": 20, "train/seconds": 2.5, "val/accuracy": [0.995, 0.98], "val/loss": [1.0, 0.5]},
    {"step": 30, "train/seconds": 3.0, "val/accuracy": [0.999, None], "val/loss": [0.99, None]},
]


def test_an_absolute_target_is_the_first_evaluation_past_it():
    steps, seconds = time_to_target(ROWS, Target("val/accuracy", 0.99), 2)
    assert steps[0] == 20 and seconds[0] == 2.5
    assert math.isnan(steps[1]) and math.isnan(seconds[1])  # never reached (then diverged)
    steps, _ = time_to_target(ROWS, Target("val/loss", 1.0), 2)
    assert steps == [20, 10]  # a loss: at or below


def test_rows_without_seconds_give_the_step_alone():
    old = [{k: v for k, v in r.items() if k != "train/seconds"} for r in ROWS]
    steps, seconds = time_to_target(old, Target("val/accuracy", 0.99), 2)
    assert steps[0] == 20 and math.isnan(seconds[0])


def test_a_target_says_what_it_is():
    assert Target("val/accuracy", 0.99).describe() == "val/accuracy >= 0.99"
    assert Target("val/loss", 0.01).describe() == "val/loss <= 0.01"


def test_a_relative_target_is_within_a_fraction_of_the_members_own_best():
    target = Target("val/loss", 0.5, relative=True)  # within 50% of its best
    assert target.describe() == "val/loss within 50% of its best"
    steps, seconds = time_to_target(ROWS, target, 2)
    # member 0: best 0.99, threshold 1.485, met at step 20; member 1: best 0.5, threshold 0.75
    assert steps == [20, 20] and seconds == [2.5, 2.5]
    steps, _ = time_to_target(ROWS, Target("val/accuracy", 0.1, relative=True), 2)
    assert steps == [20, 10]  # >= 0.9 * 0.999 and >= 0.9 * 0.98


@pytest.mark.parametrize(
    "task, rule",
    [
        ("copy", "val/accuracy >= 0.99"),
        ("adding", "val/loss <= 0.01"),
        ("chorales", "val/loss within 1% of its best"),
        ("polyphonic", "val/loss within 1% of its best"),
    ],
)
def test_the_issues_tasks_have_their_targets(task, rule):
    assert TASKS.get(task).target.describe() == rule
