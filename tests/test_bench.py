"""grubench-bench at a tiny shape: the JSON contract, the FLOP arithmetic, bad arguments."""

import json

import pytest

from grubench import bench, runtime


@pytest.mark.slow
def test_tiny_run_writes_the_contracted_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        bench.main(
            [
                *"--shapes 4,6,3,5 --iters 2 --warmup 1 --no-torch --cells gru,lstm --json".split(),
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["peak_gflops"] > 0 and res["device"]
    assert "--xla_cpu_multi_thread_eigen=false" in res["xla_flags"]  # the flags it ran under
    assert {(r["cell"], r["impl"]) for r in res["rows"]} == {
        (c, i) for c in ("gru", "lstm") for i in ("grubench", "flax")
    }
    for r in res["rows"]:
        assert r["shape"] == [4, 6, 3, 5]
        flops = bench.step_flops(r["cell"], 4, 6, 3, 5)
        assert r["gflops"] == pytest.approx(flops / (r["step_ms"] * 1e-3) / 1e9)
    table = capsys.readouterr().out
    assert "geometric mean of ours / best peer" in table
    row = next(line for line in table.splitlines() if line.startswith("| gru | 4, 6, 3, 5 |"))
    got = {r["impl"]: r for r in res["rows"] if r["cell"] == "gru"}
    ours_pct, peer_pct = [c.strip() for c in row.split("|")[-3:-1]]
    assert ours_pct == f"{100 * got['grubench']['gflops'] / res['peak_gflops']:.0f}%"
    assert peer_pct == f"{100 * got['flax']['gflops'] / res['peak_gflops']:.0f}%"


@pytest.mark.slow
def test_forward_mode_times_forward_passes(tmp_path, capsys):
    out = tmp_path / "forward.json"
    assert (
        bench.main(
            [
                *"--forward --shapes 4,6,3,5 --iters 2 --warmup 1 --no-torch --cells lstm".split(),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["options"]["forward"] is True
    assert {r["impl"] for r in res["rows"]} == {"grubench", "flax"}
    for r in res["rows"]:  # a forward pass is a third of a training step's FLOPs
        flops = bench.step_flops("lstm", 4, 6, 3, 5) / 3
        assert r["gflops"] == pytest.approx(flops / (r["step_ms"] * 1e-3) / 1e9)
    assert "ms per forward pass" in capsys.readouterr().out


@pytest.mark.slow
def test_isolated_mode_times_each_implementation_in_its_own_process(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # the workers start from a user's shell
    out = tmp_path / "isolated.json"
    argv = "--isolated --rounds 2 --optimizer none --shapes 4,6,3,5 --iters 2 --warmup 1"
    argv += " --no-torch --cells gru --json"
    assert bench.main([*argv.split(), str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "isolated" and res["rounds"] == 2 and res["peak_gflops"] > 0
    assert res["options"]["optimizer"] == "none"
    rows = {r["impl"]: r for r in res["rows"]}
    assert set(rows) == {"grubench", "flax"}
    for r in rows.values():
        assert len(r["rounds_ms"]) == 2 and r["step_ms"] == min(r["rounds_ms"])
        assert r["spread"] == pytest.approx((max(r["rounds_ms"]) - r["step_ms"]) / r["step_ms"])
    # ours ran with grubench's process settings, Flax with JAX's own defaults
    assert "--xla_cpu_multi_thread_eigen=false" in rows["grubench"]["xla_flags"]
    assert "xla_cpu_multi_thread_eigen" not in rows["flax"]["xla_flags"]
    assert rows["flax"]["devices"] == 1  # JAX's default: one CPU device
    assert rows["grubench"]["devices"] == runtime.cpu_devices()  # one per core, as it ran
    table = capsys.readouterr().out
    assert "isolated: each implementation in a fresh process" in table
    assert "ms per forward + backward (no optimizer update)" in table


def test_flop_count():
    # GRU: 3 gates; forward 2*B*T*3H*(D+H), backward twice that.
    assert bench.step_flops("gru", 2, 3, 4, 5) == 3 * 2 * 2 * 3 * 3 * 5 * 9
    assert bench.step_flops("lstm", 1, 1, 1, 1) == 3 * 2 * 4 * 2


@pytest.mark.parametrize(
    "args",
    [
        ["--cells", "gruu"],
        ["--shapes", "1,2,3"],
        ["--iters", "0"],
        ["--unroll", "-1"],
        ["--scaling", "--variants"],
        ["--backward", "autodiff", "--matmul-dtype", "bfloat16"],
        ["--scan", "parallel"],
        ["--variants", "--unroll", "2"],
        ["--forward", "--scaling"],
        ["--forward", "--backward", "autodiff"],
        ["--population", "--members", "1,x"],
        ["--population", "--members", "0,4"],
        ["--population", "--members", "1,100000000"],
        ["--population", "--scaling"],
        ["--population", "--hidden", "0"],
        ["--isolated", "--scaling"],
        ["--isolated", "--rounds", "0"],
        ["--rounds", "2"],
        ["--iso"],
        ["--optimizer", "sgd", "--forward"],
        ["--optimizer", "rmsprop"],
    ],
)
def test_bad_arguments_are_one_line(args, capsys):
    assert bench.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("grubench-bench: error: ")


@pytest.mark.slow
def test_scaling_mode_times_min_cells_against_gated_ones(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    assert (
        bench.main(
            [*"--scaling --shapes 2,8,3,4;2,16,3,4 --iters 1 --warmup 0 --json".split(), str(out)]
        )
        == 0
    )
    res = json.loads(out.read_text())
    got = {(r["cell"], r["shape"][1]): r["step_ms"] for r in res["rows"]}
    assert set(got) == {(c, t) for c in ("gru", "lstm", "mingru", "minlstm") for t in (8, 16)}
    table = capsys.readouterr().out
    row16 = next(line for line in table.splitlines() if line.startswith("| 16 |"))
    assert row16.split("|")[6].strip() == f"{got[('gru', 16)] / got[('mingru', 16)]:.1f}x"


@pytest.mark.slow
def test_scaling_mode_times_either_scan(tmp_path):
    got = {}
    for scan in ("parallel", "sequential"):
        out = tmp_path / f"{scan}.json"
        assert (
            bench.main(
                ["--scaling", "--cells", "mingru", "--scan", scan]
                + [*"--shapes 2,8,3,4 --iters 1 --warmup 0 --json".split(), str(out)]
            )
            == 0
        )
        got[scan] = json.loads(out.read_text())
    assert [r["options"] for r in got.values()] == [{"scan": "parallel"}, {"scan": "sequential"}]
    assert all(r["rows"][0]["step_ms"] > 0 for r in got.values())


@pytest.mark.slow
def test_variants_mode_times_each_option_against_the_default(tmp_path, capsys):
    out = tmp_path / "variants.json"
    assert (
        bench.main(
            [
                *"--variants --cells gru --shapes 2,5,3,4 --iters 1 --warmup 0 --json".split(),
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    got = {r["impl"]: r["step_ms"] for r in res["rows"]}
    # The Pallas kernels are timed on a GPU only (interpreted elsewhere).
    assert set(got) == set(bench.VARIANTS) - {"persistent"} and res["peak_gflops"] > 0
    row = next(
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| gru | 2, 5, 3, 4 |")
    )
    autodiff = row.split("|")[3 + list(bench.VARIANTS).index("autodiff")].strip()
    assert autodiff.endswith(f"({got['autodiff'] / got['default']:.2f})")


def test_population_mode_times_k_members_against_one(tmp_path, capsys):
    out = tmp_path / "pop.json"
    args = "--population --members 3 --cells gru --hidden 4 --seq-len 2 --batch 4 --iters 2"
    assert bench.main([*args.split(), "--warmup", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "population"
    one, three = res["rows"]  # K = 1 is always timed: the ratios are against it
    assert (one["members"], three["members"]) == (1, 3)
    for r in res["rows"]:
        assert r["members_per_s"] == pytest.approx(r["members"] / (r["step_ms"] * 1e-3))
        assert r["throughput_ratio"] == pytest.approx(r["members_per_s"] / one["members_per_s"])
        assert r["bytes_per_member"] > 0
    assert "| gru | 3 |" in capsys.readouterr().out
