"""The built-in knowledge set: about 100 pairs made the same way every time, 20 % held out, every answer in
its source document, no question asked twice."""

import re

from llmlab.rag.documents import read_documents
from llmlab.rag.knowledge import knowledge_set, write_documents


def test_pairs_split_and_sources(tmp_path):
    ks = knowledge_set()
    pairs = ks.train + ks.test
    assert 90 <= len(pairs) <= 100
    assert len(ks.test) == round(0.2 * len(pairs))
    assert len({q.question for q in pairs}) == len(pairs)
    texts = {d.source: d.text for d in ks.documents}
    for q in pairs:
        assert q.source in texts
        assert q.answer.lower() in texts[q.source].lower() or q.source == f"stdlib/{q.answer}.txt"
        quoted = q.question.split('"', 1)[1]
        assert not re.search(rf"\b{q.answer}\b", quoted, re.I)  # the answer is not given away
    again = knowledge_set()
    assert [q.to_dict() for q in again.test] == [q.to_dict() for q in ks.test]
    folder = write_documents(ks.documents[:5], tmp_path / "docs")
    assert [(d.source, d.text) for d in read_documents(folder)] == [(d.source, d.text) for d in ks.documents[:5]]
