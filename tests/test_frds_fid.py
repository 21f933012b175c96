"""FID pipeline end to end on a randomly initialised Inception-v3 (weights are never downloaded), and its missing-weights path."""
import numpy as np
import pytest
import torch
from cardiac_nvae.frds import (Encoder, MissingWeightsError, encoder_hash, fid_input, frechet_from_features, frechet_score,
                               frechet_table, inception_encoder, inception_weights_path)

@pytest.fixture(scope='module')
def random_inception():
    torch.manual_seed(0)
    return Encoder(inception_encoder('random'), fid_input, 'inception-v3', batch_size=4)

def test_fid_pipeline_on_random_network(random_inception):
    inc = random_inception
    real, fake = torch.randint(0, 4, (2, 16, 16)), torch.randint(0, 4, (2, 16, 16))
    fr = inc.features(real)
    assert fr.shape == (2, 2048) and torch.isfinite(fr).all()
    v = frechet_score(inc, real, fake, 'FID', real_features=fr, set='noise')
    assert np.isfinite(v.value) and v.value > 0 and v.encoder == inc.hash and (v.n_real, v.n_fake) == (2, 2)
    assert abs(frechet_from_features(fr, fr)) < 1e-9 * fr.pow(2).sum().item()
    assert encoder_hash(inc.net, 'inception-v3|fid_input') == inc.hash
    assert frechet_table([v], index='set').shape == (1, 1)

def test_fid_input_is_299_imagenet_normalised():
    x = fid_input(torch.zeros(1, 8, 8, dtype=torch.long))
    assert x.shape == (1, 3, 299, 299)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]), atol=1e-5)

def test_missing_weights_name_the_file(tmp_path):
    missing = tmp_path / 'inception.pth'
    with pytest.raises(MissingWeightsError, match=str(missing)): inception_weights_path(missing)
    with pytest.raises(MissingWeightsError, match='inception.pth'): inception_encoder(missing)
