#!/usr/bin/env bash
# Fetch into .whl/ (git-ignored) the wheels gpu_check.sh installs on a GPU machine with no
# network: the dependencies of evolve that its image lacks (Python 3.12, x86-64). Run it
# here, where pip reaches an index; then carry `.whl` with the device run.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(deap==1.4.3 tinydb==4.9.0 platformdirs==4.14.9)
# deap 1.4.3: a cp312 binary wheel needing only numpy (1.4.4 would also need moocore and cffi)
rm -rf .whl && mkdir .whl
PIP_CONSTRAINT= python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -l .whl
