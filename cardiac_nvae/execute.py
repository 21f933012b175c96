"""Executing the committed notebooks for publication: on the embedded phantom, in quick mode, runs in a temporary folder, cleaned, and scanned for what must not be published (no notebook owns this file)."""
from __future__ import annotations
import contextlib, getpass, hashlib, json, os, re, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path

from .records import data_fingerprint

__all__ = ['PROJECT_ROOT', 'STATE', 'scan_notebook', 'scan_outputs', 'notebooks', 'execute_notebook', 'execute_all', 'status_lines']

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STATE = PROJECT_ROOT / '.cache' / 'execute-all.json'  # progress: an interrupted `execute-all` continues where it stopped

# folders an absolute path of some machine starts with (a relative `<data>/acdc` or a URL does not match)
_re_abs = re.compile(r'(?<![\w.:/<>~-])(/(?:work|root|home|tmp|Users|var|opt|usr|mnt|scratch|private|srv|data|nfs|gpfs|lustre|media|cluster)'
                     r'/[^\s\'"<>)\]]*)|(?<![\w])([A-Z]:\\[^\s\'"]+)')
_re_warning = re.compile(r'\b\w*(?:Warning|warn)\b:|\bwarnings\.warn\(')
_re_patient = re.compile(r'\bpatient(\d{3})\b')
PHANTOM_MAX_PATIENT = 30  # the phantom's ACDC ids stop at 026 (20 training, 6 testing): a higher id is real data

def _str(v): return ''.join(v) if isinstance(v, list) else v if isinstance(v, str) else json.dumps(v)  # files keep lines as lists

def _texts(out):
    "The text of one output, whatever its kind (stream, plain text, html, markdown, an error's name and message)."
    if out.get('output_type') == 'stream': return [_str(out.get('text', ''))]
    if out.get('output_type') == 'error': return [out.get('ename', '') + ': ' + out.get('evalue', '')]
    data = out.get('data', {})
    return [_str(v) for k, v in data.items() if k.startswith('text/') or k == 'application/json']

def _real_fingerprint():
    "The fingerprint of the real data beside the project, when it is there (a page that prints it shows real data)."
    cand = PROJECT_ROOT.parent / 'shared' / 'data'
    try: return data_fingerprint(cand) if (cand / 'acdc').exists() else None
    except Exception: return None

def _users():
    "Names that identify this machine's user or host in a page (only those long enough to be unambiguous)."
    names = {getpass.getuser(), Path.home().name, socket.gethostname()}
    return {n for n in names if n and len(n) >= 4 and n not in ('root', 'user', 'runner', 'jovyan', 'localhost')}

def scan_notebook(nb, name='notebook', users=None, fingerprint=None):
    "Problems of one notebook's outputs: '<name> cell N: what' for stderr streams, errors, warnings, absolute paths, user names, real data."
    problems = []
    for i, cell in enumerate(nb.get('cells', [])):
        for out in cell.get('outputs', []):
            where = f"{name} cell {i}"
            if out.get('output_type') == 'stream' and out.get('name') == 'stderr':
                problems.append(f"{where}: stderr stream: {_str(out.get('text', '')).strip()[:100]!r}")
                continue  # one line per stream: what it holds is reported by the line above
            if out.get('output_type') == 'error': problems.append(f"{where}: error output {out.get('ename')}: {out.get('evalue', '')[:80]}")
            for t in _texts(out):
                t = re.sub(r'data:image/[\w+]+;base64,[\w+/=]+', '', t)  # embedded images are not text
                for m in _re_abs.finditer(t): problems.append(f"{where}: absolute path {(m.group(1) or m.group(2))[:80]!r}")
                if _re_warning.search(t): problems.append(f"{where}: warning text {_re_warning.search(t).group(0)!r}")
                for u in users or ():
                    if re.search(rf'(?<![\w]){re.escape(u)}(?![\w])', t): problems.append(f"{where}: user or host name {u!r}")
                ids = sorted({int(p) for p in _re_patient.findall(t) if int(p) > PHANTOM_MAX_PATIENT})
                if ids: problems.append(f"{where}: real patient ids (patient{ids[0]:03d}...): the phantom has none above {PHANTOM_MAX_PATIENT:03d}")
                if 'real ACDC/M&Ms annotations at' in t or (fingerprint and fingerprint in t): problems.append(f"{where}: output computed on the real data")
    return list(dict.fromkeys(problems))

def scan_outputs(path, users=None, fingerprint=None):
    "Problems of a notebook file's outputs (see `scan_notebook`), named by its path relative to the project."
    p = Path(path)
    nb = json.loads(p.read_text())
    name = p.resolve().relative_to(PROJECT_ROOT).as_posix() if PROJECT_ROOT in p.resolve().parents else p.name
    return scan_notebook(nb, name, _users() if users is None else users, fingerprint)

def notebooks(names=None):
    "The notebooks to execute, in the site's order: all of nbs/, or those named (exact file names, stems or numbers)."
    nbs = PROJECT_ROOT / 'nbs'
    every = sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    every.sort(key=lambda p: (p.name != 'index.ipynb', p.name))
    if not names: return every
    out = []
    for n in names:
        hits = [p for p in every if n in (p.name, p.stem, p.stem.split('_', 1)[0])]
        if len(hits) != 1:
            raise ValueError(f"{n}: {'ambiguous' if hits else 'no notebook'} in nbs/ (give an exact id: {', '.join(p.stem for p in every)})")
        out.append(hits[0])
    return out

def _source_hash(path):
    "A hash of a notebook's cell sources: its outputs are stale when this changes."
    nb = json.loads(Path(path).read_text())
    return hashlib.sha256(json.dumps([(c['cell_type'], ''.join(c['source'])) for c in nb['cells']]).encode()).hexdigest()[:16]

def _read_state(state):
    try: return json.loads(Path(state).read_text())
    except (OSError, json.JSONDecodeError): return {}

def _write_state(state, st):
    Path(state).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(state).with_name(f'.{Path(state).name}.{os.getpid()}.tmp')
    tmp.write_text(json.dumps(st, indent=1)); tmp.replace(state)

@contextlib.contextmanager
def _env(**kw):
    old = {k: os.environ.get(k) for k in kw}
    os.environ.update({k: str(v) for k, v in kw.items()})
    try: yield
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v

def execute_notebook(path, runs, timeout=3600):
    "Execute `path` in place on the phantom, runs under `runs`; then nbdev_clean it. Raises RuntimeError naming the failing cell."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    run = Path(runs) / path.stem
    run.mkdir(parents=True, exist_ok=True)
    # the phantom, whatever lies beside the project; the chapter's run folder a temporary one; no colour codes in tracebacks
    with _env(CARDIAC_NVAE_DATA='phantom', CARDIAC_NVAE_RUN_DIR=run, TERM='dumb', NO_COLOR='1'):
        client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
        try: client.execute()
        except CellExecutionError as e:
            cell = next((i for i, c in enumerate(nb.cells) if any(o.get('output_type') == 'error' for o in c.get('outputs', []))), '?')
            text = re.sub(r'\x1b\[[0-9;]*m', '', str(e))  # IPython colours its tracebacks
            msg = next((l for l in text.splitlines()[::-1] if l.strip() and not l.startswith(' ')), text[:200])
            raise RuntimeError(f"{path.name} cell {cell}: {msg.strip()[:300]}") from None
    nbformat.write(nb, str(path))
    subprocess.run([sys.executable, '-c', 'from nbdev.clean import nbdev_clean; import sys; nbdev_clean(fname=sys.argv[1])', str(path)],
                   cwd=PROJECT_ROOT, check=True)
    return path

def execute_all(names=None, force=False, state=STATE, say=print, timeout=3600):
    "Execute the notebooks (all, or `names`) for publication, skipping those done since their sources last changed; returns problems."
    st, problems = _read_state(state), []
    todo = notebooks(names)
    with tempfile.TemporaryDirectory(prefix='cardiac-nvae-execute-') as runs:
        for k, nb in enumerate(todo, 1):
            h, prev = _source_hash(nb), st.get(nb.name, {})
            if not force and prev.get('status') == 'done' and prev.get('hash') == h:
                say(f"[{k}/{len(todo)}] {nb.name}: done before ({prev.get('seconds', 0):.0f} s), sources unchanged: skipped"); continue
            say(f"[{k}/{len(todo)}] {nb.name}: executing on the phantom ...")
            t0 = time.time()
            st[nb.name] = dict(status='running', hash=h, pid=os.getpid(), started=time.strftime('%Y-%m-%dT%H:%M:%S'))
            _write_state(state, st)
            try: execute_notebook(nb, runs, timeout)
            except (RuntimeError, subprocess.CalledProcessError) as e:
                st[nb.name] = dict(status='failed', hash=h, error=str(e), seconds=round(time.time() - t0, 1)); _write_state(state, st)
                problems.append(str(e)); say(f"  failed: {e}"); continue
            found = scan_outputs(nb, fingerprint=_real_fingerprint())
            st[nb.name] = dict(status='done' if not found else 'unclean', hash=_source_hash(nb), seconds=round(time.time() - t0, 1),
                               problems=found)
            _write_state(state, st)
            problems += found
            say(f"  {'clean' if not found else f'{len(found)} problem(s) in its outputs'} after {time.time() - t0:.0f} s")
            for p in found[:20]: say(f"  {p}")
    return problems

def _alive(pid):
    if not pid: return False
    try: os.kill(pid, 0); return True
    except ProcessLookupError: return False
    except PermissionError: return True

def status_lines(state=STATE):
    "One line per notebook: its state in `execute-all` (done, unclean, failed, running, not run) and whether its sources changed since."
    st = _read_state(state)
    lines = []
    for nb in notebooks():
        s = st.get(nb.name)
        if not s: lines.append(f"{nb.name:22} not run"); continue
        stale = ' (sources changed since)' if s.get('hash') != _source_hash(nb) else ''
        if s['status'] == 'running' and not _alive(s.get('pid')): s['status'] = 'interrupted'  # rerun continues from it
        extra = f": {s['error']}" if s.get('error') else f": {len(s['problems'])} problem(s)" if s.get('problems') else ''
        lines.append(f"{nb.name:22} {s['status']}{stale} {s.get('seconds', '')}{' s' if s.get('seconds') else ''}{extra}")
    return lines
