"Every `cardiac-nvae ...` command printed in the README or a chapter's text goes through the command line's own checks."
import ast, json, re, shlex
from pathlib import Path

import pytest

from cardiac_nvae import cli

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r'```[a-z]*\n(.*?)```', re.S)

def shell_commands(text):
    "The `cardiac-nvae` command lines of the fenced code blocks of markdown `text` (continuations joined, comments dropped)."
    out = []
    for block in FENCE.findall(text):
        for line in block.replace('\\\n', ' ').splitlines():
            line = line.strip()
            if line.startswith('$ '): line = line[2:]
            if 'cardiac-nvae ' not in line: continue
            line = line[line.index('cardiac-nvae '):]  # e.g. after `pip install -e . &&`
            words = shlex.split(line, comments=True)
            out.append(words[:words.index('&&')] if '&&' in words else words)
    return out

def printed_commands():
    "(where, argv) of every command in README.md and in the markdown cells of nbs/*.ipynb."
    found = [('README.md', c) for c in shell_commands((ROOT / 'README.md').read_text())]
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            if cell['cell_type'] == 'markdown': found += [(nb.name, c) for c in shell_commands(''.join(cell['source']))]
    return found

COMMANDS = printed_commands()

def test_the_commands_are_found():
    "The extraction sees the commands this test exists for (an empty list would pass every check below)."
    text = [' '.join(c) for _, c in COMMANDS]
    assert len(COMMANDS) >= 20, text
    assert any(c.startswith('cardiac-nvae run 06_acunet --name acunet-alpha$a') for c in text), text
    assert any(c.startswith('cardiac-nvae run 04_nvae --name nvae-thesis') and '-p test_patients null' in c for c in text), text
    assert shell_commands("```sh\nfor a in 1 2; do\n  cardiac-nvae run 04_nvae -p epochs \\\n     3  # two\ndone\n```") == \
        [['cardiac-nvae', 'run', '04_nvae', '-p', 'epochs', '3']]

def check_command(argv):
    "Parse `argv` as the command line does; for `run`, the chapter must exist and every `-p` name be one of its parameters."
    assert argv[0] == 'cardiac-nvae', argv
    args = cli.build_parser().parse_args(argv[1:])  # an unknown option or subcommand exits here
    if args.command != 'run': return args
    nb = cli.find_notebook(args.notebook)
    params = cli.notebook_parameters(nb)
    for name, value in args.p or []:
        assert name in params, f"{nb.stem} has no parameter {name!r}; known: {sorted(params)}"
        if '$' not in value and '<' not in value:  # a shell variable or a placeholder has no type yet
            cli._typed(name, cli.parse_params([(name, value)])[name], params[name][0], nb.stem)
    if args.params and (ROOT / args.params).exists(): cli.check_params(nb, cli.parse_params([], ROOT / args.params))
    return args

@pytest.mark.parametrize('where,argv', COMMANDS, ids=[f"{w}:{' '.join(c)[:60]}" for w, c in COMMANDS])
def test_printed_command_passes_the_parameter_check(where, argv):
    check_command(argv)

def test_a_wrong_parameter_name_is_caught():
    with pytest.raises(AssertionError, match="has no parameter 'warmup_epochs'"):
        check_command(['cardiac-nvae', 'run', '04_nvae', '-p', 'warmup_epochs', '30'])
    with pytest.raises(SystemExit):
        check_command(['cardiac-nvae', 'run', '04_nvae', '-p', 'epochs', 'many'])   # int parameter, text value

def thesis_dicts():
    "(notebook, name, keys) of every `THESIS_PARAMS`/`THESIS_SETTINGS = dict(...)` a chapter defines: its `--params` YAML."
    out = []
    for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            if cell['cell_type'] != 'code': continue
            src = '\n'.join(l for l in ''.join(cell['source']).splitlines() if not l.lstrip().startswith(('#|', '%', '!')))
            try: tree = ast.parse(src)
            except SyntaxError: continue
            for node in ast.walk(tree):
                if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                        and node.targets[0].id in ('THESIS_PARAMS', 'THESIS_SETTINGS') and isinstance(node.value, ast.Call)):
                    out.append((nb, node.targets[0].id, [k.arg for k in node.value.keywords]))
    return out

def test_thesis_parameter_sets_name_only_parameters_of_their_chapter():
    found = thesis_dicts()
    assert {nb.stem for nb, _, _ in found} >= {'03_baselines', '04_nvae', '06_acunet'}, found
    for nb, name, keys in found:
        unknown = sorted(set(keys) - set(cli.notebook_parameters(nb)))
        assert not unknown, f"{nb.name}: {name} names {unknown}, which are not parameters of the chapter"
