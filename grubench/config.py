"""The config schema, its Hydra config store, and its validation.

The dataclasses are the schema. `store()` puts them in Hydra's ConfigStore: `base_config` for
config.yaml, and one node per registered cell (group `model`) and task (group `task`), each the
entry's own dataclass (`grubench.registry`), so a misspelled key or a value of the wrong type
is rejected while composing. `validate` then checks ranges and choices, before any JAX work,
and raises `ConfigError` with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from grubench import population
from grubench.errors import ConfigError
from grubench.registry import CELLS, TASKS

OPTIMIZERS = ("adamw", "rmsprop")
# How a recurrent layer's backward pass runs (grubench.layers.Recurrent).
BACKWARDS = ("fused", "autodiff", "persistent")
SHARDS = ("members", "batch")
LOGGERS = ("none", "wandb")

# Config keys that change nothing a run computes or measures: process and bookkeeping settings.
# A run resumes a checkpoint written under other values of these, and grubench-report pools
# runs that differ only in these (and the seed). A key ending in "." covers a whole group.
FREE_KEYS = (
    "trainer.progress",
    "trainer.resume",
    "trainer.checkpoint_every",
    "trainer.checkpoint_every_s",
    "trainer.start_allowance_s",
    "trainer.keep_checkpoints",
    "trainer.hang_timeout_s",
    "logger.",
)
# Keys that change how the same gradients are computed, not what they are (backward pass, scan
# unroll, the scan of a cell linear in h): a checkpoint resumes under other values of these;
# the report keeps them apart, since they change the speed.
SAME_MATH_KEYS = ("model.backward", "model.unroll", "model.scan", "trainer.shard")
# Keys added after results and checkpoints were first written, with the value a config without
# them had: a checkpoint without one resumes under that value, and the report leaves such a key
# out of a run's description at that value.
ADDED_KEYS: dict[str, Any] = {"model.matmul_dtype": "float32", "trainer.shard": "members"}


# Keys that configs written before the cell registry held and configs no longer hold (the cell
# is the model's name; a GRU's form is gru or gru_v1; only the LSTM's config has forget_bias),
# with the value they had when a config did not set them (None: always implied by the name). A
# resumed checkpoint compares them only where today's config has them; the report leaves them
# out of a run's description where they hold that value.
LEGACY_KEYS: dict[str, Any] = {
    "model.cell": None,
    "model.reset_after": None,
    "model.forget_bias": 1.0,
}


def is_free_key(key: str, keys: tuple[str, ...] = FREE_KEYS) -> bool:
    """Whether the dotted config `key` is one of `keys` or inside a group ending in "."."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)


def config_difference(
    a: dict,
    b: dict,
    free: tuple[str, ...] = FREE_KEYS + SAME_MATH_KEYS,
    there: str = "in the checkpoint",
    prefix: tuple = (),
) -> str | None:
    """The first key where two resolved configs differ, as 'key=A here, B THERE'; the keys
    `free` (default: those that may differ on resume, FREE_KEYS and SAME_MATH_KEYS) are
    skipped, and a key in ADDED_KEYS missing from one side takes its implied value."""
    for k in sorted(set(a) | set(b), key=lambda k: (k != "name", k)):  # a name says most
        path = (*prefix, k)
        if is_free_key(".".join(path), free) or (".".join(path) in LEGACY_KEYS and k not in a):
            continue
        added = ADDED_KEYS.get(".".join(path))
        va, vb = a.get(k, added), b.get(k, added)
        if isinstance(va, dict) and isinstance(vb, dict):
            diff = config_difference(va, vb, free, there, path)
            if diff:
                return diff
        elif va != vb:
            return f"{'.'.join(path)}={va!r} here, {vb!r} {there}"
    return None


__all__ = [
    "ADDED_KEYS",
    "FREE_KEYS",
    "LEGACY_KEYS",
    "SAME_MATH_KEYS",
    "Config",
    "ConfigError",
    "GridConfig",
    "LoggerConfig",
    "ModelConfig",
    "TaskConfig",
    "TrainerConfig",
    "config_difference",
    "is_free_key",
    "no_such_key",
    "require",
    "store",
    "validate",
]


@dataclass
class ModelConfig:
    """One recurrent model: encoder -> `depth` x Recurrent(cell) -> head. `name` is the
    registered cell (`model=NAME`); a cell with options of its own subclasses this."""

    name: str = "gru"
    hidden: int = 128
    depth: int = 1
    dropout: float = 0.0  # on the output of every recurrent layer (Zaremba et al. 2014)
    embed_dim: int = 0  # encoder width; 0 feeds one-hot tokens / raw reals straight in
    unroll: int = 0  # jax.lax.scan unroll factor; 0: 1 on CPU, 8 on GPU (layers.default_unroll)
    # fused: the cell's hand-written layer backward (grubench/fused.py), where it has one;
    # autodiff: JAX's own reverse of the scan; persistent (gru, lstm): the whole time loop in
    # one Pallas kernel each way (grubench/persistent.py). The same gradients.
    backward: str = "fused"
    # bfloat16: matmul operands cast to bfloat16, float32 accumulation, carries and gates (GPU
    # tensor cores); needs a cell with a fused backward and backward=fused, or a cell linear in
    # h (whose only matmul is the projection).
    matmul_dtype: str = "float32"
    # Cells linear in h (mingru, minlstm): parallel = log-space jax.lax.associative_scan,
    # sequential = linear-space scan, auto = sequential on CPU, parallel on an accelerator
    # (layers.default_min_scan).
    scan: str = "auto"
    # Train in checkpointed time chunks of remat_chunk steps (0: about sqrt(T)), each running
    # encoder, layers, head and loss (SequenceModel.remat_loss): training memory O(sqrt(T))
    # hidden states instead of O(T), for one more forward pass.
    remat: bool = False
    remat_chunk: int = 0
    # > 0: choose `hidden` so the model has as close to this many parameters as possible
    # (GRU, LSTM and tanh-RNN compared at equal size, as Chung et al. 2014 did).
    param_budget: int = 0
    recurrent_init: str = "orthogonal"  # orthogonal | lecun_normal
    bias_init: float = 0.0


@dataclass
class TaskConfig:
    """Fields every task has; a task subclasses it with its own. `seq_len` is the task's length
    knob (see each task)."""

    name: str = MISSING
    seq_len: int = 20
    train_size: int = 10_000
    val_size: int = 1_000
    test_size: int = 1_000
    data_seed: int = 1234


@dataclass
class GridConfig:
    """A population's grid (`grubench.population`): each key given a list trains every value,
    times `trainer.seeds` seeds, as one program; None leaves the key at its config value."""

    lr: list[Any] | None = None  # trainer.lr
    weight_decay: list[Any] | None = None  # trainer.weight_decay
    clip_norm: list[Any] | None = None  # trainer.clip_norm
    dropout: list[Any] | None = None  # model.dropout


@dataclass
class TrainerConfig:
    steps: int = 2000
    batch_size: int = 32
    seeds: int = 1  # seeds trained together under jax.vmap: seed, seed+1, ...
    # Population members: trainer.seeds seeds x every combination of these values.
    grid: GridConfig = field(default_factory=GridConfig)
    # members: the population's members spread over every device (jax.sharding); batch: each
    # member's batch split over the devices (data parallel, for one large member).
    shard: str = "members"
    optimizer: str = "adamw"  # adamw | rmsprop (decay rho, as Chung et al. 2014 used)
    rho: float = 0.9  # rmsprop's decay of the squared-gradient average
    lr: float = 1e-2
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    clip_norm: float = 1.0  # global-norm gradient clipping; 0 disables
    warmup_steps: int = 100
    final_lr_ratio: float = 0.1  # cosine decays lr to lr * final_lr_ratio
    # Evaluate (validation and a fixed training subset) every this many steps; 0: steps // 20
    # (at least 1), so a run's learning curves have 20 points.
    eval_every: int = 0
    log_every: int = 50
    eval_batch_size: int = 500
    timing_warmup: int = 5  # steps excluded from the step-time median
    stream_repeats: int = 200  # streaming-inference steps timed at batch 1 (0: not measured)
    # Early stopping: > 0 keeps each member's best-validation parameters for the final
    # evaluation, freezes a member once it has gone `patience` evaluations without a better
    # validation loss, and ends the run once every member has.
    patience: int = 0
    # Record |dL/dh_t| against t at the first layer, at step 0 and at the end
    # (results.json: grad_norms_init, grad_norms).
    grad_probe: bool = False
    checkpoint_every: int = 500  # also at the end; 0: only at the end
    # Also checkpoint once this many seconds of the start have passed since the last one (a
    # hard kill loses at most this much work); 0: on steps only.
    checkpoint_every_s: float = 0.0
    # Seconds a start needs before its first step (start-up, data, compilation): a SLURM time
    # limit must leave this plus checkpoint_every_s before the pre-emption signal
    # (grubench/slurm.py).
    start_allowance_s: float = 60.0
    keep_checkpoints: int = 2
    resume: str | None = None  # a run or checkpoints directory to continue from
    # No step finished for this long: the XLA CPU runtime is stuck (a rare upstream hang);
    # the command restarts itself from the last checkpoint (grubench/process.py). 0: off.
    hang_timeout_s: float = 600.0
    progress: bool = True  # tqdm bar on a terminal


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "grubench"
    entity: str | None = None
    group: str | None = None
    # auto: online when an API key is configured, else offline | online | offline | disabled
    mode: str = "auto"
    # Where W&B writes its runs (DIR/wandb/...): null is $WANDB_DIR, else the sweep's directory
    # (a single run's own), so one `wandb sync DIR/wandb/offline-run-*` uploads a whole sweep.
    dir: str | None = None
    # Also log each run's final checkpoint as a W&B artifact (type "model").
    log_checkpoints: bool = False


@dataclass
class Config:
    model: Any = MISSING  # a registered cell's config dataclass
    task: Any = MISSING  # a registered task's config dataclass
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0


def store() -> None:
    """Put the schema in Hydra's ConfigStore: `base_config` for config.yaml, and in the groups
    `model` and `task` one node per registered cell and task. Called by the entry points and by
    `grubench.cli.compose` before Hydra composes; idempotent."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for cell in CELLS:
        cs.store(group="model", name=cell.name, node=cell.config(name=cell.name))
    for task in TASKS:
        cs.store(group="task", name=task.name, node=task.config(name=task.name))


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raise ConfigError('KEY=VALUE is not allowed: ALLOWED') unless `ok`. A whole-number float
    shows without its ".0" (trainer.lr=-1 typed, or -1.0, is refused as trainer.lr=-1)."""
    if not ok:
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            value = int(value)
        raise ConfigError(f"{key}={value} is not allowed: {allowed}")


def validate(cfg: DictConfig | Config) -> None:
    """Check ranges and choices; raise ConfigError with one line on the first bad value."""
    c = OmegaConf.structured(cfg) if not isinstance(cfg, DictConfig) else cfg
    m, t, tr, lg = c.model, c.task, c.trainer, c.logger
    cell = _entry(CELLS, "model", m.name)
    task = _entry(TASKS, "task", t.name)
    _same_entry(m, cell.config, "model")
    _same_entry(t, task.config, "task")
    for node, schema, where in (
        (c, Config, ""),
        (tr, TrainerConfig, "trainer."),
        (lg, LoggerConfig, "logger."),
    ):  # trainer.grid: population.grid says what a grid may vary
        _known_keys(node, schema, where)
    _finite(c)
    require(m.hidden >= 1, "model.hidden", m.hidden, "an integer >= 1")
    require(m.depth >= 1, "model.depth", m.depth, "an integer >= 1")
    require(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "a float in [0, 1)")
    require(m.embed_dim >= 0, "model.embed_dim", m.embed_dim, "an integer >= 0")
    require(
        m.unroll >= 0,
        "model.unroll",
        m.unroll,
        "an integer >= 0 (0: 1 on CPU, 8 on an accelerator)",
    )
    require(m.backward in BACKWARDS, "model.backward", m.backward, "one of " + ", ".join(BACKWARDS))
    if m.backward == "persistent":
        have = ", ".join(n for n in CELLS.names() if CELLS.get(n).persistent)
        require(
            cell.persistent,
            "model.backward",
            m.backward,
            f"fused or autodiff for model={m.name} (persistent: {have})",
        )
    require(
        m.matmul_dtype in ("float32", "bfloat16"),
        "model.matmul_dtype",
        m.matmul_dtype,
        "float32 or bfloat16",
    )
    require(
        m.matmul_dtype == "float32" or cell.linear_in_h or (cell.fused and m.backward == "fused"),
        "model.matmul_dtype",
        m.matmul_dtype,
        f"float32 for model={m.name} with model.backward={m.backward} (bfloat16 needs the "
        "fused backward, or a cell linear in h)",
    )
    require(
        m.scan in ("auto", "parallel", "sequential"),
        "model.scan",
        m.scan,
        "auto, parallel or sequential",
    )
    require(
        m.scan == "auto" or m.scan in cell.scans,
        "model.scan",
        m.scan,
        "parallel and sequential apply to cells linear in h only (model="
        + ", ".join(c.name for c in CELLS if c.scans)
        + ")",
    )
    require(
        m.remat_chunk >= 0,
        "model.remat_chunk",
        m.remat_chunk,
        "an integer >= 0 (0: about sqrt(seq_len))",
    )
    require(
        m.param_budget >= 0,
        "model.param_budget",
        m.param_budget,
        "an integer >= 0 (0: use model.hidden)",
    )
    require(
        m.recurrent_init in ("orthogonal", "lecun_normal"),
        "model.recurrent_init",
        m.recurrent_init,
        "orthogonal or lecun_normal",
    )
    require(t.seq_len >= 1, "task.seq_len", t.seq_len, "an integer >= 1")
    for k in ("train_size", "val_size", "test_size"):
        require(t[k] >= 1, f"task.{k}", t[k], "an integer >= 1")
    require(0 <= t.data_seed < 2**32, "task.data_seed", t.data_seed, "an integer in [0, 2**32)")
    if task.validate is not None:
        task.validate(t)
    require(tr.steps >= 1, "trainer.steps", tr.steps, "an integer >= 1")
    require(tr.batch_size >= 1, "trainer.batch_size", tr.batch_size, "an integer >= 1")
    require(
        tr.batch_size <= t.train_size,
        "trainer.batch_size",
        tr.batch_size,
        f"at most task.train_size={t.train_size}, the sequences a batch is drawn from",
    )
    require(tr.seeds >= 1, "trainer.seeds", tr.seeds, "an integer >= 1")
    # Seeds seed .. seed + seeds - 1 become int32 PRNG seeds and numpy generator seeds.
    require(
        0 <= c.seed <= 2**31 - tr.seeds,
        "seed",
        c.seed,
        f"an integer in [0, {2**31 - tr.seeds}] (seeds seed .. seed + trainer.seeds - 1 "
        "must fit in int32)",
    )
    population.grid(c)  # ConfigError on an empty, non-numeric or out-of-range grid
    require(tr.shard in SHARDS, "trainer.shard", tr.shard, f"one of {', '.join(SHARDS)}")
    require(
        tr.optimizer in OPTIMIZERS,
        "trainer.optimizer",
        tr.optimizer,
        f"one of {', '.join(OPTIMIZERS)}",
    )
    require(tr.lr > 0, "trainer.lr", tr.lr, "a float > 0")
    require(0 < tr.rho < 1, "trainer.rho", tr.rho, "a float in (0, 1)")
    require(tr.patience >= 0, "trainer.patience", tr.patience, "an integer >= 0 (0: off)")
    require(tr.weight_decay >= 0, "trainer.weight_decay", tr.weight_decay, "a float >= 0")
    require(0 <= tr.b1 < 1, "trainer.b1", tr.b1, "a float in [0, 1)")
    require(0 <= tr.b2 < 1, "trainer.b2", tr.b2, "a float in [0, 1)")
    require(tr.clip_norm >= 0, "trainer.clip_norm", tr.clip_norm, "a float >= 0 (0 disables)")
    require(tr.warmup_steps >= 0, "trainer.warmup_steps", tr.warmup_steps, "an integer >= 0")
    require(0 <= tr.final_lr_ratio <= 1, "trainer.final_lr_ratio", tr.final_lr_ratio, "in [0, 1]")
    require(
        tr.eval_every >= 0,
        "trainer.eval_every",
        tr.eval_every,
        "an integer >= 0 (0: trainer.steps // 20, 20 evaluations)",
    )
    require(tr.log_every >= 1, "trainer.log_every", tr.log_every, "an integer >= 1")
    require(
        tr.eval_batch_size >= 1, "trainer.eval_batch_size", tr.eval_batch_size, "an integer >= 1"
    )
    require(
        tr.stream_repeats >= 0,
        "trainer.stream_repeats",
        tr.stream_repeats,
        "an integer >= 0 (0: not measured)",
    )
    require(tr.timing_warmup >= 0, "trainer.timing_warmup", tr.timing_warmup, "an integer >= 0")
    require(
        tr.checkpoint_every >= 0,
        "trainer.checkpoint_every",
        tr.checkpoint_every,
        "an integer >= 0 (0: only at the end)",
    )
    for key in ("checkpoint_every_s", "start_allowance_s"):
        require(tr[key] >= 0, f"trainer.{key}", tr[key], "a number of seconds >= 0")
    require(
        tr.keep_checkpoints >= 1,
        "trainer.keep_checkpoints",
        tr.keep_checkpoints,
        "an integer >= 1",
    )
    require(
        tr.hang_timeout_s >= 0,
        "trainer.hang_timeout_s",
        tr.hang_timeout_s,
        "a number of seconds >= 0 (0: no watchdog)",
    )
    require(lg.name in LOGGERS, "logger", lg.name, f"one of {', '.join(LOGGERS)}")
    require(
        lg.mode in ("auto", "online", "offline", "disabled"),
        "logger.mode",
        lg.mode,
        "auto, online, offline or disabled",
    )
    if lg.name == "wandb":  # installed, a key for online, a directory to write into
        from grubench.tracking import check_logger

        check_logger(lg)
    if task.requires is not None:
        from grubench.tasks.data import check_requires

        check_requires(task)


def no_such_key(key: str, value: object, keys: Any) -> str:
    """The message for a config key that does not exist: the keys there are beside it (`keys`),
    and, for a key of another registered model or task, whose key it is."""
    parent, _, name = key.rpartition(".")
    there = f": keys of {parent or 'the config'} are {', '.join(map(str, keys))}" if keys else ""
    registry: Any = {"model": CELLS, "task": TASKS}.get(parent, ())
    owners = [e.name for e in registry if name in {f.name for f in fields(e.config)}]
    whose = f" (a key of {parent}={', '.join(owners)})" if owners else ""
    return f"{key}={value} is not allowed: no such key{there}{whose}"


def _known_keys(node: Any, schema: type, where: str) -> None:
    """ConfigError for a key the schema does not have: one added with `+KEY=VALUE` (Hydra adds
    any key so given), e.g. a misspelled `+model.hiden=3`."""
    known = [f.name for f in fields(schema)]
    extra = [str(k) for k in node.keys() if k not in known and not (k == "hydra" and not where)]
    if extra:
        value = OmegaConf.select(node, extra[0], throw_on_resolution_failure=False)
        raise ConfigError(no_such_key(f"{where}{extra[0]}", value, known))


def _finite(c: DictConfig) -> None:
    """ConfigError for a float value that is inf or nan (`trainer.lr=inf`): no run can mean it."""
    for part in ("model", "task", "trainer"):
        for key, value in _leaves(OmegaConf.to_container(c[part], resolve=True), part):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key}={value} is not allowed: a finite number")


def _leaves(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every scalar under `node`, list items numbered key[i]."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{key}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, node


def _same_entry(node: Any, schema: type, group: str) -> None:
    """ConfigError unless the node has exactly the keys of its entry's dataclass: a `NAME.name`
    override that names another entry than the one `GROUP=NAME` chose, or a key added with `+`
    that the entry does not have."""
    own = {f.name for f in fields(schema)}
    if set(node.keys()) - own:
        _known_keys(node, schema, f"{group}.")
    if set(node.keys()) != own:
        raise ConfigError(
            f"{group}.name={node.name} is not allowed: choose the {group} with {group}=NAME "
            f"({group}.name is the name of the {group} chosen)"
        )


def _entry(registry: Any, key: str, name: str) -> Any:
    """The registry entry `name`, or ConfigError naming the ones there are."""
    if name not in registry:
        raise ConfigError(f"{key}={name} is not allowed: one of {', '.join(registry.names())}")
    return registry.get(name)
