"""Mixing: epochs per source and temperature sampling, with token counts checked against a direct count."""

import math

import pytest

from llmlab.data.pipeline.mix import Mix, copies, temperature_rates, uniform
from llmlab.data.pipeline.stage import StageStats


def corpus():
    web = [{"id": f"w{i}", "text": "web page " * 10, "source": "web"} for i in range(400)]
    code = [{"id": f"c{i}", "text": "x = 1\n" * 5, "source": "code"} for i in range(50)]
    return web + code


def run_mix(stage, docs, shard_sizes):
    summaries, start = [], 0
    for n in shard_sizes:
        summaries.append(stage.collect(docs[start:start + n]))
        start += n
    stats = StageStats("mix")
    decisions = stage.decide(summaries, stats)
    out, start = [], 0
    for n, dec in zip(shard_sizes, decisions, strict=True):
        out += stage.apply_decision(docs[start:start + n], dec, stats)
        start += n
    return out, stats


def test_epochs_per_source():
    docs = corpus()
    out, stats = run_mix(Mix(weights={"code": 3, "web": 0.5}), docs, [450])
    code = [d for d in out if d["source"] == "code"]
    assert len(code) == 150 and sorted({d.get("repeat", 0) for d in code}) == [0, 1, 2]
    web = [d for d in out if d["source"] == "web"]
    assert abs(len(web) - 200) < 3 * math.sqrt(400 * 0.25)  # binomial(400, 0.5)
    counted = {"web": sum(len(d["text"].encode()) for d in web), "code": sum(len(d["text"].encode()) for d in code)}
    assert stats.info["tokens out per source"] == counted
    assert stats.info["tokens in per source"] == {"web": 400 * 90, "code": 50 * 30}


def test_same_choices_whatever_the_shards():
    docs = corpus()
    one, _ = run_mix(Mix(weights={"web": 0.3}), docs, [450])
    many, _ = run_mix(Mix(weights={"web": 0.3}), docs, [100, 7, 300, 43])
    assert one == many


def test_temperature():
    assert temperature_rates({"a": 900, "b": 100}, 1.0) == pytest.approx({"a": 1.0, "b": 1.0})
    # T=2: p ∝ sqrt(n): 30 and 10 -> 0.75 and 0.25 of 1000 tokens
    assert temperature_rates({"a": 900, "b": 100}, 2.0) == pytest.approx({"a": 750 / 900, "b": 250 / 100})
    out, stats = run_mix(Mix(temperature=2.0), corpus(), [450])
    share = stats.info["tokens out per source"]["code"] / sum(stats.info["tokens out per source"].values())
    assert share == pytest.approx(math.sqrt(1500) / (math.sqrt(1500) + math.sqrt(36000)), abs=0.02)


def test_copies_and_coins():
    assert [copies(2.25, u) for u in (0.1, 0.3)] == [3, 2]
    assert uniform("doc", 0) == uniform("doc", 0) != uniform("doc", 1)


@pytest.mark.parametrize("kw", [{}, {"weights": {"a": 1}, "temperature": 1.0}, {"weights": {"a": -1}},
                                {"temperature": 0.0}])
def test_bad_options(kw):
    with pytest.raises(ValueError):
        Mix(**kw).check()
