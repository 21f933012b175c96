"""Overhead per sweep point with a trivial chapter (the toy chapter of cardiac_nvae.sweep), locally and through Slurm.

What one `cardiac-nvae run` costs before any science: interpreter start, imports of the cli and of what `data_identity`
pulls in (cardiac_nvae.data imports torch), the papermill kernel start and the toy's cells, the record. Then the same
points as a local sweep (1 worker) and as a Slurm sweep on a one-node cluster started here (needs slurm-wlm, munge).
Usage: python bench/bench_sweep.py [--points 4] [--no-slurm]
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import pandas as pd

from cardiac_nvae.sweep import LocalSlurm, sweep, write_toy_chapter


def timed(cmd, repeat=3):
    "Best wall time of a command over `repeat` tries (seconds)."
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter(); subprocess.run(cmd, check=True, capture_output=True); best = min(best, time.perf_counter() - t0)
    return best


def parts(py=sys.executable):
    "Wall time of each ingredient of one run, measured on its own."
    kernel = ("import time, papermill as pm, nbformat, sys; nb = nbformat.v4.new_notebook(); "
              "nb.cells = [nbformat.v4.new_code_cell('1')]; t = time.perf_counter(); "
              "pm.execute_notebook(nb, sys.argv[1], kernel_name='python3', progress_bar=False); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory(dir=os.environ.get('CARDIAC_NVAE_CACHE')) as d:
        out = [subprocess.run([py, '-c', kernel, f'{d}/k.ipynb'], capture_output=True, text=True, check=True) for _ in range(3)]
    return {'python start': timed([py, '-c', 'pass']),
            'import cli + papermill + yaml': timed([py, '-c', 'import cardiac_nvae.cli, papermill, yaml']) - timed([py, '-c', 'pass']),
            'import cardiac_nvae.data (torch, pandas, nibabel)': timed([py, '-c', 'import cardiac_nvae.data']) - timed([py, '-c', 'pass']),
            'papermill: kernel start + one cell': min(float(o.stdout.strip().splitlines()[-1]) for o in out)}


def per_point(sd):
    "Seconds recorded by the cli (papermill execution) per point, and first start to last finish of the sweep."
    recs = [json.loads(p.read_text()) for p in Path(sd).glob('*/record.json')]
    ts = pd.to_datetime([r['started'] for r in recs]), pd.to_datetime([r['finished'] for r in recs])
    return sum(r['seconds'] for r in recs) / len(recs), (ts[1].max() - ts[0].min()).total_seconds()


def main(points=4, use_slurm=True):
    rows = [dict(what=k, seconds=round(v, 2)) for k, v in parts().items()]
    with tempfile.TemporaryDirectory(dir=os.environ.get('CARDIAC_NVAE_CACHE')) as d:
        d = Path(d); toy = write_toy_chapter(d / 'toy.ipynb')
        spec = lambda name: {'name': name, 'stages': [{'name': 't', 'chapter': str(toy), 'grid': {'x': list(range(points))}}],
                             'slurm': {'time_min': 30, 'mem_gb': 1, 'array_parallelism': 1}}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', 'run', str(toy), '--runs-dir', str(d / 'single'), '--name', 'a', '--quiet'],
                       check=True, capture_output=True)
        rows.append(dict(what='one `cardiac-nvae run` of the toy (whole process)', seconds=round(time.perf_counter() - t0, 2)))
        t0 = time.perf_counter(); sd, _ = sweep(spec('local'), 'local', workers=1, runs_dir=d); wall = time.perf_counter() - t0
        pm_s, _ = per_point(sd)
        rows += [dict(what='local sweep, 1 worker: wall per point', seconds=round(wall / points, 2)),
                 dict(what='  of which papermill execution (record "seconds")', seconds=round(pm_s, 2))]
        if use_slurm and LocalSlurm.available():
            with LocalSlurm(d / 'slurm') as c:
                t0 = time.perf_counter(); sd, _ = sweep(spec('slurm'), 'slurm', runs_dir=d, env=c.env, wait=True)
                wall = time.perf_counter() - t0
                pm_s, span = per_point(sd)
                rows += [dict(what='slurm sweep, 1 task at a time: wall per point', seconds=round(wall / points, 2)),
                         dict(what='  of which papermill execution (record "seconds")', seconds=round(pm_s, 2))]
        elif use_slurm: rows.append(dict(what='slurm: not installed (apt-get install -y slurm-wlm munge)', seconds=None))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--points', type=int, default=4); ap.add_argument('--no-slurm', action='store_true')
    a = ap.parse_args(); main(a.points, not a.no_slurm)
