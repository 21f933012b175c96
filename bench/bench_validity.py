"""Benchmark: anatomical validity of the 1,902 real ACDC training masks, batched checker against the
straightforward per-mask scikit-image loop of the same definition. Prints a table (masks/s, speed-up,
whether the verdict tables are identical). Usage: python bench/bench_validity.py [--repeats 3] [--definitions thesis vital]"""
import argparse, os, resource, time
from cardiac_nvae.data import load_slices, shared_data_root
from cardiac_nvae.validity import anatomical_errors, reference_errors

def cpu_seconds():
    "CPU time of this process and its finished children (worker processes)."
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

def best_time(f, repeats):
    "Best wall time of `repeats` calls of `f`, the CPU seconds of that call, and its last result."
    best = (float('inf'), 0)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), cpu_seconds(); out = f(); t, c = time.perf_counter() - t0, cpu_seconds() - c0
        best = min(best, (t, c))
    return best[0], best[1], out

def main(repeats=3, definitions=('thesis', 'vital')):
    root = shared_data_root()
    if root is None: print('skipped: ../shared/data (real ACDC) is not present'); return
    masks = load_slices(root / 'acdc' / 'training').masks
    n = len(masks)
    print(f"{n} masks {masks.shape[1]}x{masks.shape[2]}, {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}, best of {repeats}")
    print("masks/s: wall clock on this (shared) machine; masks/CPU-s: per CPU second used, a load-independent measure")
    print(f"{'definition':<10} {'method':<30} {'seconds':>8} {'masks/s':>8} {'speed-up':>9} {'masks/CPU-s':>12} {'verdicts equal':>15}")
    for d in definitions:
        t_ref, c_ref, ref = best_time(lambda: reference_errors(masks, d), max(1, repeats - 1))
        print(f"{d:<10} {'per-mask loop (scikit-image)':<30} {t_ref:8.2f} {n / t_ref:8.0f} {1:9.1f} {n / c_ref:12.0f} {'reference':>15}")
        for label, kw in (('batched, 1 process', dict(workers=1)), ('batched, 2 processes', dict(workers=2))):
            t, c, got = best_time(lambda: anatomical_errors(masks, d, **kw), repeats)
            print(f"{d:<10} {label:<30} {t:8.2f} {n / t:8.0f} {t_ref / t:9.1f} {n / c:12.0f} {'yes' if got.equals(ref) else 'NO':>15}")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--definitions', nargs='+', default=['thesis', 'vital'])
    a = p.parse_args()
    main(a.repeats, a.definitions)
