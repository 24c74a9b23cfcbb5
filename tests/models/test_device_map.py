"""Device maps and lazy loading: plans for GPUs this machine lacks (a fake device list), placement checked
on the meta device, outputs of a model spread over CPU "devices" (offload hooks included) equal to the
model in one piece, and peak memory while loading a sharded checkpoint near one shard."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import llmlab
from llmlab.common.errors import UserError
from llmlab.infer.generate import generate
from llmlab.models import KVCache, Transformer, get_preset
from llmlab.models.device_map import OFFLOAD, dispatch, materialize, plan_device_map
from llmlab.models.hf import config_to_hf, state_dict_from_hf, state_dict_to_hf, tensors_from_hf

GPUS = {"cuda:0": 10**9, "cuda:1": 10**9}
PROMPT = [3, 14, 15, 9, 26, 5]


def config(name="llama-tiny", **kw):
    return get_preset(name, **{"n_layer": 4, "n_embd": 32, "vocab_size": 97, "seq_len": 64, **kw})


@pytest.mark.parametrize("spec, layers", [
    ("0:0-1,1:2-3", ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]),
    ("cuda:1:0, 0:1-2, cpu:rest", ["cuda:1", "cuda:0", "cuda:0", "cpu"]),
    ("0:0-1,offload:rest", ["cuda:0", "cuda:0", OFFLOAD, OFFLOAD]),
    ("cpu:rest", ["cpu"] * 4),
    ("balanced", ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]),
])
def test_explicit_and_balanced_maps(spec, layers):
    plan = plan_device_map(spec, config(), free_memory=GPUS)
    assert plan.layers == layers and plan.compute == ("cuda:1" if spec.startswith("cuda:1") else "cuda:0")


def test_without_gpus_everything_is_on_the_cpu():
    for spec in ("auto", "balanced"):
        assert plan_device_map(spec, config(), free_memory={}).layers == ["cpu"] * 4
    assert plan_device_map("offload:rest", config(), free_memory={}).compute == "cpu"


def test_auto_fills_gpus_in_order_then_offloads():
    cfg = config(n_layer=5)
    with torch.device("meta"):
        model = Transformer(cfg)
    layer = sum(p.numel() for p in model.blocks[0].parameters()) * 4  # float32 bytes
    ends = (model.tok_emb.weight.numel() + (0 if cfg.tie_embeddings else model.lm_head.weight.numel())) * 4
    # room (after the 10% reserve) for the ends and 2 layers on cuda:0, for 1.5 layers on cuda:1
    free = {"cuda:0": int((ends + 2.5 * layer) / 0.9), "cuda:1": int(1.5 * layer / 0.9)}
    plan = plan_device_map("auto", cfg, free_memory=free)
    assert plan.layers == ["cuda:0", "cuda:0", "cuda:1", OFFLOAD, OFFLOAD] and plan.compute == "cuda:0"
    half = plan_device_map("auto", cfg, torch.bfloat16, free_memory=free)  # half the bytes per layer
    assert half.layers.count(OFFLOAD) == 0


@pytest.mark.parametrize("spec, message", [
    ("", "is empty"), ("0-3", "not DEVICE:FIRST-LAST"), ("0:0-9", "not within 0-3"), ("2:0-3", "cuda:2 is not here"),
    ("tpu:0-3", "not a device"), ("0:0-2,1:2-3", "layer 2 is placed twice"), ("0:0-1", "layers 2..3 have no device"),
    ("0:a-b", "not a layer range"), ("0:rest,1:rest", "'rest' is given twice"), ("0:3-1", "not within"),
])
def test_bad_maps_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message) as info:
        plan_device_map(spec, config(), free_memory=GPUS)
    assert "\n" not in str(info.value)


def random_model(name="llama-tiny", **kw) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(config(name, **kw)).eval()
    with torch.no_grad():  # random norms too, so a part left behind would show
        for n, p in model.named_parameters():
            if "norm" in n:
                p.normal_(1.0, 0.1)
    return model


def test_placement_on_the_meta_device():
    model = random_model()
    plan = plan_device_map("meta:0-1,cpu:rest", model.config, free_memory={})
    spread = materialize(model.config, model.state_dict().items(), "test", plan=plan)
    for name, p in spread.named_parameters():
        expected = "meta" if name.startswith(("tok_emb", "blocks.0.", "blocks.1.")) else "cpu"
        if name.startswith("lm_head") and model.config.tie_embeddings:
            expected = "meta"  # a tied head stays with the embedding
        assert p.device.type == expected, name
    assert [d.type for d in spread.layer_devices] == ["meta", "meta", "cpu", "cpu"]
    cache = KVCache.for_model(spread, 1, 8)
    assert [k.device.type for k in cache.k] == ["meta", "meta", "cpu", "cpu"]


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("spec", ["cpu:0-1,offload:2,cpu:rest", "offload:rest", "balanced"])
def test_spread_model_computes_what_the_whole_one_does(name, spec):
    whole = random_model(name, tie_embeddings=name == "gpt2-tiny")
    plan = plan_device_map(spec, whole.config, free_memory={})
    spread = materialize(whole.config, whole.state_dict().items(), "test", plan=plan)
    idx = torch.tensor([PROMPT])
    with torch.no_grad():
        torch.testing.assert_close(spread(idx), whole(idx), atol=0, rtol=0)
        mask = torch.tensor([[True, False, True, True, False, True]])
        torch.testing.assert_close(spread(idx, logits_mask=mask), whole(idx, logits_mask=mask), atol=0, rtol=0)
    assert generate(spread, PROMPT, 24, temperature=0) == generate(whole, PROMPT, 24, temperature=0)
    offloaded = spread.offloads
    for offload in offloaded:  # the hooks ran (prefill + 23 decode steps, plus the two direct calls)
        assert offload.loads >= 24 and all(t.data_ptr() == s.data_ptr() for t, s in zip(offload.tensors,
                                                                                          offload.stored, strict=True))
    assert bool(offloaded) == (OFFLOAD in plan.layers)


def test_dispatch_places_a_model_already_built():
    whole = random_model()
    spread = dispatch(random_model(), plan_device_map("cpu:0,offload:rest", whole.config, free_memory={}))
    idx = torch.tensor([PROMPT])
    with torch.no_grad():
        torch.testing.assert_close(spread(idx), whole(idx), atol=0, rtol=0)
    with pytest.raises(ValueError, match="already dispatched"):
        dispatch(spread, spread.device_plan)
    with pytest.raises(UserError, match="plans 2 layers for a model of 4"):
        dispatch(random_model(), plan_device_map("cpu:rest", config(n_layer=2), free_memory={}))


def test_materialize_checks_names_and_shapes():
    model = random_model()
    sd = dict(model.state_dict())
    with pytest.raises(UserError, match="missing 'norm_f.weight'"):
        materialize(model.config, [(k, v) for k, v in sd.items() if k != "norm_f.weight"], "test")
    with pytest.raises(UserError, match="unexpected 'blocks.9.mlp.up_proj.weight'"):
        materialize(model.config, [*sd.items(), ("blocks.9.mlp.up_proj.weight", sd["norm_f.weight"])], "test")
    with pytest.raises(UserError, match="tensor norm_f.weight has shape"):
        materialize(model.config, [*sd.items(), ("norm_f.weight", torch.ones(3))], "test")
    half = materialize(model.config, sd.items(), "test", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
def test_hf_tensors_one_at_a_time_equal_the_whole_mapping(name):
    model = random_model(name)
    hf_sd = state_dict_to_hf(model.state_dict(), model.config)
    whole = state_dict_from_hf(dict(hf_sd), model.config)
    one_by_one = {k: v for key, value in hf_sd.items() for k, v in tensors_from_hf(key, value, model.config).items()}
    if model.config.tie_embeddings:
        one_by_one["lm_head.weight"] = one_by_one["tok_emb.weight"]
    assert set(one_by_one) == set(whole) and all(torch.equal(one_by_one[k], whole[k]) for k in whole)
    assert tensors_from_hf("transformer.h.0.attn.bias", torch.ones(1), model.config) == {}


def test_load_with_a_device_map(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(hf_config).save_pretrained(tmp_path, max_shard_size="20KB")
    whole = llmlab.load(tmp_path)
    spread = llmlab.load(tmp_path, device_map="cpu:0,offload:rest")
    assert spread.model.device_plan.layers == ["cpu", OFFLOAD, OFFLOAD]
    assert spread.generate(PROMPT, 16, temperature=0) == whole.generate(PROMPT, 16, temperature=0)
    with pytest.raises(UserError, match="device_map 'cpu:0-7'"):
        llmlab.load(tmp_path, device_map="cpu:0-7")


MEASURE = textwrap.dedent("""
    import json, sys, torch, tqdm, safetensors.torch
    import llmlab, llmlab.loading  # every import before the measurement starts: modules take memory too
    from llmlab.common.measure import PeakMemory
    from llmlab.models.pretrained import _iter_safetensors, _weight_files
    with torch.device("meta"):  # torch's first meta nn.Embedding costs ~70 MB once (a lazy import): pay it first
        torch.nn.Embedding(2, 2)
    folder, how = sys.argv[1], sys.argv[2]
    peak = PeakMemory()
    if how == "lazy":
        model = llmlab.load(folder).model
    else:  # the whole checkpoint first, then the model: what loading did before it went tensor by tensor
        from llmlab.models.device_map import materialize
        from llmlab.models.hf import config_from_hf, state_dict_from_hf
        from safetensors.torch import load_file
        from pathlib import Path
        config = config_from_hf(json.loads((Path(folder) / "config.json").read_text()))
        sd = {}
        for f in _weight_files(Path(folder)):
            sd.update(load_file(f))
        model = materialize(config, state_dict_from_hf(sd, config).items(), folder)
    final = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(json.dumps({"extra_mb": peak.extra_mb(), "final_mb": final}))
""")


@pytest.mark.slow
def test_loading_peak_memory_stays_near_one_shard(tmp_path):
    """A ~330 MB (float32) Llama written as 4 bfloat16 shards: loading may hold one shard beyond the weights."""
    from safetensors.torch import save_file

    cfg = get_preset("llama-tiny", n_layer=8, n_embd=768, n_head=12, n_kv_head=12, intermediate_size=2048,
                     vocab_size=16000, seq_len=256, tie_embeddings=False)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in state_dict_to_hf(Transformer(cfg).state_dict(), cfg).items()}
    shards, current, size = [], {}, 0
    for key, shape in shapes.items():
        current[key] = torch.randn(shape, dtype=torch.bfloat16)
        size += current[key].nbytes
        if size > 45 * 2**20:
            shards.append(current)
            current, size = {}, 0
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, tmp_path / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(cfg)))
    shard_mb = max(sum(t.nbytes for t in s.values()) for s in shards) / 2**20
    total_mb = sum(t.nbytes for s in shards for t in s.values()) / 2**20
    del shards, current
    root = Path(__file__).resolve().parents[2]
    results = {}
    for how in ("lazy", "eager"):
        done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path), how], capture_output=True, text=True,
                              cwd=root, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        results[how] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nshards: {total_mb:.0f} MB, largest {shard_mb:.0f} MB; " + "; ".join(
        f"{how}: peak {r['extra_mb']:.0f} MB for {r['final_mb']:.0f} MB of weights" for how, r in results.items()))
    lazy, eager = results["lazy"], results["eager"]
    assert lazy["extra_mb"] - lazy["final_mb"] < 1.5 * shard_mb
    assert eager["extra_mb"] - eager["final_mb"] > 0.9 * total_mb  # reading all shards first holds them all


def test_generate_and_chat_commands_take_a_device_map(tmp_path, capsys):
    from llmlab.cli import main
    from llmlab.common.checkpoint import save_checkpoint
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("the cat sat on the mat. the dog sat on the log. " * 40, vocab_size=300)
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", vocab_size=tok.vocab_size, seq_len=64, n_layer=3, init_std=0.3))
    save_checkpoint(tmp_path / "ckpt", model, {"step": 0}, tokenizer=tok)
    outputs = {}
    for spread in ([], ["--device-map", "cpu:0,offload:rest"]):
        for command in (["generate", "--checkpoint", str(tmp_path / "ckpt"), "--prompt", "the cat"],
                        ["chat", "--model", str(tmp_path / "ckpt"), "--say", "the dog"]):
            assert main([*command, "--max-new-tokens", "12", "--temperature", "0", *spread]) == 0
            outputs[command[0], bool(spread)] = capsys.readouterr().out
    assert outputs["generate", True] == outputs["generate", False] and outputs["generate", True].strip()
    assert outputs["chat", True] == outputs["chat", False] and "assistant> " in outputs["chat", True]
    assert main(["generate", "--checkpoint", str(tmp_path / "ckpt"), "--device-map", "gpu:rest"]) == 2
    assert "not a device" in capsys.readouterr().err
