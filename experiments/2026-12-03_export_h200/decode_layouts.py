"""GPU probe: batch-1 compiled decode TPOT of LLM shapes under weight layouts (bf16, fused, int4 kernels)."""
import json, os, sys, time, traceback
import torch
from torch import nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM
from sota.models.meta import ARCHS
from sota.models.decoding import StaticDecoder

dev = torch.device("cuda")
OUT = os.environ["OUT"]
res = []

def build(arch):
    a = dict(ARCHS[arch]); cfg = AutoConfig.for_model(a.pop("model_type"), **a)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(dev):
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    return m.eval()

class FusedMLP(nn.Module):
    def __init__(self, mlp):
        super().__init__()
        g, u = mlp.gate_proj, mlp.up_proj
        self.gate_up = nn.Linear(g.in_features, 2 * g.out_features, bias=False, device=dev, dtype=g.weight.dtype)
        self.gate_up.weight.data = torch.cat([g.weight.data, u.weight.data])
        self.down_proj, self.act_fn, self.n = mlp.down_proj, mlp.act_fn, g.out_features
    def forward(self, x):
        gu = self.gate_up(x)
        return self.down_proj(self.act_fn(gu[..., :self.n]) * gu[..., self.n:])

class QKV(nn.Module):
    def __init__(self, attn):
        super().__init__()
        q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
        self.qkv = nn.Linear(q.in_features, q.out_features + k.out_features + v.out_features, bias=False, device=dev, dtype=q.weight.dtype)
        self.qkv.weight.data = torch.cat([q.weight.data, k.weight.data, v.weight.data])
        self.sizes = [q.out_features, k.out_features, v.out_features]
        self.parts = None
class Part(nn.Module):
    def __init__(self, owner, i):
        super().__init__(); self.owner = [owner]; self.i = i
    def forward(self, x):
        o = self.owner[0]
        if self.i == 0:
            o.parts = o.qkv(x).split(o.sizes, -1)
        return o.parts[self.i]

def fuse(m):
    for layer in m.model.layers:
        layer.mlp = FusedMLP(layer.mlp)
        a = layer.self_attn; f = QKV(a); a.qkv_fused = f
        a.q_proj, a.k_proj, a.v_proj = Part(f, 0), Part(f, 1), Part(f, 2)
    torch.cuda.empty_cache()

def linears(m):
    return [(n, mod) for n, mod in m.named_modules() if isinstance(mod, nn.Linear) and "lm_head" not in n]

def setmod(root, name, new):
    parent, _, leaf = name.rpartition("."); setattr(root.get_submodule(parent) if parent else root, leaf, new)

def tinygemm(m, g=128):
    from torchao.quantization import quantize_, Int4WeightOnlyConfig
    quantize_(m, Int4WeightOnlyConfig(group_size=g, int4_packing_format="tile_packed_to_4d"),
              filter_fn=lambda mod, n: isinstance(mod, nn.Linear) and "lm_head" not in n)

def rtn(W, g):
    N, K = W.shape
    g = g if K % g == 0 else 64
    Wg = W.float().view(N, K // g, g); mn = Wg.amin(-1, keepdim=True); mx = Wg.amax(-1, keepdim=True)
    s = ((mx - mn) / 15).clamp(min=1e-8); z = (-mn / s)
    q = (Wg / s + z).round().clamp(0, 15).to(torch.uint8).view(N, K)
    return q, s.view(N, K // g), z.view(N, K // g)

def gemlite_q(m, g=128, packing=None):
    from gemlite.helper import A16Wn
    for n, lin in linears(m):
        q, s, z = rtn(lin.weight.data, g)
        new = A16Wn(device=str(dev), dtype=torch.bfloat16, packing_bitwidth=packing).from_weights(q, s.bfloat16(), z.bfloat16(), 4, q.shape[1] // s.shape[1])
        setmod(m, n, new)
    torch.cuda.empty_cache()

class Packed4(nn.Module):
    def __init__(self, lin, g=128):
        super().__init__()
        q, s, z = rtn(lin.weight.data, g); N, K = q.shape; g = K // s.shape[1]
        self.register_buffer("w", (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous())
        self.register_buffer("s", s.bfloat16()[..., None]); self.register_buffer("zs", (-z * s).bfloat16()[..., None])
        self.N, self.K, self.g = N, K, g
    def forward(self, x):
        w = torch.stack([self.w & 15, self.w >> 4], -1).view(self.N, self.K // self.g, self.g).to(torch.bfloat16)
        return F.linear(x, (w * self.s + self.zs).view(self.N, self.K))

def packed4(m, g=128):
    for n, lin in linears(m):
        setmod(m, n, Packed4(lin, g))
    torch.cuda.empty_cache()

def weight_bytes(m):
    tot = 0
    for n, t in list(m.named_parameters()) + list(m.named_buffers()):
        if "embed_tokens" in n: continue
        tot += t.numel() * t.element_size() if not hasattr(t, "__tensor_flatten__") else sum(
            getattr(t, a).numel() * getattr(t, a).element_size() for a in t.__tensor_flatten__()[0])
    for n, mod in m.named_modules():
        for a in ("W_q", "scales", "zeros"):
            t = getattr(mod, a, None)
            if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter) and a not in dict(mod.named_buffers()):
                tot += t.numel() * t.element_size()
    if m.config.tie_word_embeddings:
        tot += m.model.embed_tokens.weight.numel() * 2
    return tot

def tpot(m, steps=200):
    d = StaticDecoder(m, 1, 32 + steps + 40, graphs=True, compile=True)
    H = m.config.hidden_size
    emb = torch.randn(1, 20, H, device=dev, dtype=torch.bfloat16) * 0.02
    att = torch.ones(1, 20, dtype=torch.long, device=dev)
    with torch.no_grad():
        d.prefill(emb, att)
        for _ in range(5): d.step()
        ts = []
        for rep in range(3):
            d.prefill(emb, att)
            torch.cuda.synchronize(); t0 = time.perf_counter()
            for _ in range(steps): d.step()
            torch.cuda.synchronize(); ts.append((time.perf_counter() - t0) / steps * 1e3)
        try:
            from torch.profiler import ProfilerActivity, profile
            d.prefill(emb, att)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10): d._decode_fn()
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70)
            ev = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
            print("kernels/step", sum(e.count for e in ev) / 10, "gpu ms/step", sum(e.device_time_total for e in ev) / 10 / 1e3)
            print(table, flush=True)
        except Exception as e:
            print("profile failed", e)
    return min(ts), d.note

VARIANTS = {
    "bf16": [], "bf16_fused": [fuse],
    "int4_tinygemm": [tinygemm], "int4_tinygemm_fused": [fuse, tinygemm],
    "int4_gemlite": [gemlite_q], "int4_gemlite_fused": [fuse, gemlite_q],
    "int4_gemlite_p8": [lambda m: gemlite_q(m, packing=8)],
    "int4_inductor": [packed4], "int4_inductor_fused": [fuse, packed4],
}
archs = sys.argv[1].split(","); names = sys.argv[2].split(",")
for arch in archs:
    for name in names:
        torch._dynamo.reset(); torch.cuda.empty_cache()
        t0 = time.time()
        try:
            m = build(arch)
            for f in VARIANTS[name]: f(m)
            wb = weight_bytes(m)
            ms, note = tpot(m)
            r = dict(arch=arch, variant=name, tpot_ms=round(ms, 4), weight_MB=round(wb / 1e6, 1),
                     floor_ms=round(wb / 4.8e12 * 1e3, 4), note=note, wall_s=round(time.time() - t0, 1))
        except Exception as e:
            r = dict(arch=arch, variant=name, error=f"{type(e).__name__}: {str(e)[:300]}", tb=traceback.format_exc()[-1500:])
        print(json.dumps(r), flush=True); res.append(r)
        m = None
        json.dump(res, open(f"{OUT}/probe.json", "w"), indent=1)
