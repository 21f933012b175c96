"""The whole-step CUDA graph flag (issue 19) on a CPU: the flag's eager path and the fallback when capture fails leave training unchanged and say which path ran."""
import pandas as pd
import pytest
import torch
from cardiac_nvae.train import make_learner, seed_everything, fused_adam, CudaGraphStep, KLWarmup
from test_train_faults import TinyVAE, tiny_dls


def fit_tiny(path, cuda_graph=False, cbs=()):
    seed_everything(1)
    learn = make_learner(TinyVAE(), tiny_dls(), weights={'kl': 0.5}, lr=1e-2, path=path, seed=1, quiet=True, opt_func=fused_adam,
                         cbs=[KLWarmup(2), *cbs], device='cpu', cuda_graph=cuda_graph)
    learn.fit(2)
    return learn, pd.read_csv(path / 'log.csv')


@pytest.fixture(scope='module')
def eager(tmp_path_factory):
    return fit_tiny(tmp_path_factory.mktemp('eager'))


def test_eager_path_is_recorded(eager):
    learn, log = eager
    assert learn.step_path == 'eager' and learn.speed['step_path'] == 'eager' and len(log) == 2


def test_flag_on_cpu_falls_back_to_the_same_training(tmp_path, eager):
    learn, log = fit_tiny(tmp_path, cuda_graph=True)
    assert learn.step_path == 'eager (cuda_graph fallback: model on cpu)' and learn.speed['step_path'] == learn.step_path
    pd.testing.assert_frame_equal(log, eager[1])


def test_failed_capture_undoes_its_warmup_and_trains_eagerly(tmp_path, eager):
    cb = CudaGraphStep(require_cuda=False)  # tries the capture here: warm-up steps run, then the CPU refuses
    learn, log = fit_tiny(tmp_path, cbs=[cb])
    assert learn.step_path.startswith('eager (cuda_graph fallback: '), learn.step_path
    assert 'model on' not in learn.step_path  # it failed in the capture itself, not in the device check
    pd.testing.assert_frame_equal(log, eager[1])  # warm-up steps, optimiser state and random state were put back
    assert learn._do_one_batch.__func__ is type(learn)._do_one_batch
    assert all(isinstance(g['lr'], float) and not g.get('capturable') for g in learn.opt.opt.param_groups)
