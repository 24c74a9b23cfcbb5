"""Lab: gpt-to-llama, the notebook: the given GPT-2 loading llmlab's weights, then the five changes that make
Llama with a check after each, then the learner's blocks training inside llmlab's decoder next to llmlab's
GPT-2 and Llama, and llmlab's trained Llama weights loaded into the learner's model."""

from llmlab.labs.cells import check_cell, code, md, setup

CELLS = [
    md('''
        # Lab: from GPT-2 to Llama

        GPT-2 (2019) and Llama (2023) are the same kind of model: a stack of Pre-LN blocks, attention then an MLP,
        each around a residual stream. What changed in between are five parts, and each one is small:

        1. `RMSNorm` in place of LayerNorm,
        2. `rope`: rotary positions in place of the learned position table,
        3. `LlamaAttention`: RoPE inside, no biases, and grouped-query attention (fewer key/value heads),
        4. `SwiGLUMLP` in place of the GELU MLP,
        5. `LlamaBlock` and `Llama`: the parts put together, with tied embeddings when the config says so.

        `gpt-to-llama.py` starts with a working GPT-2 whose parameter names are llmlab's. Change a copy of it
        into Llama, one part at a time. Each check loads llmlab's weights into your part, key by key, and expects
        llmlab's outputs. At the end your blocks train inside llmlab's decoder, and llmlab's trained Llama
        weights load into your model and write the same text. (About 60 minutes; it is the AIMS workshop's
        GPT-2-to-Llama assignment and AMD's lab 10.)
        '''),
    setup("gpt-to-llama"),
    md('''
        ## 0. The GPT-2 you start from

        The given `GPT2` reads its sizes from llmlab's `ModelConfig` and uses llmlab's parameter names, so the
        weights of llmlab's GPT-2 (`Transformer` with the `gpt2-tiny` preset) load into it with one
        `load_state_dict`, and it gives the same logits. Your `Llama` must do the same with llmlab's Llama: these
        are the names it needs (one block shown).
        '''),
    code('''
        from llmlab.models import Transformer, get_preset

        config = get_preset("gpt2-tiny", vocab_size=256, seq_len=64, n_layer=2, n_embd=64, n_head=4)
        reference = Transformer(config).eval()
        gpt2 = lab.GPT2(config).eval()
        gpt2.load_state_dict(reference.state_dict())  # key by key: the names are the same
        idx = torch.randint(0, 256, (2, 16))
        with torch.no_grad():
            gap = (gpt2(idx) - reference(idx)).abs().max()
        print(f"the given GPT-2 against llmlab's: largest logit difference {gap:.1e}")

        llama_config = get_preset("llama-tiny", vocab_size=256, seq_len=64, n_layer=2, n_embd=64, n_head=4)
        for name, tensor in Transformer(llama_config).state_dict().items():
            if not name.startswith("blocks.1"):
                print(f"{name:32} {tuple(tensor.shape)}")
        c = llama_config
        print(f"n_head={c.n_head}, n_kv_head={c.n_kv_head}, head_dim={c.head_dim}, "
              f"intermediate_size={c.intermediate_size}, rope_theta={c.rope_theta:g}, norm_eps={c.norm_eps:g}")
        '''),
    md(r'''
        ## 1. RMSNorm

        LayerNorm centres each vector and scales it to variance 1, then applies a gain and a bias. RMSNorm (Zhang
        & Sennrich 2019) skips the centring and the bias: $x / \sqrt{\mathrm{mean}(x^2) + \epsilon} \cdot w$. It
        is cheaper and trains as well. The eps comes from `config.norm_eps`.
        '''),
    check_cell("gpt-to-llama", "RMSNorm"),
    md(r'''
        ## 2. RoPE

        GPT-2 adds a learned vector per position to each token embedding, so it knows nothing past `seq_len`.
        RoPE (Su et al. 2021) adds nothing: it rotates each query and key by an angle proportional to its
        position, one angle per channel pair, so $q_m \cdot k_n$ depends on $m - n$ alone. Llama pairs channel
        $i$ with channel $i + D/2$:

            rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2]);   rope(x) = x * cos + rotate_half(x) * sin

        If you did the positions lab, your `rope` from there is this one.
        '''),
    check_cell("gpt-to-llama", "rope"),
    md('''
        ## 3. Llama's attention

        Three changes to `CausalSelfAttention`. **No biases.** **RoPE** on q and k, after the split into heads
        (v is not rotated: positions only need to shape the scores). **Grouped-query attention** (Ainslie et al.
        2023): k_proj and v_proj make only `n_kv_head` heads, and each is shared by `n_head // n_kv_head`
        consecutive query heads. It keeps most of the quality of full multi-head attention, and the KV cache a
        decoder keeps while generating shrinks by the same factor:
        '''),
    code('''
        c = get_preset("llama-1b")
        group = c.n_head // c.n_kv_head
        cache = 2 * c.n_layer * c.n_kv_head * c.head_dim * 8192 * 2 / 2**20  # keys and values, bf16, 8192 positions
        print(f"Llama-3.2-1B: {c.n_head} query heads share {c.n_kv_head} key/value heads ({group} each); its KV cache "
              f"for 8192 positions is {cache:.0f} MiB, {group}x less than with {c.n_head} key/value heads")
        '''),
    check_cell("gpt-to-llama", "LlamaAttention"),
    md(r'''
        ## 4. SwiGLU

        GPT-2's MLP is $\mathrm{down}(\mathrm{gelu}(\mathrm{up}(x)))$. Llama's is gated (Shazeer 2020):
        $\mathrm{down}(\mathrm{silu}(\mathrm{gate}(x)) \cdot \mathrm{up}(x))$, three matrices instead of two; the
        hidden width `config.intermediate_size` is about 8/3 of `n_embd` instead of 4, so the parameter count
        stays about the same.
        '''),
    check_cell("gpt-to-llama", "SwiGLUMLP"),
    md('''
        ## 5. The block and the model

        `LlamaBlock` is `GPT2Block` with your parts and the same names. `Llama` is `GPT2` without `pos_emb`,
        with your blocks and a final RMSNorm. When `config.tie_embeddings` is set, `lm_head.weight` *is*
        `tok_emb.weight` (the same tensor), as in GPT-2 and the small Llamas; Llama 2 and 3 at 7-8B keep two.
        '''),
    check_cell("gpt-to-llama", "LlamaBlock"),
    check_cell("gpt-to-llama", "Llama"),
    md('''
        ## 6. Your Llama inside llmlab

        Three small byte-level decoders train on Python's source code for the same number of steps: llmlab's
        GPT-2, llmlab's Llama, and llmlab's Llama with every block replaced by *your* `LlamaBlock` (and its final
        norm by your `RMSNorm`), from the same weights on the same batches. Right blocks put the last two curves
        on top of each other.
        '''),
    code('''
        from llmlab.labs.experiments import compare_training, plot_runs, use_norm


        class YourBlock(torch.nn.Module):
            """Your LlamaBlock where llmlab's decoder calls block(x, rope, mask, kv_cache, layer, bias)."""

            def __init__(self, block):
                super().__init__()
                self.block = block

            def forward(self, x, rope, mask, kv_cache, layer, bias=None):
                return self.block(x)  # training: positions 0..T-1, no cache, no padding


        def your_blocks(model):
            for i, old in enumerate(model.blocks):
                mine = lab.LlamaBlock(model.config)
                mine.load_state_dict(old.state_dict())
                model.blocks[i] = YourBlock(mine)
            use_norm(model, lab.RMSNorm)  # the final norm


        runs = compare_training({"GPT-2 (llmlab)": lambda model: model}, preset="gpt2-tiny", steps=100)
        runs += compare_training({"Llama (llmlab)": lambda model: model, "Llama (your blocks)": your_blocks},
                                 preset="llama-tiny", steps=100)
        gap = max(abs(a - b) for a, b in zip(runs[1].losses, runs[2].losses))
        print(f"largest gap between llmlab's Llama and yours: {gap:.2g} nats")
        plot_runs(runs, "GPT-2 and Llama, llmlab's and yours");
        '''),
    md('''
        Converting a checkpoint is this key-by-key copy: llmlab's trained Llama loads into your `Llama`, and
        sampling from either with the same seed writes the same bytes.
        '''),
    code('''
        trained = runs[1].model.eval()
        mine = lab.Llama(trained.config).eval()
        mine.load_state_dict(trained.state_dict())
        prompt = list(b"    def __init__(self")
        for label, model in (("llmlab's Llama", trained), ("your Llama", mine)):
            idx, generator = torch.tensor([prompt]), torch.Generator().manual_seed(0)
            with torch.no_grad():
                for _ in range(48):
                    probs = (model(idx[:, -64:])[:, -1] / 0.7).softmax(-1)  # (1, 256), temperature 0.7
                    idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
            print(f"{label:>15}: {bytes(idx[0].tolist()).decode('utf-8', errors='replace')!r}")
        '''),
    md('''
        ## Done?

        `check("gpt-to-llama")` runs every check. In llmlab itself GPT-2 and Llama are one `Transformer` with
        different `ModelConfig` strings (`llmlab labs solution gpt-to-llama` shows it), and `llmlab.models.hf`
        loads real Llama checkpoints (SmolLM2, Llama 3.2) the same way, key by key. Next on the path:
        `llmlab labs start kv-cache`.
        '''),
    check_cell("gpt-to-llama"),
]
