"""Benchmark: generate phantom datasets (issue 2, section 5: 100 ACDC-layout patients in under 30 s).

Run: python bench/bench_phantom.py [--patients 100] [--subjects 20]
Prints one row per task: wall seconds, CPU seconds of this process, patients/s, size on disk. Times are wall-clock on a shared machine:
compare rows of one run, not runs on different days.
"""
import argparse, shutil, tempfile, time
from pathlib import Path

from cardiac_nvae.data import load_slices
from cardiac_nvae.phantom import make_phantom


def timed(fn):
    "Run `fn`; return its result, wall seconds and CPU seconds of this process."
    t, c = time.perf_counter(), time.process_time(); out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def size_mb(root):
    return sum(p.stat().st_size for p in Path(root).rglob('*') if p.is_file()) / 2**20


def main(patients=100, subjects=20, seed=0):
    work = Path(tempfile.mkdtemp(prefix='bench-phantom-'))
    rows = []
    try:
        acdc, s, cpu = timed(lambda: make_phantom(work / 'acdc', 'acdc', patients, seed))
        rows.append(('generate ACDC layout', patients, s, cpu, size_mb(acdc)))
        ss, s, cpu = timed(lambda: load_slices(acdc / 'training', use_cache=False))
        rows.append((f'load_slices ACDC ({len(ss)} slices)', patients, s, cpu, float('nan')))
        mnms, s, cpu = timed(lambda: make_phantom(work / 'mnms', 'mnms', subjects, seed))
        rows.append(('generate M&Ms-1 layout (4D cine)', subjects, s, cpu, size_mb(mnms)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'task':<40} {'patients':>8} {'seconds':>8} {'cpu s':>7} {'patients/s':>10} {'MiB':>7}")
    for name, n, s, cpu, mb in rows:
        print(f"{name:<40} {n:>8d} {s:>8.2f} {cpu:>7.2f} {n / s:>10.2f} {mb:>7.1f}")
    target = rows[0][2]
    print(f"\nACDC-layout generation of {patients} patients: {target:.1f} s wall (target < 30 s for 100); "
          f"wall above CPU time means the machine is shared")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--patients', type=int, default=100)
    ap.add_argument('--subjects', type=int, default=20)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    main(a.patients, a.subjects, a.seed)
