"""A pipeline: a list of stages and a few settings, from a TOML/JSON file or built in Python.

    # clean.toml                              # the same in Python
    shard_mb = 64                             Pipeline([Normalize(unicode="NFKC"),
    [[stages]]                                          GopherQuality(),
    name = "normalize"                                  MinHashDedup(threshold=0.8)])
    unicode = "NFKC"
    [[stages]]
    name = "gopher_quality"
    [[stages]]
    name = "minhash_dedup"
    threshold = 0.8

JSON: `{"shard_mb": 64, "stages": [{"name": "normalize", "unicode": "NFKC"}, ...]}`. A stage's options are
its dataclass fields; an unknown stage, an unknown option or a value of the wrong type is a one-line
error naming the file and the stage.
"""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from llmlab.common.errors import UserError
from llmlab.data.pipeline.decontam import Decontaminate
from llmlab.data.pipeline.dedup import ExactDedup, MinHashDedup
from llmlab.data.pipeline.filters import C4, GopherQuality, GopherRepetition, Language, Length
from llmlab.data.pipeline.mix import Mix
from llmlab.data.pipeline.normalize import Normalize, RegexRules
from llmlab.data.pipeline.pii import PII
from llmlab.data.pipeline.readers import BAD_BYTES
from llmlab.data.pipeline.stage import GlobalStage, Stage

STAGES: dict[str, type[Stage]] = {cls.name: cls for cls in (
    Normalize, RegexRules, GopherQuality, GopherRepetition, C4, Language, Length, PII, Decontaminate,
    ExactDedup, MinHashDedup, Mix)}
OUTPUT_FORMATS = ("jsonl", "parquet")


@dataclasses.dataclass
class Pipeline:
    stages: list[Stage]
    shard_mb: float = 64.0  # a shard is the unit of work, of resuming and of retrying
    output_format: str = "jsonl"
    on_bad_bytes: str = "skip"

    def check(self, where: str = "pipeline") -> None:
        if not self.stages:
            raise UserError(f"{where}: no stages; add at least one, e.g. [[stages]] name = \"normalize\"")
        if self.output_format not in OUTPUT_FORMATS:
            raise UserError(f"{where}: output_format {self.output_format!r}: must be jsonl or parquet")
        if self.on_bad_bytes not in BAD_BYTES:
            raise UserError(f"{where}: on_bad_bytes {self.on_bad_bytes!r}: must be one of {', '.join(BAD_BYTES)}")
        if self.shard_mb <= 0:
            raise UserError(f"{where}: shard_mb {self.shard_mb}: must be > 0")
        for i, stage in enumerate(self.stages):
            try:
                stage.check()
            except ValueError as e:
                raise UserError(f"{where}: stage {i + 1} ({stage.name}): {e}") from None

    def to_dict(self) -> dict:
        return {"shard_mb": self.shard_mb, "output_format": self.output_format, "on_bad_bytes": self.on_bad_bytes,
                "stages": [{"name": s.name, **s.options()} for s in self.stages]}

    @property
    def has_global_stage(self) -> bool:
        return any(isinstance(s, GlobalStage) for s in self.stages)


def _type_ok(value, default) -> bool:
    """Does `value` fit a field whose default is `default`? (None defaults accept numbers and strings.)"""
    if default is None:
        return value is None or isinstance(value, int | float | str | list | dict)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, type(default))


def build_stage(spec: dict, where: str) -> Stage:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise UserError(f"{where}: each stage is a table with a 'name'")
    name = spec["name"]
    if name not in STAGES:
        raise UserError(f"{where}: unknown stage {name!r}; stages: {', '.join(STAGES)}")
    cls = STAGES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    options = {k: v for k, v in spec.items() if k != "name"}
    for key, value in options.items():
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise UserError(f"{where}: stage {name!r} has no option {key!r}; options: {valid}")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if not _type_ok(value, default):
            raise UserError(f"{where}: stage {name!r} option {key!r}: {value!r} should be like {default!r}")
    return cls(**options)


def resolve_tasks(pipeline: Pipeline, resolve_task: Callable[[str], list[str]] | None) -> None:
    """Fill each decontamination stage's `texts` for the evaluation tasks it names, through `resolve_task`
    (the recipes pass one that reads llmlab's built-in tasks: that stage is above this one)."""
    for stage in pipeline.stages:
        if isinstance(stage, Decontaminate) and resolve_task is not None:
            for task in stage.tasks:
                stage.texts.setdefault(task, resolve_task(task))


def pipeline_from_dict(d: dict, where: str = "pipeline",
                       resolve_task: Callable[[str], list[str]] | None = None) -> Pipeline:
    if not isinstance(d, dict):
        raise UserError(f"{where}: must be a table with 'stages'")
    settings = {k: v for k, v in d.items() if k != "stages"}
    valid = {f.name for f in dataclasses.fields(Pipeline)} - {"stages"}
    unknown = sorted(set(settings) - valid)
    if unknown:
        raise UserError(f"{where}: unknown setting(s) {', '.join(unknown)}; "
                        f"settings: stages, {', '.join(sorted(valid))}")
    specs = d.get("stages")
    if not isinstance(specs, list):
        raise UserError(f"{where}: needs a list of stages ([[stages]] tables in TOML, \"stages\": [...] in JSON)")
    stages = [build_stage(spec, f"{where}: stage {i + 1}") for i, spec in enumerate(specs)]
    pipeline = Pipeline(stages, **settings)
    resolve_tasks(pipeline, resolve_task)
    pipeline.check(where)
    return pipeline


PRESETS_DIR = Path(__file__).parent / "presets"
PRESETS = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))  # `code` for source code, `web` for web pages


def load_pipeline(path: str | Path, resolve_task: Callable[[str], list[str]] | None = None) -> Pipeline:
    """Read a pipeline file, or a shipped preset by name (a file of that name wins)."""
    p = Path(path)
    if not p.is_file() and str(path) in PRESETS:
        p = PRESETS_DIR / f"{path}.toml"
    if not p.is_file():
        raise UserError(f"{p}: no such pipeline file (or a preset: {', '.join(PRESETS)})")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            import tomllib

            d = tomllib.loads(text)
        else:
            d = json.loads(text)
    except Exception as e:
        raise UserError(f"{p}: cannot parse ({e})") from None
    return pipeline_from_dict(d, str(p), resolve_task)
