"""cardiac_nvae.train on a GPU: mixed precision, resume with the gradient scaler, NaN guard (skipped without CUDA)."""
import pytest
import torch

from cardiac_nvae.train import make_learner, load_checkpoint, NonFiniteLossError, MixedPrecision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU checks skipped")

from test_train_faults import TinyVAE, tiny_dls, _interrupter, Interrupt  # noqa: E402


def cuda_learner(path, **kw):
    torch.manual_seed(0)
    return make_learner(TinyVAE(), tiny_dls(), weights={'kl': 0.5}, lr=1e-2, path=path, seed=1, quiet=True, **kw)


def test_cuda_default_device_and_amp(tmp_path):
    learn = cuda_learner(tmp_path)
    assert any(isinstance(cb, MixedPrecision) for cb in learn.cbs)  # AMP on by default on CUDA
    learn.fit(2)
    assert next(learn.model.parameters()).device.type == 'cuda'
    assert load_checkpoint(tmp_path / 'best.pth')['model']['enc.0.weight'].device.type == 'cpu'


def test_cuda_resume_restores_scaler(tmp_path):
    learn = cuda_learner(tmp_path, resume=True, cbs=[_interrupter(1, 1)])
    with pytest.raises(Interrupt): learn.fit(3)
    st = load_checkpoint(tmp_path / 'last.pth')
    assert st['epoch'] == 0 and st['scaler'] is not None and 'cuda' in st['rng']
    learn2 = cuda_learner(tmp_path, resume=True)
    learn2.fit(3)
    assert load_checkpoint(tmp_path / 'last.pth')['epoch'] == 2


def test_cuda_nan_guard(tmp_path):
    learn = cuda_learner(tmp_path)
    learn.model.nan_at = 2
    with pytest.raises(NonFiniteLossError, match="loss term 'kl'"): learn.fit(1)

