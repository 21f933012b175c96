"""Training throughput (masks/s) of the three baselines through the shared fastai machinery.

CPU always; CUDA with mixed precision off and on when a GPU is present (skipped cleanly otherwise).
Synthetic one-hot masks (random discs): throughput does not depend on the content.
Usage: python bench/bench_baselines.py [--steps 4] [--bs 16] [--widths thesis|quick] [--device all|cpu|cuda] [--threads 1 0]
"""
import argparse, time, warnings

import numpy as np
import torch
from fastai.callback.core import Callback

from cardiac_nvae.baselines import BASELINES, WIDTHS, baseline_learner, n_params
from cardiac_nvae.data import SliceSet, mask_dataloaders
import pandas as pd

warnings.filterwarnings('ignore')
QUICK_WIDTHS = (8, 16, 32, 64)


def disc_masks(n, size=128, seed=0):
    "Label maps with three nested discs at random places: plausible masks for timing."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(40, 88), rng.uniform(40, 88), rng.uniform(12, 24)
        d = np.hypot(yy - cy, xx - cx)
        out[i][d < r + 8] = 1; out[i][d < r + 4] = 2; out[i][d < r] = 3
    return out


class BatchTimer(Callback):
    "Wall time of each training batch (forward, backward, step), synchronised on CUDA."
    order = 100
    def before_fit(self): self.times = []
    def _sync(self):
        if self.dls.device is not None and torch.device(self.dls.device).type == 'cuda': torch.cuda.synchronize()
    def before_batch(self):
        if self.training: self._sync(); self.t0 = time.perf_counter()
    def after_batch(self):
        if self.training: self._sync(); self.times.append(time.perf_counter() - self.t0)


def slices(masks):
    meta = pd.DataFrame({'patient': [f'p{i}' for i in range(len(masks))]})
    return SliceSet(np.zeros(masks.shape, np.float32), masks, meta)


def bench_one(kind, device, amp, bs, steps, widths, warmup=2):
    masks = disc_masks(bs * (steps + warmup))
    dls = mask_dataloaders(slices(masks), slices(masks[:bs]), bs=bs, seed=0, device=torch.device(device))
    timer = BatchTimer()
    learn = baseline_learner(kind, dls, lr=1e-4, quiet=True, device=device, amp=amp, widths=widths, cbs=[timer])
    learn.fit(1)
    t = np.array(timer.times[warmup:])
    return dict(model=kind, device=device, amp=amp, bs=bs, params_M=round(n_params(learn.model) / 1e6, 3),
                ms_per_step=round(1e3 * t.mean(), 1), masks_per_s=round(bs / t.mean(), 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=4, help='timed training steps per configuration (after 2 warm-up steps)')
    ap.add_argument('--bs', type=int, default=16, help='batch size (thesis: 16)')
    ap.add_argument('--widths', choices=['thesis', 'quick'], default='thesis')
    ap.add_argument('--device', choices=['all', 'cpu', 'cuda'], default='all')
    ap.add_argument('--cuda-steps', type=int, default=50, help='timed steps on CUDA')
    ap.add_argument('--threads', type=int, nargs='*', default=[1, 0],
                    help='CPU thread counts to time (0: torch default); on a shared CPU more threads can be much slower')
    a = ap.parse_args()
    widths = WIDTHS if a.widths == 'thesis' else QUICK_WIDTHS
    configs = []
    default_threads = torch.get_num_threads()
    if a.device in ('all', 'cpu'): configs += [('cpu', False, a.steps, t or default_threads) for t in a.threads]
    if a.device in ('all', 'cuda'):
        if torch.cuda.is_available(): configs += [('cuda', False, a.cuda_steps, default_threads), ('cuda', True, a.cuda_steps, default_threads)]
        else: print("CUDA not available: GPU rows skipped")
    print(f"torch {torch.__version__}, {default_threads} CPU threads by default, widths {widths}"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    rows = []
    for dev, amp, steps, threads in configs:
        torch.set_num_threads(threads)
        rows += [dict(bench_one(kind, dev, amp, a.bs, steps, widths), threads=threads) for kind in BASELINES]
    df = pd.DataFrame(rows)
    cpu1 = df[(df.device == 'cpu')].drop_duplicates('model').set_index('model').masks_per_s if (df.device == 'cpu').any() else None
    if cpu1 is not None: df['x_first_cpu_row'] = (df.masks_per_s / df.model.map(cpu1)).round(1)
    print(df.to_string(index=False))


if __name__ == '__main__':
    main()
