"""Table 6.4 from records that the chapters wrote: a toy 04_nvae run, then a toy 06_acunet run on it, both on the phantom.

Slow (marked `slow`): the two chapter runs take about 3 minutes on two busy cores, 1-2 on idle ones."""
import json, math, os, shutil

import numpy as np
import pytest

from cardiac_nvae import cli
from cardiac_nvae.data import acdc_splits
from cardiac_nvae.records import read_record, update_record
from cardiac_nvae.metrics import welch_test
from cardiac_nvae.phantom import phantom_data_root
from cardiac_nvae.report import collect, report, table_rows
from cardiac_nvae.train import RunMismatchError, params_from_run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('records')]  # one worker builds the runs once

TOY_04 = dict(train_slices=24, valid_slices=8, test_patients=1, epochs=1, n_generate=8, other_epochs=0, simclr_epochs=1,
              encoder_size=32, warmup_steps=10)
TOY_06 = dict(models=['unet', 'acunet'], seeds=[0, 1], epochs=2, lr=0.01, train_slices=24, valid_slices=8, test_patients=2,
              widths=[4, 8, 16])

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "A folder holding a finished toy 04_nvae run and a toy 06_acunet run that names it, both executed by `cardiac-nvae run`."
    d = tmp_path_factory.mktemp('runs')
    saved = os.environ.get('CARDIAC_NVAE_DATA')
    os.environ['CARDIAC_NVAE_DATA'] = 'phantom'  # the embedded phantom even where ../shared/data exists
    try:
        nvae = cli.run_chapter('04_nvae', TOY_04, name='nvae-toy', runs_dir=d, progress=False)
        cli.run_chapter('06_acunet', dict(TOY_06, nvae_run=str(nvae)), name='acunet-toy', runs_dir=d, progress=False)
    finally:
        if saved is None: os.environ.pop('CARDIAC_NVAE_DATA', None)
        else: os.environ['CARDIAC_NVAE_DATA'] = saved
    return d

def test_table_6_4_rows_come_from_the_06_record(runs):
    rec = read_record(runs / 'acunet-toy')
    assert rec['status'] == 'done' and rec['chapter'] == '06_acunet' and rec['scale'] == 'quick'
    seeds = rec['metrics']['per_seed']
    assert sorted((r['model'], r['seed']) for r in seeds) == [('ACU-Net', 0), ('ACU-Net', 1), ('U-Net', 0), ('U-Net', 1)]
    rows = table_rows(collect(runs), '6.4')
    assert len(rows) == 4 and set(rows['run'].map(lambda r: r.rsplit('/', 1)[-1])) == {'acunet-toy'}  # one row per model and seed
    t = report(runs, out_dir=runs / 'tables')['table 6.4'].set_index('model')
    assert list(t.index[:2]) == ['U-Net', 'ACU-Net'] and t.loc['Baumgartner et al.', 'runs'] == 0  # the thesis-only row
    for model in ('U-Net', 'ACU-Net'):
        mine = [r for r in seeds if r['model'] == model]
        assert t.loc[model, 'runs'] == 2 and t.loc[model, 'seeds'] == '0, 1' and t.loc[model, 'scale'] == 'quick'
        for col, key in (('DSC all', 'all'), ('DSC MYO', 'MYO'), ('% AV', 'AV'), ('% AV per volume', 'AV_volume')):
            v = np.array([r[key] for r in mine])
            assert math.isclose(t.loc[model, col], v.mean(), abs_tol=1e-9), (model, col)
            assert math.isclose(t.loc[model, f'{col} SE'], v.std(ddof=1) / np.sqrt(2), abs_tol=1e-9), (model, col)
        # the chapter's own table 6.4 (mean over seeds) and the report's agree
        assert math.isclose(t.loc[model, 'DSC all'], rec['metrics']['results'][model]['all'], abs_tol=1e-9)
    assert t.loc['ACU-Net', '% AV per volume thesis'] == 89.6 and t.loc['U-Net', 'DSC all thesis'] == 0.915
    for col, key in (('DSC all', 'all'), ('% AV', 'AV')):  # Welch's p of ACU-Net against U-Net over the seeds of the record
        a, b = ([r[key] for r in seeds if r['model'] == m] for m in ('ACU-Net', 'U-Net'))
        with np.errstate(all='ignore'): want = welch_test(a, b)['p']
        got = t.loc['ACU-Net', f'p {col}']
        assert (math.isnan(got) and math.isnan(want)) or math.isclose(got, want, rel_tol=1e-9), (col, got, want)
    assert '### Table 6.4' in (runs / 'tables' / 'table_6_4.md').read_text()

def test_every_record_carries_the_one_split(runs):
    split = acdc_splits(phantom_data_root(), size=32).split
    assert split.startswith('official:')
    for name in ('nvae-toy', 'acunet-toy'): assert read_record(runs / name)['split'] == split, name

def test_06_takes_the_size_its_nvae_run_fixes(runs):
    rec = read_record(runs / 'acunet-toy')
    assert rec['params']['size'] == 128 == read_record(runs / 'nvae-toy')['architecture']['size']
    assert 'size=128: taken from nvae_run' in (runs / 'acunet-toy' / '06_acunet.ipynb').read_text()
    with pytest.raises(RunMismatchError, match=r"size=64 conflicts with run .*nvae-toy, which has size=128"):
        params_from_run(runs / 'nvae-toy', {'size': 64}, keys={'size': 'architecture.size'}, by='06_acunet')

@pytest.fixture
def other_split(runs, tmp_path):
    "Copies of the two runs whose records say they were made on another split."
    for name in ('nvae-toy', 'acunet-toy'):
        shutil.copytree(runs / name, tmp_path / name, ignore=shutil.ignore_patterns('*.ipynb'))
        update_record(tmp_path / name, split='held-out:000000000000')
    return {name: tmp_path / name for name in ('nvae-toy', 'acunet-toy')}

def test_loaders_refuse_a_run_of_another_split(runs, other_split):
    from cardiac_nvae.acunet import ShapeEncoderError, nvae_from_run
    from cardiac_nvae.adaptation import load_pretrained
    from cardiac_nvae.nvae import load_nvae_run
    split = read_record(runs / 'nvae-toy')['split']
    load_nvae_run(runs / 'nvae-toy', expect={'split': split})  # the run's own split: accepted
    both = rf"{other_split['nvae-toy']} has split='held-out:000000000000', but .* expects split='{split}'"
    with pytest.raises(RunMismatchError, match=both): load_nvae_run(other_split['nvae-toy'], expect={'split': split})
    with pytest.raises(ShapeEncoderError, match=both): nvae_from_run(other_split['nvae-toy'], expect={'split': split})
    with pytest.raises(RunMismatchError, match=r"acunet-toy has split='held-out:000000000000', but .* expects split="):
        load_pretrained(other_split['acunet-toy'], None, [0, 1], 128, split=split)
    assert set(load_pretrained(runs / 'acunet-toy', None, [0, 1], 128, split=split)) == {('U-Net', 0), ('U-Net', 1)}
