"""How long each chapter's quick run takes: `cardiac-nvae run CHAPTER` with its quick defaults on the embedded phantom.

One run at a time (so the times add up to what a newcomer waits), each into a scratch runs folder; wall time, and the
CPU time of the run with its papermill kernel (user + system of the reaped child processes). The machine's load
average is printed beside them: other work on the machine stretches the wall time, not the CPU time.
`--update-readme` writes the CPU times (wall time on an idle machine: the chapters train on one thread) into the 'quick run' column of the Chapters table of README.md and
nbs/index.ipynb (only the chapters measured in this call; the others keep their cell).
Usage: python bench/chapter_times.py [CHAPTER ...] [--update-readme] [--keep DIR]
"""
import argparse, json, os, re, resource, subprocess, sys, tempfile, time
from pathlib import Path

from cardiac_nvae.cli import chapters  # the notebooks `cardiac-nvae run` runs: those with a parameters cell

ROOT = Path(__file__).resolve().parents[1]
COLUMN = 'quick run'
NOTE = ("*quick run*: CPU time of `cardiac-nvae run CHAPTER` with the chapter's quick defaults on the phantom, with "
        "its papermill kernel, one run at a time (`python bench/chapter_times.py`); chapters train on one thread, so on an "
        "otherwise idle machine the wall time is about the same. A chapter given an earlier run (`-p nvae_run NAME`, ...) "
        "skips the models it would otherwise train inline.")


def module_of(stem):
    "The module a chapter exports (its `#| default_exp`)."
    for c in json.loads((ROOT / 'nbs' / f'{stem}.ipynb').read_text())['cells']:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
        if m: return m.group(1)
    raise SystemExit(f"error: nbs/{stem}.ipynb has no '#| default_exp' cell")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_chapter(stem, runs_dir):
    "Wall and CPU seconds of one quick run, and its status from the run record."
    env = {**os.environ, 'CARDIAC_NVAE_DATA': 'phantom'}
    cmd = [sys.executable, '-m', 'cardiac_nvae.cli', 'run', stem, '--quiet', '--name', stem, '--runs-dir', str(runs_dir)]
    cpu0, t0 = children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    rec = runs_dir / stem / 'record.json'
    status = json.loads(rec.read_text()).get('status', '?') if rec.exists() else f'no record (exit {r.returncode})'
    if r.returncode: print(f"{stem}: exit {r.returncode}: {(r.stdout + r.stderr).strip().splitlines()[-1:]}", file=sys.stderr)
    return dict(chapter=stem, wall_s=round(wall, 1), cpu_s=round(cpu, 1), status=status, load=round(os.getloadavg()[0], 1))


def clock(s):
    s = int(round(s))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


def with_times(text, times):
    "Markdown `text` with the Chapters table's 'quick run' column set from {module: seconds} (added when missing)."
    lines = text.split('\n')
    h = next((i for i, l in enumerate(lines) if l.startswith('| notebook | module |')), None)
    if h is None: raise SystemExit("error: no Chapters table ('| notebook | module |') to write the times into")
    split = lambda l: [c.strip() for c in l.strip().strip('|').split('|')]
    head = split(lines[h])
    if COLUMN not in head: head.append(COLUMN); lines[h] = '| ' + ' | '.join(head) + ' |'; lines[h + 1] = lines[h + 1].rstrip() + '---|'
    col, i = head.index(COLUMN), h + 2
    while i < len(lines) and lines[i].startswith('|'):
        cells = split(lines[i]); cells += [''] * (len(head) - len(cells))
        m = re.search(r'`cardiac_nvae\.(\w+)`', lines[i])
        if m and m.group(1) in times: cells[col] = clock(times[m.group(1)])
        lines[i] = ('| ' + ' | '.join(cells) + ' |').replace('|  |', '| |')
        i += 1
    if NOTE not in text: lines[i:i] = ['', NOTE]
    return '\n'.join(lines)


def update_readme(times):
    "Write {module: seconds} into README.md and the matching markdown cell of nbs/index.ipynb."
    readme = ROOT / 'README.md'
    readme.write_text(with_times(readme.read_text(), times))
    p = ROOT / 'nbs' / 'index.ipynb'; nb = json.loads(p.read_text())
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'markdown' and '| notebook | module |' in s: c['source'] = with_times(s, times).splitlines(True)
    p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('chapters', nargs='*', help='chapter stems (default: every chapter)')
    ap.add_argument('--update-readme', action='store_true', help="write the CPU times into README's Chapters table")
    ap.add_argument('--keep', help='runs folder to keep (default: a scratch folder, removed afterwards)')
    a = ap.parse_args(argv)
    names = a.chapters or chapters()
    unknown = sorted(set(names) - set(chapters()))
    if unknown: raise SystemExit(f"error: no chapter {unknown}; chapters: {', '.join(chapters())}")
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(a.keep or scratch); runs.mkdir(parents=True, exist_ok=True)
        print(f"{'chapter':<15} {'wall':>11} {'CPU':>11} {'CPU/wall':>8}  {'load':>4}  status", flush=True)
        rows = []
        for stem in names:
            r = time_chapter(stem, runs); rows.append(r)
            print(f"{stem:<15} {clock(r['wall_s']):>11} {clock(r['cpu_s']):>11} {r['cpu_s'] / r['wall_s']:>8.2f}  {r['load']:>4}  {r['status']}", flush=True)
    print(f"{'total':<15} {clock(sum(r['wall_s'] for r in rows)):>11} {clock(sum(r['cpu_s'] for r in rows)):>11}")
    if a.update_readme:
        done = {module_of(r['chapter']): r['cpu_s'] for r in rows if r['status'] == 'done'}  # the wall time depends on the machine's load
        update_readme(done)
        print(f"README.md and nbs/index.ipynb: quick-run times of {', '.join(sorted(done)) or 'no chapter'}")
    if any(r['status'] != 'done' for r in rows): sys.exit(1)


if __name__ == '__main__':
    main()
