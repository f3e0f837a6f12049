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
import codecs
import hashlib
import io
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from grubench.errors import ConfigError, DataError
from grubench.tasks.data import cache_dir, save_npz_atomic

_HASH_CHUNK = 1 << 20


def fail(task: str, path: Path | str, what: str) -> DataError:
    """The one-line error `task=TASK data: FILE: WHAT`."""
    return DataError(f"task={task} data: {path}: {what}")


def need(ok: bool, task: str, path: Path | str, what: str) -> None:
    if not ok:
        raise fail(task, path, what)


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


def content_hash(paths: Iterable[Path]) -> str:
    """SHA-256 over the contents of `paths`, in order (names do not count)."""
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
        h.update(b"\0file-end\0")
    return h.hexdigest()


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
    if dtype.hasobject:
        return None
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype)
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def read_npz(task: str, path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, memory-mapped where stored uncompressed. Object arrays
    (which would need pickle) are refused."""
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
            except (OSError, zipfile.BadZipFile, EOFError) as e:
                raise fail(task, path, f"array {key!r} unreadable: {e}") from None
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
            arrays = read_npz(task, path)
            check(arrays)
            return arrays
        except DataError as e:
            warnings.warn(f"{path}: unusable cache ({e}); parsing again", stacklevel=2)
    arrays = build()
    check(arrays)
    try:
        save_npz_atomic(path, arrays)
    except OSError as e:
        warnings.warn(f"cannot write the cache {path}: {e}", stacklevel=2)
    return arrays


# ---------------------------------------------------------------------------------------------
# A pickle that can only build containers and numbers


def _numpy_scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return scalar


# (module, name) -> the object it may build, under its Python 3 and Python 2 (__builtin__)
# names; numpy's scalars pickle as multiarray.scalar(dtype, bytes), and bytes under protocol 2
# as _codecs.encode(text, "latin1").
_ALLOWED: dict[tuple[str, str], Any] = {
    **{
        (module, name): getattr(builtins, name)
        for module in ("builtins", "__builtin__")
        for name in ("list", "tuple", "dict", "set", "frozenset", "int", "float", "bool")
    },
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar(),
    ("numpy._core.multiarray", "scalar"): _numpy_scalar(),
    ("_codecs", "encode"): codecs.encode,
}


class _Refused(pickle.UnpicklingError):
    """The pickle asks for a class or function outside `_ALLOWED`."""


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
    """The object pickled in `path`, built by an unpickler that may only make lists, tuples,
    dicts, sets, numbers and numpy scalars/dtypes (no other class, so no code runs); Python 2
    pickles read with encoding latin1."""
    try:
        with path.open("rb") as f:
            return _Restricted(f, fix_imports=True, encoding="latin1").load()
    except _Refused as e:
        raise fail(task, path, f"refused pickle: {e}".splitlines()[0]) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:
        why = " ".join(f"{type(e).__name__}: {e}".split())  # one line, whatever the parser says
        raise fail(task, path, f"not a readable pickle ({why})") from None
