"""Grouped cross-attention (DRT, arXiv:2410.01651) against a slow, literal float64 reference: a loop over chunks,
neighbours picked by sorting Python floats, one explicit softmax per (token, neighbour)."""

import math
import types
from typing import NamedTuple

import pytest
import torch

from model import GPT, GPTConfig, ATTENTION, ChunkRetriever, Retrieved


@pytest.fixture(autouse=True)
def float64_by_default_on_one_thread():
    """float64 for the comparisons. One thread: these tensors are tiny, and on a shared 2-core machine a second
    thread mostly waits for its core (measured: 5x slower under load)."""
    previous = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(previous[0])
    torch.set_num_threads(previous[1])


def tiny_gca(**kw):
    # 5 chunks of 8 in 40 tokens: chunk 4 ranks 3 candidates for 2 slots; a window of 19 is no multiple of 8
    base = dict(vocab_size=61, n_layer=3, n_head=4, n_embd=32, attn='gca', gca_window=19, gca_chunk=8,
                gca_topk=2, gca_lower_layers=1, gca_gumbel=1.0)
    return GPTConfig(**{**base, **kw})


def assert_close_rel(a, b, tol=1e-6):
    if b.norm() == 0:  # e.g. the retriever's gradient when no chunk has two candidates
        assert a.norm() == 0
        return
    err = ((a - b).norm() / b.norm()).item()
    assert err < tol, f"relative error {err:.2e}"


# ---------------------------------------------------------------------------------------------
# The literal reference.

def ref_rope(x, positions, base=10000.0):
    D = x.size(-1)
    out = x.clone()
    for t, pos in enumerate(positions):
        for i in range(D // 2):
            theta = pos * base ** (-i / (D // 2))
            a, b = x[..., t, i], x[..., t, i + D // 2]
            out[..., t, i] = a * math.cos(theta) - b * math.sin(theta)
            out[..., t, i + D // 2] = a * math.sin(theta) + b * math.cos(theta)
    return out


def heads(t, H):
    B, T, C = t.shape
    return t.view(B, T, H, C // H).transpose(1, 2)


def merge(t):
    B, H, T, D = t.shape
    return t.transpose(1, 2).reshape(B, T, H * D)


def ref_sliding_window(attn, x):
    """Token i sees tokens i - W + 1 .. i, absolute RoPE positions, explicit scores."""
    W, H = attn.config.gca_window, attn.config.n_head
    q, k, v = (heads(t, H) for t in attn.c_attn(x).split(x.size(-1), dim=2))
    T, D = q.size(2), q.size(3)
    q, k = ref_rope(q, range(T)), ref_rope(k, range(T))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    scores = scores.masked_fill((j > i) | (j <= i - W), float('-inf'))
    return attn.c_proj(merge(torch.softmax(scores, dim=-1) @ v))


def ref_neighbours(retriever, h):
    """For batch row b and chunk m: [(j, w_j)], the top-k chunks j < m - 1 by q_{m-1} · k_j / √C, weights softmax."""
    c, (B, T, C) = retriever.config, h.shape
    S = c.gca_chunk
    u = retriever.ln(h)
    n_done = T // S
    e = [u[:, j * S:(j + 1) * S].mean(1) for j in range(n_done)]  # (B, C) per finished chunk
    keys, queries = [retriever.c_key(x) for x in e], [retriever.c_query(x) for x in e]
    result = []
    for b in range(B):
        per_chunk = []
        for m in range(-(-T // S)):
            candidates = list(range(m - 1))  # chunks finished before chunk m - 1, which asks
            scores = {j: (queries[m - 1][b] @ keys[j][b]) / math.sqrt(C) for j in candidates}
            chosen = sorted(candidates, key=lambda j: -scores[j].item())[:c.gca_topk]
            w = torch.softmax(torch.stack([scores[j] for j in chosen]), 0) if chosen else []
            per_chunk.append([(j, w[i]) for i, j in enumerate(chosen)])
        result.append(per_chunk)
    return result


def ref_gca(block, x, neighbours, memory_k, memory_v):
    """Σ_i w_i softmax(q_t · K_{j_i} / √D) V_{j_i}, token by token."""
    c = block.cross.config
    S, H = c.gca_chunk, c.n_head
    q = heads(block.cross.c_q(x), H)                         # (B, H, T, D)
    B, _, T, D = q.shape
    rows = []
    for b in range(B):
        out = torch.zeros(H, T, D)
        for t in range(T):
            for j, w in neighbours[b][t // S]:
                kj, vj = memory_k[b, :, j * S:(j + 1) * S], memory_v[b, :, j * S:(j + 1) * S]  # (H, S, D)
                p = torch.softmax((kj @ q[b, :, t, :, None]).squeeze(-1) / math.sqrt(D), dim=-1)  # (H, S)
                out[:, t] = out[:, t] + w * (p[:, :, None] * vj).sum(1)
        rows.append(out)
    return block.cross.c_proj(merge(torch.stack(rows)))


def ref_gca_model(model, idx):
    c = model.config
    x = model.wte(idx)
    for i, block in enumerate(model.blocks):
        if i == c.gca_lower_layers:
            neighbours = ref_neighbours(model.retriever, x)
            mk, mv = (heads(t, c.n_head) for t in model.retriever.c_kv(model.retriever.ln(x)).split(c.n_embd, 2))
        x = x + ref_sliding_window(block.attn, block.ln_1(x))
        if i >= c.gca_lower_layers:
            x = x + ref_gca(block, block.ln_x(x), neighbours, mk, mv)
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.ln_f(x))


def values_and_grads(model, fn, idx):
    model.zero_grad()
    y = fn(idx)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    # a parameter outside the graph (no chunk has neighbours yet) has gradient None: zero, as in the other path
    return y.detach(), {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------
# Fast path == reference.

@pytest.mark.parametrize('T', [8, 21, 40, 37])  # no neighbours at all; one chunk to pick; 5 chunks; a partial chunk
def test_gca_fast_path_matches_reference_values_and_grads(T):
    torch.manual_seed(T)
    model = GPT(tiny_gca()).eval()  # eval: no Gumbel noise, the retrieval is the deterministic top-k
    idx = torch.randint(0, 61, (2, T))
    y, g = values_and_grads(model, lambda i: model(i)[0], idx)
    y_ref, g_ref = values_and_grads(model, lambda i: ref_gca_model(model, i), idx)
    assert_close_rel(y, y_ref)
    for name in g:
        assert_close_rel(g[name], g_ref[name])


@pytest.mark.parametrize('T, pieces', [(40, [40]), (40, [3, 37]), (45, [45]), (45, [2, 40, 3])])
def test_sliding_window_blocks_and_band_match_the_literal_window(T, pieces):
    torch.manual_seed(0)
    attn = ATTENTION['gca'](tiny_gca())
    x = torch.randn(2, T, 32)
    state, outputs, start = None, [], 0
    for n in pieces:  # [2, 40, 3]: the band path (short call after a cache) and the block path with a cache
        y, state = attn(x[:, start:start + n], state)
        outputs.append(y)
        start += n
    assert_close_rel(torch.cat(outputs, 1), ref_sliding_window(attn, x), tol=1e-12)


# ---------------------------------------------------------------------------------------------
# Retrieval.

def test_retriever_gets_gradients_from_the_lm_loss():
    torch.manual_seed(0)
    model = GPT(tiny_gca()).train()  # Gumbel noise on: it picks the chunks, the weights stay differentiable
    idx = torch.randint(0, 61, (2, 41))
    _, loss, _ = model(idx[:, :-1], targets=idx[:, 1:])
    loss.backward()
    for name in ('c_query.weight', 'c_key.weight', 'ln.weight', 'c_kv.weight'):
        grad = model.retriever.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_topk_ignores_chunks_not_finished_before_the_asking_chunk():
    torch.manual_seed(0)
    retriever = ChunkRetriever(tiny_gca(gca_topk=3)).eval()
    n, C = 10, 32
    queries = torch.randn(1, n, C)
    keys = torch.randn(1, n, C)
    keys[:, 5:] = 100 * queries[:, :5].sum(1, keepdim=True)  # chunks 5..9 would top every ranking
    chunks = torch.arange(n)
    index, weights = retriever.retrieve(queries, keys, chunks)
    for m in range(n):
        valid = weights[0, m] > 0
        assert int(valid.sum()) == min(3, max(m - 1, 0)), m
        assert (index[0, m][valid] < m - 1).all(), f"chunk {m} retrieved {index[0, m][valid].tolist()}"
    assert torch.allclose(weights.sum(-1)[0, 2:], torch.ones(n - 2))


@pytest.mark.parametrize('training', [False, True])
def test_retrieval_scores_and_gumbel_noise_stay_float32_under_bf16_autocast(training):
    """In bf16, nearby scores tie at the k-th place and the noise's largest values are capped: the chunks picked
    must not depend on autocast. Same inputs, same noise seed: the same top-k and the same float32 weights."""
    retriever = ChunkRetriever(tiny_gca(gca_topk=4)).float().train(training)
    n, C = 64, 32
    gen = torch.Generator().manual_seed(0)
    queries, keys = (torch.randn(2, n, C, generator=gen, dtype=torch.float32) for _ in range(2))
    chunks = torch.arange(n)
    torch.manual_seed(1)
    index, weights = retriever.retrieve(queries, keys, chunks)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        torch.manual_seed(1)
        index_bf16, weights_bf16 = retriever.retrieve(queries, keys, chunks)
    assert weights_bf16.dtype == torch.float32
    assert torch.equal(index_bf16, index)
    assert torch.equal(weights_bf16, weights)


def test_gumbel_noise_only_when_training():
    torch.manual_seed(0)
    model = GPT(tiny_gca(gca_topk=1))
    idx = torch.randint(0, 61, (1, 80))  # 10 chunks, up to 8 candidates for 1 slot
    eval_logits = model.eval()(idx)[0]
    assert torch.equal(model(idx)[0], eval_logits)
    model.train()
    assert any(not torch.equal(model(idx)[0], eval_logits) for _ in range(5))
    model.config.gca_gumbel = 0.0
    assert torch.equal(model(idx)[0], eval_logits)


# ---------------------------------------------------------------------------------------------
# Model-level properties.

def test_no_token_sees_the_future():
    torch.manual_seed(0)
    model = GPT(tiny_gca()).eval()
    idx = torch.randint(0, 61, (2, 40))
    logits = model(idx)[0]
    for t in [1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 39]:
        changed = idx.clone()
        changed[:, t:] = torch.randint(0, 61, (2, 40 - t))
        assert torch.equal(model(changed)[0][:, :t], logits[:, :t]), f"position < {t} saw the future"


@pytest.mark.parametrize('pieces', [[40], [8, 8, 24], [5, 11, 1, 8, 15], [1] * 20 + [20], [7, 33]])
def test_streaming_in_pieces_equals_one_call(pieces):
    torch.manual_seed(0)
    model = GPT(tiny_gca()).eval()
    idx = torch.randint(0, 61, (2, 40))
    logits = model(idx)[0]
    state, outputs, start = None, [], 0
    for n in pieces:
        out, _, state = model(idx[:, start:start + n], state=state)
        outputs.append(out)
        start += n
    assert_close_rel(torch.cat(outputs, dim=1), logits, tol=1e-12)


def test_store_grows_by_its_stated_bytes_per_token_and_the_rest_does_not_grow():
    c = tiny_gca()
    model = GPT(c).eval()
    state, windows = None, []
    for _ in range(40):  # 200 tokens in calls of 5: calls end mid-chunk and mid-window
        _, _, state = model(torch.randint(0, 61, (1, 5)), state=state)
        windows.append(sum(t.numel() for s in state[:-1] for t in s))
    store = state[-1]
    n_done = 200 // c.gca_chunk
    per_token = (2 + 2 / c.gca_chunk) * c.n_embd * 8  # float64: the ChunkStore docstring's formula
    assert store.nbytes() - store.tail.numel() * 8 == n_done * c.gca_chunk * per_token
    assert max(windows) == max(windows[:8])  # each layer keeps gca_window - 1 tokens of K/V


# ---------------------------------------------------------------------------------------------
# The store grows in place (buffers that double) and answers as the store it replaced, which concatenated.

class ConcatStore(NamedTuple):
    keys: torch.Tensor
    queries: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    tail: torch.Tensor


def concat_retriever_forward(self, h, store):
    """ChunkRetriever.forward and retrieve as they were before the buffers, kept literally as the reference: the
    store copied by torch.cat at every call, the scores divided by √C and masked over every column."""
    c, (B, T, C) = self.config, h.shape
    Lc, H, D = c.gca_chunk, c.n_head, c.head_size
    t0 = 0 if store is None else store.keys.size(1) * Lc + store.tail.size(1)
    u = self.ln(h) if store is None else torch.cat((store.tail, self.ln(h)), dim=1)
    n_new = u.size(1) // Lc
    done = u[:, :n_new * Lc].view(B, n_new, Lc, C)
    e = done.mean(2)
    k, v = self.c_kv(done).view(B, n_new, Lc, 2, H, D).permute(3, 0, 1, 4, 2, 5)
    new = ConcatStore(self.c_key(e), self.c_query(e), k, v, u[:, n_new * Lc:])
    store = new if store is None else ConcatStore(*(torch.cat((old, x.to(old.device)), dim=1)
                                                    for old, x in zip(store[:4], new[:4])), new.tail)
    first, last = t0 // Lc, (t0 + T - 1) // Lc
    chunks = torch.arange(first, last + 1)
    queries, keys = store.queries, store.keys
    n, top_k = keys.size(1), min(c.gca_topk, keys.size(1))
    if top_k == 0:
        index, weights = chunks.new_zeros(B, len(chunks), 0), keys.new_zeros(B, len(chunks), 0)
    else:
        asking = queries[:, (chunks - 1).clamp(min=0)]
        scores = asking @ keys.transpose(1, 2) / math.sqrt(C)
        allowed = torch.arange(n) < (chunks[:, None] - 1)
        top = scores.masked_fill(~allowed, float('-inf')).topk(top_k, dim=-1).indices
        valid = allowed.expand(B, -1, -1).gather(-1, top)
        selected = scores.gather(-1, top).masked_fill(~valid, torch.finfo(scores.dtype).min)
        index, weights = torch.where(valid, top, 0), torch.softmax(selected, dim=-1) * valid
    batch = torch.arange(B)[:, None, None]
    return Retrieved(store.k[batch, index], store.v[batch, index], weights, t0 - first * Lc), store


def stream_pieces(model, idx, pieces, state=None):
    outputs, start = [], 0
    for n in pieces:
        out, _, state = model(idx[:, start:start + n], state=state)
        outputs.append(out)
        start += n
    return torch.cat(outputs, dim=1), state


@pytest.mark.parametrize('mode', ['no_grad', 'inference_mode', 'grad'])  # in place; in place; copied every call
@pytest.mark.parametrize('pieces', [[203], [3, 37, 1, 8, 16, 60, 2, 76], [8] * 25 + [3], [1] * 40 + [163]])
def test_store_grown_in_place_answers_as_the_concatenating_store(pieces, mode):
    torch.manual_seed(0)
    model = GPT(tiny_gca()).eval()
    idx = torch.randint(0, 61, (2, 203))  # 25 chunks and 3 tokens: the buffers double 4 times or more
    context = {'no_grad': torch.no_grad, 'inference_mode': torch.inference_mode, 'grad': torch.enable_grad}[mode]
    with context():
        one_call = model(idx)[0]
        logits, state = stream_pieces(model, idx, pieces)
        model.retriever.forward = types.MethodType(concat_retriever_forward, model.retriever)
        concat, concat_state = stream_pieces(model, idx, pieces)
    assert_close_rel(logits, concat, tol=1e-12)
    assert_close_rel(logits, one_call, tol=1e-12)
    store, old = state[-1], concat_state[-1]
    assert store.n == old.keys.size(1) == 25 and torch.equal(store.tail, old.tail)
    for name in ('keys', 'queries', 'k', 'v'):
        assert_close_rel(getattr(store, name), getattr(old, name), tol=1e-12)


def test_one_prompt_state_serves_continuations_that_interleave():
    """The buffers are shared by a state and the states that extend it: a continuation of an older state must not
    write over the chunks of another continuation (one prompt, several samples)."""
    torch.manual_seed(0)
    model = GPT(tiny_gca()).eval()
    prompt, a, b = (torch.randint(0, 61, (2, n)) for n in (48, 40, 40))
    with torch.inference_mode():
        _, state = stream_pieces(model, prompt, [40, 8])   # 6 chunks in buffers of 10: room for 4 more
        a1, _, state_a = model(a[:, :20], state=state)     # chunks 6 and 7, written in place
        b1, _, state_b = model(b[:, :20], state=state)     # its chunks 6 and 7 would overwrite a's
        a2, _, _ = model(a[:, 20:], state=state_a)
        b2, _, _ = model(b[:, 20:], state=state_b)
        assert_close_rel(torch.cat((a1, a2), 1), model(torch.cat((prompt, a), 1))[0][:, 48:], tol=1e-12)
        assert_close_rel(torch.cat((b1, b2), 1), model(torch.cat((prompt, b), 1))[0][:, 48:], tol=1e-12)


def test_a_store_from_inference_mode_streams_on_outside_it_and_moves_its_kv():
    torch.manual_seed(0)
    model = GPT(tiny_gca()).eval()
    idx = torch.randint(0, 61, (2, 120))
    with torch.inference_mode():
        _, state = stream_pieces(model, idx, [40, 10])  # room left in the buffers, but they are inference tensors
    with torch.no_grad():
        logits, _, state = model(idx[:, 50:80], state=state)
        state[-1] = state[-1].kv_to('cpu')  # where a GPU's store would offload its k and v
        more, _, _ = model(idx[:, 80:], state=state)
        assert_close_rel(torch.cat((logits, more), 1), model(idx)[0][:, 50:], tol=1e-12)


def test_gradients_flow_through_a_streamed_store_as_through_one_call():
    torch.manual_seed(0)
    model = GPT(tiny_gca()).eval()
    idx = torch.randint(0, 61, (2, 57))
    # the third call's chunk would fit in the buffers that the second call's retrieval read (and autograd saved)
    y, g = values_and_grads(model, lambda i: stream_pieces(model, i, [17, 8, 8, 24])[0], idx)
    y_one, g_one = values_and_grads(model, lambda i: model(i)[0], idx)
    assert_close_rel(y, y_one, tol=1e-12)
    for name in g:
        assert_close_rel(g[name], g_one[name], tol=1e-10)


def test_store_is_reallocated_log_n_times_and_otherwise_written_in_place():
    """The store's upkeep per call does not grow with the stream: over 500 calls (312 chunks) the buffers move
    only when their capacity doubles; every other call writes its chunks into the free rows of the same buffers."""
    model = GPT(tiny_gca()).eval()
    c, state, moves, pointers = model.config, None, 0, None
    with torch.inference_mode():
        for _ in range(500):
            _, _, state = model(torch.randint(0, 61, (1, 5)), state=state, last_logits=0)
            now = tuple(t.data_ptr() for t in state[-1].buffers.tensors())
            moves += now != pointers
            pointers = now
    store = state[-1]
    assert store.n == 2500 // c.gca_chunk
    assert moves <= 2 + math.ceil(math.log2(store.n)), moves  # the first call's rows, then capacity 1, 2, 4, ... 512
    assert store.buffers.keys.size(1) < 2 * store.n  # the spare capacity is less than what is held


def test_bench_gca_store_times_every_part_and_refuses_to_overwrite(tmp_path):
    """scripts/bench_gca_store.py on a tiny stream: every part timed, the store's bytes and moves reported, and an
    existing --json is kept unless --force."""
    import importlib.util
    import json
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts', 'bench_gca_store.py')
    spec = importlib.util.spec_from_file_location('bench_gca_store', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / 'store.json'
    bench.main(['--batch', '2', '--len', '1K', '--call', '128', '--json', str(out)])
    report = json.loads(out.read_text())
    gca, infini = report['runs']
    assert [m['len'] for m in gca['marks']] == [1024] and gca['store_chunks'] == 1024 // 16
    assert gca['store_allocations'] == 4  # 8 chunks per call: capacity 8, 16, 32, 64
    assert gca['store_bytes'] == 2 * 1024 * (2 + 2 / 16) * 64 * 4 and gca['peak_rss_bytes'] > gca['store_bytes']
    for part in ('attention_ms', 'scoring_ms', 'upkeep_ms'):
        assert gca['marks'][0][part] > 0, part
    assert infini['marks'][0]['scoring_ms'] == 0 and 'store_bytes' not in infini
    with pytest.raises(SystemExit, match='--force'):
        bench.main(['--batch', '2', '--len', '1K', '--json', str(out)])

def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(tiny_gca(n_embd=64)).float()
    idx = torch.randint(0, 61, (2, 41))
    opt = model.configure_optimizers(0.0, 3e-3, 0.01, (0.9, 0.95), 'cpu')
    for _ in range(50):
        _, loss, _ = model(idx[:, :-1], targets=idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * math.log(61), loss.item()


@pytest.mark.parametrize('bad, message', [
    (dict(gca_window=15), 'at least 2 \\* gca_chunk'),
    (dict(gca_lower_layers=3), 'between 1 and n_layer - 1'),
    (dict(gca_lower_layers=0), 'positive'),
    (dict(gca_topk=0), 'positive'),
    (dict(gca_gumbel=-1.0), 'gca_gumbel'),
    (dict(n_layer=1, gca_lower_layers=1), 'n_layer >= 2'),
])
def test_invalid_gca_config_says_what_to_change(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_gca(**bad)


def test_other_kinds_ignore_the_gca_fields():
    GPTConfig(attn='local', gca_window=1, gca_chunk=64, gca_lower_layers=99)  # no error: only gca validates them


def test_flops_count_the_window_and_the_neighbours():
    model = GPT(tiny_gca())
    c = model.config
    extra = model.flops_per_token(40) - 6 * model.num_params()
    window = 3 * c.n_layer * 2 * 2 * (19 - 19 * 19 / 80) * c.n_embd
    neighbours = 3 * (c.n_layer - c.gca_lower_layers) * 2 * 2 * c.gca_topk * c.gca_chunk * c.n_embd
    assert window + neighbours < extra < 1.01 * (window + neighbours)


def test_passkey_and_eval_ppl_run_on_a_gca_checkpoint(tmp_path):
    """Only that they run and stream (their own tests check the numbers); skipped where they do not exist yet."""
    import json
    from dataclasses import asdict
    import numpy as np
    passkey, eval_ppl = pytest.importorskip('passkey'), pytest.importorskip('eval_ppl')
    from checkpoint import save_checkpoint
    torch.set_default_dtype(torch.float32)  # as train.py writes them
    model = GPT(tiny_gca(vocab_size=256, gca_window=32))
    ckpt = str(tmp_path / 'ckpt.pt')
    save_checkpoint(ckpt, {'model': model.state_dict(), 'model_args': asdict(model.config), 'tokenizer': 'byte',
                           'iter_num': 0})
    books = [np.append(np.random.default_rng(0).integers(97, 123, 199), 0).astype(np.uint16)] * 2
    np.concatenate(books).tofile(tmp_path / 'validation.bin')
    np.save(tmp_path / 'validation_books.npy', np.array([0, 200, 400], dtype=np.int64))
    (tmp_path / 'meta.json').write_text(json.dumps({'tokenizer': 'byte', 'vocab_size': 256, 'eot': 0,
                                                    'source': 'test', 'splits': {}}))
    report = eval_ppl.main(['--ckpt', ckpt, '--data_dir', str(tmp_path), '--split', 'validation', '--len', '0',
                            '--chunk', '40', '--threads', '1'])
    assert math.isfinite(report['overall']['loss'])
    results = passkey.main(['--ckpt', ckpt, '--lens', '300', '--depth', 'start', '--trials', '1', '--chunk', '64',
                            '--threads', '1'])
    assert len(results) == 1 and 0 <= results[0]['token_acc'] <= 1
