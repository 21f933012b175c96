"""Fault injection for the run and sweep layer (issue 21): each test injects one fault and checks the one-line message,
the non-zero exit and that nothing that existed before is lost."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import nbformat, pytest, yaml

from cardiac_nvae import cli
from cardiac_nvae import sweep as sw  # sw.check_spec, sw.point_error: looked up in the tests, so the file loads on older code
from cardiac_nvae.sweep import SpecError, load_spec, plan, sweep_status, write_manifest, write_toy_chapter

ROOT = Path(cli.__file__).resolve().parents[1]

def chapter(path, params, *cells):
    "A small chapter notebook: a tagged parameters cell, then `cells`."
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(params)] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.cells[0].metadata['tags'] = ['parameters']
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path)); return Path(path)

def cnv(*args, cwd=None, env=None, timeout=300):
    "`cardiac-nvae ARGS` in a subprocess importing this checkout; (exit code, stdout + stderr)."
    e = {**os.environ, 'PYTHONPATH': str(ROOT), **(env or {})}
    for k, v in (env or {}).items():
        if v is None: e.pop(k)
    r = subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', *map(str, args)], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr

def one_error_line(out):
    "The output holds no traceback and exactly one `error:` line; returns it."
    assert 'Traceback' not in out, out[-2000:]
    lines = [l for l in out.splitlines() if l.startswith('error:')]
    assert len(lines) == 1, out[-2000:]
    return lines[0]

@pytest.fixture(scope='module')
def toy(tmp_path_factory): return write_toy_chapter(tmp_path_factory.mktemp('chapter') / 'toy.ipynb')

# ---------------------------------------------------------------- high
PRODUCER = ["nvae_run = None\nseed = 0",
            "import os, torch\nfrom pathlib import Path\nfrom torch import nn\n"
            "torch.manual_seed(seed); torch.save({'model': nn.Linear(2, 2).state_dict()}, Path(os.environ['CARDIAC_NVAE_RUN_DIR']) / 'best.pth')"]
CONSUMER = ["nvae_run = None",
            "from torch import nn\nfrom cardiac_nvae.train import check_run, find_run, load_run_weights\n"
            "rec = check_run(nvae_run, chapter='04_nvae')\nm = nn.Linear(2, 2); load_run_weights(m, nvae_run)\n"
            "print('loaded', find_run(nvae_run).resolve(), 'seed', rec['parameters']['seed'], float(m.weight.sum()))"]

def test_1_a_run_name_resolves_against_the_given_runs_dir(tmp_path):
    "The README's flow (`run 04_nvae --name nvae`, then `-p nvae_run nvae`) from a folder outside the checkout, with --runs-dir."
    nbs = tmp_path / 'chapters'
    chapter(nbs / '04_nvae.ipynb', *PRODUCER); chapter(nbs / '06_acunet.ipynb', *CONSUMER)
    work = tmp_path / 'elsewhere'; work.mkdir()
    # a decoy of the same name where the kernel used to look (the checkout's or the working folder's runs/)
    import torch
    from cardiac_nvae.records import write_json
    write_json(work / 'runs' / 'nvae' / 'record.json', {'chapter': '04_nvae', 'status': 'done', 'parameters': {'seed': 1}})
    torch.save({'model': torch.nn.Linear(2, 2).state_dict()}, work / 'runs' / 'nvae' / 'best.pth')
    assert cnv('run', nbs / '04_nvae.ipynb', '--name', 'nvae', '-p', 'seed', 2, '--runs-dir', 'exp', '--quiet', cwd=work)[0] == 0
    rc, out = cnv('run', nbs / '06_acunet.ipynb', '--runs-dir', 'exp', '-p', 'nvae_run', 'nvae', '--name', 'acu', '--quiet', cwd=work)
    assert rc == 0, out[-3000:]
    nb = nbformat.read(work / 'exp' / 'acu' / '06_acunet.ipynb', as_version=4)
    text = ''.join(o.get('text', '') for c in nb.cells for o in c.get('outputs', []))
    assert f"loaded {work / 'exp' / 'nvae'} seed 2" in text, text

def test_2_unsafe_names_are_refused_and_nothing_outside_is_written(tmp_path, toy):
    victim = tmp_path / 'victim.yaml'; victim.write_text('precious: 1\n')
    for name in ('../../x', '/abs/x', '..', '.hidden', 'a\nb', 'x' * 201):
        with pytest.raises(SystemExit, match=r"error: --name .* is refused: use one folder name"):
            cli.main(['run', str(toy), '--name', name, '--runs-dir', str(tmp_path / 'runs'), '--quiet'])
    rc, out = cnv('run', toy, '--name', '../../x', '--runs-dir', tmp_path / 'runs', '--quiet', cwd=tmp_path)
    assert rc != 0 and one_error_line(out).startswith("error: --name '../../x' is refused"), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ['victim.yaml'] and not Path('/abs/x').exists()
    spec = {'name': 'sw', 'stages': [{'name': '../victim', 'chapter': str(toy)}]}
    with pytest.raises(SpecError, match=r"stage name: '../victim' is refused"): load_spec(spec)
    f = tmp_path / 'spec.yaml'; f.write_text(yaml.safe_dump(spec))
    rc, out = cnv('sweep', f, '--runs-dir', tmp_path / 'runs')
    assert rc != 0 and "'../victim' is refused" in one_error_line(out)
    assert victim.read_text() == 'precious: 1\n' and not (tmp_path / 'runs').exists()
    with pytest.raises(SpecError, match="'name' must be a plain folder name"): load_spec({'name': '..', 'stages': spec['stages']})

# ---------------------------------------------------------------- medium
DATA_TOY = ["data_root = None", "print('ran')"]

def test_3_a_data_root_asked_for_but_missing_is_an_error(tmp_path, monkeypatch):
    nb = chapter(tmp_path / '00_toy.ipynb', *DATA_TOY)
    rc, out = cnv('run', nb, '--runs-dir', tmp_path / 'runs', env={'CARDIAC_NVAE_DATA': '/nonexistent/acdc'})
    assert rc != 0 and '$CARDIAC_NVAE_DATA=/nonexistent/acdc: no such data folder' in one_error_line(out)
    with pytest.raises(SystemExit, match='error: data_root /nonexistent/acdc: no such data folder'):
        cli.main(['run', str(nb), '--runs-dir', str(tmp_path / 'runs'), '-p', 'data_root', '/nonexistent/acdc'])
    assert not (tmp_path / 'runs').exists() or not list((tmp_path / 'runs').iterdir())  # no run folder left behind
    r = subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', 'run', str(nb), '--runs-dir', str(tmp_path / 'runs'), '--name', 'ph'],
                       env={**os.environ, 'PYTHONPATH': str(ROOT), 'CARDIAC_NVAE_DATA': 'phantom'}, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.splitlines()[0] == 'data: phantom ($CARDIAC_NVAE_DATA=phantom)', r.stderr
    assert json.loads((tmp_path / 'runs' / 'ph' / 'record.json').read_text())['data_root'].startswith('phantom')
    from cardiac_nvae.data import DataError, cache_dir
    monkeypatch.chdir(tmp_path); monkeypatch.setenv('HOME', str(tmp_path / 'home')); monkeypatch.setenv('CARDIAC_NVAE_CACHE', '')
    assert cache_dir() == tmp_path / 'home' / '.cache' / 'cardiac_nvae'  # empty means the default, not the current folder
    (tmp_path / 'afile').write_text('x'); monkeypatch.setenv('CARDIAC_NVAE_CACHE', str(tmp_path / 'afile'))
    with pytest.raises(DataError, match=r'CARDIAC_NVAE_CACHE=.*afile: is a file, not a folder'): cache_dir()

@pytest.mark.parametrize('stage, msg', [
    ({'chapter': 'no_such_chapter'}, "stage 'a': no chapter notebook matches 'no_such_chapter'"),
    ({'params': {'nosuch': 3}}, "stage 'a': params: toy has no parameter 'nosuch'"),
    ({'grid': {'steps': ['three']}}, "stage 'a': grid: toy: parameter steps takes int"),
    ({'grid': {'x': []}}, "grid 'x' must be a non-empty YAML list"),
    ({'grid': {}}, "'grid' must be a non-empty mapping"),
    ({'seeds': []}, "'seeds' must be a non-empty list"),
    ({'link': {'upstream': 'b'}}, "links upstream to 'b', which is not an earlier stage"),
])
def test_4_a_sweep_spec_is_checked_before_anything_runs(tmp_path, toy, stage, msg):
    spec = {'name': 'sw', 'stages': [{'name': 'a', 'chapter': str(toy), **stage}, {'name': 'b', 'chapter': str(toy)}]}
    with pytest.raises(SpecError, match=msg.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[')): sw.check_spec(spec)

def test_4_duplicates_yaml_and_a_failed_point(tmp_path, toy):
    with pytest.raises(SpecError, match="two stages are named 'a'"):
        load_spec({'name': 'sw', 'stages': [{'name': 'a', 'chapter': str(toy)}, {'name': 'a', 'chapter': str(toy)}]})
    with pytest.raises(SpecError, match="two stages are named 'a'"):  # a link to itself: the cycle a -> a
        load_spec({'name': 'sw', 'stages': [{'name': 'a', 'chapter': str(toy)}, {'name': 'a', 'chapter': str(toy), 'link': {'upstream': 'a'}}]})
    bad = tmp_path / 'bad.yaml'; bad.write_text('name: sw\nstages: [{name: a, chapter: x\n')
    rc, out = cnv('sweep', bad, '--runs-dir', tmp_path / 'runs')
    assert rc != 0 and f'{bad}: not valid YAML' in one_error_line(out) and not (tmp_path / 'runs').exists()
    f = tmp_path / 'fail.yaml'
    f.write_text(yaml.safe_dump({'name': 'sw', 'stages': [{'name': 'a', 'chapter': str(toy), 'grid': {'fail': [False, True]}}]}))
    rc, out = cnv('sweep', f, '--runs-dir', tmp_path / 'runs')
    assert rc != 0 and one_error_line(out) == 'error: 1 point(s) failed: a-fail=true', out
    rc, out = cnv('sweep', f, '--runs-dir', tmp_path / 'runs', '--status')
    assert '  failed   a-fail=true  RuntimeError: the toy chapter was asked to fail' in out, out

def _root():
    return os.geteuid() == 0 and shutil.which('mount')

@pytest.mark.skipif(not _root(), reason='mounts a small tmpfs: needs root')
def test_5_full_disk_and_read_only_runs_folder_name_the_reason(tmp_path, toy):
    mnt = tmp_path / 'mnt'; mnt.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mnt)], check=True)
    try:
        (mnt / 'runs').mkdir()
        with open(mnt / 'filler', 'wb', buffering=0) as fh:  # fill the disk to its last block
            try:
                while True: fh.write(b'\0' * 4096); fh.flush()
            except OSError: pass
        rc, out = cnv('run', toy, '--name', 'full', '--runs-dir', mnt / 'runs', cwd=tmp_path)
        assert rc != 0 and 'No space left on device' in out and str(mnt / 'runs' / 'full') in out, out
        assert 'Traceback' not in out
        assert not list(mnt.rglob('*.tmp')), list(mnt.rglob('*'))
        rec = mnt / 'runs' / 'full' / 'record.json'
        assert not rec.exists() or json.loads(rec.read_text())['status'] == 'failed'  # never left 'running'
        (mnt / 'filler').unlink()
        subprocess.run(['mount', '-o', 'remount,ro', str(mnt)], check=True)
        rc, out = cnv('run', toy, '--name', 'ro', '--runs-dir', mnt / 'runs', cwd=tmp_path)
        assert rc != 0 and 'Read-only file system' in one_error_line(out) and str(mnt / 'runs' / 'ro') in out, out
    finally: subprocess.run(['umount', str(mnt)], check=True)

def test_6_a_grid_axis_must_be_a_list(toy):
    for v in ('12', 12, {'a': 1}):
        with pytest.raises(SpecError, match=f"stage 'a': grid 'x' must be a non-empty YAML list, not {v!r}"):
            load_spec({'name': 'sw', 'stages': [{'name': 'a', 'chapter': str(toy), 'grid': {'x': v}}]})

def test_7_a_malformed_record_is_marked_and_the_rest_still_listed(tmp_path, toy, capsys):
    from cardiac_nvae.records import write_json
    runs = tmp_path / 'runs'
    write_json(runs / 'r1' / 'record.json', [])
    write_json(runs / 'r2' / 'record.json', {'chapter': 'toy', 'status': 'done', 'metrics': {'value': 1.0}})
    write_json(runs / 'r3' / 'record.json', {'chapter': 'toy', 'status': 'done', 'metrics': 'high'})
    cli.main(['runs', '--runs-dir', str(runs)])
    out = capsys.readouterr().out
    assert f"bad record  -       -      -     malformed record {runs / 'r1' / 'record.json'}: not a JSON object (list)" in out, out
    assert 'r2    toy      done' in out and f"malformed record {runs / 'r3' / 'record.json'}: metrics is str, not dict" in out, out
    spec = {'name': 'sw', 'stages': [{'name': 'a', 'chapter': str(toy), 'grid': {'x': [1.0, 2.0]}}]}
    sd = runs / 'sw'; write_manifest(spec, sd)
    (sd / 'a-x=1.0').mkdir(); (sd / 'a-x=1.0' / 'record.json').write_text('{"status": "do')  # truncated
    write_json(sd / 'a-x=2.0' / 'record.json', {'chapter': 'toy'})  # no status: not done
    rows, each = sweep_status(sd)
    assert each == {'a-x=1.0': 'failed', 'a-x=2.0': 'failed'}
    assert sw.point_error(sd, 'a-x=1.0').startswith(f"{sd / 'a-x=1.0' / 'record.json'}: unreadable record")

def test_8_a_huge_grid_is_refused_at_once_and_planning_is_linear(tmp_path, toy):
    spec = {'name': 'big', 'stages': [{'name': 'a', 'chapter': str(toy), 'grid': {'x': list(range(1000)), 'seed': list(range(1000))}}]}
    t0 = time.time()
    with pytest.raises(SpecError, match='1000000 points exceed the limit of 10000; allow them with --max-points 1000000'): plan(spec, tmp_path)
    assert time.time() - t0 < 2
    spec['stages'][0]['grid'] = {'x': list(range(160)), 'seed': list(range(100))}
    t0 = time.time()
    assert len(plan(spec, tmp_path, max_points=None)) == 16000
    assert time.time() - t0 < 3, 'planning 16k points should take well under a second'

WRITER = """import sys
from cardiac_nvae.records import write_json
for i in range(300): write_json(sys.argv[1], {'writer': sys.argv[2], 'i': i})
"""

def test_10_concurrent_writers_of_one_record_never_collide(tmp_path):
    f = tmp_path / 'record.json'
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    procs = [subprocess.Popen([sys.executable, '-c', WRITER, str(f), str(w)], env=env, stderr=subprocess.PIPE, text=True) for w in (1, 2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert json.loads(f.read_text())['i'] == 299 and [p.name for p in tmp_path.iterdir()] == ['record.json']

# ---------------------------------------------------------------- low
def test_low_fifo_in_place_of_weights_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / 'best.pth')
    code = ("import sys\nfrom cardiac_nvae.train import CheckpointError, load_checkpoint\n"
            "try: load_checkpoint(sys.argv[1])\nexcept CheckpointError as e: print(e)")
    try: r = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'best.pth')], capture_output=True, text=True, timeout=120,
                            env={**os.environ, 'PYTHONPATH': str(ROOT)})
    except subprocess.TimeoutExpired: pytest.fail('reading a FIFO as a checkpoint blocked')  # run() has killed the reader
    assert f"{tmp_path / 'best.pth'}: not a regular file" in r.stdout, r.stdout + r.stderr

def test_low_huge_nifti_header_and_complex_images_are_refused(tmp_path):
    import nibabel as nib, numpy as np
    from cardiac_nvae.data import DataError, read_nifti
    hdr = nib.Nifti1Header(); hdr.set_data_dtype(np.float32); hdr.set_data_shape((30000, 30000, 30000))
    f = tmp_path / 'huge.nii'
    with open(f, 'wb') as fh: hdr.write_to(fh); fh.write(b'\0' * (352 - fh.tell()) + b'\0' * 64)
    with pytest.raises(DataError, match=r'huge.nii: image header declares shape \(30000, 30000, 30000\) \(2.7e\+13 voxels'): read_nifti(f)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.complex64), np.eye(4)), tmp_path / 'c.nii.gz')
    with pytest.raises(DataError, match='c.nii.gz: image holds complex values'): read_nifti(tmp_path / 'c.nii.gz')

def test_low_malformed_last_pth_on_resume_names_the_file(tmp_path):
    import torch
    from test_train_faults import new_learner
    from cardiac_nvae.train import CheckpointError
    torch.save({'epoch': 0}, tmp_path / 'last.pth')
    with pytest.raises(CheckpointError, match=r"last.pth: not a resume checkpoint \(missing \['callbacks', 'model', 'n_epoch'"):
        new_learner(tmp_path).fit(2)

def test_low_runs_lists_sweep_points_and_escapes_odd_names(tmp_path, toy, capsys):
    from cardiac_nvae.records import write_json
    runs = tmp_path / 'runs'
    write_json(runs / 'solo' / 'record.json', {'chapter': 'toy', 'status': 'done'})
    write_json(runs / 'bad\nname' / 'record.json', {'chapter': 'toy', 'status': 'done'})
    sd = runs / 'sw'; write_manifest({'name': 'sw', 'stages': [{'name': 'a', 'chapter': str(toy), 'grid': {'x': [1.0]}}]}, sd)
    write_json(sd / 'a-x=1.0' / 'record.json', {'chapter': 'toy', 'status': 'done', 'metrics': {'value': 10.0}})
    cli.main(['runs', '--runs-dir', str(runs)])
    lines = capsys.readouterr().out.splitlines()
    assert [l.split()[0] for l in lines] == ['name', 'solo', 'bad\\nname', 'sw/a-x=1.0'], lines
    assert lines[-1].endswith('value=10')

def test_low_bad_command_line_values_are_one_line_errors(tmp_path, toy):
    rc, out = cnv('sweep', 'x.yaml', '--workers', '-1')
    assert rc == 2 and "argument --workers: expected a whole number of at least 1, not '-1'" in out and 'Traceback' not in out
    rc, out = cnv('sweep', 'x.yaml', '--sbatch', 'qos')
    assert rc != 0 and one_error_line(out) == "error: --sbatch 'qos': expected KEY=VALUE, e.g. --sbatch qos=high"
    rc, out = cnv('sweep', tmp_path / 'missing.yaml')
    assert rc != 0 and one_error_line(out) == f"error: {tmp_path / 'missing.yaml'}: sweep spec not found"
    rc, out = cnv('sweep', tmp_path / 'missing.yaml', '--debug')
    assert rc != 0 and 'Traceback' in out and 'SpecError' in out  # --debug shows where

def test_a_finished_quick_run_keeps_best_not_last_checkpoints(tmp_path):
    "Issue 23: quick runs keep only the weights a later chapter loads; a thesis-scale run keeps last.pth to be continued."
    cell = ("import os\nfrom pathlib import Path\nfrom cardiac_nvae.train import write_record\nd = Path(os.environ['CARDIAC_NVAE_RUN_DIR'])\n"
            "for f in ('best.pth', 'last.pth', 'simclr/best.pth', 'simclr/last.pth'):\n"
            "    (d / f).parent.mkdir(exist_ok=True); (d / f).write_bytes(b'x' * 1000)\n"
            "write_record(d, params={}, metrics={}, chapter='toy', scale=scale)")
    nb = chapter(tmp_path / 'ck.ipynb', "scale = 'quick'", cell)
    for scale in ('quick', 'thesis'):
        rc, out = cnv('run', nb, '--runs-dir', tmp_path / 'runs', '--name', scale, '-p', 'scale', scale, '--quiet')
        assert rc == 0, out[-2000:]
    left = lambda name: sorted(p.relative_to(tmp_path / 'runs' / name).as_posix() for p in (tmp_path / 'runs' / name).rglob('*.pth'))
    assert left('quick') == ['best.pth', 'simclr/best.pth']
    assert left('thesis') == ['best.pth', 'last.pth', 'simclr/best.pth', 'simclr/last.pth']
