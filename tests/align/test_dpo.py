"""DPO end to end against TRL's DPOTrainer: a tiny HF Llama policy and reference, converted to llmlab with our
own converter; the same batch through TRL's `_compute_loss` and through `llmlab.align.dpo` gives the same loss
and the same logged metrics. Plus the pieces: tokenisation equals TRL's, log-probabilities equal a plain
full-logits computation, the LoRA reference is the base, and the loop logs TRL's metric names."""

import copy

import pytest
import torch

import llmlab
from llmlab.align.dpo import (
    METRICS,
    PreferenceLoss,
    make_batch,
    preference_accuracy,
    preference_batches,
    preference_loss,
)
from llmlab.align.logprobs import ReferenceLogps, sequence_logps
from llmlab.common import log
from llmlab.data.preference import (
    PreferenceRow,
    collate_preference,
    task_preferences,
    tokenize_preferences,
    tokenize_row,
)
from llmlab.data.tasks import make_tasks
from llmlab.finetune.lora import apply_lora, lora_disabled
from llmlab.tokenizer import Tokenizer
from llmlab.train.loop import LoopSettings, TrainState, train_loop

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

MAX_LEN = 200


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """(our tokenizer, HF tokenizer, HF policy dir, HF reference dir): float64 so only formulas can differ."""
    log.set_quiet(True)
    tmp = tmp_path_factory.mktemp("twins")
    text = " ".join(m["content"] for t in make_tasks(300) for m in t["messages"])
    tok = Tokenizer.train(text, 320, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=False)
    ref = transformers.LlamaForCausalLM(cfg).double().eval()
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # the policy has moved away from the reference, so rewards are not all zero
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    for name, model in (("ref", ref), ("policy", policy)):
        model.save_pretrained(tmp / name)
        tok.save_hf(tmp / name)
    return tok, transformers.AutoTokenizer.from_pretrained(tmp / "ref"), tmp / "policy", tmp / "ref"


def trl_trainer(twins, rows, loss_type, tmp_path, beta=0.1):
    tok, hf_tok, policy_dir, ref_dir = twins
    load = lambda d: transformers.LlamaForCausalLM.from_pretrained(d, dtype=torch.float64)  # noqa: E731
    ds = datasets.Dataset.from_list([{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in rows])
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=[loss_type], report_to=[],
                         per_device_train_batch_size=4, max_length=MAX_LEN, use_cpu=True, bf16=False)
    return trl.DPOTrainer(model=load(policy_dir), ref_model=load(ref_dir), args=args, train_dataset=ds,
                          processing_class=hf_tok)


ROWS = task_preferences(make_tasks(6, seed=1))


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_loss_and_metrics_equal_trl_dpo_trainer(twins, tmp_path, loss_type):
    tok, _, policy_dir, ref_dir = twins
    trainer = trl_trainer(twins, ROWS, loss_type, tmp_path)
    examples = [tokenize_row(tok, r) for r in ROWS]
    for i, ex in enumerate(examples):  # TRL tokenises every row as we do
        row = trainer.train_dataset[i]
        assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (
            ex.prompt_ids, ex.chosen_ids, ex.rejected_ids)
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.model.train()
    trl_loss = trainer._compute_loss(trainer.model, inputs, False)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    policy = llmlab.load(policy_dir, dtype=torch.float64).model.train()
    reference = ReferenceLogps(examples, tok.pad_id, MAX_LEN, llmlab.load(ref_dir, dtype=torch.float64).model)
    batch = make_batch(examples, [0, 1, 2, 3], tok.pad_id, MAX_LEN, policy, reference)
    loss, metrics = preference_loss(PreferenceLoss(beta=0.1, loss_type=loss_type))(policy, batch)
    # TRL computes log-probabilities in float32 chunks (our twins are float64): agreement to float32 precision
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
    assert set(METRICS) <= set(metrics)
    for name in METRICS:  # rewards are β x differences of float32 sums near -800, whose spacing is 6e-5
        assert metrics[name] == pytest.approx(trl_metrics[name], rel=1e-5, abs=2e-5), name
    assert 0 < metrics["rewards/accuracies"] < 1  # a batch that tells the metric's direction apart


def test_standard_rows_tokenise_as_trl(twins, tmp_path):
    """Text rows: TRL appends eos to each completion and splits where prompt and prompt+completion diverge."""
    tok = twins[0]
    rows = [PreferenceRow("Q: 2+2=", " 4", " five"), PreferenceRow("Reverse 'abc':", " cba", " abc<|endoftext|>"),
            PreferenceRow("Say hi", "!", " Hello there")]  # "!" merges with nothing; a space may merge across
    trainer = trl_trainer(twins, rows, "sigmoid", tmp_path)
    for i, r in enumerate(rows):
        ex, row = tokenize_row(tok, r), trainer.train_dataset[i]
        assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (
            ex.prompt_ids, ex.chosen_ids, ex.rejected_ids)


def test_sequence_logps_equal_full_logits(twins):
    """Projecting only completion positions gives what log_softmax over every position gives."""
    tok, _, policy_dir, _ = twins
    model = llmlab.load(policy_dir, dtype=torch.float64).model
    b = collate_preference([tokenize_row(tok, r) for r in ROWS], tok.pad_id, 80)  # 80 cuts the rambling answers
    sums, means, counts = sequence_logps(model, b["idx"], b["targets"], b["attn_mask"])
    logp = model(b["idx"], attn_mask=b["attn_mask"]).log_softmax(-1)  # (2B, T, V)
    keep = b["targets"] != -100
    token = logp.gather(-1, b["targets"].clamp(min=0)[..., None])[..., 0] * keep
    torch.testing.assert_close(sums, token.sum(1))
    torch.testing.assert_close(means, token.sum(1) / keep.sum(1))
    assert counts.tolist() == keep.sum(1).tolist() and (counts > 0).all()


def test_lora_reference_is_the_base_and_untrained_accuracy_is_half(twins):
    tok, _, _, ref_dir = twins
    base = llmlab.load(ref_dir, dtype=torch.float64).model
    examples, _, _ = tokenize_preferences(tok, ROWS, MAX_LEN)
    want = ReferenceLogps(examples, tok.pad_id, MAX_LEN, copy.deepcopy(base)).get(base, list(range(len(examples))))
    policy = apply_lora(base, rank=4)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: the policy differs from its base
    got = ReferenceLogps(examples, tok.pad_id, MAX_LEN).get(policy, list(range(len(examples))))
    torch.testing.assert_close(got, want)
    b = collate_preference(examples, tok.pad_id, MAX_LEN)
    with lora_disabled(policy):
        off = sequence_logps(policy, b["idx"], b["targets"], b["attn_mask"])[0]
    on = sequence_logps(policy, b["idx"], b["targets"], b["attn_mask"])[0]
    torch.testing.assert_close(off, want)
    assert not torch.allclose(on, want)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.zero_()  # a fresh adapter: policy == reference, every implicit reward ties
    acc = preference_accuracy(policy, examples, PreferenceLoss(), tok.pad_id, MAX_LEN, ReferenceLogps(
        examples, tok.pad_id, MAX_LEN))
    assert acc["accuracy"] == 0.5 and acc["margin"] == 0.0


def test_train_loop_logs_trl_metrics_and_reduces_the_loss(twins):
    tok, _, _, ref_dir = twins
    policy = apply_lora(llmlab.load(ref_dir).model, rank=4)
    examples, _, _ = tokenize_preferences(tok, task_preferences(make_tasks(8, seed=3)), 96)
    batches = preference_batches(examples, 4, tok.pad_id, 96, policy, ReferenceLogps(examples, tok.pad_id, 96))
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    state = train_loop(policy, opt, batches, LoopSettings(max_steps=12, lr=1e-2, progress=False), TrainState(),
                       loss_fn=preference_loss(PreferenceLoss(beta=0.5)))
    assert set(METRICS) <= set(state.history[0])
    assert state.history[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)  # the first step: policy == reference
    assert state.history[-1]["loss"] < state.history[0]["loss"]
    assert state.history[-1]["rewards/margins"] > 0
