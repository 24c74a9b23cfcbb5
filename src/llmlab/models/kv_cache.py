"""A preallocated key/value cache for generation.

Layout: per layer, keys and values of shape (B, Hkv, max_len, D). `pos` is how
many positions are filled, shared by every sequence in the batch (left-padded
batches keep their own rotary positions; the cache only stores). The model
writes a layer with `update`, and the caller moves `pos` on with `advance`
once all layers have run. Memory: 2 * n_layer * B * Hkv * max_len * D values.
"""

import torch


class KVCache:
    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | list = "cpu"):
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        if isinstance(device, list):  # one device per layer (a model spread by llmlab.models.device_map)
            self.k = [torch.zeros(shape[1:], dtype=dtype, device=d) for d in device]
            self.v = [torch.zeros(shape[1:], dtype=dtype, device=d) for d in device]
        else:
            self.k = torch.zeros(shape, dtype=dtype, device=device)
            self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.pos = 0

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_len: int | None = None) -> "KVCache":
        """A cache for `model`; a model that feeds positions of its own ahead of every input (prompt
        tuning's virtual tokens) says how many in `prefix_len`, and the cache makes room for them."""
        c = model.config
        p = next(model.parameters())
        length = (max_len or c.seq_len) + getattr(model, "prefix_len", 0)
        device = getattr(model, "layer_devices", None) or p.device
        return cls(c.n_layer, batch_size, c.n_kv_head, length, c.head_dim, p.dtype, device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, Hkv, T, D) after the filled part; return all keys and values so far."""
        T = k.shape[2]
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_len} allocated")
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, T: int) -> None:
        self.pos += T

    def reset(self) -> None:
        self.pos = 0

    def nbytes(self) -> int:
        return sum(t.nbytes for t in [*self.k, *self.v])
