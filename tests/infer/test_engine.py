"""Continuous batching: every request's output equals `generate` on it alone, under any interleaving.

The models run in float64 so that a different batch shape (padding, chunk boundaries) cannot flip a greedy
argmax through rounding: equality then tests the scheduler and the cache, not the float noise. A large init
(std 0.3) makes the random models' continuations vary with their context instead of repeating one token.
"""

import random

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.infer import generate
from llmlab.infer.engine import Engine, QueueFull, SamplingParams
from llmlab.models import Transformer, get_preset

VOCAB = 256


def tiny(preset: str = "llama-tiny", seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset(preset, vocab_size=VOCAB, seq_len=256, n_layer=2, n_embd=64,
                                  init_std=0.3)).eval().double()


@pytest.fixture(scope="module", params=[("llama-tiny", torch.float64), ("gpt2-tiny", torch.float64),
                                        ("llama-tiny", torch.float32)])
def model(request):
    """float32 too: the rounding of a padded or packed batch differs, but not enough to flip these argmaxes."""
    preset, dtype = request.param
    return tiny(preset).to(dtype)


def run_all(engine: Engine, requests: dict, rng: random.Random | None = None, p_arrive: float = 0.5,
            max_steps: int = 5000) -> dict:
    """Add requests {id: (prompt, params)} at random steps (all at once without rng); -> {id: events}."""
    todo, events = list(requests), {rid: [] for rid in requests}
    for _ in range(max_steps):
        while todo and (rng is None or rng.random() < p_arrive):
            rid = todo.pop(0)
            engine.add_request(rid, *requests[rid])
            if rng is not None:
                break
        for e in engine.step():
            events[e.request_id].append(e)
        if not todo and not engine.has_work():
            return events
    raise AssertionError("engine did not finish")


def tokens(evs) -> list[int]:
    return [e.token_id for e in evs if e.token_id is not None]


def check_finished(evs, prompt_len: int) -> None:
    assert [e.finished for e in evs] == [False] * (len(evs) - 1) + [True]
    assert evs[-1].prompt_tokens == prompt_len and evs[-1].completion_tokens == len(tokens(evs))


def test_sixteen_requests_at_random_times_equal_generate_alone(model):
    rng = random.Random(0)
    requests = {}
    for i in range(16):
        prompt = [rng.randrange(VOCAB) for _ in range(rng.choice([1, 3, 17, 40, 90]))]
        max_tokens = rng.randint(1, 24)
        stop = frozenset()
        if i % 3 == 0:  # a stop id the greedy continuation reaches
            free = generate(model, prompt, max_tokens, temperature=0)
            stop = frozenset({free[len(free) // 2]})
        requests[f"r{i}"] = (prompt, SamplingParams(max_tokens=max_tokens, temperature=0, stop_token_ids=stop))
    engine = Engine(model, block_size=8, max_batch=6, prefill_chunk=32)
    out = run_all(engine, requests, rng)
    for rid, (prompt, p) in requests.items():
        expected = generate(model, prompt, p.max_tokens, temperature=0, stop_ids=p.stop_token_ids)
        assert tokens(out[rid]) == expected, rid
        check_finished(out[rid], len(prompt))
        assert out[rid][-1].finish_reason == ("stop" if expected[-1] in p.stop_token_ids else "length")
    assert engine.stats()["kv_blocks_used"] == 0 and engine.stats()["running"] == 0


def test_readable_gather_gives_the_same_tokens():
    model = tiny()
    requests = {f"r{i}": ([i + 1] * (5 + 7 * i), SamplingParams(max_tokens=6, temperature=0)) for i in range(4)}
    fast = run_all(Engine(model, block_size=4), requests)
    slow_engine = Engine(model, block_size=4)
    slow_engine.reference = True
    slow = run_all(slow_engine, requests)
    assert {r: tokens(e) for r, e in fast.items()} == {r: tokens(e) for r, e in slow.items()}


def test_seeded_sampling_does_not_depend_on_the_batch():
    model = tiny()
    p = SamplingParams(max_tokens=12, temperature=0.9, top_k=50, top_p=0.95, seed=7)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    alone = tokens(run_all(Engine(model), {"x": (prompt, p)})["x"])
    rng = random.Random(1)
    crowd = {f"o{i}": ([rng.randrange(VOCAB) for _ in range(rng.randint(1, 30))],
                       SamplingParams(max_tokens=10, temperature=1.0, seed=i)) for i in range(6)}
    crowd["x"] = (prompt, p)
    batched = tokens(run_all(Engine(model, prefill_chunk=16), crowd, rng)["x"])
    assert alone == batched == generate(model, prompt, 12, temperature=0.9, top_k=50, top_p=0.95, seed=7)
    other_seed = SamplingParams(max_tokens=12, temperature=0.9, top_k=50, top_p=0.95, seed=8)
    assert tokens(run_all(Engine(model), {"x": (prompt, other_seed)})["x"]) != alone


def test_preemption_recomputes_and_outputs_are_unchanged():
    model = tiny()
    rng = random.Random(2)
    requests = {f"r{i}": ([rng.randrange(VOCAB) for _ in range(rng.randint(10, 30))],
                          SamplingParams(max_tokens=30, temperature=0)) for i in range(8)}
    engine = Engine(model, block_size=4, kv_blocks=30, max_batch=8)
    out = run_all(engine, requests)
    assert engine.stats()["preemptions"] > 0
    for rid, (prompt, p) in requests.items():
        assert tokens(out[rid]) == generate(model, prompt, p.max_tokens, temperature=0), rid
        check_finished(out[rid], len(prompt))
    assert engine.stats()["kv_blocks_used"] == 0


def test_pool_smaller_than_the_context_ends_with_length():
    model = tiny()
    engine = Engine(model, block_size=4, kv_blocks=6)  # 5 usable blocks: 20 positions
    out = run_all(engine, {"a": ([1, 2, 3], SamplingParams(max_tokens=100, temperature=0))})["a"]
    assert out[-1].finish_reason == "length" and len(tokens(out)) == 18  # 21 tokens, the last never fed
    assert tokens(out) == generate(model, [1, 2, 3], 18, temperature=0)


def test_long_prompt_prefills_in_chunks_while_others_decode():
    model = tiny()
    engine = Engine(model, prefill_chunk=16)
    engine.add_request("short", [7, 8, 9], SamplingParams(max_tokens=40, temperature=0))
    events = {"short": engine.step(), "long": []}  # short is prefilled and decoding
    long_prompt = list(range(200))
    engine.add_request("long", long_prompt, SamplingParams(max_tokens=5, temperature=0))
    per_step = []
    while engine.has_work():
        step = engine.step()
        per_step.append({e.request_id for e in step})
        for e in step:
            events[e.request_id].append(e)
    first_long = next(i for i, ids in enumerate(per_step) if "long" in ids)
    assert first_long >= 200 // 16  # the prompt took ceil(200 / 16) chunks
    assert all("short" in ids for ids in per_step[:first_long])  # and short got a token at every one
    assert tokens(events["long"]) == generate(model, long_prompt, 5, temperature=0)
    assert tokens(events["short"]) == generate(model, [7, 8, 9], 40, temperature=0)


def test_shared_system_prompt_reuses_blocks_and_stays_correct():
    model = tiny()
    system = list(range(50, 90))  # 40 tokens: 5 full blocks of 8
    requests = {f"u{i}": (system + [i, i + 1, i + 2], SamplingParams(max_tokens=8, temperature=0)) for i in range(4)}
    engine = Engine(model, block_size=8, prefill_chunk=64)
    out = {rid: [] for rid in requests}

    def step():
        for e in engine.step():
            out[e.request_id].append(e)

    engine.add_request("u0", *requests["u0"])
    step()
    used_one = engine.stats()["kv_blocks_used"]
    for rid in ("u1", "u2", "u3"):
        engine.add_request(rid, *requests[rid])
    step()
    assert engine.stats()["prefix_hits"] == 3 * 5
    assert engine.stats()["kv_blocks_used"] == used_one + 3 * (used_one - 5)  # only the private tails are new
    while engine.has_work():
        step()
    for rid, (prompt, p) in requests.items():
        assert tokens(out[rid]) == generate(model, prompt, p.max_tokens, temperature=0)
    assert engine.stats()["kv_blocks_used"] == 0


def test_abort_frees_blocks_at_once_and_nothing_leaks():
    model = tiny()
    engine = Engine(model, block_size=4)
    for i in range(4):
        engine.add_request(f"r{i}", list(range(1, 30 + i)), SamplingParams(max_tokens=50, temperature=0))
    for _ in range(3):
        engine.step()
    before = engine.stats()["kv_blocks_used"]
    engine.abort("r1")
    engine.abort("unknown")  # no-op
    assert engine.stats()["kv_blocks_used"] < before and engine.stats()["running"] == 3
    engine.abort("r2")
    engine.add_request("w", [1, 2], SamplingParams(max_tokens=3))
    engine.abort("w")  # still waiting
    events = []
    while engine.has_work():
        events += engine.step()
    aborted = [e for e in events if e.finish_reason == "abort"]
    assert {e.request_id for e in aborted} == {"r1", "r2", "w"}
    assert all(e.token_id is None and e.finished for e in aborted)
    assert engine.stats() | {"preemptions": 0, "prefix_hits": 0} == {
        "waiting": 0, "running": 0, "kv_blocks_used": 0, "kv_blocks_total": engine.blocks.n_blocks - 1,
        "preemptions": 0, "prefix_hits": 0}


def test_logprobs_are_the_models_log_softmax():
    model = tiny()
    prompt = [11, 22, 33, 44]
    p = SamplingParams(max_tokens=5, temperature=0.7, seed=1, logprobs=3)
    evs = run_all(Engine(model), {"a": (prompt, p)})["a"]
    ids = prompt + tokens(evs)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)  # (T, V)
    for i, e in enumerate(evs):
        row = logp[len(prompt) - 1 + i]
        assert e.logprob == pytest.approx(float(row[e.token_id]), abs=1e-5)
        values, top_ids = row.topk(3)
        assert [t for t, _ in e.top_logprobs] == top_ids.tolist()
        assert [v for _, v in e.top_logprobs] == pytest.approx(values.tolist(), abs=1e-5)
    plain = run_all(Engine(model), {"a": (prompt, SamplingParams(max_tokens=2, logprobs=0))})["a"]
    assert plain[0].logprob is not None and plain[0].top_logprobs is None
    assert run_all(Engine(model), {"a": (prompt, SamplingParams(max_tokens=2))})["a"][0].logprob is None


def test_min_tokens_holds_back_the_stop_token():
    model = tiny()
    prompt = [5, 6, 7]
    free = generate(model, prompt, 12, temperature=0)
    stop = frozenset({free[1]})
    p = SamplingParams(max_tokens=12, temperature=0, stop_token_ids=stop, min_tokens=6)
    out = tokens(run_all(Engine(model), {"a": (prompt, p)})["a"])
    assert out == generate(model, prompt, 12, temperature=0, stop_ids=stop, min_new_tokens=6)
    assert free[1] not in out[:6]


def test_int8_quantised_model_serves_like_generate():
    from llmlab.quantize.model import quantize_model

    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", vocab_size=VOCAB, seq_len=128, n_layer=2, n_embd=64)).eval()
    quantize_model(model, "int8")
    requests = {f"r{i}": ([i + 3] * (2 + 5 * i), SamplingParams(max_tokens=8, temperature=0)) for i in range(4)}
    out = run_all(Engine(model, block_size=8), requests)
    for rid, (prompt, p) in requests.items():
        assert tokens(out[rid]) == generate(model, prompt, p.max_tokens, temperature=0)


def test_bad_input_is_refused():
    model = tiny()
    engine = Engine(model, max_waiting=2)
    ok = SamplingParams()
    with pytest.raises(ValueError, match="no tokens"):
        engine.add_request("a", [], ok)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request("a", [1, VOCAB], ok)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request("a", [-1], ok)
    with pytest.raises(ValueError, match="context window"):
        engine.add_request("a", [1] * 256, ok)
    for bad in (SamplingParams(max_tokens=0), SamplingParams(temperature=-1.0),
                SamplingParams(temperature=float("nan")), SamplingParams(top_p=0.0)):
        with pytest.raises(ValueError):
            engine.add_request("a", [1], bad)
    engine.add_request("a", [1] * 255, ok)  # fits, with room for one token
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request("a", [1], ok)
    engine.add_request("b", [1], ok)
    with pytest.raises(QueueFull):
        engine.add_request("c", [1], ok)
    with pytest.raises(ValueError, match="more KV blocks"):
        Engine(model, block_size=4, kv_blocks=3).add_request("a", [1] * 9, ok)
    with pytest.raises(UserError, match="speculative"):
        Engine(model, draft_model=tiny())
    with pytest.raises(UserError, match="Transformer"):
        Engine(torch.nn.Linear(2, 2))
    with pytest.raises(UserError, match="max_batch"):
        Engine(model, max_batch=0)
    with pytest.raises(UserError, match="kv_blocks"):
        Engine(model, kv_blocks=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_arrivals_aborts_and_a_small_pool_keep_every_output_and_no_block(seed):
    model = tiny()
    rng = random.Random(seed)
    system = [rng.randrange(VOCAB) for _ in range(12)]
    requests = {}
    for i in range(20):
        prompt = (system if rng.random() < 0.5 else []) + [rng.randrange(VOCAB) for _ in range(rng.randint(1, 25))]
        requests[f"r{i}"] = (prompt, SamplingParams(max_tokens=rng.randint(1, 20), temperature=0))
    engine = Engine(model, block_size=4, kv_blocks=rng.choice([16, 24, 40]), max_batch=rng.choice([2, 5, 16]),
                    prefill_chunk=rng.choice([4, 9, 64]))
    todo, out, aborted = list(requests), {rid: [] for rid in requests}, set()
    while todo or engine.has_work():
        if todo and rng.random() < 0.4:
            rid = todo.pop(0)
            engine.add_request(rid, *requests[rid])
        if rng.random() < 0.05:
            rid = rng.choice(list(requests))
            if rid not in todo and not (out[rid] and out[rid][-1].finished):
                engine.abort(rid)
                aborted.add(rid)
        for e in engine.step():
            out[e.request_id].append(e)
    for rid, (prompt, p) in requests.items():
        expected = generate(model, prompt, p.max_tokens, temperature=0)
        if rid in aborted:
            assert out[rid][-1].finish_reason == "abort" and expected[:len(tokens(out[rid]))] == tokens(out[rid])
        else:
            assert tokens(out[rid]) == expected, rid
    assert engine.stats()["kv_blocks_used"] == 0 and engine.blocks.refs == [0] * engine.blocks.n_blocks


def test_context_window_ends_with_length_as_generate_does():
    model = tiny()
    prompt = [9] * 250
    out = run_all(Engine(model), {"a": (prompt, SamplingParams(max_tokens=20, temperature=0))})["a"]
    assert tokens(out) == generate(model, prompt, 20, temperature=0) and len(out) == 6
    assert out[-1].finish_reason == "length"


VARIANTS = {"alibi": {"pos": "alibi"}, "sinusoidal": {"pos": "sinusoidal"}, "post-ln": {"norm_placement": "post"},
            "moe": {"n_expert": 4, "expert_top_k": 2}, "qk-norm": {"qk_norm": "head"}}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_model_variants_serve_like_generate(name):
    """Every position scheme, norm placement and MLP kind the config offers goes through the paged cache."""
    from llmlab.models.config import ModelConfig

    try:
        config = get_preset("llama-tiny", vocab_size=VOCAB, seq_len=128, n_layer=2, n_embd=64, init_std=0.3,
                            **VARIANTS[name])
    except (TypeError, UserError):
        pytest.skip(f"{name}: not in this ModelConfig")
    torch.manual_seed(0)
    model = Transformer(config).eval().double()
    rng = random.Random(3)
    requests = {f"r{i}": ([rng.randrange(VOCAB) for _ in range(rng.randint(1, 40))],
                          SamplingParams(max_tokens=rng.randint(1, 12), temperature=0)) for i in range(6)}
    out = run_all(Engine(model, block_size=4, prefill_chunk=24, max_batch=4), requests, rng)
    for rid, (prompt, p) in requests.items():
        assert tokens(out[rid]) == generate(model, prompt, p.max_tokens, temperature=0), (name, rid)
    if "capacity_factor" in ModelConfig.__dataclass_fields__ and name == "moe":
        with pytest.raises(UserError, match="capacity factor"):
            Engine(Transformer(get_preset("llama-tiny", n_layer=1, n_embd=64, capacity_factor=1.0,
                                          **VARIANTS[name])))
