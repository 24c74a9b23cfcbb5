"""Several processes (gloo, float32) train exactly as one process with the same global batch does.

Two ranks are launched by `llmlab.train.spawn` (a dying or hung rank fails the test, never hangs it); the
single-process runs they are compared with are `pretrain` as `llmlab pretrain` runs it. Losses agree to
1e-5. Weights agree to a tolerance tied to the learning rate: Adam divides each gradient by its own
running size, so where a gradient is near Adam's eps (1e-8), the ~1e-9 rounding differences of summing in
another order move that weight by a fraction of one step, and how large a fraction depends on the CPU's
kernels. Summing the batch's halves (DDP, FSDP) moved weights by at most 0.005 lr in 3 steps on one machine
and 0.011 lr (1.3e-6 of the weights' norm) on an AMD EPYC; splitting every matmul (TP) by 0.11 lr, and its
losses by 7e-6, where SGD in its place agrees to 6e-8. The tolerances below leave room for other CPUs and
stay far below one step (lr), the size of move a wrong gradient makes.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmlab
from llmlab.cli import main
from llmlab.common import log
from llmlab.common.checkpoint import read_meta
from llmlab.common.errors import UserError
from llmlab.models import get_preset
from llmlab.recipes.pretrain import PretrainArgs, as_argv
from llmlab.recipes.pretrain import run as pretrain_recipe
from llmlab.train import distributed
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.pretrain import pretrain
from llmlab.train.spawn import spawn

LR = 3e-3
TIMEOUT = 240  # per two-process run: start-up, a few steps and the checkpoint take ~10-30 s on one core


def _config():
    return get_preset("llama-tiny", vocab_size=320, seq_len=32)


def _settings(max_steps: int = 3, grad_accum: int = 1, stop_at: int | None = None) -> LoopSettings:
    return LoopSettings(max_steps=max_steps, lr=LR, warmup_steps=1, grad_accum=grad_accum, stop_at=stop_at,
                        eval_interval=2, progress=False)


def _train(data_dir, out, batch_size: int, strategy: str = "none", resume: bool = False, **kw) -> dict:
    loop = {k: kw.pop(k) for k in ("max_steps", "grad_accum", "stop_at") if k in kw}
    summary = pretrain(_config(), data_dir, out, _settings(**loop), batch_size=batch_size, device="cpu",
                       eval_tokens=256, strategy=strategy, resume=resume, **kw)
    return {"losses": [r["loss"] for r in summary["history"]],
            "val": [r["val_loss"] for r in summary["history"] if "val_loss" in r]}


def _rank(rank: int, world_size: int, data_dir: str, out: str, batch_size: int, strategy: str, kw: dict) -> dict:
    log.set_quiet(True)
    return _train(data_dir, out, batch_size, strategy, **kw)


def _two_processes(data_dir, out, batch_size: int, strategy: str, **kw) -> dict:
    ranks = spawn(_rank, 2, str(data_dir), str(out), batch_size, strategy, kw, timeout=TIMEOUT, threads=1)
    assert ranks[0] == ranks[1]  # every rank logs the same (averaged) losses
    return ranks[0]


def _assert_same_run(got: dict, want: dict, out, reference_out, split_matmuls: bool = False) -> None:
    torch.testing.assert_close(got["losses"], want["losses"], rtol=0, atol=1e-5)
    torch.testing.assert_close(got["val"], want["val"], rtol=0, atol=1e-5)
    weights, reference = llmlab.load(out).model.state_dict(), llmlab.load(reference_out).model.state_dict()
    assert weights.keys() == reference.keys()
    atol, relative = (0.25 * LR, 4e-5) if split_matmuls else (0.05 * LR, 5e-6)
    for name, w in reference.items():
        torch.testing.assert_close(weights[name], w, rtol=0, atol=atol, msg=name)
    difference = sum(((weights[n] - w) ** 2).sum() for n, w in reference.items()) ** 0.5
    assert difference / sum((w ** 2).sum() for w in reference.values()) ** 0.5 < relative


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    """Single-process reference runs, keyed by (batch_size, grad_accum), made on first use."""
    runs: dict = {}

    def get(batch_size: int, grad_accum: int = 1) -> tuple[dict, Path]:
        if (batch_size, grad_accum) not in runs:
            out = tmp_path_factory.mktemp(f"one-{batch_size}-{grad_accum}")
            runs[batch_size, grad_accum] = _train(data_dir, out, batch_size, grad_accum=grad_accum), out
        return runs[batch_size, grad_accum]

    return get


@pytest.mark.parametrize("strategy, batch_size, grad_accum, one_batch", [
    ("ddp", 2, 1, 4),  # two halves of a batch of 4
    ("ddp", 2, 2, 4),  # ... twice per step: no_sync on the first micro-batch
    ("fsdp", 2, 1, 4),
    ("tp", 2, 1, 2),  # both ranks see the whole batch of 2, each computes half the heads and half the MLP
])
def test_two_processes_equal_one(strategy, batch_size, grad_accum, one_batch, data_dir, tmp_path, one_process):
    want, reference_out = one_process(one_batch, grad_accum)
    got = _two_processes(data_dir, tmp_path, batch_size, strategy, grad_accum=grad_accum)
    _assert_same_run(got, want, tmp_path, reference_out, split_matmuls=strategy == "tp")
    meta = read_meta(tmp_path / "checkpoint")
    assert meta["layout"] == {"strategy": strategy, "processes": 2, "tp": 2 if strategy == "tp" else 1}
    assert meta["run"]["global_batch"] == one_batch


def _count_all_reduces(rank: int, world_size: int, grad_accum: int) -> int:
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    calls = []

    def counting(state, bucket):
        calls.append(1)
        return allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter([(torch.randn(2, 4), torch.randn(2, 1)) for _ in range(3 * grad_accum)])
    settings = LoopSettings(max_steps=3, lr=0.1, grad_accum=grad_accum, progress=False)
    layout = distributed.Layout("ddp", rank, world_size)
    train_loop(model, optimizer, lambda: next(batches), settings, TrainState(),
               loss_fn=lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]),
               parallel=distributed.Collectives(layout))
    return len(calls)


def test_ddp_all_reduces_once_per_step_whatever_the_accumulation():
    assert spawn(_count_all_reduces, 2, 4, timeout=TIMEOUT, threads=1) == [3, 3]  # 3 steps, 12 micro-batches


def test_fsdp_bf16_mixed_precision_trains_with_float32_masters(data_dir, tmp_path, one_process):
    want, _ = one_process(4)
    got = _two_processes(data_dir, tmp_path, 2, "fsdp", mixed_precision="bf16", max_steps=2)
    assert got["losses"] != want["losses"][:2]  # bfloat16 compute rounds differently ...
    assert got["losses"] == pytest.approx(want["losses"][:2], abs=0.05)  # ... but not by much
    assert all(w.dtype == torch.float32 for w in llmlab.load(tmp_path).model.state_dict().values())


@pytest.mark.slow
@pytest.mark.parametrize("tp_size, batch_size, one_batch", [(2, 2, 2), (1, 2, 4)])
def test_fsdp_tp_on_both_2d_meshes(tp_size, batch_size, one_batch, data_dir, tmp_path, one_process):
    want, reference_out = one_process(one_batch)
    got = _two_processes(data_dir, tmp_path, batch_size, "fsdp+tp", tp_size=tp_size)
    _assert_same_run(got, want, tmp_path, reference_out, split_matmuls=tp_size > 1)


def test_resume_on_another_layout_is_exact(data_dir, tmp_path, one_process):
    """Half a run as FSDP over 2 processes (batch 2 each), the rest as TP over 2 (batch 4 on both):
    the global batch is 4 throughout, so it is the single-process run with batch 4, step for step."""
    want, reference_out = one_process(4)
    first = _two_processes(data_dir, tmp_path, 2, "fsdp", stop_at=2)
    assert first["losses"] == pytest.approx(want["losses"][:2], abs=1e-5)
    rest = _two_processes(data_dir, tmp_path, 4, "tp", resume=True, resume_keys=("global_batch",))
    _assert_same_run(rest, want, tmp_path, reference_out, split_matmuls=True)


def test_resume_refuses_another_global_batch(data_dir, one_process):
    _, reference_out = one_process(4)
    with pytest.raises(UserError, match="global_batch: 4 -> 2"):
        pretrain(_config(), data_dir, reference_out, _settings(max_steps=4), batch_size=2, resume=True,
                 resume_keys=("global_batch",))


def test_refusals_are_one_line(data_dir, tmp_path, capsys):
    config = get_preset("llama-small", vocab_size=320)  # 6 heads, 2 key/value heads
    with pytest.raises(UserError, match="n_kv_head=2 into 3 equal parts"):
        distributed.check_strategy("tp", config, 3)
    with pytest.raises(UserError, match="n_head=6 into 4 equal parts"):
        distributed.check_strategy("fsdp+tp", config, 8, tp_size=4)
    with pytest.raises(UserError, match="unknown"):
        distributed.check_strategy("zero3", config, 2)
    for strategy in ("tp", "fsdp"):
        with pytest.raises(UserError, match="experts"):
            distributed.check_strategy(strategy, get_preset("moe-small", vocab_size=320), 2)
    with pytest.raises(UserError, match="FSDP's policy"):
        distributed.check_strategy("ddp", config, 2, mixed_precision="bf16")
    with pytest.raises(UserError, match="does not divide"):
        distributed.check_strategy("fsdp+tp", config, 3, tp_size=2)
    with pytest.raises(UserError, match="needs several processes"):
        distributed.make_layout("ddp", config, torch.device("cpu"))
    base = ["pretrain", "--data", str(data_dir), "--out", str(tmp_path / "run")]
    cases = [(["--strategy", "tp", "--nproc", "4", "--preset", "llama-small"], "n_head=6"),
             (["--nproc", "2"], "strategy none"),
             (["--strategy", "fsdp+tp", "--nproc", "3"], "--tp-size 2 does not divide the 3 processes")]
    for flags, expected in cases:  # refused before any process starts
        capsys.readouterr()
        assert main(base + flags) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as info:  # argparse's own refusal: usage, then one line
        main(base + ["--strategy", "zero3"])
    assert info.value.code == 2 and "invalid choice: 'zero3'" in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_flags_round_trip():
    args = PretrainArgs(data="d", out="o", strategy="fsdp", nproc=2, progress=False, tp_size=None, lr=1e-3)
    argv = as_argv(args)
    assert argv == ["--data", "d", "--out", "o", "--lr", "0.001", "--no-progress", "--strategy", "fsdp"]
    assert distributed.torchrun_command(["pretrain", *argv], 2)[1:6] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_python_dash_m_llmlab():
    done = _cli(["-m", "llmlab", "pretrain", "--help"], timeout=60)
    assert done.returncode == 0 and "--strategy" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "nproc"])
def test_torchrun_command_writes_a_folder_llmlab_loads(launcher, data_dir, tmp_path):
    out = tmp_path / "run"
    flags = ["--data", str(data_dir), "--preset", "llama-tiny", "--seq-len", "32", "--batch-size", "2",
             "--strategy", "ddp", "--max-steps", "2", "--eval-tokens", "256", "--out", str(out), "--no-progress"]
    if launcher == "torchrun":
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "llmlab",
                   "pretrain", *flags]
    else:
        command = ["-m", "llmlab", "pretrain", "--nproc", "2", *flags]
    done = _cli(command, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = llmlab.load(out)
    assert loaded.generate([1, 2, 3], 4, temperature=0)
    assert read_meta(out / "checkpoint")["layout"]["processes"] == 2


def test_nproc_returns_torchrun_s_exit_status(data_dir, tmp_path, monkeypatch):
    seen = []

    def fake_torchrun(argv, nproc):
        seen.append((argv, nproc))
        return [sys.executable, "-c", "import sys; sys.exit(3)"]

    monkeypatch.setattr(distributed, "torchrun_command", fake_torchrun)
    args = PretrainArgs(data=str(data_dir), out=str(tmp_path / "run"), strategy="ddp", nproc=2)
    with pytest.raises(SystemExit) as info:
        pretrain_recipe(args)
    assert info.value.code == 3
    assert seen[-1] == (["pretrain", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--strategy", "ddp"],
                        2)


@pytest.mark.slow
def test_a_failing_rank_fails_the_launcher(data_dir, tmp_path, one_process):
    """Every rank refuses to resume a run made with other settings: torchrun fails, and so does the launcher."""
    _, reference_out = one_process(4)
    done = _cli(["-m", "llmlab", "pretrain", "--nproc", "2", "--strategy", "ddp", "--data", str(data_dir),
                 "--out", str(reference_out), "--resume"], timeout=TIMEOUT)
    assert done.returncode != 0
    assert "the run was started with other settings" in done.stderr
