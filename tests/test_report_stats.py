"""The report must not flatter: identical reruns count once, means say how many runs they stand on, a run folder is a source."""
import json, math, subprocess, sys, warnings
from pathlib import Path

import pandas as pd
import pytest

from cardiac_nvae.report import collect, compact_sweep, format_table, report, render, summarise, sweep_table, thesis_table

def write_run(folder, seed=42, commit='abc1234', dsc=0.65, av=10.0, chapter='03_baselines', started=None, sweep=None, **params):
    "A finished baselines-like record with one beta-VAE row."
    folder.mkdir(parents=True)
    rec = dict(chapter=chapter, status='done', git_commit=commit, data_fingerprint='f00d', host='h', pid=1,
               started=started or str(folder), params=dict(kind='beta-VAE', seed=seed, epochs=2, **params),
               metrics={'DSC all': dsc, '% AV': av}, device='cpu')
    if sweep: rec['sweep'] = sweep
    (folder / 'record.json').write_text(json.dumps(rec))
    return folder

def test_identical_reruns_count_once_and_the_row_says_so(tmp_path):
    for i in range(3): write_run(tmp_path / f'rerun{i}')  # same seed, parameters, commit, data
    write_run(tmp_path / 'other-seed', seed=7, dsc=0.55)
    t = thesis_table(collect(tmp_path), '6.1')
    row = t[t['model'] == 'β-VAE'].iloc[0]
    assert (row['runs'], row['reruns'], row['seeds']) == (2, 2, '42, 7')
    assert math.isclose(row['DSC all'], 0.60) and math.isclose(row['DSC all SE'], 0.05)
    shown = format_table(t, ['model'])
    assert shown.loc[t['model'] == 'β-VAE', 'runs'].iloc[0] == '2 (+2 identical reruns)'

def test_reruns_that_differ_are_replicates(tmp_path):
    write_run(tmp_path / 'a'); write_run(tmp_path / 'b', commit='def5678'); write_run(tmp_path / 'c', lr=0.01)
    s = summarise(collect(tmp_path), ['model'])
    assert (s.loc[0, 'runs'], s.loc[0, 'reruns']) == (3, 0)

def test_nan_and_inf_are_left_out_and_counted(tmp_path):
    write_run(tmp_path / 'a', seed=1, dsc=0.6, av=float('nan'))
    write_run(tmp_path / 'b', seed=2, dsc=float('inf'), av=12.0)
    write_run(tmp_path / 'c', seed=3, dsc=0.8, av=14.0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no pandas or numpy warning leaks
        t = thesis_table(collect(tmp_path), '6.1')
        shown = format_table(t, ['model'])
    row, cell = t.iloc[0], shown.iloc[0]
    assert (row['runs'], row['DSC all n'], row['% AV n'], row['DSC all inf']) == (3, 2, 2, 1)
    assert math.isclose(row['DSC all'], 0.7)
    assert cell['DSC all'].startswith('0.700 ± 0.100') and '(n=2, 1 inf left out)' in cell['DSC all']
    assert '(n=2)' in cell['% AV'] and 'inf' not in cell['% AV'].split('[')[0].replace('inf left', '')

def test_a_single_run_folder_is_a_source(tmp_path):
    run = write_run(tmp_path / 'acu2', chapter='06_acunet')  # feeds no thesis table (no alpha, no models)
    tables = report([run])
    assert list(tables) == ['runs'] and tables['runs'].loc[0, 'run'] == 'acu2'
    assert 'no thesis table' in render('runs', tables['runs'])
    tables = report([write_run(tmp_path / 'base')])  # a run that feeds table 6.1
    assert tables['table 6.1']['runs'].sum() == 1

def test_compact_sweep_shows_varying_parameters_and_headline_metrics(tmp_path):
    for b in (1.0, 4.0):
        for seed in (0, 1):
            write_run(tmp_path / f'b{b}-s{seed}', seed=seed, beta=b, dsc=0.5 + b / 10 + seed / 100, junk=3,
                      sweep=dict(name='sw', stage='vae', varying={'beta': [1.0, 4.0], 'seed': [0, 1]}))
    full = sweep_table(collect(tmp_path))
    small = compact_sweep(full)
    assert list(small.columns) == ['sweep', 'stage', 'model', 'beta', 'DSC all', '% AV', 'runs', 'seeds']
    assert small['DSC all'].tolist() == ['0.605 ± 0.005', '0.905 ± 0.005'] and len(full.columns) > len(small.columns)
    assert 'sweep.csv' in render('sweep', full)

def test_cli_out_pointing_at_a_file_is_one_line(tmp_path):
    write_run(tmp_path / 'r')
    (tmp_path / 'taken.txt').write_text('mine')
    p = subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', 'report', str(tmp_path / 'r'), '--out', str(tmp_path / 'taken.txt')],
                       capture_output=True, text=True)
    assert p.returncode != 0 and p.stderr.strip().count('\n') == 0, p.stderr
    assert 'taken.txt: --out is a file' in p.stderr and (tmp_path / 'taken.txt').read_text() == 'mine'

def test_nbdev_test_runs_go_to_a_temporary_folder(monkeypatch, tmp_path):
    from cardiac_nvae import train
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setenv('IN_TEST', '1'); monkeypatch.delenv('CARDIAC_NVAE_RUN_DIR', raising=False)
    d = train.run_dir('00_data')
    assert 'runs' not in d.relative_to(d.anchor).parts[:1] and not str(d).startswith(str(Path.cwd()))
    assert d.parent == train.runs_root() and d.is_dir()
    monkeypatch.delenv('IN_TEST')
    assert train.runs_root() == Path.cwd() / 'runs'
