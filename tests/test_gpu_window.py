"""The GPU window (issue 19) on a CPU: the plan is a pure function of the measured table and the records in results/; the pack's pieces."""
import json, sys, tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
import gpu_window as gw

H200 = dict(nvae_eager_ms=91., nvae_graph_ms=None, shared_slowdown=1.)


def by_stage(plan): return {e['stage']: e for e in plan}


def test_plan_runs_every_stage_side_by_side_with_acunet_after_the_nvae():
    p = by_stage(gw.plan_window(480, H200))
    assert list(p) == ['frds', 'baselines', 'unet', 'nvae', 'acunet']
    assert [p[s]['after'] for s in ('frds', 'baselines', 'unet', 'nvae')] == [None] * 4 and p['acunet']['after'] == 'nvae'
    assert p['acunet']['seeds'] == [0, 1, 2, 3, 4] and all(not e.get('skip') for e in p.values())
    assert p['nvae']['deadline_s'] + gw.EVAL_S['nvae'] + gw.START_S <= 0.6 * 480 + 1  # ACU-Net keeps the rest
    assert all(0 < e['deadline_s'] < 480 for e in p.values())


def test_plan_uses_the_captured_step_when_it_was_measured():
    eager = by_stage(gw.plan_window(480, H200))['nvae']
    graph = by_stage(gw.plan_window(480, dict(H200, nvae_graph_ms=9.)))['nvae']
    assert eager['projected_epochs'] < 10 and eager['note'].startswith('cut')  # 91 ms/step: 33 minutes for 100 epochs
    assert graph['projected_epochs'] > 5 * eager['projected_epochs']
    long = by_stage(gw.plan_window(3000, dict(H200, nvae_graph_ms=9.)))['nvae']
    assert long['projected_epochs'] == 100 and long['note'] == 'full'


def test_plan_slows_down_with_the_measured_sharing():
    alone = by_stage(gw.plan_window(480, dict(H200, nvae_graph_ms=9.)))['unet']['projected_epochs']
    shared = by_stage(gw.plan_window(480, dict(H200, nvae_graph_ms=9., shared_slowdown=2.)))['unet']['projected_epochs']
    assert shared < alone


def test_plan_skips_finished_and_continues_cut_stages():
    p = by_stage(gw.plan_window(480, dict(H200, nvae_graph_ms=9.), done={'frds': 200, 'baselines': 10, 'unet': 100}))
    assert p['frds']['skip'] and 'finished record' in p['frds']['note']
    assert not p['baselines'].get('skip') and 'continues results/ 10/50' in p['baselines']['note']
    assert p['unet']['skip']
    # results/ keeps no weights: a finished NVAE is trained again while ACU-Net still needs one
    p2 = by_stage(gw.plan_window(480, H200, done={'nvae': 100}))
    assert not p2['nvae'].get('skip') and 'rerun for ACU-Net' in p2['nvae']['note']
    p3 = by_stage(gw.plan_window(480, H200, done={'nvae': 100, 'acunet': 100}))
    assert p3['nvae']['skip'] and p3['acunet']['skip']


def test_results_done_reads_window_records(tmp_path):
    def run(name, stage, rec, toy=False):
        d = tmp_path / name; d.mkdir()
        (d / 'window.json').write_text(json.dumps(dict(stage=stage, epochs=100, toy=toy)))
        (d / 'record.json').write_text(json.dumps(rec))
    run('a', 'nvae', dict(status='done', stopped_at_deadline=True, epochs_done=37, epochs=100))
    run('b', 'unet', dict(status='done'))
    run('c', 'frds', dict(status='done'), toy=True)     # a rehearsal never counts
    run('d', 'acunet', dict(status='failed'))
    assert gw.results_done(tmp_path) == {'nvae': 37, 'unet': 100}


def test_missing_dists_leaves_out_what_the_device_has():
    have = {'torch', 'numpy', 'pyyaml', 'typing-extensions'}
    need = {'torch': '2.14', 'fastai': '2.8.7', 'PyYAML': '6', 'typing_extensions': '4', 'nvidia-cublas-cu13': '1', 'boto3': '1',
            'cardiac-nvae': '0.1'}
    assert gw.missing_dists(need, have) == ['fastai==2.8.7']
    assert 'fastai' not in gw.device_has() and 'torch' in gw.device_has() and 'scikit-image' in gw.device_has()


def test_stage_speed_turns_the_graph_on_only_where_it_won():
    assert gw.stage_speed('nvae', dict(nvae_eager_ms=91., nvae_graph_ms=9.)) == dict(nan_check_every=50, cuda_graph=True)
    assert 'cuda_graph' not in gw.stage_speed('unet', dict(nvae_eager_ms=91., nvae_graph_ms=9.))
    assert 'cuda_graph' not in gw.stage_speed('nvae', dict(nvae_eager_ms=91., nvae_graph_ms=None))


def test_packed_slices_are_read_without_the_raw_files(tmp_path, monkeypatch):
    from cardiac_nvae.data import SliceSet, pack_slices, load_slices, packed_name
    from cardiac_nvae.records import data_fingerprint
    import cardiac_nvae.data as data, pandas as pd
    rng = np.random.default_rng(0)
    ss = SliceSet(rng.random((5, 8, 8), dtype=np.float32), rng.integers(0, 4, (5, 8, 8)).astype(np.uint8),
                  pd.DataFrame({'patient': list('aabbc'), 'slice': range(5)}), 2)
    monkeypatch.setattr(data, 'load_slices', lambda *a, **k: ss)  # the raw preprocessing is 00_data's own test
    f = pack_slices('unused', tmp_path / 'acdc' / 'training', size=8)
    monkeypatch.undo()
    assert f.name == packed_name(size=8) == 'acdc-8-4-heart.slices.npz'
    back = load_slices(tmp_path / 'acdc' / 'training', size=8)
    assert np.array_equal(back.images, ss.images) and np.array_equal(back.masks, ss.masks) and back.dropped == 2
    assert list(back.meta.patient) == list('aabbc')
    assert data_fingerprint(tmp_path) != data_fingerprint(tmp_path / 'nothing')  # a packed root has a fingerprint
    with pytest.raises(Exception): load_slices(tmp_path / 'acdc' / 'training', size=16, use_cache=False)  # other parameters: not it


def test_archive_keeps_records_not_weights(tmp_path):
    w = tmp_path / 'work'; (w / 'runs' / 'r').mkdir(parents=True)
    (w / 'runs' / 'r' / 'record.json').write_text('{}'); (w / 'runs' / 'r' / 'best.pth').write_bytes(b'x')
    gw.archive(w, tmp_path)
    with tarfile.open(tmp_path / 'gpu_window.tgz') as t: assert t.getnames() == ['runs/r/record.json']


def test_archive_survives_files_rewritten_while_it_runs(tmp_path):
    import threading
    work, out = tmp_path / 'work', tmp_path / 'out'; (work / 'runs' / 'r').mkdir(parents=True); out.mkdir()
    log = work / 'runs' / 'r' / 'log.csv'
    stop = threading.Event()
    def rewrite():  # a running stage: the file shrinks and grows while the archive reads it
        while not stop.is_set():
            log.write_text('x' * 2_000_000); log.write_text('')
    t = threading.Thread(target=rewrite); t.start()
    try:
        for _ in range(60): gw.archive(work, out)
    finally: stop.set(); t.join()
    with tarfile.open(out / 'gpu_window.tgz') as tar:
        m = tar.getmember('runs/r/log.csv'); assert 0 <= m.size <= 2_000_000  # a snapshot, maybe mid-write
        assert len(tar.extractfile(m).read()) == m.size
