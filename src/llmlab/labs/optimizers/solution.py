"""Lab: optimizers, the reference solution: llmlab's own optimizers (llmlab.train.optimizers), each a
torch.optim.Optimizer with its update rule written out; SGD and Adam equal torch.optim's step for step.

llmlab's Muon also takes the non-matrix groups (with "muon": False) and steps them with AdamW, and scales its
update by default to AdamW's size (0.2 sqrt(max(R, C)), so one lr serves both); the lab's Muon is Keller
Jordan's, matrices only and scaled by sqrt(max(1, R / C)): `scale="spectral"`.
"""

from llmlab.train import optimizers
from llmlab.train.optimizers import NS_COEFFICIENTS, SGD, Adam, Lion, newton_schulz

__all__ = ["NS_COEFFICIENTS", "SGD", "Adam", "Lion", "Muon", "newton_schulz"]


class Muon(optimizers.Muon):
    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, momentum, nesterov, ns_steps, weight_decay, scale="spectral")


LLMLAB_CODE = [SGD, optimizers.adam_update, Lion, newton_schulz, optimizers.Muon]  # `llmlab labs solution optimizers`
