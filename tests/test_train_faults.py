"""Fault injection for cardiac_nvae.train: interrupted runs resume exactly, NaN guard, safe checkpoint loading."""
import os, pickle, warnings

import pandas as pd
import pytest
import torch
from torch import nn
# first: cardiac_nvae.train imports fastai without the deprecation warnings fastai's own import raises
from cardiac_nvae.train import (make_learner, seed_everything, KLWarmup, load_checkpoint, save_checkpoint,
                                CheckpointError, NonFiniteLossError, AuxOptimizer, params_except, LinearSchedule)
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader


class TinyVAE(nn.Module):
    "A small conv autoencoder with a random latent sample, dropout and two loss terms: exercises every RNG."
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(2, 4, 3, 2, 1), nn.ELU(), nn.Dropout(0.2), nn.Flatten(), nn.Linear(4 * 4 * 4, 4))
        self.dec = nn.Sequential(nn.Linear(2, 2 * 8 * 8), nn.Unflatten(1, (2, 8, 8)))
        self.nan_at = None  # (epoch-independent) forward call count at which to inject a NaN
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        mu, logvar = self.enc(x).chunk(2, 1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        out = self.dec(z)
        kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp())).sum(1).mean()
        if self.nan_at is not None and self.calls >= self.nan_at: kl = kl * float('nan')
        return out, {'recon': ((out - x) ** 2).sum((1, 2, 3)).mean(), 'kl': kl}, {'z': z}


def tiny_dls(n=40, bs=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, 8, 8, generator=g)
    items = [(x[i], torch.zeros(1)) for i in range(n)]
    return DataLoaders(DataLoader(items[:32], bs=bs, shuffle=True), DataLoader(items[32:], bs=bs))


def new_learner(path, cbs=(), resume=True):
    seed_everything(1)
    model = TinyVAE()
    return make_learner(model, tiny_dls(), weights={'kl': 0.5}, lr=1e-2, path=path, seed=1, quiet=True,
                        resume=resume, cbs=[KLWarmup(2)] + list(cbs), device='cpu')


class Interrupt(Exception): pass


class InterruptAt:
    "Raise `Interrupt` at (epoch, batch) of training, as a crash or Ctrl-C would."
    def __init__(self, epoch, batch): self.epoch, self.batch = epoch, batch


def _interrupter(epoch, batch):
    from fastai.callback.core import Callback
    class _Int(Callback):
        order = 99
        def after_batch(self):
            if self.training and self.epoch == epoch and self.iter == batch: raise Interrupt('simulated crash')
    return _Int()


def _weights(model): return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize('method', ['fit', 'fit_one_cycle'])
def test_resume_after_interrupt_gives_identical_weights(tmp_path, method):
    n_epoch = 4
    ref = new_learner(tmp_path / 'ref')
    getattr(ref, method)(n_epoch)
    ref_last = load_checkpoint(tmp_path / 'ref' / 'last.pth')

    run = tmp_path / 'run'
    learn = new_learner(run, cbs=[_interrupter(2, 1)])
    with pytest.raises(Interrupt): getattr(learn, method)(n_epoch)
    test_state = load_checkpoint(run / 'last.pth')
    assert test_state['epoch'] == 1  # the last complete epoch

    learn2 = new_learner(run)  # a fresh process would build the same objects again
    getattr(learn2, method)(n_epoch)
    last = load_checkpoint(run / 'last.pth')
    assert last['epoch'] == n_epoch - 1
    for k, v in ref_last['model'].items(): assert torch.equal(v, last['model'][k]), k
    for k, v in _weights(ref.model).items(): assert torch.equal(v, _weights(learn2.model)[k]), k  # best weights loaded
    assert load_checkpoint(run / 'best.pth')['epoch'] == load_checkpoint(tmp_path / 'ref' / 'best.pth')['epoch']
    log, ref_log = pd.read_csv(run / 'log.csv'), pd.read_csv(tmp_path / 'ref' / 'log.csv')
    assert list(log.epoch) == list(range(n_epoch))
    pd.testing.assert_frame_equal(log.drop(columns=['time'], errors='ignore'), ref_log.drop(columns=['time'], errors='ignore'))


def test_resume_refuses_a_different_schedule(tmp_path):
    new_learner(tmp_path).fit(2)
    with pytest.raises(ValueError, match='n_epoch'): new_learner(tmp_path).fit(3)


def test_nan_guard_names_the_term_and_keeps_last_good_checkpoint(tmp_path):
    learn = new_learner(tmp_path, resume=False)
    learn.fit(2)
    good = load_checkpoint(tmp_path / 'best.pth')
    before = _weights(learn.model)
    learn.model.nan_at = learn.model.calls + 3  # third training batch of the next fit
    with pytest.raises(NonFiniteLossError, match="loss term 'kl'.*epoch 0, batch 2 \\(training\\)"):
        learn.fit(2)
    after = load_checkpoint(tmp_path / 'best.pth')
    assert after['epoch'] == good['epoch'] or after['valid_loss'] < good['valid_loss']
    assert all(torch.isfinite(v).all() for v in after['model'].values())
    assert all(torch.isfinite(v).all() for v in learn.model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in learn.model.state_dict().items())  # two good steps were taken


def test_nan_guard_can_cancel_instead(tmp_path):
    learn = new_learner(tmp_path, resume=False)
    learn.cbs.filter(lambda c: type(c).__name__ == 'NaNGuard')[0].raise_error = False
    learn.model.nan_at = 6
    learn.fit(3)  # no exception
    assert "loss term 'kl'" in learn.nan_message


def test_malicious_checkpoint_cannot_execute(tmp_path):
    marker = tmp_path / 'pwned'
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    for name, payload in [('raw.pth', pickle.dumps(Evil())), ]:
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(CheckpointError, match='refused'): load_checkpoint(tmp_path / name)
    # the same object saved by torch.save, as a tampered checkpoint would be
    torch.save({'model': Evil()}, tmp_path / 'torch.pth')
    with pytest.raises(CheckpointError): load_checkpoint(tmp_path / 'torch.pth')
    # and as a tampered `last.pth` picked up by Resume
    torch.save({'model': Evil(), 'n_epoch': 2}, tmp_path / 'last.pth')
    with pytest.raises(CheckpointError): new_learner(tmp_path).fit(2)
    assert not marker.exists()


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = save_checkpoint({'a': torch.ones(1)}, tmp_path / 'c.pth')
    with pytest.raises(Exception): save_checkpoint({'a': lambda: 0}, p)  # cannot be pickled
    assert torch.equal(load_checkpoint(p)['a'], torch.ones(1))
    assert [f.name for f in tmp_path.iterdir()] == ['c.pth']


def test_aux_optimizer_steps_only_its_module(tmp_path):
    seed_everything(0)
    model = TinyVAE()
    model.disc = nn.Linear(2, 1)
    def disc_loss(disc, learn):
        z = learn.pred[2]['z'].detach()
        return nn.functional.binary_cross_entropy_with_logits(disc(z), torch.ones(len(z), 1))
    learn = make_learner(model, tiny_dls(), lr=1e-2, quiet=True, seed=0, device='cpu',
                         splitter=lambda m: [params_except(m, m.disc)],
                         cbs=[AuxOptimizer(lambda m: m.disc, disc_loss, lr=1e-2, wd=0., term='disc')])
    learn.create_opt()
    assert not {id(p) for p in model.disc.parameters()} & {id(p) for p in learn.opt.all_params().itemgot(0)}
    d0 = model.disc.weight.detach().clone()
    learn.fit(1)
    assert not torch.equal(d0, model.disc.weight)
    assert 'train_disc' in learn.cbs.filter(lambda c: type(c).__name__ == 'LossTermsLogger')[0].df.columns


def test_linear_schedule_and_warmup_weights(tmp_path):
    learn = new_learner(tmp_path, resume=False)
    learn.fit(3)
    log = pd.read_csv(tmp_path / 'log.csv')
    assert log.w_kl.tolist() == [0.5, 0.5, 0.5]  # logged weight is the full one (validation uses it)
    assert LinearSchedule(2)(1.5) == 0.75


def test_validate_and_lr_find_leave_run_files_and_weights_alone(tmp_path):
    learn = new_learner(tmp_path)
    learn.fit(2)
    files = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    with torch.no_grad():
        for q in learn.model.parameters(): q.add_(0.01)  # weights now differ from every checkpoint on disk
    w = _weights(learn.model)
    learn.validate()
    for k, v in w.items(): assert torch.equal(v, learn.model.state_dict()[k]), k  # Resume did not reload last.pth
    with warnings.catch_warnings():  # fastai 2.8.7 (pinned): lr_find's Learner.load reads numpy.core (deprecated by numpy 2)
        warnings.filterwarnings('ignore', 'numpy.core is deprecated', DeprecationWarning)
        learn.lr_find(num_it=8, show_plot=False)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()} == files


def test_amp_refused_on_cpu():
    with pytest.raises(ValueError, match='CUDA'): make_learner(TinyVAE(), tiny_dls(), amp=True, device='cpu')


def test_nan_in_a_log_only_term_does_not_stop(tmp_path):
    seed_everything(1)
    model = TinyVAE()
    learn = make_learner(model, tiny_dls(), weights={'kl': 0.}, lr=1e-2, path=tmp_path, seed=1, quiet=True, device='cpu')
    model.nan_at = 2
    learn.fit(1)  # kl is logged (as NaN) but weighs nothing: training goes on
    assert pd.read_csv(tmp_path / 'log.csv').train_kl.isna().all()
