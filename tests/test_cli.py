"""The `cardiac-nvae` command line: papermill runs with recorded parameters, never overwriting a run."""
import json, re, subprocess, sys
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
    assert 'executed notebook' in r.stdout
