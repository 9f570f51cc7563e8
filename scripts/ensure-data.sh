#!/usr/bin/env bash
# Make sure Fashion-MNIST is on disk. As root on Debian it installs the package dataset-fashion-mnist
# (/usr/share/datasets/fashion-mnist); otherwise it says how to point secateurs at a copy.
set -euo pipefail
default=/usr/share/datasets/fashion-mnist
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
have() { local dir=$1; for f in $files; do [ -f "$dir/$f" ] || [ -f "$dir/${f%.gz}" ] || return 1; done; }
if [ -n "${SECATEURS_DATA:-}" ] && have "$SECATEURS_DATA"; then exit 0; fi
if have "$default"; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  have "$default" && exit 0
fi
echo "Fashion-MNIST not found in $default. Install the Debian package dataset-fashion-mnist (as root)," >&2
echo "or put the four IDX files ($files) in a directory and set SECATEURS_DATA=DIR (or pass --data-dir DIR)." >&2
exit 1
