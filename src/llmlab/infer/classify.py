"""Reading a class off a decoder: the logits at each row's last real token.

A decoder with a classification head returns (B, T, K) class logits, one row
per position; only the last real token has seen the whole text, so that is
where the prediction is read (right padding puts it at a different index in
each row). Training the head is `llmlab.finetune.heads`; scoring it is `llmlab.eval.classification`.
"""

import torch

from llmlab.data.labeled import encode_texts


def last_token_logits(logits: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, K) -> (B, K) at each row's last real token; attn_mask (B, T) is 1 on tokens (right padding).

    attn_mask=[[1, 1, 0], [1, 1, 1]] reads row 0 at position 1 and row 1 at position 2.
    """
    if attn_mask is None:
        return logits[:, -1]
    last = attn_mask.long().sum(dim=1) - 1  # (B,)
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


@torch.no_grad()
def class_probabilities(model: torch.nn.Module, tokenizer, texts: list[str], max_len: int,
                        batch_size: int = 16) -> torch.Tensor:
    """Softmax over classes for each text: (N, K), read at the last token."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            idx, mask = encode_texts(tokenizer, texts[i:i + batch_size], max_len)
            logits = model(idx.to(device), attn_mask=mask.to(device))  # (B, T, K)
            out.append(last_token_logits(logits, mask.to(device)).float().softmax(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
