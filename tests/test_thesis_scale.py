"""bench/thesis_scale.py: every chapter's thesis parameters pass the parameters-cell check; links and copies are right."""
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
import thesis_scale as ts  # noqa: E402
from cardiac_nvae.cli import check_params  # noqa: E402


@pytest.mark.parametrize('chapter', ['03_baselines', '04_nvae', '06_acunet'])
def test_chapter_thesis_params_pass_the_parameters_check(chapter):
    nb = ROOT / 'nbs' / f'{chapter}.ipynb'
    if not nb.exists(): pytest.skip(f"{nb.name} is not in this checkout")
    params = ts.thesis_params(nb)
    assert params, f"{nb.name} defines no THESIS_PARAMS / THESIS_SETTINGS"
    params = {k: v for k, v in params.items() if not (isinstance(v, str) and v.startswith('<'))}  # placeholders for runs
    check_params(nb, params)  # SystemExit names any parameter the chapter does not define

def test_nvae_stage_plan_is_runnable(tmp_path):
    with pytest.raises(SystemExit, match="simclr_run=.* needs the 'frds' stage first"): ts.plan_stage('nvae', speed={})
    nb, params, notes = ts.plan_stage('nvae', done={'frds': tmp_path / 'frds-run'}, speed={})
    assert params['epochs'] >= 100 and params['train_slices'] is None  # thesis scale: all training masks, 100 epochs
    assert params['simclr_run'] == str(tmp_path / 'frds-run')          # FRDS from the encoder of the same invocation

def fake_chapter(path, parameters, thesis):
    nb = nbformat.v4.new_notebook()
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    p = nbformat.v4.new_code_cell(parameters); p.metadata['tags'] = ['parameters']
    nb.cells = [p, nbformat.v4.new_code_cell(thesis)]
    nbformat.write(nb, str(path))
    return path

def test_unknown_thesis_parameter_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(ts.STAGES, 'nvae', str(fake_chapter(tmp_path / 'x.ipynb', 'epochs = 2', 'THESIS_PARAMS = dict(epochs=100, lr=1)')))
    with pytest.raises(SystemExit, match='lr'): ts.plan_stage('nvae', speed={})

def test_links_speed_flags_and_overrides(tmp_path, monkeypatch):
    nb = fake_chapter(tmp_path / 'y.ipynb', "epochs = 2\nsimclr_run = None\namp = None",
                      "x = 1\nTHESIS_PARAMS = dict(epochs=100, simclr_run='<a thesis-scale 05_frds run>')")
    monkeypatch.setitem(ts.STAGES, 'nvae', str(nb))
    with pytest.raises(SystemExit, match="'frds' stage first"): ts.plan_stage('nvae', speed={})
    _, params, notes = ts.plan_stage('nvae', done={'frds': tmp_path / 'run1'}, speed={'amp': 'bf16', 'compile': 'reduce-overhead'},
                                     overrides={'epochs': 1})
    assert params == {'epochs': 1, 'simclr_run': str(tmp_path / 'run1'), 'amp': 'bf16'}
    assert any("$CARDIAC_NVAE_SPEED instead: ['compile']" in n for n in notes)

def test_results_keep_records_and_arrays_never_weights(tmp_path):
    run = tmp_path / 'run'; (run / 'sub').mkdir(parents=True)
    for name in ('record.json', 'log.csv', 'fig.npz', 'sub/gen.npy', 'best.pth', 'last.pth', '04_nvae.ipynb'): (run / name).write_text('x')
    dest = ts.copy_results(run, tmp_path / 'res', {'device': 'test'})
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob('*') if p.is_file()) == \
        ['04_nvae.ipynb', 'device.json', 'fig.npz', 'log.csv', 'record.json', 'sub/gen.npy']
