#!/usr/bin/env bash
# One device call (builds nothing; carry devbin): bench/py_overhead.py, where
# a small model's fw+bw through the Python binding spends its time.
set -u
. bench/device_setup.sh
FRNN_LIB=/tmp/frnn-bin/libfrnn.so FRNN_CACHE_DIR=/tmp/fc-py python3 bench/py_overhead.py 2>&1 | grep -v Warn | tail -${TAIL:-30}
