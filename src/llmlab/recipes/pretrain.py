"""`llmlab pretrain`: train a decoder on prepared shards (see llmlab.train.pretrain)."""

from llmlab.common import log
from llmlab.train.pretrain import PretrainConfig, pretrain

PretrainArgs = PretrainConfig


def run(args: PretrainArgs) -> dict:
    summary = pretrain(args)
    log.info(f"done: {summary['steps']} steps, {summary['tokens_seen']:,} tokens, "
             f"val loss {summary['final_val_loss']:.4f}; checkpoint in {summary['checkpoint']}")
    return summary
