"""The registries: every cell and every task grubench knows, by name.

Everything that lists cells or tasks (config validation, the Hydra config store, `--help`,
the benchmark, plots, tests) reads `CELLS` and `TASKS`; nothing else keeps a list of names.

A registry fills itself on first use: it imports grubench's own modules (`grubench.cells`,
`grubench.tasks`, whose modules register themselves on import), then every entry point of its
group (`grubench.cells`, `grubench.tasks`) that installed packages declare, then the modules
named in the environment variable GRUBENCH_PLUGINS (comma-separated), for code that is not
installed as a package. A plugin module registers its entries when it is imported, exactly as
grubench's own do (see docs/extending.md).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from grubench.errors import RegistryError
from grubench.targets import Target

PLUGINS_ENV = "GRUBENCH_PLUGINS"

E = TypeVar("E", "CellEntry", "TaskEntry")


@dataclass(frozen=True)
class CellEntry:
    """A cell under the name `model=NAME` selects.

    cls: the cell class, `cls(in_features, hidden, *, rngs, **options)` (the contract is in
      grubench/cells/base.py); its class attributes say what it supports.
    config: the dataclass of `model.*` keys: grubench.config.ModelConfig, or a subclass that
      adds this cell's own options (e.g. LSTM's forget_bias); those extra fields are passed to
      `cls` as keyword arguments.
    defaults: options this name sets (e.g. gru_v1 is the GRU with reset_after=False).
    """

    name: str
    cls: Any
    description: str
    config: type
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def gates(self) -> int:
        """G: the projection is [D, G*H]."""
        return int(self.cls.gates)

    @property
    def linear_in_h(self) -> bool:
        """h' = a(x) h + b(x): the layer may run a parallel or a sequential scan."""
        return bool(getattr(self.cls, "linear_in_h", False))

    @property
    def scans(self) -> tuple[str, ...]:
        """The values of model.scan other than auto that this cell supports."""
        return ("parallel", "sequential") if self.linear_in_h else ()

    @property
    def persistent(self) -> bool:
        """The cell, with this name's options, runs under model.backward=persistent."""
        has = getattr(self.cls, "has_persistent", None)
        return bool(has(self.defaults)) if has is not None else False

    @property
    def fused(self) -> bool:
        """The cell has a hand-written layer backward (model.backward=fused uses it)."""
        from grubench.cells.base import Cell

        own = getattr(self.cls, "fused_kernel", None)
        return own is not None and own is not getattr(Cell, "fused_kernel", None)


@dataclass(frozen=True)
class TaskEntry:
    """A task under the name `task=NAME` selects.

    config: its dataclass (a subclass of grubench.config.TaskConfig), with the task's defaults.
    spec(cfg) -> TaskSpec; splits(cfg) -> Splits (train/val/test, deterministic);
    baseline(cfg) -> the loss of the task's trivial predictor, or None;
    validate(cfg): raise ConfigError (one line) for a bad task.* value;
    requires: (module, pip package) the task reads its data from, checked before a run;
    complete(cfg) -> {key: value}: task keys the data decides (e.g. the data set a file holds,
      the length it fixes), set in the run's config before the run is recorded;
    target: when a run has learned the task (grubench.targets.Target), for its time to target.
    """

    name: str
    description: str
    config: type
    spec: Callable[[Any], Any]
    splits: Callable[[Any], Any]
    baseline: Callable[[Any], float | None] | None = None
    validate: Callable[[Any], None] | None = None
    requires: tuple[str, str] | None = None
    complete: Callable[[Any], dict[str, Any]] | None = None
    plot_unit: str = "nats"  # what the loss is measured in, for axis labels
    target: Target | None = None

    def completion(self, cfg: Any) -> dict[str, Any]:
        """`complete(cfg)` for the task config node `cfg` (validated); {} for a task whose
        data decide no key."""
        return {} if self.complete is None else self.complete(cfg)


class Registry(Generic[E]):
    """Entries by name; filled on first use from `builtin`, entry points and GRUBENCH_PLUGINS."""

    def __init__(self, kind: str, builtin: str, group: str):
        self.kind, self.builtin, self.group = kind, builtin, group
        self._entries: dict[str, E] = {}
        self._loaded = False
        self._loading = False

    def add(self, entry: E) -> E:
        """Register `entry`; a second entry under a taken name is an error (a module imported
        twice under two names re-registers the same class, which is allowed)."""
        old = self._entries.get(entry.name)
        if old is not None and old != entry and _origin(old) != _origin(entry):
            raise RegistryError(
                f"{self.kind} {entry.name!r} is registered twice "
                f"({_origin(old)} and {_origin(entry)})"
            )
        self._entries[entry.name] = entry
        return entry

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            importlib.import_module(self.builtin)
            for ep in entry_points(group=self.group):
                try:
                    ep.load()
                except Exception as e:  # noqa: BLE001 - a broken plugin is one line
                    raise RegistryError(
                        f"the {self.group} entry point {ep.name}={ep.value} "
                        f"failed to load: {_line(e)}"
                    ) from None
            for module in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
                try:
                    importlib.import_module(module.strip())
                except Exception as e:  # noqa: BLE001 - a broken plugin is one line
                    raise RegistryError(
                        f"{PLUGINS_ENV}: cannot import {module.strip()!r} ({_line(e)})"
                    ) from None
            self._loaded = True
        finally:
            self._loading = False

    def get(self, name: str) -> E:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}: one of {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        """The registered names, sorted (registration order follows imports)."""
        self._load()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[E]:
        """The entries in the order of `names()`."""
        return iter([self._entries[n] for n in self.names()])


def _line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _origin(entry: Any) -> str:
    obj = entry.cls if isinstance(entry, CellEntry) else entry.spec
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


CELLS: Registry[CellEntry] = Registry("model", "grubench.cells", "grubench.cells")
TASKS: Registry[TaskEntry] = Registry("task", "grubench.tasks", "grubench.tasks")


def register_cell(entry: CellEntry) -> CellEntry:
    """Add a cell to `CELLS` (call it at import time of the cell's module)."""
    return CELLS.add(entry)


def register_task(entry: TaskEntry) -> TaskEntry:
    """Add a task to `TASKS` (call it at import time of the task's module)."""
    return TASKS.add(entry)
