"""One lent GPU window, fully used (issue 19): pack here, one call there, stages side by side under deadlines.

    python bench/gpu_window.py pack [--dest .gpu]              # wheels the device lacks + ACDC slices, preprocessed and compressed
    python bench/gpu_window.py device --limit 540 [--toy]      # measure (<1 min), plan, run the stages, archive to $OUT
    python bench/gpu_window.py plan --measured m.json          # print the plan for a measured table (no GPU needed)

`bench/gpu_window.sh` wraps these (install from .gpu/ on the device; `rehearse` runs it all in a fresh venv here).
Stages are chapters run through `cardiac-nvae run` with their THESIS parameters and a `deadline` parameter, as
concurrent processes: the GPU is op-bound for these small models, so one process leaves it mostly idle.
"""
import argparse, io, json, math, os, shutil, subprocess, sys, tarfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'bench'))

LIMIT_MIB = 48  # the working tree and .gpu/ travel together in at most 64 MiB
DEVICE_LIST = ROOT / 'bench' / 'device-python-packages.txt'  # read on the lent machine (copy of ../shared/)
# what the device path imports: the chapters' modules, `cardiac-nvae run` (papermill) and the kernel it starts
IMPORTS = ('cardiac_nvae.data', 'cardiac_nvae.train', 'cardiac_nvae.baselines', 'cardiac_nvae.nvae', 'cardiac_nvae.frds',
           'cardiac_nvae.acunet', 'cardiac_nvae.metrics', 'cardiac_nvae.validity', 'cardiac_nvae.cli', 'cardiac_nvae.report',
           'papermill', 'papermill.engines', 'nbclient', 'nbformat', 'ipykernel.kernelapp', 'ipykernel.ipkernel',
           'ipykernel_launcher', 'jupyter_client', 'nibabel', 'yaml', 'fastai.vision.all', 'fastprogress', 'IPython',
           'nbdev.showdoc', 'matplotlib_inline.backend_inline')  # show_doc in every chapter; the kernel's inline figures
NEVER = {'cardiac-nvae', 'pip', 'setuptools', 'wheel'}
# imported here only because they are installed (optional back-ends and format checkers); the rehearsal runs without them
OPTIONAL = {'boto3', 'botocore', 's3transfer', 'jmespath', 'arrow', 'isoduration', 'fqdn', 'uri-template', 'webcolors',
            'rfc3339-validator', 'rfc3986-validator', 'rfc3987-syntax', 'jsonpointer', 'lark', 'orjson'}

# ---------------------------------------------------------------- pack
def norm(name): return name.lower().replace('_', '-').replace('.', '-')

def device_has(path=DEVICE_LIST):
    "Normalised distribution names on the lent device (one a line; '#' lines are notes)."
    return {norm(l.strip()) for l in Path(path).read_text().splitlines() if l.strip() and not l.startswith('#')}

def imported_dists(modules=IMPORTS):
    "`{distribution: version}` of everything importing `modules` pulls in, read in a fresh interpreter."
    code = f"""
import importlib, importlib.metadata as md, json, sys, warnings
warnings.filterwarnings('ignore')
for m in {list(modules)!r}:
    try: importlib.import_module(m)
    except Exception as e: print(f"cannot import {{m}}: {{e}}", file=sys.stderr)
pd = md.packages_distributions()
print(json.dumps({{d: md.version(d) for m in list(sys.modules) for d in pd.get(m.split('.')[0], [])}}))"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

def missing_dists(needed, have):
    "The distributions of `needed` (name -> version) the device lacks: `name==version`, sorted."
    return sorted(f"{d}=={v}" for d, v in needed.items() if norm(d) not in have and norm(d) not in NEVER | OPTIONAL
                  and not norm(d).startswith(('nvidia-', 'cuda-')))

def download(reqs, dest, python='3.12'):
    "Wheels of `reqs` (no dependencies) for CPython `python` on manylinux x86-64 into `dest`."
    dest.mkdir(parents=True, exist_ok=True)
    plat = sum((['--platform', p] for p in ('manylinux_2_28_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64')), [])
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:', '--python-version', python,
           '--implementation', 'cp', *plat, '-d', str(dest), *reqs]
    subprocess.run(cmd, check=True)

def folder_mib(d): return sum(f.stat().st_size for f in Path(d).rglob('*') if f.is_file()) / 2 ** 20

def pack(dest, data, python='3.12', with_data=True):
    "Write `dest`: requirements.txt, wheels for `python`, and the packed ACDC slices; the total size in MiB."
    from cardiac_nvae.data import pack_slices
    dest = Path(dest); dest.mkdir(parents=True, exist_ok=True)
    reqs = missing_dists(imported_dists(), device_has())
    (dest / 'requirements.txt').write_text('\n'.join(reqs) + '\n')
    download(reqs, dest / 'whl', python)
    if with_data:
        acdc = Path(data) / 'acdc' / 'training'
        if not acdc.is_dir(): raise SystemExit(f"error: --data {data}: no acdc/training folder")
        pack_slices(acdc, dest / 'data' / 'acdc' / 'training')  # the package's own preprocessing, through its cache
    size = folder_mib(dest)
    print(f"{len(reqs)} wheels ({folder_mib(dest / 'whl'):.1f} MiB) + data ({folder_mib(dest / 'data') if (dest / 'data').exists() else 0:.1f} MiB)"
          f" = {size:.1f} MiB in {dest}")
    if size >= LIMIT_MIB: raise SystemExit(f"error: {dest} holds {size:.1f} MiB, over the {LIMIT_MIB} MiB that may travel beside the tree")
    return size

def device_site(dest, have=None):
    "Link into `dest` the installed distributions the device also has (its list): a site folder like the device's, for the rehearsal."
    import importlib.metadata as md
    have, dest = have or device_has(), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    linked, names = set(), []
    for d in md.distributions():
        if norm(d.metadata['Name']) not in have or not d.files: continue
        names.append(d.metadata['Name'])
        base = Path(d.locate_file(''))
        for f in d.files:
            top = f.parts[0]
            if top in ('..', '__pycache__') or top in linked: continue
            src = base / top
            if src.exists(): (dest / top).symlink_to(src); linked.add(top)
    print(f"{len(names)} of the device's distributions linked into {dest}")
    return sorted(names)

# ---------------------------------------------------------------- plan (pure)
THESIS_STEPS = dict(  # training steps of each stage at the thesis' configuration (1,711 training slices)
    frds=200 * math.ceil(1711 / 256), nvae=100 * (1711 // 8), baselines=3 * 50 * (1711 // 16),
    unet=5 * 100 * (1711 // 32), acunet=100 * (1711 // 32))
# ms per step on an H200, eager, alone: NVAE measured (91); the rest projected from counted work (GPU-WINDOW.md:
# U-Net ~1.7 min and ACU-Net ~7 min per 100-epoch run); SimCLR and the small baseline VAEs are rough guesses
EAGER_MS = dict(frds=60., nvae=91., baselines=10., unet=19., acunet=78.)
EVAL_S = dict(frds=60, nvae=90, baselines=60, unet=45, acunet=45)  # evaluation after training (FRDS suites, test volumes)
START_S = 40  # notebook kernel, imports and data per process

def plan_window(budget_s, measured, done=None, acunet_seeds=5, concurrent_slowdown=None):
    """The stages of one window: `[{stage, after, deadline_s, seeds, projected_epochs, epochs, note}]`, pure.

    `measured`: `nvae_eager_ms`, `nvae_graph_ms` (None when capture failed) and `shared_slowdown` (step time with others
    running / alone). `done`: `{stage: epochs_done}` of records already in results/ (planned epochs: a finished one)."""
    done = dict(done or {})
    planned = dict(frds=200, nvae=100, baselines=50, unet=100, acunet=100)
    slow = concurrent_slowdown or measured.get('shared_slowdown') or 1.
    factor = (measured.get('nvae_eager_ms') or EAGER_MS['nvae']) / EAGER_MS['nvae']  # this machine vs the H200 measurement
    ms = {s: EAGER_MS[s] * factor * slow for s in EAGER_MS}
    graph = measured.get('nvae_graph_ms')
    if graph: ms['nvae'] = min(ms['nvae'], graph * slow)
    full = {s: START_S + THESIS_STEPS[s] * ms[s] / 1e3 for s in ms}
    full['acunet'] = START_S + THESIS_STEPS['acunet'] * ms['acunet'] / 1e3  # per seed (one process each)
    plan = []
    def entry(stage, after, avail, seeds=None):
        prev = done.get(stage)
        train_s = max(0., avail - EVAL_S[stage] - START_S)
        epochs = min(planned[stage], int(planned[stage] * train_s / max(full[stage] - START_S, 1e-9)))
        e = dict(stage=stage, after=after, deadline_s=round(train_s), epochs=planned[stage], projected_epochs=epochs,
                 seeds=seeds, note='full' if epochs >= planned[stage] else f'cut: about {epochs}/{planned[stage]} epochs')
        if prev is not None and prev >= planned[stage]: e.update(skip=True, note='skipped: a finished record is in results/')
        elif prev is not None and prev >= epochs: e.update(skip=True, note=f'skipped: results/ already has {prev}/{planned[stage]} epochs')
        elif prev is not None: e['note'] += f' (continues results/ {prev}/{planned[stage]})'
        plan.append(e); return e
    for s in ('frds', 'baselines', 'unet'): entry(s, None, budget_s)
    # the NVAE leaves the ACU-Net seeds (run side by side, one process each) time to train: at most 60 % of the window
    acunet_done = done.get('acunet', -1) >= planned['acunet']
    nv_avail = budget_s if acunet_done else min(budget_s * 0.6, full['nvae'] + EVAL_S['nvae'])
    nv = entry('nvae', None, nv_avail)
    if nv.get('skip') and not acunet_done:  # results/ keeps no weights: ACU-Net needs this window's NVAE
        nv.update(skip=False, note=nv['note'].replace('skipped', 'rerun for ACU-Net') )
    entry('acunet', 'nvae', budget_s - nv_avail, seeds=list(range(acunet_seeds)))
    return plan

def format_plan(plan):
    rows = [f"{'stage':10} {'after':6} {'deadline_s':>10} {'epochs':>8}  note"]
    rows += [f"{p['stage']:10} {p['after'] or '-':6} {p['deadline_s']:>10} {p['projected_epochs']:>3}/{p['epochs']:<4}  "
             f"{p['note']}{' seeds ' + str(p['seeds']) if p['seeds'] else ''}" for p in plan]
    return '\n'.join(rows)

# ---------------------------------------------------------------- measure (< 1 min)
def step_bench(cuda_graph, steps, bs=8, seed=0, size=128):
    "ms per NVAE Default-N training step at batch `bs` (thesis shapes) after warm-up, and the step path that ran."
    import numpy as np, torch
    from cardiac_nvae.data import SliceSet, mask_dataloaders
    from cardiac_nvae.nvae import NVAE, nvae_config, nvae_learner
    from cardiac_nvae.train import Callback
    import pandas as pd
    rng = np.random.default_rng(seed)
    n = bs * (steps + 3)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):  # nested discs: background, RV-like ring, myocardium, LV
        yy, xx = np.mgrid[:size, :size]; c = rng.integers(size * 2 // 5, size * 3 // 5, 2); r = ((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (size / 128) ** 2
        masks[i][r < 900] = 1; masks[i][r < 500] = 2; masks[i][r < 250] = 3
    ss = SliceSet(np.zeros(masks.shape, np.float32), masks, pd.DataFrame({'patient': ['p'] * n}), 0)
    dls = mask_dataloaders(ss, ss[np.arange(bs)], bs=bs, seed=seed)
    class Clock(Callback):
        order = 100
        def before_fit(self): self.t = []
        def after_batch(self):
            if self.training:
                if torch.cuda.is_available(): torch.cuda.synchronize()  # here only: the bench's own sync
                self.t.append(time.perf_counter())
    clock = Clock()
    learn = nvae_learner(NVAE(nvae_config('default-n', size=size)), dls, betas=(10., 9., 8.), cbs=[clock], quiet=True,
                         cuda_graph=cuda_graph, nan_check_every=50)
    learn.fit(1, 1e-2)
    dt = np.diff(clock.t[2:])  # the first steps: warm-up and capture
    return dict(ms=float(np.median(dt) * 1e3), steps=len(dt), path=getattr(learn, 'step_path', 'eager'), amp=learn.speed.get('amp'))

def measure(seconds=50, toy=False):
    "The measuring phase: NVAE step eager and captured alone, then eager beside other processes; a table and a dict."
    steps, others = (1, 1) if toy else (40, 3)
    me = [sys.executable, str(Path(__file__)), 'step', '--size', '32' if toy else '128']  # toy: the CPU rehearsal
    t0 = time.time()
    def one(graph, n=steps):
        try: out = subprocess.run(me + ['--graph', str(int(graph)), '--steps', str(n)], capture_output=True, text=True, timeout=seconds)
        except subprocess.TimeoutExpired: return dict(ms=None, path=f'timed out after {seconds} s')  # the plan then uses the H200 figure
        if out.returncode: return dict(ms=None, path=f"failed: {(out.stderr.strip().splitlines() or ['?'])[-1][:120]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    rows = {'eager alone': one(False), 'captured alone': one(True)}
    bg = [subprocess.Popen(me + ['--graph', '0', '--steps', str(steps * 3)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
          for _ in range(others)]
    try: rows[f'eager beside {others} others'] = one(False)
    finally:
        for p in bg: p.kill(); p.wait()
    alone, shared = rows['eager alone']['ms'], rows[f'eager beside {others} others']['ms']
    captured = rows['captured alone']
    m = dict(nvae_eager_ms=alone, nvae_graph_ms=captured['ms'] if captured.get('path') == 'cuda-graph' else None,
             shared_slowdown=(shared / alone) if alone and shared else None, rows=rows, seconds=round(time.time() - t0, 1))
    print(f"{'NVAE Default-N step, batch 8':32} {'ms/step':>8}  path")
    for k, r in rows.items(): print(f"{k:32} {r['ms'] if r['ms'] is None else round(r['ms'], 1)!s:>8}  {r.get('path')}, amp {r.get('amp')}")
    print(f"measured in {m['seconds']} s; slowdown beside others x{m['shared_slowdown'] or float('nan'):.2f}")
    return m

# ---------------------------------------------------------------- device: run the plan
CHAPTER = dict(frds='05_frds', baselines='03_baselines', nvae='04_nvae', unet='06_acunet', acunet='06_acunet')
TOY = dict(  # tiny data and epochs for the rehearsal: the same code paths, seconds on a CPU
    frds=dict(encoder_size=32, epochs=2, batch_pairs=16, max_train=64, max_valid=16, n_suite=32, torch_threads=1),
    baselines=dict(epochs=2, train_subset=32, valid_subset=16, widths=[8, 16, 32, 64], quick_lr=1e-3, torch_threads=1),
    nvae=dict(epochs=2, train_slices=32, valid_slices=16, test_patients=1, n_generate=16, other_epochs=0,
              simclr_epochs=1, encoder_size=32, torch_threads=1),
    unet=dict(widths=[8, 16, 32, 64, 128], train_slices=32, valid_slices=16, test_patients=1, epochs=2, bs=8, nvae_epochs=1,
              torch_threads=1),
    acunet=dict(widths=[8, 16, 32, 64, 128], train_slices=32, valid_slices=16, test_patients=1, epochs=2, bs=8, torch_threads=1))

def stage_params(stage, plan_entry, nvae_run=None, simclr_run=None, toy=False):
    "The chapter parameters of a stage: the chapter's THESIS parameters, the window's links and deadline, toy overrides."
    from thesis_scale import thesis_params, FALLBACK
    from cardiac_nvae.cli import find_notebook
    nb = find_notebook(CHAPTER[stage])
    p = dict(thesis_params(nb) or FALLBACK.get(nb.stem) or {})
    if stage in ('nvae', 'baselines'): p['simclr_run'] = simclr_run  # None: the chapter's inline encoder (its record says so)
    if stage == 'nvae': p.update(other_epochs=0)  # LatentSkip-N is not part of this window
    if stage == 'unet': p.update(models=['unet'], nvae_run=None, vae_run=None, nvae_epochs=1)
    if stage == 'acunet': p.update(models=['acunet'], nvae_run=str(nvae_run), vae_run=None, omega=126717.)
    if plan_entry.get('seeds') is not None: p['seeds'] = plan_entry['seeds']
    if toy: p.update(TOY[stage])
    p['deadline'] = max(1, plan_entry['deadline_s'])
    return nb, p

def results_done(results):
    "`{stage: epochs_done}` of window records in `results` (a cut run counts its epochs, a finished one its plan)."
    out = {}
    for f in sorted(Path(results).glob('*/window.json')):
        w = json.loads(f.read_text()); rec = f.parent / 'record.json'
        if w.get('toy') or not rec.exists(): continue
        r = json.loads(rec.read_text())
        if r.get('status', 'done') != 'done': continue
        n = r.get('epochs_done', w.get('epochs')) if r.get('stopped_at_deadline') else w.get('epochs')
        out[w['stage']] = max(out.get(w['stage'], 0), n or 0)
    return out

KEEP = ('.json', '.csv', '.npy', '.npz', '.ipynb', '.txt', '.md', '.yaml')  # records, logs, figure arrays; never weights

BACK_MIB = 15.5  # the device tool brings back files of at most 16 MiB

def archive(work, out, small_only=False):
    "Write `out/gpu_window.tgz` (records, logs, figure arrays, no weights) atomically: whatever happens later, it is there."
    tmp = Path(out) / '.gpu_window.tgz.tmp'
    cap = 2 ** 20 if small_only else 8 * 2 ** 20  # too large to come back: records and logs first, big arrays left out
    with tarfile.open(tmp, 'w:gz') as t:
        for f in sorted(Path(work).rglob('*')):
            if f.relative_to(work).parts[0] in ('site', 'cache'): continue  # the installed wheels and the slice cache
            try:
                if not (f.is_file() and f.suffix in KEEP and f.stat().st_size < cap): continue
                data = f.read_bytes()  # one snapshot: a running stage may rewrite the file while the archive is written
            except OSError: continue  # gone meanwhile (a temporary file renamed into place)
            info = tarfile.TarInfo(str(f.relative_to(work))); info.size, info.mtime = len(data), time.time()
            t.addfile(info, io.BytesIO(data))
    if not small_only and tmp.stat().st_size > BACK_MIB * 2 ** 20: return archive(work, out, small_only=True)
    os.replace(tmp, Path(out) / 'gpu_window.tgz')

def safe_archive(work, out, say):
    "`archive`, never ending the window: a failure is logged and the next archive tries again."
    try: archive(work, out)
    except Exception as e: say(f"archive failed ({type(e).__name__}: {e}); the next one tries again")

def stage_speed(stage, measured):
    "The `$CARDIAC_NVAE_SPEED` of a stage: the graph flag where the measured captured step won, NaN checks every 50 steps."
    graph = measured.get('nvae_graph_ms') and measured.get('nvae_eager_ms') and measured['nvae_graph_ms'] < measured['nvae_eager_ms']
    return dict(nan_check_every=50, **({'cuda_graph': True} if graph and stage in ('nvae', 'acunet') else {}))

def device(limit, out, work, results, toy=False, t0=None, stages=None):
    "Measure, plan and run the window's stages side by side; archive into `out` after each stage and at the end."
    import yaml
    from thesis_scale import device_name
    t0 = t0 or time.time()
    work, out = Path(work), Path(out); (work / 'runs').mkdir(parents=True, exist_ok=True); out.mkdir(parents=True, exist_ok=True)
    wlog = open(work / 'window.log', 'a')
    def say(msg): print(msg, flush=True); wlog.write(msg + '\n'); wlog.flush()
    m = measure(seconds=45 if toy else 50, toy=toy)
    (work / 'measure.json').write_text(json.dumps(m, indent=1))
    if m['rows']['eager alone']['path'].startswith('failed'):  # the package does not even train here: no stage would either
        say(f"stop: the eager NVAE step failed ({m['rows']['eager alone']['path']})"); archive(work, out); return 1
    margin = 45  # archive, kill and hand back before the call's limit
    budget = limit - (time.time() - t0) - margin
    done = {} if toy else results_done(results)
    plan = plan_window(budget, m, done, acunet_seeds=2 if toy else 5)  # toy: two seed processes prove the side-by-side start
    (work / 'plan.json').write_text(json.dumps(dict(budget_s=round(budget), plan=plan, done=done), indent=1))
    dev, tag = device_name(), ('toy' if toy else 'thesis')
    say(f"window: {budget:.0f} s for the stages on {dev}\n{format_plan(plan)}")
    archive(work, out)
    procs, finished, runs = {}, {}, {}
    def launch(e, **links):
        for s in (e['seeds'] if e['stage'] == 'acunet' else [None]):  # ACU-Net: one process per seed, side by side
            key = e['stage'] + ('' if s is None else f'-seed{s}')
            nb, p = stage_params(e['stage'], dict(e, seeds=None if s is None else [s]), toy=toy, **links)
            name = f"{nb.stem}-window-{tag}-{key}-{time.strftime('%Y%m%d-%H%M%S')}"
            pf = work / 'runs' / f'{name}.params.yaml'; pf.write_text(yaml.safe_dump(p))
            cmd = [sys.executable, '-m', 'cardiac_nvae.cli', 'run', nb.stem, '--params', str(pf), '--name', name,
                   '--runs-dir', str(work / 'runs'), '--quiet']
            env = dict(os.environ, CARDIAC_NVAE_SPEED=json.dumps(stage_speed(e['stage'], m)))
            log = open(work / 'runs' / f'{name}.log', 'w')
            runs[key] = (work / 'runs' / name, dict(stage=e['stage'], device=dev, toy=toy, epochs=e['epochs'], plan=e, params=p,
                                                    speed=env['CARDIAC_NVAE_SPEED'], scale='toy rehearsal' if toy else 'thesis'))
            procs[key] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            say(f"[{time.time() - t0:5.0f} s] start {key}: {nb.stem}, deadline {p['deadline']} s, speed {env['CARDIAC_NVAE_SPEED']}")
    def close(key, rc):
        finished[key] = rc
        run, info = runs[key]
        if run.is_dir(): (run / 'window.json').write_text(json.dumps(dict(info, returncode=rc), indent=1, default=str))
        say(f"[{time.time() - t0:5.0f} s] {key} exit {rc}"); safe_archive(work, out, say)
    todo = [e for e in plan if not e.get('skip') and (not stages or e['stage'] in stages)]  # --stages: a part of the window
    for e in [e for e in todo if e['after'] is None]: launch(e)
    waiting = [e for e in todo if e['after'] is not None]
    hard, last_archive = t0 + limit - margin, time.time()
    try:
        while procs or waiting:
            time.sleep(1 if toy else 5)
            for key, p in list(procs.items()):
                if p.poll() is not None: del procs[key]; close(key, p.returncode)
            for e in list(waiting):
                if finished.get(e['after']) == 0:  # the NVAE is done: its seeds start, with what is left of the window
                    left = hard - time.time()
                    launch(dict(e, deadline_s=max(1, round(left - EVAL_S[e['stage']] - START_S))), nvae_run=runs[e['after']][0])
                    waiting.remove(e)
                elif e['after'] in finished or (e['after'] not in procs and e['after'] not in runs):
                    say(f"{e['stage']} not started: {e['after']} did not finish"); waiting.remove(e)
            if time.time() > hard:
                for key, p in list(procs.items()):
                    p.kill(); p.wait(); del procs[key]; close(key, 'killed at the end of the window')
                waiting = []
            if time.time() - last_archive > 60:  # logs of running stages too, should the call be cut short
                safe_archive(work, out, say); last_archive = time.time()
    except BaseException as e:  # the window's own error: stop its stages and keep what they wrote
        say(f"window error: {type(e).__name__}: {e}")
        for key, p in list(procs.items()): p.kill(); p.wait(); close(key, f'killed: window error {type(e).__name__}')
        raise
    finally: safe_archive(work, out, say)
    summary = dict(finished=finished, seconds=round(time.time() - t0, 1), device=dev, toy=toy, budget_s=round(budget))
    (work / 'summary.json').write_text(json.dumps(summary, indent=1))
    archive(work, out)
    say(f"window done in {summary['seconds']} s: {finished}; archive {out / 'gpu_window.tgz'}")
    return 0 if finished and all(rc == 0 for rc in finished.values()) else 1

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('pack'); p.add_argument('--dest', default=str(ROOT / '.gpu')); p.add_argument('--data', default=str(ROOT.parent / 'shared' / 'data'))
    p.add_argument('--python', default='3.12'); p.add_argument('--no-data', action='store_true')
    d = sub.add_parser('device'); d.add_argument('--limit', type=float, default=540); d.add_argument('--toy', action='store_true')
    d.add_argument('--out', default=os.environ.get('OUT', str(ROOT / 'bench' / 'out'))); d.add_argument('--work', default='/tmp/gpu_window')
    d.add_argument('--results', default=str(ROOT / 'results')); d.add_argument('--t0', type=float)
    d.add_argument('--stages', nargs='*', help=f"only these of {list(CHAPTER)} (default: all)")
    q = sub.add_parser('plan'); q.add_argument('--measured', required=True); q.add_argument('--budget', type=float, default=480)
    q.add_argument('--results', default=str(ROOT / 'results'))
    ds = sub.add_parser('device-site'); ds.add_argument('dest')
    s = sub.add_parser('step'); s.add_argument('--graph', type=int, default=0); s.add_argument('--steps', type=int, default=20); s.add_argument('--size', type=int, default=128)
    a = ap.parse_args(argv)
    if a.cmd == 'pack': pack(a.dest, a.data, a.python, not a.no_data)
    elif a.cmd == 'plan':
        print(format_plan(plan_window(a.budget, json.loads(Path(a.measured).read_text()), results_done(a.results))))
    elif a.cmd == 'device-site': device_site(a.dest)
    elif a.cmd == 'step': print(json.dumps(step_bench(bool(a.graph), a.steps, size=a.size)))
    else: raise SystemExit(device(a.limit, a.out, a.work, a.results, a.toy, a.t0, a.stages))

if __name__ == '__main__': main()
