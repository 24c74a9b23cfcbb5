"""Serving fixtures: a tiny random chat model (wide weights, so greedy text varies and splits UTF-8) and a
factory that serves it on 127.0.0.1 with uvicorn on a background thread."""

import contextlib
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
import torch

from llmlab.eval.arena.server import BackgroundServer
from llmlab.infer.pretrained import Pretrained
from llmlab.models import Transformer, get_preset
from llmlab.serve import create_app
from llmlab.tokenizer import Tokenizer

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@pytest.fixture(scope="session")
def lm() -> Pretrained:
    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text(encoding="utf-8")
    tok = Tokenizer.train(text + " Grüße 🙂 naïve café 日本語", 300, special_tokens=SPECIALS)
    torch.manual_seed(0)
    # init_std 0.3 instead of 0.02: a random model with small weights repeats one token forever
    config = get_preset("llama-tiny", n_layer=2, n_embd=48, vocab_size=tok.vocab_size, seq_len=128, init_std=0.3)
    return Pretrained(Transformer(config).eval(), tok, "tiny-chat")


def slow_down(app, seconds: float) -> None:
    """Make every engine step take at least `seconds` (so a test can act while a request is mid-stream)."""
    engine = app.state.server.runner.engine
    step = engine.step

    def slow_step():
        time.sleep(seconds)
        return step()

    engine.step = slow_step


def metric(url: str, name: str) -> float:
    """One sample of /metrics, e.g. metric(url, "llmlab_kv_blocks_used")."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def wait_for_metric(url: str, name: str, value: float, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while (seen := metric(url, name)) != value and time.monotonic() < deadline:
        time.sleep(0.02)
    return seen


@pytest.fixture
def serve(lm):
    """serve(**create_app keywords) -> (url, app), served until the test ends."""
    with contextlib.ExitStack() as stack:
        def start(model=None, step_delay: float = 0.0, **kwargs):
            kwargs.setdefault("api_key", "")
            app = create_app(model or lm, **kwargs)
            if step_delay:
                slow_down(app, step_delay)
            return stack.enter_context(BackgroundServer(app)), app

        yield start
