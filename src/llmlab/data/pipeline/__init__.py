"""The data pipeline: read, normalise, filter, redact, deduplicate, decontaminate and mix documents, shard
by shard, on one process, local workers or a Dask cluster, with a report of what each stage removed.

    from llmlab.data.pipeline import GopherQuality, MinHashDedup, Normalize, Pipeline, run_pipeline
    p = Pipeline([Normalize(), GopherQuality(), MinHashDedup(threshold=0.8)])
    run_pipeline(p, ["crawl/"], "runs/clean")

Modules: `readers` (inputs and outputs), `normalize`, `filters`, `pii`, `dedup`, `decontam`, `mix` (the
stages), `config` (pipeline files), `executors`, `runner` (shards, resuming), `report`.
"""

from llmlab.data.pipeline.config import STAGES, Pipeline, load_pipeline, pipeline_from_dict
from llmlab.data.pipeline.decontam import Decontaminate
from llmlab.data.pipeline.dedup import ExactDedup, MinHashDedup
from llmlab.data.pipeline.executors import make_executor
from llmlab.data.pipeline.filters import C4, GopherQuality, GopherRepetition, Language, Length
from llmlab.data.pipeline.mix import Mix
from llmlab.data.pipeline.normalize import Normalize, RegexRules
from llmlab.data.pipeline.pii import PII
from llmlab.data.pipeline.runner import process_documents, run_pipeline

__all__ = ["C4", "PII", "STAGES", "Decontaminate", "ExactDedup", "GopherQuality", "GopherRepetition", "Language",
           "Length", "MinHashDedup", "Mix", "Normalize", "Pipeline", "RegexRules", "load_pipeline", "make_executor",
           "pipeline_from_dict", "process_documents", "run_pipeline"]
