"""End-to-end checks of cardiac_nvae.nvae that train: a tiny NVAE must overfit a handful of real ACDC masks."""
import time
import numpy as np
import pytest
import torch

from cardiac_nvae.data import shared_data_root, load_slices, one_hot, MaskDataset
from cardiac_nvae.nvae import NVAE, nvae_config, nvae_learner, fit_nvae

def _tiny_dls(masks, bs):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    ds = MaskDataset(masks)
    return DataLoaders(DataLoader(ds, bs=bs, shuffle=True), DataLoader(ds, bs=bs), device='cpu')

def _dice(pred, true, c):
    p, t = pred == c, true == c
    return float(2 * (p & t).sum() / max(int(p.sum() + t.sum()), 1))

@pytest.fixture(scope='module')
def real_masks():
    root = shared_data_root()
    if root is None: pytest.skip("shared ACDC data (../shared/data) is absent")
    ss = load_slices(root / 'acdc' / 'training')
    full = np.flatnonzero(np.stack([(ss.masks == c).reshape(len(ss), -1).any(1) for c in (1, 2, 3)]).all(0))
    idx = full[np.linspace(0, len(full) - 1, 4).astype(int)]       # 4 masks showing RV, MYO and LV
    return np.ascontiguousarray(ss.masks[idx][:, ::4, ::4])         # 32x32, nearest neighbour

def test_tiny_nvae_overfits_real_masks(real_masks):
    torch.manual_seed(0)
    cfg = nvae_config('default-n', groups_per_layer=(1, 1), latent_layers=(True, True), preprocess_layers=1,
                      size=32, projected_channels=8, expand=3)
    model = NVAE(cfg)
    # a warm-up far longer than the run keeps the KL weight near 0: the test asks about capacity, not the prior
    learn = nvae_learner(model, _tiny_dls(real_masks, 4), warmup_steps=10_000, seed=0, quiet=True, device='cpu')
    t0 = time.time()
    fit_nvae(learn, 120, lr=1e-2, lr_min=1e-3)
    model.eval()
    pred = model.reconstruct(one_hot(torch.as_tensor(real_masks))).argmax(1).numpy()
    dice = [_dice(pred, real_masks, c) for c in (1, 2, 3)]
    assert np.mean(dice) > 0.95, f"dice per class {dice} after {time.time() - t0:.0f}s"
    assert all(torch.isfinite(p).all() for p in model.parameters())

def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return NVAE(nvae_config('default-n', groups_per_layer=(1, 2), latent_layers=(True, True), preprocess_layers=1,
                            size=16, projected_channels=8, expand=2))

def _blob_masks(n=8, size=16, seed=0):
    g = np.random.default_rng(seed)
    return g.integers(0, 4, (n, size // 4, size // 4)).repeat(4, 1).repeat(4, 2).astype(np.uint8)

def test_nan_in_kl_stops_training_before_weights_change():
    from cardiac_nvae.train import NonFiniteLossError
    model = _tiny_model()
    calls = {'n': 0}
    def poison(mod, inp, out):   # the 3rd training batch gets a NaN KL
        calls['n'] += 1
        if calls['n'] == 3: out[1][0, 0] = float('nan')
        return out
    model.register_forward_hook(poison)
    learn = nvae_learner(model, _tiny_dls(_blob_masks(), 2), warmup_steps=4, quiet=True, device='cpu')
    with pytest.raises(NonFiniteLossError, match="'kl'"):
        learn.fit(1)
    assert all(torch.isfinite(p).all() for p in model.parameters()), "a NaN reached the weights"

def test_warmup_drives_kl_weight_and_balancing():
    model = _tiny_model()
    learn = nvae_learner(model, _tiny_dls(_blob_masks(16), 2), warmup_steps=4, quiet=True, device='cpu')
    seen = []
    from fastai.callback.core import Callback
    class Watch(Callback):
        order = 10   # after NVAEWarmup (5)
        def before_batch(self):
            if self.training: seen.append((self.learn.loss_func.weights['kl'], learn.nvae_terms.gamma))
    learn.fit(2, cbs=[Watch()])
    w = [a for a, b in seen]
    assert w[:10] == [1e-4] * 10 and w[-1] == 1.0 and all(x <= y for x, y in zip(w, w[1:])), w
    assert all(a == b for a, b in seen)          # balancing sees the same coefficient as the loss weight
    assert learn.nvae_terms.gamma == 1.0         # after fit: no balancing at evaluation

def test_betas_must_match_latent_layers():
    with pytest.raises(ValueError, match='one per latent layer'):
        nvae_learner(_tiny_model(), _tiny_dls(_blob_masks(), 2), betas=(1., 2., 3.), quiet=True, device='cpu')
