"""The documentation site: nbdev's notebook processing, then Quarto where it is installed, else nbconvert's HTML exporter."""
from __future__ import annotations
import ast, contextlib, io, json, os, re, shutil, subprocess, uuid, warnings
from collections import namedtuple
from pathlib import Path

import yaml

__all__ = ['DocsError', 'Site', 'sidebar_notebooks', 'page_name', 'process_notebooks', 'split_import_cells', 'build_site']

class DocsError(RuntimeError):
    "A notebook that nbdev's documentation processing cannot handle, or a site that cannot be built."

PROJECT_ROOT = Path(__file__).resolve().parents[1]

def _config():
    from nbdev.config import get_config
    return get_config()

@contextlib.contextmanager
def _in_project():
    "Run nbdev (which finds settings.ini from the working directory) from this checkout's root."
    if not (PROJECT_ROOT / 'settings.ini').exists():
        raise DocsError(f"{PROJECT_ROOT}: no settings.ini: the docs are built from a clone of the project (pip install -e .)")
    old = os.getcwd(); os.chdir(PROJECT_ROOT)
    try: yield
    finally: os.chdir(old)

def page_name(nb_rel) -> str:
    "The page a notebook becomes (nbdev's rule, as Quarto names it): `00_data.ipynb` -> `data.html`."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(nb_rel)).as_posix()

def _sidebar_yml(nbs) -> str:
    "The `sidebar.yml` that `nbdev_docs` generates from the notebooks in `nbs` (nothing is written)."
    from nbdev.quarto import nbdev_sidebar
    if _config().custom_sidebar: return (Path(nbs) / 'sidebar.yml').read_text()  # the project keeps its own
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): nbdev_sidebar.__wrapped__(path=nbs, printit=True, force=True)
    return buf.getvalue()

def _flatten(contents):
    for o in contents:
        if isinstance(o, str): yield o
        else:
            if o.get('href'): yield o['href']
            yield from _flatten(o.get('contents', []))

@_in_project()
def sidebar_notebooks(nbs=None) -> list[str]:
    "Notebooks (relative to `nbs`) in the order of the Quarto sidebar, generated from the folder as `nbdev_docs` does."
    nbs = Path(nbs or _config().nbs_path)
    return list(_flatten(yaml.safe_load(_sidebar_yml(nbs))['website']['sidebar']['contents']))

def _nbdev_yml(cfg) -> str:
    "The `nbdev.yml` that `nbdev_docs` writes beside `_quarto.yml` (site title, url, output folder)."
    from nbdev.quarto import _nbdev_yml as tpl
    vals = {k: cfg[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    return tpl.format(doc_path=cfg.doc_path.name, **vals)

@_in_project()
def process_notebooks(proc=None, nbs=None, force=False) -> Path:
    "Run nbdev's documentation processing (the `_proc` step of `nbdev_docs`, without installing Quarto) into `proc`."
    from nbdev.serve import _proc_file
    from nbdev.doclinks import nbglob
    from nbdev import serve_drv
    cfg = _config()
    nbs, proc = Path(nbs or cfg.nbs_path), Path(proc or cfg.config_path / '_proc')
    if force and proc.exists(): shutil.rmtree(proc)
    if proc.exists() and proc.stat().st_mtime < cfg.config_file.stat().st_mtime: shutil.rmtree(proc)  # as nbdev: settings changed
    proc.mkdir(parents=True, exist_ok=True)
    files = nbglob(nbs, func=Path, file_glob='', file_re='')
    files += [nbs / n for n in ('_quarto.yml', '_brand.yml') if (nbs / n).exists()]
    todo = [o for o in (_proc_file(f, cache=proc, path=nbs, mtime=proc.stat().st_mtime) for f in files) if o]
    failed, in_test = [], os.environ.get('IN_TEST')
    for o in todo:
        try:
            with warnings.catch_warnings():  # nbdev's FAQ warning for `try: import ... except: fallback` cells, which run fine
                warnings.filterwarnings('ignore', 'Found cells containing imports and other code')
                serve_drv.main(o)
        except Exception as e:
            cause = e.__cause__ or e
            failed.append(f"{o[0].name}: {str(e).splitlines()[0]}\n    {type(cause).__name__}: {cause}")
        finally:
            if in_test is None: os.environ.pop('IN_TEST', None)
            else: os.environ['IN_TEST'] = in_test
    (proc / 'nbdev.yml').write_text(_nbdev_yml(cfg))
    (proc / 'sidebar.yml').write_text(_sidebar_yml(nbs))
    if failed:
        raise DocsError("nbdev's documentation processing failed (it executes only imports, exports and show_doc cells; "
                        "a cell mixing imports with code that needs earlier cells fails: put the imports in a cell of "
                        "their own, e.g. with cardiac_nvae.docs.split_import_cells):\n" + '\n'.join(failed))
    return proc

# ----------------------------------------------------------------------------------------------------------------
# Keeping notebooks processable: nbdev executes every cell that imports something (see nbdev.processors._do_eval).

def _is_import(node) -> bool:
    "An import, or a `try: import ... except ImportError: fallback` block."
    if isinstance(node, (ast.Import, ast.ImportFrom)): return True
    return isinstance(node, ast.Try) and all(isinstance(b, (ast.Import, ast.ImportFrom)) for b in node.body)

def _split_source(src):
    "(imports, rest) of a cell's source, or None when its imports cannot be moved to a cell of their own."
    lines = src.splitlines(keepends=True)
    dirs = [l for l in lines if l.startswith('#|')]
    if any(re.match(r'#\|\s*(export|exporti|exports|exec_doc\b|eval:\s*false)', l) for l in dirs): return None  # run or skipped anyway
    if 'nbdev_export()' in src: return None
    try: body = ast.parse(src).body
    except SyntaxError: return None
    imps = [n for n in body if _is_import(n)]
    others = [n for n in body if not _is_import(n)]
    if not imps or not others: return None
    taken = {i for n in imps for i in range(n.lineno - 1, n.end_lineno)}
    if any(set(range(n.lineno - 1, n.end_lineno)) & taken for n in others): return None  # `import x; y()` on one line
    imports = ''.join(dirs) + ''.join(lines[i] for i in sorted(taken)).rstrip('\n')
    rest = ''.join(l for i, l in enumerate(lines) if i not in taken).strip('\n')
    return imports, rest

def split_import_cells(path) -> list[int]:
    "Move the imports of each code cell that mixes them with other code into a cell just before it; returns cells changed."
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    cells, changed = [], []
    for i, c in enumerate(nb.cells):
        parts = _split_source(c.source) if c.cell_type == 'code' else None
        if parts:
            changed.append(i)
            cells.append(nbformat.v4.new_code_cell(parts[0], id=uuid.uuid4().hex[:8]))
            c.source = parts[1]
        cells.append(c)
    if changed:
        nb.cells = cells
        nbformat.write(nb, str(path))
    return changed

# ----------------------------------------------------------------------------------------------------------------
# The site

_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block extra_css %}<meta name="generator" content="cardiac-nvae docs ({{ resources.site.engine }})">
<style type="text/css">{{ resources.site.css }}</style>{% endblock extra_css %}
{%- block body_header -%}
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<nav id="site-nav" aria-label="chapters">
<a class="site-title" href="{{ resources.site.home }}">{{ resources.site.title | e }}</a>
<input id="site-search" type="search" placeholder="Search" aria-label="search the site" autocomplete="off">
<ul id="search-results"></ul>
<ul>
{%- for p in resources.site.pages %}
<li><a class="chapter{% if p.current %} active{% endif %}" href="{{ p.href }}">{{ p.title | e }}</a></li>
{%- endfor %}
</ul>
<p class="site-engine">built with {{ resources.site.engine }}</p>
</nav>
<script src="{{ resources.site.root }}search.js"></script>
<script>
(function () {
  var box = document.getElementById('site-search'), list = document.getElementById('search-results');
  box.addEventListener('input', function () {
    var q = box.value.trim().toLowerCase(), index = window.CARDIAC_NVAE_SEARCH || [];
    list.textContent = '';
    if (q.length < 2) return;
    var hits = index.filter(function (e) { return (e.t + ' ' + e.x).toLowerCase().indexOf(q) >= 0; }).slice(0, 20);
    hits.forEach(function (e) {
      var li = document.createElement('li'), a = document.createElement('a');
      a.href = '{{ resources.site.root }}' + e.h; a.textContent = e.p + ': ' + e.t; li.appendChild(a); list.appendChild(li);
    });
    if (!hits.length) { var li = document.createElement('li'); li.textContent = 'no match'; list.appendChild(li); }
  });
})();
</script>
<main>
<header class="page-header"><h1 class="title">{{ resources.site.page_title | e }}</h1>
{%- if resources.site.description %}<p class="description">{{ resources.site.description | e }}</p>{% endif %}</header>
{%- endblock body_header -%}
"""

_CSS = """
body.jp-Notebook { margin: 0; padding: 0; }
#site-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 250px; overflow-y: auto; padding: 1.2em 1em;
  box-sizing: border-box; background: #f7f7f9; border-right: 1px solid #ddd; font-family: system-ui, sans-serif; font-size: 14px; }
#site-nav .site-title { display: block; font-weight: 700; font-size: 17px; margin-bottom: .8em; color: #222; text-decoration: none; }
#site-nav ul { list-style: none; margin: 0; padding: 0; }
#site-nav li { margin: .25em 0; }
#site-nav a.chapter { color: #2a6db0; text-decoration: none; display: block; padding: .2em .4em; border-radius: 4px; }
#site-nav a.chapter.active { background: #2a6db0; color: #fff; }
#site-search { width: 100%; box-sizing: border-box; margin-bottom: .5em; padding: .3em .4em; }
#search-results { margin-bottom: 1em !important; font-size: 13px; }
#page-toc { font-family: system-ui, sans-serif; font-size: 14px; border: 1px solid #ddd; border-radius: 4px; padding: .3em .8em;
  margin: .5em 0 1.5em 0; background: #fafafa; }
#page-toc ul { margin: .3em 0; padding-left: 1.2em; } #page-toc li.toc-h3 { margin-left: 1.2em; }
#site-nav .site-engine { color: #888; font-size: 12px; margin-top: 2em; }
main { margin-left: 250px; max-width: 1100px; padding: 1em 2em 4em 2em; box-sizing: border-box; }
.page-header .title { margin-bottom: .2em; font-family: system-ui, sans-serif; }
.jp-RenderedMarkdown p:has(> a[href*="/blob/"]:only-child) { float: right; margin: 0; font-size: smaller; }
.page-header .description { font-family: system-ui, sans-serif; color: #555; font-size: 1.1em; margin-top: 0; }
.jp-RenderedMarkdown table { border-collapse: collapse; }
math { font-size: 1.15em; }
.jp-RenderedHTMLCommon blockquote { border-left: 3px solid #ccc; margin-left: 0; padding-left: 1em; color: #444; }
.jp-RenderedHTMLCommon hr { border: 0; border-top: 1px solid #ddd; }
"""

_re_dir = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')
_re_attrs = re.compile(r'(\]\([^)\s]*\))\{[^{}\n]*\}')  # Pandoc's [text](url){target="_blank"}: Quarto only

def _plain_markdown(md):
    "Markdown without Pandoc link attributes, which other renderers print as text."
    return _re_attrs.sub(r'\1', md) if isinstance(md, str) else [_re_attrs.sub(r'\1', l) for l in md]

_re_code = re.compile(r'(```.*?```|`[^`\n]*`)', re.S)
_re_math = re.compile(r'\$\$(.+?)\$\$|(?<![\\$\w])\$(?![\s$])([^$\n]+?)(?<!\s)\$(?![\w$])', re.S)

def _math_to_tokens(md, maths):
    "Replace TeX between dollars (outside code) by tokens that `_tokens_to_mathml` turns into MathML after rendering."
    from latex2mathml.converter import convert
    def one(m):
        try: maths.append(convert(m.group(1) or m.group(2), display='block' if m.group(1) else 'inline'))
        except Exception: return m.group(0)  # not TeX after all: leave the text as written
        return f'cnvmath{len(maths) - 1}x'
    return ''.join(part if i % 2 else _re_math.sub(one, part) for i, part in enumerate(_re_code.split(md)))

def _tokens_to_mathml(page, maths):
    return re.sub(r'cnvmath(\d+)x', lambda m: maths[int(m.group(1))], page)

def _prepare(nb):
    "Turn a processed notebook's Quarto conventions into plain notebook ones: (frontmatter, notebook, MathML of its TeX)."
    fm, maths = {}, []
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.lstrip().startswith('---'):
        fm = yaml.safe_load(nb.cells[0].source.strip().strip('-')) or {}
        nb.cells = nb.cells[1:]
    cells = []
    for c in nb.cells:
        if c.cell_type == 'raw': continue  # raw cells are for Quarto's other formats
        if c.cell_type == 'markdown': c.source = _math_to_tokens(_plain_markdown(c.source), maths)
        if c.cell_type == 'code':
            lines, opts = c.source.splitlines(), {}
            while lines and _re_dir.match(lines[0]):
                k, v = _re_dir.match(lines.pop(0)).groups(); opts[k] = v.strip('"\'').lower()
            c.source = '\n'.join(lines).strip('\n')
            if opts.get('include') == 'false': continue
            tags = set(c.metadata.get('tags', []))
            if opts.get('echo') == 'false' or not c.source: tags.add('remove_input')
            if opts.get('output') == 'false': c.outputs = []
            if not c.source and not c.outputs: continue
            for o in c.outputs:
                if 'text/markdown' in o.get('data', {}): o.data['text/markdown'] = _plain_markdown(o.data['text/markdown'])
            c.metadata['tags'] = sorted(tags)
        cells.append(c)
    nb.cells = cells
    return fm, nb, maths

def _rewrite_links(page, rel, names, site_url):
    "Point links at notebooks and at the published site to the pages of this build; lower-case heading ids as Quarto does."
    here = Path(rel).parent.as_posix() or '.'
    def href(m):
        url = m.group(2)
        if re.match(r'^[a-z][\w+.-]*:|^//', url) and not url.startswith(site_url): return m.group(0)  # external, mailto:, data:
        path, _, frag = url.partition('#')
        if url.startswith(site_url): path = os.path.relpath(path[len(site_url):] or 'index.html', here)
        elif path.endswith('.ipynb'):
            target = os.path.normpath(os.path.join(here, path)).replace(os.sep, '/')
            path = os.path.relpath(names.get(target, page_name(target)), here)
        return f'{m.group(1)}"{path}{"#" + frag.lower() if frag else ""}"'
    page = re.sub(r'(<a\b[^>]*?\bhref=)"([^"]*)"', href, page)
    return re.sub(r'(<h[1-6]\b[^>]*?\bid=)"([^"]*)"', lambda m: f'{m.group(1)}"{m.group(2).lower()}"', page)

def _nbconvert_site(proc, out, order, cfg):
    "One HTML page per processed notebook with nbconvert's lab template, a chapter sidebar and rewritten links."
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    exporter = HTMLExporter(config=c, template_name='lab', extra_loaders=[DictLoader({'cardiac_site.html.j2': _TEMPLATE})],
                            template_file='cardiac_site.html.j2', embed_images=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    names = {rel: page_name(rel) for rel in order}
    pages = []
    for rel in order:
        pages.append((rel, *_prepare(nbformat.read(str(proc / rel), as_version=4))))
    site_url = f"{cfg.doc_host}{cfg.doc_baseurl}".rstrip('/') + '/'
    written, index = [], []
    for rel, fm, nb, maths in pages:
        here = Path(names[rel]).parent
        nav = [dict(href=os.path.relpath(names[r], here.as_posix() or '.'), title=f.get('title', Path(r).stem),
                    current=r == rel) for r, f, *_ in pages]
        title = fm.get('title', Path(rel).stem)
        resources = {'metadata': {'name': title, 'path': str((proc / rel).parent)},
                     'site': dict(engine='nbconvert', css=_CSS, pages=nav, title=cfg.title, page_title=title,
                                  description=fm.get('description', ''),
                                  home=os.path.relpath('index.html', here.as_posix() or '.'),
                                  root=('' if here.as_posix() in ('', '.') else os.path.relpath('.', here.as_posix()) + '/'))}
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        dest = out / names[rel]
        dest.parent.mkdir(parents=True, exist_ok=True)
        page = _with_page_toc(_tokens_to_mathml(_rewrite_links(body, names[rel], names, site_url), maths))
        dest.write_text(page, encoding='utf-8')
        written.append(dest)
        index += _search_entries(page, names[rel], title)
    (out / 'search.js').write_text('window.CARDIAC_NVAE_SEARCH = ' + json.dumps(index, ensure_ascii=False) + ';\n', encoding='utf-8')
    return written

_re_head = re.compile(r'<h([23])\b[^>]*?\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)

def _text(html_):
    "Visible text of an HTML fragment (tags, styles and scripts removed)."
    import html
    html_ = re.sub(r'<(style|script)\b.*?</\1>', ' ', html_, flags=re.S)
    return html.unescape(re.sub(r'\s+', ' ', re.sub(r'<[^>]+>', ' ', html_))).replace('¶', '').strip()

def _with_page_toc(page):
    "The page with an 'On this page' list of its section headings (h2, and h3 unless there are too many) under its title."
    import html
    heads = [(int(l), i, _text(t)) for l, i, t in _re_head.findall(page)]
    if sum(l == 3 for l, *_ in heads) + len(heads) > 60: heads = [h for h in heads if h[0] == 2]  # API pages: sections only
    if len(heads) < 2: return page
    items = ''.join(f'<li class="toc-h{l}"><a href="#{i}">{html.escape(t)}</a></li>' for l, i, t in heads)
    toc = f'<nav id="page-toc" aria-label="on this page"><details open><summary>On this page</summary><ul>{items}</ul></details></nav>'
    return page.replace('</header>', '</header>\n' + toc, 1)

def _search_entries(page, href, title, limit=1500):
    "Search index entries of a page: one per h2/h3 section (page title, heading, link, its first `limit` characters of text)."
    main = page.split('<main>', 1)[-1]
    cuts = [(m.start(), m.group(2), _text(m.group(3))) for m in _re_head.finditer(main)]
    starts = [(0, '', title)] + cuts
    out = []
    for (a, hid, head), (b, *_) in zip(starts, starts[1:] + [(len(main), None, None)]):
        text = _text(main[a:b])[:limit]
        if text: out.append(dict(p=title, t=head, h=href + (f'#{hid}' if hid else ''), x=text))
    return out

def _quarto_site(proc, out, cfg):
    "Render the processed notebooks with Quarto, as `nbdev_docs` does, into `out`."
    subprocess.run(['quarto', 'render', '--no-cache'], cwd=proc, check=True)
    shutil.rmtree(out)
    shutil.move(str(proc / cfg.doc_path.name), str(out))
    (out / _MARK).write_text('built by cardiac-nvae docs; rebuilt in full each time\n')
    return sorted(out.rglob('*.html'))

_MARK = '.cardiac-nvae-docs'  # in a folder this module built, which a rebuild may therefore empty

def _clear_out(out, default):
    "Empty `out` for a new build, refusing a folder of other files (a mistyped --out must not lose them)."
    if out.exists() and any(out.iterdir()) and not (out / _MARK).exists() and out != default:
        raise DocsError(f"{out}: not empty and not a site built by `cardiac-nvae docs`: choose another --out")
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / _MARK).write_text('built by cardiac-nvae docs; rebuilt in full each time\n')

Site = namedtuple('Site', 'engine out pages')

def build_site(out=None, engine=None, proc=None, nbs=None, force=False) -> Site:
    "Build the documentation site into `out` (default `_docs`): Quarto when installed, else nbconvert's HTML exporter."
    out, proc, nbs = (Path(o).resolve() if o else None for o in (out, proc, nbs))  # before moving to the project root
    with _in_project():
        cfg = _config()
        default = cfg.config_path / cfg.doc_path.name  # nbdev_docs' own output folder
        nbs, out = nbs or cfg.nbs_path, out or default
        engine = engine or ('quarto' if shutil.which('quarto') else 'nbconvert')
        if engine not in ('quarto', 'nbconvert'): raise DocsError(f"engine: {engine!r} is neither 'quarto' nor 'nbconvert'")
        if engine == 'quarto' and not shutil.which('quarto'): raise DocsError("engine 'quarto': no quarto binary on PATH")
        _clear_out(out, default)
        proc = process_notebooks(proc, nbs, force=force)
        if engine == 'quarto': return Site(engine, out, _quarto_site(proc, out, cfg))
        order = sidebar_notebooks(nbs)
        missing = [r for r in order if not (proc / r).exists()]
        if missing: raise DocsError(f"{proc}: processed notebooks missing: {missing}")
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            return Site(engine, out, _nbconvert_site(proc, out, order, cfg))
