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

def ci_lines():
    return [l.strip() for l in (ROOT / '.ci' / 'run').read_text().splitlines() if l.strip() and not l.lstrip().startswith('#')]

def test_readme_gives_the_main_job_and_the_test_command_and_ci_runs_the_test_one():
    cmds = shell_commands((ROOT / 'README.md').read_text())
    main_job = [c for c in cmds if 'cardiac-nvae demo' in c]; test_cmd = [c for c in cmds if 'nbdev_test' in c]
    assert len(main_job) == 1 and len(test_cmd) == 1, (main_job, test_cmd)
    main_job, test_cmd = main_job[0], test_cmd[0]
    assert main_job.startswith('pip install -e . &&'), main_job
    assert test_cmd.startswith('pip install -e ".[dev]" && bash .ci/setup &&') and 'pytest' in test_cmd, test_cmd
    assert test_cmd in ci_lines(), f".ci/run does not run the README's test command {test_cmd!r}"

def test_ci_runs_every_notebook_on_the_phantom_too_and_one_setup_script():
    ci = ci_lines()
    assert any(l.startswith('CARDIAC_NVAE_DATA=phantom nbdev_test') for l in ci), '.ci/run has no phantom pass of the notebooks'
    phantom = next(l for l in ci if l.startswith('CARDIAC_NVAE_DATA=phantom nbdev_test'))
    skip = re.search(r"--skip_file_re '([^']+)'", phantom)
    if skip:  # a notebook left out of the phantom pass must read no data (the first pass then ran it as the phantom pass would)
        left_out = [nb for nb in chapters() if re.search(skip.group(1), nb.name)]
        reads = [nb.name for nb in left_out if re.search(r'\bdata_root\s*=|shared_data_root\(|load_slices\(|resolve_data_root\(|phantom_data_root\(|make_phantom\(', nb.read_text())]
        assert not reads, f'.ci/run leaves {reads} out of the phantom pass, but they read data'
    assert not any('apt-get' in l for l in ci), '.ci/run installs system packages itself: that belongs in .ci/setup, which the README calls too'
    setup = (ROOT / '.ci' / 'setup').read_text()
    for pkg in ('chromium', 'slurm-wlm', 'munge'): assert pkg in setup, f'.ci/setup does not install {pkg}'

def test_readme_gives_the_cpu_only_install():
    cmds = shell_commands((ROOT / 'README.md').read_text())
    assert any(c.startswith('pip install torch') and '--index-url https://download.pytorch.org/whl/cpu' in c for c in cmds), cmds

def test_dependencies_have_upper_bounds():
    "A new major release of a dependency (pandas 4, torch 3) cannot break a fresh install silently."
    from packaging.requirements import Requirement
    cfg = ConfigParser(); cfg.read(ROOT / 'settings.ini')
    reqs = [Requirement(r) for k in ('requirements', 'dev_requirements') for r in cfg['DEFAULT'][k].split()]
    unbounded = [str(r) for r in reqs if not any(s.operator in ('<', '==', '<=', '~=') for s in r.specifier)]
    assert not unbounded, f'settings.ini: no upper bound on {unbounded}'

def test_license_and_citation_match_the_settings():
    cfg = ConfigParser(); cfg.read(ROOT / 'settings.ini')
    assert cfg['DEFAULT']['license'] == 'apache2'
    lic = (ROOT / 'LICENSE').read_text()
    assert 'Apache License' in lic and 'Version 2.0, January 2004' in lic and 'END OF TERMS AND CONDITIONS' in lic
    import yaml
    cff = yaml.safe_load((ROOT / 'CITATION.cff').read_text())
    assert cff['cff-version'] == '1.2.0' and cff['license'] == 'Apache-2.0' and cff['version'] == cfg['DEFAULT']['version']
    refs = {r['type']: r for r in cff['references'] if r['type'] == 'thesis'}
    assert refs['thesis']['title'] == 'Cardiac Shape Analysis with Nouveau Variational Autoencoder'
    dois = {r.get('doi') for r in cff['references']}
    assert {'10.1109/TMI.2018.2837502', '10.1109/TMI.2021.3090082', '10.1109/JBHI.2023.3267857'} <= dois, dois  # ACDC, M&Ms, M&Ms-2

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
