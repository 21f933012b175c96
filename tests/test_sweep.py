"""Sweeps against a real Slurm (a one-node cluster started here) and locally, with faults: cancel, kill, preemption."""
import json, os, signal, subprocess, time
from pathlib import Path

import pytest

from cardiac_nvae.sweep import (LocalSlurm, read_json, slurm_queue, sweep, sweep_status,
                                format_status, write_toy_chapter)

pytestmark = pytest.mark.xdist_group('slurm')  # one cluster and one toy chapter, on one xdist worker

TIMEOUT = 600  # seconds a sweep may take on a loaded CI machine before a test gives up

@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    "A running one-node Slurm cluster; its daemons are stopped by pid afterwards."
    if not LocalSlurm.available():
        if os.environ.get('CI'): pytest.fail('slurm-wlm and munge are missing: bash .ci/setup installs them')
        pytest.skip('slurm-wlm and munge not installed (bash .ci/setup, or apt-get install -y slurm-wlm munge)')
    with LocalSlurm(tmp_path_factory.mktemp('slurm')) as cluster: yield cluster

@pytest.fixture(scope='module')
def toy(tmp_path_factory): return write_toy_chapter(tmp_path_factory.mktemp('chapter') / 'toy.ipynb')

def toy_spec(name, toy, xs, seeds=(0,), **params):
    return {'name': name, 'stages': [{'name': 'toy', 'chapter': str(toy), 'params': params,
                                      'grid': {'x': list(xs)}, 'seeds': list(seeds)}],
            'slurm': {'time_min': 30, 'mem_gb': 1, 'cpus_per_task': 1}}

def records(sd):
    "Records of the sweep folder's own runs (set-aside attempts excluded), by run name."
    pts = read_json(sd / 'sweep.json')['points']
    return {p['name']: read_json(sd / p['name'] / 'record.json') for p in pts}

def wait_for(cond, timeout=TIMEOUT, what=''):
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, f'timed out waiting for {what}'
        time.sleep(0.5)

def test_slurm_sweep_of_three_points_completes(slurm, toy, tmp_path):
    sd, jobs = sweep(toy_spec('three', toy, [1.0, 2.0, 3.0]), 'slurm', runs_dir=tmp_path, env=slurm.env, wait=True)
    assert len(jobs) == 3 and len({j.split('_')[0] for j in jobs.values()}) == 1, jobs  # one array, three tasks
    recs = records(sd)
    assert [r['status'] for r in recs.values()] == ['done'] * 3
    assert sorted(r['metrics']['value'] for r in recs.values()) == [10.0, 20.0, 30.0]
    assert all(r['sweep']['stage'] == 'toy' and r['sweep']['scale'] == 'quick' for r in recs.values())
    rows, each = sweep_status(sd, slurm.env)
    assert rows[0]['done'] == 3 and set(each.values()) == {'done'}
    print(format_status(rows, each))
    _, again = sweep(toy_spec('three', toy, [1.0, 2.0, 3.0]), 'slurm', runs_dir=tmp_path, env=slurm.env)
    assert again == {}  # nothing resubmitted

def progress(sd, name):
    p = sd / name / 'progress.txt'
    return int(p.read_text() or 0) if p.exists() else 0

@pytest.mark.parametrize('how', ['scancel', 'sigkill'])
def test_task_cancelled_or_killed_mid_run_is_completed_by_rerun(slurm, toy, tmp_path, how):
    spec = toy_spec(f'fault-{how}', toy, [1.0, 2.0], steps=8, step_s=0.5)
    sd, jobs = sweep(spec, 'slurm', runs_dir=tmp_path, env=slurm.env)
    victim = 'toy-x=1.0-seed=0'
    wait_for(lambda: progress(sd, victim) >= 2, what=f'{victim} to make progress')
    if how == 'scancel': subprocess.run(['scancel', jobs[victim]], env={**os.environ, **slurm.env}, check=True)
    else:  # SIGKILL the run's papermill process: nothing gets a chance to write a record
        pid = next(int(p.name) for p in Path('/proc').iterdir() if p.name.isdigit() and _is_run_of(p, victim))
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not (set(jobs.values()) & set(slurm_queue(slurm.env))), what='the jobs to leave the queue')
    rows, each = sweep_status(sd, slurm.env)
    assert each[victim] in ('killed', 'failed') and each['toy-x=2.0-seed=0'] == 'done', each
    sd, again = sweep(spec, 'slurm', runs_dir=tmp_path, env=slurm.env, wait=True)
    assert list(again) == [victim]  # only the broken point is resubmitted
    recs = records(sd)
    assert {n: r['status'] for n, r in recs.items()} == {victim: 'done', 'toy-x=2.0-seed=0': 'done'}
    assert sorted(r['metrics']['value'] for r in recs.values()) == [10.0, 20.0]
    assert recs[victim]['metrics']['first_step'] >= 2  # continued from its checkpoint
    own = list(sd.glob('*/record.json'))
    assert len(own) == 2  # no duplicate records

def _is_run_of(proc, name):
    try: cmd = (proc / 'cmdline').read_bytes().split(b'\0')
    except OSError: return False
    return b'cardiac_nvae.cli' in cmd and any(name.encode() in c for c in cmd)

def test_preempted_task_is_requeued_and_finishes(slurm, toy, tmp_path):
    spec = toy_spec('preempt', toy, [4.0], steps=8, step_s=0.5)
    sd, jobs = sweep(spec, 'slurm', runs_dir=tmp_path, env=slurm.env)
    name = 'toy-x=4.0-seed=0'
    wait_for(lambda: progress(sd, name) >= 2, what=f'{name} to make progress')
    # what Slurm sends before a preemption or the time limit: submitit checkpoints and requeues the task
    subprocess.run(['scancel', '--signal=USR2', jobs[name]], env={**os.environ, **slurm.env}, check=True)
    wait_for(lambda: not (set(jobs.values()) & set(slurm_queue(slurm.env))), what='the requeued task to finish')
    rec = records(sd)[name]
    assert rec['status'] == 'done' and rec['metrics']['value'] == 40.0
    log = (sd / 'logs' / f'{name}.log').read_text()
    assert log.count('=== ') == 2, log  # started twice: once, then after the requeue
    assert rec["metrics"]["first_step"] >= 2 and rec['metrics']['starts'] == 2

def test_local_sweep_two_workers_and_linked_stage(toy, tmp_path):
    spec = {'name': 'local', 'stages': [
        {'name': 'a', 'chapter': str(toy), 'params': {'steps': 2, 'step_s': 1.0}, 'grid': {'x': [1.0, 2.0]}},
        {'name': 'b', 'chapter': str(toy), 'grid': {'x': [1.0, 2.0]}, 'link': {'upstream': 'a'}}]}
    sd, res = sweep(spec, 'local', workers=2, runs_dir=tmp_path)
    assert set(res.values()) == {'done'} and len(res) == 4
    recs = records(sd)
    a1, a2 = recs['a-x=1.0'], recs['a-x=2.0']
    assert a1['started'] < a2['finished'] and a2['started'] < a1['finished']  # the two workers ran side by side
    assert recs['b-x=2.0']['metrics']['value'] == 20.0 + 20.0  # its own 10x plus the value of its linked run
    assert sweep(spec, 'local', workers=2, runs_dir=tmp_path)[1] == {}

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.parametrize('spec', sorted((ROOT / 'sweeps').glob('*.yaml')), ids=lambda p: p.stem)
def test_spec_files_plan_and_name_real_parameters(spec):
    import papermill as pm
    from cardiac_nvae.sweep import load_spec, plan
    from cardiac_nvae.cli import find_notebook
    pts = plan(spec, '/nonexistent')
    s = load_spec(spec)
    assert s['name'] == spec.stem and s.get('scale') in ('quick', 'thesis')
    assert len({p['name'] for p in pts}) == len(pts)
    for st in s['stages']:
        nbs = sorted((ROOT / 'nbs').glob(f"{st['chapter']}.ipynb"))
        if not nbs: continue  # a chapter still being written: its parameter names are checked once it lands
        known = {p['name'] for p in pm.inspect_notebook(str(nbs[0])).values()}
        used = {k for p in pts if p['stage'] == st['name'] for k in p['params']}
        assert used <= known, f"{spec.name}: stage {st['name']} sets {sorted(used - known)} which {st['chapter']} does not define"

def test_report_means_and_standard_errors_match_a_hand_computation(toy, tmp_path):
    "Two settings x three seeds of the toy chapter (value = 10 x + seed), run locally, then `report` on the sweep folder."
    from cardiac_nvae.report import report
    spec = toy_spec('rep', toy, [1.0, 2.0], seeds=(0, 1, 5))
    sd, res = sweep(spec, 'local', workers=2, runs_dir=tmp_path)
    assert set(res.values()) == {'done'}
    t = report([sd], tmp_path / 'tables')['sweep'].set_index('p.x')
    for x in (1.0, 2.0):
        vals = [10 * x + s for s in (0, 1, 5)]
        mean = sum(vals) / 3
        se = (sum((v - mean) ** 2 for v in vals) / 2) ** 0.5 / 3 ** 0.5  # sample SD over the square root of n
        assert t.loc[x, 'm.value'] == pytest.approx(mean) and t.loc[x, 'm.value SE'] == pytest.approx(se)
        assert t.loc[x, 'runs'] == 3 and t.loc[x, 'seeds'] == '0, 1, 5' and t.loc[x, 'scale'] == 'quick'
    assert {p.suffix for p in (tmp_path / 'tables').iterdir()} == {'.md', '.csv', '.html'}
    import sys, yaml
    (tmp_path / 'rep.yaml').write_text(yaml.safe_dump(spec))
    cli = lambda *a: subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', *a], capture_output=True, text=True, check=True).stdout
    status = cli('sweep', str(tmp_path / 'rep.yaml'), '--status', '--runs-dir', str(tmp_path))
    assert status.splitlines()[1].split()[:4] == ['stage', 'chapter', 'points', 'done'] and ' 6 ' in status.splitlines()[2], status
    out = cli('report', str(sd))
    assert '### Sweep' in out and '| 12.000 ± 1.528 |' in out and '| 22.000 ± 1.528 |' in out, out  # 10, 11, 15 and 20, 21, 25

def test_readme_and_index_what_reproduces_tables_are_built_from_results():
    "The 'what reproduces' tables of README.md and index.ipynb are exactly what report makes of results/ (never typed)."
    from cardiac_nvae.report import README_MARKERS, readme_table
    table = readme_table()
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    for name, text in (('README.md', (ROOT / 'README.md').read_text()),
                       ('index.ipynb', '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown'))):
        a, b = README_MARKERS
        assert text[text.index(a) + len(a):text.index(b)].strip() == table.strip(), \
            f"{name}: rerun cardiac_nvae.report.update_readme_table with readme_table()"
