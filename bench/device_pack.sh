#!/usr/bin/env bash
# Pack what the GPU machine runs (it builds nothing and has no LLVM):
# stripped, statically linked binaries compressed into devbin/bins.tar.xz,
# plus the examples.  Run here after building into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf devbin/stage && mkdir -p devbin/stage
for b in "$@"; do strip -o "devbin/stage/$b" "build/$b"; done
tar -C devbin/stage -cJf devbin/bins.tar.xz .
rm -rf devbin/stage
ls -la devbin/bins.tar.xz
