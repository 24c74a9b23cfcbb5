"""Classification scores: accuracy and the confusion matrix of a model with a class head."""

import torch

from llmlab.infer.classify import last_token_logits


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    return (preds == labels).float().mean().item() if labels.numel() else 0.0


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class.

    labels=[0, 1, 1], preds=[0, 1, 0] -> [[1, 0], [1, 1]].
    """
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, batches, num_classes: int) -> tuple[float, torch.Tensor]:
    """(accuracy, confusion matrix) over batches of (idx (B, T), labels (B,), attn_mask (B, T))."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, labels = [], []
    try:
        for idx, y, mask in batches:
            logits = model(idx.to(device), attn_mask=mask.to(device))  # (B, T, K)
            preds.append(last_token_logits(logits, mask.to(device)).argmax(-1).cpu())
            labels.append(y)
    finally:
        model.train(was_training)
    if not labels:
        return 0.0, torch.zeros(num_classes, num_classes, dtype=torch.long)
    preds_t, labels_t = torch.cat(preds), torch.cat(labels)
    return accuracy(preds_t, labels_t), confusion_matrix(preds_t, labels_t, num_classes)
