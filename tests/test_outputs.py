"""What the committed notebooks publish: no absolute path, user name, stderr stream, warning or real-data output in any of them."""
import io, json, os, tempfile, time
from pathlib import Path

import pytest

from cardiac_nvae.execute import notebooks, scan_notebook, scan_outputs

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.stem)
def test_committed_outputs_are_publishable(nb):
    "Fails until `cardiac-nvae execute-all` has re-executed the notebook on the phantom with the current code."
    problems = scan_outputs(nb)
    assert not problems, f"{len(problems)} problem(s); run `cardiac-nvae execute-all {nb.stem}`:\n" + '\n'.join(problems[:30])

def nb_with(*outputs):
    return {'cells': [{'cell_type': 'code', 'source': 'x', 'outputs': list(outputs)}]}

def stream(text, name='stdout'): return {'output_type': 'stream', 'name': name, 'text': text}
def plain(text): return {'output_type': 'execute_result', 'data': {'text/plain': text}}

@pytest.mark.parametrize('out, what', [
    (stream('data at /work/shared/data/acdc (fingerprint 1)'), "absolute path '/work/shared/data/acdc'"),
    (plain("PosixPath('/root/.cache/cardiac_nvae/phantom-v1')"), 'absolute path'),
    (stream('written to /tmp/tmp2ak2149b/acdc/testing\n'), "absolute path '/tmp/tmp2ak2149b/acdc/testing'"),
    (stream('C:\\Users\\me\\runs\\x'), 'absolute path'),
    (stream('fine', name='stderr'), 'stderr stream'),
    (plain('x.py:3: FutureWarning: `torch.jit.script` is deprecated'), 'warning text'),
    (stream('patient087 ES s2'), 'real patient ids (patient087'),
    (stream('data: real ACDC/M&Ms annotations at <data>'), 'computed on the real data'),
    (stream('by alice on her laptop'), "user or host name 'alice'"),
    ({'output_type': 'error', 'ename': 'ValueError', 'evalue': 'bad', 'traceback': []}, 'error output ValueError'),
])
def test_scan_finds_what_must_not_be_published(out, what):
    problems = scan_notebook(nb_with(out), 'nbs/x.ipynb', users={'alice'})
    assert problems and problems[0].startswith('nbs/x.ipynb cell 0: ') and what in problems[0], problems

def test_scan_passes_relative_paths_urls_and_phantom_ids():
    ok = [stream('data: embedded phantom at <cache>/phantom-v1-seed0 (fingerprint ab12)\n'), stream('see <run>/record.json and ./runs/a'),
          plain('https://cardiac-nvae.github.io/cardiac-nvae/data.html'), stream('patient001 ED s3, patient026'),
          {'output_type': 'display_data', 'data': {'image/png': 'iVBOR/work/x', 'text/plain': '<Figure size 640x480 with 1 Axes>'}}]
    assert scan_notebook(nb_with(*ok), 'x', users={'alice'}) == []

def test_show_path_hides_machine_folders(monkeypatch, tmp_path):
    from cardiac_nvae.data import show_path
    monkeypatch.setenv('CARDIAC_NVAE_RUN_DIR', str(tmp_path / 'run'))
    monkeypatch.setenv('CARDIAC_NVAE_CACHE', str(tmp_path / 'cache'))
    assert show_path(tmp_path / 'run' / 'record.json') == '<run>/record.json'
    assert show_path(tmp_path / 'cache' / 'phantom' / 'acdc') == '<cache>/phantom/acdc'
    assert show_path(tmp_path / 'd' / 'acdc' / 'testing', root=tmp_path / 'd') == '<data>/acdc/testing'
    assert show_path(Path(tempfile.gettempdir()) / 'tmpab' / 'x') == '<tmp>/tmpab/x'
    assert show_path('/opt/somewhere/best.pth') == '<...>/best.pth' and show_path('runs/a') == 'runs/a'

def test_execute_all_refuses_unknown_or_ambiguous_names():
    from cardiac_nvae.execute import notebooks as nbs
    assert [p.name for p in nbs(['00_data', '01', 'index'])] == ['00_data.ipynb', '01_phantom.ipynb', 'index.ipynb']
    with pytest.raises(ValueError, match="03: ambiguous in nbs/"): nbs(['03'])
    with pytest.raises(ValueError, match="nvae: no notebook in nbs/"): nbs(['nvae'])

def test_run_needs_an_exact_chapter_id_and_params_takes_a_number():
    from cardiac_nvae import cli
    with pytest.raises(SystemExit, match="'nvae' is the title of 04_nvae; give its id to run it: 04_nvae"):
        cli.find_notebook('nvae', titles=False)
    assert cli.find_notebook('6').stem == '06_acunet' and cli.find_notebook('06').stem == '06_acunet'
    assert cli.find_notebook('nvae').stem == '04_nvae'  # params and docs may look a chapter up by title

def test_progress_prints_the_last_epoch_before_the_cell_ends_and_names_the_main_model(tmp_path):
    from cardiac_nvae.cli import Progress
    out, buf = tmp_path / 'run', io.StringIO()
    (out / 'sub').mkdir(parents=True)
    p = Progress(out, 3, stream=buf, slow=0)
    p.cell_started(1, type('C', (), {'source': 'learn.fit(3)'})())
    time.sleep(0.01); p.poll()  # announced as slow
    log = out / 'log.csv'
    log.write_text('epoch,train_loss,valid_loss,n_epoch\n'); p.poll()  # the fit begins: its clock starts now
    for ep in range(3):
        time.sleep(0.3)
        log.write_text(log.read_text() + f'{ep},1.0,2.0,3\n')
        if ep < 2: p.poll()
    p.cell_finished(1)  # the third epoch arrived after the last poll
    lines = buf.getvalue().splitlines()
    assert lines[-1].startswith('[cell 2/3] ended') and lines[-2].startswith('  main model: epoch 3/3'), lines
    first = [l for l in lines if 'epoch 1/3' in l][0]
    assert '(0s/epoch, ~1s left)' in first or '(0s/epoch, ~0s left)' in first, first  # not minutes: the cell's earlier time is not counted

def test_execute_notebook_runs_on_the_phantom_and_names_a_failing_cell(tmp_path):
    import nbformat
    from cardiac_nvae.execute import execute_notebook
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; print(os.environ['CARDIAC_NVAE_DATA'], os.environ['CARDIAC_NVAE_RUN_DIR'].startswith(os.environ['RUNS']))"),
                                         nbformat.v4.new_code_cell("1 / 0")])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    p = tmp_path / 'toy.ipynb'; nbformat.write(nb, str(p))
    os.environ['RUNS'] = str(tmp_path / 'runs')
    try:
        with pytest.raises(RuntimeError, match=r"toy.ipynb cell 1: ZeroDivisionError"): execute_notebook(p, tmp_path / 'runs', timeout=60)
        nb.cells = nb.cells[:1]; nbformat.write(nb, str(p))
        execute_notebook(p, tmp_path / 'runs', timeout=60)
    finally: os.environ.pop('RUNS')
    done = nbformat.read(str(p), as_version=4)
    assert done.cells[0].outputs[0]['text'] == 'phantom True\n' and done.cells[0].get('execution_count') is None  # cleaned

FIT = '''
import torch
from torch import nn
from cardiac_nvae.train import make_learner
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
class M(nn.Module):
    def __init__(s): super().__init__(); s.l = nn.Linear(2, 1)
    def forward(s, x): return {'mse': ((s.l(x) - 1) ** 2).mean()}
x = torch.randn(32, 2); ds = torch.utils.data.TensorDataset(x, x)
learn = make_learner(M(), DataLoaders(DataLoader(ds, bs=8), DataLoader(ds, bs=8), device='cpu'), device='cpu', quiet=False)
learn.fit(2)
'''

def test_training_into_a_log_file_prints_a_line_per_epoch(tmp_path):
    import subprocess, sys
    env = {k: v for k, v in os.environ.items() if k not in ('IN_TEST', 'CI', 'PAPERMILL_EXECUTION')}
    p = subprocess.run([sys.executable, '-c', FIT], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert '\r' not in p.stdout and [l.split('  ')[0] for l in lines] == ['epoch 1/2', 'epoch 2/2'], p.stdout
    assert 'train_loss' in lines[0] and 'valid_loss' in lines[0]
