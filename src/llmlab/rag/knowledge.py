"""The built-in offline knowledge set: documents that ship with Python, and question/answer pairs made from them.

Documents (the retrieval corpus, named as files so `--docs` folders and sources agree):
- `pydoc/<topic>.txt`: every reference topic in `pydoc_data.topics` (what `help("assert")` prints);
- `stdlib/<module>.txt`: the docstring of every public top-level standard-library module or package,
  read with `ast` from the source file (nothing is imported).
Questions, made by code, the same on every run of one Python version (about 100, `n`):
- per reference topic named by one word (`assert`, `lambda`, `dict`): its first prose sentence with that
  word blanked out, "which word fills the blanks?" -> the word;
- per module whose docstring's first line does not name it: "which module is described as <first line>?"
  -> the module's name.
Each pair keeps its `source`. The split is by a stable hash of the question: `held_out` of them (20 %) are
never trained on (fine-tuning, contrastive training) and are what the comparisons score.
"""

import ast
import functools
import hashlib
import re
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

from llmlab.common.errors import UserError
from llmlab.common.io import write_text_atomic
from llmlab.rag.documents import Document

HEADING = re.compile(r"^[^\n]+\n\*+[ \t]*\n")  # a topic's title, underlined with stars


@dataclass
class QA:
    question: str
    answer: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KnowledgeSet:
    documents: list[Document]
    train: list[QA]
    test: list[QA]


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return {}
    return dict(topics)


@functools.cache  # parsing ~250 files takes seconds; they do not change while a process runs
def _module_docstrings() -> dict[str, str]:
    """Public top-level modules and packages -> their docstring (parsed, never imported)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [(p.stem, p) for p in root.glob("*.py")] + [(p.parent.name, p) for p in root.glob("*/__init__.py")]
    out = {}
    for name, path in sorted(files):
        if name.startswith("_") or "-" in name or name in ("test", "idlelib", "site-packages", "this", "antigravity"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8", errors="replace")))
        except (SyntaxError, ValueError):
            continue
        if doc and doc.strip():
            out[name] = doc.strip()
    return out


def documents() -> list[Document]:
    """The corpus: pydoc topics and module docstrings, sorted by source."""
    docs = [Document(f"pydoc/{name}.txt", text) for name, text in _topics().items() if text.strip()]
    docs += [Document(f"stdlib/{name}.txt", text) for name, text in _module_docstrings().items()]
    return sorted(docs, key=lambda d: d.source)


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = re.search(r"(?<=[.:;])\s", text)
    return (text[:m.start()] if m else text).rstrip(".:; ")


def topic_questions() -> list[QA]:
    """Per reference topic named by one word: its first prose sentence with that word blanked out."""
    out = []
    for name, text in sorted(_topics().items()):
        m = HEADING.match(text)
        if not m or not re.fullmatch(r"[a-z]+", name):
            continue
        for para in re.split(r"\n\s*\n", text[m.end():].lstrip("\n")):
            if para[:1].isspace() or len(para) < 40:  # grammar rules and examples are indented
                continue
            sentence = _first_sentence(para)
            blanked = re.sub(rf"\b{name}\b", "___", sentence, flags=re.I)
            if blanked != sentence and len(blanked) <= 240:
                out.append(QA(f'Which word fills the blanks in this sentence from the Python reference: "{blanked}"?',
                              name, f"pydoc/{name}.txt"))
            break
    texts = [q.question for q in out]
    return [q for q in out if texts.count(q.question) == 1]  # "break" and "continue" read alike: ambiguous


def module_questions() -> list[QA]:
    out = []
    for name, doc in _module_docstrings().items():
        line = " ".join(doc.split("\n\n")[0].split())
        if not 15 <= len(line) <= 110 or name.lower() in line.lower():
            continue  # too short to mean anything, too long to ask, or the answer is in the question
        summary = line.rstrip(".")
        out.append(QA(f'Which Python standard library module is described as "{summary}"?', name,
                      f"stdlib/{name}.txt"))
    return out


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def knowledge_set(n: int = 100, held_out: float = 0.2) -> KnowledgeSet:
    """About `n` pairs (every topic question, then modules by a stable hash), split by a stable hash."""
    if n < 5 or not 0 < held_out < 1:
        raise UserError(f"knowledge set: need n >= 5 and 0 < held_out < 1 (got n={n}, held_out={held_out})")
    statements = topic_questions()
    modules = sorted(module_questions(), key=lambda q: _hash(q.question))[:max(n - len(statements), 0)]
    pairs = (statements + modules)[:n]
    if len(pairs) < 5:
        raise UserError("this Python ships too little documentation (no pydoc_data?) to build the knowledge set")
    pairs.sort(key=lambda q: _hash("split:" + q.question))
    cut = round(len(pairs) * held_out)
    return KnowledgeSet(documents(), sorted(pairs[cut:], key=lambda q: q.source),
                        sorted(pairs[:cut], key=lambda q: q.source))


def write_documents(docs: list[Document], folder: str | Path) -> Path:
    """Write documents as files named by their sources, so `read_documents(folder)` gives them back."""
    folder = Path(folder)
    for d in docs:
        write_text_atomic(folder / d.source, d.text)
    return folder
