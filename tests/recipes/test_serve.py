"""`llmlab serve` as a process: it prints its URL, answers the openai client, and on Ctrl-C lets the request in
flight finish before it exits 0; flag mistakes and a busy port are one-line errors."""

import queue
import re
import signal
import socket
import subprocess
import sys
import threading

import httpx
import openai
import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.pretrained import Pretrained
from llmlab.infer.text import stream_text
from llmlab.models import Transformer, get_preset
from llmlab.recipes.serve import ServeArgs, run
from llmlab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = Tokenizer.train("some words to chat with, and more words " * 50, 300,
                          special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=32, vocab_size=tok.vocab_size, seq_len=256,
                                   init_std=0.3))
    out = tmp_path_factory.mktemp("tiny")
    Pretrained(model.eval(), tok, "tiny").save_pretrained(out)
    return out


@pytest.mark.slow  # ~20-30 s: a fresh Python process imports torch and fastapi
def test_serves_until_interrupted_and_finishes_the_request_in_flight(model_dir):
    code = ("from llmlab.recipes.serve import ServeArgs, run; "
            f"run(ServeArgs(model={str(model_dir)!r}, port=0, api_key='k', threads=1, kv_blocks=64))")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        url = None
        while url is None:
            url = re.search(r"open (http://127\.0\.0\.1:\d+)/", lines.get(timeout=60))
        url = url.group(1)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, timeout=30)
        messages = [{"role": "user", "content": "words"}]
        r = client.chat.completions.create(model="x", messages=messages, max_tokens=8, temperature=0)
        import llmlab

        lm = llmlab.load(str(model_dir))
        ids = lm.generate(lm.chat_ids(messages), 8, temperature=0, stop_ids=end_of_turn_ids(lm.tokenizer))
        assert r.choices[0].message.content == "".join(stream_text(ids, lm.tokenizer))
        assert r.model == str(model_dir)

        stream = client.chat.completions.create(model="x", messages=messages, max_tokens=100, temperature=0,
                                                stream=True, stream_options={"include_usage": True})
        chunks = [next(stream)]  # the request is in flight
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        chunks += list(stream)
        expected = len(lm.generate(lm.chat_ids(messages), 100, temperature=0, stop_ids=end_of_turn_ids(lm.tokenizer)))
        assert chunks[-1].usage.completion_tokens == expected  # it ran to its end
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=5)
    finally:
        proc.kill()


def test_flag_mistakes_and_a_busy_port_are_user_errors(model_dir):
    with pytest.raises(UserError, match="--max-batch 0: must be at least 1"):
        run(ServeArgs(model=str(model_dir), max_batch=0))
    with pytest.raises(UserError, match="--kv-blocks 1"):
        run(ServeArgs(model=str(model_dir), kv_blocks=1))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"--host/--port: cannot listen on 127.0.0.1:{port}"):
            run(ServeArgs(model=str(model_dir), port=port, kv_blocks=16))
