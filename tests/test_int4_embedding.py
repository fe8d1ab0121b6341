"""int4 token tables (quant.parts.embeddings=int4_weight): rows read exactly through the compact layout's
kernel, one table for a tied embedding and lm_head, counted once by the footprint and the planner."""
import pytest
import torch

from sota.compress import int4, quant
from sota.compress.int4_embedding import Int4Embedding, rows
from sota.models.footprint import footprint

from test_int4 import batch  # noqa: F401  (a fixture)
from test_quant import logits, model_of, qcfg


@pytest.mark.parametrize("n,k,group_size", [(100, 96, 32), (37, 64, 32), (200, 576, 64), (4096, 128, 64)])
def test_rows_come_out_exactly_as_the_codes_dequantize(n, k, group_size):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n))
    q, scales, zeros = int4.rtn(w, group_size)
    table = int4.Int4Linear.from_codes(q, scales, zeros, group_size)
    ids = torch.randint(0, n, (3, 11), generator=torch.Generator().manual_seed(k))
    ids[0, :3] = torch.tensor([0, n - 1, n - 1])   # both ends, a repeat
    got = rows(table, ids)
    want = int4.dequantize(q, scales, zeros, group_size)[ids].to(torch.bfloat16)
    assert got.shape == (3, 11, k) and got.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_a_tied_table_becomes_one_int4_table_for_lookup_and_head(batch):
    model, ref, plain = model_of(hidden=64), model_of(hidden=64), model_of(hidden=64)
    llm = model.llm
    assert llm.lm_head.weight is llm.model.embed_tokens.weight   # tiny's table is tied
    quant.quantize(plain, qcfg("bf16"), "cpu")                   # the same, its table kept in float32 (quant.skip)
    cfg = qcfg("bf16", parts={"embeddings": "int4_weight"}, group_size=32)
    problems = []
    quant.validate(cfg, "cpu", problems)
    assert problems == []
    rec = quant.quantize(model, cfg, "cpu")
    emb = llm.get_input_embeddings()
    assert isinstance(emb, Int4Embedding) and llm.get_output_embeddings() is emb.table
    assert any("int4 table" in n for n in rec["notes"]) and any("tied" in n for n in rec["notes"])
    # the table's bytes once: [vocab, 64] codes at two per byte plus a bf16 scale and zero per group of 32
    vocab = emb.num_embeddings
    rows_padded = -(-vocab // 16) * 16
    table_bytes = rows_padded * 64 // 2 + rows_padded * 2 * 2 * 2
    float_table = vocab * 64 * 4
    assert footprint(plain.llm)["weight_bytes"] - footprint(llm)["weight_bytes"] == float_table - table_bytes
    # the model answers as the same model with its table dequantized
    got = logits(model, batch)
    quant.dequantize(llm)
    assert type(llm.get_input_embeddings()) is torch.nn.Embedding
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight      # tied again
    assert torch.allclose(got.float(), logits(model, batch).float(), atol=0.05, rtol=0.05)
    assert not torch.allclose(got.float(), logits(ref, batch).float(), atol=1e-4)   # int4 changed the table


def test_every_part_in_int4_by_gptq_where_calibration_reaches_it(batch):
    from test_mixed import calib

    cfg = qcfg("int4_weight", algorithm="gptq", group_size=32,
               parts={"embeddings": "int4_weight", "connector": "int4_weight", "encoder": "int4_weight"})
    model = model_of(hidden=64)
    rec = quant.quantize(model, cfg, "cpu", calib=calib(model))
    notes = "\n".join(rec["notes"])
    for where in ("llm:", "encoder:", "connector:"):   # the calibration batches run the encoder here
        assert any(n.startswith(where) and "GPTQ" in n for n in rec["notes"]), (where, notes)
    assert "GPTQ over the lm_head's inputs" in notes and "round-to-nearest" not in notes
    left = [f"{part}.{n}" for part in ("encoder", "connector", "llm") for n, m in getattr(model, part).named_modules()
            if type(m) in (torch.nn.Linear, torch.nn.Embedding)]
    # Whisper's positional table is read by slicing, not looked up: it stays a plain table
    assert all("embed_positions" in n for n in left), left
    assert torch.isfinite(logits(model, batch)).all()
    # the table's codes are GPTQ's, not round-to-nearest's
    rtn = model_of(hidden=64)
    quant.quantize(rtn, qcfg("int4_weight", group_size=32, parts={"embeddings": "int4_weight"}), "cpu")
    assert not torch.equal(model.llm.lm_head.qdata, rtn.llm.lm_head.qdata)

    # with cached features the encoder never runs in calibration: it rounds to nearest, and says so
    cached = model_of(hidden=64)
    batches = calib(cached)
    with torch.no_grad():
        batches = [{**{k: v for k, v in b.items() if k != "encoder_inputs"},
                    "features": cached.encode(b["encoder_inputs"])} for b in batches]
    rec = quant.quantize(cached, cfg, "cpu", calib=batches)
    assert any(n.startswith("quant.parts.encoder: int4 by round-to-nearest, not GPTQ") for n in rec["notes"])
    assert any(n.startswith("connector:") and "GPTQ" in n for n in rec["notes"])
    assert all(isinstance(m, int4.Int4Linear) for m in cached.encoder.modules() if type(m).__name__.endswith("Linear"))


def test_an_int4_table_needs_the_compact_layout():
    problems = []
    quant.validate(qcfg("int4_weight", parts={"embeddings": "int4_weight"}, int4_layout="torchao"), "cuda", problems)
    assert any("quant.parts.embeddings=int4_weight" in p and "int4_layout=compact" in p for p in problems)


def test_the_planner_counts_an_int4_table_once(compose_cfg):
    from sota.plan import plan

    over = ["quant=int4_weight", "quant.group_size=64", "quant.int4_layout=compact"]
    int8 = plan(compose_cfg(*over, "quant.parts.embeddings=int8_weight"))
    int4_ = plan(compose_cfg(*over, "quant.parts.embeddings=int4_weight"))

    def table(p, kind):
        return sum(r.bytes for r in p.weights if r.part == "llm" and r.kind == kind)
    assert table(int4_, "int4_weight") > table(int8, "int4_weight")
    assert table(int4_, "int8_weight") == 0 < table(int8, "int8_weight")
    assert int4_.weight_bytes < int8.weight_bytes


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["tinygemm", "triton"])
def test_rows_of_a_cuda_table_come_out_exactly_as_the_codes_dequantize(kernel):
    from sota.compress import int4_triton

    if not torch.cuda.is_available() or (kernel == "triton" and not int4_triton.available()):
        pytest.skip("needs a CUDA device (and Triton)")
    for n, k, group_size in ((49152, 576, 64), (100, 96, 32), (1000, 384, 128)):
        w = torch.randn(n, k, device="cuda")
        q, scales, zeros = int4.rtn(w, group_size)
        table = int4.Int4Linear.from_codes(q, scales, zeros, group_size, kernel=kernel)
        ids = torch.randint(0, n, (2, 37), device="cuda")
        ids[0, :2] = torch.tensor([0, n - 1])
        want = int4.dequantize(q, scales, zeros, group_size)[ids].to(torch.bfloat16)
        assert torch.equal(rows(table, ids), want), (n, k)


def test_a_part_takes_its_own_int4_group_size(compose_cfg, batch):
    from sota.config import validate
    from sota.errors import ConfigError

    cfg = qcfg("int4_weight", group_size=64, parts={"encoder": "int4_weight", "connector": "int4_weight"},
               part_group_size={"encoder": 32})
    model = model_of(hidden=64)
    rec = quant.quantize(model, cfg, "cpu")
    sizes = {part: {m.group_size for m in getattr(model, part).modules() if isinstance(m, int4.Int4Linear)}
             for part in ("encoder", "connector", "llm")}
    assert sizes == {"encoder": {32}, "connector": {64}, "llm": {64}}
    assert any("quant.parts.encoder: int4 in groups of 32" in n for n in rec["notes"])
    assert torch.isfinite(logits(model, batch)).all()
    # checked before anything is built: a size the kernels lack, a part that is not int4, an unknown part
    good = compose_cfg("quant=int4_weight", "quant.group_size=64", "quant.parts.encoder=int4_weight",
                       "quant.part_group_size.encoder=32")
    validate(good)
    for overrides, message in (
            (["quant.part_group_size.encoder=48"], r"quant\.part_group_size\.encoder must be null or one of 32"),
            (["quant.parts.encoder=int8_weight", "quant.part_group_size.encoder=32"],
             r"needs quant\.parts\.encoder=int4_weight \(got int8_weight\)"),
            (["+quant.part_group_size.llm=32"], r"quant\.part_group_size: unknown part 'llm'")):
        with pytest.raises(ConfigError, match=message):
            validate(compose_cfg("quant=int4_weight", "quant.parts.encoder=int4_weight", *overrides))


def test_the_planner_counts_a_part_in_its_own_group_size(compose_cfg):
    from sota.plan import plan

    base = ["model=tiny", "quant=int4_weight", "quant.int4_layout=compact", "quant.group_size=64",
            "quant.parts.encoder=int4_weight"]
    def int4_rows(*overrides):
        return {r.part: r for r in plan(compose_cfg(*base, *overrides), device="cpu").weights
                if r.kind == "int4_weight"}

    coarse, fine = int4_rows(), int4_rows("quant.part_group_size.encoder=32")
    assert fine["llm"] == coarse["llm"] and fine["encoder"].params == coarse["encoder"].params
    n = fine["encoder"].params    # twice the groups, each a bf16 scale and zero (2 + 2 bytes)
    assert fine["encoder"].bytes - coarse["encoder"].bytes == n // 32 * 4 - n // 64 * 4
