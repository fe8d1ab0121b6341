#!/bin/bash
# Stage the GPU machine: the wheels the image lacks into /tmp/st/site; env.sh points PYTHONPATH there.
set -e
mkdir -p /tmp/st
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/st/site .stage/s1/wheels/*.whl
cat > /tmp/st/env.sh <<EOT
export PYTHONPATH=$PWD:/tmp/st/site:\$PYTHONPATH PYTHONUNBUFFERED=1
EOT
PYTHONPATH=/tmp/st/site python3 -c "import hydra, omegaconf, jiwer, torchao, bitsandbytes, gguf, soundfile; print('staged', torchao.__version__)"
