"""The names other stages have always imported for "messages in, reply text out"; the code is in `clients`.

`LocalChat` is `llmlab.infer.clients.LocalClient` and `EndpointChat` is
`OpenAIClient`: both are `ChatModel`s (`.chat(messages, max_new_tokens=..., temperature=...)`)
and offer the whole client interface (streams, completions, top_p, stop, seed).
New code should import from `llmlab.infer.clients`.
"""

from llmlab.infer.clients import ChatModel, Messages, chat_all, end_of_turn_ids, reply_text
from llmlab.infer.clients import LocalClient as LocalChat
from llmlab.infer.clients import OpenAIClient as EndpointChat
from llmlab.infer.endpoint import error_message as _error_message

__all__ = ["ChatModel", "EndpointChat", "LocalChat", "Messages", "_error_message", "chat_all", "end_of_turn_ids",
           "reply_text"]
