"""
Sequence parallelism: one long window split across the ranks of a torch.distributed process group, rank p
holding the contiguous slice [p·L, (p+1)·L) of T = P·L tokens, for the attention kinds whose structure makes
it cheap. Each rank computes exactly what the single-process layer computes for its slice.

- dilated: LongNet (Ding et al., arXiv:2307.02486v2), section 3.1. A pattern (w, r) whose segment fits in a
  rank's slice (w divides L) runs locally. For a longer segment each rank first keeps only its dilated rows
  of K and V (those at head h's offsets mod r inside the segment, see model.head_offsets), all-gathers them
  among the w/L ranks that share the segment, and attends its own kept query rows to them, causally; its own
  keys are part of the gathered set (the official causal path appears to drop them). A rank receives < w/r rows
  per head, offset and pattern, whatever T is. Patterns are then mixed by their log-denominators
  (model.mix_patterns).
- infini: Infini-attention (Munkhdalai et al., arXiv:2404.07143, eq. numbers of v1). The linear memory is a
  sum (eq. 4), so the memory rank p starts from is Σ_{j<p} of each rank's σ(K)ᵀV and Σσ(K) totals: one
  all-gather of D×(D+1) per head, a prefix sum, then model.py's own fast path from that memory. The delta rule (eq. 5) reads the
  memory before each update, so it passes the memory rank to rank (rank p waits for p-1: the memory of a
  long window is split across devices, the time is not).
- local: nothing to do, once segment_len divides L no segment crosses a rank.
- full: not supported (it needs ring attention).
- gca: not supported (a chunk retrieves from every earlier chunk of the window, and the sliding window and the
  chunks cross ranks; plain per-slice gca would silently be another model).

Collectives are torch.autograd.Functions (all-gather forward, reduce-scatter backward; send forward, receive
the gradient backward), so loss.backward() on every rank gives each rank the gradient of the sum of all ranks'
losses with respect to its slice and to its use of the weights; summing parameter gradients over the group
(DDP does it, as a mean, see sequence_parallel_loss) gives the single-process gradient.

    group, sp_rank, dp_rank, dp_world = init_sequence_parallel(seq_parallel)   # after init_process_group
    make_sequence_parallel(model, group, seq_len)         # in place; before DDP, after .to(device)
    x, y = shard_sequence(x, y, sp_rank, seq_parallel)    # the same window on every rank of the group
    logits, _, _ = model(x)
    loss = sequence_parallel_loss(logits, y, group)       # then DDP's mean over ranks = the window's mean loss

train.py starts its processes here too (setup_processes, split_processes: torchrun's ranks, which split each window
and which the batch).
"""

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F

from configurator import ConfigError
from model import (ChunkRetriever, DilatedAttention, FullAttention, GroupedCrossAttention, InfiniAttention, InfiniState,
                   LocalAttention, Memory, SlidingWindowAttention, at_least_fp32, attend_kept_rows, dilated_pattern,
                   head_offsets, mix_patterns, rope, scatter_rows, sigma)


# ----------------------------------------------------------------------------------------------
# train.py's processes: torchrun's ranks, and how they split each window and the batch

def setup_processes(cfg):
    """(ddp, rank, local_rank, world_size, device). torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them
    this is the only process. The backend follows the device: nccl for GPUs, gloo for CPU processes."""
    device = cfg['device'] if cfg['device'] != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but torch sees no CUDA GPU; use --device=cpu")
    if device.startswith('cuda'):  # TF32 matmuls: ~2x faster on Ampere and later, precision the training does not miss
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if not ('RANK' in os.environ and 'WORLD_SIZE' in os.environ):
        return False, 0, 0, 1, device
    backend = cfg['backend'] if cfg['backend'] != 'auto' else ('nccl' if device.startswith('cuda') else 'gloo')
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True, dist.get_rank(), local_rank, dist.get_world_size(), device


def split_processes(cfg, ddp, rank, world):
    """(sp_group, sp_rank, dp_rank, dp_world, micro-steps per process): groups of seq_parallel consecutive ranks
    split each window; the dp_world groups (replicas) draw different windows."""
    sp = cfg['seq_parallel']
    if sp > 1 and not ddp:
        raise ConfigError(f"seq_parallel={sp} needs torchrun --nproc_per_node {sp} (or a multiple)")
    try:
        sp_group, sp_rank, dp_rank, dp_world = init_sequence_parallel(sp) if sp > 1 else (None, 0, rank, world)
    except ValueError as e:
        raise ConfigError(str(e))
    gas = cfg['gradient_accumulation_steps']
    if gas % dp_world:
        raise ConfigError(f"gradient_accumulation_steps={gas} is the total over all {dp_world} processes and must be "
                          f"a multiple of it; try --gradient_accumulation_steps={max(dp_world, gas - gas % dp_world)}")
    return sp_group, sp_rank, dp_rank, dp_world, gas // dp_world


# ----------------------------------------------------------------------------------------------
# Which windows split: every check as a sentence saying what to change.

FULL_IS_NOT_PARALLEL = ("attn='full' has no sequence-parallel mode (it would need ring attention); use "
                        "attn='dilated', 'infini' or 'local', or seq_parallel=1")
GCA_IS_NOT_PARALLEL = ("attn='gca' has no sequence-parallel mode (each chunk retrieves from all earlier chunks of the "
                       "window, across ranks); use seq_parallel=1 (processes then split the batch), or attn='dilated', "
                       "'infini' or 'local'")
NOT_PARALLEL = {'full': FULL_IS_NOT_PARALLEL, 'gca': GCA_IS_NOT_PARALLEL}


def check_sequence_parallel(config, seq_len, world):
    """Raise ValueError (what to change) unless a window of seq_len tokens of this model splits over `world` ranks."""
    if config.attn in NOT_PARALLEL:
        raise ValueError(NOT_PARALLEL[config.attn])
    if config.attn == 'infini' and config.infini_local == 'sliding':
        raise ValueError("infini_local='sliding' has no sequence-parallel mode (a rank's first tokens would need the "
                         "last segment_len - 1 keys/values of the rank before); use seq_parallel=1 or "
                         "infini_local='segment'")
    for problem in split_problems(config, seq_len, world):
        ok = [p for p in range(1, 65) if not any(split_problems(config, seq_len, p))]
        raise ValueError(f"{problem}; try seq_parallel in {ok}" if len(ok) > 1 else f"{problem}; change seq_len")


def split_problems(config, seq_len, world):
    if world < 1 or seq_len % world:
        yield f"seq_len={seq_len} must be divisible by seq_parallel={world} (each rank holds seq_len/seq_parallel)"
        return
    L = seq_len // world
    if config.attn in ('local', 'infini') and L % config.segment_len:
        yield (f"each of the {world} ranks holds seq_len/seq_parallel={L} tokens, which must be a multiple of "
               f"segment_len={config.segment_len} (segments may not cross ranks)")
    if config.attn == 'dilated':
        for w in config.dilated_segments:
            w = min(w, seq_len)  # the model clips w to the window
            if L % w and w % L:
                yield (f"dilated segment w={w} does not align with the {L} tokens each of the {world} ranks holds: "
                       f"every segment must divide {L} or be a multiple of it")


def shard_sequence(x, y, rank, world):
    """This rank's contiguous slice of the (B, T) inputs and targets (every rank of the group holds the same window)."""
    T = x.size(1)
    if T % world:
        raise ValueError(f"seq_len={T} must be divisible by seq_parallel={world}")
    L = T // world
    return x[:, rank * L:(rank + 1) * L], (None if y is None else y[:, rank * L:(rank + 1) * L])


# ----------------------------------------------------------------------------------------------
# Collectives with gradients, and a log of what they were handed (scripts/seqpar_comm.py, the tests).

_comm_log = None


@contextmanager
def count_communication():
    """Yields a list that collects (op, group_size, chunk_bytes) for every collective run inside the block.
    A ring all-gather or reduce-scatter of chunks of c bytes over G ranks sends (G-1)·c bytes per rank."""
    global _comm_log
    previous, _comm_log = _comm_log, []
    try:
        yield _comm_log
    finally:
        _comm_log = previous


def _record(op, chunk, group_size):
    if _comm_log is not None:
        _comm_log.append((op, group_size, chunk.numel() * chunk.element_size()))


# torch 2.13 renamed all_gather_into_tensor / reduce_scatter_tensor to *_single; the old names still work.
_all_gather = getattr(dist, 'all_gather_single', None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, 'reduce_scatter_single', None) or dist.reduce_scatter_tensor


class AllGather(torch.autograd.Function):
    """(1, ...) on each of G ranks -> (G, ...) in rank order. The gradient of a rank's chunk is the sum over
    ranks of the gradients of their copies of it: a reduce-scatter."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        x = x.contiguous()
        out = x.new_empty(dist.get_world_size(group) * x.size(0), *x.shape[1:])
        _record('all_gather', x, dist.get_world_size(group))
        _all_gather(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        G = dist.get_world_size(ctx.group)
        grad = grad.contiguous()
        out = grad.new_empty(grad.size(0) // G, *grad.shape[1:])
        _record('reduce_scatter', out, G)
        _reduce_scatter(out, grad, group=ctx.group)
        return out, None


def all_gather(x, group):
    return x if group is None else AllGather.apply(x, group)  # None: a group of one, nothing to send


class ReceiveFromPrevious(torch.autograd.Function):
    """Forward: receive tensors shaped like `shapes` from the previous rank. Backward: send their gradients back.
    `anchor` (this layer's keys) only places the node in the graph: its backward then runs before anything of the
    layers below, on every rank, so the sends and receives of the backward pair up layer by layer (a pipeline
    from the last rank down, no cycle)."""

    @staticmethod
    def forward(ctx, anchor, group, shapes):
        ctx.group, ctx.src = group, dist.get_global_rank(group, dist.get_rank(group) - 1)
        dtype = torch.float64 if anchor.dtype == torch.float64 else torch.float32  # the memory's: at_least_fp32
        received = [anchor.new_empty(s, dtype=dtype) for s in shapes]
        for t in received:
            _record('recv', t, 2)
            dist.recv(t, ctx.src, group=group)
        return tuple(received)

    @staticmethod
    def backward(ctx, *grads):
        for g in grads:
            _record('send', g, 2)
            dist.send(g.contiguous(), ctx.src, group=ctx.group)
        return None, None, None


class SendToNext(torch.autograd.Function):
    """Forward: send `tensors` to the next rank and return y. Backward: receive their gradients from it. Tied to
    y, the layer's output, so its backward runs as soon as the layer's output gradient is known."""

    @staticmethod
    def forward(ctx, y, group, *tensors):
        ctx.group, ctx.dst = group, dist.get_global_rank(group, dist.get_rank(group) + 1)
        ctx.like = [(t.shape, t.dtype) for t in tensors]
        for t in tensors:
            _record('send', t, 2)
            dist.send(t.detach().contiguous(), ctx.dst, group=group)
        return y.clone()

    @staticmethod
    def backward(ctx, grad_y, *unused):
        grads = [grad_y.new_empty(shape, dtype=dtype) for shape, dtype in ctx.like]
        for g in grads:
            _record('recv', g, 2)
            dist.recv(g, ctx.dst, group=ctx.group)
        return (grad_y, None, *grads)


_subgroups = {}


def segment_group(group, first, count):
    """The process group of the `count` ranks of `group` from group rank `first` on (None for one rank).
    Created on first use by its members only (use_local_synchronization), so no other rank has to take part."""
    if count == 1:
        return None
    if count == dist.get_world_size(group):
        return group
    ranks = tuple(dist.get_global_rank(group, first + i) for i in range(count))
    if ranks not in _subgroups:
        _subgroups[ranks] = dist.new_group(list(ranks), use_local_synchronization=True)
    return _subgroups[ranks]


# ----------------------------------------------------------------------------------------------
# The sequence-parallel attention kinds: siblings of model.py's, same parameters, same state_dict.

class SequenceParallelMixin:
    seq_group = None  # the process group, set by make_sequence_parallel

    def rank_and_world(self, q, state):
        if state is not None:
            raise ValueError("sequence-parallel attention runs whole windows from an empty state; carry state "
                             "between calls only in single-process mode")
        P = dist.get_world_size(self.seq_group)
        check_sequence_parallel(self.config, P * q.size(2), P)  # before any collective: every rank raises alike
        return dist.get_rank(self.seq_group), P


class SequenceParallelInfiniAttention(SequenceParallelMixin, InfiniAttention):
    def attend(self, q, k, v, state):
        rank, P = self.rank_and_world(q, state)
        B, H, L, D = q.shape
        if self.config.mem_update == 'linear':
            memory = self.memory_of_earlier_ranks(k, v, rank)
        elif rank > 0:  # delta: the memory the previous rank ended with
            memory = Memory(*ReceiveFromPrevious.apply(k, self.seq_group, [(B, H, D, D), (B, H, D)]))
        else:
            memory = None
        # model.py's own fast path, started from that memory
        y, state = InfiniAttention.attend(self, q, k, v, None if memory is None else InfiniState(memory, None))
        if self.config.mem_update == 'delta' and rank < P - 1:
            y = SendToNext.apply(y, self.seq_group, *state.memory)
        return y, state

    def memory_of_earlier_ranks(self, k, v, rank):
        """M and z after the segments of ranks 0..rank-1: eq. 4 summed over their tokens, as a prefix sum over
        ranks (the linear memory is a sum, so where the segment boundaries fall does not matter)."""
        with torch.autocast(k.device.type, enabled=False):
            sk, vf = sigma(at_least_fp32(k), self.config.mem_feature), at_least_fp32(v)
            total = torch.cat((sk.transpose(-1, -2) @ vf, sk.sum(-2).unsqueeze(-1)), dim=-1)  # (B, H, D, D+1)
            totals = all_gather(total.unsqueeze(0), self.seq_group)                         # (P, B, H, D, D+1)
            before = totals[:rank].sum(0)
        return Memory(before[..., :-1], before[..., -1])


class SequenceParallelDilatedAttention(SequenceParallelMixin, DilatedAttention):
    def attend(self, q, k, v, state):
        rank, P = self.rank_and_world(q, state)
        L = q.size(2)
        positions = (rank * L + torch.arange(L, device=q.device)) % self.window  # global positions, as the model
        q, k = rope(q, positions, self.config.rope_base), rope(k, positions, self.config.rope_base)
        patterns = []
        for w, r in zip(self.config.dilated_segments, self.config.dilated_rates):
            w = min(w, P * L)
            if w <= L:  # w divides L: this rank's segments are whole segments of the window
                patterns.append(dilated_pattern(q, k, v, w, r))
            else:
                patterns.append(self.distributed_pattern(q, k, v, w, r, rank, P))
        return mix_patterns(patterns, q.dtype), None

    def distributed_pattern(self, q, k, v, w, r, rank, P):
        """dilated_pattern for a segment spanning w/L ranks: this rank's O_i and lse_i (zero / -inf off the pattern)."""
        B, H, L, D = q.shape
        g = w // L                                   # ranks per segment
        first = rank // g * g
        G, i = min(g, P - first), rank - first       # this segment's ranks (the last may be cut short), my index
        n_kept = -(-L // r)                          # kept rows per rank, head and offset (padded: r need not divide L)
        # Rank i of the segment starts at position i·L in it; head h keeps the rows at its offsets mod r.
        offsets, used = head_offsets(H, r, q.device)                                        # (H, n_off)
        member = torch.arange(G, device=q.device)[:, None, None, None]
        rows = (offsets[:, :, None] - member * L) % r + r * torch.arange(n_kept, device=q.device)  # G, H, n_off, n_kept
        valid = used[:, :, None] & (rows < L)
        position = member * L + rows                                                          # in the segment
        mine = torch.where(valid[i], rows[i], 0).reshape(H, -1)
        take = lambda t: t.gather(2, mine[None, :, :, None].expand(B, H, -1, D)).view(B, H, -1, n_kept, D)
        # Sparsify first, then communicate: every rank of the segment sends only its kept rows of K and V.
        kv = all_gather(torch.cat((take(k), take(v)), dim=-1).unsqueeze(0), segment_group(self.seq_group, first, G))
        ks, vs = kv.permute(1, 2, 3, 0, 4, 5).reshape(B, H, -1, G * n_kept, 2 * D).split(D, dim=-1)  # rank-major
        across = lambda t: t.permute(1, 2, 0, 3).reshape(H, -1, G * n_kept)  # (G, H, n_off, n_kept), the same order
        key_position, key_valid = across(position), across(valid)
        # causal, own keys included
        allowed = (key_position[..., None, :] <= position[i][..., None]) & key_valid[..., None, :]
        # A padding query row may see only its own slot, so that no row is all -inf (0/0); it is dropped below.
        slots = torch.arange(n_kept, device=q.device)
        own = torch.arange(G * n_kept, device=q.device)[None, :] == i * n_kept + slots[:, None]
        allowed = allowed | (~valid[i][..., None] & own)
        o, lse = attend_kept_rows(take(q), ks, vs, allowed)
        return scatter_rows(o.view(B, H, -1, D), lse.view(B, H, -1), rows[i].reshape(H, -1), valid[i].reshape(H, -1), L)


SEQUENCE_PARALLEL = {InfiniAttention: SequenceParallelInfiniAttention,
                     DilatedAttention: SequenceParallelDilatedAttention,
                     LocalAttention: LocalAttention}  # local: segments never cross ranks, nothing to change


# ----------------------------------------------------------------------------------------------
# Entry points for train.py.

def init_sequence_parallel(seq_parallel):
    """After dist.init_process_group, on every rank: split the world into groups of seq_parallel consecutive ranks.
    Returns (group, rank in it, data-parallel index, number of data-parallel replicas)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if seq_parallel < 1 or world % seq_parallel:
        raise ValueError(f"seq_parallel={seq_parallel} must divide the number of processes ({world}); "
                         f"e.g. torchrun --nproc_per_node {seq_parallel}")
    if seq_parallel == world:
        group = dist.group.WORLD
    else:
        group, _ = dist.new_subgroups(group_size=seq_parallel)  # every rank creates every group, in order
    return group, rank % seq_parallel, rank // seq_parallel, world // seq_parallel


def make_sequence_parallel(model, group=None, seq_len=None):
    """Turn a GPT's attention layers, in place, into their sequence-parallel siblings over `group` (parameters,
    optimizer and checkpoints untouched, like nn.SyncBatchNorm.convert_sync_batchnorm). With seq_len, check now
    that such windows split (ValueError saying what to change) and create the subgroups the dilated patterns need."""
    for module in model.modules():  # by the layers held (a lone layer's config may name another kind)
        if isinstance(module, FullAttention):
            raise ValueError(FULL_IS_NOT_PARALLEL)
        if isinstance(module, (SlidingWindowAttention, ChunkRetriever, GroupedCrossAttention)):
            raise ValueError(GCA_IS_NOT_PARALLEL)
    group = group or dist.group.WORLD
    world = dist.get_world_size(group)
    if seq_len is not None:
        check_sequence_parallel(model.config, seq_len, world)
    for module in model.modules():
        if type(module) in SEQUENCE_PARALLEL:
            module.__class__ = SEQUENCE_PARALLEL[type(module)]
            module.seq_group = group
    if seq_len is not None and model.config.attn == 'dilated':  # collective among the members: all at once now
        L, rank = seq_len // world, dist.get_rank(group)
        for w in model.config.dilated_segments:
            g = min(w, seq_len) // L
            if g > 1:
                first = rank // g * g
                segment_group(group, first, min(g, world - first))
    return model


def sequence_parallel_loss(logits, targets, group=None):
    """This rank's share of the window's mean loss, times the group size P: Σ_rank-tokens ℓ · P / n_total, where
    n_total counts the targets != -1 of the whole window. DDP averages gradients over ranks (÷P), so the
    gradient is that of the window's mean loss, and the mean of these values over the group is that loss.
    A rank whose targets are all -1 (passkey fine-tuning) adds 0, never 0/0."""
    loss_sum = F.cross_entropy(at_least_fp32(logits.reshape(-1, logits.size(-1))), targets.reshape(-1),
                               ignore_index=-1, reduction='sum')
    n = (targets != -1).sum().to(loss_sum.dtype)
    dist.all_reduce(n, group=group)  # a count: no gradient
    return loss_sum * dist.get_world_size(group) / n.clamp(min=1)


# ----------------------------------------------------------------------------------------------
# What each rank sends, per layer (scripts/seqpar_comm.py prints it).

def communication_per_layer(config, seq_len, world, rank=0, batch_size=1, element_size=2, memory_element_size=4):
    """Bytes this rank sends per layer, as {'forward', 'backward', 'patterns': [(w, r, ranks sharing, bytes)]},
    counting (G-1)·chunk for a ring all-gather / reduce-scatter of chunks over G ranks. element_size: of K/V
    (2 = bf16); memory_element_size: of Infini's M and z (float32 even under autocast)."""
    check_sequence_parallel(config, seq_len, world)
    L, H, D, B = seq_len // world, config.n_head, config.head_size, batch_size
    if config.attn == 'dilated':
        patterns = []
        for w, r in zip(config.dilated_segments, config.dilated_rates):
            w_eff = min(w, seq_len)
            G = 1
            if w_eff > L:
                first = rank // (w_eff // L) * (w_eff // L)
                G = min(w_eff // L, world - first)
            n_off = head_offsets(H, r, 'cpu')[0].size(1)  # offsets per head (more than 1 when H < r)
            chunk = B * H * n_off * -(-L // r) * 2 * D * element_size  # kept rows of K and V, padded to ⌈L/r⌉
            patterns.append((w, r, G, (G - 1) * chunk))
        sent = sum(p[3] for p in patterns)
        return {'forward': sent, 'backward': sent, 'patterns': patterns}
    if config.attn == 'infini':
        chunk = B * H * D * (D + 1) * memory_element_size
        if config.mem_update == 'linear':
            return {'forward': (world - 1) * chunk, 'backward': (world - 1) * chunk, 'patterns': []}
        return {'forward': chunk * (rank < world - 1), 'backward': chunk * (rank > 0), 'patterns': []}
    return {'forward': 0, 'backward': 0, 'patterns': []}


def sent_bytes(log):
    """Bytes sent by this rank according to a count_communication() log (ring algorithms for collectives)."""
    total = {'all_gather': 0, 'reduce_scatter': 0, 'send': 0}
    for op, G, chunk in log:
        if op in total:
            total[op] += chunk * (G - 1) if op != 'send' else chunk
    return total
