"""U-Net training throughput (slices/s) with and without the NVAE shape loss: the ACU-Net overhead as a ratio in one run.

A step is the U-Net's forward pass, the loss (cross-entropy alone, or alpha * CE + omega * shape loss through a frozen
Default-N NVAE: two NVAE passes, the target's without gradients), backward and an Adam step, with the chapter's own
`UNet`, `ce_loss` and `shape_loss` (cardiac_nvae.acunet); the fastai Learner is left out so that the numbers are the
models'. CPU rows: quick-mode widths at 64x64 and the thesis' widths at 128x128 (batch 8, one thread by default, as on a
shared machine). CUDA rows (when a device is present): the thesis' U-Net at batch 32 on 128x128 slices, fp32 against
bf16 autocast (AMP) and channels-last. The `ratio` column is each row's step time over the U-Net row of the same case.

    python bench/bench_acunet.py [--steps 3] [--device cpu|cuda|all] [--threads 1] [--quick]
"""
import argparse, json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def _batch(bs, size, device, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (bs, size // 8, size // 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    return torch.rand(bs, 1, size, size, generator=g).to(device), y.to(device)

def step_rate(widths, size, bs, shape, steps=3, device='cpu', amp=False, channels_last=False, reduction='mean'):
    "Slices per second and milliseconds per training step of a U-Net, with (`shape=True`) or without the NVAE shape loss."
    import torch
    from cardiac_nvae.acunet import UNet, ce_loss, shape_loss, freeze
    from cardiac_nvae.nvae import NVAE, nvae_config
    torch.manual_seed(0)
    model = UNet(widths=widths).to(device)
    nvae = freeze(NVAE(nvae_config('default-n', size=size))).to(device) if shape else None
    x, y = _batch(bs, size, device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        if nvae is not None: nvae = nvae.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
            loss = ce_loss(logits, y)
            if nvae is not None: loss = loss + 1e4 * shape_loss(nvae, logits, y, reduction)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    step(); sync()   # warm-up: allocator, kernels
    t0 = time.perf_counter()
    for _ in range(steps): step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else float('nan')
    return dict(device=device, widths='x'.join(map(str, widths)), size=size, bs=bs, loss='CE + shape' if shape else 'CE',
                amp=amp, channels_last=channels_last, slices_per_s=round(bs / dt, 2), step_ms=round(1000 * dt, 1),
                peak_mib=round(peak, 1))

def with_ratios(rows):
    "Add `ratio`: step time over the CE-only row of the same device, widths, size, batch and precision."
    base = {(r['device'], r['widths'], r['size'], r['bs'], r['amp'], r['channels_last']): r['step_ms'] for r in rows if r['loss'] == 'CE'}
    for r in rows: r['ratio'] = round(r['step_ms'] / base[(r['device'], r['widths'], r['size'], r['bs'], r['amp'], r['channels_last'])], 2)
    return rows

def table(rows, title):
    import pandas as pd
    print(f"\n## {title}\n" + pd.DataFrame(rows).to_string(index=False), flush=True)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--device', default='all', choices=['cpu', 'cuda', 'all'])
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads (0: torch default)')
    ap.add_argument('--quick', action='store_true', help="CPU: quick-mode widths only (skip the thesis' U-Net)")
    ap.add_argument('--json', help='also write all rows to this JSON file')
    a = ap.parse_args(argv)
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    rows = []
    if a.device in ('cpu', 'all'):
        cases = [((8, 16, 32, 64, 128), 64, 8)] + ([] if a.quick else [((64, 128, 256, 512, 1024), 128, 8)])
        cpu = with_ratios([step_rate(w, s, bs, shape, a.steps) for w, s, bs in cases for shape in (False, True)])
        rows += cpu; table(cpu, f"CPU training step ({torch.get_num_threads()} thread(s)); ratio = step time / CE-only")
    if a.device in ('cuda', 'all'):
        if not torch.cuda.is_available(): print("\n## CUDA: skipped (no CUDA device)")
        else:
            w = (64, 128, 256, 512, 1024)
            gpu = with_ratios([step_rate(w, 128, 32, shape, max(a.steps, 10), 'cuda', amp, cl)
                               for amp in (False, True) for cl in (False, True) for shape in (False, True)])
            rows += gpu; table(gpu, f"CUDA training step ({torch.cuda.get_device_name()}; AMP = bf16 autocast)")
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))

if __name__ == '__main__': main()
