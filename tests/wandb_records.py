"""Read an offline W&B run file (run-ID.wandb) back into wandb protobuf Records.

The file is wandb's LevelDB-style log: a 7-byte header (":W&B", a 2-byte magic, a version
byte), then 32 KiB blocks of chunks, each `crc32 (4) | length (2, little-endian) | type (1)`
followed by `length` bytes; type 1 is a whole record, 2/3/4 the first/middle/last pieces of
one spread over blocks, and a block's tail shorter than a chunk header is zero padding. Current
wandb ships the protobuf classes but no reader, hence this one (used by the tests only).
"""

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
            pending = b""
    return [pb.Record.FromString(r) for r in out]


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def history(recs: list) -> dict[int, dict]:
    """{_step: {key: value}} from the history records."""
    rows: dict[int, dict] = {}
    for r in recs:
        if r.WhichOneof("record_type") == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            rows.setdefault(int(row["_step"]), {}).update(row)
    return rows


def summary(recs: list) -> dict:
    """The final summary: later updates win."""
    out: dict = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            out.update({_key(i): json.loads(i.value_json) for i in r.summary.update})
    return out


def run_record(recs: list):
    return next(r.run for r in recs if r.WhichOneof("record_type") == "run")


def flush() -> None:
    """Wait until W&B's service has written every run file: `run.finish()` may return before
    the service has flushed the file of an offline run (seen on a loaded machine);
    `wandb.teardown()` waits for the service to write everything and stop."""
    import wandb

    wandb.teardown()


def config(recs: list) -> dict:
    """The run's config, {top-level key: value}: the run record's, then later updates."""
    out: dict = {}
    for r in recs:
        kind = r.WhichOneof("record_type")
        items = (
            r.run.config.update if kind == "run" else r.config.update if kind == "config" else []
        )
        out.update({_key(i): json.loads(i.value_json) for i in items})
    return out


def metrics(recs: list) -> dict[str, object]:
    """The define_metric records, by name (a glob by its pattern)."""
    return {
        r.metric.name or r.metric.glob_name: r.metric
        for r in recs
        if r.WhichOneof("record_type") == "metric"
    }


def artifacts(recs: list) -> list:
    """The artifact records (log_artifact), in order."""
    return [r.artifact for r in recs if r.WhichOneof("record_type") == "artifact"]


def exit_code(recs: list) -> int | None:
    """The exit code the run finished with (None: never finished)."""
    codes = [r.exit.exit_code for r in recs if r.WhichOneof("record_type") == "exit"]
    return codes[-1] if codes else None


def run_files(root: str | Path) -> list[tuple[Path, list]]:
    """(path, records) of every offline run file under `root`/wandb, in path order (the
    service flushed first)."""
    flush()
    return [(p, records(p)) for p in sorted(Path(root).glob("wandb/offline-run-*/run-*.wandb"))]


def by_name(root: str | Path) -> dict[str, list]:
    """{display name: records} of the offline runs under `root`/wandb (names unique)."""
    out: dict[str, list] = {}
    for _, recs in run_files(root):
        name = run_record(recs).display_name
        assert name not in out, f"two runs named {name}"
        out[name] = recs
    return out
