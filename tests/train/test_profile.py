"""Profiling measurements: FLOP counts equal torch's own counter and 2*B*T*in*out counted again here,
decoding matches greedy generation, and the peaks and byte counts are what they say."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from llmlab.infer import generate
from llmlab.models import Transformer, get_preset
from llmlab.models.gpt import count_parameters, flops_per_token
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.profile import (
    Matmul,
    decode_bytes_per_token,
    linear_matmuls,
    make_decode_step,
    make_train_step,
    memory_bandwidth,
    peak_matmul_flops,
    time_matmuls,
    time_steps,
)

B, T = 2, 32


@pytest.fixture(scope="module", params=["llama-tiny", "gpt2-tiny"])
def model(request):
    torch.manual_seed(0)
    return Transformer(get_preset(request.param, vocab_size=320, seq_len=64))


def test_linear_flops_equal_an_independent_count_and_torch(model):
    matmuls = linear_matmuls(model, B * T)
    expected = sum(2 * B * T * m.in_features * m.out_features for m in model.modules()
                   if isinstance(m, torch.nn.Linear))
    assert sum(mm.flops * mm.count for mm in matmuls) == expected
    assert sum(mm.count for mm in matmuls) == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randint(0, 320, (B, T)))
    counts = counter.get_flop_counts()["Global"]
    assert sum(v for k, v in counts.items() if "mm" in str(k)) == expected  # every matmul is a linear layer


def test_training_flops_per_token_match_torch(model):
    """MFU's numerator: torch counts the matmuls of forward and backward; attention's scores and weighted sum
    (12 * n_layer * n_embd * T per token, forward and backward) run inside SDPA, which it does not count."""
    counter = FlopCounterMode(display=False)
    idx = torch.randint(0, 320, (B, T + 1))
    with counter:
        causal_lm_loss(model(idx[:, :-1]), idx[:, 1:]).backward()
    c = model.config
    attention = 12 * c.n_layer * c.n_head * c.head_dim * T * B * T
    assert counter.get_total_flops() + attention == flops_per_token(c, T) * B * T


def test_matmul_bytes_and_intensity():
    mm = Matmul("w", 1, 512, 256)  # decoding: one row against a whole weight matrix
    assert mm.flops == 2 * 512 * 256 and mm.bytes == 4 * (512 + 512 * 256 + 256)
    assert mm.intensity == pytest.approx(0.5, rel=0.01)  # 2 FLOPs per 4-byte weight
    assert time_matmuls([mm], torch.device("cpu"), repeats=2)[0].flops_per_s > 0


def test_decoding_is_greedy_generation(model):
    prompt = torch.randint(0, 320, (10,)).tolist()
    step = make_decode_step(model, 10, prompt)
    ours = [step() for _ in range(6)]
    assert ours == generate(model, prompt, 6, temperature=0)


def test_decode_bytes_counts_weights_once_and_the_cache(model):
    c = model.config
    expected = 4 * count_parameters(model) + 2 * c.n_layer * c.n_kv_head * c.head_dim * 40 * 4
    assert decode_bytes_per_token(model, 40) == expected


def test_peaks_and_step_timing():
    cpu = torch.device("cpu")
    assert 1e6 < peak_matmul_flops(cpu, size=128, repeats=2) < 1e15
    assert 1e6 < memory_bandwidth(cpu, megabytes=4, repeats=2) < 1e13
    model = Transformer(get_preset("llama-tiny", vocab_size=320, seq_len=16, n_layer=1))
    timing = time_steps(make_train_step(model, 2, 16), steps=3, warmup=1)
    assert 0 < timing["best_s"] <= timing["median_s"] and timing["steps"] == 3
