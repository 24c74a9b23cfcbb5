"""The `llmlab` command: a table from command words to recipes.

Every entry names a module, its argument dataclass and its `run` function; the
same `run(args)` is the Python API. The longest run of leading words that names
a command picks it; only that recipe is imported. User mistakes (`UserError`)
print one line and exit 2; nothing else is caught.
"""

import argparse
import dataclasses
import importlib
import re
import sys

from llmlab.common.config import add_dataclass_arguments, from_namespace
from llmlab.common.errors import UserError

# command words -> (module, args dataclass, run function, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str, str, str]] = {
    ("speedrun",): ("llmlab.recipes.speedrun", "SpeedrunArgs", "run",
                    "raw text to a trained model and a report, no download"),
    ("data", "prepare"): ("llmlab.recipes.prepare", "PrepareArgs", "run",
                          "tokenise a corpus into binary shards"),
    ("data", "clean"): ("llmlab.recipes.data", "CleanArgs", "clean",
                        "normalise, quality-filter (Gopher, C4, language) and redact PII"),
    ("data", "dedup"): ("llmlab.recipes.data", "DedupArgs", "dedup",
                        "drop exact and MinHash near-duplicates; JSONL + report.json"),
    ("data", "mix"): ("llmlab.recipes.data", "MixArgs", "mix",
                      "up/down-sample sources by epochs or temperature; tokens per source"),
    ("data", "pipeline"): ("llmlab.recipes.data", "PipelineArgs", "pipeline",
                           "run a TOML/JSON pipeline of stages in-process, on local workers or on Dask"),
    ("data", "inspect"): ("llmlab.recipes.data", "InspectArgs", "inspect",
                          "show the first tokenised training rows with their loss masks"),
    ("pretrain",): ("llmlab.recipes.pretrain", "PretrainArgs", "run", "pretrain a decoder on prepared shards"),
    ("scaling", "sweep"): ("llmlab.recipes.scaling", "SweepArgs", "sweep",
                           "train a grid of sizes and token budgets, fit scaling laws, test a prediction"),
    ("profile",): ("llmlab.recipes.profile", "ProfileArgs", "run",
                   "profile training and decoding: top operators, trace, roofline, MFU and MBU"),
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
    ("finetune", "compare"): ("llmlab.recipes.finetune", "CompareArgs", "compare",
                              "run several fine-tuning methods on one task and write a comparison table"),
    ("merge",): ("llmlab.recipes.finetune", "MergeArgs", "merge",
                 "fold a LoRA adapter folder into its base model and write a full checkpoint"),
    ("eval",): ("llmlab.recipes.evaluate", "EvalArgs", "run",
                "score models on tasks: perplexity, multiple choice, math, code, BLEU/ROUGE, judges"),
    ("eval", "lite"): ("llmlab.recipes.evaluate", "LiteArgs", "lite",
                       "how well small subsets of a benchmark rank models like the whole benchmark does"),
    ("eval", "arena"): ("llmlab.recipes.arena", "ArenaArgs", "run",
                        "vote between two anonymised answers in the browser; Elo and Bradley-Terry leaderboard"),
    ("quantize",): ("llmlab.recipes.quantize", "QuantizeArgs", "run",
                    "quantise a model's weights: int8, int4, nf4, gptq, awq, w8a8"),
    ("quantize", "compare"): ("llmlab.recipes.quantize", "CompareArgs", "compare",
                              "every compression method on one model: size, perplexity, accuracy, speed"),
    ("prune",): ("llmlab.recipes.quantize", "PruneArgs", "prune",
                 "prune a model: magnitude, 2:4 or wanda, optionally with LoRA recovery"),
    ("prune", "curve"): ("llmlab.recipes.quantize", "PruneCurveArgs", "prune_curve",
                         "held-out bits per byte against sparsity for magnitude and wanda, plotted"),
    ("export", "gguf"): ("llmlab.recipes.quantize", "ExportArgs", "export",
                         "write a GGUF file that llama.cpp runs (f16, q8_0, q4_0, q6_k, q4_k)"),
    ("align", "reward"): ("llmlab.recipes.align_preference", "RewardArgs", "reward",
                          "train a reward model (scalar head, Bradley-Terry) on preference pairs; HF export"),
    ("align", "dpo"): ("llmlab.recipes.align_preference", "DPOArgs", "dpo",
                       "preference-tune a model with DPO, IPO, hinge or SimPO: full, lora or qlora"),
    ("align", "constitution"): ("llmlab.recipes.align_preference", "ConstitutionArgs", "constitution",
                                "answer, critique against a principle, revise: writes SFT and preference rows"),
    ("align", "grpo"): ("llmlab.recipes.align_rl", "GRPOArgs", "grpo",
                        "GRPO with verifiable rewards: groups of samples, group-normalised advantages"),
    ("align", "ppo"): ("llmlab.recipes.align_rl", "PPOArgs", "ppo",
                       "PPO-style RLHF: value head, KL penalty, GAE, clipped losses, reward model or rule"),
    ("align", "compare"): ("llmlab.recipes.align_compare", "CompareArgs", "compare",
                           "base, SFT, GRPO, CoT SFT and CoT SFT + GRPO on the same held-out questions"),
    ("align", "budget"): ("llmlab.recipes.align_rl", "BudgetArgs", "budget",
                          "S1 budget forcing: accuracy against the thinking-token budget, plotted"),
    ("align", "reasoning"): ("llmlab.recipes.align_rl", "ReasoningArgs", "reasoning",
                             "write chain-of-thought SFT rows (<think> steps, then the answer) for the tasks"),
    ("serve",): ("llmlab.recipes.serve", "ServeArgs", "run",
                 "OpenAI-compatible server (continuous batching, paged KV cache) and a web chat page"),
    ("pretrain", "mlm"): ("llmlab.recipes.architectures", "MLMArgs", "mlm",
                          "pretrain a BERT-style encoder with masked tokens (80/10/10)"),
    ("pretrain", "span"): ("llmlab.recipes.architectures", "SpanArgs", "span",
                           "pretrain a T5-style encoder-decoder with span corruption"),
    ("translate",): ("llmlab.recipes.architectures", "TranslateArgs", "translate",
                     "encoder-decoder vs decoder-only (and an encoder) on number-phrase translation"),
    ("fundamentals", "autograd"): ("llmlab.recipes.fundamentals", "AutogradArgs", "autograd",
                                   "a scalar autograd engine trains an MLP on two moons; gradients vs torch"),
    ("fundamentals", "backprop"): ("llmlab.recipes.fundamentals", "BackpropArgs", "backprop",
                                   "backprop by hand through one transformer block, checked against torch.autograd"),
    ("fundamentals", "ngram"): ("llmlab.recipes.fundamentals", "NgramArgs", "ngram",
                                "character n-grams (add-k, Kneser-Ney): perplexity against n, and a tiny Transformer"),
    ("compare", "norms"): ("llmlab.recipes.variants", "NormsArgs", "norms",
                           "Pre-LN vs Post-LN, with and without warmup: loss and per-layer gradient norms"),
    ("compare", "positions"): ("llmlab.recipes.variants", "PositionsArgs", "positions",
                               "learned, sinusoidal, RoPE, ALiBi, none: held-out bits per byte at L and 2L"),
    ("compare", "moe"): ("llmlab.recipes.variants", "MoEArgs", "moe",
                         "mixture of experts vs dense at equal active and equal total parameters"),
    ("compare", "optimizers"): ("llmlab.recipes.optimizers", "OptimizersArgs", "run",
                                "SGD, Adam, AdamW, Lion, Adafactor, Muon under an lr sweep: curves, best lr each"),
    ("compare", "diloco"): ("llmlab.recipes.diloco", "DiLoCoArgs", "run",
                            "DiLoCo (H inner steps, int8 option) vs DDP at equal compute: loss by steps and bytes"),
    ("compare", "sharding"): ("llmlab.recipes.sharding", "ShardingArgs", "run",
                              "tensor-parallel MLP by hand: equal to the whole one; bytes vs the ring formulas"),
    ("attention-maps",): ("llmlab.recipes.variants", "AttentionMapArgs", "attention",
                          "every head's attention weights for a prompt, as a PNG grid"),
    ("rag", "index"): ("llmlab.recipes.rag", "IndexArgs", "index",
                       "chunk and embed a folder of documents into an index folder"),
    ("rag", "query"): ("llmlab.recipes.rag", "QueryArgs", "query", "search an index: dense, BM25 or hybrid (--json)"),
    ("rag", "ask"): ("llmlab.recipes.rag", "AskArgs", "ask",
                     "answer from an index with a model, citing numbered sources"),
    ("rag", "eval"): ("llmlab.recipes.rag", "EvalArgs", "evaluate",
                      "recall@k, MRR and nDCG@k of an index on labelled questions"),
    ("rag", "train-embedder"): ("llmlab.recipes.rag_lab", "TrainEmbedderArgs", "train_embedder",
                                "contrastive fine-tuning of an encoder (InfoNCE); recall@5 before and after"),
    ("rag", "compare"): ("llmlab.recipes.rag_lab", "CompareArgs", "compare",
                         "RAG against fine-tuning on Python's docs: table, plot, costs"),
    ("rag", "word2vec"): ("llmlab.recipes.rag_lab", "Word2VecArgs", "word2vec_lab",
                          "skip-gram word vectors: neighbours and analogies"),
    ("multimodal", "train"): ("llmlab.recipes.multimodal", "TrainArgs", "train",
                              "train a tiny vision-language model on built-in shapes: early or late fusion"),
    ("multimodal", "ask"): ("llmlab.recipes.multimodal", "AskArgs", "ask", "caption an image or answer a question"),
    ("multimodal", "compare"): ("llmlab.recipes.multimodal", "CompareArgs", "compare",
                                "early against late fusion: caption and VQA accuracy, size, time, attention"),
    ("multimodal", "vit"): ("llmlab.recipes.multimodal", "ViTArgs", "vit",
                            "train a ViT classifier, then fine-tune it on a new label set"),
    ("multimodal", "clip"): ("llmlab.recipes.multimodal", "CLIPArgs", "clip",
                             "CLIP-style contrastive pretraining and zero-shot classification"),
    ("finetune", "classify"): ("llmlab.recipes.classify", "ClassifyArgs", "run",
                               "train a classification head on the last token; accuracy and confusion matrix"),
    ("labs", "list"): ("llmlab.recipes.labs", "ListArgs", "list_labs", "the path of labs: what each teaches, how long"),
    ("labs", "start"): ("llmlab.recipes.labs", "StartArgs", "start_lab",
                        "write NAME.py to fill in (or --solution) and the NAME.ipynb notebook"),
    ("labs", "check"): ("llmlab.recipes.labs", "CheckArgs", "check_lab",
                        "check NAME.py: ✓/✗ per check with what looks wrong; exit 0 only if all pass"),
    ("labs", "solution"): ("llmlab.recipes.labs", "SolutionArgs", "solution",
                           "print a lab's reference solution (llmlab's own code)"),
}


def find_command(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """The longest run of leading words that names a command, and the rest of argv.

    Longest first, so `finetune compare` and `finetune` can both be commands.
    """
    for n in range(len(argv), 0, -1):
        if tuple(argv[:n]) in COMMANDS:
            return tuple(argv[:n]), argv[n:]
    return None


def overview(prefix: list[str]) -> str:
    rows = [(" ".join(words), entry[3]) for words, entry in sorted(COMMANDS.items())
            if list(words[:len(prefix)]) == prefix]
    width = max(len(name) for name, _ in rows)
    lines = ["usage: llmlab COMMAND [--help] [flags]", "", "LLM engineering from raw text to a served model.", "",
             "commands:"]
    return "\n".join(lines + [f"  {name:<{width}}  {help_text}" for name, help_text in rows])


def as_flags(message: str, args_cls: type) -> str:
    """Components name parameters (`skip_bad_rows`); on the command line, say the flag (`--skip-bad-rows`).
    Only names with an underscore are translated: plain words like `rank` read the same either way."""
    for f in dataclasses.fields(args_cls):
        if "_" in f.name:
            # a whole word, not part of a path or file name
            message = re.sub(rf"(?<![-\w/.]){f.name}(?![-\w/])", "--" + f.name.replace("_", "-"), message)
    return message


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    found = find_command(argv)
    if found is None:
        words = [w for w in argv if not w.startswith("-")]
        if not any(k[:len(words)] == tuple(words) for k in COMMANDS):
            print(f"llmlab: error: unknown command {' '.join(argv)!r}; run `llmlab --help` for the list",
                  file=sys.stderr)
            return 2
        print(overview(words))
        return 0 if words or any(a in ("-h", "--help") for a in argv) else 2
    words, rest = found
    module_name, args_cls_name, run_name, help_text = COMMANDS[words]
    args_cls = None
    try:
        module = importlib.import_module(module_name)  # only the chosen recipe: torch is slow to import
        args_cls = getattr(module, args_cls_name)
        parser = argparse.ArgumentParser(prog="llmlab " + " ".join(words), description=help_text)
        add_dataclass_arguments(parser, args_cls)
        args = from_namespace(args_cls, parser.parse_args(rest))
        getattr(module, run_name)(args)
    except UserError as e:
        print(f"llmlab: error: {as_flags(str(e), args_cls) if args_cls else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmlab: interrupted", file=sys.stderr)
        return 130
    return 0


def lm_eval_main() -> None:
    """`llmlab-lm-eval`: lm-evaluation-harness's own command line, with `--model llmlab` opening anything
    `llmlab.load` opens. (lm-eval finds models only in its registry, so the registration must run first.)"""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        print("llmlab-lm-eval: error: needs lm-evaluation-harness; pip install lm-eval", file=sys.stderr)
        sys.exit(2)
    from llmlab.eval.lm_eval_bridge import cli
    from llmlab.loading import load

    cli(load)


if __name__ == "__main__":
    sys.exit(main())
