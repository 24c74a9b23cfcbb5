"""Generation: the KV cache changes speed, never tokens; batches equal single runs; transformers agrees."""

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.infer import generate, generate_batch, stream
from llmlab.models import Transformer, get_preset


@pytest.fixture(scope="module", params=["llama-tiny", "gpt2-tiny"])
def model(request):
    torch.manual_seed(0)
    return Transformer(get_preset(request.param, vocab_size=97, seq_len=64, n_layer=2)).eval()


PROMPT = [5, 17, 3, 42, 8, 1]


def test_greedy_with_and_without_cache_identical(model):
    with_cache = generate(model, PROMPT, 20, temperature=0)
    without = generate(model, PROMPT, 20, temperature=0, use_cache=False)
    assert len(with_cache) == 20 and with_cache == without


def test_sampling_with_and_without_cache_identical_for_a_seed(model):
    kw = dict(temperature=0.9, top_k=20, top_p=0.95, repetition_penalty=1.2, seed=3)
    assert generate(model, PROMPT, 15, **kw) == generate(model, PROMPT, 15, use_cache=False, **kw)


def test_seeds_reproduce_and_differ(model):
    runs = {tuple(generate(model, PROMPT, 12, temperature=1.0, seed=s)) for s in (1, 1, 2, 3)}
    assert len(runs) >= 2
    assert generate(model, PROMPT, 12, seed=9) == generate(model, PROMPT, 12, seed=9)


def test_stream_yields_what_generate_returns(model):
    assert list(stream(model, torch.tensor([PROMPT]), 10, temperature=0)) == generate(model, PROMPT, 10,
                                                                                     temperature=0)
    assert not torch.is_inference_mode_enabled()


def test_batch_of_different_lengths_equals_single_runs(model):
    prompts = [PROMPT, [7, 7, 2], list(range(10, 30))]
    batch = generate_batch(model, prompts, 8, temperature=0)
    assert batch == [generate(model, p, 8, temperature=0) for p in prompts]
    penalised = generate_batch(model, prompts, 8, temperature=0, repetition_penalty=1.5)
    assert penalised == [generate(model, p, 8, temperature=0, repetition_penalty=1.5) for p in prompts]


def test_eos_stops_and_min_new_tokens_delays_it(model):
    free = generate(model, PROMPT, 10, temperature=0)
    eos = free[3]
    stopped = generate(model, PROMPT, 10, temperature=0, eos_id=eos)
    assert stopped == free[:free.index(eos) + 1]
    delayed = generate(model, PROMPT, 10, temperature=0, eos_id=eos, min_new_tokens=len(stopped) + 1)
    assert eos not in delayed[:len(stopped) + 1]


def test_context_window_errors_or_truncates(model):
    long = [1] * 70
    with pytest.raises(UserError, match="context window"):
        generate(model, long, 5)
    assert len(generate(model, long, 5, temperature=0, truncate=True)) == 5
    assert len(generate(model, [1] * 60, 50, temperature=0)) == 4  # stops where the window ends
    with pytest.raises(UserError, match="vocabulary"):
        generate(model, [1000], 5)


def test_greedy_matches_transformers_generate():
    transformers = pytest.importorskip("transformers")
    from llmlab.models.hf import config_from_hf, state_dict_from_hf

    cfg = transformers.LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    config = config_from_hf(hf.config.to_dict())
    ours = Transformer(config).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config))
    expected = hf.generate(torch.tensor([PROMPT]), max_new_tokens=24, do_sample=False, min_new_tokens=24,
                           pad_token_id=0)[0, len(PROMPT):].tolist()
    assert generate(ours, PROMPT, 24, temperature=0) == expected
