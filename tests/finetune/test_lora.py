"""LoRA: training touches only the adapter, merge/unmerge are idempotent, and llmlab agrees with `peft`."""

import pytest
import torch

from llmlab.common import checkpoint
from llmlab.common.errors import UserError
from llmlab.finetune.lora import (
    LoRALinear,
    apply_lora,
    apply_qlora,
    lora_modules,
    merge_lora,
    unmerge_lora,
    unwrap_lora,
)
from llmlab.finetune.methods import apply_method
from llmlab.finetune.peft_format import load_peft_adapter, save_peft_adapter
from llmlab.models import Transformer, get_preset
from llmlab.models.hf import config_from_hf, state_dict_from_hf

HF_CONFIGS = {
    "llama": dict(model_type="llama", vocab_size=101, max_position_embeddings=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=72,
                  tie_word_embeddings=False),
    "gpt2": dict(model_type="gpt2", vocab_size=97, n_positions=64, n_layer=2, n_head=4, n_embd=32),
}
# (our targets, peft's target_modules) per family; GPT-2's q/k/v are one fused c_attn in HF
TARGETS = {
    "llama": (["q_proj", "v_proj", "down_proj"], ["q_proj", "v_proj", "down_proj"]),
    "gpt2": (["o_proj", "up_proj"], ["attn.c_proj", "mlp.c_fc"]),
}


def tiny(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=128, seq_len=32))


def randomise_adapters(model) -> None:
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.normal_(0, 0.1)


def test_fresh_adapter_changes_nothing_and_only_adapters_train():
    model = tiny()
    idx = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        before = model(idx)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, rank=4, alpha=8, targets=["q_proj", "v_proj"])
    with torch.no_grad():
        torch.testing.assert_close(model(idx), before)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        loss.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
        assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
        opt.step()
        opt.zero_grad()
    after = {k.replace(".base.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert after.keys() == base.keys()
    assert all(torch.equal(after[k], base[k]) for k in base)  # bit-identical


def test_merge_unmerge_idempotent():
    model = apply_lora(tiny(), rank=4, alpha=8, targets=["q_proj", "k_proj", "o_proj", "up_proj"])
    randomise_adapters(model)
    idx = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        ref = model(idx)
        w0 = model.blocks[0].attn.q_proj.base.weight.clone()
        merge_lora(model)
        merge_lora(model)  # a second merge is a no-op
        torch.testing.assert_close(model(idx), ref, atol=1e-5, rtol=0)
        unmerge_lora(model)
        unmerge_lora(model)
        torch.testing.assert_close(model.blocks[0].attn.q_proj.base.weight, w0, atol=1e-6, rtol=0)
        torch.testing.assert_close(model(idx), ref, atol=1e-5, rtol=0)
        unwrap_lora(model)
        assert not lora_modules(model)
        torch.testing.assert_close(model(idx), ref, atol=1e-5, rtol=0)


def test_trainable_only_checkpoint_rebuilds_the_same_model(tmp_path):
    spec = {"name": "lora", "rank": 2, "alpha": 4.0, "targets": [r"blocks\.1\.attn\.(q|v)_proj"]}
    model, _ = apply_method(tiny(), spec)
    assert set(lora_modules(model)) == {"blocks.1.attn.q_proj", "blocks.1.attn.v_proj"}
    randomise_adapters(model)
    checkpoint.save_checkpoint(tmp_path / "a", model, {"base": "tiny", "method": spec}, trainable_only=True)
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"llmlab.json", "trainable.safetensors"}
    other, _ = apply_method(tiny(), checkpoint.read_meta(tmp_path / "a")["method"])
    checkpoint.load_trainable(other, tmp_path / "a")
    idx = torch.randint(0, 128, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(other(idx), model(idx))
    wrong, _ = apply_method(tiny(), {**spec, "rank": 3})
    with pytest.raises(UserError, match="shape"):
        checkpoint.load_trainable(wrong, tmp_path / "a")


def test_qlora_trains_on_an_nf4_base():
    model = tiny()
    report = apply_qlora(model, rank=4, alpha=8, targets=["q_proj", "v_proj"])
    assert report["nf4"] < report["bfloat16"] / 3.5 and report["float32"] == 2 * report["bfloat16"]
    assert len(lora_modules(model)) == 4
    idx = torch.randint(0, 128, (2, 16))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_targets_name_the_layers():
    with pytest.raises(UserError, match="no linear layer matches.*q_proj"):
        apply_lora(tiny(), targets=["query"])


def _hf_model(name: str):
    transformers = pytest.importorskip("transformers")
    kwargs = dict(HF_CONFIGS[name])
    config = transformers.AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("family", list(HF_CONFIGS))
def test_logits_match_peft_both_ways(family, tmp_path):
    peft = pytest.importorskip("peft")
    hf = _hf_model(family)
    config = config_from_hf(hf.config.to_dict())
    ours = Transformer(config).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config))
    ours_targets, peft_targets = TARGETS[family]
    peft_model = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=peft_targets,
                                                         lora_dropout=0.0, fan_in_fan_out=family == "gpt2"))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    peft_model.save_pretrained(tmp_path / "peft")
    # PEFT's adapter -> ours
    load_peft_adapter(ours, tmp_path / "peft")
    assert len(lora_modules(ours)) == 2 * len(ours_targets)
    idx = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = peft_model(input_ids=idx).logits
        torch.testing.assert_close(ours(idx), expected, atol=1e-4, rtol=0)
    # ours -> PEFT's layout -> peft
    save_peft_adapter(ours, tmp_path / "ours", base_model_name_or_path="unused")
    reloaded = peft.PeftModel.from_pretrained(_hf_model(family), tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=idx).logits, expected, atol=1e-4, rtol=0)


def test_gpt2_fused_qkv_both_ways(tmp_path):
    """HF's c_attn LoRA is three of ours sharing A; three of ours export as one of rank 3r."""
    peft = pytest.importorskip("peft")
    hf = _hf_model("gpt2")
    config = config_from_hf(hf.config.to_dict())
    ours = Transformer(config).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config))
    apply_lora(ours, rank=2, alpha=4, targets=["q_proj", "k_proj", "v_proj"])
    randomise_adapters(ours)
    save_peft_adapter(ours, tmp_path / "ours", base_model_name_or_path="unused")
    reloaded = peft.PeftModel.from_pretrained(hf, tmp_path / "ours").eval()
    idx = torch.randint(0, config.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=idx).logits, ours(idx), atol=1e-4, rtol=0)
    back = Transformer(config).eval()
    back.load_state_dict(state_dict_from_hf(_hf_model("gpt2").state_dict(), config))
    reloaded.save_pretrained(tmp_path / "peft")
    load_peft_adapter(back, tmp_path / "peft")
    with torch.no_grad():
        torch.testing.assert_close(back(idx), ours(idx), atol=1e-4, rtol=0)


def test_lora_linear_repr_and_scaling():
    layer = LoRALinear(torch.nn.Linear(8, 4), rank=2, alpha=8)
    assert layer.scaling == 4.0 and "rank=2" in repr(layer)
