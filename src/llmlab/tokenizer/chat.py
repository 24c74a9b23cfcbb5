"""Chat templates: turn a list of messages into the one string a chat model was trained on.

A template is a Jinja string shipped with the model (GGUF `tokenizer.chat_template`
or `chat_template` in `tokenizer_config.json`). We render it the way
transformers' `apply_chat_template(..., tokenize=False)` does: a sandboxed
environment, `trim_blocks` and `lstrip_blocks`, a `raise_exception` helper, and
the special-token strings passed as variables. This file does not tokenise.
"""

import json
from datetime import datetime
from functools import lru_cache

from llmlab.common.constants import CHAT_ROLES
from llmlab.common.errors import UserError

# ChatML (as in SmolLM2 and Qwen), the default for tokenizers llmlab trains.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@lru_cache(maxsize=16)
def compile_template(template: str):
    """Compile once per template string, with transformers' Jinja settings."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def check_messages(messages: list[dict]) -> None:
    """Every message is a dict with a known role and string content."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise UserError(f"messages[{i}]: expected a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in CHAT_ROLES:
            raise UserError(f"messages[{i}]: unknown role {m['role']!r}; use one of {', '.join(CHAT_ROLES)}")


def render(template: str, messages: list[dict], add_generation_prompt: bool = False, **variables) -> str:
    """Render `messages` with `template`; template errors become one-line UserErrors.

    >>> render(CHATML, [{"role": "user", "content": "hi"}], add_generation_prompt=True)
    '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    from jinja2.exceptions import TemplateError

    check_messages(messages)
    try:
        return compile_template(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **variables
        )
    except TemplateError as e:
        raise UserError(f"chat template: {e}") from None
