"""Exported models: a run's final model (pruning applied, adapters merged, quantization as configured) as a
directory a fresh process loads without the run, its corpus or its config groups.

    python -m sota.export RUN_DIR OUT            # a finished run's model
    python -m sota.export --config OUT [overrides]   # a configuration's model, untrained (speed and memory studies)
    sota.load(OUT, device)                       # the AudioLLM back

Layout (`layout.py`): `sota.json` (what each part is and how to rebuild it), `llm/` (a transformers model
directory: `from_pretrained` loads it, torchao-quantized weights included; int4 linears in sota's compact layout
sit apart in `int4_compact.safetensors`, which only `sota.load` reads), `encoder/` and `connector/` (safetensors +
their construction arguments), `README.md` (a model card with the run's results)."""

from __future__ import annotations
