"""The training program: `grubench-train [overrides]` (a Hydra app) and `train(cfg, out_dir)`.

One jitted train step is `jax.vmap`ped over `trainer.seeds` seeds, so a single compiled
program trains them all. Each seed has its own initialisation and dropout keys, drawn from
`jax.random.key(seed)` alone, and its own data order (`DataOrder`), so a seed trained with
others gives the numbers it gives trained by itself, and step s of a resumed run is step s of
an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from grubench import measure, optim, tasks
from grubench.checkpoint import CheckpointError, Checkpoints
from grubench.config import ConfigError, validate
from grubench.model import SequenceModel, param_count, with_budget
from grubench.results import SCHEMA, write_json
from grubench.tracking import Tracker, TrackingError
from grubench.watchdog import RESTARTS_ENV, Watchdog, exit_or_restart, restart_command

# ---------------------------------------------------------------------------------------------
# Pure functions: state is a pytree, the model is rebuilt with nnx.merge inside them.


def seed_keys(seed: jax.Array | int) -> tuple[jax.Array, jax.Array]:
    """(init, dropout) keys of one seed; its data order comes from `DataOrder`."""
    k = jax.random.split(jax.random.key(seed), 2)
    return k[0], k[1]


class DataOrder:
    """Which training rows each seed sees at each step, drawn on the host.

    Each epoch is a permutation of 0..n-1 from `np.random.default_rng([seed, epoch])`, read in
    order `batch` rows a step (a batch may span an epoch boundary), so the rows of step s depend
    only on (seed, s): a seed sees the same data alone or beside others, and a resumed run can
    pick up at any step.
    """

    def __init__(self, seeds: list[int], n: int, batch: int):
        self.seeds, self.n, self.batch = seeds, n, batch
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _perm(self, seed: int, epoch: int) -> np.ndarray:
        key = (seed, epoch)
        if key not in self._perms:
            # Keep only the epochs still in use: batches move forward through them.
            self._perms = {k: v for k, v in self._perms.items() if k[1] >= epoch - 1}
            self._perms[key] = np.random.default_rng([seed, epoch]).permutation(self.n)
        return self._perms[key]

    def indices(self, step: int) -> np.ndarray:
        """int32 [len(seeds), batch]: the rows of `step` for every seed."""
        pos = step * self.batch + np.arange(self.batch)
        epoch, offset = pos // self.n, pos % self.n
        out = np.empty((len(self.seeds), self.batch), np.int32)
        for i, seed in enumerate(self.seeds):
            for e in np.unique(epoch):
                sel = epoch == e
                out[i, sel] = self._perm(seed, int(e))[offset[sel]]
        return out


@dataclass
class Program:
    """The pure pieces of one configuration: init, train step and eval, not yet jitted."""

    graphdef: Any
    spec: tasks.TaskSpec
    tx: Any
    cfg: DictConfig

    def init(self, seed: jax.Array) -> dict[str, Any]:
        k_init, k_drop = seed_keys(seed)
        model = SequenceModel(self.cfg, rngs=nnx.Rngs(params=k_init))
        _, params = nnx.split(model)
        early = {"best_params": params} if self.cfg.trainer.patience else {}
        return {
            **early,
            "params": params,
            "opt": self.tx.init(params),
            "dropout_key": k_drop,
            "diverged": jnp.array(False),
            "diverged_step": jnp.array(-1, jnp.int32),
        }

    def init_seeds(self, seeds: list[int], init: Callable | None = None) -> dict[str, Any]:
        """The states of `seeds`, stacked on a leading seed axis, as `vmap(init)` would give.

        Each seed is initialised on its own and then stacked, not under `vmap`: XLA's CPU
        backend deadlocks running many batched QR decompositions (the orthogonal initialiser)
        in one program — `jax.jit(jax.vmap(f))` of twelve 64 x 64 `jnp.linalg.qr` hangs in
        `block_until_ready` with the CPU idle (jax 0.10.2; the reproducer is in the README).
        The states are bit-identical to vmap's."""
        init = init or jax.jit(self.init)
        states = [init(jnp.asarray(s, jnp.int32)) for s in seeds]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    def loss(self, params, batch: dict[str, jax.Array], dropout_key: jax.Array | None):
        model = nnx.merge(self.graphdef, params)
        if self.cfg.model.remat:  # the whole model in checkpointed chunks: O(sqrt(T)) memory
            return model.remat_loss(batch, dropout_key=dropout_key)
        return tasks.mean_loss(model(batch["x"], dropout_key=dropout_key), batch, self.spec)

    def train_step(self, state: dict[str, Any], step: jax.Array, idx: jax.Array,
                   data: dict[str, jax.Array]):
        """One AdamW step on one seed, on the training rows `idx`. A non-finite loss or
        gradient marks the seed diverged at `step` and freezes it; other seeds under vmap go
        on unaffected."""
        batch = jax.tree.map(lambda a: a[idx], data)
        use_dropout = self.cfg.model.dropout > 0
        dkey = jax.random.fold_in(state["dropout_key"], step) if use_dropout else None
        loss, grads = jax.value_and_grad(self.loss)(state["params"], batch, dkey)
        gnorm = optax.tree.norm(grads)
        updates, opt = self.tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        ok = finite & ~state["diverged"]
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        new = {
            **state,
            "params": keep(params, state["params"]),
            "opt": keep(opt, state["opt"]),
            "diverged": state["diverged"] | ~finite,
            "diverged_step": jnp.where(
                ~state["diverged"] & ~finite, step, state["diverged_step"]
            ).astype(jnp.int32),
        }
        return new, {"loss": loss, "grad_norm": gnorm}

    def grad_profile(self, params, batch: dict[str, jax.Array]) -> jax.Array:
        """[T]: mean over the batch of ||dL_i/dh_t|| at the first layer, L_i an example's loss
        (no dropout) — how much each time step's state matters to the loss."""
        model = nnx.merge(self.graphdef, params)
        b, t = batch["x"].shape[:2]
        zeros = jnp.zeros((b, t, self.cfg.model.hidden), jnp.float32)
        g = jax.grad(lambda e: tasks.mean_loss(model(batch["x"], probe=e), batch, self.spec))(
            zeros)
        return b * jnp.mean(jnp.linalg.norm(g, axis=-1), axis=0)

    def stream_step(self, params, x_t: jax.Array, carries: list) -> tuple[jax.Array, list]:
        """Streaming inference: one time step of one seed's model (see SequenceModel.step)."""
        return nnx.merge(self.graphdef, params).step(x_t, carries)

    def eval_sums(self, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model = nnx.merge(self.graphdef, params)
        return tasks.batch_sums(model(batch["x"]), batch, self.spec)


def build(cfg: DictConfig) -> Program:
    abstract = nnx.eval_shape(lambda: SequenceModel(cfg, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract)
    return Program(graphdef, tasks.spec(cfg.task), optim.optimizer(cfg.trainer), cfg)


# ---------------------------------------------------------------------------------------------
# The driver: Python loop, timing, evaluation, results.


class Evaluator:
    """Exact loss and accuracy of every seed on a whole split, in fixed-size padded batches
    (one compiled shape for all splits)."""

    def __init__(self, program: Program, batch_size: int):
        self.batch_size = batch_size
        self.fn = jax.jit(jax.vmap(program.eval_sums, in_axes=(0, None)))

    def __call__(self, params, split: tasks.Split) -> dict[str, np.ndarray]:
        arrays = split.arrays()
        n, bs = len(split), self.batch_size
        totals = None
        for start in range(0, n, bs):
            chunk = {k: v[start : start + bs] for k, v in arrays.items()}
            pad = bs - chunk["x"].shape[0]
            if pad:  # padded rows have zero masks, so they add nothing to the sums
                chunk = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                         for k, v in chunk.items()}
            sums = self.fn(params, chunk)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        t = jax.device_get(totals)
        out = {
            "loss": t["loss_sum"] / np.maximum(t["loss_weight"], 1.0),
            "accuracy": t["correct"] / np.maximum(t["count"], 1.0),
        }
        if "lag_correct" in t:  # [seeds, lags]; NaN where the split has no example at a lag
            with np.errstate(invalid="ignore", divide="ignore"):
                out["lag_accuracy"] = t["lag_correct"] / t["lag_count"]
        return out


def _where_seed(mask: np.ndarray, new, old):
    """Per seed (leading axis), `new` where mask else `old`."""
    m = jnp.asarray(mask)
    return jax.tree.map(lambda a, b: jnp.where(m.reshape(-1, *[1] * (a.ndim - 1)), a, b),
                        new, old)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, nothing in logs and pipes.
    return tqdm(total=total, disable=None if enabled else True, unit="step", dynamic_ncols=True)


class Preempted(Exception):
    """A pre-emption signal arrived; the state was checkpointed at `step`. `requeue`, when
    set, is the job scheduler's handler (submitit's): it requeues the job and exits."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", requeue: Any = None):
        super().__init__(f"preempted by {signal_name} at step {step}: run the same command to "
                         "resume")
        self.step = step
        self.signal_name = signal_name
        self.requeue = requeue


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


def completed(out_dir: str | Path) -> dict[str, Any] | None:
    """The results of `out_dir` if they record a completed run (never rerun, never overwritten)."""
    path = Path(out_dir) / "results.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return res if isinstance(res, dict) and res.get("status") == "completed" else None


def train(cfg: DictConfig, out_dir: str | Path, *, group: str | None = None,
          restart_argv: list[str] | None = None) -> dict[str, Any]:
    """Train `cfg` for every seed, write results.json and metrics.jsonl into `out_dir`, and
    return the results. The results record is written whatever the ending: completed,
    diverged (some seed's loss went non-finite), or failed (an exception, re-raised).

    A run resumes from the newest checkpoint in `out_dir/checkpoints` (or
    `trainer.resume`); a directory whose results.json says completed is returned untouched.
    `group` names the sweep for W&B (default `logger.group`). If no step finishes for
    `trainer.hang_timeout_s` seconds (a wedged XLA runtime), the process re-executes
    `restart_argv` (which must resume this run) or, without it, exits with status 3.
    """
    validate(cfg)
    cfg = with_budget(cfg)  # model.param_budget > 0 sets model.hidden
    out_dir = Path(out_dir)
    previous = completed(out_dir)
    if previous is not None:
        return previous
    out_dir.mkdir(parents=True, exist_ok=True)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    tr = cfg.trainer
    seeds = [cfg.seed + i for i in range(tr.seeds)]
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "status": "failed",
        "error": None,
        "config": config_dict,
        "model": cfg.model.name,
        "task": cfg.task.name,
        "hidden": cfg.model.hidden,
        "depth": cfg.model.depth,
        "seq_len": cfg.task.seq_len,
        "train_size": cfg.task.train_size,
        "params": None,
        "seeds": seeds,
        "metrics": {},
        "baselines": {"loss": tasks.baseline(cfg.task)},
        "speed": {},
        "memory": {},
    }
    tracker = Tracker(out_dir, cfg, config_dict, group=group, seeds=seeds)
    dog = Watchdog(cfg.trainer.hang_timeout_s, lambda stalled: exit_or_restart(
        f"no training step finished for {stalled:.0f} s (trainer.hang_timeout_s="
        f"{cfg.trainer.hang_timeout_s:g}): the XLA runtime is stuck", restart_argv))
    t_start = time.perf_counter()
    try:
        _run(cfg, seeds, results, tracker, out_dir, config_dict, dog)
    except BaseException as e:
        results["status"] = "failed"
        results["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        raise
    finally:
        dog.stop()
        results["wall_s"] = time.perf_counter() - t_start
        tracker.summary(results)
        tracker.close()
        write_json(out_dir / "results.json", results)
    return results


def _fault(point: str) -> None:
    """Fault injection for the resume tests, at the end of step N (after its checkpoint, if one
    falls there) or at `end` (after the last step, before the final evaluation):
    GRUBENCH_FAULT=kill@N sends this process SIGKILL, term@N sends SIGTERM (pre-emption),
    usr2@N sends SIGUSR2 (submitit's pre-emption and time-out signal), hang@N blocks forever
    as a wedged runtime would in the first process of a command (not after a watchdog restart),
    stuck@N in every process."""
    fault = os.environ.get("GRUBENCH_FAULT", "")
    if fault == f"stuck@{point}" or (fault == f"hang@{point}" and
                                      not os.environ.get(RESTARTS_ENV)):
        threading.Event().wait()
    for name, sig in (("kill", signal.SIGKILL), ("term", signal.SIGTERM),
                      ("usr2", signal.SIGUSR2)):
        if fault == f"{name}@{point}":
            os.kill(os.getpid(), sig)


class _StopSignals:
    """While active, SIGTERM (SLURM pre-emption) and, under submitit, its pre-emption signal
    (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise) only raise a flag; the loop
    checkpoints at the end of the step and stops. submitit's own handler for its signal is kept
    as `requeue`, to be called once the checkpoint is safe: it requeues the job and exits. A
    second signal before the step ends terminates the process as usual."""

    def __init__(self):
        self.raised: str | None = None
        self.requeue: Any = None

    def __enter__(self):
        self.raised, self.requeue = None, None
        self._old: dict[int, Any] = {}
        names = {"SIGTERM", "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")}
        try:
            for name in sorted(names):
                sig = getattr(signal, name, None)
                if sig is None:
                    continue
                old = signal.getsignal(sig)
                if sig != signal.SIGTERM and not callable(old):
                    continue  # nobody asked for this signal: leave its default alone
                self._old[sig] = old
                signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._restore()
        return self

    def _handle(self, signum, frame):
        if self.raised:  # a second signal: the step did not end (a hang?); die at once
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        self.raised = signal.Signals(signum).name
        old = self._old.get(signum)
        if signum != signal.SIGTERM and callable(old):
            self.requeue = lambda: old(signum, None)

    def _restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()


def _resume_source(cfg: DictConfig, own: Checkpoints) -> Checkpoints:
    """Where to resume from: `trainer.resume` (a run directory or its checkpoints/), else the
    run's own checkpoints."""
    if not cfg.trainer.resume:
        return own
    path = Path(cfg.trainer.resume)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    source = Checkpoints(path, cfg.trainer.keep_checkpoints)
    if source.latest() is None:
        raise CheckpointError(f"trainer.resume={cfg.trainer.resume}: no checkpoint found there")
    return source


def _run(cfg: DictConfig, seeds: list[int], results: dict[str, Any], tracker: Tracker,
         out_dir: Path, config_dict: dict, dog: Watchdog) -> None:
    tr = cfg.trainer
    dog.start()  # from here on, so a wedged initialisation is caught too
    splits = tasks.make_splits(cfg.task)
    program = build(cfg)
    with dog.paused():  # compiling is slow but cannot wedge; running it can
        init = jax.jit(program.init).lower(jnp.int32(0)).compile()
    state = program.init_seeds(seeds, init)
    results["params"] = param_count(jax.tree.map(lambda a: a[0], state["params"]))
    results["train_size"] = len(splits.train)  # what the task had, not just what was asked
    data = jax.device_put(splits.train.arrays())

    ckpts = Checkpoints(out_dir / "checkpoints", tr.keep_checkpoints)
    start = 0
    best_val = np.full(len(seeds), np.inf)
    best_step = np.zeros(len(seeds), np.int64)
    since_best = np.zeros(len(seeds), np.int64)  # evaluations without a better val loss
    step_times: list[float] = []
    restored = _resume_source(cfg, ckpts).restore(state, config_dict)
    if restored is not None:
        state, meta = restored
        start = int(meta["step"])
        best_val = np.array([np.inf if v is None else v for v in meta["best_val"]])
        best_step = np.array(meta["best_step"], np.int64)
        since_best = np.array(meta["since_best"], np.int64)
        step_times = list(meta["step_times"])
        tracker.jsonl.rows = list(meta["rows"])
        results["resumed_from_step"] = start

    def checkpoint(done: int) -> None:
        ckpts.save(done, state, {
            "step": done, "best_val": best_val, "best_step": best_step, "since_best": since_best,
            "step_times": step_times[-1000:], "rows": tracker.jsonl.rows, "config": config_dict,
        })

    order = DataOrder(seeds, len(splits.train), tr.batch_size)
    step_fn = jax.jit(jax.vmap(program.train_step, in_axes=(0, None, 0, None)),
                      donate_argnums=0)
    t0 = time.perf_counter()
    with dog.paused():
        compiled = step_fn.lower(state, jnp.int32(0), order.indices(0), data).compile()
    compile_s = time.perf_counter() - t0
    # The training set is an argument of the step but the same for every model: left out.
    results["memory"] = {
        "train_step_bytes": measure.compiled_bytes(
            compiled, exclude_bytes=sum(a.nbytes for a in jax.tree.leaves(data))),
        "peak_bytes": measure.device_peak_bytes(),
    }

    evaluate = Evaluator(program, min(tr.eval_batch_size, len(splits.val), len(splits.test)))
    probe = None
    if tr.grad_probe:
        probe_batch = splits.val.take(evaluate.batch_size).arrays()
        with dog.paused():
            probe_fn = jax.jit(jax.vmap(program.grad_profile, in_axes=(0, None))).lower(
                state["params"], probe_batch).compile()
        probe = lambda params: np.asarray(probe_fn(params, probe_batch))
        if start == 0:
            results["grad_norms_init"] = {"t": list(range(int(splits.val.x.shape[1]))),
                                          "step": 0, "norm": probe(state["params"])}
    # train_loss is measured like val_loss, on the whole training set up to 5 000 examples
    # (at least as many as validation has), so the gap compares like with like.
    train_eval = splits.train.take(max(len(splits.val), min(len(splits.train), 5000)))
    bar = _progress(tr.steps, tr.progress)
    bar.update(start)
    end = tr.steps
    if tr.patience and np.all(since_best >= tr.patience):  # resumed after stopping early
        end = start
        results["stopped_early_at"] = start
    dog.tick()
    with _StopSignals() as stop_signal:
        for step in range(start, end):
            idx = order.indices(step)
            t = time.perf_counter()
            state, out = compiled(state, jnp.int32(step), idx, data)
            jax.block_until_ready(state)
            dog.tick()
            step_times.append(time.perf_counter() - t)
            done = step + 1
            if done % tr.log_every == 0 or done == tr.steps:
                loss = np.asarray(out["loss"])
                recent = step_times[-tr.log_every :]
                rate = len(recent) / sum(recent)
                tracker.log(done, {"train/loss": loss,
                                   "train/grad_norm": np.asarray(out["grad_norm"]),
                                   "steps_per_s": rate})
                finite = loss[np.isfinite(loss)]
                shown = f"{finite.mean():.4f}" if finite.size else "non-finite"
                bar.set_postfix(loss=shown, steps_s=f"{rate:.1f}")
            if done % tr.eval_every == 0 or done == tr.steps:
                val = evaluate(state["params"], splits.val)
                dog.tick()
                tracker.log(done, {"val/loss": val["loss"], "val/accuracy": val["accuracy"]})
                tracker.flush()
                better = val["loss"] < best_val
                best_val = np.where(better, val["loss"], best_val)
                best_step = np.where(better, done, best_step)
                since_best = np.where(better, 0, since_best + 1)
                if tr.patience:
                    state["best_params"] = _where_seed(better, state["params"],
                                                       state["best_params"])
            bar.update(1)
            stop = bool(tr.patience) and bool(np.all(since_best >= tr.patience))
            if (tr.checkpoint_every and done % tr.checkpoint_every == 0) or done == tr.steps \
                    or stop:
                checkpoint(done)
            _fault(str(done))
            if stop_signal.raised:
                if done % (tr.checkpoint_every or tr.steps + 1) and done != tr.steps:
                    checkpoint(done)
                raise Preempted(done, stop_signal.raised, stop_signal.requeue)
            if stop:
                results["stopped_early_at"] = done
                break
    bar.close()
    ckpts.close()
    _fault("end")

    params = state["best_params"] if tr.patience else state["params"]
    if probe is not None:
        results["grad_norms"] = {"t": list(range(int(splits.val.x.shape[1]))),
                                 "step": int(results.get("stopped_early_at", tr.steps)),
                                 "norm": probe(params)}
    final = {}
    for name, split in (("train", train_eval), ("val", splits.val), ("test", splits.test)):
        final[name] = evaluate(params, split)
        dog.tick()
    diverged = np.asarray(state["diverged"])
    mask = lambda v: np.where(diverged, np.nan, v)
    metrics = {}
    for name, m in final.items():
        metrics[f"{name}_loss"] = mask(m["loss"])
        metrics[f"{name}_accuracy"] = mask(m["accuracy"])
    metrics["gap"] = metrics["val_loss"] - metrics["train_loss"]
    if program.spec.loss_scale != 1.0:  # e.g. MSE in sunspots^2 beside the standardised one
        for name in final:
            metrics[f"{name}_loss_original_units"] = metrics[f"{name}_loss"] * \
                program.spec.loss_scale
    metrics["best_val_loss"] = mask(best_val)
    metrics["best_step"] = best_step.astype(float)
    metrics["diverged"] = diverged.astype(float)  # its mean over seeds: the divergence rate
    if "lag_accuracy" in final["test"]:
        lag_acc = np.where(diverged[:, None], np.nan, final["test"]["lag_accuracy"])
        results["recall"] = {"lags": list(program.spec.lags), "split": "test",
                             "accuracy": lag_acc, "solved_at": SOLVED}
        metrics["solved_lag"] = mask(solved_lag(program.spec.lags, lag_acc))
    results["metrics"] = {k: [float(x) for x in np.asarray(v)] for k, v in metrics.items()}

    # Streaming inference (a real-time speech or chat server): one step at batch 1, seed 0.
    one = jax.tree.map(lambda a: a[0], params)
    carries = nnx.merge(program.graphdef, one).initial_carries(1)
    stream_s = measure.stream_step_time(program.stream_step, one, splits.test.x[:1, 0], carries,
                                        repeats=tr.stream_repeats) if tr.stream_repeats else None
    results["memory"]["param_bytes"] = measure.param_bytes(one)
    results["memory"]["peak_bytes"] = measure.device_peak_bytes()

    timed = step_times[tr.timing_warmup :] or step_times
    tokens = len(seeds) * tr.batch_size * int(splits.train.x.shape[1])
    step_s = statistics.median(timed) if timed else math.nan
    results["speed"] = {
        "step_time_ms": 1e3 * step_s,
        "compile_s": compile_s,
        "tokens_per_s": tokens / step_s,
        "timed_steps": len(timed),
        "stream_step_ms": None if stream_s is None else 1e3 * stream_s,
        "device": str(jax.devices()[0].device_kind),
    }
    if diverged.any():
        steps = np.asarray(state["diverged_step"])
        results["diverged"] = {str(s): int(steps[i]) for i, s in enumerate(seeds) if diverged[i]}
        results["status"] = "diverged"
        results["error"] = "non-finite loss: " + ", ".join(
            f"seed {s} at step {st}" for s, st in results["diverged"].items()
        )
    else:
        results["status"] = "completed"


# ---------------------------------------------------------------------------------------------
# Printing


def format_summary(results: dict[str, Any]) -> str:
    """A few lines a person reads at the end of a run."""
    m = results["metrics"]

    def ms(k: str) -> str:
        xs = [x for x in m.get(k, []) if x is not None and math.isfinite(x)]
        if not xs:
            return "n/a"
        mean = sum(xs) / len(xs)
        std = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{mean:.4f} ± {std:.4f}" if len(xs) > 1 else f"{mean:.4f}"

    base = results["baselines"]["loss"]
    sp = results["speed"]
    lines = [
        f"{results['model']} on {results['task']} (seq_len={results['seq_len']}, "
        f"hidden={results['hidden']}, depth={results['depth']}, params={results['params']}, "
        f"seeds={results['seeds']}): {results['status']}",
        f"  test_loss {ms('test_loss')}  (baseline {base:.4f})  test_accuracy "
        f"{ms('test_accuracy')}  gap {ms('gap')}",
    ]
    if sp:
        lines.append(
            f"  step {sp['step_time_ms']:.2f} ms  compile {sp['compile_s']:.1f} s  "
            f"{sp['tokens_per_s']:.0f} tokens/s  wall {results['wall_s']:.0f} s"
        )
        if sp.get("stream_step_ms") is not None:
            lines.append(f"  streaming step (batch 1) {1e3 * sp['stream_step_ms']:.0f} us  "
                         f"params {results['memory'].get('param_bytes', 0) / 1e3:.1f} kB")
    if results.get("error"):
        lines.append(f"  {results['error']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The command line


def _hydra_app(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    out_dir = Path(hc.runtime.output_dir)
    try:
        validate(cfg)
    except ConfigError as e:
        _fail(str(e), 2)
    previous = completed(out_dir)
    if previous is not None:
        print(f"{out_dir}: completed before; not rerun (remove its results.json to rerun)")
        print(format_summary(previous), flush=True)
        return
    try:
        # A sweep is one W&B group, named after its directory unless logger.group says.
        group = cfg.logger.group or (Path(hc.sweep.dir).name if multirun else None)
        results = train(cfg, out_dir, group=group, restart_argv=_restart_argv(hc, multirun))
    except Preempted as e:
        if e.requeue is not None:  # under submitit: the checkpoint is safe, requeue now
            print(f"grubench-train: preempted by {e.signal_name} at step {e.step}: checkpointed; "
                  "submitit requeues the job", file=sys.stderr, flush=True)
            e.requeue()
        _fail(str(e), 143)  # a pre-empted sweep stops too: its launcher requeues it
    except KeyboardInterrupt:
        _fail("interrupted; results.json records the run as failed", 130)
    except (CheckpointError, TrackingError) as e:
        _fail_job(str(e), 2, multirun)
        return
    except Exception as e:  # noqa: BLE001 - one line; results.json already says failed
        _fail_job(f"run failed ({type(e).__name__}: {e})".splitlines()[0], 1, multirun)
        return
    print(format_summary(results), flush=True)


def _restart_argv(hc, multirun: bool) -> list[str] | None:
    """This command, pinned to its output directory, for the hang watchdog; None where this
    process is a launcher's worker (joblib, submitit), whose command is not the user's."""
    if "BasicLauncher" not in str(hc.launcher.get("_target_", "")):
        return None
    key, where = ("hydra.sweep.dir", hc.sweep.dir) if multirun else \
        ("hydra.run.dir", hc.runtime.output_dir)
    return restart_command([sys.executable, *sys.orig_argv[1:]], key, str(where))


def _fail(message: str, code: int) -> None:
    print(f"grubench-train: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _fail_job(message: str, code: int, multirun: bool) -> None:
    """A failed job ends a single run; in a sweep it is reported and the sweep goes on."""
    if not multirun:
        _fail(message, code)
    print(f"grubench-train: error: {message}", file=sys.stderr)


def main() -> None:
    """Console entry point: check the overrides first (one line, exit 2), then run Hydra."""
    import hydra

    from grubench.cli import CONF_DIR, check_overrides

    try:
        check_overrides(sys.argv[1:])
    except ConfigError as e:
        _fail(str(e), 2)
    app = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(
        _hydra_app
    )
    app()


if __name__ == "__main__":
    main()
