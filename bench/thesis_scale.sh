#!/usr/bin/env bash
# Thesis-scale runs on one GPU (issue 15): the speed bench, then each chapter's THESIS_PARAMS through
# `cardiac-nvae run` (bench/thesis_scale.py), records/logs/figure arrays (no weights) under results/ with the device named.
#
# On a machine with the project's packages and the data:
#   bench/thesis_scale.sh run [stages...]      # stages: frds nvae unet (default all); extra args go to thesis_scale.py
#
# For a lent device machine (bare: python 3.12 and torch, no fastai/papermill; ../shared/data does not travel,
# and one call carries at most 64 MiB), prepare here, once:
#   bench/thesis_scale.sh pack                 # .thesis/: wheels of what the chapters import, ACDC in 30 MiB parts
#                                              (not run yet: it downloads some 80 wheels; check their total size)
# then on the device, each call with carry ['.thesis'] (the data parts go one call each, while the machine is warm):
#   bench/thesis_scale.sh unpack 0             # call 1: wheels and part 0 into /tmp/thesis (kept while warm)
#   bench/thesis_scale.sh unpack 1 ...         # one call per remaining part (pack prints how many)
#   bench/thesis_scale.sh device [stages...]   # last call: bench table and runs, all outputs in $OUT/thesis_results.tgz
# Time: at 91 ms/step (measured before issue 15) Default-N's 100 epochs of 214 steps take 33 minutes, more than
# one 10-minute call; measure the speed first (bench rows), then run the stages that fit.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=/tmp/thesis

case "${1:-run}" in
  pack)
    mkdir -p .thesis/whl .thesis/data
    grep -qx '.thesis/' .gitignore || echo '.thesis/' >> .git/info/exclude
    # the distributions the chapters import here (torch, numpy and CUDA libraries are on the device already)
    python3 - > .thesis/requirements.txt <<'PY'
import sys, warnings, importlib, importlib.metadata as md
warnings.filterwarnings('ignore')
for m in ('cardiac_nvae.train', 'cardiac_nvae.nvae', 'cardiac_nvae.baselines', 'cardiac_nvae.frds', 'cardiac_nvae.acunet',
          'cardiac_nvae.cli', 'papermill', 'nbclient', 'ipykernel.kernelapp', 'nibabel', 'yaml'):
    try: importlib.import_module(m)
    except ImportError: pass
dists, skip = md.packages_distributions(), {'torch', 'numpy', 'triton', 'cardiac-nvae', 'cardiac_nvae', 'pip', 'setuptools', 'wheel'}
reqs = {f"{d}=={md.version(d)}" for m in list(sys.modules) for d in dists.get(m.split('.')[0], [])
        if d.lower() not in skip and not d.lower().startswith(('nvidia', 'cuda'))}
print('\n'.join(sorted(reqs)))
PY
    while read -r req; do  # one at a time: a version without a cp312 wheel falls back to the newest that has one
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .thesis/whl "$req" || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .thesis/whl "${req%%==*}" \
        || echo "no wheel for $req"
    done < .thesis/requirements.txt
    data=${CARDIAC_NVAE_DATA:-../shared/data}
    tar -C "$data" -cf - acdc | split -b 30M -d - .thesis/data/acdc.tar.
    du -sh .thesis/whl; ls .thesis/data; echo "parts: $(ls .thesis/data | wc -l) (one 'unpack N' call each)";;
  unpack)
    mkdir -p $STAGE/data
    # install only the distributions this machine lacks (its own torch, numpy, scipy... stay)
    [ -d $STAGE/site ] || python3 - <<'PY'
import importlib.metadata as md, pathlib, subprocess, sys
missing = []
for w in sorted(pathlib.Path('.thesis/whl').glob('*.whl')):
    try: md.version(w.name.split('-')[0])
    except md.PackageNotFoundError: missing.append(str(w))
print(f"installing {len(missing)} missing distributions")
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--no-compile',
                       '--target', '/tmp/thesis/site', *missing])
PY
    cp .thesis/data/acdc.tar."$(printf %02d "$2")" $STAGE/data/ && ls $STAGE/data;;
  device)
    shift
    export PYTHONPATH=$STAGE/site:$PWD CARDIAC_NVAE_DATA=$STAGE/data CARDIAC_NVAE_CACHE=$STAGE/cache PYTHONUNBUFFERED=1
    [ -d $STAGE/data/acdc ] || (cd $STAGE/data && cat acdc.tar.* | tar -xf -)
    python3 -c "import cardiac_nvae.train, papermill, nibabel" || { echo "packages missing: run 'unpack' first"; exit 1; }
    python3 -m ipykernel install --user --name python3 >/dev/null
    mkdir -p $STAGE/results
    # $OUT takes at most 8 files: everything goes back as one archive, unpacked here with `tar -xzf thesis_results.tgz`
    trap 'tar -C $STAGE -czf "${OUT:-.}/thesis_results.tgz" results' EXIT
    python3 bench/bench_gpu.py --learner --json $STAGE/results/bench_gpu.json | tee $STAGE/results/bench_gpu.txt
    python3 bench/thesis_scale.py "$@" --runs-dir $STAGE/runs --results-dir $STAGE/results/results;;
  run)
    shift || true
    python3 bench/thesis_scale.py "$@";;
  *) echo "usage: $0 pack | unpack N | device [stages] | run [stages]"; exit 2;;
esac
