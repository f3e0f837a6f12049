"""The training loop of one run: checkpoints, evaluation, divergence, the results record.

`train(cfg, out_dir)` trains every member of `cfg`'s population (`grubench.population`: its
seeds x grid values) with the program of `grubench.program`,
evaluates, checkpoints and resumes, and writes results.json (`grubench.results`) and
metrics.jsonl whatever the ending. Process concerns (signals, the hang watchdog) come from
`grubench.process`. `AFTER_STEP` holds callbacks run at "start" (set up, before the first
step), at the end of every step and at "end" (before the final evaluation): a hook for tests
that inject faults; empty otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from grubench import measure, population, rundir, runtime, sharding, slurm, tasks
from grubench.checkpoint import CheckpointError, Checkpoints
from grubench.config import FREE_KEYS, config_difference, require, validate
from grubench.model import param_count, with_budget
from grubench.process import Preempted, StopSignals, Watchdog, exit_or_restart
from grubench.program import Evaluator, Placed, check_fits
from grubench.progress import FILE_ONLY, Progress
from grubench.results import Results, member_key, member_record, new_record, read, write_json
from grubench.sharding import primary
from grubench.starts import StartLog
from grubench.targets import time_to_target
from grubench.tracking import RunContext, Tracker

log = logging.getLogger(__name__)

# Called with "start" once set up (compiled, resumed), with the step just finished ("1", "2",
# ...) after its checkpoint, and with "end" after the last step: test code appends fault
# injectors here (tests/faults/sitecustomize.py).
AFTER_STEP: list[Callable[[str], None]] = []


def _after_step(point: str) -> None:
    for hook in AFTER_STEP:
        hook(point)


SOLVED = 0.99  # accuracy at which a lag counts as solved


def solved_lag(lags: tuple[int, ...], accuracy: np.ndarray) -> np.ndarray:
    """[seeds]: the largest lag L such that every lag <= L the split tests (accuracy not NaN)
    is recalled with accuracy >= SOLVED; 0 when the shortest tested lag already fails."""
    out = np.zeros(accuracy.shape[0])
    for i, row in enumerate(np.asarray(accuracy, float)):
        for lag, acc in zip(lags, row, strict=True):
            if np.isnan(acc):
                continue
            if acc < SOLVED:
                break
            out[i] = lag
    return out


def finished(out_dir: str | Path) -> Results | None:
    """The results of `out_dir` if they record a finished run, completed or diverged (every
    step trained; never rerun, never overwritten)."""
    try:
        res = read(Path(out_dir) / "results.json")
    except (OSError, ValueError):
        return None
    done = isinstance(res, dict) and res.get("status") in rundir.FINISHED
    return cast(Results, res) if done else None


def train(
    cfg: DictConfig,
    out_dir: str | Path,
    *,
    context: RunContext | None = None,
    restart_argv: list[str] | None = None,
) -> Results:
    """Train every member of `cfg`, write results.json and metrics.jsonl into `out_dir`, and
    return the results. The results record is written whatever the ending: completed,
    diverged (some member's loss went non-finite), or failed (an exception, re-raised).

    A run resumes from the newest checkpoint in `out_dir/checkpoints` (or
    `trainer.resume`); a directory whose results.json says completed or diverged is returned
    untouched.
    `context` places the run for W&B (its sweep, overrides and directory). If no step finishes for
    `trainer.hang_timeout_s` seconds (a wedged XLA runtime), the process re-executes
    `restart_argv` (which must resume this run) or, without it, exits with status 3.
    """
    validate(cfg)
    out_dir = Path(out_dir)
    # The run as asked (before model.param_budget sets model.hidden): what the directory's
    # fingerprint records, and what a relaunch into it is compared with.
    asked = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    request = rundir.request(asked, cfg.task)
    rundir.check(out_dir, request, lock=False)
    previous = finished(out_dir)
    if previous is not None:
        return previous
    # From here on a signal (SIGTERM, submitit's) is a flag, taken before the first step or at
    # the end of one: the run ends with a record, not killed while it loads its data.
    with StopSignals() as stop_signal:
        # The task keys its data decides (a file's data set), then model.param_budget > 0 sets
        # model.hidden.
        cfg = with_budget(tasks.complete(cfg))
        # The data first (its sequence length sizes the memory check), then the checks, before
        # any compilation and before the members are made (a population may be refused for its
        # size).
        splits = tasks.make_splits(cfg.task)
        n_train = len(splits.train)
        source = f" ({cfg.task.path})" if cfg.task.get("path") else ""
        require(
            cfg.trainer.batch_size <= n_train,
            "trainer.batch_size",
            cfg.trainer.batch_size,
            f"at most the {n_train} training sequence{'s' * (n_train != 1)} of "
            f"task={cfg.task.name}{source}",
        )
        check_fits(cfg, population.size(cfg), int(splits.train.x.shape[1]))
        sharding.check(cfg.trainer.shard, cfg.trainer.batch_size)
        out_dir.mkdir(parents=True, exist_ok=True)
        # One process per directory; of several processes of one run, the first holds the lock.
        with rundir.locked(out_dir) if primary() else nullcontext():
            # Under the lock: another process may have finished or started a run here meanwhile.
            rundir.check(out_dir, request, lock=False)
            previous = finished(out_dir)
            if previous is not None:
                return previous
            fingerprint = rundir.record(out_dir, request) if primary() else None
            return _train(cfg, out_dir, splits, fingerprint, stop_signal, context, restart_argv)


def _train(
    cfg: DictConfig,
    out_dir: Path,
    splits: tasks.Splits,
    fingerprint: str | None,
    stop_signal: StopSignals,
    context: RunContext | None,
    restart_argv: list[str] | None,
) -> Results:
    """`train` once the directory is this process's: results.json is written however this
    ends (an exception, a signal, the hang watchdog's exit, a failed write of the curves)."""
    pop = population.members(cfg)
    config_dict = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    log.info("config:\n%s", OmegaConf.to_yaml(cfg).rstrip(), extra=FILE_ONLY)
    every, steps = evaluation_interval(cfg.trainer), cfg.trainer.steps
    evaluations = steps // every + (steps % every != 0)  # the steps evaluates_at says yes to
    # Sparse curves warn; an interval of the whole run asks for one final evaluation.
    if evaluations < min(20, steps) and every < steps:
        log.warning(
            "trainer.eval_every=%d gives %d evaluation(s) in %d steps, so each learning curve "
            "has %d point(s); trainer.eval_every=0 gives 20",
            cfg.trainer.eval_every,
            evaluations,
            cfg.trainer.steps,
            evaluations,
        )
    if cfg.trainer.warmup_steps >= steps:
        log.warning(
            "trainer.warmup_steps=%d is not below trainer.steps=%d: the learning rate never "
            "reaches trainer.lr=%g",
            cfg.trainer.warmup_steps,
            steps,
            cfg.trainer.lr,
        )
    results = new_record(cfg, config_dict, pop, tasks.baseline(cfg.task))
    results["fingerprint"] = fingerprint

    def write_record() -> None:
        if primary():
            write_json(out_dir / "results.json", results)

    def on_hang(stalled: float) -> None:
        message = (
            f"no training step finished for {stalled:.0f} s (trainer.hang_timeout_s="
            f"{cfg.trainer.hang_timeout_s:g}): the XLA runtime is stuck"
        )
        # The main thread is stuck: this thread records the ending (a copy: the main thread
        # owns `results`), waiting a bounded time in case the disk is what hangs, then exits
        # or restarts.
        ending = cast(Results, {**results, "status": "failed", "error": message})

        def record() -> None:
            _close_start(log_of_starts, f"failed: {message}", ending)
            write_json(out_dir / "results.json", ending)

        if primary():
            writer = threading.Thread(target=record, daemon=True)
            writer.start()
            writer.join(timeout=30)
        exit_or_restart(message, restart_argv)

    tracker = Tracker(out_dir, cfg, config_dict, members=pop, context=context, primary=primary())
    log_of_starts = StartLog(out_dir, primary())
    dog = Watchdog(cfg.trainer.hang_timeout_s, on_hang)
    t_start = time.perf_counter()
    failing = refused = set_up = preempted = False
    ending: str | None = None  # how this start ended, where not by finishing
    try:
        # The run yields what it has measured so far (set-up, then the whole run): a run that
        # fails part-way still records its parameter count, data size and memory.
        for fields in _run(
            cfg, pop, splits, tracker, out_dir, config_dict, dog, stop_signal, log_of_starts
        ):
            results.update(fields)
            if not set_up:  # W&B once the run has set up: a refused resume leaves it alone
                tracker.start(int(results.get("resumed_from_step") or 0))
            set_up = True
    except CheckpointError as e:
        # Before the first yield: the checkpoint to resume cannot be used. A refusal, like a
        # bad config: it leaves no record (a later one, a failed save, is the run's ending).
        failing, refused = True, not set_up
        if not refused:
            results["status"] = "failed"
            results["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
            ending = f"failed: {results['error']}"
        raise
    except BaseException as e:
        failing, preempted = True, isinstance(e, Preempted)
        results["status"] = "failed"
        results["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        ending = e.what if isinstance(e, Preempted) else f"failed: {results['error']}"
        raise
    finally:
        dog.stop()
        results["wall_s"] = time.perf_counter() - t_start
        _close_start(log_of_starts, ending or str(results["status"]), results)
        try:
            tracker.flush()
        except Exception as e:
            if not failing:  # e.g. metrics.jsonl could not be written: the run's own error
                results["status"] = "failed"
                results["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
                raise
            # Else the error in flight (a pre-emption, Ctrl-C) is the one to end with.
        finally:
            if not refused:
                write_record()
            # W&B last: its summaries and artifacts are the files just written; pre-empted,
            # it finishes at once (the requeue waits on this).
            tracker.finish(results, preempted=preempted)
    return results


def _close_start(log_of_starts: StartLog, how: str, record: Results) -> None:
    """End this start's entry in the start log, if it began, with `how`, and put every start
    and the SLURM job into `record`; a failure to read or write the log is a warning, never
    the run's ending (the record is written after this)."""
    try:
        if log_of_starts.begun:
            log_of_starts.end(how)
        record["starts"] = log_of_starts.starts()
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("the start log %s: %s", log_of_starts.path, e)
    record["slurm"] = slurm.job()


def _preempted(step: int, stop_signal: StopSignals) -> Preempted:
    """The stop at `step` the signal asked for; for SIGTERM under SLURM, with what SLURM did
    (asked once the checkpoint is safe: SLURM's KillWait runs from the signal)."""
    why = slurm.why_terminated() if stop_signal.raised == "SIGTERM" else None
    return Preempted(step, stop_signal.raised or "SIGTERM", stop_signal.requeue, why)


def evaluation_interval(tr: Any) -> int:
    """The steps between evaluations: `trainer.eval_every`, or with 0 `steps // 20` (at
    least 1), which gives 20 evaluations and 20 points on each learning curve."""
    return int(tr.eval_every) or max(1, int(tr.steps) // 20)


def evaluates_at(done: int, tr: Any) -> bool:
    """Whether a run evaluates after step `done`: every `evaluation_interval`, and the last."""
    return done % evaluation_interval(tr) == 0 or done == tr.steps


def _mean_text(values: np.ndarray) -> str:
    """The mean of the finite values to 4 decimals (the members' mean), or 'non-finite'."""
    finite = np.asarray(values, float)
    finite = finite[np.isfinite(finite)]
    return f"{finite.mean():.4f}" if finite.size else "non-finite"


def retained(norms: Any) -> np.ndarray:
    """log10(|dL/dh_1| / |dL/dh_T|) per member from the grad probe's norms [member, t]: 0 when
    the gradient reaching the first state is as large as at the last, -10 when it has vanished
    by ten orders of magnitude (results.json: metrics grad_retained_init, grad_retained_end)."""
    norms = np.asarray(norms, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(norms[:, 0] / norms[:, -1])


def _where_member(m: jax.Array, new, old):
    """Per member (leading axis), `new` where the bool [members] `m` else `old`."""
    return jax.tree.map(lambda a, b: jnp.where(m.reshape(-1, *[1] * (a.ndim - 1)), a, b), new, old)


def _resume_source(cfg: DictConfig, own: Checkpoints) -> Checkpoints:
    """Where to resume from: `trainer.resume` (a run directory or its checkpoints/), else the
    run's own checkpoints."""
    if not cfg.trainer.resume:
        return own
    path = Path(cfg.trainer.resume)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    source = Checkpoints(path, cfg.trainer.keep_checkpoints, primary=primary())
    if source.latest() is None:
        raise CheckpointError(f"trainer.resume={cfg.trainer.resume}: no checkpoint found there")
    return source


def _run(
    cfg: DictConfig,
    pop: list[population.Member],
    splits: tasks.Splits,
    tracker: Tracker,
    out_dir: Path,
    config_dict: dict,
    dog: Watchdog,
    stop_signal: StopSignals,
    log_of_starts: StartLog,
) -> Iterator[Results]:
    """Train every member of the population `pop`, yielding the fields of the results record
    the run has measured: once after the set-up (parameters, data size, memory, resume step),
    once at the end (all). Host-side arrays (best validation loss, ...) have one entry per
    member; the device state has `layout.padded` (`grubench.sharding`)."""
    tr = cfg.trainer
    n = len(pop)
    results: Results = {}
    dog.start()  # from here on, so a wedged initialisation is caught too
    placed = Placed(cfg, pop, splits.train)
    program, layout, data = placed.program, placed.layout, placed.data
    with dog.paused():  # compiling is slow but cannot wedge; running it can
        init = jax.jit(program.init).lower(jnp.int32(0)).compile()
    state = placed.init(init)
    results["params"] = param_count(  # from shapes: no device op
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), state["params"])
    )
    results["train_size"] = len(splits.train)  # what the task had, not just what was asked

    ckpts = Checkpoints(out_dir / "checkpoints", tr.keep_checkpoints, primary=primary())
    start = 0
    best_val = np.full(n, np.inf)
    best_step = np.zeros(n, np.int64)
    since_best = np.zeros(n, np.int64)  # evaluations without a better val loss
    stopped_at = np.zeros(n, np.int64)  # the step each member stopped early at; 0: training
    step_times: list[float] = []
    # Checkpoints hold the n members, not the padding: they resume on any number of devices.
    source = _resume_source(cfg, ckpts)
    restored = None
    if source.latest() is not None:  # the template gathers every member: only to restore
        with dog.paused():  # reading and placing a checkpoint compiles its padding step
            restored = source.restore(layout.trim(state), config_dict, quarantine=source is ckpts)
            if restored is not None:
                state = layout.untrim(restored[0])
    if restored is not None:
        meta = restored[1]
        start = int(meta["step"])
        best_val = np.array([np.inf if v is None else v for v in meta["best_val"]])
        best_step = np.array(meta["best_step"], np.int64)
        since_best = np.array(meta["since_best"], np.int64)
        stopped_at = np.array(meta["stopped_at"], np.int64)
        # Step times measured under other settings of the keys that change only speed
        # (model.unroll, ...) are not this run's: its speed is what it times itself.
        same = config_difference(config_dict, meta["config"], FREE_KEYS) is None
        step_times = list(meta["step_times"]) if same else []
        tracker.jsonl.rows = list(meta["rows"])
        if meta.get("grad_norms_init") is not None:
            results["grad_norms_init"] = meta["grad_norms_init"]
        results["resumed_from_step"] = start
        log.info("resumed from the checkpoint of step %d (%s)", start, source.directory)
    log_of_starts.begin(start)
    last_saved = time.monotonic()  # reset once compiled, below

    def checkpoint(done: int) -> None:
        nonlocal last_saved
        ckpts.save(
            done,
            layout.trim(state),
            {
                "step": done,
                "best_val": best_val,
                "best_step": best_step,
                "since_best": since_best,
                "stopped_at": stopped_at,
                "step_times": step_times[-1000:],
                "rows": tracker.jsonl.rows,
                "grad_norms_init": results.get("grad_norms_init"),
                "train_seconds": train_seconds,
                "config": config_dict,
            },
        )
        log.info("checkpoint saved at step %d", done)
        log_of_starts.saved(done)
        last_saved = time.monotonic()

    t0 = time.perf_counter()
    with dog.paused():
        compiled = placed.step_fn.lower(state, *placed.inputs(0), data).compile()
    compile_s = time.perf_counter() - t0
    # The training set is an argument of the step but the same for every model: left out.
    step_bytes = measure.compiled_bytes(compiled, (state, placed.inputs(0)))
    results["memory"] = {
        "train_step_bytes": step_bytes,
        "train_step_bytes_per_member": layout.per_member(step_bytes),
        "peak_bytes": measure.device_peak_bytes(),
    }

    evaluate = Evaluator(
        program, min(tr.eval_batch_size, len(splits.val), len(splits.test)), layout
    )
    with dog.paused():  # its first call compiles it (one batch shape for every split)
        evaluate(state["params"], splits.val.take(evaluate.batch_size))
    probe = None
    if tr.grad_probe:
        probe_batch = layout.place(splits.val.take(evaluate.batch_size).arrays(), layout.replicated)
        with dog.paused():
            probe_fn = (
                jax.jit(
                    jax.vmap(program.grad_profile, in_axes=(0, None)),
                    out_shardings=layout.members,
                )
                .lower(state["params"], probe_batch)
                .compile()
            )
        probe = lambda params: layout.gather(probe_fn(params, probe_batch))
        if start == 0:
            results["grad_norms_init"] = {
                "t": list(range(int(splits.val.x.shape[1]))),
                "step": 0,
                "norm": probe(state["params"]),
            }
    # train_loss is measured like val_loss, on the whole training set up to 5 000 examples
    # (at least as many as validation has), so the gap compares like with like.
    train_eval = splits.train.take(max(len(splits.val), min(len(splits.train), 5000)))
    # train/loss in the curves: the same examples at every evaluation, as many as validation
    # has (the first of those the final train_loss is measured on).
    train_curve = splits.train.take(min(len(splits.train), len(splits.val)))
    progress = Progress(tr.steps, start, tr.progress and primary())
    try:
        # Seconds spent in training steps alone (no compilation, evaluation or saving), across
        # every start of the run.
        train_seconds = float(restored[1].get("train_seconds", 0.0)) if restored else 0.0
        end = tr.steps
        if tr.patience and np.all(since_best >= tr.patience):  # resumed after stopping early
            end = start
            results["stopped_early_at"] = start
        dog.tick()
        yield results.copy()
        _after_step("start")
        (signalled,) = sharding.agree(stop_signal.raised is not None)
        if signalled:  # while setting up: the checkpoints on disk are all there is
            log.warning(
                "%s arrived before this start trained a step: a time limit needs to leave more "
                "than the start-up and compilation (docs/slurm.md)",
                stop_signal.raised or "a stop signal",
            )
            raise _preempted(start, stop_signal)
        progress.begin()
        last_saved = time.monotonic()  # the clock of trainer.checkpoint_every_s, after compiling
        for step in range(start, end):
            args = placed.inputs(step)
            t = time.perf_counter()
            state, out = compiled(state, *args, data)
            jax.block_until_ready(state)
            dog.tick()
            step_times.append(time.perf_counter() - t)
            train_seconds += step_times[-1]
            done = log_of_starts.step = step + 1
            row: dict[str, Any] = {}
            if done % tr.log_every == 0 or done == tr.steps:
                loss = layout.gather(out["loss"])
                recent = step_times[-tr.log_every :]
                rate = len(recent) / sum(recent)
                row |= {
                    "train/loss_batch": loss,
                    "train/grad_norm": layout.gather(out["grad_norm"]),
                    "train/steps_per_s": rate,
                }
                progress.report(done, _mean_text(loss), rate)
            if evaluates_at(done, tr):
                val = evaluate(state["params"], splits.val)
                fit = evaluate(state["params"], train_curve)
                dog.tick()
                row |= {
                    "val/loss": val["loss"],
                    "val/accuracy": val["accuracy"],
                    "train/loss": fit["loss"],
                    "train/accuracy": fit["accuracy"],
                }
                log.info(
                    "evaluation at step %d: val loss %s, val accuracy %s, train loss %s",
                    done,
                    _mean_text(val["loss"]),
                    _mean_text(val["accuracy"]),
                    _mean_text(fit["loss"]),
                )
            if row:
                tracker.log(done, {"train/seconds": train_seconds, **row})
            if "val/loss" in row:
                tracker.flush()
                better = val["loss"] < best_val
                if tr.patience:  # a member that has stopped early keeps what it had alone
                    better &= since_best < tr.patience
                best_val = np.where(better, val["loss"], best_val)
                best_step = np.where(better, done, best_step)
                since_best = np.where(better, 0, since_best + 1)
                if tr.patience:
                    state["best_params"] = _where_member(
                        layout.put_mask(better), state["params"], state["best_params"]
                    )
                    stopping = (since_best >= tr.patience) & (stopped_at == 0)
                    stopped_at = np.where(stopping, done, stopped_at)
                    state["stopped"] = layout.put_mask(stopped_at > 0)
            progress.advance()
            stop = bool(tr.patience) and bool(np.all(since_best >= tr.patience))
            scheduled = (
                (tr.checkpoint_every and done % tr.checkpoint_every == 0)
                or done == tr.steps
                or stop
            )
            if scheduled:
                checkpoint(done)
            _after_step(str(done))
            # A signal, or time for a checkpoint: of several processes, each decides what all
            # decide (a checkpoint gathers every process's members), so they agree first.
            due = bool(tr.checkpoint_every_s) and (
                time.monotonic() - last_saved >= tr.checkpoint_every_s
            )
            signalled, due = sharding.agree(stop_signal.raised is not None, due)
            if (signalled or due) and not scheduled:
                checkpoint(done)
            if signalled:
                raise _preempted(done, stop_signal)
            if stop:
                results["stopped_early_at"] = done
                break
        if ckpts.latest() is None:  # resumed from another directory with nothing left to train
            checkpoint(start)
    finally:  # also when the run ends by an exception: no bar left drawn
        progress.close()
    ckpts.close()
    _after_step("end")

    params = state["best_params"] if tr.patience else state["params"]
    if probe is not None:
        results["grad_norms"] = {
            "t": list(range(int(splits.val.x.shape[1]))),
            # With patience, each member's best-validation parameters: no one step.
            "step": None if tr.patience else tr.steps,
            "norm": probe(params),
        }
    final = {}
    for name, split in (("train", train_eval), ("val", splits.val), ("test", splits.test)):
        final[name] = evaluate(params, split)
        dog.tick()
    diverged = layout.gather(state["diverged"])
    mask = lambda v: np.where(diverged, np.nan, v)
    metrics = {}
    for name, m in final.items():
        metrics[f"{name}_loss"] = mask(m["loss"])
        metrics[f"{name}_accuracy"] = mask(m["accuracy"])
    metrics["gap"] = metrics["val_loss"] - metrics["train_loss"]
    if program.spec.loss_scale != 1.0:  # e.g. MSE in sunspots^2 beside the standardised one
        for name in final:
            metrics[f"{name}_loss_original_units"] = (
                metrics[f"{name}_loss"] * program.spec.loss_scale
            )
    for unit in program.spec.also:  # bits per character, perplexity
        for name in final:
            loss = metrics[f"{name}_loss"]
            metrics[f"{name}_{unit}"] = loss / math.log(2) if unit == "bpc" else np.exp(loss)
    goal = tasks.target(cfg.task)
    if goal is not None:  # from the curves logged, restored ones included
        steps_to, seconds_to = time_to_target(map(json.loads, tracker.jsonl.rows), goal, n)
        metrics["steps_to_target"] = mask(np.array(steps_to))
        metrics["seconds_to_target"] = mask(np.array(seconds_to))
        results["target"] = goal.describe()
    # How much of the loss's gradient reaches the first state, at the start and the end.
    if "grad_norms_init" in results:
        metrics["grad_retained_init"] = mask(retained(results["grad_norms_init"]["norm"]))
    if "grad_norms" in results:
        metrics["grad_retained_end"] = mask(retained(results["grad_norms"]["norm"]))
    metrics["best_val_loss"] = mask(best_val)
    metrics["best_step"] = best_step.astype(float)
    metrics["diverged"] = diverged.astype(float)  # its mean over members: the divergence rate
    if "lag_accuracy" in final["test"]:
        lag_acc = np.where(diverged[:, None], np.nan, final["test"]["lag_accuracy"])
        results["recall"] = {
            "lags": list(program.spec.lags),
            "split": "test",
            "accuracy": lag_acc,
            "solved_at": SOLVED,
        }
        metrics["solved_lag"] = mask(solved_lag(program.spec.lags, lag_acc))
    results["metrics"] = {k: [float(x) for x in np.asarray(v)] for k, v in metrics.items()}
    results["members"] = [
        member_record(m, "diverged" if diverged[i] else "completed", results["metrics"], i)
        for i, m in enumerate(pop)
    ]
    if tr.patience:
        for i, record in enumerate(results["members"]):
            record["stopped_at"] = int(stopped_at[i]) or None

    # Streaming inference (a real-time speech or chat server): one step at batch 1, member 0.
    one = jax.tree.map(lambda a: a[0], params)
    stream_s = None
    if tr.stream_repeats and jax.process_count() == 1:
        carries = nnx.merge(program.graphdef, one).initial_carries(1)
        stream_s = measure.stream_step_time(
            program.stream_step, one, splits.test.x[:1, 0], carries, repeats=tr.stream_repeats
        )
    results["memory"]["param_bytes"] = measure.param_bytes(one)
    results["memory"]["peak_bytes"] = measure.device_peak_bytes()

    timed = step_times[tr.timing_warmup :] or step_times
    tokens = n * tr.batch_size * int(splits.train.x.shape[1])
    step_s = statistics.median(timed) if timed else math.nan
    results["speed"] = {
        "step_time_ms": 1e3 * step_s,
        "compile_s": compile_s,
        "tokens_per_s": tokens / step_s,
        "timed_steps": len(timed),
        "stream_step_ms": None if stream_s is None else 1e3 * stream_s,
        "device": str(jax.devices()[0].device_kind),
        "devices": layout.devices,
        # What XLA compiled the program with (grubench.runtime's flags, or the user's).
        "xla_flags": runtime.xla_flags(),
    }
    if diverged.any():
        steps = layout.gather(state["diverged_step"])
        results["diverged"] = {
            member_key(m): int(steps[i]) for i, m in enumerate(pop) if diverged[i]
        }
        results["status"] = "diverged"
        results["error"] = "non-finite loss: " + ", ".join(
            f"{m.label()} at step {int(steps[i])}" for i, m in enumerate(pop) if diverged[i]
        )
    else:
        results["status"] = "completed"
    yield results
