"""Rotary tables by broadcasting (sota.models.rotary): exactly the module's own cos and sin, with no matrix
product, taken only where a CPU probe shows them equal."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sota.models import rotary

from test_quant import model_of


def matmul_forward(self, x, position_ids):
    """transformers 5.17's LlamaRotaryEmbedding.forward: position x frequency as a batched matrix product."""
    inv_freq_expanded = self.inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1).to(dtype=torch.float32, device=x.device)
    freqs = (inv_freq_expanded @ position_ids[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


class Products(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in ("bmm", "mm", "matmul", "baddbmm", "addmm"):
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def rotary_of(model):
    (module,) = rotary._rotary_modules(model.llm)
    return module


def test_a_matmul_rotary_takes_the_broadcast_forward_and_returns_the_same_tables():
    import types

    module = rotary_of(model_of(hidden=64))
    module.forward = types.MethodType(matmul_forward, module)
    x = torch.zeros(2, 5, 64, dtype=torch.bfloat16)
    positions = torch.tensor([[0, 1, 2, 3, 4], [40000, 7, 8, 9, 131070]])
    want = module(x, positions)
    with Products() as before:
        module(x, positions)
    assert before.ops == ["bmm"]
    assert rotary.use_broadcast(module) == 1
    with Products() as after:
        got = module(x, positions)
    assert after.ops == [] and all(torch.equal(a, b) for a, b in zip(got, want))
    assert rotary.use_broadcast(module) == 1            # already taken: nothing changes


def test_every_built_model_uses_it_and_its_logits_do_not_change():
    plain = model_of(hidden=64)       # AudioLLM's constructor already applied it
    module = rotary_of(plain)
    assert module.forward.__func__ is rotary._forward
    ids = torch.randint(0, plain.llm.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = plain.llm(input_ids=ids).logits
        del module.forward                            # the class's own forward again
        assert getattr(module.forward, "__func__", None) is not rotary._forward
        want = plain.llm(input_ids=ids).logits
    assert torch.equal(got, want)


def test_a_rotary_of_another_layout_or_a_dynamic_type_keeps_its_own_forward():
    import types

    module = rotary_of(model_of(hidden=64))

    def interleaved(self, x, position_ids):   # a family that does not duplicate the frequencies
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.stack((freqs, freqs), dim=-1).flatten(-2)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    module.forward = types.MethodType(interleaved, module)
    assert rotary.use_broadcast(module) == 0 and module.forward.__func__ is interleaved
    del module.forward
    module.rope_type = "dynamic"
    assert rotary.use_broadcast(module) == 0
