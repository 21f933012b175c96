"""Every spec under sweeps/ plans and passes the chapters' parameter check; the quick adaptation spec runs (reduced) to filled tables."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import yaml

from cardiac_nvae.cli import check_params, find_notebook
from cardiac_nvae.sweep import plan, seed_of, sweep, sweep_status

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / 'sweeps').glob('*.yaml'))
SEEDED = ('06_acunet', '07_adaptation', '04_nvae', '03_baselines')  # chapters whose runs are per seed

# parameters that shrink a chapter's quick mode further for tests (data, epochs); the spec's structure stays as it is
REDUCE = {'06_acunet': dict(train_slices=64, valid_slices=16, test_patients=2, epochs=1, nvae_epochs=1, torch_threads=1),
          '07_adaptation': dict(epochs=1, max_train=16, max_valid=8, simclr_epochs=1, torch_threads=1),
          '04_nvae': dict(train_slices=48, valid_slices=16, test_patients=1, epochs=1, n_generate=16, other_epochs=0),
          '05_frds': dict(epochs=1), '03_baselines': dict(epochs=1)}

def reduced(spec_path, **extra):
    "The spec with every stage's params shrunk by REDUCE (and `extra` per chapter)."
    spec = yaml.safe_load(Path(spec_path).read_text())
    for st in spec['stages']:
        st['params'] = {**(st.get('params') or {}), **REDUCE.get(st['chapter'], {}), **extra.get(st['chapter'], {})}
    return spec

@pytest.mark.parametrize('path', SPECS, ids=lambda p: p.name)
def test_spec_plans_and_its_parameters_exist(path, tmp_path):
    points = plan(path, tmp_path)
    assert points, path
    for p in points:
        nb = find_notebook(p['chapter'])
        check_params(nb, p['params'], cwd=tmp_path)  # SystemExit naming the parameter if a chapter lacks it or its type differs

@pytest.mark.parametrize('path', SPECS, ids=lambda p: p.name)
def test_linked_points_get_the_run_of_their_own_seed(path, tmp_path):
    points = plan(path, tmp_path)
    by_name = {p['name']: p for p in points}
    links = {st['name']: st.get('link') or {} for st in yaml.safe_load(path.read_text())['stages']}
    for p in points:
        for prm, target in p['links'].items():
            t, dep = by_name[target], links[p['stage']][prm]
            fixed = (dep.get('where') or {}).get('seed') if isinstance(dep, dict) else None
            if fixed is not None: assert seed_of(t) == fixed, (p['name'], prm, target); continue  # a chosen model, e.g. the top NVAE
            upstream = {json.dumps(seed_of(q)) for q in points if q['stage'] == t['stage']}
            if len(upstream) > 1: assert seed_of(t) == seed_of(p), (p['name'], prm, target)

def test_adaptation_thesis_links_each_seed_to_its_own_acdc_models(tmp_path):
    points = plan(ROOT / 'sweeps' / 'adaptation-thesis.yaml', tmp_path)
    adapt = [p for p in points if p['chapter'] == '07_adaptation']
    assert len(adapt) == 5 + 5 * 5  # shared settings once per seed; few-shot settings per centre and seed
    assert {p['links']['unet_run'] for p in adapt} == {'omega'} | {f'acunet-seeds={s}' for s in range(1, 5)}
    assert all(p['links']['unet_run'] == ('omega' if seed_of(p) == 0 else f"acunet-seeds={seed_of(p)}") for p in adapt)
    acu = [p for p in points if p['stage'] == 'acunet']; assert len(acu) == 4
    assert {p['links']['omega'] for p in acu} == {'omega'}  # one calibration for every seed
    alphas = {p['params']['alpha'] for p in plan(ROOT / 'sweeps' / 'acunet-thesis.yaml', tmp_path) if p['stage'] == 'alpha'}
    assert min(alphas) == 0 and max(alphas) == 1000  # table 4.3's range

# the quick adaptation sweep runs once, on one xdist worker, and first (it takes minutes)
def adaptation(test): return pytest.mark.slow(pytest.mark.xdist_group('adaptation')(test))

@pytest.fixture(scope='module')
def quick_adaptation(tmp_path_factory):
    "The quick adaptation sweep, reduced, run locally: (sweep folder, results of the points)."
    runs = tmp_path_factory.mktemp('runs')
    sd, res = sweep(reduced(ROOT / 'sweeps' / 'adaptation-quick.yaml'), 'local', workers=1, runs_dir=runs)
    return sd, res

@adaptation
def test_quick_adaptation_sweep_finishes_every_point(quick_adaptation):
    sd, res = quick_adaptation
    logs = {n: (sd / 'logs' / f'{n}.log').read_text()[-1500:] for n, s in res.items() if s != 'done'}
    assert set(res.values()) == {'done'}, logs
    _, each = sweep_status(sd)
    assert set(each.values()) == {'done'}

@adaptation
def test_quick_adaptation_report_fills_tables_6_5_and_6_6(quick_adaptation, tmp_path):
    sd, _ = quick_adaptation
    out = subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', 'report', str(sd), '--out', str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    from cardiac_nvae.report import report
    tables = report([sd])
    for key in ('table 6.5', 'table 6.6'):
        t = tables[key]
        ours = t[t['runs'] > 0]
        assert set(ours['model']) == {'U-Net', 'ACU-Net'}, key
        assert set(ours['centre']) == {'1', '2', '3', '4', '5', 'All'}, (key, sorted(ours['centre']))
        assert (ours['runs'] == 1).all(), ours[['model', 'centre', 'runs']]  # one seed: one run per cell
        assert ours['DSC all'].between(0, 1).all() and ours['% AV'].between(0, 100).all()
    fig = tables['figure 6.15']
    assert set(fig['setting']) == {'centre-agnostic', 'zero-shot', 'few-shot', 'scratch'}
    assert set(fig[fig['setting'] == 'few-shot']['centre']) == {'1', '2'}  # one run per centre point: no pooled row

def _run_07(tmp_path, name, **params):
    "Run the adaptation chapter with `params` into tmp_path/name; the record afterwards."
    pf = tmp_path / f'{name}.yaml'; pf.write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', 'run', '07_adaptation', '--params', str(pf), '--runs-dir',
                    str(tmp_path), '--name', name, '--quiet'], capture_output=True, text=True, cwd=tmp_path)
    return json.loads((tmp_path / name / 'record.json').read_text())

@pytest.fixture(scope='module')
def mnms_without_validation(tmp_path_factory):
    "The phantom's M&Ms written without its Validation and Training partitions (only Testing and the subject table)."
    from cardiac_nvae.adaptation import phantom_mnms_root
    dest = tmp_path_factory.mktemp('data') / 'mnms'
    shutil.copytree(phantom_mnms_root(), dest)
    shutil.rmtree(dest / 'Validation'); shutil.rmtree(dest / 'Training')
    return dest

@adaptation
def test_zero_shot_runs_on_data_without_training_partitions(quick_adaptation, mnms_without_validation, tmp_path):
    sd, _ = quick_adaptation
    acdc = sd / 'acunet-seeds=0'
    rec = _run_07(tmp_path, 'zs', data_root=str(mnms_without_validation), settings=['zero-shot'], seeds=[0],
                  unet_run=str(acdc), acunet_run=str(acdc), **REDUCE['07_adaptation'])
    assert rec['status'] == 'done', rec.get('error')
    assert rec['params']['size'] == json.loads((acdc / 'record.json').read_text())['params']['size']  # the run's size, not 32
    assert {r['setting'] for r in rec['metrics']['per_seed']} == {'zero-shot'}

@adaptation
def test_centre_agnostic_without_validation_is_a_data_error(quick_adaptation, mnms_without_validation, tmp_path):
    sd, _ = quick_adaptation
    acdc = sd / 'acunet-seeds=0'
    rec = _run_07(tmp_path, 'ca', data_root=str(mnms_without_validation), settings=['centre-agnostic'], seeds=[0],
                  unet_run=str(acdc), acunet_run=str(acdc), **REDUCE['07_adaptation'])
    assert rec['status'] == 'failed'
    assert rec['error_type'] == 'DataError', rec.get('error')
    assert f"{mnms_without_validation}: no subjects in the Training/Labeled (train), Validation (valid) partition" in rec['error']

QUICK = [p for p in SPECS if p.stem.endswith('-quick') and p.stem != 'adaptation-quick']  # adaptation-quick runs above

@pytest.mark.parametrize('path', QUICK, ids=lambda p: p.name)
def test_quick_spec_runs_reduced(path, tmp_path):
    if os.environ.get('CARDIAC_NVAE_SPEC_RUNS') != '1': pytest.skip('the other quick specs run (reduced) with CARDIAC_NVAE_SPEC_RUNS=1')
    sd, res = sweep(reduced(path), 'local', workers=1, runs_dir=tmp_path)
    logs = {n: (sd / 'logs' / f'{n}.log').read_text()[-1500:] for n, s in res.items() if s != 'done'}
    assert res and set(res.values()) == {'done'}, logs
