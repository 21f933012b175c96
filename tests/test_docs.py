"""The documentation site: every notebook passes nbdev's processing, and the built site works in headless Chromium."""
import base64, json, os, shutil, subprocess, time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from cardiac_nvae.docs import _split_source, build_site, page_name, sidebar_notebooks, split_import_cells

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')

def test_split_import_cells_moves_imports_before_the_code(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("# why\nimport os\ntry: import yaml\nexcept ImportError: yaml = None\nx = os.sep\n"),
        nbformat.v4.new_code_cell("#| export\nimport os\nx = 1"),  # exported cells are executed anyway
        nbformat.v4.new_code_cell("import os; x = 1"),               # cannot be split by lines
        nbformat.v4.new_code_cell("import os\nimport sys")])
    p = tmp_path / 'nb.ipynb'; nbformat.write(nb, str(p))
    assert split_import_cells(p) == [0]
    got = [c.source for c in nbformat.read(str(p), as_version=4).cells]
    assert got == ["import os\ntry: import yaml\nexcept ImportError: yaml = None", "# why\nx = os.sep",
                   "#| export\nimport os\nx = 1", "import os; x = 1", "import os\nimport sys"]
    assert _split_source("if a:\n    import os\n") is None  # nested imports are left to the author

def mixed_import_cells(nb_path):
    "Code cells that nbdev's doc processing would execute (they import) although they hold other code too."
    import ast, nbformat
    from cardiac_nvae.docs import _is_import
    bad = []
    for i, c in enumerate(nbformat.read(str(nb_path), as_version=4).cells):
        if c.cell_type != 'code' or 'nbdev_export()' in c.source: continue
        if any(l.startswith('#|') and l.split('|', 1)[1].split()[:1] in (['export'], ['exports'], ['exporti'], ['exec_doc'])
               or l.replace(' ', '') == '#|eval:false' for l in c.source.splitlines()): continue
        try: body = ast.parse(c.source).body
        except SyntaxError: continue
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(ast.Module(body, []))) \
           and not all(_is_import(n) for n in body): bad.append(i)
    return bad

@pytest.mark.parametrize('nb', sorted(NBS.glob('*.ipynb')), ids=lambda p: p.stem)
def test_no_cell_mixes_imports_with_code(nb):
    "nbdev's doc processing executes every cell that imports, without the cells before it: it fails, or runs experiments."
    bad = mixed_import_cells(nb)
    assert not bad, (f"{nb.name}: cells {bad} mix imports with other code; move the imports into a cell of their own: "
                     f"python -c \"from cardiac_nvae.docs import split_import_cells; print(split_import_cells('{nb.relative_to(ROOT)}'))\"")

def test_cli_has_a_docs_command():
    from cardiac_nvae.cli import build_parser, cmd_docs
    args = build_parser().parse_args(['docs', '--out', 'site', '--engine', 'nbconvert'])
    assert args.func is cmd_docs and args.out == 'site' and args.engine == 'nbconvert' and not args.force

def test_build_refuses_a_folder_of_other_files(tmp_path):
    from cardiac_nvae.docs import DocsError, _clear_out
    (tmp_path / 'thesis.tex').write_text('mine')
    with pytest.raises(DocsError, match='not a site built by'): _clear_out(tmp_path, default=tmp_path / '_docs')
    assert (tmp_path / 'thesis.tex').exists()
    site = tmp_path / 'site'
    _clear_out(site, default=None); (site / 'old.html').write_text('x'); _clear_out(site, default=None)
    assert [p.name for p in site.iterdir()] == ['.cardiac-nvae-docs']  # a rebuild drops pages of removed chapters

def chapters_in_nbs():
    "The notebooks the site must show: every notebook in nbs/ that nbdev does not skip."
    return sorted(p.name for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))

def test_sidebar_lists_every_notebook_index_first():
    order = sidebar_notebooks(NBS)
    assert order[0] == 'index.ipynb' and sorted(order) == chapters_in_nbs()
    assert page_name('02b_metrics.ipynb') == 'metrics.html' and page_name('index.ipynb') == 'index.html'

# ---------------------------------------------------------------------------------------------------------------
# Headless Chromium over the DevTools protocol

_PAGE_JS = """(() => ({
  title: document.title,
  h1: (document.querySelector('h1') || {}).textContent || '',
  text: document.body.innerText.length,
  images: [...document.images].map(i => ({src: i.currentSrc.slice(0, 60), w: i.naturalWidth, done: i.complete})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id], a[name]')].map(e => e.id || e.getAttribute('name')),
  nav: [...document.querySelectorAll('#site-nav a.chapter, #quarto-sidebar .sidebar-item a.sidebar-link')]
         .map(a => a.getAttribute('href').replace(/^\\.\\//, '')),
  show_docs: document.querySelectorAll('[data-mime-type="text/markdown"] h3, .cell-output-markdown h3').length,
  literal_attrs: document.body.innerText.includes('{target=')
}))()"""

class Chromium:
    "Just enough of the DevTools protocol: open a page, collect console errors, evaluate, screenshot."
    def __init__(self, profile):
        import websocket
        port_file = Path(profile) / 'DevToolsActivePort'
        Path(profile).mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)  # a previous browser's port
        self.proc = subprocess.Popen([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                                      '--window-size=1280,900', '--remote-debugging-port=0', f'--user-data-dir={profile}',
                                      'about:blank'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, 'TMPDIR': str(profile)})  # its scratch folders stay with the test
        for _ in range(300):
            if port_file.exists() and len(port_file.read_text().split()) == 2: break
            if self.proc.poll() is not None: raise RuntimeError(f'{CHROMIUM} exited with {self.proc.returncode}')
            time.sleep(0.1)
        else: raise RuntimeError(f'{CHROMIUM} wrote no {port_file} in 30 s')
        port, path = port_file.read_text().split()
        browser = websocket.create_connection(f'ws://127.0.0.1:{port}{path}', timeout=60, suppress_origin=True)
        self.ws, self.n = browser, 0
        target = self.call('Target.createTarget', url='about:blank')['targetId']
        browser.close()
        self.ws = websocket.create_connection(f'ws://127.0.0.1:{port}/devtools/page/{target}', timeout=60,
                                              suppress_origin=True)
        self.events = []
        for domain in ('Page', 'Runtime', 'Log', 'Network'): self.call(f'{domain}.enable')

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({'id': self.n, 'method': method, 'params': params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == self.n:
                if 'error' in msg: raise RuntimeError(f'{method}: {msg["error"]}')
                return msg['result']
            self.events.append(msg)

    def wait_for(self, method, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if any(e.get('method') == method for e in self.events): return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def errors(self):
        "Console errors, uncaught exceptions and failed loads seen since the last navigation."
        out = []
        for e in self.events:
            m, p = e.get('method'), e.get('params', {})
            if m == 'Runtime.consoleAPICalled' and p['type'] in ('error', 'assert'):
                out.append('console: ' + ' '.join(str(a.get('value', a.get('description', ''))) for a in p['args']))
            elif m == 'Runtime.exceptionThrown': out.append('exception: ' + p['exceptionDetails'].get('text', ''))
            elif m == 'Log.entryAdded' and p['entry']['level'] == 'error':
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
            elif m == 'Network.loadingFailed' and not p.get('canceled'): out.append(f"network: {p['errorText']}")
        return out

    def visit(self, url, screenshot):
        "Load `url`; returns what _PAGE_JS reports plus the page's errors, and saves a screenshot."
        self.events = []
        self.call('Page.navigate', url=url)
        self.wait_for('Page.loadEventFired')
        time.sleep(0.2)  # let late console messages arrive
        info = self.call('Runtime.evaluate', expression=_PAGE_JS, returnByValue=True)['result']['value']
        # the screenshot shows the first figure where there is one (the fixed sidebar stays in view), else the top
        self.call('Runtime.evaluate', expression="document.images.length && document.images[0].scrollIntoView({block: 'center'})")
        Path(screenshot).write_bytes(base64.b64decode(self.call('Page.captureScreenshot', format='png')['data']))
        self.call('Runtime.evaluate', expression='1')  # drain events raised by the evaluation
        info['errors'] = self.errors()
        return info

    def close(self):
        try: self.ws.close()
        finally:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill()

def check_site(site, shots, profile):
    "Open every page of `site` in Chromium (profile folder `profile`), screenshot each into `shots`; returns {page: info}, problems."
    shots.mkdir(parents=True, exist_ok=True)
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html') if shots not in p.parents)
    browser = Chromium(profile)
    try: seen = {p: browser.visit((site / p).as_uri(), shots / (p.replace('/', '_')[:-5] + '.png')) for p in pages}
    finally: browser.close()
    problems = []
    for p, info in seen.items():
        problems += [f'{p}: {e}' for e in info['errors']]
        problems += [f"{p}: image {i['src']}... does not render" for i in info['images'] if not (i['done'] and i['w'] > 0)]
        if info['literal_attrs']: problems.append(f'{p}: Pandoc link attributes printed as text')
        for link in info['links']:
            u = urlparse(link)
            if u.scheme != 'file': continue
            target = Path(unquote(u.path))
            rel = target.relative_to(site).as_posix() if site in target.parents else None
            if rel is None or not target.exists(): problems.append(f'{p}: link to a missing file {link}')
            elif u.fragment and rel in seen and not {u.fragment, unquote(u.fragment)} & set(seen[rel]['ids']):
                problems.append(f'{p}: link to a missing anchor {link}')
    return seen, problems

pytestmark = pytest.mark.xdist_group('docs')  # the site is built once, on one xdist worker

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('docs')
    t = time.time()
    site = build_site(out / 'site', proc=out / '_proc')
    print(f'{site.engine}: {len(site.pages)} pages in {time.time() - t:.0f} s')
    return site.engine, site.out, out / 'chromium-profile'

def test_site_has_one_page_per_notebook(site):
    engine, d, _ = site
    assert engine in ('nbconvert', 'quarto')
    expected = {page_name(n) for n in chapters_in_nbs()}
    assert expected <= {p.relative_to(d).as_posix() for p in d.rglob('*.html')}

def test_every_page_works_in_headless_chromium(site):
    if CHROMIUM is None:  # CI must not pass by skipping: .ci/run installs it
        (pytest.fail if os.environ.get('CI') else pytest.skip)('no chromium on PATH: bash .ci/setup (or apt-get install -y chromium)')
    engine, d, profile = site
    seen, problems = check_site(d, d / '_screenshots', profile)
    assert not problems, '\n'.join(problems[:40])
    order = [page_name(n) for n in sidebar_notebooks(NBS)]
    for p in order:
        assert seen[p]['nav'][:len(order)] == order or engine == 'quarto', f"{p}: sidebar {seen[p]['nav']} != {order}"
        assert seen[p]['text'] > 200 and seen[p]['h1'].strip(), f'{p}: empty page'
    assert all(seen[p]['title'].strip() for p in order), 'a page without a <title>'
    with_figures = [p for p in order if seen[p]['images']]
    assert len(with_figures) >= len(order) // 2, f'figures only on {with_figures}'
    assert seen['data.html']['show_docs'] >= 5, 'the data chapter should show its API (show_doc)'
    assert len(list((d / '_screenshots').glob('*.png'))) == len(seen)
    n_img = sum(len(i['images']) for i in seen.values())
    n_links = sum(len(i['links']) for i in seen.values())
    print(f"{len(seen)} pages, {n_img} images, {n_links} links; screenshots in {d / '_screenshots'}")

# ---------------------------------------------------------------------------------------------------------------
# Links of the README (read on GitHub) and of the index page (the site's home) resolve

SITE_URL = 'https://cardiac-nvae.github.io/cardiac-nvae/'

def markdown_links(text):
    "Targets of the markdown links `[text](target)` and html `href`s in `text`, code spans left out."
    import re
    text = re.sub(r'```.*?```|`[^`\n]*`', '', text, flags=re.S)
    return re.findall(r'\]\(([^)\s]+)\)', text) + re.findall(r'href="([^"]+)"', text)

def index_markdown():
    import nbformat
    return '\n'.join(c.source for c in nbformat.read(str(NBS / 'index.ipynb'), as_version=4).cells if c.cell_type == 'markdown')

def test_readme_and_index_links_name_real_pages_and_files():
    "README: site links name a page the build writes, other relative links a file of the repo; index: links name notebooks."
    pages = {page_name(n) for n in sidebar_notebooks(NBS)}
    bad = []
    for where, text, base in (('README.md', (ROOT / 'README.md').read_text(), ROOT), ('index.ipynb', index_markdown(), NBS)):
        links = markdown_links(text)
        assert links, f'{where}: no links found'
        for url in links:
            path = url.split('#')[0]
            if url.startswith(SITE_URL): ok = path[len(SITE_URL):] in pages | {''}
            elif '://' in url or url.startswith(('mailto:', '#')): continue  # external: not checked offline
            else: ok = (base / path).exists()
            if not ok: bad.append(f'{where}: {url}')
    assert not bad, 'links to pages or files that do not exist:\n' + '\n'.join(bad)

def test_readme_and_index_links_resolve_on_the_built_site(site):
    "On a fresh build: each README site link is a page of it, each relative link of the index page a file of it."
    import re
    _, d, _ = site
    readme = [u.split('#')[0][len(SITE_URL):] or 'index.html' for u in markdown_links((ROOT / 'README.md').read_text())
              if u.startswith(SITE_URL)]
    assert len(readme) >= 12 and all((d / p).is_file() for p in readme), [p for p in readme if not (d / p).is_file()]
    html = (d / 'index.html').read_text()
    rel = [u.split('#')[0] for u in re.findall(r'<a\b[^>]*?\bhref="([^"#][^"]*)"', html) if '://' not in u and not u.startswith('mailto:')]
    assert len(rel) >= 12 and not [u for u in rel if not (d / u).exists()], [u for u in rel if not (d / u).exists()]

def test_site_has_search_and_an_on_page_toc(site):
    engine, d, _ = site
    if engine == 'quarto': return  # Quarto's own search and toc (nbs/_quarto.yml)
    import json
    index = json.loads((d / 'search.js').read_text().split('=', 1)[1].rstrip().rstrip(';'))
    assert {e['h'].split('#')[0] for e in index} >= {'index.html', 'data.html', 'results.html'}
    assert any(e['h'].startswith('data.html#') and e['x'] for e in index)
    assert 'id="site-search"' in (d / 'index.html').read_text() and 'id="page-toc"' in (d / 'data.html').read_text()

def test_xdist_group_holds_under_the_readme_command(request):
    "Under `-n 2 --dist loadgroup` this module's tests share one worker (pytest 9.2 broke that silently: pytest-xdist #1386)."
    if not getattr(request.config.option, 'loadgroup', False): pytest.skip('run without --dist loadgroup')  # set on xdist's workers
    assert request.node.nodeid.endswith('@docs'), f'{request.node.nodeid}: xdist did not group it (the site would be built twice)'
