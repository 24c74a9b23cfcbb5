"""The path: every lab in the order a learner takes them, and what one lab is made of.

A lab is a folder `labs/<package>/` of five small files, the same for every lab:

    skeleton.py   what `llmlab labs start NAME` writes as NAME.py: the functions and classes to implement,
                  docstrings with shapes and meaning, bodies raising NotImplementedError("TODO: ...")
    solution.py   the reference, written with `--solution` and printed by `llmlab labs solution NAME`:
                  llmlab's own code where it exists, behind a thin adapter to the lab's interface;
                  LLMLAB_CODE lists the llmlab functions and classes it uses (printed after it)
    checks.py     CHECKS, a `CheckList`: each check compares the learner's code with torch or llmlab
    bugs.py       BUGS: copies of a correct answer with one typical mistake each, and the words the checks
                  must answer it with; ALTERNATIVES: other correct answers they must accept (tests hold both)
    notebook.py   CELLS: the guided notebook as a list of markdown and code cells (built into NAME.ipynb)

This file only lists them; it imports a lab's files when asked for them.
"""

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

from llmlab.common.errors import UserError
from llmlab.labs.checking import CheckList


@dataclass(frozen=True)
class Bug:
    """A planted bug: the source of one item with a typical mistake, and a phrase the checks must say."""
    name: str
    item: str
    source: str
    expect: str


def planted(source: str, old: str, new: str) -> str:
    """`source` with `old` replaced by `new`: how a bug is planted in a copy of a correct answer."""
    if source.count(old) < 1:
        raise ValueError(f"cannot plant the bug: {old!r} is not in the source")
    return source.replace(old, new)


@dataclass(frozen=True)
class Lab:
    name: str  # the command's NAME and the workspace file's name (NAME.py, NAME.ipynb)
    teaches: str
    minutes: int  # about how long a learner takes
    mirrors: str  # the course weeks and labs it follows
    package: str  # the folder under llmlab/labs/

    @property
    def folder(self) -> Path:
        return Path(__file__).parent / self.package

    def _module(self, part: str):
        return importlib.import_module(f"llmlab.labs.{self.package}.{part}")

    def skeleton(self) -> str:
        return (self.folder / "skeleton.py").read_text(encoding="utf-8")

    def solution(self) -> str:
        return (self.folder / "solution.py").read_text(encoding="utf-8")

    def solution_with_sources(self) -> str:
        """The solution file, then the source of the llmlab code doing the work (its `LLMLAB_CODE` list)."""
        parts = [self.solution()]
        for value in getattr(self._module("solution"), "LLMLAB_CODE", []):
            where = f"{value.__module__}.{value.__qualname__}"
            parts.append(f"# ---- llmlab's own code: {where} ----\n\n{inspect.getsource(value)}")
        return "\n\n".join(parts)

    def checks(self) -> CheckList:
        return self._module("checks").CHECKS

    def bugs(self) -> list[Bug]:
        return self._module("bugs").BUGS

    def alternatives(self) -> list[str]:
        """Other correct answers (loops, other constants) the checks must accept."""
        return getattr(self._module("bugs"), "ALTERNATIVES", [])

    def cells(self) -> list[tuple[str, str]]:
        return self._module("notebook").CELLS


LABS = [  # in path order: what each lab needs comes before it
    Lab("pytorch-basics", "tensors, broadcasting, matmul shapes, a stable softmax, gradients by hand and by autograd",
        30, "AMD labs 02 and 03; 8-week course 1.2", "pytorch_basics"),
    Lab("modules", "nn.Module from scratch: a linear layer, an MLP, counting parameters, saving and loading", 35,
        "AMD labs 03 and 09", "modules"),
    Lab("micrograd", "a scalar autograd engine: the chain rule per operation, topological order, accumulation",
        45, "8-week course 2.3", "micrograd"),
    Lab("ngram-and-backprop", "character n-grams (counts, add-k, nll, sampling); an MLP block's backward by hand",
        60, "8-week course 2.2", "ngram_backprop"),
    Lab("bpe", "byte-level BPE: pair counts, merges, training, encoding and decoding", 40,
        "the study group's minbpe exercise; 8-week course 1.3", "bpe"),
    Lab("attention", "scaled dot-product attention, the causal mask, multi-head and cross-attention", 45,
        "AMD lab 06; 8-week course 2.1 and 3.1", "attention"),
    Lab("norms", "LayerNorm, RMSNorm, GELU, SiLU, SwiGLU; Pre-LN against Post-LN", 40,
        "AMD labs 05a and 05b", "norms"),
    Lab("positions", "sinusoidal positions, RoPE and ALiBi", 35, "no single course lab", "positions"),
    Lab("gpt-to-llama", "GPT-2's block into Llama's: RMSNorm, RoPE, SwiGLU, grouped-query attention, tied embeddings",
        60, "the AIMS workshop's GPT-2-to-Llama assignment; AMD lab 10", "gpt_to_llama"),
    Lab("kv-cache", "a KV cache inside llmlab's decoder: decoding with it equals decoding without it, and is faster",
        35, "8-week course 3.2", "kv_cache"),
    Lab("training-loop", "the next-token loss, AdamW, warmup + cosine, clipping, accumulation, bf16; a loop that "
        "trains an llmlab model", 60, "AMD lab 08; 8-week course 4.2 and 4.3", "training_loop"),
    Lab("optimizers", "SGD with (Nesterov) momentum, Adam, Lion, Muon's Newton-Schulz orthogonalisation; a race on an "
        "llmlab model", 50, "the AIMS workshop's optimizers lab", "optimizers"),
    Lab("lora", "LoRA from scratch: the low-rank update, its scale, merging, adding it to a model", 40,
        "AIMS workshop's LoRA from scratch; AMD lab 07", "lora"),
    Lab("quantization", "absmax and zero-point int8, group-wise int4, 2:4 pruning", 35,
        "the AIMS workshop's quantisation and sparsity lab; the RUB lecture's exercises", "quantization"),
    Lab("sampling", "temperature, top-k and top-p (nucleus) filtering, drawing the next token", 30, "AMD lab 01",
        "sampling"),
    Lab("preference", "a completion's log-probability, the Bradley-Terry loss, DPO", 35,
        "AIMS workshop's RLHF, reward-model and DPO labs", "preference"),
    Lab("rag", "retrieval: overlapping chunks, mean-pooled embeddings, cosine top-k, BM25, reciprocal rank fusion",
        45, "8-week course 8.3", "rag"),
    Lab("sharding", "ring reduce-scatter, all-gather and all-reduce with every byte counted; column- and "
        "row-parallel linear layers", 45, "no single course lab (Megatron-LM's tensor parallelism)", "sharding"),
    Lab("scaling-fit", "Chinchilla's law L(N, D), fitting it in log space, the compute-optimal split, isoFLOP minima",
        40, "Chinchilla's approaches 2 and 3 (Hoffmann et al. 2022)", "scaling_fit"),
    Lab("roofline", "FLOPs and bytes of a matmul, attention and a decoder; the roofline and its regimes; measured "
        "FLOP/s on this CPU", 40, "Williams et al. 2009; PaLM's MFU (appendix B)", "roofline"),
]


def get_lab(name: str) -> Lab:
    for lab in LABS:
        if lab.name == name:
            return lab
    raise UserError(f"lab {name!r}: unknown; the labs are {', '.join(lab.name for lab in LABS)} "
                    "(`llmlab labs list`)")
