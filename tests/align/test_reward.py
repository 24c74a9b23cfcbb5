"""Reward model: a scalar head read at the last real token; Bradley–Terry training ranks held-out pairs above
chance; the Hugging Face export loads in transformers' AutoModelForSequenceClassification with equal scores."""

import pytest
import torch

from llmlab.align.losses import bradley_terry_loss
from llmlab.align.reward import export_hf, last_token_mask, pair_batches, pairwise_accuracy, reward_loss, score
from llmlab.common import log
from llmlab.data.preference import load_preferences, tokenize_preferences
from llmlab.data.tasks import make_tasks
from llmlab.finetune.lora import LoRALinear
from llmlab.finetune.methods import apply_method
from llmlab.models import Transformer, get_preset
from llmlab.tokenizer import Tokenizer
from llmlab.train.loop import LoopSettings, TrainState, train_loop

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok():
    log.set_quiet(True)
    text = " ".join(m["content"] for t in make_tasks(300) for m in t["messages"])
    return Tokenizer.train(text, 320, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))


def reward_model(preset: str, under: str = "full", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = Transformer(get_preset(preset, n_layer=2, n_embd=64, vocab_size=320, seq_len=256))
    return apply_method(model, {"name": "reward", "under": under, "rank": 4, "alpha": 8.0})[0]


def test_last_token_mask_and_score_read_the_last_real_token():
    assert last_token_mask(torch.tensor([[1, 1, 0], [1, 1, 1]])).tolist() == [[False, True, False],
                                                                              [False, False, True]]
    model = reward_model("llama-tiny").eval()
    ids = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    got = score(model, ids, pad_id=0)
    alone = torch.stack([model(torch.tensor([s]))[0, -1, 0] for s in ids])  # each row alone, no padding
    torch.testing.assert_close(got, alone.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset,hf_class", [("llama-tiny", "LlamaForSequenceClassification"),
                                             ("gpt2-tiny", "GPT2ForSequenceClassification")])
def test_hf_export_scores_equal_in_transformers(tmp_path, tok, preset, hf_class):
    model = reward_model(preset, under="lora")
    with torch.no_grad():  # a trained adapter and head, so folding LoRA into the export matters
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    assert isinstance(model.blocks[0].attn.q_proj, LoRALinear)
    export_hf(model, tmp_path, pad_id=tok.pad_id, tokenizer=tok)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == hf_class and hf.config.num_labels == 1 and hf.config.pad_token_id == tok.pad_id
    texts = [tok.render([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
             for q, a in [("2+2?", "4"), ("Reverse 'apple'.", "elppa, I think, but I am not sure"), ("Hi", "Hello")]]
    ids = [tok.encode(t, allowed_special="all") for t in texts]
    ours = score(model, ids, pad_id=tok.pad_id)
    padded, mask = tok.pad(ids, side="right")
    with torch.no_grad():
        theirs = hf(input_ids=padded, attention_mask=mask).logits[:, 0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert isinstance(model.blocks[0].attn.q_proj, LoRALinear)  # exporting left the model as it was


def test_bradley_terry_training_beats_chance_on_held_out_pairs(tok):
    train_rows, held_rows, _ = load_preferences("tasks", n_train=96, n_heldout=48, seed=0)
    train, _, _ = tokenize_preferences(tok, train_rows, 128)
    held, _, _ = tokenize_preferences(tok, held_rows, 128)
    model = reward_model("llama-tiny", under="full")
    before = pairwise_accuracy(model, held, tok.pad_id, 128)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batches = pair_batches(train, 8, tok.pad_id, 128, "cpu", seed=0)
    state = train_loop(model, opt, batches, LoopSettings(max_steps=30, lr=3e-3, progress=False), TrainState(),
                       loss_fn=reward_loss())
    after = pairwise_accuracy(model, held, tok.pad_id, 128)
    assert {"accuracy", "margin"} <= set(state.history[-1])
    assert after["accuracy"] >= 0.8 and after["accuracy"] > before["accuracy"] and after["margin"] > 0
    idx, extras = batches()  # the loop's loss is the Bradley–Terry loss of the scores at the last token
    r = score(model, [row[m].tolist() for row, m in zip(idx, extras["attn_mask"], strict=True)], tok.pad_id)
    chosen, rejected = r.chunk(2)
    with torch.no_grad():
        torch.testing.assert_close(reward_loss()(model.eval(), (idx, extras))[0], bradley_terry_loss(chosen, rejected),
                                   atol=1e-5, rtol=1e-5)
