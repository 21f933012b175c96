"""Training-step speed of every model of the compendium: ms/step, masks/s and peak memory, eager fp32 against bf16 and compiled.

One step is what training does per batch: forward, the model's loss (as the chapters weight it), backward and an
optimiser step (Adam, fused on CUDA; NVAE's Adamax, multi-tensor), on synthetic 128x128 masks held on the device.
Models: beta-VAE and InfoVAE-M (thesis widths), NVAE Default-N and LatentSkip-N, U-Net and ACU-Net (U-Net plus the
shape loss through a frozen Default-N; both skipped with a message while `cardiac_nvae.acunet` is missing).
Variants: 'fp32' eager float32; 'bf16' bfloat16 autocast; 'bf16+cl' with channels-last (CUDA); 'compiled'
bf16 (+ channels-last on CUDA) with the model compiled in place by `cardiac_nvae.train.compile_model`
('reduce-overhead', i.e. CUDA graphs, on CUDA; 'default' on CPU, only with --cpu-compile: minutes per model).
Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the rise of the peak resident set of a fresh process
per case above its level after the imports. Then, on every device, a plain 3x3 convolution benchmark (bf16 on CUDA) whose best throughput
is the reference for the U-Net rows' 'conv %': the step's counted FLOPs per second over that throughput.
`--learner` adds whole-Learner steps (fastai callbacks included) of Default-N at batch 8 and the U-Net at batch 32,
plain against every speed flag of `make_learner` with device-resident data.

    python bench/bench_gpu.py                  # CPU rows when no GPU: small batches, a couple of minutes
    python bench/bench_gpu.py --json out.json --learner
"""
import argparse, json, multiprocessing as mp, os, platform, resource, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F

SIZE = 128

def synthetic_masks(n, size=SIZE, seed=0, device='cpu'):
    "Blocky label maps `[n, size, size]` (long): timing needs the shapes, not realistic anatomy."
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n, size // 8, size // 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    return y.to(device)

def acunet_api(quiet=False):
    "`cardiac_nvae.acunet` (U-Net, segmentation terms), or None with the reason printed."
    try:
        import cardiac_nvae.acunet as ac
        ac.UNet, ac.SegmentationTerms  # noqa: B018 (the names the bench needs)
        return ac
    except (ImportError, AttributeError) as e:
        if not quiet: print(f"U-Net/ACU-Net rows skipped: cardiac_nvae.acunet is not available here ({type(e).__name__}: {e})")
        return None

def build(name, device):
    "`(model, loss_fn(pred, y), batch_fn(y) -> x, optimiser)` of model `name` on `device`, set up as its chapter trains it."
    from cardiac_nvae.train import TermsLoss
    from cardiac_nvae.data import one_hot
    fused = {'fused': True} if torch.device(device).type == 'cuda' else {'foreach': True}
    masks_in = lambda y: one_hot(y)
    if name in ('beta-VAE', 'InfoVAE-M'):
        from cardiac_nvae.baselines import MaskVAE, BASELINES, vae_terms
        cfg = BASELINES[name]
        model = MaskVAE(8, kl_qp=cfg['kl_qp']).to(device)
        loss = TermsLoss(vae_terms, {'recon': 1., 'kl': cfg['beta'], 'kl_qp': cfg['gamma']})
        return model, loss, masks_in, torch.optim.Adam(model.parameters(), lr=6e-5, **fused)
    if name in ('Default-N', 'LatentSkip-N'):
        from cardiac_nvae.nvae import NVAE, NVAETerms, nvae_config
        model = NVAE(nvae_config(name.lower())).to(device)
        terms = NVAETerms(model, betas=[10., 9., 8.][:model.config.n_latent_layers])
        terms.gamma = 0.5  # mid warm-up: KL balancing on, the costlier path
        return model, TermsLoss(terms, terms.weights), masks_in, torch.optim.Adamax(model.parameters(), lr=1e-2, eps=1e-3, foreach=True)
    if name in ('U-Net', 'ACU-Net'):
        ac = acunet_api()
        if ac is None: return None
        encoder = None
        if name == 'ACU-Net':
            from cardiac_nvae.nvae import NVAE, nvae_config
            encoder = NVAE(nvae_config('default-n')).to(device)
        model = ac.UNet().to(device)
        terms = ac.SegmentationTerms(encoder)
        images = lambda y: (y.float() / 3 + 0.1 * torch.randn(y.shape, device=y.device))[:, None]
        return model, TermsLoss(terms, terms.weights(1., 1.)), images, torch.optim.Adam(model.parameters(), lr=1e-3, **fused)
    raise ValueError(f"unknown model {name!r}")

VARIANTS = {'fp32': dict(amp=False, cl=False, compile=False), 'bf16': dict(amp=True, cl=False, compile=False),
            'bf16+cl': dict(amp=True, cl=True, compile=False), 'compiled': dict(amp=True, cl=None, compile=True)}

def step_rate(name, bs, variant, steps=5, device='cpu'):
    "ms/step, masks/s and peak memory of training steps of model `name` at batch `bs` under `variant`."
    from cardiac_nvae.train import compile_model
    v = VARIANTS[variant]
    cuda = torch.device(device).type == 'cuda'
    cl = cuda if v['cl'] is None else v['cl']
    torch.manual_seed(0)
    built = build(name, device)
    if built is None: return None
    model, loss_fn, make_x, opt = built
    y = synthetic_masks(bs, device=device)
    x = make_x(y)
    if cl: model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if v['compile']: compile_model(model, 'reduce-overhead' if cuda else 'default')
    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=v['amp']):
            pred = model(x)
        loss = loss_fn(pred, y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(3 if v['compile'] else 2): step()  # warm-up: allocator, kernels, compilation, CUDA-graph recording
    sync(); warmup_s = time.perf_counter() - t0
    if cuda: torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    sync(); dt = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None
    return dict(model=name, bs=bs, variant=variant, step_ms=round(1000 * dt, 2), masks_per_s=round(bs / dt, 1),
                peak_mib=None if peak is None else round(peak, 1), warmup_s=round(warmup_s, 1), _step_s=dt)

def _child(q, args):
    try:
        import cardiac_nvae.train, cardiac_nvae.nvae, cardiac_nvae.baselines  # noqa: F401 (imports are not the case's memory)
        acunet_api(quiet=True)
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res = step_rate(*args)
        if res is not None: res['peak_mib'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start, 1)
        q.put(res)
    except Exception as e: q.put(dict(model=args[0], bs=args[1], variant=args[2], error=f"{type(e).__name__}: {e}"[:160]))

def cpu_case(*args):
    "A CPU case in a fresh process: its peak resident set above the one after imports is the case's own."
    ctx = mp.get_context('spawn'); q = ctx.Queue(); p = ctx.Process(target=_child, args=(q, args)); p.start()
    res = q.get(); p.join()
    return res

def step_flops(name, bs, device):
    "FLOPs of one training step (forward and backward; the optimiser's elementwise work is not counted)."
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    model, loss_fn, make_x, _ = build(name, device)
    y = synthetic_masks(bs, device=device)
    with FlopCounterMode(display=False) as fc:
        loss_fn(model(make_x(y)), y).backward()
    return fc.get_total_flops()

def conv_peak(device, dtype, bs=32, reps=10):
    "Best measured throughput (FLOP/s) of forward 3x3 convolutions at the U-Net's shapes, batch `bs`, channels-last."
    cuda = torch.device(device).type == 'cuda'
    shapes = [(64, 128), (128, 64), (256, 32), (512, 16), (1024, 8)] if cuda else [(64, 32), (128, 16), (256, 8)]
    best, rows = 0., []
    for c, side in shapes:
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, dtype).to(memory_format=torch.channels_last)
        x = torch.randn(bs, c, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        with torch.no_grad():
            for _ in range(3): conv(x)
            sync(); t0 = time.perf_counter()
            for _ in range(reps): conv(x)
            sync(); dt = (time.perf_counter() - t0) / reps
        flops = 2 * bs * c * c * 9 * side * side
        rows.append(dict(channels=c, side=side, tflops=round(flops / dt / 1e12, 3))); best = max(best, flops / dt)
    return best, rows

def learner_rows(device):
    "Whole-Learner steps (fastai callbacks, logging, NaN guard): plain against every speed flag, Default-N bs 8 and U-Net bs 32."
    import numpy as np, pandas as pd
    from cardiac_nvae.data import SliceSet, mask_dataloaders, segmentation_dataloaders
    from cardiac_nvae.nvae import NVAE, nvae_config, nvae_learner
    cuda = torch.device(device).type == 'cuda'
    fast = dict(amp='bf16', channels_last=cuda, nan_check_every=50, compile='reduce-overhead' if cuda else False)
    epochs_steps = 20 if cuda else 3  # CPU: a few small steps, no compilation
    cases = [('Default-N', 8, mask_dataloaders), ('U-Net', 32 if cuda else 4, segmentation_dataloaders)]
    rows = []
    for name, bs, make_dls in cases:
        if name == 'U-Net' and acunet_api() is None: continue
        n = bs * epochs_steps
        m = synthetic_masks(n + bs).numpy().astype(np.uint8)
        ss = lambda a: SliceSet((a / 3).astype(np.float32), a, pd.DataFrame({'patient': range(len(a))}))
        for label, flags, resident in [('plain', dict(amp=False), False), ('all flags', fast, True)]:
            torch.manual_seed(0)
            dls = make_dls(ss(m[:n]), ss(m[n:]), bs=bs, seed=0, device=device, resident=resident)
            if name == 'Default-N':
                learn = nvae_learner(NVAE(nvae_config('default-n')), dls, betas=(10., 9., 8.), warmup_steps=10, quiet=True,
                                     device=device, **flags)
            else:
                from cardiac_nvae.acunet import segmenter_learner
                learn = segmenter_learner(dls, quiet=True, device=device, **flags)
            learn.fit(1)  # warm-up epoch: compilation, CUDA graphs, allocator
            if cuda: torch.cuda.synchronize()
            t0 = time.perf_counter(); learn.fit(1)
            if cuda: torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / (len(dls.train) + len(dls.valid))
            rows.append(dict(model=name, bs=bs, learner=label, step_ms=round(1000 * dt, 2), masks_per_s=round(bs / dt, 1)))
    return rows

def table(rows, title):
    import pandas as pd
    df = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith('_')} for r in rows])
    print(f"\n## {title}\n" + (df.to_string(index=False) if len(df) else '(no rows)'), flush=True)
    return df

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument('--steps', type=int, default=None, help='timed steps per case (default: 20 on CUDA, 2 on CPU)')
    ap.add_argument('--bs', type=int, nargs='*', help='batch sizes (default: 8 32 64 on CUDA, 4 on CPU)')
    ap.add_argument('--models', nargs='*', default=['beta-VAE', 'InfoVAE-M', 'Default-N', 'LatentSkip-N', 'U-Net', 'ACU-Net'])
    ap.add_argument('--variants', nargs='*', help='default: fp32 bf16 bf16+cl compiled on CUDA, fp32 bf16 on CPU')
    ap.add_argument('--cpu-compile', action='store_true', help='also time compiled steps on CPU (minutes of compilation per model)')
    ap.add_argument('--learner', action='store_true', help='also time whole-Learner steps, plain against all flags')
    ap.add_argument('--json', help='write every row and the device to this JSON file')
    a = ap.parse_args(argv)
    device = a.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    cuda = device == 'cuda'
    if cuda: torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    bss = a.bs or ([8, 32, 64] if cuda else [4])
    variants = a.variants or (['fp32', 'bf16', 'bf16+cl', 'compiled'] if cuda else ['fp32', 'bf16'] + (['compiled'] if a.cpu_compile else []))
    steps = a.steps or (20 if cuda else 2)
    rows, out = [], dict(device=name, torch=torch.__version__)
    have_acunet = acunet_api() is not None
    for m in a.models:
        if m in ('U-Net', 'ACU-Net') and not have_acunet: continue
        for bs in bss:
            for v in variants:
                try: res = step_rate(m, bs, v, steps, device) if cuda else cpu_case(m, bs, v, steps, device)
                except Exception as e: res = dict(model=m, bs=bs, variant=v, error=f"{type(e).__name__}: {e}"[:160])
                if res is not None: rows.append(res); print({k: w for k, w in res.items() if not k.startswith('_')}, flush=True)
    if not cuda and 'compiled' not in variants: print("compiled rows skipped on CPU (minutes of compilation per model; --cpu-compile)")
    peak, conv_rows = conv_peak(device, torch.bfloat16 if cuda else torch.float32)
    table(conv_rows, f"Plain 3x3 convolution, batch 32, channels-last, {'bf16' if cuda else 'fp32'} (reference peak {peak / 1e12:.3f} TFLOP/s)")
    flops = {}  # the same for every variant of a model and batch size
    for r in rows:
        if r.get('model') in ('U-Net', 'ACU-Net') and 'error' not in r:
            key = (r['model'], r['bs'])
            if key not in flops: flops[key] = step_flops(*key, device)
            r['conv_pct'] = round(100 * flops[key] / r['_step_s'] / peak, 1)
    out['steps'] = table(rows, f"Training step on {name} ({steps} timed steps; conv % = step FLOP/s over the plain conv peak)").to_dict('records')
    out['conv'], out['conv_peak_tflops'] = conv_rows, peak / 1e12
    if a.learner: out['learner'] = table(learner_rows(device), f"Whole-Learner step on {name}: plain against all speed flags").to_dict('records')
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1, default=str))

if __name__ == '__main__': main()
