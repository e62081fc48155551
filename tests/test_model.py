"""model.py against slow, literal float64 references written straight from the papers' equations."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from model import ATTENTION, GPT, GPTConfig, Memory, memory_retrieve, memory_update, sigma

KINDS = ['full', 'local', 'infini', 'dilated']
INFINI_VARIANTS = {'infini-delta': dict(mem_update='delta'), 'infini-relu': dict(mem_feature='relu'),
                   'infini-sliding': dict(infini_local='sliding')}


@pytest.fixture(autouse=True)
def float64_by_default():
    """The references and the comparisons run in float64; restore the default for other test files."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def tiny_config(attn, **kw):
    base = dict(vocab_size=61, n_layer=2, n_head=4, n_embd=32, attn=attn, segment_len=8,
                dilated_segments=(4, 8, 16), dilated_rates=(1, 2, 3))  # 3 divides neither 4, 8 nor 16
    return GPTConfig(**{**base, **kw})


def tiny_config_of(kind):
    """One of KINDS, or an Infini variant ('infini-delta', 'infini-relu', 'infini-sliding')."""
    return tiny_config(kind.split('-')[0], **INFINI_VARIANTS.get(kind, {}))


# ---------------------------------------------------------------------------------------------
# Literal references, one query row at a time where it helps reading.

def ref_rope(x, positions, base=10000.0):
    """Rotate each pair (x_i, x_{i+D/2}) by the angle position * base^(-i/(D/2))."""
    D = x.size(-1)
    out = x.clone()
    for t, pos in enumerate(positions):
        for i in range(D // 2):
            theta = pos * base ** (-i / (D // 2))
            a, b = x[..., t, i], x[..., t, i + D // 2]
            out[..., t, i] = a * math.cos(theta) - b * math.sin(theta)
            out[..., t, i + D // 2] = a * math.sin(theta) + b * math.cos(theta)
    return out


def ref_causal_softmax_attention(q, k, v):
    """A_dot = softmax(Q Kᵀ / √d) V with a causal mask, via explicit scores."""
    T, D = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))
    return torch.softmax(scores, dim=-1) @ v


def split_heads(attn, x):
    B, T, C = x.shape
    q, k, v = attn.c_attn(x).split(C, dim=2)
    heads = lambda t: t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2)
    return heads(q), heads(k), heads(v)


def merge_heads(attn, y):
    B, H, T, D = y.shape
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, H * D))


def ref_memory_read(sq, M, z):
    """σ(q)M / σ(q)z per query row; 0 where σ(q)z = 0 (an empty memory, or with ReLU no stored key sharing a
    dimension with the query)."""
    out = torch.zeros(*sq.shape[:-1], M.size(-1), dtype=sq.dtype)
    for b, h, t in itertools.product(*(range(n) for n in sq.shape[:3])):
        denominator = sq[b, h, t] @ z[b, h]
        if denominator > 0:
            out[b, h, t] = (sq[b, h, t] @ M[b, h]) / denominator
    return out


def ref_window_attention(q, k, v, window):
    """Row i attends to keys i - window + 1 .. i (those that exist), RoPE at absolute positions, one row at a time."""
    T, D = q.size(-2), q.size(-1)
    q, k = ref_rope(q, range(T)), ref_rope(k, range(T))
    rows = []
    for i in range(T):
        keys = list(range(max(0, i - window + 1), i + 1))
        scores = (q[..., i:i + 1, :] @ k[..., keys, :].transpose(-1, -2)) / math.sqrt(D)
        rows.append(torch.softmax(scores, dim=-1) @ v[..., keys, :])
    return torch.cat(rows, dim=-2)


def ref_infini(attn, x, rule):
    """Infini-attention, a Python loop over segments (the last one may be shorter). With infini_local='sliding'
    (not the paper) A_dot is every token's window of the last segment_len tokens, across segment boundaries."""
    S = attn.config.segment_len
    sigma = {'elu': lambda t: F.elu(t) + 1, 'relu': lambda t: t.clamp(min=0)}[attn.config.mem_feature]
    q, k, v = split_heads(attn, x)
    B, H, T, D = q.shape
    M, z = torch.zeros(B, H, D, D), torch.zeros(B, H, D)
    gate = torch.sigmoid(attn.gate).view(1, H, 1, 1)
    window = ref_window_attention(q, k, v, S) if attn.config.infini_local == 'sliding' else None
    outputs = []
    for start in range(0, T, S):
        qs, ks, vs = q[:, :, start:start + S], k[:, :, start:start + S], v[:, :, start:start + S]
        positions = list(range(qs.size(2)))  # positions restart in every segment
        if window is None:
            a_dot = ref_causal_softmax_attention(ref_rope(qs, positions), ref_rope(ks, positions), vs)
        else:
            a_dot = window[:, :, start:start + S]
        a_mem = ref_memory_read(sigma(qs), M, z)
        outputs.append(gate * a_mem + (1 - gate) * a_dot)
        if qs.size(2) == S:  # only complete segments are written to memory
            new_v = vs - ref_memory_read(sigma(ks), M, z) if rule == 'delta' else vs
            M = M + sigma(ks).transpose(-1, -2) @ new_v
            z = z + sigma(ks).sum(-2)
    return merge_heads(attn, torch.cat(outputs, dim=2))


def ref_local(attn, x):
    S = attn.config.segment_len
    q, k, v = split_heads(attn, x)
    outputs = []
    for start in range(0, q.size(2), S):
        qs, ks, vs = q[:, :, start:start + S], k[:, :, start:start + S], v[:, :, start:start + S]
        positions = list(range(qs.size(2)))
        outputs.append(ref_causal_softmax_attention(ref_rope(qs, positions), ref_rope(ks, positions), vs))
    return merge_heads(attn, torch.cat(outputs, dim=2))


def ref_full(attn, x):
    q, k, v = split_heads(attn, x)
    positions = list(range(q.size(2)))
    return merge_heads(attn, ref_causal_softmax_attention(ref_rope(q, positions), ref_rope(k, positions), v))


def ref_head_offsets(h, H, r):
    """LongNet §2.3 (arXiv:2307.02486v2): head j keeps the rows at offset s_j = j mod r of each segment.
    Our coverage change (model.head_offsets): with fewer heads than r, head h also keeps h + H, h + 2H, ... < r,
    each offset attended on its own, so that every residue is queried by some head."""
    return [h % r] if H >= r else list(range(h, r, H))


def ref_dilated(attn, x):
    """LongNet: per pattern, gather / attend / scatter with explicit denominators s_i, then
    O = Σ_i s_i O_i / Σ_i s_i, all per head and query row."""
    c = attn.config
    q, k, v = split_heads(attn, x)
    B, H, T, D = q.shape
    positions = list(range(T))
    q, k = ref_rope(q, positions), ref_rope(k, positions)
    numerator, denominator = torch.zeros(B, H, T, D), torch.zeros(B, H, T, 1)
    for w, r in zip(c.dilated_segments, c.dilated_rates):
        w = min(w, T)
        for h in range(H):
            for offset in ref_head_offsets(h, H, r):
                for seg_start in range(0, T, w):
                    kept = [p for p in range(seg_start, min(seg_start + w, T)) if (p - seg_start) % r == offset]
                    for a, i in enumerate(kept):
                        keys = kept[:a + 1]  # causal among the kept rows
                        scores = torch.stack([(q[:, h, i] * k[:, h, j]).sum(-1) for j in keys], -1) / math.sqrt(D)
                        s_i = scores.exp().sum(-1, keepdim=True)
                        o_i = (scores.exp().unsqueeze(-1) * v[:, h, keys]).sum(1) / s_i
                        numerator[:, h, i] += s_i * o_i
                        denominator[:, h, i] += s_i
    return merge_heads(attn, numerator / denominator)


def ref_dilated_by_counts(attn, x):
    """The identity: one softmax where key j has weight c_ij · exp(q_i·k_j/√d), c_ij = #patterns covering i and j."""
    c = attn.config
    q, k, v = split_heads(attn, x)
    B, H, T, D = q.shape
    q, k = ref_rope(q, range(T)), ref_rope(k, range(T))
    counts = torch.zeros(H, T, T)
    for w, r in zip(c.dilated_segments, c.dilated_rates):
        w = min(w, T)
        for h in range(H):
            for i in range(T):
                for j in range(i + 1):
                    same_segment = i // w == j // w
                    if same_segment and (i % w) % r == (j % w) % r and (i % w) % r in ref_head_offsets(h, H, r):
                        counts[h, i, j] += 1
    weights = counts * torch.exp(q @ k.transpose(-1, -2) / math.sqrt(D))
    return merge_heads(attn, (weights / weights.sum(-1, keepdim=True)) @ v)


REFERENCES = {'full': ref_full, 'local': ref_local, 'dilated': ref_dilated,
              'infini': lambda attn, x: ref_infini(attn, x, attn.config.mem_update)}


def assert_close_rel(a, b, tol=1e-6):
    err = ((a - b).norm() / b.norm()).item()
    assert err < tol, f"relative error {err:.2e}"


def fast_and_ref_grads(attn, x, reference):
    """Values and gradients (every parameter and the input) of the fast path and the reference."""
    results = []
    for fn in (lambda x: attn(x)[0], lambda x: reference(attn, x)):
        attn.zero_grad()
        x = x.detach().clone().requires_grad_(True)
        y = fn(x)
        y.backward(torch.randn_like(y, generator=torch.Generator().manual_seed(1)))
        grads = {n: p.grad.clone() for n, p in attn.named_parameters()}
        results.append((y.detach(), x.grad.clone(), grads))
    return results


def assert_fast_path_matches_reference(attn, x, reference):
    """Values and gradients (every parameter and the input) of the fast path and the reference agree."""
    (y, gx, gp), (y_ref, gx_ref, gp_ref) = fast_and_ref_grads(attn, x, reference)
    assert_close_rel(y, y_ref)
    assert_close_rel(gx, gx_ref)
    for name in gp:
        assert_close_rel(gp[name], gp_ref[name])
    return gp


# ---------------------------------------------------------------------------------------------
# Fast path == reference, values and gradients.

@pytest.mark.parametrize('local', ['segment', 'sliding'])
@pytest.mark.parametrize('feature', ['elu', 'relu'])
@pytest.mark.parametrize('rule', ['linear', 'delta'])
@pytest.mark.parametrize('T', [8, 16, 40, 37])  # 1, 2 and 5 segments, and a last segment shorter than 8
def test_infini_fast_path_matches_reference_values_and_grads(local, feature, rule, T):
    torch.manual_seed(T)
    attn = ATTENTION['infini'](tiny_config('infini', mem_update=rule, mem_feature=feature, infini_local=local))
    with torch.no_grad():
        attn.gate.copy_(torch.randn(4))  # not the symmetric init, so the gate's gradient is tested too
    x = torch.randn(2, T, 32)
    gp = assert_fast_path_matches_reference(attn, x, REFERENCES['infini'])
    assert gp['gate'].abs().sum() > 0


@pytest.mark.parametrize('kind', ['full', 'local', 'dilated'])
@pytest.mark.parametrize('T', [8, 21, 40])
def test_fast_path_matches_reference_values_and_grads(kind, T):
    torch.manual_seed(T)
    attn = ATTENTION[kind](tiny_config(kind))
    x = torch.randn(2, T, 32)
    assert_fast_path_matches_reference(attn, x, REFERENCES[kind])


def test_dilated_mixture_equals_one_softmax_with_pattern_counts():
    torch.manual_seed(0)
    attn = ATTENTION['dilated'](tiny_config('dilated'))
    x = torch.randn(1, 37, 32)
    assert_close_rel(ref_dilated(attn, x), ref_dilated_by_counts(attn, x), tol=1e-12)
    assert_close_rel(attn(x)[0], ref_dilated_by_counts(attn, x))


def test_dilated_single_dense_pattern_equals_full_attention():
    torch.manual_seed(0)
    T = 24
    dilated = ATTENTION['dilated'](tiny_config('dilated', dilated_segments=(T,), dilated_rates=(1,)))
    full = ATTENTION['full'](tiny_config('full'))
    full.load_state_dict(dilated.state_dict())
    x = torch.randn(2, T, 32)
    assert_close_rel(dilated(x)[0], full(x)[0], tol=1e-12)


@pytest.mark.parametrize('H', [8, 2, 16])
def test_every_position_of_every_dilated_pattern_is_a_query_of_some_head(H):
    """The paper's rates (1, 2, 4, 6, 12; 6 and 12 divide no w) on its segments scaled down 64x, with fewer heads
    than the largest rates (8 as configs/pg19_dilated.py, 2 as repro_tiny) and more. Each head keeps the rows at
    its offsets (ref_head_offsets) inside each segment, and every position is kept by exactly one head."""
    from model import dilated_pattern
    segments, rates = (32, 64, 128, 256, 512), (1, 2, 4, 6, 12)
    T = 700  # longer than the largest segment and a multiple of none
    q = torch.randn(1, H, T, 4)
    for w, r in zip(segments, rates):
        _, lse = dilated_pattern(q, q, q, min(w, T), r)
        rows = torch.isfinite(lse[0])                                      # (H, T): rows each head queries
        for h in range(H):
            expected = torch.isin((torch.arange(T) % w) % r, torch.tensor(ref_head_offsets(h, H, r)))
            assert torch.equal(rows[h], expected), (w, r, h)
        heads_per_position = rows.sum(0)
        assert heads_per_position.min() >= 1, f"w={w} r={r}: some positions are a query of no head"
        if H <= r:
            assert heads_per_position.max() == 1


@pytest.mark.parametrize('T', [12, 37])
def test_dilated_with_fewer_heads_than_a_rate_matches_reference_values_and_grads(T):
    torch.manual_seed(T)
    attn = ATTENTION['dilated'](tiny_config('dilated', n_head=2, dilated_segments=(4, 8, 16), dilated_rates=(1, 3, 5)))
    x = torch.randn(2, T, 32)
    assert_fast_path_matches_reference(attn, x, REFERENCES['dilated'])
    with torch.no_grad():
        assert_close_rel(ref_dilated(attn, x), ref_dilated_by_counts(attn, x), tol=1e-12)


# ---------------------------------------------------------------------------------------------
# Model-level properties, every kind.

@pytest.mark.parametrize('kind', KINDS + list(INFINI_VARIANTS))
def test_no_token_sees_the_future(kind):
    torch.manual_seed(0)
    model = GPT(tiny_config_of(kind))
    idx = torch.randint(0, 61, (2, 40))
    logits, _, _ = model(idx)
    for t in [1, 7, 8, 9, 23, 39]:
        changed = idx.clone()
        changed[:, t:] = torch.randint(0, 61, (2, 40 - t))
        assert torch.equal(model(changed)[0][:, :t], logits[:, :t]), f"position < {t} saw the future"


@pytest.mark.parametrize('kind', KINDS + list(INFINI_VARIANTS))
@pytest.mark.parametrize('pieces', [[40], [8, 8, 24], [5, 11, 1, 8, 15], [1] * 20 + [20]])
def test_streaming_in_pieces_equals_one_call(kind, pieces):
    torch.manual_seed(0)
    model = GPT(tiny_config_of(kind))
    idx = torch.randint(0, 61, (2, 40))
    logits, _, _ = model(idx)
    state, outputs, start = None, [], 0
    for n in pieces:
        out, _, state = model(idx[:, start:start + n], state=state)
        outputs.append(out)
        start += n
    assert_close_rel(torch.cat(outputs, dim=1), logits, tol=1e-12)


@pytest.mark.parametrize('kind', ['local', 'infini', 'dilated'])
def test_streaming_state_does_not_grow(kind):
    model = GPT(tiny_config(kind))
    state, sizes = None, []
    for _ in range(40):  # 200 tokens in calls of 5, so calls end mid-segment too
        _, _, state = model(torch.randint(0, 61, (1, 5)), state=state)
        leaves = torch.utils._pytree.tree_leaves(state)
        sizes.append(sum(t.numel() for t in leaves if t is not None))
    # bounded by the memory plus one segment (local, infini) or one window lcm(w) = 16 (dilated) of keys/values
    assert max(sizes) == max(sizes[:8]), sizes


def test_sliding_local_attention_reaches_segment_len_tokens_back_across_a_boundary():
    """infini_local='sliding' (not the paper): with the gates on local attention (memory weight ~1e-44), the token just
    past a segment boundary sees the segment_len - 1 tokens before it and no further; the paper's sees none of them."""
    torch.manual_seed(0)
    S, x = 8, torch.randn(1, 24, 32)
    for local, reach in (('segment', 0), ('sliding', S - 1)):
        attn = ATTENTION['infini'](tiny_config('infini', infini_local=local))
        with torch.no_grad():
            attn.gate.fill_(-100.0)
        y = attn(x)[0]
        for t in range(16 - S - 2, 16):  # token 16 starts the third segment
            changed = x.clone()
            changed[:, t] += 1.0
            moved = (attn(changed)[0][:, 16] - y[:, 16]).abs().max().item()
            assert (moved > 1e-6) == (16 - t <= reach), (local, t, moved)


def test_empty_memory_gives_finite_outputs():
    torch.manual_seed(0)
    for kind in ['infini', *INFINI_VARIANTS]:
        attn = ATTENTION['infini'](tiny_config_of(kind)).float()
        x = torch.randn(1, 8, 32, dtype=torch.float32, requires_grad=True)  # one segment: memory stays empty
        y, state = attn(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        assert torch.isfinite(attn.gate.grad).all()


def test_relu_memory_ignores_keys_that_share_no_dimension_with_the_query():
    """The point of mem_feature='relu': filler whose keys do not overlap the query adds nothing to the read, however
    much of it is stored; with ELU + 1 (the paper's σ) every stored token dilutes the key's value."""
    q = torch.tensor([[2.0, 1.0, -1.0, -3.0]])
    key, filler = torch.tensor([[1.0, 0.5, -2.0, 0.0]]), torch.tensor([[-1.0, -2.0, 3.0, 1.0]])
    v_key, v_filler = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    for feature in ('relu', 'elu'):
        reads = []
        for n_filler in (1, 1000):
            empty = Memory(torch.zeros(4, 2), torch.zeros(4))
            k, v = torch.cat((key, filler.expand(n_filler, 4))), torch.cat((v_key, v_filler.expand(n_filler, 2)))
            memory = memory_update(empty, sigma(k, feature), v, 'linear')
            reads.append(memory_retrieve(sigma(q, feature), memory.M, memory.z))
        if feature == 'relu':
            assert torch.equal(reads[0], v_key) and torch.equal(reads[1], v_key)
        else:
            assert reads[1][0, 0] < reads[0][0, 0] < 1  # the key's share falls as filler is stored
    # a query that overlaps nothing stored reads 0, with a finite gradient
    q = q.neg().requires_grad_(True)
    memory = memory_update(Memory(torch.zeros(4, 2), torch.zeros(4)), sigma(key, 'relu'), v_key, 'linear')
    read = memory_retrieve(sigma(q, 'relu'), memory.M, memory.z)
    read.sum().backward()
    assert torch.equal(read, torch.zeros(1, 2)) and torch.isfinite(q.grad).all()


def test_last_logits_restricts_the_head():
    model = GPT(tiny_config('infini'))
    idx = torch.randint(0, 61, (1, 20))
    full, _, _ = model(idx)
    last, _, _ = model(idx, last_logits=3)
    assert last.shape == (1, 3, 61)
    assert torch.allclose(last, full[:, -3:])


@pytest.mark.parametrize('kind', KINDS)
def test_tiny_model_overfits_one_batch(kind):
    torch.manual_seed(0)
    model = GPT(tiny_config(kind, n_embd=64)).float()
    idx = torch.randint(0, 61, (2, 33))
    opt = model.configure_optimizers(0.0, 3e-3, 0.01, (0.9, 0.95), 'cpu')
    for _ in range(150):
        _, loss, _ = model(idx[:, :-1], targets=idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * math.log(61), loss.item()


def test_gates_get_their_own_lr_and_no_weight_decay():
    model = GPT(tiny_config('infini'))
    opt = model.configure_optimizers(0.1, 1e-3, 0.01, (0.9, 0.95), 'cpu')
    gate_ids = {id(b.attn.gate) for b in model.blocks}
    for group in opt.param_groups:
        if any(id(p) in gate_ids for p in group['params']):
            assert group['lr'] == pytest.approx(0.01) and group['weight_decay'] == 0.0
            assert all(id(p) in gate_ids for p in group['params'])
        elif group['weight_decay'] > 0:
            assert all(p.dim() >= 2 for p in group['params'])


@pytest.mark.parametrize('bad, message', [
    (dict(n_embd=30, n_head=4), 'divisible'),
    (dict(attn='sparse'), 'attention kind'),
    (dict(mem_update='gated'), 'linear'),
    (dict(mem_feature='softmax'), 'relu'),
    (dict(attn='dilated', dilated_segments=(4, 8), dilated_rates=(1,)), 'same length'),
    (dict(attn='dilated', dilated_segments=(8, 4), dilated_rates=(1, 2)), 'increase'),
    (dict(attn='dilated', dilated_segments=(4, 8), dilated_rates=(2, 2)), 'start at 1'),
])
def test_invalid_config_says_what_to_change(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**{'attn': 'full', **bad})
