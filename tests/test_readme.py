"""The README's command blocks run as printed, block by block and line by line, from a scratch folder outside the
checkout, on the embedded phantom in quick mode (what a newcomer without ../shared gets)."""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 2400  # seconds one block may take on a loaded 2-core machine before the test gives up

# Lines this test does not run, each with the reason and the test that covers it instead.
NOT_RUN = {
    'pip install -e ".[dev]"': "the README's test command: it is what runs this test (CI runs it in .ci/run)",
    'pip install torch': 'installs PyTorch from the network; the test runs in the environment already installed',
    'cardiac-nvae docs': 'tests/test_docs.py builds the site and opens every page in headless Chromium',
    'cardiac-nvae sweep sweeps/table61-thesis.yaml --executor slurm': 'a thesis-scale sweep for a GPU cluster; tests/test_sweep.py runs sweeps on a one-node Slurm',
}
def sh_blocks(text):
    "The ```sh blocks of a markdown text, each as its list of lines."
    return [[l.rstrip() for l in b.strip().splitlines()] for b in re.findall(r"```sh\n(.*?)```", text, re.S)]

def runnable(lines):
    "The lines of a block this test runs: NOT_RUN lines dropped, a leading `pip install ... &&` stripped (installed here)."
    out = []
    for l in lines:
        if any(l.startswith(k) for k in NOT_RUN): continue
        out.append(re.sub(r'^pip install -e \. && ', '', l))
    return [l for l in out if l.strip()]

BLOCKS = [b for b in sh_blocks((ROOT / 'README.md').read_text()) if runnable(b)]

def test_every_block_is_run_or_skipped_for_a_reason():
    "The extraction sees the README's blocks, and every NOT_RUN entry still names a printed line (no stale excuse)."
    lines = [l for b in sh_blocks((ROOT / 'README.md').read_text()) for l in b]
    assert len(BLOCKS) >= 4, BLOCKS
    for k in NOT_RUN: assert any(l.startswith(k) for l in lines), f'NOT_RUN names {k!r}, which README.md no longer prints'
    assert runnable(['pip install -e . && cardiac-nvae demo', 'cardiac-nvae docs']) == ['cardiac-nvae demo']

def run_block(lines, cwd):
    "Run the lines as one bash script (stop at the first failure), with `cardiac-nvae` this interpreter's command line."
    script = '\n'.join(['set -euo pipefail', f'cardiac-nvae() {{ {sys.executable} -m cardiac_nvae.cli "$@"; }}', *lines])
    env = {**os.environ, 'CARDIAC_NVAE_DATA': 'phantom', 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    return subprocess.run(['bash', '-c', script], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)

def record(run):
    return json.loads((run / 'record.json').read_text())

@pytest.mark.slow
@pytest.mark.parametrize('lines', BLOCKS, ids=[re.sub(r'\W+', '-', b[0])[:50] for b in BLOCKS])
def test_readme_block_runs_as_printed(lines, tmp_path):
    work = tmp_path / 'newcomer'; work.mkdir()
    assert ROOT not in work.resolve().parents, 'the scratch folder must lie outside the checkout'
    shutil.copytree(ROOT / 'sweeps', work / 'sweeps')  # specs the README names relative to a clone's root
    r = run_block(runnable(lines), work)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"README block failed (exit {r.returncode}):\n" + '\n'.join(lines) + '\n---\n' + out[-4000:]
    runs = work / 'runs'
    text = '\n'.join(lines)
    if 'cardiac-nvae demo' in text:
        assert re.search(r'^executed notebook: .*00_data\.ipynb$', r.stdout, re.M), r.stdout[-2000:]
    if '--name data-no-crop' in text:
        assert record(runs / 'data-no-crop')['parameters']['crop'] == 'centre'
        from_yaml = [record(d) for d in runs.iterdir() if d.name != 'data-no-crop' and (d / 'record.json').exists()]
        assert [rec['parameters'] for rec in from_yaml] == [{'margin': 6}], from_yaml
        assert json.loads((work / 'my-phantom' / 'phantom.json').read_text())['layout'] == 'mnms'
    if '-p nvae_run' in text:
        for name in re.findall(r'--name (\S+)', text): assert record(runs / name)['status'] == 'done', name
        acu = next(re.search(r'--name (\S+)', l).group(1) for l in lines if '-p nvae_run' in l)
        size = record(runs / acu)['parameters'].get('size')
        # 06 takes its slice size from the NVAE run: the chapter says so
        assert re.search(r'size=\d+: taken from nvae_run', (runs / acu / '06_acunet.ipynb').read_text()), f'{acu}: no "taken from nvae_run" line (size param {size})'
    if 'cardiac-nvae sweep' in text and '--status' in text:
        tables = next(Path(work / m) for m in re.findall(r'--out (\S+)', text))
        assert any(tables.glob('*.csv')), f'report wrote no tables into {tables}'
