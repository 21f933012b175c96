"""A wall-clock deadline (issue 19): a fit stops after the epoch in which it passes, keeps its best checkpoint, is evaluated, and its record says so."""
import json, os

import pandas as pd
import pytest
import torch
import cardiac_nvae.train as train
from cardiac_nvae.train import make_learner, seed_everything, write_record, start_deadline, deadline_fields, DEADLINE_ENV
from fastai.callback.core import Callback
from test_train_faults import TinyVAE, tiny_dls


class FakeClock:
    "`time` for cardiac_nvae.train: 10 s pass during each epoch, so the deadline falls where the test puts it."
    def __init__(self): self.now = 1000.
    def time(self): return self.now
    def __getattr__(self, name): return getattr(__import__('time'), name)


class Tick(Callback):
    order = 90  # before Deadline (99)
    def __init__(self, clock): self.clock = clock
    def after_epoch(self): self.clock.now += 10.


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(train, 'time', c)
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    train.FITS.clear()
    yield c
    train.FITS.clear()
    os.environ.pop(DEADLINE_ENV, None)  # start_deadline sets it directly: monkeypatch would leave it to the tests that follow


def fit_tiny(path, clock, epochs, deadline=None):
    seed_everything(1)
    learn = make_learner(TinyVAE(), tiny_dls(), weights={'kl': 0.5}, lr=1e-2, path=path, seed=1, quiet=True,
                         cbs=[Tick(clock)], device='cpu', deadline=deadline)
    learn.fit(epochs)
    return learn


def test_deadline_mid_training_stops_after_that_epoch_and_is_recorded(tmp_path, clock):
    learn = fit_tiny(tmp_path, clock, 6, deadline=clock.now + 25)  # passes during the third epoch
    log = pd.read_csv(tmp_path / 'log.csv')
    assert list(log.epoch) == [0, 1, 2]
    assert (tmp_path / 'best.pth').exists()
    best = train.load_checkpoint(tmp_path / 'best.pth')
    assert best['epoch'] == log.valid_loss.idxmin()  # the best of the three epochs is kept and loaded for evaluation
    for k, v in learn.model.state_dict().items(): assert torch.equal(v.cpu(), best['model'][k]), k
    valid_loss = learn.validate()[0]  # the chapter's evaluation
    write_record(tmp_path, dict(epochs=6), dict(valid_loss=valid_loss))
    rec = json.loads((tmp_path / 'record.json').read_text())
    assert (rec['epochs_done'], rec['epochs'], rec['stopped_at_deadline']) == (3, 6, True)
    assert rec['fits'][0]['step'] == 'eager' and rec['metrics']['valid_loss'] == pytest.approx(valid_loss)


def test_deadline_not_reached_runs_every_epoch(tmp_path, clock):
    fit_tiny(tmp_path, clock, 3, deadline=clock.now + 1000)
    assert deadline_fields()['epochs_done'] == 3 and deadline_fields()['stopped_at_deadline'] is False


def test_fit_after_deadline_trains_one_epoch(tmp_path, clock):
    fit_tiny(tmp_path, clock, 4, deadline=clock.now - 1)  # a later model of a chapter whose time is up: still evaluated
    assert deadline_fields() == dict(epochs_done=1, epochs=4, stopped_at_deadline=True, fits=train.FITS)


def test_chapter_deadline_parameter_reaches_learners(tmp_path, clock):
    at = start_deadline(15)  # what a chapter's `deadline` parameter does
    assert at == clock.now + 15
    fit_tiny(tmp_path, clock, 5)  # no deadline= given: the learner reads $CARDIAC_NVAE_DEADLINE
    assert deadline_fields()['epochs_done'] == 2
    assert start_deadline(None) == at  # None keeps the inherited deadline
    with pytest.raises(ValueError, match='deadline must be a positive number of seconds'): start_deadline(-3)


def test_no_deadline_adds_no_record_fields(tmp_path, clock):
    fit_tiny(tmp_path, clock, 1)
    assert deadline_fields() == {}


def test_report_labels_a_cut_run():
    from cardiac_nvae.report import record_rows
    rec = dict(chapter='04_nvae', params=dict(config=3, epochs=100), scale='thesis', epochs=100, epochs_done=37,
               stopped_at_deadline=True, metrics={'dsc': 0.9})
    assert record_rows(rec)[0]['scale'] == 'thesis config, 37/100 epochs'
    assert record_rows({**rec, 'stopped_at_deadline': False})[0]['scale'] == 'thesis'
