#!/usr/bin/env bash
# GPU check, run on a lent GPU machine from the project root (see docs/parity.md, "GPU"):
# assemble onnxruntime-gpu from the carried parts, run the gpu-marked tests, run the benchmark.
# Results go under $OUT (default ./out).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
bash ci/install-ort-gpu.sh
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/env.txt"
# -rs lists skips: a gpu test skipped here means the GPU stack is broken, which must be seen
python3 -m pytest -q -p no:cacheprovider -rs -m gpu tests/parity/test_validate.py tests/export/test_export.py \
  tests/parity/test_locate.py 2>&1 | tee "$OUT/gpu-tests.txt"
python3 bench/gpu_parity.py --out "$OUT/gpu_parity.json" 2>&1 | tee "$OUT/gpu_parity.txt"
