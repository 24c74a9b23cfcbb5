"""Executors: the same output in-process, on local workers and on a two-worker Dask cluster; a failing shard
is retried once and then named; a dead worker stops the run, and the next run resumes without redoing
finished shards."""

import dataclasses
import os
import time
from pathlib import Path

import pytest

from llmlab.common.errors import UserError
from llmlab.data.pipeline import PII, ExactDedup, MinHashDedup, Normalize, Pipeline, run_pipeline
from llmlab.data.pipeline.executors import InProcess, ShardsFailed, WorkerDied, drive, make_executor
from llmlab.data.pipeline.stage import DocStage


@dataclasses.dataclass
class Explode(DocStage):
    """Fails (or kills its process) on documents whose id contains `marker`, while `flag_file` exists."""

    name = "explode"
    marker: str = ""
    flag_file: str = ""
    how: str = "raise"  # raise | exit | once (raise the first time only, then succeed)

    def apply(self, doc, stats):
        if self.marker in doc["id"] and os.path.exists(self.flag_file):
            if self.how == "exit":
                os._exit(1)
            if self.how == "once":
                os.remove(self.flag_file)
            raise RuntimeError(f"boom on {doc['id']}")
        return doc


def pipeline(*extra) -> Pipeline:
    return Pipeline([Normalize(), *extra, PII(), ExactDedup(), MinHashDedup(threshold=0.8)], shard_mb=0.1)


def output(out: Path) -> list[str]:
    return [f.read_text(encoding="utf-8") for f in sorted(out.glob("shard_*.jsonl"))]


@pytest.fixture(scope="module")
def reference(noisy_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    report = run_pipeline(pipeline(), [str(noisy_file)], out)
    return out, report


def test_local_workers_write_the_same_output(noisy_file, tmp_path, reference):
    ex = make_executor("local", workers=2)
    try:
        report = run_pipeline(pipeline(), [str(noisy_file)], tmp_path, ex)
    finally:
        ex.close()
    assert report["shards"] > 3 and report["executor"] == "local"
    assert output(tmp_path) == output(reference[0])
    assert report["stages"] == reference[1]["stages"] or [s["docs_out"] for s in report["stages"]] == \
        [s["docs_out"] for s in reference[1]["stages"]]


def test_dask_cluster_with_two_workers_writes_the_same_output(noisy_file, tmp_path, reference):
    ex = make_executor("dask", workers=2)
    try:
        assert len(ex.client.scheduler_info()["workers"]) == 2
        report = run_pipeline(pipeline(), [str(noisy_file)], tmp_path, ex)
    finally:
        ex.close()
    assert report["executor"] == "dask" and output(tmp_path) == output(reference[0])


def test_failing_shard_is_retried_once_then_named(noisy_file, noisy_rows, tmp_path):
    flag = tmp_path / "flag"
    flag.touch()
    victim = noisy_rows[len(noisy_rows) // 2]["id"]
    p = pipeline(Explode(marker=victim, flag_file=str(flag)))
    with pytest.raises(ShardsFailed) as e:
        run_pipeline(p, [str(noisy_file)], tmp_path / "out")
    failed = list(e.value.failures)
    assert len(failed) == 1 and f"boom on {victim}" in str(e.value) and "run the same command again" in str(e.value)
    done = sorted((tmp_path / "out" / "_work" / "seg0").glob("*.stats.json"))
    assert len(done) > 3  # every other shard finished
    assert failed[0] + ".stats.json" not in [d.name for d in done]
    flag.touch()  # fails once, then works: the retry saves the run
    p_once = pipeline(Explode(marker=victim, flag_file=str(flag), how="once"))
    report = run_pipeline(p_once, [str(noisy_file)], tmp_path / "out2")
    assert report["documents_out"] > 0 and not flag.exists()


def test_dead_worker_stops_the_run_and_the_next_run_resumes(noisy_file, noisy_rows, tmp_path, reference):
    flag = tmp_path / "flag"
    flag.touch()
    victim = noisy_rows[-1]["id"]  # in the last shard: earlier shards finish first
    p = pipeline(Explode(marker=victim, flag_file=str(flag), how="exit"))
    ex = make_executor("local", workers=1)
    with pytest.raises(WorkerDied, match="worker died while running shard"):
        run_pipeline(p, [str(noisy_file)], tmp_path, ex)
    ex.close()
    work = tmp_path / "_work" / "seg0"
    finished = {f.name: f.stat().st_mtime_ns for f in work.glob("*.stats.json")}
    assert finished
    flag.unlink()
    report = run_pipeline(p, [str(noisy_file)], tmp_path, keep_work=True)  # same pipeline and inputs: resumes
    assert {name: (work / name).stat().st_mtime_ns for name in finished} == finished  # not processed again
    assert len(list(work.glob("*.stats.json"))) == report["shards"] > len(finished)
    assert output(tmp_path) == output(reference[0])
    assert report["documents_out"] == reference[1]["documents_out"]


def test_resume_refuses_another_pipeline(noisy_file, tmp_path):
    flag = tmp_path / "flag"
    flag.touch()
    with pytest.raises(ShardsFailed):
        run_pipeline(pipeline(Explode(marker="page", flag_file=str(flag))), [str(noisy_file)], tmp_path)
    with pytest.raises(UserError, match="unfinished run of another pipeline"):
        run_pipeline(pipeline(), [str(noisy_file)], tmp_path)


class Never:
    def done(self):
        return False


def test_every_wait_has_a_timeout():
    t0 = time.monotonic()
    with pytest.raises(UserError, match="ran longer than task_timeout"):
        drive(lambda task: Never(), [1], ["shard_00000"], workers=1, task_timeout=0.2)
    assert time.monotonic() - t0 < 5


def test_unknown_executors():
    with pytest.raises(UserError, match="use dask"):
        make_executor("ray")
    with pytest.raises(UserError, match="workers 0"):
        make_executor("local", workers=0)
    assert isinstance(make_executor("inprocess"), InProcess)
