"""Device, dtype and seed helpers."""

import random

import numpy as np
import torch

from llmlab.common.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: CUDA is not available on this machine; use cpu")
    if name.startswith("mps") and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r}: MPS is not available on this machine; use cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UserError(f"device {name!r}: not a device torch knows ({e}); use cpu or cuda") from None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"dtype {name!r}: unknown; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
