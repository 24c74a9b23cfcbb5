"""Constitutional AI's supervised stage (Bai et al. 2022): answer, critique against a principle, revise.

Three rounds over a list of prompts, each a call to a chat function
(`messages -> reply text`, e.g. `llmlab.infer.api.LocalChat(lm).chat`, or a fake in tests):

    1. answer    the prompt as it is
    2. critique  the answer, against one principle sampled per prompt (seeded)
    3. revise    the answer, given the critique and the same principle

The result is SFT rows (prompt -> revision, the paper's SL-CAI data) and
preference rows (revision chosen over the original answer, the pairs that the
paper's RL stage would have labelled with an AI judge; here the revision is
assumed better). A revision that is empty or equal to the original answer
makes no preference row. The model is whatever the chat function wraps: this
file knows messages and text, not tokens.
"""

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from llmlab.common import log
from llmlab.common.errors import UserError

Messages = list[dict[str, str]]
ChatFn = Callable[[Messages], str]

CRITIQUE_REQUEST = ("Critique your last response against this principle: {principle}\n"
                    "Name the specific ways it falls short of the principle, briefly.")
REVISION_REQUEST = ("Rewrite your original response so that it follows the principle: {principle}\n"
                    "Use your critique. Reply with the rewritten response only.")


def read_lines(path: str | Path | None, default: str, what: str) -> list[str]:
    """Non-empty lines that are not # comments, from `path` or the package's own `default` file."""
    if path is None:
        text = resources.files("llmlab.align").joinpath(default).read_text(encoding="utf-8")
    else:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such {what} file; give a text file with one per line")
        text = Path(path).read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UserError(f"{path or default}: holds no {what}s (one per line; # starts a comment)")
    return lines


def load_principles(path: str | Path | None = None) -> list[str]:
    return read_lines(path, "principles.txt", "principle")


def load_prompts(path: str | Path | None = None) -> list[str]:
    return read_lines(path, "red_team_prompts.txt", "prompt")


@dataclass
class Revision:
    """One prompt through the three rounds."""

    prompt: str
    answer: str
    principle: str
    critique: str
    revision: str

    def conversation(self) -> Messages:
        """The whole exchange up to the revision request: what the model saw in round 3."""
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.answer},
                {"role": "user", "content": CRITIQUE_REQUEST.format(principle=self.principle)},
                {"role": "assistant", "content": self.critique},
                {"role": "user", "content": REVISION_REQUEST.format(principle=self.principle)}]


def _ask(chat: ChatFn, messages: Messages, where: str) -> str:
    try:
        return chat(messages).strip()
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"constitution: the chat function failed on {where} ({type(e).__name__}: {e})") from e


def constitutional_revisions(chat: ChatFn, prompts: list[str], principles: list[str], seed: int = 0) -> list[Revision]:
    """Run the three rounds, each over every prompt before the next starts; one principle per prompt."""
    if not principles:
        raise UserError("constitution: no principles given")
    rng = random.Random(seed)
    chosen = [rng.choice(principles) for _ in prompts]
    user = [[{"role": "user", "content": p}] for p in prompts]
    answers = [_ask(chat, m, f"prompt {i} (answer)") for i, m in enumerate(user)]
    critiques = []
    for i, (m, a, principle) in enumerate(zip(user, answers, chosen, strict=True)):
        request = {"role": "user", "content": CRITIQUE_REQUEST.format(principle=principle)}
        critiques.append(_ask(chat, [*m, {"role": "assistant", "content": a}, request], f"prompt {i} (critique)"))
    out = []
    for i, (p, a, principle, c) in enumerate(zip(prompts, answers, chosen, critiques, strict=True)):
        r = Revision(p, a, principle, c, "")
        r.revision = _ask(chat, r.conversation(), f"prompt {i} (revision)")
        out.append(r)
    return out


def to_rows(revisions: list[Revision]) -> tuple[list[dict], list[dict], int]:
    """(SFT rows {"messages"}, preference rows {"prompt", "chosen", "rejected"} (conversational), pairs dropped
    because the revision was empty or unchanged)."""
    sft, preference, dropped = [], [], 0
    for r in revisions:
        prompt = [{"role": "user", "content": r.prompt}]
        if r.revision:
            sft.append({"messages": [*prompt, {"role": "assistant", "content": r.revision}]})
        if not r.revision or not r.answer or r.revision == r.answer:
            dropped += 1
            continue
        preference.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": r.revision}],
                           "rejected": [{"role": "assistant", "content": r.answer}]})
    if dropped:
        log.info(f"constitution: {dropped} revision(s) empty or unchanged; no preference pair for them")
    return sft, preference, dropped


def revision_records(revisions: list[Revision]) -> list[dict]:
    """Every round's text per prompt, for inspection."""
    return [asdict(r) for r in revisions]
