"""Lab: bpe, the notebook: bytes, pair counts, merges, training, encoding and decoding with their checks, then
the learner's tokenizer trained on Python's sources next to llmlab's trainer."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: byte-level BPE

        Language models read token ids, not characters. Byte-pair encoding (Sennrich et al. 2016; GPT-2's byte
        level version) starts from a text's UTF-8 bytes and learns to merge frequent neighbours into new tokens.
        You write the five functions of minbpe's exercise: `get_stats`, `merge`, `train`, `encode`, `decode`.
        Then your trainer learns merges on Python's source code, next to llmlab's.

        Open `bpe.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check bpe` runs the same checks in a terminal. (About 40 minutes; it follows the study group
        and week 1.3 of the 8-week course.)
        '''),
    setup("bpe"),
    md('''
        ## 1. Bytes, pairs and merges

        "é" is two bytes in UTF-8, "日" three: every text is a list of ids 0..255 to start with. `get_stats`
        counts adjacent pairs; `merge` replaces one pair everywhere by a new id.
        '''),
    code('''
        print(list("café".encode("utf-8")), list("日本".encode("utf-8")))
        '''),
    check_cell("bpe", "get_stats"),
    check_cell("bpe", "merge"),
    md('''
        ## 2. Training

        Repeat: count the pairs, merge the most frequent into id 256 + i, record the pair. On ties, take the
        smallest pair, so that the merges do not depend on dictionary order.
        '''),
    check_cell("bpe", "train"),
    md('''
        ## 3. Encoding and decoding

        A new text is encoded by replaying the merges: among the pairs present, the one learned first goes first.
        Decoding maps each id back to its bytes and decodes UTF-8 once at the end, since one character's bytes may
        lie in two tokens.
        '''),
    check_cell("bpe", "encode"),
    check_cell("bpe", "decode"),
    md('''
        ## 4. Your tokenizer on Python's sources

        Your `train` and llmlab's trainer learn 100 merges on the first 20,000 characters of Python's standard
        library. Then your `encode` compresses other source code: the fewer tokens per byte, the more text fits in
        a model's context.
        '''),
    code('''
        import time

        from llmlab.data.sources import default_corpus
        from llmlab.tokenizer.bpe import train_fast

        docs = [text for name, text in default_corpus() if name.startswith("stdlib/")]
        train_text, test_text = "".join(docs)[:20_000], "".join(docs[-5:])[:20_000]
        start = time.perf_counter()
        merges = lab.train(train_text, 256 + 100)
        seconds = time.perf_counter() - start
        same = merges == train_fast({train_text.encode("utf-8"): 1}, 100)
        ids = lab.encode(test_text, merges)
        print(f"{len(merges)} merges in {seconds:.1f} s, {'the same as' if same else 'DIFFERENT from'} llmlab's")
        print(f"{len(test_text.encode('utf-8')) / len(ids):.2f} bytes per token on unseen code; "
              f"round trip {'exact' if lab.decode(ids, merges) == test_text else 'BROKEN'}")
        print("some learned tokens:", [lab.decode([256 + i], merges) for i in range(0, 100, 10)])
        '''),
    md('''
        ## Done?

        `check("bpe")` runs every check. `llmlab tokenizer train` trains llmlab's tokenizer (the GPT-4 regex
        pre-split, special tokens, the fast trainer) and `llmlab tokenizer analyze` compares tokenizers. Next on
        the path: `llmlab labs start attention`.
        '''),
    check_cell("bpe"),
]
