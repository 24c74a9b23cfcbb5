"""Reading documents into a pipeline and writing them out: text, JSONL, Parquet, .gz/.zst, Hugging Face streams.

Inputs are planned into shards before anything runs, so a bad input is a one-line error up front, not a
crash halfway through: a missing path, a Parquet file without a text column. Small files are grouped into
shards of about `shard_bytes`; a large uncompressed .jsonl is cut at byte offsets (a line belongs to the
piece it starts in, as Hadoop's line reader does), so one big file still spreads across workers.

- text files (.txt, .md, .py, anything not binary): one document each, id = the path under the input;
- JSONL (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`): a `text` field per row, id = the row's `id` or `name:line`;
- Parquet with FineWeb's schema (`text`, `id`, `url`, `date`, `language`, `language_score`): all but
  `text` optional, every other listed column kept as metadata;
- `hf:org/name[#config][@split]`: a Hugging Face dataset streamed with `datasets` (when online, or a
  local dataset folder), one shard per stream.

Every document carries `source`: the row's own `source` field, else the input's name (`web.jsonl.zst` ->
`web`), or the name before `=` in `NAME=PATH`. Undecodable bytes are skipped and counted (`skip`),
replaced with U+FFFD and counted (`replace`), or an error (`error`). This file does not clean anything.
"""

import dataclasses
import gzip
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write
from llmlab.data.pipeline.stage import Doc, StageStats

FINEWEB_COLUMNS = ["text", "id", "url", "date", "language", "language_score", "source"]
COMPRESSIONS = (".gz", ".zst")
BAD_BYTES = ("skip", "replace", "error")
NAMED_INPUT = re.compile(r"^([A-Za-z_][\w.-]*)=(.+)$")


@dataclasses.dataclass
class Piece:
    """One file (or a byte range of one, or one HF stream) and the names its documents get."""

    path: str
    name: str  # the document-id prefix: the path relative to what the user gave
    source: str
    start: int = 0
    end: int | None = None


@dataclasses.dataclass
class InputShard:
    name: str
    pieces: list[Piece]


def _source_name(p: str) -> str:
    """'data/web.jsonl.zst' -> 'web'; 'corpus/' -> 'corpus'; 'hf:org/name@train' -> 'name'."""
    base = Path(p.removeprefix("hf:").split("@")[0].split("#")[0].rstrip("/")).name
    return base.split(".")[0] or "data"


def _kind(path: Path) -> str:
    """'jsonl', 'parquet' or 'text', looking through a compression suffix."""
    suffixes = [s for s in path.suffixes if s not in COMPRESSIONS]
    last = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(last, "text")


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    if "text" not in names:
        raise UserError(f"{path}: Parquet file has no 'text' column (columns: {', '.join(names)}); "
                        "give files with FineWeb's schema (text, id, url, ...)")


def _files_of(root: Path) -> list[Path]:
    """Files under a folder; for a pipeline's own output folder only its shards, not its report."""
    report = root / "report.json"
    if report.is_file() and '"llmlab-pipeline"' in report.read_text(encoding="utf-8")[:200]:
        return sorted(f for f in root.iterdir() if f.is_file() and _kind(f) in ("jsonl", "parquet"))
    return sorted(f for f in root.rglob("*") if f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(root).parts))


def plan_shards(inputs: list[str], shard_bytes: int = 64_000_000) -> list[InputShard]:
    """Shards of about `shard_bytes` from files, folders and `hf:` streams, in the order given."""
    pieces: list[Piece] = []
    for spec in inputs:
        m = NAMED_INPUT.match(spec)
        source, spec = (m.group(1), m.group(2)) if m and not Path(spec).exists() else (None, spec)
        if spec.startswith("hf:"):
            pieces.append(Piece(spec, spec.removeprefix("hf:"), source or _source_name(spec)))
            continue
        p = Path(spec)
        if not p.exists():
            raise UserError(f"{p}: no such file or folder")
        files = [(f, f"{p.name}/{f.relative_to(p).as_posix()}") for f in _files_of(p)] if p.is_dir() else [(p, p.name)]
        for f, name in files:
            if _kind(f) == "parquet":
                _check_parquet(f)
            size = f.stat().st_size
            if _kind(f) == "jsonl" and f.suffix not in COMPRESSIONS and size > shard_bytes:
                for start in range(0, size, shard_bytes):  # byte ranges of one big file
                    pieces.append(Piece(str(f), name, source or _source_name(spec), start,
                                        min(start + shard_bytes, size)))
            else:
                pieces.append(Piece(str(f), name, source or _source_name(spec)))
    if not pieces:
        raise UserError(f"{' '.join(inputs)}: no input files found")
    shards: list[InputShard] = []
    group: list[Piece] = []
    group_bytes = 0
    for piece in pieces:
        size = _piece_size(piece)
        if group and (group_bytes + size > shard_bytes or piece.path.startswith("hf:")
                      or group[-1].path.startswith("hf:")):
            shards.append(InputShard(f"shard_{len(shards):05d}", group))
            group, group_bytes = [], 0
        group.append(piece)
        group_bytes += size
    shards.append(InputShard(f"shard_{len(shards):05d}", group))
    return shards


def _piece_size(piece: Piece) -> int:
    if piece.path.startswith("hf:"):
        return 0
    if piece.end is not None:
        return piece.end - piece.start
    return Path(piece.path).stat().st_size


def _open(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.suffix == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(path.open("rb")))  # type: ignore
    return path.open("rb")


def _decode(data: bytes, where: str, on_bad_bytes: str, stats: StageStats) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if on_bad_bytes == "error":
            raise UserError(f"{where}: undecodable bytes ({e.reason} at byte {e.start}); fix the file, or set "
                            "on_bad_bytes to 'skip' or 'replace'") from None
        text = data.decode("utf-8", errors="replace")
        if on_bad_bytes == "replace":
            stats.counters["documents with bytes replaced"] += 1
            return text
        stats.drop({"id": where, "text": text}, "undecodable bytes")
        return None


def _count_lines_before(path: Path, offset: int) -> int:
    n, left = 0, offset
    with path.open("rb") as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def _read_jsonl(piece: Piece, on_bad_bytes: str, stats: StageStats) -> Iterator[Doc]:
    path = Path(piece.path)
    lineno = 0
    with _open(path) as f:
        if piece.start:
            f.seek(piece.start - 1)
            f.readline()  # finish the line the previous piece owns
            lineno = _count_lines_before(path, f.tell())
        while piece.end is None or f.tell() < piece.end:
            raw = f.readline()
            if not raw:
                break
            lineno += 1
            if not raw.strip():
                continue
            where = f"{piece.name}:{lineno}"
            stats.docs_in += 1
            line = _decode(raw, where, on_bad_bytes, stats)
            if line is None:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                stats.drop({"id": where, "text": line}, "not valid JSON", e.msg)
                continue
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                stats.drop({"id": where, "text": line}, "no string 'text' field")
                continue
            yield _doc(row, where, piece.source)


def _doc(row: dict, default_id: str, source: str) -> Doc:
    doc = {k: v for k, v in row.items() if k not in ("id", "text", "source")}
    return {"id": str(row["id"]) if row.get("id") is not None else default_id, "text": row["text"],
            "source": row["source"] if isinstance(row.get("source"), str) else source, **doc}


def _read_parquet(piece: Piece, stats: StageStats) -> Iterator[Doc]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(piece.path)
    columns = [c for c in FINEWEB_COLUMNS if c in pf.schema_arrow.names]
    i = 0
    for batch in pf.iter_batches(columns=columns, batch_size=4096):
        for row in batch.to_pylist():
            stats.docs_in += 1
            where = f"{piece.name}#{i}"
            i += 1
            if not isinstance(row.get("text"), str):
                stats.drop({"id": where, "text": ""}, "no string 'text' field")
                continue
            yield _doc(row, where, piece.source)


def _read_hf(piece: Piece, stats: StageStats) -> Iterator[Doc]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"{piece.path}: streaming Hugging Face datasets needs `pip install datasets`") from None
    spec = piece.path.removeprefix("hf:")
    spec, _, split = spec.partition("@")
    name, _, config = spec.partition("#")
    try:
        rows = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    except Exception as e:
        raise UserError(f"{piece.path}: cannot open this dataset ({type(e).__name__}: {e}); check the name and "
                        "that you are online") from None
    for i, row in enumerate(rows):
        stats.docs_in += 1
        if not isinstance(row.get("text"), str):
            stats.drop({"id": f"{name}#{i}", "text": ""}, "no string 'text' field")
            continue
        yield _doc(dict(row), f"{name}#{i}", piece.source)


def read_piece(piece: Piece, on_bad_bytes: str, stats: StageStats) -> Iterator[Doc]:
    """The documents of one piece; skipped rows are counted in `stats` (the 'read' stage)."""
    if piece.path.startswith("hf:"):
        yield from _read_hf(piece, stats)
        return
    path = Path(piece.path)
    kind = _kind(path)
    if kind == "jsonl":
        yield from _read_jsonl(piece, on_bad_bytes, stats)
    elif kind == "parquet":
        yield from _read_parquet(piece, stats)
    else:
        with _open(path) as f:
            data = f.read()
        stats.docs_in += 1
        if b"\x00" in data[:8192]:
            stats.drop({"id": piece.name, "text": ""}, "binary file")
            return
        text = _decode(data, piece.name, on_bad_bytes, stats)
        if text is not None:
            yield {"id": piece.name, "text": text, "source": piece.source}


def read_shard(shard: InputShard, on_bad_bytes: str = "skip") -> tuple[list[Doc], StageStats]:
    """All documents of a shard (empty texts dropped and counted) and the reader's counts."""
    if on_bad_bytes not in BAD_BYTES:
        raise UserError(f"on_bad_bytes {on_bad_bytes!r}: must be one of {', '.join(BAD_BYTES)}")
    stats = StageStats("read")
    docs = []
    for piece in shard.pieces:
        for doc in read_piece(piece, on_bad_bytes, stats):
            if doc["text"].strip():
                stats.kept(doc)
                docs.append(doc)
            else:
                stats.drop(doc, "empty text")
    stats.bytes_in = stats.bytes_out  # text bytes read (the files' own sizes differ when compressed)
    return docs, stats


def read_jsonl_docs(path: str | Path) -> list[Doc]:
    """A pipeline's own JSONL shard back into documents (no checks: the pipeline wrote it)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_docs(docs: list[Doc], path: str | Path) -> None:
    """Write documents atomically as JSONL, or as Parquet when `path` ends in .parquet."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = ["id", "text", "source"] + sorted({k for d in docs for k in d} - {"id", "text", "source"})
        table = pa.table({k: [d.get(k) for d in docs] for k in keys}) if docs else pa.table(
            {k: pa.array([], pa.string()) for k in keys})
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        return

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")

    atomic_write(path, write)
