"""Running a pipeline shard by shard on an executor, resumably, and writing its output and report.

The stages are cut into segments at each GlobalStage (dedup, mix). Segment k is one task per shard:

    read (the input shard, or segment k-1's output) -> apply the previous global stage's decision
    -> the segment's DocStages -> the next global stage's `collect` -> write

Between segments the driver runs the global stage's `decide` over every shard's summary. Each task writes
its documents, its summary (.npz) and, last, its counts (.stats.json): the counts file marks the shard as
done, so a run that crashed restarts where it stopped and never processes a finished shard twice. The
decisions are recomputed from the saved summaries, which gives the same result every time.

Layout of `out/`: `shard_00000.jsonl ...` (or .parquet), `report.json`, `report.md`, plots, and while a
run is unfinished `_work/` (the plan, intermediate shards, summaries, counts). A finished run removes
`_work/` unless `keep_work` is set.
"""

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic
from llmlab.data.pipeline.config import Pipeline
from llmlab.data.pipeline.executors import InProcess
from llmlab.data.pipeline.readers import InputShard, Piece, plan_shards, read_jsonl_docs, read_shard, write_docs
from llmlab.data.pipeline.report import write_report
from llmlab.data.pipeline.stage import DocStage, GlobalStage, StageStats, Summary

WORK = "_work"


@dataclasses.dataclass
class Task:
    shard: InputShard
    segment: int
    read_from: str | None  # previous segment's shard; None: read the input
    decision_stage: GlobalStage | None
    decision: Summary | None
    stages: list[tuple[int, DocStage]]  # (stage number, stage)
    collect_stage: tuple[int, GlobalStage] | None  # (stage number, stage)
    out_path: str
    summary_path: str
    stats_path: str
    on_bad_bytes: str
    decision_index: int = 0
    output_index: int | None = None  # set on the last segment: count what is written, per source


def run_task(task: Task) -> list[dict]:
    """One shard through one segment; returns (and writes, last) the stats of each stage it ran."""
    all_stats: list[tuple[int, StageStats]] = []
    t0 = time.perf_counter()
    if task.read_from is None:
        docs, read_stats = read_shard(task.shard, task.on_bad_bytes)
        read_stats.seconds = time.perf_counter() - t0
        all_stats.append((0, read_stats))
    else:
        docs = read_jsonl_docs(task.read_from)
    if task.decision_stage is not None:
        t0 = time.perf_counter()
        stats = StageStats(task.decision_stage.name)
        docs = task.decision_stage.apply_decision(docs, task.decision, stats)
        stats.seconds += time.perf_counter() - t0
        all_stats.append((task.decision_index, stats))
    for index, stage in task.stages:
        t0 = time.perf_counter()
        stats = StageStats(stage.name)
        docs = stage.run(docs, stats)
        stats.seconds = time.perf_counter() - t0
        all_stats.append((index, stats))
    if task.collect_stage is not None:
        t0 = time.perf_counter()
        index, stage = task.collect_stage
        summary = stage.collect(docs)
        seconds = time.perf_counter() - t0

        def save(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **summary)

        atomic_write(task.summary_path, save)
        all_stats.append((index, StageStats(stage.name, seconds=seconds)))
    if task.output_index is not None:
        out = StageStats("output")
        for doc in docs:
            out.kept(doc)
            out.counters[f"documents: {doc['source']}"] += 1
            out.counters[f"bytes: {doc['source']}"] += len(doc["text"].encode("utf-8"))
        all_stats.append((task.output_index, out))
    write_docs(docs, task.out_path)
    result = [{"index": i, **s.to_dict()} for i, s in all_stats]
    write_json_atomic(task.stats_path, result)
    return result


def segments(stages: list) -> list[tuple[list[tuple[int, DocStage]], tuple[int, GlobalStage] | None]]:
    """[(doc stages, the global stage that ends the segment or None)], stages numbered from 1."""
    out, current = [], []
    for i, stage in enumerate(stages, 1):
        if isinstance(stage, GlobalStage):
            out.append((current, (i, stage)))
            current = []
        else:
            current.append((i, stage))
    out.append((current, None))
    return out


def _plan_record(pipeline: Pipeline, shards: list[InputShard]) -> dict:
    return {"pipeline": pipeline.to_dict(), "shards": [dataclasses.asdict(s) for s in shards]}


def _start(out: Path, record: dict) -> None:
    """Resume the run in `out` if it is this one; refuse a different one; clear a finished one."""
    plan = out / WORK / "plan.json"
    if plan.exists():
        if json.loads(plan.read_text(encoding="utf-8")) != json.loads(json.dumps(record)):
            raise UserError(f"{out} holds an unfinished run of another pipeline or other inputs; choose a new "
                            f"out folder, or delete {out / WORK} to start over")
        log.info(f"resuming the unfinished run in {out}")
        return
    for old in [*out.glob("shard_*.jsonl"), *out.glob("shard_*.parquet"), *out.glob("report.*"),
                *out.glob("*.png")]:
        old.unlink()
    write_json_atomic(plan, record)


def run_pipeline(pipeline: Pipeline, inputs: list[str], out_dir: str | Path, executor=None,
                 keep_work: bool = False, task_timeout: float = 3600.0, title: str = "pipeline") -> dict:
    """Run `pipeline` over `inputs` (paths, `NAME=PATH`, `hf:` streams) into `out_dir`; return the report."""
    pipeline.check()
    executor = executor or InProcess()
    out = Path(out_dir)
    t_start = time.perf_counter()
    shards = plan_shards(inputs, int(pipeline.shard_mb * 1e6))
    _start(out, _plan_record(pipeline, shards))
    segs = segments(pipeline.stages)
    names = [s.name for s in shards]
    per_shard: dict[str, list[dict]] = {name: [] for name in names}
    global_stats: dict[int, StageStats] = {}
    decision_stage, decisions, decision_index = None, None, 0
    for k, (doc_stages, ends_with) in enumerate(segs):
        last = k == len(segs) - 1
        seg_dir = out / WORK / f"seg{k}"
        tasks = []
        for j, shard in enumerate(shards):
            out_path = (out / f"{shard.name}.{pipeline.output_format}") if last else seg_dir / f"{shard.name}.jsonl"
            tasks.append(Task(
                shard=shard, segment=k,
                read_from=None if k == 0 else str(out / WORK / f"seg{k - 1}" / f"{shard.name}.jsonl"),
                decision_stage=decision_stage, decision=decisions[j] if decisions else None,
                decision_index=decision_index, stages=doc_stages,
                collect_stage=ends_with, out_path=str(out_path),
                summary_path=str(seg_dir / f"{shard.name}.npz"), stats_path=str(seg_dir / f"{shard.name}.stats.json"),
                on_bad_bytes=pipeline.on_bad_bytes, output_index=len(pipeline.stages) + 1 if last else None))
        todo = [t for t in tasks if not Path(t.stats_path).exists()]
        if len(todo) < len(tasks):
            log.info(f"segment {k + 1}/{len(segs)}: {len(tasks) - len(todo)} shard(s) already done, skipping them")
        if todo:
            log.info(f"segment {k + 1}/{len(segs)}: {len(todo)} shard(s) on {executor.name} "
                     f"({', '.join(s.name for _, s in doc_stages) or 'no per-document stages'}"
                     f"{' -> ' + ends_with[1].name if ends_with else ''})")
            try:
                executor.map(run_task, todo, [t.shard.name for t in todo], task_timeout=task_timeout)
            except UserError as e:
                e.args = (f"{e}; finished shards are kept in {out / WORK}: run the same command again to resume",)
                raise
        for t in tasks:
            per_shard[t.shard.name] += json.loads(Path(t.stats_path).read_text(encoding="utf-8"))
        if ends_with:
            index, stage = ends_with
            t0 = time.perf_counter()
            summaries = [_load_summary(t.summary_path) for t in tasks]
            stats = StageStats(stage.name)
            decisions = stage.decide(summaries, stats)
            stats.seconds = time.perf_counter() - t0
            global_stats[index] = stats
            decision_stage, decision_index = stage, index
    report = _merge(pipeline, shards, per_shard, global_stats)
    report.update({"inputs": inputs, "out": str(out), "executor": executor.name, "workers": executor.workers,
                   "wall_s": round(time.perf_counter() - t_start, 3), "title": title})
    write_report(report, out)
    if not keep_work:
        shutil.rmtree(out / WORK, ignore_errors=True)
    log.info(f"{title}: {report['documents_in']:,} documents in, {report['documents_out']:,} out; report in "
             f"{out / 'report.md'}")
    return report


def _load_summary(path: str) -> Summary:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _merge(pipeline: Pipeline, shards: list[InputShard], per_shard: dict[str, list[dict]],
           global_stats: dict[int, StageStats]) -> dict:
    """One StageStats per stage (index 0 = reading), adding shards in order."""
    merged = [StageStats(n) for n in ["read"] + [s.name for s in pipeline.stages] + ["output"]]
    for shard in shards:
        for entry in per_shard[shard.name]:
            merged[entry.pop("index")].merge(StageStats.from_dict(entry))
    for index, stats in global_stats.items():
        merged[index].info.update(stats.info)
        merged[index].seconds += stats.seconds
    read, out = merged[0], merged.pop()
    sources = sorted({k.split(": ", 1)[1] for k in out.counters})
    return {"format": "llmlab-pipeline", "pipeline": pipeline.to_dict(), "shards": len(shards),
            "documents_in": read.docs_in, "bytes_in": read.bytes_in,
            "documents_out": out.docs_out, "bytes_out": out.bytes_out,
            "sources_out": {src: {"documents": out.counters[f"documents: {src}"],
                                  "bytes": out.counters[f"bytes: {src}"]} for src in sources},
            "stages": [s.to_dict() for s in merged]}


def process_documents(docs: list[tuple[str, str]], pipeline: Pipeline, work_dir: str | Path,
                      executor=None) -> tuple[list[tuple[str, str]], dict]:
    """Run a pipeline over in-memory (name, text) documents, e.g. before tokenising; names survive as ids."""
    work = Path(work_dir)
    src = work / "input.jsonl"
    write_docs([{"id": name, "text": text, "source": name.split("/")[0].split(":")[0]} for name, text in docs], src)
    report = run_pipeline(pipeline, [str(src)], work / "out", executor, title="pipeline before tokenising")
    out_docs = []
    for f in sorted((work / "out").glob(f"shard_*.{pipeline.output_format}")):
        rows = read_jsonl_docs(f) if f.suffix == ".jsonl" else _read_parquet_rows(f)
        out_docs += [(d["id"], d["text"]) for d in rows]
    if not out_docs:
        raise UserError(f"the pipeline removed every document; see {work / 'out' / 'report.md'}")
    return out_docs, report


def _read_parquet_rows(path: Path) -> list[dict]:
    shard = InputShard("x", [Piece(str(path), path.name, "")])
    return read_shard(shard)[0]
