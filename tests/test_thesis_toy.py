"""sweeps/thesis-toy.yaml: the thesis' grid at toy size. Its plan is checked always; the full run (23 chapter runs; see the commit that measured it) only
with CARDIAC_NVAE_TOY_SWEEP=1, and then every table and figure must hold the expected number of runs per row, from the records."""
import os, time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from cardiac_nvae.sweep import plan, seed_of, sweep, sweep_status

SPEC = Path(__file__).resolve().parents[1] / 'sweeps' / 'thesis-toy.yaml'
SEEDS, CENTRES = 2, ('1', '2')
SETTINGS = {'centre-agnostic', 'zero-shot', 'few-shot', 'scratch'}
STAGES = {'frds': 1, 'baselines': SEEDS, 'nvae': 3 * SEEDS, 'beta': 2 * SEEDS, 'omega': 1, 'acunet': SEEDS - 1, 'alpha': 2,
          'adapt-shared': SEEDS, 'adapt-centre': len(CENTRES) * SEEDS}

def test_toy_plan_has_the_thesis_grid(tmp_path):
    pts = plan(SPEC, tmp_path)
    assert Counter(p['stage'] for p in pts) == STAGES
    seeds = lambda stage: {seed_of(p) for p in pts if p['stage'] == stage}
    for st in ('baselines', 'nvae', 'beta', 'adapt-shared', 'adapt-centre'): assert seeds(st) == {0, 1}, st
    assert seeds('omega') | seeds('acunet') == {0, 1}  # table 6.4: seed 0 calibrates omega, the other seeds take it
    assert {p['params']['alpha'] for p in pts if p['chapter'] == '06_acunet'} == {0.0, 1.0, 1000.0}
    assert {p['params']['config'] for p in pts if p['stage'] == 'nvae'} == {'default-n', 'latentskip-n'}
    assert {p['params']['beta'] for p in pts if p['stage'] == 'beta'} == {1.0, 18.0}
    adapt = [p for p in pts if p['chapter'] == '07_adaptation']
    assert {s for p in adapt for s in p['params']['settings']} == SETTINGS
    assert {str(c) for p in adapt for c in p['params']['centres']} == set(CENTRES)
    top = {p['links']['nvae_run'] for p in pts if p['chapter'] == '06_acunet'}
    assert len(top) == 1 and 'default-n-clamp=false' in top.pop() and all('seed=0' in p['links']['nvae_run'] for p in pts
                                                                           if p['chapter'] == '06_acunet')
    assert {p['links']['omega'] for p in pts if p['stage'] in ('acunet', 'alpha')} == {'omega'}

@pytest.fixture(scope='module')
def toy_sweep(tmp_path_factory):
    if os.environ.get('CARDIAC_NVAE_TOY_SWEEP') != '1': pytest.skip('the full toy sweep runs with CARDIAC_NVAE_TOY_SWEEP=1 (23 chapter runs)')
    runs = Path(os.environ.get('CARDIAC_NVAE_TOY_DIR') or tmp_path_factory.mktemp('runs'))
    t0 = time.time()
    sd, res = sweep(SPEC, 'local', runs_dir=runs)
    print(f"thesis-toy: {len(res)} points in {time.time() - t0:.0f} s wall")
    return sd

@pytest.fixture(scope='module')
def toy_tables(toy_sweep):
    from cardiac_nvae.report import report
    return report([toy_sweep])

def runs_of(t, key, value):
    "The `runs` of the row of table `t` whose `key` column is `value` (0 when absent)."
    same = (pd.to_numeric(t[key], errors='coerce') == value) if isinstance(value, (int, float)) else (t[key].astype(str) == str(value))
    r = t[same]  # numbers compare as numbers: a summary may hold the layer count 1 as 1.0
    return int(r['runs'].iloc[0]) if len(r) else 0

def test_toy_sweep_every_point_done(toy_sweep):
    _, each = sweep_status(toy_sweep)
    bad = {n: s for n, s in each.items() if s != 'done'}
    assert not bad, {n: (toy_sweep / 'logs' / f'{n}.log').read_text()[-800:] for n in bad}

def test_toy_table_6_1_and_6_3(toy_tables):
    t = toy_tables['table 6.1']
    for m in ('β-VAE', 'InfoVAE-D', 'InfoVAE-M', 'Default-N', 'Default-N (clamp+SR)', 'LatentSkip-N'):
        assert runs_of(t, 'model', m) == SEEDS, (m, t[['model', 'runs']])
    t = toy_tables['table 6.3']
    for layers in (1, 2, 3): assert runs_of(t, 'active layers', layers) == SEEDS, t[['active layers', 'runs']]

def test_toy_tables_6_5_6_6_and_figure_6_15(toy_tables):
    for key in ('table 6.5', 'table 6.6'):
        t = toy_tables[key]
        for m in ('U-Net', 'ACU-Net'):
            for c in (*CENTRES, 'All'):
                r = t[(t['model'] == m) & (t['centre'].astype(str) == c)]
                assert len(r) == 1 and int(r['runs'].iloc[0]) == SEEDS, (key, m, c, t[['model', 'centre', 'runs']])
    f = toy_tables['figure 6.15']
    assert set(f['setting']) == SETTINGS
    per = f.groupby(['model', 'setting'])['centre'].apply(set).to_dict()
    for m in ('U-Net', 'ACU-Net'):
        for s in SETTINGS: assert per[m, s] == (set(CENTRES) | ({'All'} if s in ('centre-agnostic', 'zero-shot') else set())), (m, s)
    assert (f['runs'] == SEEDS).all(), f[['model', 'setting', 'centre', 'runs']]

def test_toy_figures_6_5_and_6_9(toy_sweep):
    from cardiac_nvae.report import collect, summarise
    df = collect([toy_sweep])
    tt = df[(df['entry'] == 'temperature') & (df['model'] == 'Default-N')]
    assert len(tt) and (tt.groupby('tau')['run'].nunique() == SEEDS).all()  # figure 6.5: every temperature from both seeds
    beta = df[(df['stage'] == 'beta') & df['entry'].isna()]
    assert beta.groupby('p.beta')['run'].nunique().to_dict() == {1.0: SEEDS, 18.0: SEEDS}  # figure 6.9

def test_toy_alpha_sweep(toy_sweep):
    from cardiac_nvae.acunet import alpha_sweep_table
    t = alpha_sweep_table(toy_sweep)
    # alpha 1: seeds 0 (omega) and 1; alpha 0: the alpha stage and the omega run's shape-only calibration run; 1000: one
    assert t.groupby('alpha')['run'].nunique().to_dict() == {0.0: 2, 1.0: SEEDS, 1000.0: 1}
    assert t[t['run'] != 'omega']['omega'].nunique() == 1  # one omega for every seed and alpha

def test_toy_table_6_4(toy_tables):
    t = toy_tables['table 6.4']  # one row per model and seed from 06's per_seed entries
    for m in ('U-Net', 'ACU-Net'): assert runs_of(t, 'model', m) == SEEDS, t[['model', 'runs']]
