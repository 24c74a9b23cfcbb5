"""Pretraining: it learns, it resumes exactly, and it refuses bad runs without losing work."""

import json
import math

import pytest
import torch

import llmlab
from llmlab.common.checkpoint import read_meta
from llmlab.common.errors import UserError
from llmlab.infer import generate
from llmlab.models import Transformer, get_preset
from llmlab.recipes.pretrain import PretrainArgs
from llmlab.recipes.pretrain import run as pretrain
from llmlab.train.loop import LoopSettings, TrainState, autocast_dtype, train_loop
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.optim import lr_at, make_adamw, param_groups


def _cfg(data_dir, out, **kw) -> PretrainArgs:
    base = dict(data=str(data_dir), out=str(out), preset="llama-tiny", seq_len=32, batch_size=4, lr=3e-3,
                warmup_steps=2, max_steps=8, eval_interval=4, eval_tokens=256, ckpt_interval=4, device="cpu",
                progress=False)
    return PretrainArgs(**{**base, **kw})


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", vocab_size=50, seq_len=16, n_layer=2))
    idx = torch.randint(0, 50, (2, 17))
    opt = make_adamw(model, lr=1e-2, weight_decay=0.0)
    for _ in range(60):
        loss = causal_lm_loss(model(idx[:, :-1]), idx[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.1 < math.log(50)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = Transformer(get_preset("gpt2-tiny", vocab_size=50, seq_len=16))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") and p.dim() == 2 for p in decay["params"])
    assert not any("emb" in names[id(p)] or "norm" in names[id(p)] for p in decay["params"])
    assert any("tok_emb" in names[id(p)] for p in no_decay["params"])


def test_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[100] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    # on a time budget the decay follows the clock, whatever the step count
    assert lr_at(50, 100, 1.0, 10, progress=0.0) == pytest.approx(1.0)
    assert lr_at(50, 100, 1.0, 10, progress=0.5) == pytest.approx(0.55)
    assert lr_at(5000, 100, 1.0, 10, progress=1.2) == pytest.approx(0.1)
    assert lr_at(3, 100, 1.0, 10, progress=0.9) == pytest.approx(0.4)  # warmup still counts steps


def test_resume_is_exact(data_dir, tmp_path):
    straight = pretrain(_cfg(data_dir, tmp_path / "straight"))
    first_half = pretrain(_cfg(data_dir, tmp_path / "split", stop_at=4))
    assert first_half["steps"] == 4
    resumed = pretrain(_cfg(data_dir, tmp_path / "split", resume=True))
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in straight["history"]]
    assert [r.get("val_loss") for r in resumed["history"]] == [r.get("val_loss") for r in straight["history"]]
    resumed_weights = resumed["model"].state_dict()
    for name, weight in straight["model"].state_dict().items():
        assert torch.equal(weight, resumed_weights[name]), name


def test_checkpoint_round_trip_and_files(data_dir, tmp_path):
    summary = pretrain(_cfg(data_dir, tmp_path / "run", max_steps=2))
    loaded = llmlab.load(tmp_path / "run")  # the run folder opens its checkpoint
    model, tokenizer, meta = loaded.model, loaded.tokenizer, read_meta(tmp_path / "run" / "checkpoint")
    idx = torch.randint(0, tokenizer.vocab_size, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), summary["model"].eval()(idx))
    assert loaded.generate(idx[0].tolist(), 8, temperature=0) == generate(summary["model"], idx[0], 8, temperature=0)
    assert meta["step"] == 2 and meta["model"]["vocab_size"] == tokenizer.vocab_size == 320
    run_config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert run_config["pretrain"]["max_steps"] == 2
    files = {p.name for p in (tmp_path / "run" / "checkpoint").iterdir()}
    assert files == {"model.safetensors", "llmlab.json", "tokenizer.llmlab.json", "trainer_state.safetensors"}
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in (tmp_path / "run").rglob("*"))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(data_dir, tmp_path, monkeypatch):
    pretrain(_cfg(data_dir, tmp_path / "run", stop_at=4))
    weights = (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes()
    monkeypatch.setattr("llmlab.train.objectives.causal_lm_loss", lambda logits, targets: logits.sum() * float("nan"))
    with pytest.raises(UserError, match="step 4: the loss is nan"):
        pretrain(_cfg(data_dir, tmp_path / "run", resume=True))
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes() == weights
    assert read_meta(tmp_path / "run" / "checkpoint")["step"] == 4


def _one_layer_run(spoil, at: tuple[int, ...]):
    """A one-layer model, its AdamW, random batches, and a loss that `spoil`s itself on the calls in `at`
    (counting from 1; `calls["n"] = 0` starts the count again)."""
    model = Transformer(get_preset("llama-tiny", vocab_size=50, seq_len=16, n_layer=1))
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        loss = causal_lm_loss(m(batch[0]), batch[1])
        return spoil(loss) if calls["n"] in at else loss

    batch = lambda: (torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16)))  # noqa: E731
    return model, make_adamw(model, lr=1e-3), batch, loss_fn, calls


def test_skipping_bad_steps_is_opt_in_counted_and_capped():
    model, opt, batch, flaky_loss, calls = _one_layer_run(lambda loss: loss * float("nan"), at=(2, 4))
    state = train_loop(model, opt, batch, LoopSettings(max_steps=6, lr=1e-3, skip_bad_steps=2, progress=False),
                       TrainState(), loss_fn=flaky_loss)
    assert state.step == 6 and state.bad_steps == 2
    calls["n"] = 0
    with pytest.raises(UserError, match="not finite"):
        train_loop(model, opt, batch, LoopSettings(max_steps=6, lr=1e-3, skip_bad_steps=1, progress=False),
                   TrainState(), loss_fn=flaky_loss)


def test_resume_with_a_different_config_is_refused(data_dir, tmp_path):
    pretrain(_cfg(data_dir, tmp_path / "run", stop_at=2))
    with pytest.raises(UserError, match="other settings.*global_batch: 4 -> 2"):
        pretrain(_cfg(data_dir, tmp_path / "run", batch_size=2, resume=True))
    with pytest.raises(UserError, match="already exists; pass --resume"):
        pretrain(_cfg(data_dir, tmp_path / "run"))
    with pytest.raises(UserError, match="no such checkpoint"):
        pretrain(_cfg(data_dir, tmp_path / "elsewhere", resume=True))


def test_context_longer_than_the_data_is_refused(data_dir, tmp_path):
    with pytest.raises(UserError, match="no shard longer than seq_len=100000"):
        pretrain(_cfg(data_dir, tmp_path / "run", seq_len=100_000))


def test_missing_data_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="no manifest.json; prepare the data first"):
        pretrain(_cfg(tmp_path / "nothing", tmp_path / "run"))


def test_bf16_on_cpu_trains_close_to_float32_and_resumes_exactly(data_dir, tmp_path):
    """--precision bf16 autocasts the matmuls (weights stay float32), Muon orthogonalises in bf16 too, and a
    resumed bf16 run is still the straight one, bit for bit."""
    kw = dict(precision="bf16", optimizer="muon")
    fp32 = pretrain(_cfg(data_dir, tmp_path / "fp32", optimizer="muon", precision="fp32"))
    straight = pretrain(_cfg(data_dir, tmp_path / "straight", **kw))
    pretrain(_cfg(data_dir, tmp_path / "split", stop_at=4, **kw))
    resumed = pretrain(_cfg(data_dir, tmp_path / "split", resume=True, **kw))
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in straight["history"]]
    for name, weight in straight["model"].state_dict().items():
        assert weight.dtype == torch.float32 and torch.equal(weight, resumed["model"].state_dict()[name]), name
    bf16_losses = [r["loss"] for r in straight["history"]]
    fp32_losses = [r["loss"] for r in fp32["history"]]
    assert bf16_losses != fp32_losses  # it did train in bf16
    assert max(abs(a - b) / b for a, b in zip(bf16_losses, fp32_losses, strict=True)) < 0.02
    assert read_meta(tmp_path / "straight" / "checkpoint")["run"]["precision"] == "bf16"
    with pytest.raises(UserError, match="other settings.*precision: 'bf16' -> 'fp32'"):
        pretrain(_cfg(data_dir, tmp_path / "split", resume=True, max_steps=12, optimizer="muon", precision="fp32"))


def test_autocast_dtype_follows_the_device_and_refuses_unknown_precisions():
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(UserError, match="precision: unknown 'fp8'"):
        autocast_dtype("fp8", torch.device("cpu"))


def test_fp16_trains_with_a_gradient_scaler_and_resumes_it_exactly(data_dir, tmp_path):
    fp32 = pretrain(_cfg(data_dir, tmp_path / "fp32", precision="fp32"))
    straight = pretrain(_cfg(data_dir, tmp_path / "straight", precision="fp16"))
    pretrain(_cfg(data_dir, tmp_path / "split", stop_at=4, precision="fp16"))
    scaler = read_meta(tmp_path / "split" / "checkpoint")["state"]["grad_scaler"]
    assert scaler["scale"] == 65536.0 and scaler["_growth_tracker"] == 4  # torch's initial scale, 4 good steps
    resumed = pretrain(_cfg(data_dir, tmp_path / "split", resume=True, precision="fp16"))
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in straight["history"]]
    for name, weight in straight["model"].state_dict().items():
        assert weight.dtype == torch.float32 and torch.equal(weight, resumed["model"].state_dict()[name]), name
    fp16_losses, fp32_losses = [r["loss"] for r in straight["history"]], [r["loss"] for r in fp32["history"]]
    assert fp16_losses != fp32_losses
    assert max(abs(a - b) / b for a, b in zip(fp16_losses, fp32_losses, strict=True)) < 0.02
    with pytest.raises(UserError, match="precision fp16 with strategy fsdp"):
        pretrain(_cfg(data_dir, tmp_path / "fsdp", precision="fp16", strategy="fsdp"))


def test_fp16_skips_a_step_whose_gradients_overflow_and_halves_the_scale():
    torch.manual_seed(0)
    # the second loss is finite, but its scaled gradients overflow
    model, opt, batch, loss_fn, _ = _one_layer_run(lambda loss: loss * 1e30, at=(2,))
    settings = LoopSettings(max_steps=1, lr=1e-3, progress=False)
    state = train_loop(model, opt, batch, settings, TrainState(), loss_fn=loss_fn, autocast_dtype=torch.float16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings.max_steps = 2
    state = train_loop(model, opt, batch, settings, state, loss_fn=loss_fn, autocast_dtype=torch.float16)
    assert state.step == 2 and state.grad_scaler["scale"] == 65536.0 / 2
    assert state.history[-1]["grad_norm"] is None  # not a finite norm: the step was skipped
    for name, weight in model.state_dict().items():
        assert torch.equal(weight, before[name]), name
