#!/usr/bin/env bash
# The GPU checks, as one short script for a machine with a GPU (a few minutes):
# the device tests, then label-scoring throughput on the GPU. Run from the repo root
# after `make setup`; results go to ${OUT:-gpu-check}/.
set -euo pipefail
out="${OUT:-gpu-check}"
mkdir -p "$out"
py=".venv/bin/python"
"$py" -c "import torch; assert torch.cuda.is_available(), 'no GPU visible to torch'; print(torch.cuda.get_device_name(0))" | tee "$out/gpu.txt"
"$py" -m pytest -q -p no:cacheprovider tests/test_devices.py tests/test_lm.py 2>&1 | tee "$out/tests.txt"
"$py" -m eval.benchmarks.inference --device cuda --prompts 64 --reps 3 --out "$out/bench_inference_cuda.md"
