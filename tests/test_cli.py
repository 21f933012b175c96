"""The `cardiac-nvae` command line: papermill runs with recorded parameters, never overwriting a run, and their lifecycle
(a real SIGTERM or SIGKILL of the `cardiac-nvae run` process, a failing chapter, `--resume`)."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

import nbformat, pytest

from cardiac_nvae import cli
from cardiac_nvae.data import shared_data_root

def test_find_notebook_by_stem_number_and_title():
    assert cli.find_notebook('00_data').name == '00_data.ipynb'
    assert cli.find_notebook('00').name == '00_data.ipynb'
    assert cli.find_notebook('data').name == '00_data.ipynb'
    with pytest.raises(SystemExit, match="no chapter notebook matches 'nope'"): cli.find_notebook('nope')
    with pytest.raises(SystemExit, match="'03' is ambiguous: 03_baselines, 03_train"): cli.find_notebook('03')

def test_parse_params_yaml_then_pairs(tmp_path):
    f = tmp_path / 'p.yaml'; f.write_text('margin: 8\ncrop: centre\n')
    assert cli.parse_params([('margin', '6'), ('data_root', 'null')], f) == {'margin': 6, 'crop': 'centre', 'data_root': None}
    with pytest.raises(SystemExit, match='parameters file is missing'): cli.parse_params([], tmp_path / 'none.yaml')

def test_unknown_parameter_is_refused():
    with pytest.raises(SystemExit, match=r"has no parameter\(s\) \['crp'\]"):
        cli.check_params(cli.find_notebook('00_data'), {'crp': 'centre'})

def test_runs_are_never_overwritten(tmp_path):
    d = cli.new_run_dir(tmp_path, 'a')
    (d / 'x').write_text('kept')
    with pytest.raises(SystemExit, match='runs are never overwritten'): cli.new_run_dir(tmp_path, 'a')
    assert (d / 'x').read_text() == 'kept'
    assert cli.new_run_dir(tmp_path, None) != cli.new_run_dir(tmp_path, None)

def printed(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    return '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))

def test_run_parameter_changes_the_run_and_is_recorded(tmp_path):
    "Papermill injects `crop='centre'` (tags survive nbdev_clean): the executed chapter reports the uncropped share."
    r = subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', 'run', '00_data', '-p', 'crop', 'centre',
                        '-p', 'n_preview', '4', '--name', 'nocrop', '--runs-dir', str(tmp_path), '--quiet'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / 'nocrop'
    nb = nbformat.read(out / '00_data.ipynb', as_version=4)
    assert any('injected-parameters' in c.metadata.get('tags', []) for c in nb.cells)
    bg = float(re.search(r'background share: ([\d.]+)%', printed(out / '00_data.ipynb')).group(1))
    assert bg > 90, f'crop=centre should leave mostly background, got {bg}%'  # the default crop gives about 65%
    rec = json.loads((out / 'record.json').read_text())
    assert rec['parameters'] == {'crop': 'centre', 'n_preview': 4} and rec['status'] == 'done'
    assert rec['package_version'] and 'git_commit' in rec and rec['seconds'] > 0
    if shared_data_root(): assert rec['data_fingerprint'] and len(rec['data_fingerprint']) == 16
    assert r.stdout.strip().splitlines() == [r.stdout.strip()] and r.stdout.startswith('done') and str(out) in r.stdout  # --quiet: one line


# ---------------------------------------------------------------- help, parameters
def test_help_lists_chapters_and_params_prints_defaults_and_comments(capsys):
    with pytest.raises(SystemExit): cli.main(['--help'])
    out = capsys.readouterr().out
    assert re.search(r'chapters .*00_data, 01_phantom.*04_nvae', out)
    cli.main(['params', '04'])
    out = capsys.readouterr().out
    assert re.search(r'^  epochs = 4 +# thesis: 100$', out, re.M) and re.search(r'^  seed = 42$', out, re.M)
    for sub, text in (('demo', 'phantom seed'), ('phantom', 'patients \\(ACDC\\) or subjects'), ('run', '--resume NAME')):
        with pytest.raises(SystemExit): cli.main([sub, '--help'])
        assert re.search(text, capsys.readouterr().out), sub


def test_parameter_types_are_checked_against_the_defaults():
    nb = cli.find_notebook('04_nvae')
    got = cli.check_params(nb, {'epochs': 3, 'sr_weight': '1e-3', 'betas': [1, 2, 3], 'clamp': True, 'train_slices': None, 'beta': 2})
    assert got == {'epochs': 3, 'sr_weight': 1e-3, 'betas': [1, 2, 3], 'clamp': True, 'train_slices': None, 'beta': 2}
    assert isinstance(got['sr_weight'], float)
    from papermill.translators import PythonTranslator  # what papermill injects: a list literal (a tuple would arrive as text)
    assert 'betas = [1, 2, 3]' in PythonTranslator.codify({'betas': got['betas']})
    for k, v, msg in (('epochs', 'four', "epochs takes int \\(default 4\\), not str 'four'"), ('epochs', 2.5, 'epochs takes int'),
                      ('clamp', 1, 'clamp takes bool'), ('sr_weight', True, 'sr_weight takes float'), ('config', 3, 'config takes str'),
                      ('betas', 10, 'betas takes tuple')):
        with pytest.raises(SystemExit, match=msg): cli.check_params(nb, {k: v})
    r = subprocess.run([sys.executable, '-m', 'cardiac_nvae.cli', 'run', '00_data', '-p', 'margin', 'four'], capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip() == "error: 00_data: parameter margin takes int (default 4), not str 'four'"


def test_relative_paths_are_taken_from_the_callers_folder(tmp_path):
    (tmp_path / 'data').mkdir(); (tmp_path / 'old-run').mkdir()
    nb = toy_chapter(tmp_path / '99_toy.ipynb')
    got = cli.check_params(nb, {'data_root': 'data', 'out_dir': 'x/y', 'nvae_run': 'old-run', 'simclr_run': 'a-name'}, cwd=tmp_path)
    assert got == {'data_root': str(tmp_path / 'data'), 'out_dir': str(tmp_path / 'x' / 'y'),
                   'nvae_run': str(tmp_path / 'old-run'), 'simclr_run': 'a-name'}  # a run that is no folder here is a name


# ---------------------------------------------------------------- run lifecycle on a toy chapter
TOY_PARAMS = """epochs = 3  # epochs of the toy fit
sleep_s = 0.  # pause after each epoch
fail = False  # raise a DataError before training
pause_s = 0.  # pause before training (and before importing anything)
data_root = None  # a folder
out_dir = None  # a folder
nvae_run = None  # a run name or folder
simclr_run = None"""
TOY_FAIL = """import time
time.sleep(pause_s)
if fail:
    from cardiac_nvae.data import DataError
    raise DataError('/data/p1/image.nii.gz: image has 3 non-finite values (NaN or Inf)')"""
TOY_FIT = """import os, time, torch
from pathlib import Path
from torch import nn
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from cardiac_nvae.train import make_learner, seed_everything
class Slow(Callback):
    order = 99  # after the log and the Resume checkpoint are written
    def after_epoch(self): time.sleep(sleep_s)
class Toy(nn.Module):
    def __init__(self): super().__init__(); self.lin = nn.Linear(4, 4)
    def forward(self, x): out = self.lin(x); return out, {'mse': ((out - x) ** 2).mean()}
x = torch.randn(48, 4, generator=torch.Generator().manual_seed(0))
items = [(x[i], torch.zeros(1)) for i in range(48)]
dls = DataLoaders(DataLoader(items[:32], bs=8, shuffle=True), DataLoader(items[32:], bs=8))
seed_everything(0)
learn = make_learner(Toy(), dls, lr=0.01, path=Path(os.environ['CARDIAC_NVAE_RUN_DIR']) / 'fit', seed=0, cbs=[Slow()], device='cpu')
learn.fit(epochs)
print('resumed at epoch', [cb.start for cb in learn.cbs if type(cb).__name__ == 'Resume'])"""

def toy_chapter(path):
    "A three-cell chapter: parameters, an optional pause or DataError, a small fit under `make_learner` in the run folder."
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(TOY_PARAMS); p.metadata['tags'] = ['parameters']
    nb.cells = [p, nbformat.v4.new_code_cell(TOY_FAIL), nbformat.v4.new_code_cell(TOY_FIT)]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, str(path))
    return path

def start_run(tmp_path, *args):
    "`cardiac-nvae run` of the toy chapter in a subprocess whose temporary folder is `tmp_path/tmp`."
    (tmp_path / 'tmp').mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp_path / 'tmp'), PYTHONPATH=str(Path(cli.__file__).parents[1]))
    return subprocess.Popen([sys.executable, '-m', 'cardiac_nvae.cli', 'run', str(tmp_path / '99_toy.ipynb'), '--runs-dir', str(tmp_path / 'runs'), *args],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def wait_for(path, proc, timeout=180):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f'{path} did not appear'
        time.sleep(0.2)

def processes_mentioning(text):
    "Pids of processes whose command line contains `text` (the kernel's names its connection file)."
    pids = []
    for d in Path('/proc').glob('[0-9]*'):
        try:
            if text in (d / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace'): pids.append(int(d.name))
        except OSError: pass
    return pids

def wait_gone(text, timeout=20):
    t0 = time.time()
    while processes_mentioning(text) and time.time() - t0 < timeout: time.sleep(0.2)
    return processes_mentioning(text)

def pausing(nb):
    "True once papermill has saved the output notebook with the pause cell running."
    try: cells = json.loads(nb.read_text())['cells']
    except (OSError, ValueError, KeyError): return False  # not written yet, or being written
    return any('time.sleep(pause_s)' in ''.join(c['source']) and c['metadata'].get('papermill', {}).get('status') == 'running' for c in cells)

@pytest.fixture
def toy(tmp_path):
    return toy_chapter(tmp_path / '99_toy.ipynb')

@pytest.mark.skipif(not Path('/proc/self/cmdline').exists(), reason='looks for kernel processes in /proc')
def test_sigterm_records_killed_with_the_cell_and_leaves_nothing_behind(tmp_path, toy):
    proc = start_run(tmp_path, '-p', 'pause_s', '60', '--name', 'term')
    out = tmp_path / 'runs' / 'term'
    nb = out / '99_toy.ipynb'
    t0 = time.time()
    while not pausing(nb):
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()
        time.sleep(0.2)
    assert (out / '.jupyter-runtime' / 'kernel.json').exists()  # the kernel's connection file lives in the run folder
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-3000:]
    rec = json.loads((out / 'record.json').read_text())
    assert rec['status'] == 'killed' and rec['signal'] == 'SIGTERM' and rec['killed_at'] and rec['seconds'] > 0
    assert rec['cell'] == 'cell 3/4: import time', rec['cell']  # papermill's injected-parameters cell is the 2nd
    assert stdout.startswith('killed') and 'Traceback' not in stderr
    assert not wait_gone(str(out)), 'the kernel outlived the run'
    assert not (out / '.jupyter-runtime').exists() and list((tmp_path / 'tmp').iterdir()) == []

@pytest.mark.skipif(not Path('/proc/self/cmdline').exists(), reason='looks for kernel processes in /proc')
def test_sigkill_shows_stale_and_resume_continues_with_the_recorded_parameters(tmp_path, toy):
    proc = start_run(tmp_path, '-p', 'sleep_s', '1', '--name', 'k')
    out = tmp_path / 'runs' / 'k'
    wait_for(out / 'fit' / 'last.pth', proc)
    time.sleep(1.2)  # the progress reader polls every second
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=30)
    # progress: training epochs with losses and time left, read from the run's log.csv
    assert re.search(r'fit: epoch 1/3  train_loss [\d.]+  valid_loss [\d.]+  \(\d+s/epoch, ~\d+s left\)', stderr), stderr
    rec = json.loads((out / 'record.json').read_text())
    assert rec['status'] == 'running' and rec['pid'] == proc.pid and rec['host']
    assert not wait_gone(str(out)), 'the orphaned kernel did not exit'
    (row,) = cli.list_runs(tmp_path / 'runs')
    assert (row['name'], row['chapter'], row['status']) == ('k', '99_toy', 'stale')
    with pytest.raises(SystemExit, match="ran with epochs=3; resuming with epochs=4 is refused"):
        cli.run_chapter(str(toy), {'epochs': 4}, runs_dir=tmp_path / 'runs', resume='k')
    first = (out / 'fit' / 'log.csv').read_text().splitlines()[:2]
    proc = start_run(tmp_path, '--resume', 'k', '--quiet')
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert len(stdout.strip().splitlines()) == 1 and stdout.startswith('done') and str(out) in stdout  # --quiet: one line
    log = (out / 'fit' / 'log.csv').read_text().splitlines()
    assert [l.split(',')[0] for l in log[1:]] == ['0', '1', '2'] and log[:2] == first  # epoch 0 was not trained again
    start = int(re.search(r'resumed at epoch \[(\d)\]', printed(out / '99_toy.ipynb')).group(1))
    assert start >= 1
    rec = json.loads((out / 'record.json').read_text())
    assert rec['status'] == 'done' and rec['parameters'] == {'sleep_s': 1.0} and rec['attempts'][0]['status'] == 'stale'
    with pytest.raises(SystemExit, match='finished already'): cli.run_chapter(str(toy), runs_dir=tmp_path / 'runs', resume='k')

def test_failure_record_holds_type_message_and_full_traceback(tmp_path, toy):
    (tmp_path / 'data').mkdir()
    proc = start_run(tmp_path, '-p', 'fail', 'true', '-p', 'data_root', 'data', '--name', 'f')
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    rec = json.loads((tmp_path / 'runs' / 'f' / 'record.json').read_text())
    assert rec['status'] == 'failed' and rec['error_type'] == 'DataError'
    assert rec['error'] == '/data/p1/image.nii.gz: image has 3 non-finite values (NaN or Inf)'
    assert rec['error_cell'] == 'cell 3: import time'
    tb = (tmp_path / 'runs' / 'f' / rec['traceback']).read_text()
    assert "raise DataError('/data/p1/image.nii.gz" in tb and '\x1b[' not in tb
    assert rec['parameters']['data_root'] == rec['data_root'] == str(tmp_path / 'data')  # resolved against the caller's folder
    assert stdout.startswith('failed') and 'DataError: /data/p1/image.nii.gz' in stdout

def test_runs_lists_status_key_parameters_and_metrics(tmp_path, capsys):
    "Records as the cli and a chapter's write_record leave them: a finished run, a live one, one whose process is gone."
    from cardiac_nvae.records import write_json
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()
    recs = {'a': dict(notebook='04_nvae.ipynb', chapter='04_nvae', status='done', parameters={'epochs': 2},
                      params={'epochs': 2, 'train_slices': 160, 'seed': 42}, metrics={'dice': 0.8123, 'pct_av': 97.5, 'note': 'x'}),
            'b': dict(notebook='05_frds.ipynb', status='running', host=cli.socket.gethostname(), pid=os.getpid(), parameters={'max_train': 64}),
            'c': dict(notebook='00_data.ipynb', status='running', host=cli.socket.gethostname(), pid=dead.pid, parameters={})}
    for i, (name, rec) in enumerate(recs.items()):
        write_json(tmp_path / name / 'record.json', rec); os.utime(tmp_path / name / 'record.json', (i, i))
    rows = cli.list_runs(tmp_path)
    assert [(r['name'], r['chapter'], r['status'], r['epochs'], r['train'], r['seed']) for r in rows] == [
        ('a', '04_nvae', 'done', 2, 160, 42), ('b', '05_frds', 'running', '-', 64, '-'), ('c', '00_data', 'stale', '-', '-', '-')]
    assert rows[0]['metrics'] == 'dice=0.8123  pct_av=97.5'
    cli.main(['runs', '--runs-dir', str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ['name', 'chapter', 'status', 'epochs', 'train', 'seed', 'metrics'] and out[3].split()[:3] == ['c', '00_data', 'stale']
