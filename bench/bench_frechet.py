"""Time the Fréchet distance: `cardiac_nvae.frds` against the scipy `sqrtm` formulation, at 512 and 2048 dimensions.

Run: `python bench/bench_frechet.py [--repeats 3] [--dims 512 2048]`. Prints a table of best-of-`repeats`
wall times (seconds), the speed-up over scipy and the relative difference of the values.
The machine is shared: compare the ratios within one run, not the absolute times across runs.
"""
import argparse, time
import numpy as np
import scipy.linalg
import torch
from cardiac_nvae.frds import frechet_distance, frechet_from_features, gaussian_stats

def frechet_scipy(mu1, s1, mu2, s2):
    "The usual formulation: a general matrix square root of the non-symmetric product."
    c = scipy.linalg.sqrtm(s1 @ s2)
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(c).real)

def best_time(fn, repeats):
    "Smallest wall time of `repeats` calls, and the last value."
    best = float('inf')
    for _ in range(repeats):
        t = time.perf_counter(); v = fn(); best = min(best, time.perf_counter() - t)
    return best, v

def covariances(d, n, seed=0):
    "Means and covariances of two well-conditioned random feature sets with n samples in d dimensions."
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) @ (np.eye(d) + 0.2 * rng.normal(size=(d, d)) / np.sqrt(d)) + 0.05
    (ma, sa), (mb, sb) = gaussian_stats(a), gaussian_stats(b)
    return a, b, (ma.numpy(), sa.numpy(), mb.numpy(), sb.numpy())

def main(dims=(512, 2048), repeats=3):
    rows = []
    for d in dims:
        a, b, stats = covariances(d, 2 * d)
        t_ref, v_ref = best_time(lambda: frechet_scipy(*stats), repeats)
        t_ours, v_ours = best_time(lambda: frechet_distance(*stats), repeats)
        t_feat, v_feat = best_time(lambda: frechet_from_features(a[:d // 2], b[:d // 2]), repeats)
        rows.append((d, t_ref, t_ours, t_ref / t_ours, abs(v_ours - v_ref) / abs(v_ref), t_feat))
    print(f"torch threads: {torch.get_num_threads()}; best of {repeats}")
    print(f"{'dim':>5} | {'scipy sqrtm (s)':>15} | {'frechet_distance (s)':>20} | {'speed-up':>8} | {'rel. diff':>9} | {'features, n=d/2 (s)':>19}")
    print('-' * 94)
    for d, tr, to, su, rd, tf in rows:
        print(f"{d:>5} | {tr:>15.3f} | {to:>20.3f} | {su:>7.1f}x | {rd:>9.1e} | {tf:>19.3f}")
    return rows

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dims', type=int, nargs='+', default=[512, 2048])
    p.add_argument('--repeats', type=int, default=3)
    args = p.parse_args()
    main(args.dims, args.repeats)
