"""30 hand-written paragraphs with one-sentence reference summaries, for ROUGE, BLEU and chrF.

The paragraphs explain a standard library module or a computing idea in three or four sentences;
each summary is one sentence written for it (not a sentence copied from the paragraph, so a model
that only echoes the first sentence does not score perfectly). The data is `summaries.json`, next
to this file, shipped as package data.
"""

import json
from pathlib import Path

DATA = Path(__file__).with_name("summaries.json")


def summarization_rows() -> list[dict]:
    """[{"id": "summary/0", "document": "...", "summary": "..."}, ...] in a fixed order."""
    return json.loads(DATA.read_text(encoding="utf-8"))
