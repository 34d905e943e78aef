# Sourced by the device scripts (bench/device_all.sh, bench/device_chunked.sh)
# as `. "$(dirname "$0")/device_setup.sh"`: from the repository root, OUT
# (default bench/out) and FRNN_SOURCE_DIR exported, and the packed binaries
# (devbin/bins.tar.xz, bench/device_pack.sh) unpacked into /tmp/frnn-bin.
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench/out}
export OUT FRNN_SOURCE_DIR=$PWD
mkdir -p "$OUT" /tmp/frnn-bin
tar -xJf devbin/bins.tar.xz -C /tmp/frnn-bin
