"""Continuous batching (Yu et al. 2022, "Orca"): a scheduler that serves many requests at once on a paged cache.

Requests arrive at any time (`add_request`) and leave when done; `step()` is one scheduler iteration:
  1. admit waiting requests (first come, first served) while the batch has room and the pool has blocks
     for the prompt, reusing cached full blocks of a shared prefix;
  2. schedule: one new token for every running sequence whose prompt is in the cache (decode), and at most
     `prefill_chunk` prompt tokens (chunked prefill, Agrawal et al. 2024, "Sarathi"), so a long prompt is
     spread over several steps and cannot stall everyone's decoding;
  3. one forward over all of them: every new token of the step side by side in one row, so the weights are
     read once per step; attention runs per group through the cache (`PagedStep`: the decoders as a padded
     batch, the prefill chunks packed), each token at its own position;
  4. sample each sequence's token with its own parameters and its own seeded `torch.Generator`, and retire
     the finished ones (their blocks go back at once).
When a sequence needs a block and none is free, the most recently admitted running sequence is preempted by
recomputation (vLLM's policy): its blocks are released and it goes back to the front of the queue with its
generated tokens appended to its prompt, to be prefilled again later. Its output does not change.

Greedy output under any interleaving equals `generate` on the request alone: every row sees exactly its own
keys, at its own positions. Logprobs are log_softmax of the model's raw logits (before temperature and
filters, as vLLM reports them by default), so they describe the model, not the sampler.

The engine knows only token ids; text, stop strings and `n` choices belong to the server. Synchronous and
single-threaded: call `step()` from one thread. Quantised and LoRA models are served as they are (only their
Linear layers differ); speculative decoding and prompt-tuned models are refused.
"""

from collections import deque
from dataclasses import dataclass, field

import torch

from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.infer.paged_kv import PagedKVCache
from llmlab.infer.sampling import sample
from llmlab.models.gpt import Transformer

DEFAULT_KV_BYTES = 1 << 30  # kv_blocks=None: room for max_batch full contexts, but at most 1 GiB of CPU memory


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 -> greedy (argmax), equal to llmlab.infer.generate with temperature=0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None  # per-request generator: same seed -> same tokens regardless of batching
    # finishing ids (eos, end-of-turn): the final event carries the stop token, counted in completion_tokens as
    # vLLM counts it; the server does not show it as text
    stop_token_ids: frozenset[int] = frozenset()
    logprobs: int | None = None  # None: none; 0: chosen token's logprob; k > 0: also the top-k alternatives
    min_tokens: int = 0


@dataclass
class TokenEvent:
    request_id: str
    token_id: int | None  # None only on a final event that carries no new token (abort)
    logprob: float | None
    top_logprobs: list[tuple[int, float]] | None
    finished: bool
    finish_reason: str | None  # "stop" (stop token), "length" (max_tokens or context), "abort"
    prompt_tokens: int
    completion_tokens: int


class QueueFull(RuntimeError):
    """The waiting queue holds max_waiting requests; try again later."""


@dataclass(eq=False)  # compared by identity: `seq in self.running`
class _Sequence:
    request_id: str
    prompt_len: int  # the request's own prompt, for usage counts
    params: SamplingParams
    generator: torch.Generator | None
    arrival: int
    tokens: list[int]  # prompt + generated; the last one's keys are not in the cache yet
    generated: list[int] = field(default_factory=list)
    table: list[int] = field(default_factory=list)  # block table
    computed: int = 0  # leading tokens whose keys and values are in the cache
    registered: int = 0  # leading full blocks entered in the prefix table
    content: int = 0  # content id of the last registered block (0: empty prefix)


class Engine:
    """Serves many requests on one model. model: an llmlab `Transformer` (put in eval mode).

    block_size: positions per KV block. kv_blocks: the pool's size (block 0 is reserved); None sizes it for
    max_batch full context windows, at most DEFAULT_KV_BYTES. max_batch: most sequences running at once.
    prefill_chunk: prompt tokens per step. max_waiting: queue length beyond which add_request raises QueueFull.
    """

    def __init__(self, model: torch.nn.Module, *, block_size: int = 16, kv_blocks: int | None = None,
                 max_batch: int = 16, prefill_chunk: int = 256, max_waiting: int = 256,
                 draft_model: torch.nn.Module | None = None):
        if draft_model is not None:
            raise UserError("draft_model: speculative decoding is not supported by the batching engine; serve "
                            "without a draft model (llmlab.infer.speculative runs it for one request)")
        if not isinstance(model, Transformer):
            raise UserError(f"model: the engine serves a plain llmlab Transformer, got {type(model).__name__} "
                            f"(a prompt-tuned model feeds virtual tokens the paged cache does not hold); "
                            f"merge or drop the method first")
        if getattr(model.config, "capacity_factor", None) is not None:
            raise UserError("model: a mixture of experts with a capacity factor drops tokens depending on what else "
                            "is in the batch, so batched output would differ from the request alone; set "
                            "capacity_factor to None to serve it")
        for name, value, least in (("block_size", block_size, 1), ("max_batch", max_batch, 1),
                                   ("prefill_chunk", prefill_chunk, 1), ("max_waiting", max_waiting, 1),
                                   ("kv_blocks", kv_blocks or 2, 2)):  # block 0 is reserved: 2 holds one block
            if value < least:
                raise UserError(f"{name} must be at least {least}, got {value}")
        self.model = model.eval()
        self.seq_len, self.vocab = model.config.seq_len, model.config.vocab_size
        per_seq = -(-self.seq_len // block_size)  # blocks for one full context window
        if kv_blocks is None:
            budget = DEFAULT_KV_BYTES // (PagedKVCache.bytes_per_token(model) * block_size)
            kv_blocks = max(per_seq, min(max_batch * per_seq, budget)) + 1
            log.info(f"engine: {kv_blocks} KV blocks of {block_size} tokens")
        self.cache = PagedKVCache.for_model(model, kv_blocks, block_size)
        self.blocks = self.cache.allocator
        self.block_size, self.max_batch = block_size, max_batch
        # a sequence ends ("length") at the context window, or when feeding its newest token would need more
        # blocks than the whole pool has (with room for that, preemption always lets the oldest one go on)
        self.max_len = min(self.seq_len, (kv_blocks - 1) * block_size + 1)
        self.prefill_chunk, self.max_waiting = prefill_chunk, max_waiting
        self.device = model.tok_emb.weight.device
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        self.pending: list[TokenEvent] = []  # abort events, returned by the next step
        self.preemptions = self.prefix_hits = self._arrivals = 0
        self.reference = False  # True: PagedStep's readable gather (tests)

    # ---- requests ----

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        """Queue a request; ValueError for input that cannot be served, QueueFull when max_waiting are waiting."""
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("prompt: no tokens; give at least one token")
        bad = [t for t in prompt if t < 0 or t >= self.vocab]
        if bad:
            raise ValueError(f"prompt: token id {bad[0]} is outside the vocabulary (0..{self.vocab - 1})")
        if len(prompt) >= self.seq_len:
            raise ValueError(f"prompt: {len(prompt)} tokens leave no room for a new token in the context window "
                             f"of {self.seq_len}")
        if len(prompt) > (self.blocks.n_blocks - 1) * self.block_size:
            raise ValueError(f"prompt: {len(prompt)} tokens need more KV blocks than the pool has "
                             f"({self.blocks.n_blocks - 1} of {self.block_size})")
        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {params.max_tokens}")
        if not params.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {params.temperature}")
        if not 0 < params.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")
        if self._find(request_id) is not None:
            raise ValueError(f"request_id {request_id!r} is already in use")
        if len(self.waiting) >= self.max_waiting:
            raise QueueFull(f"{len(self.waiting)} requests are waiting (max_waiting); retry later")
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        self._arrivals += 1
        self.waiting.append(_Sequence(request_id, len(prompt), params, generator, self._arrivals, prompt))

    def abort(self, request_id: str) -> None:
        """Drop a waiting or running request and free its blocks now; the next step() returns its final event
        (token_id None, finish_reason "abort"). An unknown or finished id is a no-op."""
        seq = self._find(request_id)
        if seq is None:
            return
        if seq in self.running:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self._free(seq)
        self.pending.append(self._event(seq, None, None, None, "abort"))

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.pending)

    def stats(self) -> dict:
        """Queue sizes, KV blocks held by requests (of the pool's usable blocks), preemptions so far, and
        prefix_hits: cached full blocks reused by admitted requests instead of being computed again."""
        return {"waiting": len(self.waiting), "running": len(self.running), "kv_blocks_used": self.blocks.n_used,
                "kv_blocks_total": self.blocks.n_blocks - 1, "preemptions": self.preemptions,
                "prefix_hits": self.prefix_hits}

    # ---- one iteration ----

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Admit, then one forward: a token for every sequence whose prompt is in, and up to prefill_chunk
        prompt tokens; [] when idle."""
        events, self.pending = self.pending, []
        self._admit()
        decoding = [s for s in self.running if s.computed == len(s.tokens) - 1]
        for seq in decoding:
            if seq in self.running:  # a block for its next token may cost a newer sequence its place
                self._reserve(seq, 1)
        chunks = self._schedule_prefill()
        # a prefill reservation may have preempted a decoding sequence, or an earlier chunk's sequence
        decoding = [s for s in decoding if s in self.running]
        chunks = [(s, n) for s, n in chunks if s in self.running]
        if decoding or chunks:
            events += self._forward(decoding, chunks)
        return events

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_batch:
            seq = self.waiting[0]
            self._take_cached_prefix(seq)
            need = -(-(len(seq.tokens) + 1) // self.block_size) - len(seq.table)
            # the whole prompt must fit, plus a block for each running sequence's next token: admitting more
            # would only preempt someone at the next step (with nothing running, admit anyway: it fits alone)
            if need + len(self.running) > self.blocks.n_free and self.running:
                self._free(seq)
                return
            self.prefix_hits += len(seq.table)
            self.waiting.popleft()
            self.running.append(seq)

    def _take_cached_prefix(self, seq: _Sequence) -> None:
        """Share the full cached blocks that start seq's tokens (leaving at least one token to compute)."""
        bs, parent = self.block_size, 0
        for i in range((len(seq.tokens) - 1) // bs):
            block = self.blocks.lookup(parent, tuple(seq.tokens[i * bs:(i + 1) * bs]))
            if block is None:
                break
            self.blocks.retain(block)
            seq.table.append(block)
            parent = self.blocks.content_id[block]
        seq.computed = len(seq.table) * bs
        seq.registered, seq.content = len(seq.table), parent

    def _reserve(self, seq: _Sequence, n: int) -> bool:
        """Blocks for seq's next n tokens, preempting newer sequences if needed; False if seq itself was."""
        need = -(-(seq.computed + n) // self.block_size) - len(seq.table)
        for _ in range(need):
            block = self.cache.allocate()
            while block is None:
                victim = max(self.running, key=lambda s: s.arrival)
                self._preempt(victim)
                if victim is seq:
                    return False
                block = self.cache.allocate()
            seq.table.append(block)
        return True

    def _preempt(self, seq: _Sequence) -> None:
        self.running.remove(seq)
        self._free(seq)
        self.preemptions += 1
        self.waiting.appendleft(seq)
        log.info(f"engine: preempted {seq.request_id} (KV blocks ran out); it will be recomputed")

    def _free(self, seq: _Sequence) -> None:
        for block in seq.table:
            self.blocks.release(block)
        seq.table, seq.computed, seq.registered, seq.content = [], 0, 0, 0

    def _schedule_prefill(self) -> list[tuple[_Sequence, int]]:
        """Up to prefill_chunk prompt tokens, oldest sequences first, with blocks reserved for them."""
        budget, chunks = self.prefill_chunk, []
        for seq in [s for s in self.running if s.computed < len(s.tokens) - 1]:
            n = min(budget, len(seq.tokens) - seq.computed)
            if budget == 0 or seq not in self.running or not self._reserve(seq, n):
                continue
            chunks.append((seq, n))
            budget -= n
        return chunks

    def _forward(self, decoding: list[_Sequence], chunks: list[tuple[_Sequence, int]]) -> list[TokenEvent]:
        """One forward over every new token of this step (1, N): the decoding sequences' newest tokens, then
        the prefill chunks; sample for the decoders and for each prompt that is now all in."""
        seqs = decoding + [s for s, _ in chunks]
        counts = [1] * len(decoding) + [n for _, n in chunks]
        view = self.cache.step([s.table for s in seqs], [s.computed for s in seqs], counts,
                               n_decode=len(decoding), reference=self.reference)
        new = [t for s, n in zip(seqs, counts, strict=True) for t in s.tokens[s.computed:s.computed + n]]
        idx = torch.tensor([new], device=self.device)  # (1, N)
        last = torch.zeros_like(idx, dtype=torch.bool)
        last[0, torch.tensor(counts).cumsum(0) - 1] = True  # each sequence's last new token
        logits = self.model(idx, kv_cache=view, positions=view.positions, logits_mask=last)  # (n, V)
        for s, n in zip(seqs, counts, strict=True):
            s.computed += n
            self._register_full_blocks(s)
        done = [i for i, s in enumerate(seqs) if s.computed == len(s.tokens)]  # decoders, and whole prompts
        return self._sample([seqs[i] for i in done], logits[done])

    def _register_full_blocks(self, seq: _Sequence) -> None:
        bs = self.block_size
        while (seq.registered + 1) * bs <= seq.computed:
            i = seq.registered
            seq.content = self.blocks.register(seq.table[i], seq.content, tuple(seq.tokens[i * bs:(i + 1) * bs]))
            seq.registered += 1

    def _sample(self, seqs: list[_Sequence], logits: torch.Tensor) -> list[TokenEvent]:
        logits = logits.float()  # (n, V)
        greedy = logits.argmax(dim=-1).tolist()  # one pass for every row; rows that sample replace theirs
        events = []
        for i, seq in enumerate(seqs):
            p = seq.params
            hold_back = len(seq.generated) < p.min_tokens and p.stop_token_ids
            token = greedy[i]
            if p.temperature != 0 or hold_back:
                row = logits[i:i + 1]  # (1, V)
                if hold_back:
                    row = row.clone()
                    row[:, sorted(p.stop_token_ids)] = float("-inf")
                token = int(sample(row, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                                   generator=seq.generator)[0])
            logprob = top = None
            if p.logprobs is not None:
                logp = torch.log_softmax(logits[i], dim=-1)  # (V,) raw logits: the model's distribution
                logprob = float(logp[token])
                if p.logprobs > 0:
                    values, ids = logp.topk(min(p.logprobs, self.vocab))
                    top = list(zip(ids.tolist(), values.tolist(), strict=True))
            seq.generated.append(token)
            seq.tokens.append(token)
            reason = None
            if token in p.stop_token_ids:
                reason = "stop"
            elif len(seq.generated) >= p.max_tokens or len(seq.tokens) >= self.max_len:
                reason = "length"
            if reason is not None:
                self.running.remove(seq)
                self._free(seq)
            events.append(self._event(seq, token, logprob, top, reason))
        return events

    def _event(self, seq: _Sequence, token: int | None, logprob: float | None, top: list | None,
               reason: str | None) -> TokenEvent:
        return TokenEvent(seq.request_id, token, logprob, top, reason is not None, reason, seq.prompt_len,
                          len(seq.generated))

    def _find(self, request_id: str) -> _Sequence | None:
        for seq in (*self.running, *self.waiting):
            if seq.request_id == request_id:
                return seq
        return None
