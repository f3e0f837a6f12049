"""Structured configs, registered in Hydra's ConfigStore, and their validation.

The dataclasses are the schema: Hydra merges `conf/` into them, so a misspelled key or a value
of the wrong type is rejected while composing. `validate` then checks ranges and choices,
before any JAX work, and raises `ConfigError` with one line naming the key, the value and
what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CELLS = ("gru", "lstm", "rnn", "mingru", "minlstm")
MODELS = ("gru", "gru_v1", "lstm", "rnn", "mingru", "minlstm")
OPTIMIZERS = ("adamw", "rmsprop")
LOGGERS = ("none", "wandb")


class ConfigError(ValueError):
    """A configuration value outside what is allowed; the message is one line."""


@dataclass
class ModelConfig:
    """One recurrent model: encoder -> `depth` x Recurrent(cell) -> head."""

    name: str = "gru"
    cell: str = "gru"  # gru | lstm | rnn | mingru | minlstm
    reset_after: bool = True  # GRU only: True = cuDNN/PyTorch, False = Cho et al. 2014
    hidden: int = 128
    depth: int = 1
    dropout: float = 0.0  # on the output of every recurrent layer (Zaremba et al. 2014)
    embed_dim: int = 0  # encoder width; 0 feeds one-hot tokens / raw reals straight in
    unroll: int = 0  # jax.lax.scan unroll factor; 0: 1 on CPU, 8 on GPU (layers.default_unroll)
    # fused: the hand-written layer backward of grubench/fused.py (gru, lstm, rnn); autodiff:
    # JAX's own reverse of the scan. Same gradients; autodiff took 0.97-1.42x the fused step
    # time on CPU and 1.13-1.43x on an H200 (grubench-bench --variants).
    backward: str = "fused"
    # bfloat16: matmul operands cast to bfloat16, float32 accumulation, carries and gates (GPU
    # tensor cores); needs backward=fused for gru, lstm and rnn.
    matmul_dtype: str = "float32"
    # mingru / minlstm: parallel = log-space jax.lax.associative_scan (Feng et al.), sequential
    # = linear-space scan, auto = sequential on CPU, parallel on GPU (layers.default_min_scan).
    scan: str = "auto"
    # Train in checkpointed time chunks of remat_chunk steps (0: about sqrt(T)), each running
    # encoder, layers, head and loss (SequenceModel.remat_loss): training memory O(sqrt(T))
    # hidden states instead of O(T), for one more forward pass.
    remat: bool = False
    remat_chunk: int = 0
    # > 0: choose `hidden` so the model has as close to this many parameters as possible
    # (GRU, LSTM and tanh-RNN compared at equal size, as Chung et al. 2014 did).
    param_budget: int = 0
    forget_bias: float = 1.0  # LSTM forget-gate bias at init (Jozefowicz et al. 2015)
    recurrent_init: str = "orthogonal"  # orthogonal | lecun_normal
    bias_init: float = 0.0


@dataclass
class TaskConfig:
    """Fields every task has. `seq_len` is the task's length knob (see each task)."""

    name: str = MISSING
    seq_len: int = 20
    train_size: int = 10_000
    val_size: int = 1_000
    test_size: int = 1_000
    data_seed: int = 1234


@dataclass
class CopyTaskConfig(TaskConfig):
    """Copy memory: `seq_len` is the delay T; sequences are T + 2 * n_copy long."""

    name: str = "copy"
    n_symbols: int = 8
    n_copy: int = 10


@dataclass
class AddingTaskConfig(TaskConfig):
    """Adding problem: `seq_len` is the sequence length T."""

    name: str = "adding"
    seq_len: int = 50
    tolerance: float = 0.04  # |error| below this counts as correct for accuracy


@dataclass
class RecallTaskConfig(TaskConfig):
    """Associative recall: (seq_len - 2) / 2 key-value pairs, then a query marker and a key."""

    name: str = "recall"
    seq_len: int = 22
    n_keys: int = 16
    n_values: int = 16


@dataclass
class DelayTaskConfig(TaskConfig):
    """Delayed recall: output the symbol seen `lag` steps back, over `seq_len` steps."""

    name: str = "delay"
    seq_len: int = 40
    lag: int = 20
    n_symbols: int = 8


@dataclass
class CountingTaskConfig(TaskConfig):
    """Counting languages a^n b^n (anbn) or a^n b^n c^n (anbncn): `seq_len` is the largest n of
    train and val; test draws n in seq_len+1..test_max_n (0: 2 * seq_len)."""

    name: str = "counting"
    language: str = "anbn"
    seq_len: int = 20
    test_max_n: int = 0


@dataclass
class ChoralesTaskConfig(TaskConfig):
    """Bach chorales (music21): next-frame piano-roll prediction on a fixed 60/20/20 split.
    `seq_len` caps the steps per chorale; train_size caps train (the default means all);
    val_size, test_size and data_seed are ignored. See grubench/tasks/chorales.py."""

    name: str = "chorales"
    seq_len: int = 128


@dataclass
class SunspotsTaskConfig(TaskConfig):
    """Yearly sunspots (statsmodels): forecast the next year from `seq_len` years, on a fixed
    chronological 70/15/15 split; train_size caps train (the default means all); val_size,
    test_size and data_seed are ignored. See grubench/tasks/sunspots.py."""

    name: str = "sunspots"
    seq_len: int = 20
    tolerance: float = 0.25  # |error| below this (in train stds) counts as correct


@dataclass
class DigitsTaskConfig(TaskConfig):
    """8x8 digits (scikit-learn) as 64-step pixel sequences on a fixed stratified 1197/300/300
    split; train_size caps train (the default means all); val_size and test_size are ignored;
    data_seed draws the pixel permutation of permute=true. See grubench/tasks/digits.py."""

    name: str = "digits"
    seq_len: int = 64
    permute: bool = False


@dataclass
class TrainerConfig:
    steps: int = 2000
    batch_size: int = 32
    seeds: int = 1  # seeds trained together under jax.vmap: seed, seed+1, ...
    optimizer: str = "adamw"  # adamw | rmsprop (decay rho, as Chung et al. 2014 used)
    rho: float = 0.9  # rmsprop's decay of the squared-gradient average
    lr: float = 1e-2
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    clip_norm: float = 1.0  # global-norm gradient clipping; 0 disables
    warmup_steps: int = 100
    final_lr_ratio: float = 0.1  # cosine decays lr to lr * final_lr_ratio
    eval_every: int = 250
    log_every: int = 50
    eval_batch_size: int = 500
    timing_warmup: int = 5  # steps excluded from the step-time median
    stream_repeats: int = 200  # streaming-inference steps timed at batch 1 (0: not measured)
    # Early stopping: > 0 keeps each seed's best-validation parameters for the final
    # evaluation and ends the run once every seed has gone `patience` evaluations without a
    # better validation loss.
    patience: int = 0
    # Record |dL/dh_t| against t at the first layer, at step 0 and at the end
    # (results.json: grad_norms_init, grad_norms).
    grad_probe: bool = False
    checkpoint_every: int = 500  # also at the end; 0: only at the end
    keep_checkpoints: int = 2
    resume: str | None = None  # a run or checkpoints directory to continue from
    # No step finished for this long: the XLA CPU runtime is stuck (a rare upstream hang);
    # the command restarts itself from the last checkpoint (grubench/watchdog.py). 0: off.
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


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0


TASK_SCHEMAS: dict[str, type[TaskConfig]] = {
    "copy": CopyTaskConfig,
    "adding": AddingTaskConfig,
    "recall": RecallTaskConfig,
    "delay": DelayTaskConfig,
    "counting": CountingTaskConfig,
    "chorales": ChoralesTaskConfig,
    "sunspots": SunspotsTaskConfig,
    "digits": DigitsTaskConfig,
}


def register() -> None:
    """Store the schemas: `base_config` for config.yaml, `schema_NAME` in the task group."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, schema in TASK_SCHEMAS.items():
        cs.store(group="task", name=f"schema_{name}", node=schema)


register()


def _require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is not allowed: {allowed}")


def validate(cfg: DictConfig | Config) -> None:
    """Check ranges and choices; raise ConfigError with one line on the first bad value."""
    c = OmegaConf.structured(cfg) if not isinstance(cfg, DictConfig) else cfg
    m, t, tr, lg = c.model, c.task, c.trainer, c.logger
    _require(m.name in MODELS, "model", m.name, f"one of {', '.join(MODELS)}")
    _require(m.cell in CELLS, "model.cell", m.cell, f"one of {', '.join(CELLS)}")
    want_cell = "gru" if m.name.startswith("gru") else m.name
    _require(
        m.cell == want_cell, "model.cell", m.cell,
        f"{want_cell} for model={m.name} (choose the model with model=NAME)",
    )
    if m.cell == "gru":
        _require(
            m.reset_after == (m.name == "gru"), "model.reset_after", m.reset_after,
            f"{m.name == 'gru'} for model={m.name} (model=gru is reset-after, the cuDNN form; "
            "model=gru_v1 is Cho et al. 2014)",
        )
    elif not m.reset_after:
        raise ConfigError(f"model.reset_after=False is not allowed: it applies to GRUs only, "
                          f"not model={m.name}")
    _require(m.hidden >= 1, "model.hidden", m.hidden, "an integer >= 1")
    _require(m.depth >= 1, "model.depth", m.depth, "an integer >= 1")
    _require(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "a float in [0, 1)")
    _require(m.embed_dim >= 0, "model.embed_dim", m.embed_dim, "an integer >= 0")
    _require(m.unroll >= 0, "model.unroll", m.unroll,
             "an integer >= 0 (0: 1 on CPU, 8 on an accelerator)")
    _require(m.backward in ("fused", "autodiff"), "model.backward", m.backward,
             "fused or autodiff")
    _require(m.matmul_dtype in ("float32", "bfloat16"), "model.matmul_dtype", m.matmul_dtype,
             "float32 or bfloat16")
    _require(m.matmul_dtype == "float32" or m.backward == "fused" or m.cell.startswith("min"),
             "model.matmul_dtype", m.matmul_dtype, "bfloat16 needs model.backward=fused")
    _require(m.scan in ("auto", "parallel", "sequential"), "model.scan", m.scan,
             "auto, parallel or sequential")
    _require(m.scan == "auto" or m.cell.startswith("min"), "model.scan", m.scan,
             "parallel and sequential apply to model=mingru and model=minlstm only")
    _require(m.remat_chunk >= 0, "model.remat_chunk", m.remat_chunk,
             "an integer >= 0 (0: about sqrt(seq_len))")
    _require(m.param_budget >= 0, "model.param_budget", m.param_budget,
             "an integer >= 0 (0: use model.hidden)")
    _require(
        m.recurrent_init in ("orthogonal", "lecun_normal"),
        "model.recurrent_init",
        m.recurrent_init,
        "orthogonal or lecun_normal",
    )
    _require(t.name in TASK_SCHEMAS, "task", t.name, f"one of {', '.join(TASK_SCHEMAS)}")
    _require(t.seq_len >= 1, "task.seq_len", t.seq_len, "an integer >= 1")
    for k in ("train_size", "val_size", "test_size"):
        _require(t[k] >= 1, f"task.{k}", t[k], "an integer >= 1")
    if t.name == "copy":
        _require(t.n_symbols >= 2, "task.n_symbols", t.n_symbols, "an integer >= 2")
        _require(t.n_copy >= 1, "task.n_copy", t.n_copy, "an integer >= 1")
    if t.name == "adding":
        _require(t.seq_len >= 2, "task.seq_len", t.seq_len, "an integer >= 2 for adding")
        _require(t.tolerance > 0, "task.tolerance", t.tolerance, "a float > 0")
    if t.name == "recall":
        n_pairs = (t.seq_len - 2) // 2
        _require(
            t.seq_len >= 4 and t.seq_len % 2 == 0,
            "task.seq_len",
            t.seq_len,
            "an even integer >= 4 for recall (pairs, then a query marker and a key)",
        )
        _require(
            t.n_keys >= n_pairs,
            "task.n_keys",
            t.n_keys,
            f"an integer >= {n_pairs}, the number of pairs at seq_len={t.seq_len}",
        )
        _require(t.n_values >= 2, "task.n_values", t.n_values, "an integer >= 2")
    if t.name == "delay":
        _require(t.lag >= 1, "task.lag", t.lag, "an integer >= 1")
        _require(
            t.seq_len > t.lag, "task.seq_len", t.seq_len,
            f"an integer > task.lag={t.lag} for delay (some steps must recall)",
        )
        _require(t.n_symbols >= 2, "task.n_symbols", t.n_symbols, "an integer >= 2")
    if t.name == "counting":
        _require(t.language in ("anbn", "anbncn"), "task.language", t.language, "anbn or anbncn")
        _require(
            t.test_max_n == 0 or t.test_max_n > t.seq_len, "task.test_max_n", t.test_max_n,
            f"0 (2 * seq_len) or an integer > task.seq_len={t.seq_len}, the largest train n",
        )
    if t.name == "sunspots":
        _require(t.seq_len <= 100, "task.seq_len", t.seq_len, "an integer in [1, 100] for sunspots")
        _require(t.tolerance > 0, "task.tolerance", t.tolerance, "a float > 0")
    if t.name == "digits":
        _require(t.seq_len == 64, "task.seq_len", t.seq_len, "64 for digits (8x8 pixels)")
    _require(tr.steps >= 1, "trainer.steps", tr.steps, "an integer >= 1")
    _require(tr.batch_size >= 1, "trainer.batch_size", tr.batch_size, "an integer >= 1")
    _require(tr.seeds >= 1, "trainer.seeds", tr.seeds, "an integer >= 1")
    _require(
        tr.optimizer in OPTIMIZERS, "trainer.optimizer", tr.optimizer, f"one of {OPTIMIZERS}"
    )
    _require(tr.lr > 0, "trainer.lr", tr.lr, "a float > 0")
    _require(0 < tr.rho < 1, "trainer.rho", tr.rho, "a float in (0, 1)")
    _require(tr.patience >= 0, "trainer.patience", tr.patience, "an integer >= 0 (0: off)")
    _require(tr.weight_decay >= 0, "trainer.weight_decay", tr.weight_decay, "a float >= 0")
    _require(0 <= tr.b1 < 1, "trainer.b1", tr.b1, "a float in [0, 1)")
    _require(0 <= tr.b2 < 1, "trainer.b2", tr.b2, "a float in [0, 1)")
    _require(tr.clip_norm >= 0, "trainer.clip_norm", tr.clip_norm, "a float >= 0 (0 disables)")
    _require(tr.warmup_steps >= 0, "trainer.warmup_steps", tr.warmup_steps, "an integer >= 0")
    _require(
        0 <= tr.final_lr_ratio <= 1, "trainer.final_lr_ratio", tr.final_lr_ratio, "in [0, 1]"
    )
    _require(tr.eval_every >= 1, "trainer.eval_every", tr.eval_every, "an integer >= 1")
    _require(tr.log_every >= 1, "trainer.log_every", tr.log_every, "an integer >= 1")
    _require(
        tr.eval_batch_size >= 1, "trainer.eval_batch_size", tr.eval_batch_size, "an integer >= 1"
    )
    _require(tr.stream_repeats >= 0, "trainer.stream_repeats", tr.stream_repeats,
             "an integer >= 0 (0: not measured)")
    _require(tr.timing_warmup >= 0, "trainer.timing_warmup", tr.timing_warmup, "an integer >= 0")
    _require(
        tr.checkpoint_every >= 0, "trainer.checkpoint_every", tr.checkpoint_every,
        "an integer >= 0 (0: only at the end)",
    )
    _require(
        tr.keep_checkpoints >= 1, "trainer.keep_checkpoints", tr.keep_checkpoints,
        "an integer >= 1",
    )
    _require(tr.hang_timeout_s >= 0, "trainer.hang_timeout_s", tr.hang_timeout_s,
             "a number of seconds >= 0 (0: no watchdog)")
    _require(lg.name in LOGGERS, "logger", lg.name, f"one of {', '.join(LOGGERS)}")
    _require(
        lg.mode in ("auto", "online", "offline", "disabled"),
        "logger.mode",
        lg.mode,
        "auto, online, offline or disabled",
    )
    from grubench.tasks import check_available  # lazily: it imports JAX

    check_available(t)
