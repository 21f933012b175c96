"""Benchmark: read and preprocess the 100 real ACDC training patients end to end (no cache). Prints a table."""
import time
from cardiac_nvae.data import iter_acdc, preprocess_frames, shared_data_root

def main(repeats=3):
    root = shared_data_root()
    if root is None: print('skipped: ../shared/data (real ACDC) is not present'); return
    root = root / 'acdc' / 'training'
    rows = []
    for r in range(repeats):
        t0 = time.perf_counter(); frames = list(iter_acdc(root)); t1 = time.perf_counter()
        ss = preprocess_frames(frames); t2 = time.perf_counter()
        rows.append((t1 - t0, t2 - t1, t2 - t0, len(ss)))
    print(f"{'run':>4} {'read s':>8} {'preprocess s':>13} {'total s':>8} {'slices':>7} {'slices/s':>9}")
    for i, (a, b, c, n) in enumerate(rows): print(f"{i:>4} {a:8.2f} {b:13.2f} {c:8.2f} {n:7d} {n / c:9.0f}")
    best = min(rows, key=lambda x: x[2])
    print(f"best total {best[2]:.2f} s for {best[3]} slices (target < 10 s)")

if __name__ == '__main__': main()
