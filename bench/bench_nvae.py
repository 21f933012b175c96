"""Training-step throughput (masks/s) and peak memory of the thesis' NVAE configurations.

A step is forward, the eq. 4.3 loss (cross-entropy + beta-weighted, balanced KL, as `NVAETerms` computes it, from the
module's own `weighted_kl`), backward and an Adamax step; the fastai Learner is left out so that the numbers are
the model's and the script runs on a machine with torch only.
CPU: Default-N and LatentSkip-N at batch 8 and 64; each case runs in a fresh process so that its peak resident
memory (resource.ru_maxrss) is its own. CUDA (when present): the same with and without mixed precision (bf16
autocast) and channels-last, peak memory from torch.cuda.max_memory_allocated. Then the avoidable costs we
looked for, before/after in the same run: spectral regularisation that restarts its power iteration at every
step (the thesis' code: 40 iterations from random vectors) against NVAE's persistent vectors (4 iterations);
a finite-gradient check with one host sync per parameter tensor (what the shared NaN guard does) against one
fused check; and, on CPU, torch's default thread count against one thread on a crowded machine.

    python bench/bench_nvae.py [--steps 3] [--device cpu|cuda|all] [--quick]
"""
import argparse, json, multiprocessing as mp, os, resource, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def _batch(bs, size=128, device='cpu', seed=0):
    import torch, torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    # blob-like masks: cheap, realistic class balance is not needed for timing
    y = torch.randint(0, 4, (bs, size // 8, size // 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    return F.one_hot(y, 4).permute(0, 3, 1, 2).float().to(device), y.to(device)

def nvae_api():
    "`cardiac_nvae.nvae`, or, where fastai is not installed (a bare GPU machine), its pure-torch model cells only."
    try:
        import cardiac_nvae.nvae as nv
        return nv
    except ImportError:
        import types
        src = (Path(__file__).resolve().parents[1] / 'cardiac_nvae' / 'nvae.py').read_text()
        mod = sys.modules['nvae_model_cells'] = types.ModuleType('nvae_model_cells')  # dataclasses look the module up
        exec(compile(src[:src.index('from functools import partial')], 'nvae.py (model cells)', 'exec'), mod.__dict__)
        return mod

def train_step_rate(config='default-n', bs=8, steps=3, device='cpu', amp=False, channels_last=False, sr_weight=0.,
                    sr_persistent=True, threads=None, grad_check=None, compile=False):
    "Masks per second of full training steps (forward, eq. 4.3 loss, backward, Adamax step) and peak memory in MiB."
    import torch, torch.nn.functional as F
    nv = nvae_api()
    if threads: torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nv.NVAE(nv.NVAE_CONFIGS[config]).to(device)
    x, y = _batch(bs, device=device)
    if channels_last: model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    group_layer, betas = torch.tensor(model.config.group_layer, device=device), (10., 9., 8.)
    sr = nv.SpectralRegulariser(model, persistent=sr_persistent) if sr_weight else None
    gamma = 0.5  # mid warm-up: KL balancing on, the costlier path
    opt = torch.optim.Adamax(model.parameters(), lr=1e-2, eps=1e-3, weight_decay=3e-4)
    forward = torch.compile(model) if compile else model
    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            logits, kl = forward(x)
        loss = F.cross_entropy(logits.float(), y, reduction='sum') / bs
        loss = loss + gamma * nv.weighted_kl(kl.float(), group_layer, betas, balance=True)[0]
        if sr is not None: loss = loss + sr_weight * sr()
        opt.zero_grad(set_to_none=True); loss.backward()
        if grad_check == 'per_param':   # one host sync per parameter tensor
            for p in model.parameters():
                if p.grad is not None and not torch.isfinite(p.grad).all(): raise FloatingPointError('non-finite gradient')
        elif grad_check == 'fused':     # one host sync per step
            if not torch.isfinite(torch.stack([p.grad.abs().amax() for p in model.parameters() if p.grad is not None])).all():
                raise FloatingPointError('non-finite gradient')
        opt.step()
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    t0 = time.perf_counter()
    step(); step(); sync()  # warm-up (allocator, kernels, first power iteration, compilation)
    warmup_s = time.perf_counter() - t0
    if device == 'cuda': torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    sync()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(config=config, bs=bs, device=device, amp=amp, channels_last=channels_last, sr=bool(sr_weight),
                sr_persistent=sr_persistent, threads=threads or 'default', grad_check=grad_check or '-', compile=compile, masks_per_s=round(bs * steps / dt, 2),
                step_ms=round(1000 * dt / steps, 1), peak_mib=round(peak, 1), warmup_s=round(warmup_s, 1))

def _child(q, kw):
    try: q.put(train_step_rate(**kw))
    except Exception as e: q.put(dict(kw, error=f"{type(e).__name__}: {e}"[:200]))

def isolated(**kw):
    "Run one CPU case in a fresh process, so that ru_maxrss is that case's peak."
    ctx = mp.get_context('spawn'); q = ctx.Queue(); p = ctx.Process(target=_child, args=(q, kw)); p.start()
    res = q.get(); p.join()
    return res

def table(rows, title):
    import pandas as pd
    df = pd.DataFrame(rows)
    print(f"\n## {title}\n" + df.to_string(index=False), flush=True)
    return df

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--device', default='all', choices=['cpu', 'cuda', 'all'])
    ap.add_argument('--quick', action='store_true', help='batch 8 only on CPU')
    ap.add_argument('--json', help='also write all rows to this JSON file')
    ap.add_argument('--compile', action='store_true', help='CUDA only: also time torch.compile (minutes of compilation)')
    a = ap.parse_args(argv)
    import torch
    rows = []
    configs = ('default-n', 'latentskip-n')
    if a.device in ('cpu', 'all'):
        cpu = [isolated(config=c, bs=bs, steps=a.steps) for c in configs for bs in ((8,) if a.quick else (8, 64))]
        rows += cpu; table(cpu, 'CPU training step (fresh process per case; peak = max RSS)')
        costs = [isolated(config='default-n', bs=8, steps=a.steps, sr_weight=0.1, sr_persistent=p) for p in (False, True)]
        costs += [isolated(config='default-n', bs=8, steps=a.steps, grad_check=g) for g in ('per_param', 'fused')]
        costs += [isolated(config='default-n', bs=8, steps=a.steps, threads=t) for t in (None, 1)]
        rows += costs; table(costs, 'Avoidable costs on CPU, Default-N batch 8 (before/after)')
    if a.device in ('cuda', 'all'):
        if not torch.cuda.is_available():
            print("\n## CUDA: skipped (no CUDA device)")
        else:
            gpu = [train_step_rate(c, bs, max(a.steps, 10), 'cuda', amp, cl) for c in configs for bs in (8, 64)
                   for amp in (False, True) for cl in (False, True)]
            rows += gpu; table(gpu, f'CUDA training step ({torch.cuda.get_device_name()}; AMP = bf16 autocast)')
            costs = [train_step_rate('default-n', 8, max(a.steps, 10), 'cuda', sr_weight=0.1, sr_persistent=p) for p in (False, True)]
            costs += [train_step_rate('default-n', 8, max(a.steps, 10), 'cuda', grad_check=g) for g in ('per_param', 'fused')]
            rows += costs; table(costs, 'Avoidable costs on CUDA, Default-N batch 8 (before/after)')
            if a.compile:
                comp = []
                for c in configs:
                    for bs in (8, 64):
                        for cm in (False, True):
                            try: comp.append(train_step_rate(c, bs, max(a.steps, 10), 'cuda', compile=cm))
                            except Exception as e: comp.append(dict(config=c, bs=bs, compile=cm, error=f"{type(e).__name__}: {e}"[:120]))
                rows += comp; table(comp, 'Launch overhead on CUDA: eager against torch.compile (warmup_s includes compilation)')
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))

if __name__ == '__main__': main()
