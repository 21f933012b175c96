"""Repository hygiene: README, index notebook and CI agree; notebooks keep their papermill tags; nbdev leaves no diff."""
import json, re, shutil, subprocess
from configparser import ConfigParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

def shell_commands(text):
    "The lines inside ```sh fences of a markdown text."
    return [l.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S) for l in block.strip().splitlines()]

def index_markdown():
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    return '\n\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')

def test_readme_and_index_give_the_same_commands():
    readme = shell_commands((ROOT / 'README.md').read_text())
    assert readme, 'README.md has no ```sh commands'
    assert readme == shell_commands(index_markdown())

def test_readme_gives_two_setup_commands_and_ci_runs_the_test_one():
    setup = [c for c in shell_commands((ROOT / 'README.md').read_text()) if c.startswith('pip install')]
    assert len(setup) == 2, setup
    main_job, test_cmd = setup
    assert 'cardiac-nvae demo' in main_job and 'nbdev_test' in test_cmd and 'pytest' in test_cmd
    ci = [l.strip() for l in (ROOT / '.ci' / 'run').read_text().splitlines() if l.strip() and not l.startswith('#')]
    assert test_cmd in ci, f".ci/run does not run the README's test command {test_cmd!r}"

def test_settings_keep_papermill_tags_and_test_flags():
    cfg = ConfigParser(); cfg.read(ROOT / 'settings.ini')
    d = cfg['DEFAULT']
    assert 'tags' in d['allowed_cell_metadata_keys'].split()
    assert {'slow', 'cuda'} <= set(d['tst_flags'].split())
    assert d['lib_name'] == 'cardiac_nvae' and d['nbs_path'] == 'nbs'

def chapters(): return sorted((ROOT / 'nbs').glob('[0-9][0-9]_*.ipynb'))

@pytest.mark.parametrize('nb', chapters(), ids=lambda p: p.stem)
def test_chapter_starts_with_tagged_parameters_cell(nb):
    cells = [c for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
    tagged = [i for i, c in enumerate(cells) if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(tagged) == 1, f'{nb.name}: expected one cell tagged parameters, found {len(tagged)}'
    before = [''.join(c['source']) for c in cells[:tagged[0]]]
    assert all(s.startswith(('#| default_exp', '#| hide', '#|hide')) for s in before), f'{nb.name}: code runs before the parameters cell'
    assert re.search(r'^\s*\w+\s*=', ''.join(cells[tagged[0]]['source']), re.M)

def test_nbdev_clean_and_export_leave_no_diff(tmp_path):
    if not (ROOT / '.git').exists(): pytest.skip('not a git checkout')
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).exists():
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT / f, tmp_path / f)
    before = {f: (tmp_path / f).read_bytes() for f in files if (tmp_path / f).exists()}
    for cmd in (['nbdev_clean'], ['nbdev_export']): subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    changed = [f for f, b in before.items() if (tmp_path / f).read_bytes() != b]
    new = [str(p.relative_to(tmp_path)) for p in (tmp_path / 'cardiac_nvae').glob('*.py') if str(p.relative_to(tmp_path)) not in before]
    assert not changed and not new, f'run nbdev_clean and nbdev_export, then commit: changed {changed}, new {new}'
