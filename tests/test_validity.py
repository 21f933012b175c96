"""Validity checker paths a notebook cannot exercise: the worker-process pool (its functions must be importable),
the torch-free import of validity and metrics, and the pool on the real ACDC masks."""
import subprocess, sys
import numpy as np
import pytest

from cardiac_nvae.data import load_slices, shared_data_root
from cardiac_nvae.validity import (DEFINITIONS, anatomical_errors, damaged_masks, hand_masks, is_valid,
                                   percent_valid, reference_errors)

@pytest.fixture(scope='module')
def damaged():
    cases, _ = hand_masks()
    return damaged_masks(cases, 300, seed=7)

@pytest.mark.parametrize('definition', DEFINITIONS)
def test_worker_pool_gives_the_reference_verdicts(damaged, definition):
    ref = reference_errors(damaged, definition)
    assert ref.any(axis=1).sum() > 50, 'the damaged set should hold many invalid masks'
    assert anatomical_errors(damaged, definition, chunk=40, workers=2).equals(ref)
    assert anatomical_errors(damaged, definition, chunk=1000, workers=2).equals(ref)   # one chunk: no pool

def test_verdicts_do_not_depend_on_chunking(damaged):
    tables = [anatomical_errors(damaged, chunk=c, workers=1) for c in (1, 7, 128, 500)]
    assert all(t.equals(tables[0]) for t in tables[1:])

def test_inputs_are_checked_and_lists_accepted():
    cases, _ = hand_masks()
    assert (is_valid(list(cases[:3])) == is_valid(cases[:3])).all()
    assert percent_valid(np.zeros((4, 16, 16), np.uint8)) == 100.0
    assert np.isnan(percent_valid(np.zeros((0, 16, 16), np.uint8)))
    with pytest.raises(ValueError, match='masks: label values outside'): anatomical_errors(np.full((1, 4, 4), 7))
    with pytest.raises(ValueError, match="definition: expected one of"): anatomical_errors(cases, 'painchaud')

def test_validity_and_metrics_do_not_import_torch():
    code = "import sys, cardiac_nvae.validity, cardiac_nvae.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == 'False'

def test_pool_on_the_real_acdc_masks():
    root = shared_data_root()
    if root is None: pytest.skip('real ACDC data (../shared/data) is not present')
    masks = load_slices(root / 'acdc' / 'training').masks
    assert anatomical_errors(masks, workers=2).equals(reference_errors(masks))
