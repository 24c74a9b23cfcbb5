"""Chat templates render exactly like transformers' apply_chat_template(tokenize=False)."""

import pytest

from llmlab.common.errors import UserError
from llmlab.tokenizer import Tokenizer

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And in French?"},
]

# A template in the style of real ones: loop controls, raise_exception, lstrip/trim of blocks.
FANCY = """{%- for message in messages %}
    {%- if message['role'] not in ['system', 'user', 'assistant'] %}
        {{- raise_exception('bad role') }}
    {%- endif %}
    {%- if loop.first and message['role'] != 'system' %}<|im_start|>system
default<|im_end|>
{% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] | trim }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.mark.parametrize("template", [None, FANCY])
def test_render_matches_transformers(tmp_path, tok, template):
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer(tok.tokens, tok.merges, tok.pattern, tok.special_tokens, tok.eos_id, tok.bos_id,
                    template or tok.chat_template)
    tok.save_hf(tmp_path)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    for messages in (MESSAGES, MESSAGES[1:2]):
        for gen in (False, True):
            expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert tok.render(messages, add_generation_prompt=gen) == expected


def test_default_template_is_chatml(tok):
    out = tok.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert out == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(out, "all")
    assert ids[0] == tok.special_tokens["<|im_start|>"]


def test_unknown_role_and_missing_template(tok):
    with pytest.raises(UserError, match="unknown role 'robot'"):
        tok.render([{"role": "robot", "content": "beep"}])
    bare = Tokenizer(tok.tokens, tok.merges, tok.pattern, tok.special_tokens)
    with pytest.raises(UserError, match="no chat template"):
        bare.render([{"role": "user", "content": "hi"}])
