"Fault injection for the phantom writer: an interrupted generation never leaves a dataset that looks complete."
import json
import pytest

import cardiac_nvae.phantom as ph


def _interrupt_after(n, monkeypatch):
    "Make the n+1-th patient fail, as a crash or Ctrl-C in the middle of a generation would."
    real, calls = ph.acdc_patient, []
    def failing(*args, **kwargs):
        if len(calls) >= n: raise KeyboardInterrupt("simulated interruption")
        calls.append(1); return real(*args, **kwargs)
    monkeypatch.setattr(ph, 'acdc_patient', failing)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    _interrupt_after(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        ph.make_phantom(tmp_path / 'acdc', 'acdc', 4, seed=0)
    assert not (tmp_path / 'acdc').exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is removed too


def test_interrupted_regeneration_keeps_the_old_dataset(tmp_path, monkeypatch):
    dest = ph.make_phantom(tmp_path / 'acdc', 'acdc', 1, seed=0)
    before = sorted(p.relative_to(dest) for p in dest.rglob('*'))
    _interrupt_after(0, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        ph.make_phantom(dest, 'acdc', 2, seed=0, overwrite=True)
    assert sorted(p.relative_to(dest) for p in dest.rglob('*')) == before
    assert json.loads((dest / 'phantom.json').read_text())['n_patients'] == 1
    assert [p.name for p in tmp_path.iterdir()] == ['acdc']


def test_interrupted_phantom_data_root_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setenv('CARDIAC_NVAE_CACHE', str(tmp_path))
    sizes = dict(acdc_training=1, acdc_testing=0, mnms=1)
    _interrupt_after(0, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        ph.phantom_data_root(0, sizes)
    assert list(tmp_path.iterdir()) == []  # no folder, finished or temporary
    monkeypatch.undo(); monkeypatch.setenv('CARDIAC_NVAE_CACHE', str(tmp_path))
    root = ph.phantom_data_root(0, sizes)
    assert (root / 'phantom.json').exists() and (root / 'acdc' / 'training' / 'patient001' / 'Info.cfg').exists()
    assert (root / 'mnms' / ph.MNMS_TABLE).exists()
