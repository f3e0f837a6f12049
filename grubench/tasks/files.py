"""Reading the user's own data files: the path, the content hash, memory-mapped .npz arrays,
the parsed-data cache, and the restricted unpickler.

Every failure is a `DataError` of one line naming the task, the file and what is wrong.

Memory mapping. An .npz written by `numpy.savez` stores each array uncompressed inside a zip
file; such a member is memory-mapped where it lies (`numpy.memmap` at the member's data
offset), so a large file is paged in as it is read, not copied. A member written by
`numpy.savez_compressed` has to be decompressed into memory.

Cache. Parsed data (piano rolls, token streams) are written once as an uncompressed .npz under
`$XDG_CACHE_HOME/grubench/user-data` (default `~/.cache/grubench/user-data`), named by the task,
the parser's version and the SHA-256 of the source files' contents, so an edited file is parsed
again and a renamed or moved one is not. Later loads memory-map the cache.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import pickle
import pickletools
import reprlib
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grubench.config import TaskConfig
from grubench.errors import ConfigError, DataError
from grubench.tasks.data import cache_dir, check, save_npz_atomic

_HASH_CHUNK = 1 << 20
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def fail(task: str, path: Path | str, what: str) -> DataError:
    """The one-line error `task=TASK data: FILE: WHAT` (`grubench.tasks.data.check`'s, with the
    file named)."""
    return DataError(f"task={task} data: {path}: {what}")


def need(ok: bool, task: str, path: Path | str, what: str) -> None:
    """Raise `fail(task, path, what)` unless `ok`."""
    check(ok, task, f"{path}: {what}")


def announce(task: str, what: str) -> None:
    """Print what a task read (`grubench: task=TASK WHAT`) on stderr, so the user can check
    it against the data set's published counts."""
    print(f"grubench: task={task} {what}", file=sys.stderr, flush=True)


def check_range(
    task: str, path: Path | str, what: str, values: np.ndarray, high: int, hint: str = ""
) -> None:
    """Raise `fail` naming the first value of `values` outside 0 .. high - 1."""
    if values.size and values.min() < 0:
        raise fail(task, path, f"{what} {int(values.min())} is negative")
    bad = values >= high
    if bad.any():
        raise fail(task, path, f"{what} {int(values[bad][0])} outside 0..{high - 1}{hint}")


def user_path(task: str, value: Any, *, directory: bool = False) -> Path:
    """`task.path` as an existing, readable file (or, if `directory`, also a folder), with ~
    expanded; ConfigError (one line) where it is unset, missing or unreadable."""
    if value is None or str(value).strip() == "":
        raise ConfigError(
            f"task={task} reads your file: set task.path=FILE (docs/data.md shows each format)"
        )
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise ConfigError(f"task.path={value}: no such file or directory")
    if path.is_dir() and not directory:
        raise ConfigError(f"task.path={value}: a directory; task={task} reads one file")
    if not (path.is_file() or path.is_dir()):
        raise ConfigError(f"task.path={value}: not a regular file")
    try:
        if path.is_file():
            with path.open("rb") as f:
                f.read(1)
        else:
            next(iter(path.iterdir()), None)
    except OSError as e:
        raise ConfigError(f"task.path={value}: cannot be read ({e.strerror})") from None
    return path


def stamp(paths: Iterable[Path]) -> tuple:
    """What identifies the files' current contents cheaply: path, size, mtime (for a memo)."""
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


_HASHES: dict[tuple, str] = {}


def content_hash(paths: Iterable[Path]) -> str:
    """The SHA-256 of one file's contents (what `sha256sum FILE` prints), or of several files
    the SHA-256 of their hashes, one a line (`sha256sum A B C | cut -d' ' -f1 | sha256sum`);
    names do not count. Remembered for the process while the files keep their size and
    modification time."""
    paths = list(paths)
    key = stamp(paths)
    if key not in _HASHES:
        each = []
        for p in paths:
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(_HASH_CHUNK):
                    h.update(chunk)
            each.append(h.hexdigest())
        joined = "".join(f"{d}\n" for d in each).encode()
        _HASHES[key] = each[0] if len(each) == 1 else hashlib.sha256(joined).hexdigest()
    return _HASHES[key]


@dataclass
class FileTaskConfig(TaskConfig):
    """The keys of a task that reads the user's file: `path`, and `sha256`, the SHA-256 of the
    file's contents, which the run records (set from the data; a value given must match it,
    which pins the data a command runs on)."""

    path: str | None = None
    sha256: str | None = None


def pinned(cfg: Any, paths: list[Path]) -> str:
    """The files' content hash; ConfigError where `task.sha256` is set to another."""
    digest = content_hash(paths)
    if cfg.get("sha256") and cfg.sha256 != digest:
        raise ConfigError(
            f"task.sha256={cfg.sha256} is not allowed: the contents of "
            f"{', '.join(map(str, paths))} hash to {digest} (the data changed?)"
        )
    return digest


# ---------------------------------------------------------------------------------------------
# .npz: memory-mapped where stored


def _member_memmap(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The array of a stored (uncompressed) .npy member, memory-mapped; None if it is
    compressed or holds objects."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    # A header claiming more data than the member holds would map the bytes after it.
    if dtype.hasobject or (offset - start) + int(np.prod(shape)) * dtype.itemsize > info.file_size:
        return None
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype)
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def read_npz(task: str, path: Path, kinds: str = NUMERIC_KINDS) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, memory-mapped where stored uncompressed; an array of
    a dtype kind not in `kinds` (objects, which would need pickle; strings, dates) is refused."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise fail(task, path, f"not an .npz file (numpy.savez): {e}") from None
    out: dict[str, np.ndarray] = {}
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            try:
                arr = _member_memmap(path, zf, info)
                if arr is None:
                    with zf.open(info) as m:
                        arr = np.lib.format.read_array(io.BytesIO(m.read()), allow_pickle=False)
            except ValueError as e:
                msg = "holds Python objects (pickled)" if "pickle" in str(e) else str(e)
                raise fail(task, path, f"array {key!r} {msg}".splitlines()[0]) from None
            except Exception as e:  # noqa: BLE001 - a damaged zip or header, in one line
                why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                raise fail(task, path, f"array {key!r} unreadable ({why})") from None
            need(
                arr.dtype.kind in kinds,
                task,
                path,
                f"array {key!r} of dtype {arr.dtype}; only bool, integer and float arrays are read"
                if kinds == NUMERIC_KINDS
                else f"array {key!r} of dtype {arr.dtype}",
            )
            out[key] = arr
    need(bool(out), task, path, "an .npz with no arrays")
    return out


# ---------------------------------------------------------------------------------------------
# The cache of parsed data


def cached(
    task: str,
    version: int,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
    check: Callable[[dict[str, np.ndarray]], None],
) -> dict[str, np.ndarray]:
    """The arrays `build()` makes for content hash `key`, from the cache where it has them
    (memory-mapped) and passes `check`; else built, checked and cached (atomically). A cache
    that cannot be written is a warning: the data is used all the same."""
    path = cache_dir() / "user-data" / f"{task}-v{version}-{key[:32]}.npz"
    if path.exists():
        try:
            arrays = read_npz(task, path, kinds=NUMERIC_KINDS + "U")  # text: the vocabulary
            check(arrays)
            return arrays
        except (DataError, KeyError) as e:
            warnings.warn(f"{path}: unusable cache ({e!r}); parsing again", stacklevel=2)
    arrays = build()
    check(arrays)
    try:
        save_npz_atomic(path, arrays)
    except OSError as e:
        warnings.warn(f"cannot write the cache {path}: {e}", stacklevel=2)
    return arrays


# ---------------------------------------------------------------------------------------------
# A pickle that can only build containers and numbers


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something outside `_ALLOWED`."""


# Numbers a pickle may hold: pitch numbers are small, and bounded integers keep set and dict
# building linear (integers that differ by multiples of 2**61 - 1 share a hash slot).
_NUMBER_BOUND = 2**31


class _DType:
    """The dtype of a numpy scalar in a pickle, restricted to bool, integer and float kinds of
    at most 64 bits, without fields. numpy's own dtype would take its pickled state as is
    (`__setstate__`), and a crafted state makes a dtype that reads memory outside the data."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # numpy's state: (version, byte order, subarray, names, fields, elsize, alignment, flags)
        if not (isinstance(state, tuple) and len(state) >= 5 and state[2:5] == (None,) * 3):
            raise _Refused("a numpy dtype with fields or a subarray")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])
        elif state[1] not in ("|", "="):
            raise _Refused(f"a numpy dtype of byte order {brief(state[1])}")


def _dtype(spec: Any, *_: Any) -> _DType:
    """`numpy.dtype(spec, align, copy)` as a pickle calls it, for numeric kinds only."""
    dtype = np.dtype(spec) if isinstance(spec, str) and len(spec) <= 8 else None
    if dtype is None or dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise _Refused(
            f"a numpy dtype {brief(spec)}; only bool, integer and float scalars of up to 64 "
            "bits are read"
        )
    return _DType(dtype)


def _scalar(dtype: Any, data: Any = None) -> bool | int | float:
    """`numpy.core.multiarray.scalar(dtype, bytes)` as a pickle calls it: the Python number
    those bytes hold (Python 2 pickles give the bytes as latin1 text)."""
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(dtype, _DType) or not isinstance(data, bytes):
        raise _Refused("a numpy scalar without a numeric dtype and its bytes")
    if len(data) != dtype.dtype.itemsize:
        raise _Refused(f"a numpy scalar of {len(data)} bytes for dtype {dtype.dtype}")
    value = np.frombuffer(data, dtype=dtype.dtype)[0].item()
    if not abs(value) <= _NUMBER_BOUND:
        raise _Refused(f"a number beyond +-2**31 ({brief(value)})")
    return value


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """`_codecs.encode(text, "latin1")`: how protocol 2 pickles bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode other than of text to latin1")
    return text.encode("latin1")


class _Call:
    """A function a pickle may call, which the pickle cannot change: BUILD on a plain function
    would set its attributes (its defaults) for the rest of the process."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Refused("it would change a function it calls")


# (module, name) -> what a pickle may call under that name, under Python 3 and Python 2
# (__builtin__) names: containers and numbers, and numpy's scalars, which pickle as
# multiarray.scalar(dtype(..) + its state, bytes), the bytes under protocol 2 as
# _codecs.encode(text, "latin1").
_ALLOWED: dict[tuple[str, str], Any] = {
    **{
        (module, name): getattr(builtins, name)
        for module in ("builtins", "__builtin__")
        for name in ("list", "tuple", "dict", "set", "frozenset", "int", "float", "bool")
    },
    ("numpy", "dtype"): _Call(_dtype),
    ("numpy.core.multiarray", "scalar"): _Call(_scalar),
    ("numpy._core.multiarray", "scalar"): _Call(_scalar),
    ("_codecs", "encode"): _Call(_latin1),
}

_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _prescan(path: Path) -> None:
    """Refuse what the C unpickler would spend unbounded memory or time on, before it runs: a
    memo index beyond the opcodes read so far (the memo grows to twice any index it is given)
    and integers beyond +-2**31."""
    with path.open("rb") as f:
        for n, (op, arg, _) in enumerate(pickletools.genops(f)):
            if op.name == "STOP":
                return
            if not isinstance(arg, int) or isinstance(arg, bool):
                continue
            if op.name in _MEMO_PUTS:
                if not 0 <= arg <= n:
                    raise _Refused(f"a memo index {arg} at opcode {n}")
            elif op.name.startswith(("INT", "BININT", "LONG")) and abs(arg) > _NUMBER_BOUND:
                raise _Refused("an integer beyond +-2**31")


def brief(value: Any) -> str:
    """A short repr for a message, whatever `value` is (deep, huge or odd)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of {value.bit_length()} bits"
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a message must not fail
        return f"a {type(value).__name__}"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise _Refused(
                f"it would build {module}.{name}; only containers, numbers and numpy scalars "
                "are read"
            )
        return allowed


def safe_unpickle(task: str, path: Path) -> Any:
    """The object pickled in `path`, built by an unpickler that may only call the containers,
    numbers and numeric numpy scalars of `_ALLOWED` (no other class or function, so no code
    runs); Python 2 pickles read with encoding latin1. Any failure is one `DataError` line."""
    try:
        _prescan(path)
        with path.open("rb") as f:
            return _Restricted(f, fix_imports=True, encoding="latin1").load()
    except _Refused as e:
        raise fail(task, path, f"refused pickle: {e}".splitlines()[0]) from None
    except Exception as e:  # noqa: BLE001 - whatever a malformed file makes the parser raise
        why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise fail(task, path, f"not a readable pickle or JSON file ({why})") from None
