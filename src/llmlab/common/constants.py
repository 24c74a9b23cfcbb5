"""Names every stage shares, defined once: the ignored-target marker, chat roles, file names."""

# A target of -100 has no loss (padding, prompt tokens in SFT): PyTorch's cross_entropy default and HF's convention.
IGNORE_INDEX = -100

# The roles a chat message may have, in every template and data file llmlab reads.
CHAT_ROLES = ("system", "user", "assistant", "tool")

# Special tokens that end an assistant turn in the chat templates llmlab meets (ChatML, Llama 3, Phi-3).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>")

# llmlab's own tokenizer file, beside shards and inside checkpoints.
TOKENIZER_FILE = "tokenizer.llmlab.json"
