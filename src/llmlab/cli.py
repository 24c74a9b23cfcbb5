"""The `llmlab` command: a table from subcommands to recipes.

Every entry names a module, its argument dataclass and its `run` function; the
same `run(args)` is the Python API. User mistakes (`UserError`) print one line
and exit 2; nothing else is caught.
"""

import argparse
import importlib
import sys

from llmlab.common.config import add_dataclass_arguments, from_namespace
from llmlab.common.errors import UserError

# command words -> (module, args dataclass, run function, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str, str, str]] = {
    ("speedrun",): ("llmlab.recipes.speedrun", "SpeedrunArgs", "run",
                    "raw text to a trained model and a report, no download"),
    ("data", "prepare"): ("llmlab.recipes.prepare", "PrepareArgs", "run",
                          "tokenise a corpus into binary shards"),
    ("pretrain",): ("llmlab.recipes.pretrain", "PretrainArgs", "run", "pretrain a decoder on prepared shards"),
    ("generate",): ("llmlab.recipes.generate", "GenerateArgs", "run", "generate text from a checkpoint"),
    ("chat",): ("llmlab.recipes.chat", "ChatArgs", "run", "chat in the terminal with a model's chat template"),
    ("bench", "kv-cache"): ("llmlab.recipes.bench", "KVCacheArgs", "kv_cache",
                            "time and memory per token with and without the KV cache, plotted"),
    ("tokenizer", "train"): ("llmlab.recipes.tokenizer", "TrainArgs", "train", "train a byte-level BPE tokenizer"),
    ("tokenizer", "encode"): ("llmlab.recipes.tokenizer", "EncodeArgs", "encode", "text -> token ids"),
    ("tokenizer", "decode"): ("llmlab.recipes.tokenizer", "DecodeArgs", "decode", "token ids -> text"),
    ("tokenizer", "analyze"): ("llmlab.recipes.tokenizer", "AnalyzeArgs", "analyze",
                               "compare tokenizers: compression, fertility, splits, per language"),
    ("tokenizer", "convert"): ("llmlab.recipes.tokenizer", "ConvertArgs", "convert",
                               "convert a tokenizer to llmlab's or Hugging Face's format"),
    ("finetune",): ("llmlab.recipes.finetune", "FinetuneArgs", "run",
                    "fine-tune a model on instruction data: full, lora, qlora, adapter or prompt"),
    ("finetune-compare",): ("llmlab.recipes.finetune_compare", "CompareArgs", "run",
                            "run several fine-tuning methods on one task and write a comparison table"),
    ("merge",): ("llmlab.recipes.finetune", "MergeArgs", "run_merge",
                 "fold a LoRA adapter folder into its base model and write a full checkpoint"),
    ("finetune-classify",): ("llmlab.recipes.finetune", "ClassifyArgs", "run_classify",
                             "train a classification head on the last token; accuracy and confusion matrix"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmlab", description="LLM engineering from raw text to a served model.")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="_cmd0")}
    for words, (module, args_cls, _, help_text) in sorted(COMMANDS.items()):
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                group = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = group.add_subparsers(dest=f"_cmd{depth}")
        sub = groups[words[:-1]].add_parser(words[-1], help=help_text, description=help_text)
        sub.set_defaults(_entry=(module, args_cls, COMMANDS[words][2]))
    return parser


def _add_recipe_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Import only the chosen recipe (torch is slow to import) and add its flags."""
    node = parser
    for word in argv:
        actions = [a for a in node._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            return
        node = actions[0].choices[word]
        entry = node.get_default("_entry")
        if entry:
            module, args_cls, _ = entry
            add_dataclass_arguments(node, getattr(importlib.import_module(module), args_cls))
            return


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        _add_recipe_arguments(parser, argv)
        ns = parser.parse_args(argv)
        if not getattr(ns, "_entry", None):
            parser.print_help()
            return 2
        module, args_cls, run_name = ns._entry
        mod = importlib.import_module(module)
        args = from_namespace(getattr(mod, args_cls), ns)
        getattr(mod, run_name)(args)
    except UserError as e:
        print(f"llmlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmlab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
