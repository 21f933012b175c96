"""Fault injection for cardiac_nvae.data (and checkpoint loading): corrupt caches, killed writes, bad input files."""
import os, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from cardiac_nvae.data import DataError, load_slices, read_slices, save_slices, load_acdc, cache_dir
from cardiac_nvae.phantom import make_phantom
from cardiac_nvae.train import CheckpointError, load_weights, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    "A private cache folder, so that corrupting it touches nobody else's."
    monkeypatch.setenv('CARDIAC_NVAE_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


@pytest.fixture
def acdc(tmp_path):
    "A two-patient ACDC-layout phantom."
    return make_phantom(tmp_path / 'acdc', 'acdc', n_patients=2, seed=0) / 'training'


def cached_file(cache):
    files = list(cache.glob('acdc-*.npz'))
    assert len(files) == 1, files
    return files[0]


def rewrite(path, **change):
    "Rewrite a valid cache with some arrays changed, as another version or a bad writer would."
    with np.load(path) as z: arrays = {k: z[k] for k in z.files}
    arrays.update(change)
    with open(path, 'wb') as f: np.savez(f, **arrays)


def truncate(p): p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
def empty(p): p.write_bytes(b'')
def flip_byte(p):
    b = bytearray(p.read_bytes()); b[len(b) // 2] ^= 0xFF; p.write_bytes(bytes(b))
def bad_labels(p):
    with np.load(p) as z: m = z['masks'].copy()
    m[0, 0, 0] = 7; rewrite(p, masks=m)
def nan_images(p):
    with np.load(p) as z: im = z['images'].copy()
    im[1, 2, 3] = np.nan; rewrite(p, images=im)


@pytest.mark.parametrize('corrupt', [truncate, empty, flip_byte, bad_labels, nan_images])
def test_corrupt_cache_is_reported_and_rebuilt(cache, acdc, corrupt):
    ref = load_slices(acdc)
    path = cached_file(cache)
    corrupt(path)
    with pytest.warns(UserWarning, match=f"{path}: .*rebuilding"):
        ss = load_slices(acdc)
    np.testing.assert_array_equal(ss.masks, ref.masks); np.testing.assert_array_equal(ss.images, ref.images)
    np.testing.assert_array_equal(read_slices(path).masks, ref.masks)  # the file itself was rebuilt
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        load_slices(acdc)  # and reads back without a warning


def test_read_slices_names_the_file(tmp_path):
    p = tmp_path / 'x.npz'; p.write_bytes(b'PK\x03\x04garbage')
    with pytest.raises(DataError, match=f"{p}: corrupt slice file"): read_slices(p)


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    "A process SIGKILLed while writing a cache and a training log leaves temporaries; the next writes remove them."
    (tmp_path / 'cache').mkdir(); (tmp_path / 'run').mkdir()
    code = f"""
import threading, time, numpy as np, pandas as pd
from cardiac_nvae.data import SliceSet, save_slices
from cardiac_nvae.train import LossTermsLogger
def slow_savez(f, **arrays): f.write(b'PK partial'); f.flush(); time.sleep(120)
def slow_to_csv(self, *a, **k): time.sleep(120)
np.savez, pd.DataFrame.to_csv = slow_savez, slow_to_csv
ss = SliceSet(np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.uint8), pd.DataFrame(dict(patient=['a', 'b'])))
threading.Thread(target=save_slices, args=(ss, {str(tmp_path / 'cache' / 'a.npz')!r})).start()
log = LossTermsLogger({str(tmp_path / 'run' / 'log.csv')!r}); log.rows = [dict(epoch=0, train_loss=1.)]
log._write()
"""
    proc = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not (list((tmp_path / 'cache').glob('*tmp*')) and list((tmp_path / 'run').glob('*tmp*'))):
            assert proc.poll() is None, f"writer ended before writing: {proc.stderr.read()[-2000:]}"
            assert time.time() - t0 < 120, 'no temporary files appeared'
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill(); proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / 'cache' / 'a.npz').exists() and not (tmp_path / 'run' / 'log.csv').exists()
    assert len(read_slices(save_slices(_tiny_set(), tmp_path / 'cache' / 'b.npz'))) == 2
    assert sorted(p.name for p in (tmp_path / 'cache').iterdir()) == ['b.npz']
    from cardiac_nvae.train import LossTermsLogger
    log = LossTermsLogger(tmp_path / 'run' / 'log.csv'); log.rows = [dict(epoch=0, train_loss=1.)]
    log._write()
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == ['log.csv']


def _tiny_set():
    import pandas as pd
    from cardiac_nvae.data import SliceSet
    return SliceSet(np.zeros((2, 4, 4), np.float32), np.ones((2, 4, 4), np.uint8), pd.DataFrame(dict(patient=['a', 'b'])))


def test_cache_files_are_readable_by_others_sharing_the_cache(cache, acdc):
    old = os.umask(0o022)
    try: load_slices(acdc)
    finally: os.umask(old)
    mode = cached_file(cache).stat().st_mode & 0o777
    assert mode == 0o644, oct(mode)


def test_nan_image_raises_data_error_naming_the_file(acdc):
    img = acdc / 'patient001' / 'patient001_frame01.nii.gz'
    vol = nib.load(img)
    data = np.asanyarray(vol.dataobj).astype(np.float32); data[..., 0] = np.nan
    nib.save(nib.Nifti1Image(data, vol.affine), img)
    with pytest.raises(DataError, match=f"{img}: image has .* non-finite values"): load_acdc(acdc)


def test_info_cfg_not_utf8_raises_data_error(acdc):
    cfg = acdc / 'patient002' / 'Info.cfg'
    cfg.write_bytes(cfg.read_bytes() + 'Comment: r\xe9sum\xe9\n'.encode('latin-1'))
    with pytest.raises(DataError, match=f"{cfg}: Info.cfg is not UTF-8"): load_acdc(acdc)


def test_dangling_symlink_and_file_patient_entries_are_errors(acdc):
    "A patient that silently vanished would change every split: both cases are errors naming the entry."
    shutil.rmtree(acdc / 'patient002')
    link = acdc / 'patient002'; link.symlink_to(acdc / 'moved-away')
    with pytest.raises(DataError, match=f"{link}: patient entry is a dangling symlink"): load_acdc(acdc)
    link.unlink(); link.write_text('not a folder')
    with pytest.raises(DataError, match=f"{link}: patient entry is not a folder"): load_acdc(acdc)


def test_unreadable_patient_folder_raises_data_error(acdc):
    "chmod 000 on a patient folder; as root, the loader runs without the capabilities that bypass file modes."
    d = acdc / 'patient002'
    cmd = [sys.executable, '-c', f"from cardiac_nvae.data import load_acdc\nload_acdc({str(acdc)!r})"]
    if os.geteuid() == 0:
        if not shutil.which('setpriv'): pytest.skip('running as root without setpriv: cannot make a folder unreadable')
        cmd = ['setpriv', '--bounding-set', '-dac_override,-dac_read_search', *cmd]
    d.chmod(0)
    try: r = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    finally: d.chmod(0o755)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last.startswith('cardiac_nvae.records.DataError:'), r.stderr[-2000:]
    assert f"{d}: patient folder is unreadable" in last or f"{d / 'Info.cfg'}: Info.cfg is unreadable" in last, last


class Net(nn.Module):
    def __init__(self, n=3): super().__init__(); self.lin = nn.Linear(n, 2)


def test_load_weights_names_the_file_and_refuses_non_finite(tmp_path):
    p = save_checkpoint({'state': Net().state_dict()}, tmp_path / 'nokey.pth')
    with pytest.raises(CheckpointError, match=f"{p}: no 'model' weights in the checkpoint"): load_weights(Net(), p)
    p = save_checkpoint({'model': Net(5).state_dict()}, tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match=f"{p}: weights do not fit Net: .*size mismatch for lin.weight"): load_weights(Net(), p)
    sd = Net().state_dict(); sd['lin.bias'][0] = float('nan')
    p = save_checkpoint({'model': sd}, tmp_path / 'nan.pth')
    net = Net(); before = net.lin.bias.detach().clone()
    with pytest.raises(CheckpointError, match=rf"{p}: non-finite weights in 1 tensor\(s\), e.g. \['lin.bias'\]"): load_weights(net, p)
    assert torch.equal(net.lin.bias, before)
    good = Net().state_dict()
    load_weights(net, save_checkpoint({'model': good}, tmp_path / 'ok.pth'))
    assert torch.equal(net.lin.weight, good['lin.weight'])
