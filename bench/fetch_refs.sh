#!/usr/bin/env bash
# Rebuild refs/ (git-ignored; carried to the GPU machine) with the Python packages of the
# reference implementations that bench/compare.py imports.  Pure Python + Triton: nothing
# is compiled, no CUDA extension is needed (the GPU machine has no internet and no compiler
# for them).  About 7 MB.
#
#   bash bench/fetch_refs.sh                # from bare mirrors under $FRNN_MIRROR
#   FRNN_MIRROR=/path bash bench/fetch_refs.sh
#
# Each mirror is a bare git repository at $FRNN_MIRROR/<owner>+<name>/repo (what the
# session tool `fetch github:<owner>/<name>` leaves under /work/.mirror).  Without one, the
# script clones it (needs network):  git clone --bare https://github.com/<owner>/<name>.
#
# Pinned commits (the newest snapshots on 2026-11-25):
#   fla-org/flash-linear-attention  bc3b101dcb713ddc5bd8924b66754eb68b5ccf89  (fla 0.5.2)
#   state-spaces/mamba              e9594ce1c732d97440f0332fdc43170a2294dbfa  (mamba_ssm 2.x)
#   NX-AI/mlstm_kernels             39d3c61741e5d2c0e6ab8922106dd236632c5139  (mlstm_kernels 2.0.2)
#
# What is taken:
#   refs/fla/fla           the fla package without fla/layers and fla/models (they pull in
#                          transformers; fla/__init__.py skips them when they are missing;
#                          nothing under fla/ops imports them except deltaformer, unused)
#   refs/mamba/mamba_ssm   a skeleton: empty __init__.py and ops/__init__.py (the real ones
#                          import the CUDA extension), ops/triton/ (mamba_chunk_scan_combined),
#                          utils/, and ops/selective_scan_interface.py (its pure-PyTorch
#                          selective_scan_ref; the CUDA extension import there is optional)
#   refs/mlstm/mlstm_kernels  the package without jax/, utils/benchmark/, utils/analysis/
# PYTHONPATH=refs/fla:refs/mamba:refs/mlstm (bench/run_device.sh sets it).  Each also gets
# its LICENSE.  refs/COMMITS records the commits (compare.py copies it into results.json).
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR=${FRNN_MIRROR:-/work/.mirror}
FLA_COMMIT=bc3b101dcb713ddc5bd8924b66754eb68b5ccf89
MAMBA_COMMIT=e9594ce1c732d97440f0332fdc43170a2294dbfa
MLSTM_COMMIT=39d3c61741e5d2c0e6ab8922106dd236632c5139

gitdir() { # owner name -> a bare repository holding the commit
  local d="$MIRROR/$1+$2/repo"
  if [ ! -d "$d" ]; then
    d="$PWD/refs/.git-$2"
    [ -d "$d" ] || git clone --bare --filter=blob:none "https://github.com/$1/$2" "$d" >&2
  fi
  echo "$d"
}

rm -rf refs/fla refs/mamba refs/mlstm
mkdir -p refs/fla refs/mamba refs/mlstm

G=$(gitdir fla-org flash-linear-attention)
git --git-dir="$G" archive "$FLA_COMMIT" fla LICENSE | tar -x -C refs/fla
rm -rf refs/fla/fla/layers refs/fla/fla/models

G=$(gitdir state-spaces mamba)
git --git-dir="$G" archive "$MAMBA_COMMIT" mamba_ssm/ops/triton mamba_ssm/utils \
  mamba_ssm/ops/selective_scan_interface.py LICENSE | tar -x -C refs/mamba
: > refs/mamba/mamba_ssm/__init__.py
: > refs/mamba/mamba_ssm/ops/__init__.py

G=$(gitdir NX-AI mlstm_kernels)
git --git-dir="$G" archive "$MLSTM_COMMIT" mlstm_kernels LICENSE | tar -x -C refs/mlstm
rm -rf refs/mlstm/mlstm_kernels/jax refs/mlstm/mlstm_kernels/utils/benchmark \
  refs/mlstm/mlstm_kernels/utils/analysis

find refs -name __pycache__ -prune -exec rm -rf {} +
cat > refs/COMMITS <<EOF
fla-org/flash-linear-attention $FLA_COMMIT fla/ (no layers/, models/)
state-spaces/mamba $MAMBA_COMMIT mamba_ssm skeleton (ops/triton, utils, ops/selective_scan_interface.py)
NX-AI/mlstm_kernels $MLSTM_COMMIT mlstm_kernels (no jax/, utils/benchmark/, utils/analysis/)
EOF
du -sh refs
