"""Argument groups more than one recipe takes, so their flags and help read the same everywhere.

Recipes never import each other; what they share lives here (arguments) or
in a component (code). A recipe's dataclass inherits a group and may change
a default by declaring the field again.
"""

from dataclasses import dataclass
from typing import Any

from llmlab.common.config import arg
from llmlab.common.errors import UserError


@dataclass
class SamplingArgs:
    """How the next token is chosen (see `llmlab.infer.sampling`)."""

    temperature: float = arg(0.8, "0 is greedy; higher is more random")
    top_k: int | None = arg(None, "sample among the k likeliest tokens")
    top_p: float | None = arg(0.95, "sample among the likeliest tokens holding this mass")
    min_p: float | None = arg(None, "drop tokens below min_p x the top probability")
    repetition_penalty: float = arg(1.0, ">1 discourages tokens already present")
    seed: int | None = arg(None, "random seed, for reproducible samples")


def sampling_kwargs(args: SamplingArgs) -> dict[str, Any]:
    """The keywords `llmlab.infer.generate.stream` takes, from a recipe's arguments."""
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p,
            "repetition_penalty": args.repetition_penalty, "seed": args.seed}


@dataclass
class RuntimeArgs:
    """Where a loaded model runs."""

    device: str = arg("cpu", "cpu, cuda or auto")
    dtype: str = arg("float32", "float32, bfloat16 or float16")
    threads: int | None = arg(None, "CPU threads for torch (default: torch's choice)")


def eval_task_texts(name: str) -> list[str]:
    """A built-in evaluation task's texts (the string fields of each row), for the data pipeline's
    decontamination stage, which sits below evaluation and so cannot read the tasks itself."""
    from llmlab.eval.builtin import ROWS, builtin_rows

    if name not in ROWS:
        raise UserError(f"tasks: unknown evaluation task {name!r}; built-in tasks: {', '.join(ROWS)}")
    return ["\n".join(v for k, v in row.items() if isinstance(v, str) and not k.startswith("_"))
            for row in builtin_rows(name)]
