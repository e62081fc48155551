"""
The model's fast paths as they run on the GPU (bf16 autocast) against the same modules in float64: values and
gradients, every attention kind; the streaming path (state carried over calls) against float64 too; and
torch.compile(fullgraph=True) of one block of each kind against the eager block. Exits non-zero on a failure.

    python scripts/gpu_check.py                          # CUDA: d=1024, 8 heads x 128, T=8K, segment 2048
    python scripts/gpu_check.py --device cpu --small     # float32 on a CPU at small sizes (seconds)
    python scripts/gpu_check.py --json gpu_check.json           # the results as JSON too

The float64 reference is model.py's own code in float64 (tests/test_model.py pins that to literal references),
so a failure here means the fast path loses precision in bf16, or a GPU kernel differs from the CPU one.
Error measure: ||fast - float64|| / ||float64|| (Frobenius), per output and per gradient tensor.
"""

import argparse
import copy
import importlib.util
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, for model.py
from model import ATTENTION, Block, GPTConfig  # noqa: E402
from bench import LAYER_KINDS as KINDS  # noqa: E402  (the kinds bench.py measures)

SIZES = {
    # The paper's dilated schedule (w = 2048..32768, r = 1, 2, 4, 6, 12) scaled down 8x, so that T = 8K holds two
    # windows of lcm(w) = 4096 and the rates 6 and 12 still do not divide w.
    'gpu': dict(B=1, T=8192, n_embd=1024, n_head=8, segment_len=2048,
                dilated_segments=(256, 512, 1024, 2048, 4096), dilated_rates=(1, 2, 4, 6, 12)),
    'small': dict(B=2, T=1024, n_embd=64, n_head=2, segment_len=128,
                  dilated_segments=(64, 128, 256, 512), dilated_rates=(1, 2, 4, 6)),
}


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def make_layer(kind, size, device):
    cfg = GPTConfig(vocab_size=256, n_layer=1, n_head=size['n_head'], n_embd=size['n_embd'],
                    segment_len=size['segment_len'], dilated_segments=size['dilated_segments'],
                    dilated_rates=size['dilated_rates'], **KINDS[kind])
    torch.manual_seed(0)
    layer = ATTENTION[cfg.attn](cfg).to(device)
    # Scores of a few units (q·k/√d ~ N(0, 2)): peaked attention, where precision matters, not a near-uniform one.
    torch.nn.init.normal_(layer.c_attn.weight, std=math.sqrt(2 / cfg.n_embd))
    torch.nn.init.normal_(layer.c_proj.weight, std=0.02)
    if hasattr(layer, 'gate'):
        torch.nn.init.normal_(layer.gate)  # not all 0: each head mixes memory and local differently
    return cfg, layer


def run(module, x, dy, autocast, with_grad=True):
    """Output and {name: grad} (x's grad as 'input') of module(x) with upstream gradient dy."""
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(with_grad)
    with autocast:
        y, _ = module(x)
    if not with_grad:
        return y.detach(), {}
    y.backward(dy.to(y.dtype))
    grads = {name.removeprefix('_orig_mod.'): p.grad for name, p in module.named_parameters()}  # compile's prefix
    grads['input'] = x.grad
    return y.detach(), grads


def stream(module, x, pieces, autocast):
    """module over x fed in len(pieces) calls (lengths `pieces`), the state carried, no autograd."""
    outputs, state, start = [], None, 0
    with torch.no_grad(), autocast:
        for n in pieces:
            y, state = module(x[:, start:start + n], state)
            outputs.append(y)
            start += n
    return torch.cat(outputs, dim=1)


def check_kind(kind, size, device, autocast, tol, results):
    cfg, layer = make_layer(kind, size, device)
    ref = copy.deepcopy(layer).double()
    S = cfg.segment_len
    for T in (size['T'], size['T'] * 3 // 4 + S // 2 + 3):  # a multiple of every period, and a ragged length
        torch.manual_seed(1)
        x = torch.randn(size['B'], T, cfg.n_embd, device=device)
        dy = torch.randn_like(x).to(torch.bfloat16).float()  # exactly representable in bf16, as fed to both
        y, grads = run(layer, x, dy, autocast)
        y64, grads64 = run(ref, x.double(), dy.double(), torch.autocast(device.type, enabled=False))
        record(results, kind, f'values T={T}', rel_err(y, y64), tol)
        worst = max(grads64, key=lambda n: rel_err(grads[n], grads64[n]))
        record(results, kind, f'grads T={T} (worst: {worst}, of {len(grads)})',
               rel_err(grads[worst], grads64[worst]), tol)
    # Streaming: three calls of uneven length (one ends mid-segment) carrying the state, against one float64 call.
    T = size['T']
    pieces = (S // 2 + 1, T // 2, T - T // 2 - S // 2 - 1)
    x = torch.randn(size['B'], T, cfg.n_embd, device=device)
    y = stream(layer, x, pieces, autocast)
    y64, _ = run(ref, x.double(), None, torch.autocast(device.type, enabled=False), with_grad=False)
    record(results, kind, f'streamed in {len(pieces)} calls, T={T}', rel_err(y, y64), tol)


def check_compile(kind, size, device, autocast, tol, backend, results):
    """torch.compile(fullgraph=True) of one block (a graph break raises) against the same block eager."""
    cfg, _ = make_layer(kind, size, device)
    torch.manual_seed(0)
    block = Block(cfg).to(device)
    torch._dynamo.reset()  # each kind compiles from scratch, not against another kind's cache
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    x = torch.randn(size['B'], size['T'], cfg.n_embd, device=device)
    dy = torch.randn_like(x)
    name = f'torch.compile(fullgraph=True, backend={backend}) block, T={size["T"]}'
    t0 = time.perf_counter()
    try:
        y, grads = run(compiled, x, dy, autocast)
    except Exception as e:  # a graph break, an unsupported op, a lowering error
        record(results, kind, name, None, tol, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
        return
    y_eager, grads_eager = run(block, x, dy, autocast)
    err = max([rel_err(y, y_eager)] + [rel_err(grads[n], grads_eager[n]) for n in grads_eager])
    record(results, kind, f'{name} vs eager, values and grads ({time.perf_counter() - t0:.0f} s)', err, tol)


REPORT = dict(path=None, header={})  # --json: rewritten after every check, so a run cut short keeps what it found


def record(results, kind, check, err, tol, error=None):
    ok = error is None and err is not None and math.isfinite(err) and err <= tol
    results.append(dict(kind=kind, check=check, rel_err=err, tol=tol, ok=ok, error=error))
    shown = error or f"{err:.2e}"
    print(f"{'ok  ' if ok else 'FAIL'} {kind:<13} {check:<72} rel err {shown} (tol {tol:.0e})", flush=True)
    if REPORT['path']:
        with open(REPORT['path'] + '.tmp', 'w') as f:
            json.dump({**REPORT['header'], 'results': results}, f, indent=1)
        os.replace(REPORT['path'] + '.tmp', REPORT['path'])


def use_model_file(path):
    """--model: import another model.py (a proposed change, say) as `model`, leaving the repo's untouched."""
    global ATTENTION, Block, GPTConfig
    if not os.path.isfile(path):
        raise SystemExit(f"error: --model {path}: no such file")
    spec = importlib.util.spec_from_file_location('model', path)
    sys.modules['model'] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ATTENTION, Block, GPTConfig = module.ATTENTION, module.Block, module.GPTConfig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    p.add_argument('--device', default='cuda', help="'cuda' (bf16 autocast) or 'cpu' (float32)")
    p.add_argument('--small', action='store_true', help='small sizes (CPU): d=64, 2 heads, T=1024, segment 128')
    p.add_argument('--kinds', default=','.join(KINDS), help='comma-separated subset of ' + ', '.join(KINDS))
    p.add_argument('--tol', type=float, default=None, help='relative error allowed (default 2e-2 bf16, 1e-4 float32)')
    p.add_argument('--skip-compile', action='store_true', help='skip the torch.compile checks')
    p.add_argument('--backend', default=None, help='torch.compile backend (default inductor on cuda, eager on cpu)')
    p.add_argument('--json', default=None, help='write the results here')
    p.add_argument('--model', default=None, help="check this model.py instead of the repo's (e.g. a proposed change)")
    args = p.parse_args(argv)
    if args.model:
        use_model_file(args.model)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; run with --device cpu --small for the float32 CPU check")
    kinds = [k.strip() for k in args.kinds.split(',') if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"error: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    size = SIZES['small' if args.small else 'gpu']
    cuda = device.type == 'cuda'
    # bf16 autocast on the GPU, as train.py runs; float32 on a CPU (its bf16 matmuls are not what training uses).
    autocast = torch.autocast('cuda', dtype=torch.bfloat16) if cuda else torch.autocast('cpu', enabled=False)
    tol = args.tol or (2e-2 if cuda else 1e-4)
    # CPU default 'eager': dynamo's whole-graph capture (what fullgraph=True checks) without a C++ build; with
    # torch 2.13 'aot_eager' trips a PyTorch stride mismatch on infini's backward (inductor passes: --backend inductor).
    backend = args.backend or ('inductor' if cuda else 'eager')
    if cuda:
        torch.set_float32_matmul_precision('high')  # TF32, as train.py sets
    name = torch.cuda.get_device_name(device) if cuda else 'cpu'
    print(f"gpu_check: {name}, torch {torch.__version__}, {'bf16 autocast' if cuda else 'float32'} vs float64, "
          f"model {os.path.abspath(args.model) if args.model else 'model.py'}, sizes {size}")
    results, t0 = [], time.perf_counter()
    REPORT.update(path=args.json, header=dict(device=name, torch=torch.__version__, model=args.model or 'model.py',
                                              size=size, tol=tol, backend=backend))
    for kind in kinds:
        try:
            check_kind(kind, size, device, autocast, tol, results)
        except Exception as e:
            record(results, kind, 'values/grads/streaming', None, tol, error=f"{type(e).__name__}: {str(e)[:300]}")
        if cuda:
            torch.cuda.empty_cache()
    if not args.skip_compile:
        for kind in kinds:
            check_compile(kind, size, device, autocast, tol, backend, results)
    failed = [r for r in results if not r['ok']]
    print(f"gpu_check: {len(results) - len(failed)}/{len(results)} checks passed in {time.perf_counter() - t0:.0f} s")
    if failed:
        names = '; '.join(f"{r['kind']} {r['check']}" for r in failed)
        raise SystemExit(f"error: {len(failed)} check(s) failed: {names}")


if __name__ == '__main__':
    main()
