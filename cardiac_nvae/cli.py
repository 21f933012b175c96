"""Command-line entry point `cardiac-nvae`: thin wrappers over the chapter modules (no notebook owns this file)."""
from __future__ import annotations
import argparse, ast, csv, datetime as dt, json, os, platform, re, shutil, signal, socket, sys, threading, time, traceback
from pathlib import Path

import yaml

from .records import (DataError, check_name, data_fingerprint, new_run_folder, project_commit, read_record as _read,
                      record_problem, shared_data_root, update_record, write_json)  # stdlib only: no torch in the command line

# papermill -> nbformat -> jsonschema imports rfc3987_syntax when it is installed (jupyterlab brings it), only to check the
# 'iri' string formats that no notebook schema uses; that import compiles ~40 grammars: 1.1 s of CPU in every command that
# runs a notebook. Marked absent, jsonschema skips those two format checks (it imports it under suppress(ImportError)).
sys.modules.setdefault('rfc3987_syntax', None)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

def notebooks_dir():
    "The chapter notebooks of this checkout (`nbs/` beside the package)."
    d = PROJECT_ROOT / 'nbs'
    if not d.is_dir(): raise SystemExit(f"error: {d} not found: `cardiac-nvae run` needs a clone of the project (pip install -e .)")
    return d

def _has_parameters_cell(nb):
    try: cells = json.loads(Path(nb).read_text())['cells']
    except (OSError, ValueError, KeyError, TypeError): return False
    return any('parameters' in c.get('metadata', {}).get('tags', []) for c in cells)

def chapters():
    "Stems of the chapter notebooks ('00_data', ...), those with a `parameters` cell (00a_records has none); [] outside a clone."
    d = PROJECT_ROOT / 'nbs'
    return sorted(q.stem for q in d.glob('[0-9]*.ipynb') if _has_parameters_cell(q)) if d.is_dir() else []

def _number(stem):
    "The chapter number of a stem ('06_acunet' -> 6), or None ('02b_metrics' has none but its id)."
    head = stem.split('_', 1)[0]
    return int(head) if head.isdigit() else None

def find_notebook(name, titles=True):
    "Resolve a chapter by path, file name, stem ('00_data'), number ('00', '0', '02b') or, when `titles`, title ('data')."
    p = Path(name)
    if p.suffix == '.ipynb' and p.exists(): return p.resolve()
    nbs = sorted(notebooks_dir().glob('[0-9]*.ipynb'))
    tests = [lambda q: q.name == name, lambda q: q.stem == name, lambda q: q.stem.split('_', 1)[0] == name,
             lambda q: name.isdigit() and _number(q.stem) == int(name)]
    for test in tests:
        hits = [q for q in nbs if test(q)]
        if len(hits) == 1: return hits[0]
        if hits: raise SystemExit(f"error: {name!r} is ambiguous: {', '.join(q.stem for q in hits)}")
    titled = [q for q in nbs if q.stem.split('_', 1)[-1] == name]
    if len(titled) == 1 and titles: return titled[0]
    if titled:  # `run nvae` once trained a model for minutes on a guess: a run names its chapter exactly
        raise SystemExit(f"error: {name!r} is the title of {titled[0].stem}; give its id to run it: {titled[0].stem} "
                         f"(or {titled[0].stem.split('_', 1)[0]})")
    raise SystemExit(f"error: no chapter notebook matches {name!r}; chapters: {', '.join(q.stem for q in nbs)}")

# ---------------------------------------------------------------- parameters
def parse_params(pairs, params_file=None):
    "Parameters from a YAML file, then `-p name value` pairs (values parsed as YAML: 3, 0.1, true, null, text)."
    params = {}
    if params_file:
        f = Path(params_file)
        if not f.exists(): raise SystemExit(f"error: {f}: parameters file is missing")
        loaded = yaml.safe_load(f.read_text()) or {}
        if not isinstance(loaded, dict): raise SystemExit(f"error: {f}: expected a mapping of parameter names to values")
        params.update(loaded)
    for name, value in pairs or []: params[name] = yaml.safe_load(value)
    return params

def notebook_parameters(nb):
    "The chapter's `parameters` cell: `{name: (default value, default source, comment)}` (value is the source when not a literal)."
    import papermill as pm
    out = {}
    for name, p in pm.inspect_notebook(str(nb)).items():
        try: value = ast.literal_eval(p['default'])
        except (ValueError, SyntaxError): value = p['default']  # an expression: its type is not checked
        out[name] = (value, p['default'], p['help'])
    if not out: raise SystemExit(f"error: {nb}: no cell tagged 'parameters' (was it stripped by nbdev_clean?)")
    return out

def _typed(name, value, default, chapter):
    "`value` checked against (and converted to) the type of `default`; SystemExit with one line if it does not fit."
    if value is None or default is None: return value  # None means 'the chapter's choice' for every parameter
    kind = type(default)
    if kind is bool: ok = isinstance(value, bool)
    elif kind is int: ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as text
            try: value = float(value)
            except ValueError: pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok: value = float(value)
    elif kind in (list, tuple):
        ok = isinstance(value, (list, tuple))
        if ok: value = list(value)  # as a list: papermill writes lists as literals, but a tuple as its text '(1, 2)'
    elif kind is str: ok = isinstance(value, str)
    else: return value  # a default of another type (an expression): the chapter checks it
    if not ok:
        raise SystemExit(f"error: {chapter}: parameter {name} takes {kind.__name__} (default {default!r}), "
                         f"not {type(value).__name__} {value!r}")
    return value

_PATH_NAME = re.compile(r'(root|dir|path|file|weights)$')

def resolve_paths(params, cwd=None):
    "Relative paths made absolute against the caller's folder (the notebook runs inside its run folder)."
    cwd, out = Path(cwd or os.getcwd()), dict(params)
    for k, v in params.items():
        if not isinstance(v, str) or not v or Path(v).is_absolute(): continue
        p = Path(v).expanduser()
        if p.is_absolute(): out[k] = str(p)
        elif _PATH_NAME.search(k) or (k.endswith('_run') and (cwd / p).exists()):  # a run may also be a name under runs/
            out[k] = str((cwd / p).resolve())
    return out

def check_params(nb, params, cwd=None):
    "Refuse names the `parameters` cell lacks and values whose type differs from the default's; resolve relative paths."
    defaults = notebook_parameters(nb)
    unknown = sorted(set(params) - set(defaults))
    if unknown: raise SystemExit(f"error: {nb.name} has no parameter(s) {unknown}; known: {sorted(defaults)}")
    typed = {k: _typed(k, v, defaults[k][0], Path(nb).stem) for k, v in params.items()}
    return resolve_paths(typed, cwd)

# ---------------------------------------------------------------- run folders and records
def new_run_dir(runs_dir, name):
    "Create `runs_dir/name` (refusing to reuse an existing folder), or a fresh timestamped folder when `name` is None."
    if not name: return new_run_folder(runs_dir)
    try: check_name(name, '--name')  # one folder under runs_dir: never '../x' or '/abs/x', which `runs` would not list
    except ValueError as e: raise SystemExit(f"error: {e}") from None
    d = Path(runs_dir) / name
    d.parent.mkdir(parents=True, exist_ok=True)
    try: d.mkdir()
    except FileExistsError: raise SystemExit(f"error: {d} exists: runs are never overwritten; choose another --name (or --resume {name})") from None
    return d

PHANTOM_NOTE = 'phantom (nothing asked for: no data_root, no $CARDIAC_NVAE_DATA, no ../shared/data)'

def data_identity(params):
    "Which data a run reads and its fingerprint; a data folder asked for (parameter or `$CARDIAC_NVAE_DATA`) that is missing is an error."
    if params.get('data_root') and not Path(params['data_root']).is_dir():
        raise SystemExit(f"error: data_root {params['data_root']}: no such data folder")
    try: root = params.get('data_root') or shared_data_root()
    except DataError as e: raise SystemExit(f"error: {e}") from None
    if root is None:
        asked = (os.environ.get('CARDIAC_NVAE_DATA') or '').lower() == 'phantom'
        return {'data_root': 'phantom ($CARDIAC_NVAE_DATA=phantom)' if asked else PHANTOM_NOTE, 'data_fingerprint': None}
    return {'data_root': str(root), 'data_fingerprint': data_fingerprint(root) if Path(root).exists() else None}

def chapter_for_run(nb):
    "The chapter without its closing `nbdev_export()` cell: a run executes the science, it never rewrites the library."
    import nbformat
    node = nbformat.read(str(nb), as_version=4)
    node.cells = [c for c in node.cells if not (c.cell_type == 'code' and 'nbdev_export()' in c.source)]
    return node

def read_record(out):
    "The run's record.json as a dict ({} when there is none)."
    return _read(out, {})

def pid_alive(pid):
    "True while process `pid` of this host exists."
    try: os.kill(int(pid), 0)
    except ProcessLookupError: return False
    except PermissionError: pass
    return True

def run_status(rec):
    "The recorded status, with 'stale' for a run recorded as running on this host whose process is gone."
    st = rec.get('status', '?')
    if st == 'running' and rec.get('host') == socket.gethostname() and rec.get('pid') and not pid_alive(rec['pid']): return 'stale'
    return st

# ---------------------------------------------------------------- progress while a chapter runs
def _clock(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"

def _first_line(src):
    lines = [l for l in src.splitlines() if l.strip() and not l.startswith('#|')]
    return (lines[0][:70] if lines else '').strip()

class Progress:
    "What the run is doing: the executing cell (for the record) and, unless quiet, training progress read from its log.csv files."
    def __init__(self, out, n_cells, quiet=False, stream=None, slow=10.):
        self.out, self.n, self.quiet, self.stream, self.slow = Path(out), n_cells, quiet, stream or sys.stderr, slow
        self.cell, self.src, self.t_cell, self.announced, self.logs, self.last = None, '', None, False, {}, None
        self._stop, self._lock = threading.Event(), threading.RLock()  # the watcher thread and the cell callbacks both print

    def say(self, msg):
        if not self.quiet: print(msg, file=self.stream, flush=True)

    def cell_started(self, index, cell):
        self.cell, self.src, self.t_cell, self.announced = index, cell.source, time.time(), False
        self.last = self.executing()

    def cell_finished(self, index):
        try: self.poll()  # the cell's last epochs first, then that it ended
        except Exception: pass
        if self.announced: self.say(f"[cell {index + 1}/{self.n}] ended after {_clock(time.time() - self.t_cell)}")
        self.cell = None

    def executing(self):
        "The executing cell as 'cell N/M: first line', or None."
        return None if self.cell is None else f"cell {self.cell + 1}/{self.n}: {_first_line(self.src)}"

    def poll(self):
        "Announce a slow cell once and print each new epoch of every log.csv under the run folder."
        with self._lock: self._poll()

    def _poll(self):
        if self.cell is not None and not self.announced and time.time() - self.t_cell > self.slow:
            self.announced = True
            self.say(f"[{self.executing()}] running...")
        for f in self.out.rglob('log.csv'): self._tail(f)

    def _tail(self, f):
        try:
            with open(f, newline='') as fh: rows = list(csv.DictReader(fh))
        except (OSError, csv.Error): return
        now = time.time()
        seen, t0, times = self.logs.get(f, (0, None, []))
        if len(rows) < seen: seen, t0, times = 0, None, []  # a new fit rewrote the log
        if t0 is None: t0 = now if not rows else (self.t_cell or now)  # seen before its first epoch: the fit starts about now
        label = f.parent.relative_to(self.out).as_posix() if f.parent != self.out else 'main model'
        for r in rows[seen:]:
            try: ep, n = int(float(r['epoch'])) + 1, (int(float(r['n_epoch'])) if r.get('n_epoch') else None)
            except (KeyError, ValueError): continue
            times = times + [now]
            # seconds per epoch from the epochs seen arriving (the cell may have spent minutes before this fit began)
            per = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0
            if per <= 0: per = (now - t0) / max(ep - int(float(rows[0]['epoch'])), 1)  # several epochs in one look: their average
            losses = '  '.join(f"{k} {float(r[k]):.4g}" for k in ('train_loss', 'valid_loss') if r.get(k) not in (None, ''))
            left = f", ~{_clock(per * (n - ep))} left" if n and n > ep else ''
            self.say(f"  {label}: epoch {ep}{f'/{n}' if n else ''}  {losses}  ({_clock(per)}/epoch{left})")
        self.logs[f] = (len(rows), t0, times[-8:])

    def watch(self, every=1.):
        "Poll in a background thread until `stop()`."
        def loop():
            while not self._stop.wait(every):
                try: self.poll()
                except Exception: pass  # progress is a courtesy: never let it break a run
        self._thread = threading.Thread(target=loop, daemon=True); self._thread.start()

    def stop(self):
        self._stop.set()
        if getattr(self, '_thread', None): self._thread.join(5)
        try: self.poll()
        except Exception: pass

def _engine(progress, kernel_log):
    "A papermill engine that tells `progress` which cell runs; the kernel process writes its own log to `kernel_log`."
    from papermill.engines import NBClientEngine
    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kw):
            start, complete = nb_man.cell_start, nb_man.cell_complete
            progress.n = len(nb_man.nb.cells)  # papermill has added its injected-parameters cell
            # the kernel inherits file descriptor 2 when it starts: point it at the run's kernel.log for that
            # moment, so that its messages (a shutdown during a cell logs a ZMQ traceback) stay out of the terminal
            sys.stderr.flush()
            saved = os.dup(2)
            with open(kernel_log, 'ab') as log: os.dup2(log.fileno(), 2)
            def restore():
                nonlocal saved
                if saved is not None: os.dup2(saved, 2); os.close(saved); saved = None
            def cell_start(cell, cell_index=None, **k):
                restore(); progress.cell_started(cell_index, cell); return start(cell, cell_index, **k)
            def cell_complete(cell, cell_index=None, **k): progress.cell_finished(cell_index); return complete(cell, cell_index, **k)
            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            try: return super().execute_managed_notebook(nb_man, kernel_name, **kw)
            finally: restore()
    return Engine

class RunKilled(BaseException):
    "The run received SIGTERM (or SIGHUP): the record says 'killed'; args are the signal's name and the executing cell."

def _error_fields(e, out):
    "Exception type and message for the record; the full traceback into `traceback.txt` beside it."
    import papermill as pm
    if isinstance(e, pm.PapermillExecutionError):  # the chapter's own exception, raised inside the kernel
        etype, msg = e.ename, e.evalue
        tb = re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(e.traceback))
        where = f"cell {e.cell_index + 1}: {_first_line(e.source)}"
    else:
        etype, msg, tb, where = type(e).__name__, str(e), ''.join(traceback.format_exception(e)), None
    try: (Path(out) / 'traceback.txt').write_text(tb); saved = 'traceback.txt'
    except OSError as w: saved = f"not written ({w.strerror or w})"  # a full disk: the record keeps the one-line reason
    return dict(error_type=etype, error=msg[:4000], traceback=saved, **({'error_cell': where} if where else {}))

def _previous_attempt(rec):
    keep = ('status', 'started', 'finished', 'seconds', 'killed_at', 'signal', 'cell', 'error_type', 'error', 'host', 'pid')
    return {**{k: rec[k] for k in keep if k in rec}, 'status': run_status(rec)}

def resume_run_dir(runs_dir, name, nb, params):
    "The folder of run `name` to continue, after checking it is this chapter's, not finished, not alive, with equal parameters."
    out = (Path(runs_dir) / name).resolve()
    rec = read_record(out)
    if not rec: raise SystemExit(f"error: {out}: no run record to resume (runs: {', '.join(sorted(p.name for p in Path(runs_dir).glob('*/record.json'))) or 'none'})")
    if rec.get('notebook') != nb.name: raise SystemExit(f"error: {out} is a run of {rec.get('notebook')}, not {nb.name}")
    st = run_status(rec)
    if st == 'done': raise SystemExit(f"error: {out} finished already (status done); nothing to resume")
    if st == 'running':
        where = f"pid {rec.get('pid')} on {rec.get('host')}"
        if rec.get('host') == socket.gethostname(): raise SystemExit(f"error: {out} is still running ({where})")
        if not rec.get('slurm_job_id') or rec.get('slurm_job_id') != os.environ.get('SLURM_JOB_ID'):
            raise SystemExit(f"error: {out} is recorded as running ({where}); this host cannot tell whether it still is")
    same = lambda x: json.loads(json.dumps(x))  # as record.json holds it (tuples as lists)
    before = {**{k: v[0] for k, v in notebook_parameters(nb).items()}, **rec.get('parameters', {})}
    for k, v in params.items():
        if same(v) != same(before.get(k)):
            raise SystemExit(f"error: {out} ran with {k}={before.get(k)!r}; resuming with {k}={v!r} is refused: a resumed run keeps its parameters")
    return out, rec

def run_chapter(notebook, params=None, name=None, runs_dir='runs', progress=True, resume=None, cwd=None):
    "Execute a chapter with papermill into `runs/<name>/` with a `record.json`; `resume=NAME` continues a killed run. Returns the folder."
    from . import __version__
    nb = find_notebook(notebook, titles=False)
    params = check_params(nb, dict(params or {}), cwd)
    if resume:
        try: check_name(resume, '--resume')
        except ValueError as e: raise SystemExit(f"error: {e}") from None
        out, old = resume_run_dir(runs_dir, resume, nb, params)
        params = check_params(nb, old.get('parameters', {}), cwd)
        attempts = old.get('attempts', []) + [_previous_attempt(old)]
        for k in ('error_type', 'error', 'error_cell', 'traceback', 'killed_at', 'signal', 'cell', 'finished', 'seconds'): old.pop(k, None)
        record = dict(old, attempts=attempts)
    else:
        ident = data_identity(params)  # before the folder exists: a refused data root leaves nothing behind
        if progress and ident['data_root'].startswith('phantom') and 'data_root' in notebook_parameters(nb):
            print(f"data: {ident['data_root']}", file=sys.stderr, flush=True)  # the first line of progress: no real data is read
        out = new_run_dir(runs_dir, name).resolve()  # papermill changes the working folder during the run
        record = dict(notebook=nb.name, chapter=nb.stem, parameters=params, package_version=__version__, git_commit=project_commit(),
                      **ident, python=platform.python_version())
    record.update(status='running', host=socket.gethostname(), pid=os.getpid(), started=dt.datetime.now().isoformat())
    if os.environ.get('SLURM_JOB_ID'): record['slurm_job_id'] = os.environ['SLURM_JOB_ID']
    try: write_json(out / 'record.json', record)
    except OSError:  # a full disk or read-only folder: a fresh folder without its record is no run; leave nothing behind
        if not resume and not any(out.iterdir()): out.rmdir()
        raise

    chapter = chapter_for_run(nb)
    watcher = Progress(out, len(chapter.cells), quiet=not progress)
    runtime = out / '.jupyter-runtime'  # kernel connection files stay in the run folder, never in /tmp
    # the runs folder goes to the kernel: a run named in a parameter (`-p nvae_run nvae`) resolves against it, not the checkout's runs/
    env = dict(CARDIAC_NVAE_RUN_DIR=str(out.resolve()), CARDIAC_NVAE_RESUME='1' if resume else '',
               CARDIAC_NVAE_RUNS_DIR=str(Path(runs_dir).resolve()))
    saved_env = {k: os.environ.get(k) for k in env}
    def killed(signum, frame): raise RunKilled(signal.Signals(signum).name, watcher.executing())
    main = threading.current_thread() is threading.main_thread()  # only the main thread may handle signals
    saved_sig = {s: signal.signal(s, killed) for s in (signal.SIGTERM, signal.SIGHUP)} if main else {}
    os.environ.update(env)
    t0, final = time.time(), {}
    try:
        watcher.watch()
        _execute(chapter, out / nb.name, params, out, watcher, runtime)
        final['status'] = 'done'
    except RunKilled as e:
        final.update(status='killed', signal=e.args[0], killed_at=dt.datetime.now().isoformat(), cell=e.args[1])
        raise
    except KeyboardInterrupt:
        final.update(status='interrupted', killed_at=dt.datetime.now().isoformat(), cell=watcher.executing() or watcher.last)
        raise
    except BaseException as e:  # papermill has saved what ran
        final.update(status='failed', **_error_fields(e, out))
        raise
    finally:
        for s, h in saved_sig.items(): signal.signal(s, h)
        for k, v in saved_env.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
        watcher.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        final.update(finished=dt.datetime.now().isoformat(), seconds=round(time.time() - t0, 1))
        try: update_record(out, **final)
        except OSError as e:  # the record cannot be written (full disk): say so, keep the run's own error
            print(f"error: {out / 'record.json'}: not updated to {final.get('status')} ({e.strerror or e})", file=sys.stderr)
    drop_resume_checkpoints(out)
    return out

def drop_resume_checkpoints(run):
    "A finished quick run keeps the weights later chapters load (`best.pth`), not its resume checkpoints (`last.pth`); bytes freed."
    try: rec = read_record(run)
    except (OSError, ValueError): return 0  # an unreadable record: keep everything
    # a thesis-scale run, or one cut by its deadline, may be continued with more epochs: its last.pth stays
    if not isinstance(rec, dict) or rec.get('status') != 'done' or rec.get('scale') == 'thesis' or rec.get('stopped_at_deadline'): return 0
    freed = 0
    for f in Path(run).rglob('last.pth'):
        if f.is_file(): freed += f.stat().st_size; f.unlink()
    return freed

def _execute(chapter, output, params, out, watcher, runtime):
    "papermill with an engine that reports the executing cell to `watcher`; the kernel's connection file in `runtime`."
    import papermill as pm
    from papermill.engines import papermill_engines
    from traitlets.config import Config
    papermill_engines.register('cardiac-nvae', _engine(watcher, out / 'kernel.log'))
    runtime.mkdir(exist_ok=True)
    # nbclient would otherwise write the connection file with mkstemp into /tmp
    config = Config({'KernelManager': {'connection_file': str((runtime / 'kernel.json').resolve())}})
    return pm.execute_notebook(chapter, str(output), parameters=params, cwd=str(out), progress_bar=False,
                               kernel_name='python3', engine_name='cardiac-nvae', config=config)

# ---------------------------------------------------------------- commands
def one_line(e):
    "An exception as one line: `path: reason` for a file system error, else its message (its type when it has none)."
    if isinstance(e, OSError) and e.strerror: return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    msg = ' '.join(str(e).split()) if str(e) else ''
    return msg[:500] if msg and isinstance(e, (ValueError, LookupError, RuntimeError)) and type(e).__module__.startswith('cardiac_nvae') \
        else f"{type(e).__name__}: {msg[:500]}" if msg else type(e).__name__

def _summary(out, rec):
    "One line about a finished run."
    st = rec.get('status', '?')
    err = f"  {rec.get('error_type')}: {str(rec.get('error', '')).splitlines()[0][:120] if rec.get('error') else ''}" if st == 'failed' else ''
    cell = f"  at {rec['cell']}" if st in ('killed', 'interrupted') and rec.get('cell') else ''
    return f"{st:<8} {rec.get('chapter') or Path(rec.get('notebook', '?')).stem:<14} {out}  {_clock(rec.get('seconds') or 0)}{err}{cell}"

def cmd_run(args):
    out = None
    try:
        out = run_chapter(args.notebook, parse_params(args.p, args.params), args.name, args.runs_dir, not args.quiet, args.resume)
    except (RunKilled, KeyboardInterrupt, Exception) as e:
        if isinstance(e, SystemExit): raise
        out = out or _last_run_dir(args)
        if out is None: raise
        try: rec = read_record(out)
        except OSError: rec = {}
        print(_summary(out, rec))
        if isinstance(e, OSError) and rec.get('status') != 'failed' or not rec: print(f"error: {one_line(e)}", file=sys.stderr)
        if not args.quiet and rec.get('status') == 'failed' and rec.get('traceback') == 'traceback.txt':
            print(f"traceback: {out / 'traceback.txt'}", file=sys.stderr)
        raise SystemExit(143 if isinstance(e, RunKilled) else 130 if isinstance(e, KeyboardInterrupt) else 1) from None
    rec = read_record(out)
    if args.quiet: print(_summary(out, rec))
    else: print(f"executed notebook: {out / find_notebook(args.notebook, titles=False).name}\nrun folder (outputs, record.json): {out}")

def _last_run_dir(args):
    "The run folder a failed `run` wrote into (the newest record of this chapter started by this process)."
    base = Path(args.runs_dir)
    if args.resume: return base / args.resume
    if args.name: return base / args.name if (base / args.name / 'record.json').exists() else None
    recs = [p.parent for p in base.glob('*/record.json') if _safe_record(p)[0].get('pid') == os.getpid()]
    return max(recs, key=lambda p: p.stat().st_mtime) if recs else None

KEY_PARAMS = (('epochs', ('epochs',)), ('train', ('train_slices', 'train_subset', 'max_train', 'n_train', 'train_size')), ('seed', ('seed',)))

def _key_params(rec):
    "Epochs, training-set size and seed of a run, from its record (the chapter's params, else the cli's parameters)."
    p = {**rec.get('parameters', {}), **(rec.get('params') or {})}
    m = rec.get('metrics') or {}
    return {col: next((p.get(k, m.get(k)) for k in keys if p.get(k, m.get(k)) is not None), '-') for col, keys in KEY_PARAMS}

def _headline(rec, n=3):
    m = rec.get('metrics') or {}
    items = [(k, v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)][:n]
    return '  '.join(f"{k}={v:.4g}" for k, v in items)

def _safe_record(f):
    "(record, problem) of a record.json file: a malformed or unreadable one gives ({}, why) instead of breaking the caller."
    try: rec = json.loads(Path(f).read_text())
    except (OSError, ValueError) as e: return {}, f"unreadable record {f} ({' '.join(str(e).split())[:120]})"
    why = record_problem(rec)
    return ({}, f"malformed record {f}: {why}") if why else (rec, None)

def _printable(name):
    "A folder name as one printable line (a newline or control character shown escaped)."
    return name if name.isprintable() else ascii(name)[1:-1]

def list_runs(runs_dir='runs'):
    "Rows (dicts) describing every run folder under `runs_dir` and every point of a sweep folder there (`sweep/point`), oldest first."
    rows, base = [], Path(runs_dir)
    files = list(base.glob('*/record.json'))
    files += [f for s in base.glob('*/sweep.json') for f in s.parent.glob('*/record.json')]  # a sweep's points, grouped by sweep
    def mtime(f):
        try: return f.stat().st_mtime
        except OSError: return 0
    for f in sorted(files, key=lambda f: (str(f.parent.parent.relative_to(base)), mtime(f))):
        rec, bad = _safe_record(f)
        name = _printable(str(f.parent.relative_to(base)))
        if bad: rows.append(dict(name=name, chapter='?', status='bad record', epochs='-', train='-', seed='-', metrics=bad)); continue
        rows.append(dict(name=name, chapter=rec.get('chapter') or Path(rec.get('notebook') or '?').stem,
                         status=run_status(rec), **_key_params(rec), metrics=_headline(rec)))
    return rows

def cmd_runs(args):
    rows = list_runs(args.runs_dir)
    if not rows: print(f"no runs under {Path(args.runs_dir).resolve()}"); return
    cols = ('name', 'chapter', 'status', 'epochs', 'train', 'seed', 'metrics')
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols[:-1]}
    print('  '.join(c.ljust(width.get(c, 0)) for c in cols))
    for r in rows: print('  '.join(str(r[c]).ljust(width.get(c, 0)) for c in cols))

def cmd_params(args):
    nb = find_notebook(args.notebook)
    ps = notebook_parameters(nb)
    w = max(len(f"{k} = {v[1]}") for k, v in ps.items())
    print(f"{nb.stem} parameters (set with -p NAME VALUE):")
    for k, (_, src, help_) in ps.items(): print((f"  {f'{k} = {src}'.ljust(w)}" + (f"  # {help_}" if help_ else '')).rstrip())

def cmd_phantom(args):
    from .phantom import make_phantom
    dest = make_phantom(args.dest, args.layout, args.patients, args.seed)
    print(f"phantom ({args.layout} layout, {args.patients} patients, seed {args.seed}) written to {dest}")

def cmd_demo(args):
    "The main job on the embedded phantom: generate it, preprocess it, execute the data chapter into runs/."
    from .phantom import phantom_data_root
    from .data import load_slices
    root = phantom_data_root(seed=args.seed)
    ss = load_slices(root / 'acdc' / 'training', progress=not args.quiet)
    if not args.quiet: print(f"phantom at {root}: {len(ss)} preprocessed ACDC-layout slices ({int(ss.empty.sum())} empty masks)")
    args.notebook, args.p, args.params, args.resume = '00_data', [('data_root', str(root))], None, None
    cmd_run(args)

def cmd_docs(args):
    "Build the documentation site: Quarto when installed, else nbconvert's HTML exporter."
    from .docs import DocsError, build_site
    try: site = build_site(args.out, engine=args.engine, force=args.force)
    except DocsError as e: raise SystemExit(f"error: {e}") from None
    why = '' if site.engine == 'quarto' else ' (Quarto is not installed)' if args.engine is None else ''
    print(f"built {len(site.pages)} pages with {site.engine}{why}: open {site.out / 'index.html'}")

def cmd_sweep(args):
    "Run, submit or show a sweep spec (cardiac_nvae.sweep)."
    from .sweep import load_spec, sweep, sweep_dir_of, sweep_status, format_status, point_error
    bad = [o for o in args.sbatch or [] if '=' not in o or not o.split('=', 1)[0]]
    if bad: raise SystemExit(f"error: --sbatch {bad[0]!r}: expected KEY=VALUE, e.g. --sbatch qos=high")
    spec = load_spec(args.spec)  # a SpecError becomes one line in `main`
    if not args.status:
        slurm = dict(partition=args.partition, time_min=args.time, mem_gb=args.mem_gb, gpus_per_task=args.gpus,
                     array_parallelism=args.array_parallelism, sbatch=dict(o.split('=', 1) for o in args.sbatch or []) or None)
        d, res = sweep(spec, args.executor, args.workers, args.runs_dir, slurm, wait=args.wait, max_points=args.max_points)
        print(f"{args.executor}: {len(res)} point(s) {'run' if args.executor == 'local' else 'submitted'}: "
              + (', '.join(f'{k} ({v})' for k, v in res.items()) or 'none (all done, running or queued)'))
    d = sweep_dir_of(spec, args.runs_dir)
    rows, each = sweep_status(d)
    failed = [n for n, s in each.items() if s == 'failed']
    print(f"sweep folder: {d}\n" + format_status(rows, each, {n: point_error(d, n) for n in failed}))
    if failed and not args.status: raise SystemExit(f"error: {len(failed)} point(s) failed: {', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}")

def cmd_report(args):
    "Thesis tables from run records (cardiac_nvae.report)."
    from .report import report, render, update_readme
    if args.update_readme: print(update_readme()); return
    try: tables = report(args.sources or None, args.out)
    except (OSError, ValueError) as e: raise SystemExit(f"error: {e}") from None  # a missing source, a bad record, --out a file
    print('\n\n'.join(render(k, t) for k, t in tables.items()) or f"no finished run records under {' '.join(args.sources) or 'results/ and runs/'}")
    if args.out: print(f"\nmarkdown, CSV and HTML tables written to {args.out}")

def _positive(text):
    "An argparse type: an integer of at least 1."
    try: n = int(text)
    except ValueError: n = 0
    if n < 1: raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return n

def cmd_execute_all(args):
    "Execute the committed notebooks for publication (cardiac_nvae.execute): phantom, quick mode, cleaned, outputs scanned."
    from .execute import execute_all, status_lines
    if args.status: print('\n'.join(status_lines())); return
    try: problems = execute_all(args.notebooks, force=args.force)
    except ValueError as e: raise SystemExit(f"error: {e}") from None
    if problems:
        raise SystemExit(f"error: {len(problems)} problem(s) in notebook outputs (fix the cells named above, then rerun):\n"
                         + '\n'.join(problems[:40]))
    print("done: the notebooks executed on the phantom are cleaned and free of paths, user names, stderr and warnings")

def build_parser():
    chs = chapters()
    ap = argparse.ArgumentParser(prog='cardiac-nvae', formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description='Cardiac shape analysis with hierarchical VAEs: run the chapters of the compendium.',
                                 epilog=(f"chapters (run: by id '04_nvae' or number '04'/'4'; params also by title): {', '.join(chs)}" if chs
                                         else "chapters: none found (`run` needs a clone of the project)")
                                        + "\nexample: cardiac-nvae run 04_nvae -p epochs 20 --name nvae-e20")
    sub = ap.add_subparsers(dest='command', required=True)
    r = sub.add_parser('run', help='execute a chapter notebook with papermill into runs/<name>/')
    r.add_argument('notebook', help="chapter: '00_data', '00', 'data' or a path to a .ipynb (see `cardiac-nvae params CHAPTER`)")
    r.add_argument('-p', nargs=2, action='append', metavar=('NAME', 'VALUE'), help='set a parameter (repeatable); relative paths are taken from here')
    r.add_argument('--params', help='YAML file of parameters (-p values win)')
    r.add_argument('--name', help='run folder name (default: a timestamp); an existing folder is never reused')
    r.add_argument('--resume', metavar='NAME', help='continue the killed or failed run NAME in its folder, with its recorded parameters')
    r.add_argument('--runs-dir', default='runs', help='parent folder of runs (default: ./runs)')
    r.add_argument('--quiet', action='store_true', help='no progress; one line per finished run')
    r.set_defaults(func=cmd_run)
    s = sub.add_parser('runs', help='list runs: name, chapter, status (stale: its process is gone), epochs, training size, seed, metrics')
    s.add_argument('--runs-dir', default='runs', help='parent folder of runs (default: ./runs)')
    s.set_defaults(func=cmd_runs)
    q = sub.add_parser('params', help="print a chapter's parameters with their defaults and comments")
    q.add_argument('notebook', help="chapter: '04_nvae', '04' or 'nvae'")
    q.set_defaults(func=cmd_params)
    p = sub.add_parser('phantom', help='write a synthetic cardiac MRI dataset in an official layout')
    p.add_argument('dest', help='folder to create (refused if it exists)')
    p.add_argument('--layout', choices=['acdc', 'mnms'], default='acdc', help='folder layout and label convention (default: acdc)')
    p.add_argument('--patients', type=int, default=20, help='patients (ACDC) or subjects (M&Ms) (default: 20)')
    p.add_argument('--seed', type=int, default=0, help='random seed: the same seed gives the same files (default: 0)')
    p.set_defaults(func=cmd_phantom)
    d = sub.add_parser('demo', help='the main job on the embedded phantom: generate, preprocess, run the data chapter')
    d.add_argument('--seed', type=int, default=0, help='phantom seed (default: 0)')
    d.add_argument('--name', default=None, help='run folder name (default: a timestamp)')
    d.add_argument('--runs-dir', default='runs', help='parent folder of runs (default: ./runs)')
    d.add_argument('--quiet', action='store_true', help='no progress; one line when done')
    d.set_defaults(func=cmd_demo)
    o = sub.add_parser('docs', help='build the documentation site (Quarto when installed, else nbconvert)')
    o.add_argument('--out', help='site folder (default: _docs)'); o.add_argument('--engine', choices=['quarto', 'nbconvert'])
    o.add_argument('--force', action='store_true', help="reprocess every notebook (nbdev's _proc cache)")
    o.set_defaults(func=cmd_docs)
    w = sub.add_parser('sweep', help='run a sweep spec (grid of runs) locally or on Slurm; rerun to finish it')
    w.add_argument('spec', help='sweep spec (YAML), e.g. sweeps/table61-quick.yaml')
    w.add_argument('--status', action='store_true', help='only show done/running/queued/failed/killed/pending per stage')
    w.add_argument('--executor', choices=['local', 'slurm'], default='local')
    w.add_argument('--workers', type=_positive, help='local workers (default: one per GPU, one on CPU)')
    w.add_argument('--max-points', type=_positive, default=10_000, help='refuse a sweep of more points than this (default: 10000)')
    w.add_argument('--runs-dir', help="parent of the sweep folder (default: the spec's runs_dir, else ./runs)")
    w.add_argument('--wait', action='store_true', help='slurm: wait until every submitted task has left the queue')
    w.add_argument('--partition'); w.add_argument('--time', type=int, help='slurm: minutes per task')
    w.add_argument('--mem-gb', type=float); w.add_argument('--gpus', type=int, help='slurm: GPUs per task')
    w.add_argument('--array-parallelism', type=int, help='slurm: array tasks running at once')
    w.add_argument('--sbatch', action='append', metavar='KEY=VALUE', help='extra sbatch option, e.g. --sbatch qos=high (repeatable)')
    w.set_defaults(func=cmd_sweep)
    x = sub.add_parser('execute-all', help='execute notebooks in place for publication: embedded phantom, quick mode, then nbdev_clean and an outputs scan')
    x.add_argument('notebooks', nargs='*', metavar='NB', help='notebooks (e.g. 00_data index; default: all of nbs/)')
    x.add_argument('--force', action='store_true', help='execute again those done since their sources last changed')
    x.add_argument('--status', action='store_true', help='only show what is done, unclean, failed or not run (.cache/execute-all.json)')
    x.set_defaults(func=cmd_execute_all)
    rp = sub.add_parser('report', help='thesis tables (mean ± SE, Welch p) from run records of a sweep or runs folder')
    rp.add_argument('sources', nargs='*', help='folders with run records (default: results/ and runs/)')
    rp.add_argument('--out', help='write each table as markdown, CSV and HTML into this folder')
    rp.add_argument('--update-readme', action='store_true', help="rewrite the 'what reproduces' table of README and index from results/")
    rp.set_defaults(func=cmd_report)
    ap.add_argument('--debug', action='store_true', help='show the full traceback of an error')
    for sp in sub.choices.values():  # also after the command; SUPPRESS keeps a flag given before it
        sp.add_argument('--debug', action='store_true', default=argparse.SUPPRESS, help='show the full traceback of an error')
    return ap

def main(argv=None):
    args = build_parser().parse_args(argv)
    try: args.func(args)
    except Exception as e:  # one line naming the file or value; the traceback only with --debug
        if getattr(args, 'debug', False): raise
        raise SystemExit(f"error: {one_line(e)}") from None

if __name__ == '__main__': main()
