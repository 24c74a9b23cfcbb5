"""Public benchmarks in their own file formats: GSM8K, HumanEval, MBPP, HellaSwag, ARC and MMLU.

`--tasks gsm8k=data/gsm8k_test.jsonl` reads a local copy; `--tasks gsm8k` alone downloads the test split
from the Hugging Face hub when online (through `datasets`). Each format says what kind of task it is and
turns its rows into the shape the scorers read:

    gsm8k       {"question", "answer": "... #### 72"}                    -> generate, math
    humaneval   {"task_id", "prompt", "test", "entry_point", ...}        -> code, pass@1
    mbpp        {"text", "code", "test_list": ["assert f(1) == 2"]}      -> code, pass@1
    hellaswag   {"ctx", "endings": [4], "label": "2"}                    -> multiple choice
    arc         {"question", "choices": {"text", "label"}, "answerKey"}  -> multiple choice
    mmlu        {"question", "choices": [4], "answer": 1}                -> multiple choice

The prompts follow lm-eval's tasks of the same names where they are simple; lm-eval's own task files stay
the reference for exact leaderboard numbers (run those through `llmlab-lm-eval`).
"""

from collections.abc import Callable
from dataclasses import dataclass

from llmlab.common.errors import UserError
from llmlab.eval.tasks import MC_TEMPLATE, TaskSpec


def _gsm8k(row: dict) -> dict:
    return {"question": row["question"], "answer": row["answer"]}


def _humaneval(row: dict) -> dict:
    return {k: row[k] for k in ("task_id", "prompt", "test", "entry_point")}


def _mbpp(row: dict) -> dict:
    """The problem statement and its first test as the prompt's docstring; every test in `check`."""
    tests = row["test_list"]
    prompt = f'"""\n{row["text"]}\n{tests[0]}\n"""\n'
    test = "def check(candidate):\n" + "".join(f"    {t}\n" for t in tests)
    return {"task_id": row.get("task_id"), "prompt": prompt, "test": test, "entry_point": "None"}


def _hellaswag(row: dict) -> dict:
    ctx = row["ctx"] if "ctx" in row else row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {"question": f"{row.get('activity_label', '')}: {ctx}".lstrip(": "), "choices": list(row["endings"]),
            "answer": int(row["label"])}


def _arc(row: dict) -> dict:
    labels = list(row["choices"]["label"])
    if row["answerKey"] not in labels:
        raise ValueError(f"answerKey {row['answerKey']!r} is not one of the labels {labels}")
    return {"question": row["question"], "choices": list(row["choices"]["text"]),
            "answer": labels.index(row["answerKey"])}


def _mmlu(row: dict) -> dict:
    return {"question": row["question"], "choices": list(row["choices"]), "answer": int(row["answer"])}


@dataclass(frozen=True)
class Format:
    spec: Callable[[str, str], TaskSpec]  # (task name, data) -> the task
    convert: Callable[[dict], dict]  # one row in the format's own shape -> the scorer's
    hub: tuple[str, str | None, str]  # (dataset, config, split) for when no local file is given


FORMATS: dict[str, Format] = {
    "gsm8k": Format(lambda name, data: TaskSpec(name=name, kind="generate", data=data, format="gsm8k",
                                                template="Question: {question}\nAnswer:", metrics=["math"],
                                                max_new_tokens=256, stop=["Question:"]),
                    _gsm8k, ("openai/gsm8k", "main", "test")),
    "humaneval": Format(lambda name, data: TaskSpec(name=name, kind="code", data=data, format="humaneval",
                                                    template="{prompt}", metrics=["pass@1"], max_new_tokens=384),
                        _humaneval, ("openai/openai_humaneval", None, "test")),
    "mbpp": Format(lambda name, data: TaskSpec(name=name, kind="code", data=data, format="mbpp", template="{prompt}",
                                               metrics=["pass@1"], max_new_tokens=384),
                   _mbpp, ("google-research-datasets/mbpp", "full", "test")),
    "hellaswag": Format(lambda name, data: TaskSpec(name=name, kind="multiple_choice", data=data,
                                                    format="hellaswag", template="{question}"),
                        _hellaswag, ("Rowan/hellaswag", None, "validation")),
    "arc": Format(lambda name, data: TaskSpec(name=name, kind="multiple_choice", data=data, format="arc",
                                              template=MC_TEMPLATE),
                  _arc, ("allenai/ai2_arc", "ARC-Easy", "test")),
    "mmlu": Format(lambda name, data: TaskSpec(name=name, kind="multiple_choice", data=data, format="mmlu",
                                               template=MC_TEMPLATE),
                   _mmlu, ("cais/mmlu", "all", "test")),
}


def convert_rows(fmt: str, rows: list[dict]) -> list[dict]:
    """Rows in a public format -> the scorer's shape, each keeping its `_source`; a bad row names file and line."""
    out = []
    for row in rows:
        try:
            out.append({**FORMATS[fmt].convert(row), "_source": row.get("_source", fmt)})
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise UserError(f"{row.get('_source', fmt)}: not a {fmt} row ({type(e).__name__}: {e}); "
                            f"check the file is {fmt}'s format") from None
    return out


def hub_rows(fmt: str) -> list[dict]:
    """The format's usual split from the Hugging Face hub (needs `datasets` and a network or its cache)."""
    name, config, split = FORMATS[fmt].hub
    try:
        import datasets
    except ImportError:
        raise UserError(f"{fmt}: no local file given, and downloading it needs `pip install datasets`; or pass "
                        f"{fmt}=PATH to a local copy") from None
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as e:
        raise UserError(f"{fmt}: cannot load {name} from the hub ({type(e).__name__}); offline? Pass {fmt}=PATH "
                        "to a local copy") from None
    return [{**dict(row), "_source": f"{name}[{i}]"} for i, row in enumerate(data)]
