"""
A GPT language model whose attention is one of five kinds, each a small sibling class:

- full:    causal attention over the whole input (baseline).
- local:   causal attention inside fixed segments of `segment_len`, no memory (baseline).
- infini:  Infini-attention. Munkhdalai, Faruqui, Gopal, "Leave No Context Behind: Efficient
           Infinite Context Transformers with Infini-attention", arXiv:2404.07143.
- dilated: LongNet dilated attention. Ding et al., "LongNet: Scaling Transformers to
           1,000,000,000 Tokens", arXiv:2307.02486.
- gca:     grouped cross-attention over retrieved chunks (the DRT model). Hu et al., "Efficient
           Long-range Language Modeling with Self-supervised Causal Retrieval", arXiv:2410.01651.

Read top to bottom: config, rotary embeddings, the attention kinds, MLP, block, GPT.
Every kind takes (x, state) and returns (y, new_state), so a long input can be fed in
several calls while carrying the state, and gives the same result as one call.
Section and equation numbers in the comments: arXiv:2404.07143v1, arXiv:2307.02486v2, arXiv:2410.01651v1.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTENTION_KINDS = ('full', 'local', 'infini', 'dilated', 'gca')


@dataclass
class GPTConfig:
    vocab_size: int = 50304     # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 8
    n_embd: int = 1024
    dropout: float = 0.0
    bias: bool = False          # bias in Linear and LayerNorm layers
    attn: str = 'infini'        # one of ATTENTION_KINDS
    segment_len: int = 2048     # local / infini: attention window and memory-update period
    mem_update: str = 'linear'  # infini: 'linear' or 'delta'
    mem_feature: str = 'elu'    # infini: σ of the memory's Q and K, 'elu' (ELU+1, the paper) or 'relu' (not the paper)
    infini_local: str = 'segment'  # infini: dot-product attention 'segment' (inside the segment, the paper) or
                                   # 'sliding' (not the paper: every token sees the last segment_len tokens)
    gate_init: tuple = (0.0,)   # infini: initial gate β of each head, repeated over the heads; 0 = an even mix
    dilated_segments: tuple = (2048, 4096, 8192, 16384, 32768)  # dilated: segment lengths w_i
    dilated_rates: tuple = (1, 2, 4, 6, 12)                     # dilated: dilation rates r_i
    rope_base: float = 10000.0
    gca_window: int = 512       # gca: sliding window of every layer's self-attention (paper: 512)
    gca_chunk: int = 64         # gca: tokens per retrievable chunk (paper: 64 = 63 text tokens + a landmark)
    gca_topk: int = 8           # gca: chunks each chunk retrieves (paper: 8)
    gca_lower_layers: int = 6   # gca: layers below the retriever (paper: half); the layers above add cross-attention
    gca_gumbel: float = 1.0     # gca: scale of the Gumbel noise on retrieval scores when training (0 = none)

    def __post_init__(self):
        # Checkpoints store these as lists; tuples keep the config hashable and comparable.
        self.dilated_segments = tuple(int(w) for w in self.dilated_segments)
        self.dilated_rates = tuple(int(r) for r in self.dilated_rates)
        self.gate_init = tuple(float(b) for b in self.gate_init)
        for problem in self.problems():
            raise ValueError(problem)

    def problems(self):
        """Every way this config is invalid, each as a sentence saying what to change."""
        if self.attn not in ATTENTION_KINDS:
            yield f"attn={self.attn!r} is not an attention kind; use one of {', '.join(ATTENTION_KINDS)}"
        for name in ('vocab_size', 'n_layer', 'n_head', 'n_embd', 'segment_len'):
            if getattr(self, name) < 1:
                yield f"{name}={getattr(self, name)} must be a positive integer"
        if self.n_head >= 1 and self.n_embd % self.n_head != 0:
            yield f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
        elif self.n_head >= 1 and (self.n_embd // self.n_head) % 2 != 0:
            yield f"head size n_embd/n_head={self.n_embd // self.n_head} must be even for rotary embeddings"
        if self.attn == 'infini' and (len(self.gate_init) == 0 or self.n_head % len(self.gate_init)):
            yield (f"gate_init {self.gate_init}: n_head={self.n_head} must be a multiple of its length (β per head, "
                   f"repeated); set both, e.g. --n_head=2 --gate_init=(3,-3)")
        if self.mem_update not in ('linear', 'delta'):
            yield f"mem_update={self.mem_update!r} must be 'linear' or 'delta'"
        if self.mem_feature not in MEMORY_FEATURES:
            yield f"mem_feature={self.mem_feature!r} must be one of {', '.join(map(repr, MEMORY_FEATURES))}"
        if self.infini_local not in ('segment', 'sliding'):
            yield f"infini_local={self.infini_local!r} must be 'segment' (the paper) or 'sliding'"
        if not 0.0 <= self.dropout < 1.0:
            yield f"dropout={self.dropout} must be in [0, 1)"
        if self.attn == 'dilated':
            w, r = self.dilated_segments, self.dilated_rates
            if len(w) == 0 or len(w) != len(r):
                yield (f"dilated_segments {w} and dilated_rates {r} must be non-empty and of the same length "
                       f"(one rate per segment length)")
            elif any(b <= a for a, b in zip(w, w[1:])) or any(b < a for a, b in zip(r, r[1:])):
                yield f"dilated_segments {w} must increase and dilated_rates {r} must not decrease"
            elif r[0] != 1:
                yield f"dilated_rates must start at 1 (got {r}) so that every token is covered by some pattern"
            elif any(ri < 1 or ri > wi for wi, ri in zip(w, r)):
                yield f"each dilated rate must be between 1 and its segment length; got w={w}, r={r}"
        if self.attn == 'gca':
            yield from self.gca_problems()

    def gca_problems(self):
        for name in ('gca_window', 'gca_chunk', 'gca_topk', 'gca_lower_layers'):
            if getattr(self, name) < 1:
                yield f"{name}={getattr(self, name)} must be a positive integer"
        if self.gca_window < 2 * self.gca_chunk:
            # chunk c + 1 retrieves only chunks before c, so chunk c must be inside the window of all its tokens
            yield (f"gca_window={self.gca_window} must be at least 2 * gca_chunk = {2 * self.gca_chunk}, or some "
                   f"tokens can neither see nor retrieve the chunk before theirs; try gca_window={4 * self.gca_chunk}")
        if self.n_layer >= 2 and not 1 <= self.gca_lower_layers < self.n_layer:
            yield (f"gca_lower_layers={self.gca_lower_layers} must be between 1 and n_layer - 1 = {self.n_layer - 1} "
                   f"(the layers above it hold the cross-attention); the paper uses half: {self.n_layer // 2}")
        elif self.n_layer < 2:
            yield f"attn='gca' needs n_layer >= 2 (lower layers, then upper layers with cross-attention)"
        if self.gca_gumbel < 0:
            yield f"gca_gumbel={self.gca_gumbel} must be >= 0 (0 turns the training noise off)"

    @property
    def head_size(self):
        return self.n_embd // self.n_head


# ----------------------------------------------------------------------------------------------
# Rotary position embeddings (RoPE), rotating the two halves of each head's vector.

def rope(x, positions, base):
    """Rotate x (..., T, D) by the angles positions (T,) * base^(-2i/D)."""
    half = x.size(-1) // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float64) / half)
    angles = positions.to(torch.float64)[:, None] * inv_freq  # float64: exact even at 1M positions
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def causal_attention(q, k, v, base, window=None):
    """softmax(Q Kᵀ / √d) V after RoPE, keys at positions 0, 1, ... and the queries the last of them, each seeing
    the keys up to its own position (with a window: only the last `window` of them). Full attention over a
    cache, local attention inside a segment, gca's sliding window for a short call after cached keys."""
    q_offset, positions = k.size(-2) - q.size(-2), torch.arange(k.size(-2), device=q.device)
    q, k = rope(q, positions[q_offset:], base), rope(k, positions, base)
    if q_offset == 0 and window is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    # SDPA's is_causal aligns the mask top-left; with cached keys in front we need an explicit one.
    i, j = positions[q_offset:, None], positions[None, :]
    visible = (j <= i) if window is None else (j <= i) & (j > i - window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible)


class AttentionBase(nn.Module):
    """Q/K/V and output projections shared by every kind; subclasses define `attend`."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.n_head, self.head_size = config.n_head, config.head_size
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # fused Q, K, V
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, state=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, self.head_size).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        y, state = self.attend(q, k, v, state)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), state


# ----------------------------------------------------------------------------------------------
# full, local and sliding-window attention. Their streaming state is a cache of the keys/values (before RoPE)
# of the window the next token still sees: everything for full, the unfinished segment for local, the last
# window - 1 tokens for a sliding window (gca's self-attention, and Infini's with infini_local='sliding').

class KVCache(NamedTuple):
    k: torch.Tensor  # (B, H, t, D), before RoPE
    v: torch.Tensor


def extend_cache(cache, k, v):
    if cache is None:
        return KVCache(k, v)
    return KVCache(torch.cat((cache.k, k), dim=2), torch.cat((cache.v, v), dim=2))


def sliding_window_attention(q, k, v, window, base):
    """Row i of q, k, v (B, H, N, D; before RoPE) sees keys max(0, i - window + 1) .. i.
    Fast path: rows in blocks of `window`; block b's queries see blocks b - 1 and b, which hold its whole window,
    under one band mask, so a single SDPA call covers every block (memory O(N · window), not O(N²))."""
    B, H, N, D = q.shape
    W = window
    n_blk = -(-N // W)
    q, k, v = (F.pad(t, (0, 0, 0, n_blk * W - N)) for t in (q, k, v))  # end padding: seen by padding rows only
    k, v = (torch.cat((t.new_zeros(B, H, W, D), t), dim=2) for t in (k, v))  # a block -1, masked below
    pair = lambda t: torch.cat((t[:, :, :-W].view(B, H, n_blk, W, D), t[:, :, W:].view(B, H, n_blk, W, D)), dim=3)
    k, v = pair(k), pair(v)                                                  # (B, H, n_blk, 2W, D)
    positions = torch.arange(2 * W, device=q.device)  # query a of block b sits at W + a of its pair
    q = rope(q.view(B, H, n_blk, W, D), positions[W:], base)
    k = rope(k, positions, base)
    a, j = torch.arange(W, device=q.device)[:, None], positions[None, :]
    visible = ((j > a) & (j <= a + W)).repeat(n_blk, 1, 1)                    # (n_blk, W, 2W)
    visible[0, :, :W] = False                                                 # block -1 does not exist
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
    return y.reshape(B, H, n_blk * W, D)[:, :, :N]


def windowed_attention(q, k, v, cache, window, base):
    """Sliding-window attention of one call after the KVCache of the tokens before it (the last window - 1 of them,
    before RoPE; None at the start): each of this call's rows sees the last `window` tokens. Returns the outputs and
    the cache the next call needs."""
    T = q.size(2)
    cache = extend_cache(cache, k, v)
    t0, N = cache.k.size(2) - T, cache.k.size(2)
    if t0 > 0 and T <= window:
        y = causal_attention(q, cache.k, cache.v, base, window=window)  # one dense band mask
    else:  # placeholder queries for the cached rows, dropped after
        q = torch.cat((q.new_zeros(*q.shape[:2], t0, q.size(3)), q), dim=2)
        y = sliding_window_attention(q, cache.k, cache.v, window, base)[:, :, t0:]
    keep = min(window - 1, N)
    return y, KVCache(cache.k[:, :, N - keep:], cache.v[:, :, N - keep:])


class FullAttention(AttentionBase):
    def attend(self, q, k, v, cache):
        cache = extend_cache(cache, k, v)  # every token so far
        return causal_attention(q, cache.k, cache.v, self.config.rope_base), cache


class Segments(NamedTuple):
    """Segments of one call, folded into the batch: the queries are the last t rows of each segment."""
    q: torch.Tensor  # (B, H, n, t, D)
    k: torch.Tensor  # (B, H, n, s, D) keys of each segment from its start, s >= t (before RoPE)
    v: torch.Tensor
    n_full: int      # the first n_full segments are complete (Infini writes them to memory)
    length: int      # real query rows: n·t less the padding of the last segment

    def uncut(self, y):
        """Outputs (B, H, n, t, D) of these segments back to (B, H, length, D), the padding dropped."""
        return y.flatten(2, 3)[:, :, :self.length]


def cut_into_segments(q, k, v, cache, S):
    """What local and Infini attention share: one call's q, k, v (B, H, T, D) cut at segment boundaries into at
    most two groups of Segments, and the cache the call leaves (None at a boundary). First the segment the last
    call left unfinished (its cached keys/values before this call's first tokens); then the rest, folded into
    whole segments, the last one zero-padded (causality keeps the padding out of every real row)."""
    groups = []
    if cache is not None:
        n = min(q.size(2), S - cache.k.size(2))
        cache = extend_cache(cache, k[:, :, :n], v[:, :, :n])
        done = cache.k.size(2) == S
        groups.append(Segments(q[:, :, None, :n], cache.k[:, :, None], cache.v[:, :, None], int(done), n))
        q, k, v, cache = q[:, :, n:], k[:, :, n:], v[:, :, n:], None if done else cache
    (B, H, T, D), n_seg = q.shape, -(-q.size(2) // S)
    if T > 0:
        if T % S:
            cache = KVCache(k[:, :, T // S * S:], v[:, :, T // S * S:])
            q, k, v = (F.pad(t, (0, 0, 0, n_seg * S - T)) for t in (q, k, v))
        q, k, v = (t.view(B, H, n_seg, S, D) for t in (q, k, v))
        groups.append(Segments(q, k, v, T // S, T))
    return groups, cache


class LocalAttention(AttentionBase):
    """Local attention = causal attention inside segments of segment_len; positions restart at 0 in every
    segment (see InfiniAttention). Streaming state: the KVCache of the unfinished segment."""

    def attend(self, q, k, v, cache):
        groups, cache = cut_into_segments(q, k, v, cache, self.config.segment_len)
        y = [g.uncut(causal_attention(g.q, g.k, g.v, self.config.rope_base)) for g in groups]
        return torch.cat(y, dim=2), cache


# ----------------------------------------------------------------------------------------------
# Infini-attention (arXiv:2404.07143, §2.1; the equation numbers are those of v1, later versions renumber).
# Per head, for segment s with σ(x) = ELU(x) + 1:
#   A_dot = softmax(Q Kᵀ / √d) V, causal inside the segment                       (eq. 2)
#   A_mem = σ(Q) M_{s-1} / (σ(Q) z_{s-1})                                         (eq. 3)
#   linear: M_s = M_{s-1} + σ(K)ᵀ V,   z_s = z_{s-1} + Σ_t σ(K_t)                  (eq. 4)
#   delta:  M_s = M_{s-1} + σ(K)ᵀ (V - σ(K) M_{s-1} / (σ(K) z_{s-1}))             (eq. 5)
#   A = sigmoid(β) ⊙ A_mem + (1 - sigmoid(β)) ⊙ A_dot                              (eq. 6)
# Two departures, off by default:
# - mem_feature='relu': σ = ReLU instead of ELU + 1. ELU + 1 is never 0, so every token written adds σ(q)·σ(k) > 0
#   to the read-out's denominator and the key's share of A_mem falls as 1/length
#   (docs/recall.md#why-accuracy-falls-with-length); ReLU can give an unrelated key exactly zero weight. On the
#   passkey task it trained worse, and its filler weight did not fall (docs/recall_1m.md, "Toward 1M tokens").
# - infini_local='sliding': A_dot over the last segment_len tokens (a sliding window) instead of the segment so
#   far. At a segment boundary the paper's local attention starts afresh and the memory keeps no order, so a
#   token just past it cannot see what came right before; with short segments that breaks answers whose tokens
#   run across a boundary (docs/recall_1m.md#where-the-question-falls-in-its-segment). The memory is the paper's.

class Memory(NamedTuple):
    M: torch.Tensor  # (B, H, D, D) float32: Σ σ(K)ᵀ V over past segments
    z: torch.Tensor  # (B, H, D)    float32: Σ σ(K) over past segments


class InfiniState(NamedTuple):
    memory: Memory
    cache: Optional[KVCache]  # keys/values of the unfinished segment, None at a segment boundary
    window: Optional[KVCache] = None  # infini_local='sliding': the last segment_len - 1 tokens' keys/values


MEMORY_FEATURES = {
    'elu': lambda x: F.elu(x) + 1,  # the paper's σ
    'relu': F.relu,                 # not the paper's: a key can get exactly zero weight
}


def sigma(x, feature='elu'):
    return MEMORY_FEATURES[feature](x)


def at_least_fp32(x):
    """x in float32, or float64 if it already is (the tests compare against float64 references)."""
    return x if x.dtype == torch.float64 else x.float()


def memory_retrieve(sq, memory_M, memory_z):
    """σ(Q) M / (σ(Q) z), eq. 3. Empty memory (z = 0, hence M = 0) reads as 0, never 0/0; so does, with ReLU, a
    query that no stored key overlaps."""
    numerator = sq @ memory_M                           # (..., T, D) @ (..., D, D)
    denominator = sq @ memory_z.unsqueeze(-1)           # (..., T, 1); with ELU + 1 (> 0), 0 only when z = 0
    return numerator / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


def memory_update(memory, sk, v, rule):
    """One segment's update of (M, z): eq. 4 (linear) or eq. 5 (delta). sk = σ(K), all float32."""
    if rule == 'delta':  # store only what the memory cannot already retrieve for these keys
        v = v - memory_retrieve(sk, memory.M, memory.z)
    return Memory(memory.M + sk.transpose(-1, -2) @ v, memory.z + sk.sum(-2))


class InfiniAttention(AttentionBase):
    """Infini-attention = causal attention inside segments (infini_local='sliding', not the paper's: over the last
    segment_len tokens) + a memory read (eq. 3) mixed in by a gate (eq. 6) + a memory write (eq. 4 or 5) after every
    complete segment. Streaming state: InfiniState."""
    # Positions: the paper puts no positional encoding on the memory's Q/K (it is applied only after
    # the memory read and update), so σ(Q), σ(K) here are un-rotated; RoPE rotates Q/K for the local
    # dot-product attention only, with positions restarting at 0 in each segment (our choice, not the
    # paper's: a model trained on 5K-token inputs then runs at 1M without seeing a position >= segment_len;
    # with infini_local='sliding' only distances inside the window matter, as RoPE scores depend on i - j alone).
    # Precision: M and z accumulate in float32 even under bf16 autocast (bf16 sums overflow to inf).

    def __init__(self, config):
        super().__init__(config)
        # β per head, eq. 6; some heads may start on memory (β > 0), others on local attention (β < 0): docs/recall.md
        beta = config.gate_init * (config.n_head // len(config.gate_init))
        self.gate = nn.Parameter(torch.tensor(beta, dtype=torch.get_default_dtype()))

    def attend(self, q, k, v, state):
        if state is None:  # empty memory: M (B, H, D, D) and z (B, H, D) of zeros
            zeros = at_least_fp32(q.new_zeros(*q.shape[:2], q.size(3), q.size(3)))
            state = InfiniState(Memory(zeros, zeros[..., 0]), None)
        S, base = self.config.segment_len, self.config.rope_base
        groups, cache = cut_into_segments(q, k, v, state.cache, S)
        memory, a_mem, a_dot = state.memory, [], []
        sliding = self.config.infini_local == 'sliding'
        for g in groups:
            a, memory = self.read_and_write(g, memory)
            a_mem.append(g.uncut(a))
            if not sliding:
                a_dot.append(g.uncut(causal_attention(g.q, g.k, g.v, base)))
        if sliding:  # not the paper's: see the note above Memory
            a_dot, window = windowed_attention(q, k, v, state.window, S, base)
        else:
            a_dot, window = torch.cat(a_dot, dim=2), None
        return self.mix(torch.cat(a_mem, dim=2), a_dot), InfiniState(memory, cache, window)

    def read_and_write(self, g, memory):
        """A_mem of every segment of the group, each reading the memory of all complete segments before it,
        and the memory after the group's complete segments."""
        with torch.autocast(g.q.device.type, enabled=False):
            n_full, feature = g.n_full, self.config.mem_feature
            sq, sk = sigma(at_least_fp32(g.q), feature), sigma(at_least_fp32(g.k[:, :, :n_full]), feature)
            vf = at_least_fp32(g.v[:, :, :n_full])  # sk, vf: the complete segments only
            if self.config.mem_update == 'linear':
                # Fast path: the memory segment s reads is M_0 plus the exclusive prefix sum over segments of
                # the per-segment updates σ(K_j)ᵀ V_j (and Σ σ(K_j) for z): one cumsum, no loop over segments.
                updates_M = torch.cumsum(sk.transpose(-1, -2) @ vf, dim=2)     # (B, H, n_full, D, D)
                updates_z = torch.cumsum(sk.sum(-2), dim=2)                    # (B, H, n_full, D)
                past_M = torch.cat((torch.zeros_like(memory.M[:, :, None]), updates_M), 2) + memory.M[:, :, None]
                past_z = torch.cat((torch.zeros_like(memory.z[:, :, None]), updates_z), 2) + memory.z[:, :, None]
            else:
                # delta's update depends on the memory before it: a scan over segments (batched matmuls).
                # unbind, not sk[:, :, s]: the backward of each index would write a full-size zero gradient,
                # n_full times, which made a 147K-token step's backward quadratic (minutes instead of seconds).
                past = [memory]
                for sk_s, v_s in zip(sk.unbind(2), vf.unbind(2)):
                    past.append(memory_update(past[-1], sk_s, v_s, 'delta'))
                past_M, past_z = torch.stack([m.M for m in past], 2), torch.stack([m.z for m in past], 2)
            n_seg = sq.size(2)  # a trailing unfinished segment reads the memory of all complete ones
            a_mem = memory_retrieve(sq, past_M[:, :, :n_seg], past_z[:, :, :n_seg])
        return a_mem, Memory(past_M[:, :, n_full], past_z[:, :, n_full])

    def mix(self, a_mem, a_dot):
        """eq. 6: A = sigmoid(β) ⊙ A_mem + (1 - sigmoid(β)) ⊙ A_dot, β = self.gate, one per head."""
        g = torch.sigmoid(self.gate).view(-1, *([1] * (a_dot.dim() - 2)))  # broadcast over (H, ..., T, D)
        return (g * a_mem + (1 - g) * at_least_fp32(a_dot)).to(a_dot.dtype)


# ----------------------------------------------------------------------------------------------
# LongNet dilated attention (arXiv:2307.02486v2; §2.2 dilated attention, §2.3 multi-head). For each pattern
# (w_i, r_i): split the sequence into segments of w_i and sparsify each to the rows at an offset mod r_i
# (§2.2: Q̃_i = [Q_{iw}, Q_{iw+r}, Q_{iw+2r}, ...], likewise K̃_i, Ṽ_i; §2.3: head j uses the offset s_j = j mod r,
# see head_offsets for fewer heads than r), and attend densely and causally among the kept rows. Patterns are
# mixed per row by their softmax denominators s_i (§2.2: α_i = s_i / Σ_j s_j):
#   O = Σ_i α_i O_i = Σ_i softmax_i(lse_i) O_i,   lse_i = log s_i,
# and a pattern that does not cover a row adds nothing to it. The gradient flows through the mixing
# weights too (the official code detaches them, which biases its gradient).
# Equivalently, O is ONE softmax attention where key j has weight c_ij·exp(q_i·k_j/√d), c_ij being the
# number of patterns that cover both i and j; the tests use that as their reference.
# Rates that do not divide w (the paper's 6 and 12 with w = 2^k): each segment is padded to a multiple
# of r and the padding masked out, so the paper's language-model schedule runs as published.

class DilatedAttention(AttentionBase):
    """Streaming state: the keys/values since the last multiple of the window L = lcm(w_i), before RoPE
    (every pattern's segments restart there). A call recomputes the rows of that window it was handed."""

    def __init__(self, config):
        super().__init__(config)
        self.window = math.lcm(*config.dilated_segments)

    def attend(self, q, k, v, state):
        cache = extend_cache(state, k, v)
        t0, T = cache.k.size(2) - q.size(2), cache.k.size(2)
        if t0 > 0:  # pad the queries with placeholders for the cached rows, then drop those outputs
            q = torch.cat((q.new_zeros(*q.shape[:2], t0, q.size(3)), q), dim=2)
        # RoPE positions restart with each window (scores depend only on i - j inside a window).
        positions = torch.arange(T, device=q.device) % self.window
        q, k = rope(q, positions, self.config.rope_base), rope(cache.k, positions, self.config.rope_base)
        y = mix_patterns([dilated_pattern(q, k, cache.v, min(w, T), r)  # w clipped to T; rates[0] = 1 covers all
                          for w, r in zip(self.config.dilated_segments, self.config.dilated_rates)], q.dtype)
        keep = (T // self.window) * self.window  # the finished windows never matter again
        return y[:, :, t0:], KVCache(cache.k[:, :, keep:], cache.v[:, :, keep:])


def mix_patterns(patterns, dtype):
    """O = Σ_i softmax_i(lse_i) O_i = Σ_i s_i O_i / Σ_j s_j over the patterns' (O_i, lse_i); -inf -> weight 0."""
    outputs, lses = zip(*patterns)
    weights = torch.softmax(torch.stack(lses), dim=0)
    return (weights.unsqueeze(-1) * torch.stack(outputs)).sum(0).to(dtype)


def head_offsets(H, r, device):
    """The offsets inside a segment that each head keeps for rate r: (H, n) and which of them are used.
    LongNet gives head j the offset s_j = j mod r (§2.3), so with fewer heads than r the residues H..r-1
    are queried by no head at all. Our change: head h keeps h, h + H, h + 2H, ... < r, each offset an
    attention of its own (a row still sees w/r keys); with H >= r this is exactly the paper's offset."""
    n = min(H, r)
    offsets = torch.arange(H, device=device)[:, None] % n + n * torch.arange(-(-r // n), device=device)
    return offsets, offsets < r


def attend_kept_rows(qs, ks, vs, allowed):
    """softmax(Q Kᵀ / √D) V of gathered rows under a boolean mask; returns O and its log-denominator lse.
    Every row must allow at least one key (an all -inf row would give 0/0)."""
    scores = at_least_fp32(qs @ ks.transpose(-1, -2)) / math.sqrt(qs.size(-1))
    scores = scores.masked_fill(~allowed, float('-inf'))
    lse = torch.logsumexp(scores, dim=-1)
    return torch.exp(scores - lse.unsqueeze(-1)).to(vs.dtype) @ vs, lse


def scatter_rows(o, lse, index, valid, T):
    """Kept rows o (B, H, n, D) and lse (B, H, n) back to their positions index (H, n) among T rows.
    Invalid (padding) rows go to a dropped extra row; rows nobody covers keep O = 0 and lse = -inf."""
    B, H, n, D = o.shape
    index = torch.where(valid, index, T)
    out = o.new_zeros(B, H, T + 1, D).scatter(2, index[None, :, :, None].expand(B, H, n, D), o)
    out_lse = lse.new_full((B, H, T + 1), float('-inf')).scatter(
        2, index[None].expand(B, H, n), lse.masked_fill(~valid, float('-inf')))
    return out[:, :, :T], out_lse[:, :, :T]


def dilated_pattern(q, k, v, w, r):
    """One pattern (w, r): returns each row's output O_i and its log-denominator lse_i, zero and -inf
    on rows the pattern does not cover. Exactly differentiable, including through lse."""
    B, H, T, D = q.shape
    n_seg, n_kept = -(-T // w), -(-w // r)  # kept rows per segment and offset (padded: r need not divide w)
    offsets, used = head_offsets(H, r, q.device)                                            # (H, n_off)
    rows = offsets[:, :, None] + r * torch.arange(n_kept, device=q.device)                   # (H, n_off, n_kept)
    index = torch.arange(n_seg, device=q.device)[:, None, None] * w + rows[:, None]      # (H, n_seg, n_off, n_kept)
    valid = used[:, None, :, None] & (rows[:, None] < w) & (index < T)  # the rest is padding
    index, valid = index.reshape(H, -1, n_kept), valid.reshape(H, -1, n_kept)  # groups: (segment, offset) pairs
    flat = torch.where(valid, index, 0).reshape(H, -1)
    gather = lambda t: t.gather(2, flat[None, :, :, None].expand(B, H, -1, D)).view(B, H, -1, n_kept, D)
    # Dense causal attention among a group's kept rows (in position order, so causal = j <= i). Padding rows
    # see only themselves, so that no row is all -inf; they are dropped by scatter_rows.
    causal = torch.ones(n_kept, n_kept, dtype=torch.bool, device=q.device).tril()
    allowed = causal & (valid[:, :, None, :] | torch.eye(n_kept, dtype=torch.bool, device=q.device))
    o, lse = attend_kept_rows(gather(q), gather(k), gather(v), allowed)
    return scatter_rows(o.view(B, H, -1, D), lse.view(B, H, -1), index.reshape(H, -1), valid.reshape(H, -1), T)


# ----------------------------------------------------------------------------------------------
# Grouped cross-attention (GCA), the attention of DRT (arXiv:2410.01651v1). The layers are split:
#   lower layers (gca_lower_layers):  sliding-window self-attention only;
#   upper layers:                     sliding-window self-attention, then GCA to retrieved chunks, then the MLP.
# The input is cut into chunks of Lc = gca_chunk tokens. From the lower layers' output h, once per model:
#   chunk summary   e_c = mean_{t in c} LN(h_t)          (our stand-in for the paper's landmark token, see below)
#   retrieval       q_c = W_q e_c,  k_c = W_k e_c,  s_{c,j} = q_c · k_j / √C  for j < c
#   neighbours      chunk c + 1 uses the top-k chunks j < c by s_{c,j} (Gumbel noise when training)
#   chunk memory    K_j, V_j = W_kv LN(h_t) for the tokens t of chunk j, one projection shared by all upper layers
# and in every upper layer, for a token x_t of chunk c + 1 with neighbours j_1..j_k:
#   o_i = softmax(Q_t K_{j_i}ᵀ / √D) V_{j_i}      one softmax per neighbour (the "group")
#   GCA(x_t) = Σ_i w_i o_i,   w = softmax_i(s_{c, j_i})
# The weights w are in the forward pass, so the LM loss trains the retriever: no retrieval labels needed.
#
# Our choices (not the paper's):
# - Chunk summary: the paper appends a landmark token to every 63 text tokens and encodes each chunk with a small
#   bidirectional encoder. A mean keeps the token stream unchanged (no tokens to insert and strip in training,
#   eval, passkey or streaming: position t is token t for every kind), at the cost of a cruder summary. A chunk
#   is summarised once finished, so the pooling is causal: chunk c's summary is used from chunk c + 1 on.
# - Chunk K/V: one linear projection of LN(h) shared by the upper layers, without the paper's chunk encoder.
# - No RoPE in the cross-attention: neighbours come from arbitrary distances; the order of a chunk's tokens is
#   already in h (causal lower layers). The sliding window uses RoPE inside each block pair (relative, so a
#   model trained at 512 tokens meets no new distance at 1M).
# - Residual, not MLP input: DRT feeds the GCA output to the upper layer's MLP; we add it to the residual stream,
#   as RETRO does: while the retriever is still random the small-initialised branch leaves each upper layer a plain
#   sliding-window block, so training starts as a local LM; the MLP still reads the GCA output, inside the sum.
# - No null slot (DRT's way for a token to ignore its neighbours): a token ignores retrieval through the residual
#   branch instead (c_proj can output ~0). A null slot is cheap but untested here; it waits for an experiment.

class SlidingWindowAttention(AttentionBase):
    """Every token sees the last gca_window tokens, itself included: the self-attention of every gca layer.
    Streaming state: a KVCache of the last gca_window - 1 tokens (before RoPE), all that the next token sees."""

    def attend(self, q, k, v, state):
        return windowed_attention(q, k, v, state, self.config.gca_window, self.config.rope_base)


@dataclass
class ChunkBuffers:
    """Room for the finished chunks: capacity N >= filled rows along dim 1, of which rows [:filled] hold chunks.
    Shared by a ChunkStore and the stores that extend it (grow_store writes the new chunks in place)."""
    keys: torch.Tensor     # (B, N, C)        retrieval key k_j of each finished chunk
    queries: torch.Tensor  # (B, N, C)        retrieval query q_c of each finished chunk (it picks chunk c + 1's)
    k: torch.Tensor        # (B, N, H, Lc, D) per-token keys of the finished chunks
    v: torch.Tensor        # (B, N, H, Lc, D) per-token values
    filled: int            # rows written, by this store or by any store that extended it

    def tensors(self):
        return self.keys, self.queries, self.k, self.v


class ChunkStore(NamedTuple):
    """The past that retrieval draws on; unlike Infini's memory it keeps everything and grows with the input:
    (2 + 2/Lc)·C numbers per token (K/V rows shared by the upper layers; a retrieval key and query per chunk).
    Only `keys`/`queries` are needed to rank; `k`/`v` may live on another device (CPU, see kv_to): only the
    retrieved chunks are indexed and moved (ChunkRetriever.forward). The n finished chunks are the first n rows
    of buffers that double when full, so a call writes only its own chunks (grow_store)."""
    buffers: ChunkBuffers
    n: int                 # finished chunks: rows [:n] of the buffers
    tail: torch.Tensor     # (B, t, C) LN(h) of the unfinished chunk, t < Lc

    # the finished chunks, views of the buffers' first n rows
    keys = property(lambda self: self.buffers.keys[:, :self.n])        # (B, n, C)
    queries = property(lambda self: self.buffers.queries[:, :self.n])  # (B, n, C)
    k = property(lambda self: self.buffers.k[:, :self.n])              # (B, n, H, Lc, D)
    v = property(lambda self: self.buffers.v[:, :self.n])              # (B, n, H, Lc, D)

    def nbytes(self):
        """Bytes held for the finished chunks and the tail; the spare capacity is not counted (untouched, the
        operating system has not given it memory yet)."""
        return sum(t.numel() * t.element_size() for t in (self.keys, self.queries, self.k, self.v, self.tail))

    def kv_to(self, device):
        """This store with k and v on `device`, e.g. the CPU to spare a GPU's memory: later calls append there and
        move only the retrieved chunks to the model's device."""
        buffers = ChunkBuffers(self.keys, self.queries, self.k.to(device), self.v.to(device), self.n)
        return ChunkStore(buffers, self.n, self.tail)


def grow_store(store, new, tail):
    """The store after a call that finished the chunks `new` (ChunkBuffers holding just them) and left `tail`.
    The new chunks go into the free rows of the buffers; when none are left, the n rows are copied into buffers of
    twice the capacity: log2(n) copies over a stream of n chunks, amortised O(1) per chunk (a torch.cat per call
    would copy the whole store at every call: O(n) per call, O(n²) per stream)."""
    if store is None:
        return ChunkStore(new, new.filled, tail)  # the first call's chunks are the first rows
    n, m, buffers = store.n, new.filled, store.buffers
    if m == 0:
        return ChunkStore(buffers, n, tail)
    # Fresh buffers also where writing in place would be wrong: another continuation of this store has written
    # after row n already (one prompt state, several samples); autograd may have saved these rows (a gradient
    # through the stream needs them as they were: copy at every call, as cat did); or they are inference tensors
    # and this is not inference mode (torch refuses to change them).
    grad = torch.is_grad_enabled() and (new.keys.requires_grad or buffers.keys.requires_grad)
    frozen = buffers.keys.is_inference() and not torch.is_inference_mode_enabled()
    if n + m > buffers.keys.size(1) or buffers.filled != n or grad or frozen:
        capacity = n + m if grad else max(2 * buffers.keys.size(1), n + m)
        old, buffers = buffers, ChunkBuffers(*(t.new_empty(t.size(0), capacity, *t.shape[2:])
                                               for t in buffers.tensors()), filled=n)
        for t, o in zip(buffers.tensors(), old.tensors()):
            t[:, :n] = o[:, :n]
    for t, x in zip(buffers.tensors(), new.tensors()):
        t[:, n:n + m] = x  # k/v may be on another device (kv_to); the first call set the dtype
    buffers.filled = n + m
    return ChunkStore(buffers, n + m, tail)


class Retrieved(NamedTuple):
    """What the upper layers of one call need: the neighbours of each of the m consecutive chunks that the
    call's tokens lie in. Gathered once, shared by all upper layers (one copy, one transfer from the store)."""
    k: torch.Tensor        # (B, m, top_k, H, Lc, D) the neighbours' per-token keys
    v: torch.Tensor        # (B, m, top_k, H, Lc, D) and values
    weights: torch.Tensor  # (B, m, top_k) w = softmax of the selected scores; 0 for an empty slot
    offset: int            # position of the call's first token inside its chunk


class ChunkRetriever(nn.Module):
    """Between the lower and the upper layers: adds finished chunks to the store and picks each chunk's
    neighbours. One per model (the paper retrieves once and shares the result across the upper layers)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        C = config.n_embd
        self.ln = nn.LayerNorm(C, bias=config.bias)
        self.c_query = nn.Linear(C, C, bias=config.bias)  # W_q: a chunk asking for its successor's neighbours
        self.c_key = nn.Linear(C, C, bias=config.bias)    # W_k: a chunk being asked for
        self.c_kv = nn.Linear(C, 2 * C, bias=config.bias)  # the chunk memory's K/V, shared by the upper layers

    def forward(self, h, store):
        c, (B, T, C) = self.config, h.shape
        Lc, H, D = c.gca_chunk, c.n_head, c.head_size
        t0 = 0 if store is None else store.n * Lc + store.tail.size(1)  # tokens before this call
        u = self.ln(h) if store is None else torch.cat((store.tail, self.ln(h)), dim=1)  # from the unfinished chunk on
        n_new = u.size(1) // Lc                             # chunks this call finishes
        done = u[:, :n_new * Lc].view(B, n_new, Lc, C)
        e = done.mean(2)                                    # chunk summaries e_c, (B, n_new, C)
        k, v = self.c_kv(done).view(B, n_new, Lc, 2, H, D).permute(3, 0, 1, 4, 2, 5)  # 2 x (B, n_new, H, Lc, D)
        # The first call sets the store's dtype (bf16 under autocast) and each tensor stays on its device: move
        # k and v of a returned state to the CPU once (ChunkStore.kv_to) and later calls append there.
        store = grow_store(store, ChunkBuffers(self.c_key(e), self.c_query(e), k, v, n_new), u[:, n_new * Lc:])
        first, last = t0 // Lc, (t0 + T - 1) // Lc          # chunks holding this call's tokens
        chunks = torch.arange(first, last + 1, device=h.device)
        index, weights = self.retrieve(store.queries, store.keys, chunks, first)
        batch, index = torch.arange(B, device=store.k.device)[:, None, None], index.to(store.k.device)
        kn, vn = (t[batch, index].to(h.device) for t in (store.k, store.v))  # (B, m, top_k, H, Lc, D)
        return Retrieved(kn, vn, weights, t0 - first * Lc), store

    def retrieve(self, queries, keys, chunks, first=0):
        """Neighbours of each chunk m in `chunks`: the top-k chunks j < m - 1 by s_{m-1, j}, and their weights.
        Chunk m - 1 is finished before chunk m starts and so is every j < m - 1: nothing unfinished is ranked.
        `first` <= every m, when the caller knows it (a Python int: reading it from `chunks` would wait for the GPU):
        the columns j < first - 1 are allowed for every chunk and need no mask."""
        B, n, C = keys.shape
        top_k = min(self.config.gca_topk, n)
        if top_k == 0:  # no chunk finished yet
            return chunks.new_zeros(B, len(chunks), 0), keys.new_zeros(B, len(chunks), 0)
        asking = queries[:, (chunks - 1).clamp(min=0)]                       # q_{m-1}, (B, m, C)
        lo = max(0, first - 1)                                               # j < lo is allowed for every chunk m
        allowed = torch.arange(lo, n, device=keys.device) < (chunks[:, None] - 1)  # (m, n - lo): j < m - 1
        noise = None
        if self.training and self.config.gca_gumbel > 0:
            # Gumbel top-k = sampling k chunks without replacement ∝ exp(s / gumbel): explore beyond the current
            # favourites, as the paper does in training. The noise picks the chunks only; w uses the clean scores.
            dtype = torch.float64 if keys.dtype == torch.float64 else torch.float32  # that of the scores
            u = torch.rand(B, len(chunks), n, device=keys.device, dtype=dtype)
            noise = -self.config.gca_gumbel * torch.log(-torch.log(u.clamp(min=1e-20)))
        # The (B, m, n) scores are the one cost that grows with the stream. Touch them as few times as possible
        # (1/√C applied to the queries, the mask to the columns it can change), a few batch rows at a time: all rows
        # at once would be a fresh block paged in at every call, 1 GiB for 16 prompts at 1M in calls of 4,096.
        step = max(1, (1 << 22) // (len(chunks) * n))                        # rows per block: <= 4M scores
        top, selected = [], []
        for rows in (slice(b, b + step) for b in range(0, B, step)):
            # Scores and noise in float32 even under bf16 autocast: bf16 keeps 8 bits of mantissa, so nearby scores
            # tie at the k-th place and the noise's largest values are capped, and the top-k sets come out different.
            with torch.autocast(keys.device.type, enabled=False):
                scores = (at_least_fp32(asking[rows]) / math.sqrt(C)) @ at_least_fp32(keys[rows]).transpose(1, 2)
            scores[..., lo:].masked_fill_(~allowed, float('-inf'))          # s_{m-1,j}, (b, m, n)
            ranked = scores.detach() if noise is None else scores.detach() + noise[rows]
            top.append(ranked.topk(top_k, dim=-1).indices)                   # (b, m, top_k), best first
            selected.append(scores.gather(-1, top[-1]))
        top, selected = torch.cat(top), torch.cat(selected)
        valid = top < (chunks[:, None] - 1)                                  # slots beyond the j < m - 1 chunks
        selected = selected.masked_fill(~valid, torch.finfo(selected.dtype).min)
        weights = torch.softmax(selected, dim=-1) * valid                    # w; all 0 for chunks 0 and 1
        return torch.where(valid, top, 0), weights                           # empty slots point at chunk 0, weight 0


def grouped_cross_attention(q, r, Lc):
    """q (B, H, T, D): queries of the call's T tokens. Returns Σ_i w_i softmax(Q K_{j_i}ᵀ / √D) V_{j_i}, (B, H, T, D).
    Fast path: the tokens fold into (chunk, neighbour) pairs, each a batch entry of one SDPA call without mask
    (a neighbour is a finished chunk, wholly visible); the top_k outputs are then summed with the weights."""
    B, H, T, D = q.shape
    m, top_k = r.weights.shape[1:]
    if top_k == 0:
        return torch.zeros_like(q)
    pad = r.offset  # align the rows to chunk boundaries; padding rows are dropped
    q = F.pad(q, (0, 0, pad, m * Lc - pad - T)).view(B, H, m, Lc, D).transpose(1, 2)  # (B, m, H, Lc, D)
    q = q[:, :, None].expand(-1, -1, top_k, -1, -1, -1)                                # (B, m, top_k, H, Lc, D)
    fold = lambda t: t.reshape(B * m * top_k, H, Lc, D)  # 4-D, so that SDPA may pick a fused kernel on the GPU
    o = F.scaled_dot_product_attention(fold(q), fold(r.k), fold(r.v)).view(B, m, top_k, H, Lc, D)  # a softmax each
    y = torch.einsum('bmk,bmkhsd->bhmsd', r.weights.to(o.dtype), o)                   # Σ_i w_i o_i
    return y.reshape(B, H, m * Lc, D)[:, :, pad:pad + T]


class GroupedCrossAttention(nn.Module):
    """The GCA sublayer of an upper layer: its own queries, the store's shared keys/values."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, retrieved):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.config.n_head, self.config.head_size).transpose(1, 2)
        y = grouped_cross_attention(q, retrieved, self.config.gca_chunk).transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


ATTENTION = {'full': FullAttention, 'local': LocalAttention, 'infini': InfiniAttention, 'dilated': DilatedAttention,
             'gca': SlidingWindowAttention}  # gca's upper layers add a GroupedCrossAttention sublayer (Block)


# ----------------------------------------------------------------------------------------------
# The transformer.

class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block; it does not know which attention kind it holds. With cross=True (gca's upper
    layers) a grouped cross-attention sublayer to the retrieved chunks sits between attention and MLP (DRT)."""

    def __init__(self, config, cross=False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = ATTENTION[config.attn](config)
        if cross:
            self.ln_x = nn.LayerNorm(config.n_embd, bias=config.bias)
            self.cross = GroupedCrossAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, state=None, retrieved=None):
        a, state = self.attn(self.ln_1(x), state)
        x = x + a
        if retrieved is not None:  # added to the residual stream, not fed to the MLP as in DRT: see the GCA notes
            x = x + self.cross(self.ln_x(x), retrieved)
        return x + self.mlp(self.ln_2(x)), state


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # no position table: RoPE in attention
        self.drop = nn.Dropout(config.dropout)
        # gca: the retriever sits between the lower layers and the upper ones, which get cross-attention
        self.n_lower = config.gca_lower_layers if config.attn == 'gca' else config.n_layer
        self.blocks = nn.ModuleList(Block(config, cross=i >= self.n_lower) for i in range(config.n_layer))
        self.retriever = ChunkRetriever(config) if config.attn == 'gca' else None
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of residual projections, as GPT-2
            if name.endswith('c_proj.weight'):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, state=None, last_logits=None):
        """Returns (logits, loss, state). `state` carries memory/caches between calls (None = empty);
        targets of -1 are ignored; last_logits=k runs the LM head on the last k positions only.
        The state is a list with one entry per layer, plus the ChunkStore last for gca."""
        x = self.drop(self.wte(idx))
        state = state if state is not None else [None] * (len(self.blocks) + (self.retriever is not None))
        new_state, retrieved = [], None
        for i, (block, layer_state) in enumerate(zip(self.blocks, state)):
            if i == self.n_lower:  # gca: the lower layers' output fills the store and picks every chunk's neighbours
                retrieved, store = self.retriever(x, state[-1])
            x, layer_state = block(x, layer_state, retrieved)
            new_state.append(layer_state)
        if self.retriever is not None:
            new_state.append(store)
        x = self.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            logits_fp32 = at_least_fp32(logits.reshape(-1, logits.size(-1)))
            loss = F.cross_entropy(logits_fp32, targets.reshape(-1), ignore_index=-1)
            return logits, loss, new_state
        if last_logits is not None:
            x = x[:, x.size(1) - last_logits:]
        return self.lm_head(x), None, new_state

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def configure_optimizers(self, weight_decay, learning_rate, gate_lr, betas, device_type):
        """AdamW; decay matrices only. The Infini gates get their own lr and no decay: with the common
        lr and decay they stay frozen near sigmoid(0) = 0.5 (seen in Hugging Face's reproduction)."""
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        gates = [p for n, p in params.items() if n.endswith('.gate')]
        decay = [p for n, p in params.items() if p.dim() >= 2]
        no_decay = [p for n, p in params.items() if p.dim() < 2 and not n.endswith('.gate')]
        groups = [{'params': decay, 'weight_decay': weight_decay, 'lr_scale': 1.0},
                  {'params': no_decay, 'weight_decay': 0.0, 'lr_scale': 1.0}]
        if gates:
            groups.append({'params': gates, 'weight_decay': 0.0, 'lr_scale': gate_lr / learning_rate})
        for g in groups:
            g['lr'] = learning_rate * g['lr_scale']
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')

    def attention_flops_per_token(self, seq_len):
        """Forward matmul FLOPs of attention scores and weighted sums per token, all layers, causal-counted."""
        c, T = self.config, seq_len
        if c.attn == 'full':
            keys = T / 2
        elif c.attn == 'infini' and c.infini_local == 'sliding' or c.attn == 'gca':
            W = min(c.segment_len if c.attn == 'infini' else c.gca_window, T)
            keys = W - W * W / (2 * T)  # a sliding window of W keys, fewer for the first W tokens
        elif c.attn in ('local', 'infini'):
            keys = min(c.segment_len, T) / 2
        else:  # a head queries max(H, r)/(H·r) of the rows (1/r if H >= r, head_offsets), each seeing ~(w/r)/2 keys
            keys = sum(min(w, T) / r / 2 * max(c.n_head, r) / (c.n_head * r)
                       for w, r in zip(c.dilated_segments, c.dilated_rates))
        flops = 2 * 2 * keys * c.n_embd
        if c.attn == 'infini':  # memory read σ(Q)M and update σ(K)ᵀV, D×D per head and token
            flops += 2 * 2 * c.n_embd * c.head_size
        flops = c.n_layer * flops
        if c.attn == 'gca':  # upper layers: k neighbours of S tokens each; once: a chunk's scores against ~n/2 chunks
            flops += (c.n_layer - c.gca_lower_layers) * 2 * 2 * c.gca_topk * c.gca_chunk * c.n_embd
            flops += 2 * c.n_embd * (T / c.gca_chunk / 2) / c.gca_chunk
        return flops

    def flops_per_token(self, seq_len):
        """Training FLOPs per token: 6 per parameter (forward + backward) plus 3x the attention's forward."""
        return 6 * self.num_params() + 3 * self.attention_flops_per_token(seq_len)

    def estimate_mfu(self, tokens_per_second, peak_flops, seq_len):
        """Model FLOPs utilisation: achieved training FLOP/s over the device's peak (e.g. 989e12, H100 bf16)."""
        return self.flops_per_token(seq_len) * tokens_per_second / peak_flops
