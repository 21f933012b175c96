"""Thesis-scale runs: each chapter's own THESIS_PARAMS through `cardiac-nvae run`, outputs (no weights) copied to results/.

Stages, in order: 'frds' (05_frds, the SimCLR encoder that FRDS needs), 'nvae' (04_nvae, Default-N), 'unet'
(06_acunet, U-Net and ACU-Net; skipped while the chapter is missing). A stage's parameters are the chapter's
`THESIS_PARAMS` (or `THESIS_SETTINGS`) dict, read from the notebook's source, never copied here; a parameter
that names an earlier run (`simclr_run`, `nvae_run`) gets the run folder this invocation made; the speed flags
(`--speed`) go as parameters to chapters that define them and to every learner and loader through
$CARDIAC_NVAE_SPEED (flags a chapter leaves at None read it; the plan says which went which way); then
`--set name=value` overrides (for a rehearsal: `--set epochs=1`). Every set of parameters passes the
parameters-cell check of `cardiac-nvae run` before anything runs (`--dry-run` stops there).

    python bench/thesis_scale.py --dry-run
    python bench/thesis_scale.py nvae --set epochs=1 --results-dir /tmp/x   # a rehearsal, never called thesis-scale
"""
import argparse, ast, json, os, platform, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = {'frds': '05_frds', 'nvae': '04_nvae', 'unet': '06_acunet'}
LINKS = {'simclr_run': 'frds', 'nvae_run': 'nvae'}  # parameter naming an earlier run -> the stage that makes it
# 05_frds has no THESIS_PARAMS yet: table 5.1's values, as its parameters cell states them in comments
FALLBACK = {'05_frds': dict(encoder_size=128, epochs=200, batch_pairs=256, max_train=None, max_valid=None, n_suite=1076)}
SPEED = dict(amp='bf16', compile='reduce-overhead', channels_last=True, nan_check_every=50, resident=True)
KEEP = ('.json', '.csv', '.npy', '.npz', '.ipynb', '.txt', '.md', '.png')  # records, logs, figure arrays; never weights

def thesis_params(nb):
    "The `THESIS_PARAMS` (or `THESIS_SETTINGS`) dict literal of notebook `nb`, or None."
    import nbformat
    for cell in nbformat.read(str(nb), as_version=4).cells:
        if cell.cell_type != 'code' or 'THESIS_' not in cell.source: continue
        src = '\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith(('%', '!', '#|')))
        try: tree = ast.parse(src)
        except SyntaxError: continue
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id in ('THESIS_PARAMS', 'THESIS_SETTINGS')):
                v = node.value
                if isinstance(v, ast.Call) and getattr(v.func, 'id', None) == 'dict' and not v.args:
                    return {kw.arg: ast.literal_eval(kw.value) for kw in v.keywords}
                return dict(ast.literal_eval(v))
    return None

def chapter_parameters(nb):
    "Names defined by the notebook's tagged `parameters` cell."
    import papermill as pm
    return {p['name'] for p in pm.inspect_notebook(str(nb)).values()}

def plan_stage(stage, done=None, speed=None, overrides=None):
    "`(notebook, params, notes)` for `stage`: thesis parameters, links to earlier runs, accepted speed flags, overrides."
    from cardiac_nvae.cli import find_notebook, check_params
    nb = find_notebook(STAGES[stage])
    params, notes = thesis_params(nb), []
    if params is None:
        if nb.stem not in FALLBACK: raise SystemExit(f"error: {nb.name} defines no THESIS_PARAMS")
        params = dict(FALLBACK[nb.stem]); notes.append(f"{nb.name} has no THESIS_PARAMS: using table values {params}")
    known = chapter_parameters(nb)
    for name, earlier in LINKS.items():
        if name in known and earlier in (done or {}): params[name] = str(done[earlier])
        elif isinstance(params.get(name), str) and params[name].startswith('<'):
            raise SystemExit(f"error: {nb.name}: parameter {name}={params[name]!r} needs the '{earlier}' stage first "
                             f"(run it in the same invocation, or --set {name}=<run folder>)")
    speed = dict(SPEED if speed is None else speed)
    params.update({k: v for k, v in speed.items() if k in known})
    dropped = sorted(k for k in speed if k not in known)
    if dropped: notes.append(f"speed flags not parameters of {nb.name}, given through $CARDIAC_NVAE_SPEED instead: {dropped}")
    params.update(overrides or {})
    check_params(nb, params)  # the same refusal as `cardiac-nvae run`
    return nb, params, notes

def device_name():
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})"

def copy_results(run, dest, extra):
    "Copy a run's records, logs, executed notebook and figure arrays (no weights) to `dest`, with the device named."
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(run).rglob('*')):
        if f.is_file() and f.suffix in KEEP and f.stat().st_size < 8 * 2 ** 20:
            (dest / f.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / f.relative_to(run))
    (dest / 'device.json').write_text(json.dumps(extra, indent=1))
    return dest

def parse_sets(pairs):
    import yaml
    out = {}
    for p in pairs or []:
        if '=' not in p: raise SystemExit(f"error: --set {p!r}: expected name=value")
        k, v = p.split('=', 1); out[k] = yaml.safe_load(v)
    return out

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('stages', nargs='*', default=list(STAGES), help=f"stages in order (default: all): {list(STAGES)}")
    ap.add_argument('--set', action='append', metavar='NAME=VALUE', help='override a parameter of every stage')
    ap.add_argument('--speed', default=None, help="YAML mapping of speed flags (default: %(default)s -> SPEED); '{}' for none")
    ap.add_argument('--runs-dir', default=str(ROOT / 'runs'))
    ap.add_argument('--results-dir', default=str(ROOT / 'results'))
    ap.add_argument('--dry-run', action='store_true', help='print each stage plan (checked against the chapter) and stop')
    a = ap.parse_args(argv)
    import yaml
    speed = yaml.safe_load(a.speed) if a.speed is not None else None
    overrides, done, device = parse_sets(a.set), {}, device_name()
    tag = re.sub(r'[^A-Za-z0-9]+', '-', device).strip('-').lower()
    quick = bool(overrides)
    for stage in a.stages:
        if stage not in STAGES: raise SystemExit(f"error: unknown stage {stage!r}; stages: {list(STAGES)}")
        try: nb, params, notes = plan_stage(stage, done, speed, overrides)
        except SystemExit as e:
            if stage == 'unet' and 'no chapter notebook matches' in str(e): print(f"[{stage}] skipped: {e}"); continue
            raise
        print(f"[{stage}] {nb.name} on {device}: {json.dumps(params, default=str)}")
        for n in notes: print(f"[{stage}]   note: {n}")
        if a.dry_run: continue
        name = f"{nb.stem}-{'rehearsal' if quick else 'thesis'}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
        pfile = Path(a.runs_dir) / f'{name}.params.yaml'; pfile.parent.mkdir(parents=True, exist_ok=True)
        pfile.write_text(yaml.safe_dump(params))
        t0 = time.time()
        cmd = [sys.executable, '-m', 'cardiac_nvae.cli', 'run', nb.stem, '--params', str(pfile), '--name', name,
               '--runs-dir', a.runs_dir, '--quiet']
        env = dict(os.environ, CARDIAC_NVAE_SPEED=json.dumps(SPEED if speed is None else speed))  # flags the chapter lacks
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        run = Path(a.runs_dir) / name
        extra = dict(device=device, stage=stage, params=params, speed_env=env['CARDIAC_NVAE_SPEED'], seconds=round(time.time() - t0, 1), returncode=rc,
                     scale='rehearsal (overridden parameters: not thesis-scale)' if quick else 'thesis', overrides=overrides)
        dest = copy_results(run, Path(a.results_dir) / name, extra)
        print(f"[{stage}] exit {rc} after {extra['seconds']} s; results (no weights): {dest}")
        if rc: raise SystemExit(rc)
        done[stage] = run

if __name__ == '__main__': main()
