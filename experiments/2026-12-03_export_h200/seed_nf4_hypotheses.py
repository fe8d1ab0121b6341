"""Predicted official peak of the seed table's rows under hypotheses of how the seed's loader kept each part.

sota.plan builds each configuration on the meta device (no GPU, no weights). What the planner cannot express is
added by hand from parameter counts, and each such term is printed with its arithmetic:
- BEATs iter3 (fine-tuned on AS2M) in float32 in place of the HuBERT-base stand-in, and its activations on the
  10 s protocol clip in place of HuBERT's first convolution over the 30 s padded waveform;
- Whisper's eager attention at 30 s under float16 autocast (the hackathon's Whisper copy has no SDPA path);
- an untied lm_head;
- float16 autocast's cache of the trainable float32 connector weights (Q-Former, projection) during the connector
  stage (the seed keeps them requires_grad=True, and autocast caches casts of such leaves until it exits);
- the load-time transient of transformers 4.47.1's resize_token_embeddings (mean_resizing) on the GPU.
Figures are MiB (2**20 bytes), the unit of max_memory_allocated() / 1024**2. Predicted, not measured.

Run: .venv/bin/python experiments/2026-12-03_export_h200/seed_nf4_hypotheses.py
"""

from __future__ import annotations

import sys

from sota.compose import compose
from sota.plan import plan

MB = 2 ** 20
HUB = ["encoder.second.path=null", "+encoder.second.config={model_type:hubert,hidden_size:768,num_hidden_layers:12,"
       "num_attention_heads:12,intermediate_size:3072}"]
# row: (the error table's overrides for it, the seed's published MB)
ROWS = {
    "1b_nf4": (["experiment=sota_1b_4bit", "llm=shape_only", "llm.arch=meta-llama/Llama-3.2-1B-Instruct"], 4095),
    "3b": (["experiment=salmonn_3b_baseline", "llm=shape_only", "llm.arch=meta-llama/Llama-3.2-3B-Instruct"], 9176),
    "7b": (["experiment=salmonn_7b", "llm=shape_only", "llm.arch=lmsys/vicuna-7b-v1.5"], 15750),
}
COMMON = [*HUB, "measure=official", "measure.from_export=true", "trainer=gpu"]
# The seed's loader as its code reads (audiolm-evaluator/audiolm-trainer/models/salmonn.py, transformers 4.47.1,
# peft 0.4.0): Whisper from_pretrained without torch_dtype (float32); LLM's non-quantized parts float16 (the
# bitsandbytes quantizer's default; plain float16 for the 3B/7B rows); PEFT's default LoRA targets for Llama
# (q_proj, v_proj), unmerged, float32; no trimming of Whisper's 30 s padding (88 audio tokens); prefill + 1 step.
SEED_LOADER = ["encoder.dtype=float32", "llm.dtype=float16", "lora.targets=[q_proj,v_proj]", "lora.merge=false",
               "connector.trim_padding=false", "measure.max_new_tokens=1"]


def beats_params() -> tuple[int, list[str]]:
    """BEATs iter3 fine-tuned on AS2M (bytedance/SALMONN beats/BEATs.py, beats/backbone.py; the checkpoint's cfg:
    patch 16, embed_dim 512, 12 layers of 768 / 3072 / 12 heads, conv_pos 128 in 16 groups, relative position
    bias (320 buckets), gated relative position (gru_rel_pos), predictor over 527 classes)."""
    d, ffn, heads, layers = 768, 3072, 12, 12
    terms = {
        "patch_embedding Conv2d(1, 512, 16, 16, bias=False)": 512 * 16 * 16,
        "layer_norm(512)": 2 * 512,
        "post_extract_proj Linear(512, 768)": 512 * d + d,
        "pos_conv Conv1d(768, 768, 128, groups=16), weight_norm(dim=2): v + g + bias": d * (d // 16) * 128 + 128 + d,
        "encoder.layer_norm(768)": 2 * d,
        f"{layers} layers x (q,k,v,out 4x(768^2+768) + fc1 + fc2 + 2 LayerNorms + grep_linear(64,8) + grep_a(12))":
            layers * (4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d + (64 * 8 + 8) + heads),
        "relative_attention_bias Embedding(320, 12), shared": 320 * heads,
        "predictor Linear(768, 527)": d * 527 + 527,
    }
    return sum(terms.values()), [f"{v:>12,}  {k}" for k, v in terms.items()]


BEATS_PARAMS, BEATS_TERMS = beats_params()
# torch.nn.utils.weight_norm's pre-hook stores the recomputed pos_conv weight as a plain attribute: on the GPU after
# the first forward, float32.
BEATS_POS_CONV_WEIGHT = 768 * (768 // 16) * 128 * 4
BEATS_BYTES = BEATS_PARAMS * 4 + BEATS_POS_CONV_WEIGHT
# BEATs on the 10 s clip: 998 kaldi frames -> 62 x 8 = 496 patches; its largest tensors are [12, 496, 496]
# (position bias, scores, probabilities): 4 x 12 x 496^2 x 4 B bounds the stage.
BEATS_STAGE = 4 * 12 * 496 * 496 * 4


def whisper_eager_stage(heads: int = 20, positions: int = 1500, d: int = 1280) -> int:
    """One eager self-attention at 30 s under float16 autocast: float16 scores and their float32 softmax alive
    together (softmax runs in float32 under autocast), q/k/v and the attention output in float16, the residual
    and its LayerNorm output in float32."""
    return heads * positions ** 2 * (2 + 4) + 4 * positions * d * 2 + 2 * positions * d * 4


def resize_transient(p, vocab: int = 128256, hidden: int = 2048) -> int:
    """transformers 4.47.1 resize_token_embeddings(len(tokenizer)) after '[PAD]' is added (vocab + 1), with the LLM
    already on the GPU (the bitsandbytes quantizer sets device_map={'': current_device} when none is given): the
    4-bit layers and norms, the old float16 table, the new one (vocab + 1 rows), the table's float32 copy and its
    centred float32 copy (_init_added_embeddings_weights_with_mean), and three 2048^2 float32 matrices (covariance,
    its scaled copy, a Cholesky factor)."""
    nf4 = sum(r["bytes"] for r in p["weights"] if r["part"] == "llm" and r["kind"] == "nf4")
    norms = 33 * hidden * 2
    return nf4 + norms + vocab * hidden * 2 + (vocab + 1) * hidden * 2 + 2 * vocab * hidden * 4 + 3 * hidden ** 2 * 4


def predict(row: str, extra: list[str], *, beats: bool, eager: bool = False, lm_head_bytes: int = 0,
            transient: bool = False) -> dict:
    """`beats`: the seed's audio side (BEATs in place of the stand-in, float16 autocast over the encoders and the
    connector); `eager`: Whisper's eager attention; `lm_head_bytes`: an untied head; `transient`: the LLM loaded
    and resized on the GPU before the rest (the bitsandbytes path)."""
    overrides, _ = ROWS[row]
    p = plan(compose([*overrides, *COMMON, *extra]), "cuda").to_dict()
    weights = p["weight_bytes"]
    stages = {s["name"]: s["bytes"] for s in p["stages"]}
    kv = stages.pop("kv cache")
    if beats:
        weights += BEATS_BYTES - sum(r["bytes"] for r in p["weights"] if r["part"] == "second")
        stages["second encoder"] = BEATS_STAGE
        stages["connector"] += 2 * sum(r["params"] for r in p["weights"] if r["part"] == "connector")
    if eager:
        stages["encoder"] = whisper_eager_stage()
    weights += lm_head_bytes
    steady = weights + max(stages.values()) + kv + p["workspace_bytes"]
    load = resize_transient(p) if transient else 0
    widest = max(stages, key=stages.get)
    return {"planner": p["peak_memory_mb"], "weights": weights / MB, "widest": widest, "stage": stages[widest] / MB,
            "steady": steady / MB, "load": load / MB, "peak": max(steady, load) / MB}


def main() -> None:
    print(f"BEATs iter3 parameters: {BEATS_PARAMS:,}")
    print("\n".join(BEATS_TERMS))
    print(f"BEATs on the GPU: {BEATS_PARAMS:,} x 4 B + pos_conv weight {BEATS_POS_CONV_WEIGHT:,} B = "
          f"{BEATS_BYTES / MB:.1f} MiB; its 10 s stage <= {BEATS_STAGE / MB:.1f} MiB")
    print(f"Whisper eager attention at 30 s, float16 autocast: {whisper_eager_stage() / MB:.1f} MiB")
    tab = {"lm_head_fp16": 128257 * 2048 * 2, "lm_head_fp32": 128256 * 2048 * 4}
    hyps = [
        ("1b_nf4", "export as measured: Whisper fp16, HuBERT stand-in fp32 (30 s), Q-Former fp32, LLM table bf16 tied",
         [], dict(beats=False)),
        ("1b_nf4", "export + LLM table and norms fp32", ["llm.dtype=float32"], dict(beats=False)),
        ("1b_nf4", "export + LLM table and norms fp32 + untied fp32 lm_head", ["llm.dtype=float32"],
         dict(beats=False, lm_head_bytes=tab["lm_head_fp32"])),
        ("1b_nf4", "export + Whisper fp32", ["encoder.dtype=float32"], dict(beats=False)),
        ("1b_nf4", "seed loader, but Whisper fp16; BEATs fp32 (10 s); SDPA Whisper",
         [*SEED_LOADER, "encoder.dtype=float16"], dict(beats=True, transient=True)),
        ("1b_nf4", "seed loader, but Whisper fp16; eager Whisper", [*SEED_LOADER, "encoder.dtype=float16"],
         dict(beats=True, eager=True, transient=True)),
        ("1b_nf4", "seed loader: Whisper fp32, BEATs fp32 (10 s), Q-Former fp32, table fp16 tied; SDPA Whisper",
         SEED_LOADER, dict(beats=True, transient=True)),
        ("1b_nf4", "seed loader as above; eager Whisper (the hackathon's copy)", SEED_LOADER,
         dict(beats=True, eager=True, transient=True)),
        ("1b_nf4", "seed loader, eager Whisper + LLM table and norms fp32", [*SEED_LOADER, "llm.dtype=float32"],
         dict(beats=True, eager=True, transient=True)),
        ("1b_nf4", "seed loader, SDPA Whisper + LLM table and norms fp32", [*SEED_LOADER, "llm.dtype=float32"],
         dict(beats=True, transient=True)),
        ("1b_nf4", "seed loader, eager Whisper + untied fp16 lm_head", SEED_LOADER,
         dict(beats=True, eager=True, transient=True, lm_head_bytes=tab["lm_head_fp16"])),
        ("3b", "3B export as measured", [], dict(beats=False)),
        ("3b", "3B seed loader (LLM fp16), SDPA Whisper", SEED_LOADER, dict(beats=True)),
        ("3b", "3B seed loader (LLM fp16), eager Whisper", SEED_LOADER, dict(beats=True, eager=True)),
        ("7b", "7B export as measured", [], dict(beats=False)),
        ("7b", "7B seed loader (LLM fp16), SDPA Whisper", SEED_LOADER, dict(beats=True)),
        ("7b", "7B seed loader (LLM fp16), eager Whisper", SEED_LOADER, dict(beats=True, eager=True)),
    ]
    print("\n| row | hypothesis | planner MiB | weights MiB | widest stage (MiB) | steady MiB | load transient MiB "
          "| predicted MiB | vs seed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row, label, extra, kw in hyps:
        r = predict(row, extra, **kw)
        seed = ROWS[row][1]
        print(f"| {row} | {label} | {r['planner']:.0f} | {r['weights']:.0f} | {r['widest']} ({r['stage']:.0f}) | "
              f"{r['steady']:.0f} | {r['load']:.0f} | {r['peak']:.0f} | {100 * (r['peak'] / seed - 1):+.1f} % |",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
