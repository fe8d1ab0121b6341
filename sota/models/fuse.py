"""Fused projections for batch-1 decoding: one matrix product for q, k and v, one for gate and up.

At batch 1 each projection is a matrix-vector product that streams its weights once. Small products (k and
v are a third of q or less on grouped-query models) stay below the bandwidth a large one reaches, and each is
one more kernel. Concatenating the weights along the output dimension reads the same bytes in fewer, larger
kernels. Measured on an H200 (Llama-3.2-3B shape, batch 1, `compiled` backend, one process per variant):
torchao int4 2.27 -> 1.98 ms per token, bf16 3.33 -> 3.22 ms (experiments/2026-12-03_export_h200).

transformers' attention and MLP forwards call `q_proj`, `k_proj`, `v_proj` (and `gate_proj`, `up_proj`) in
that order on the same input, whatever the model family. So the modules keep their names: the first of a
group computes the fused product and keeps the slices, the others hand theirs back; a part called on another
input (a forward that does not follow that order) computes its own rows of the fused weight instead.

Weights are concatenated as they are: float tensors with `torch.cat`, torchao's int8 and int4 (tinygemm) tensors
through their flattened inner tensors (`ROW_DIMS` says where each keeps its output rows), compact int4 layers
(`Int4Linear.stacked`) by stacking their codes, scales and zeros and packing them once, so a
quantized model is fused without a float copy. `unfuse` slices the rows back (torchao implements slicing for
both; compact codes are read back exactly and packed per member), so what is exported or saved has
transformers' own layout.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

GROUPS: dict[str, tuple[str, ...]] = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("gate_proj", "up_proj")}
# torchao tensor subclass -> the dimension of each inner tensor that holds the weight's output rows.
ROW_DIMS: dict[str, dict[str, int]] = {
    "Int8Tensor": {"qdata": 0, "scale": 0, "zero_point": 0},                 # per-row scale and zero point
    "Int4TilePackedTo4dTensor": {"qdata": 0, "scale_and_zero": 1},   # qdata [n/8, ...]; scale_and_zero [k/g, n, 2]
}


class Unfusable(ValueError):
    """These weights cannot be concatenated (a layout without a known row dimension, or rows padded)."""


class FusedLinear(nn.Module):
    """The concatenated projection of one group; `parts` are the output widths of its members, in order."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, parts: list[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.parts = parts
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()

    def compute(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._input = x
        self._outputs = self._product(x).split(self.parts, dim=-1)
        return self._outputs

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def rows(self, i: int) -> tuple[int, int]:
        start = sum(self.parts[:i])
        return start, start + self.parts[i]

    def part(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Member `i`'s output for an input the group did not compute: its own rows of the fused weight."""
        start, stop = self.rows(i)
        bias = None if self.bias is None else self.bias[start:stop]
        return nn.functional.linear(x, self.weight[start:stop], bias)

    def member(self, i: int) -> nn.Module:
        """Member `i` as a layer of its own again: a plain linear holding its rows (`_rows`)."""
        start, stop = self.rows(i)
        lin = nn.Linear(self.weight.shape[1], stop - start, bias=self.bias is not None, device="meta")
        lin.weight = nn.Parameter(_rows(self.weight, start, stop), requires_grad=False)
        if self.bias is not None:
            lin.bias = nn.Parameter(_rows(self.bias, start, stop), requires_grad=False)
        return lin

    def extra_repr(self) -> str:
        return f"parts={self.parts}"


class FusedStack(FusedLinear):
    """A fused group of layers whose type stacks them itself (`stacked`, `rows`, `stack_key`: compact int4's
    `Int4Linear`, which stacks codes, scales and zeros and packs them once): the group is one layer call."""

    def __init__(self, members: list[nn.Module]) -> None:
        nn.Module.__init__(self)
        self.layer = type(members[0]).stacked(members)
        self.weight, self.bias = None, None
        self.parts = [m.out_features for m in members]
        self._input, self._outputs = None, ()

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def part(self, x: torch.Tensor, i: int) -> torch.Tensor:
        start, stop = self.rows(i)
        return self.layer(x)[..., start:stop]

    def member(self, i: int) -> nn.Module:
        return self.layer.rows(*self.rows(i))


class FusedPart(nn.Module):
    """Member `index` of a fused group, under its old name: the first computes the group, the others read."""

    def __init__(self, owner: FusedLinear, index: int) -> None:
        super().__init__()
        self.__dict__["owner"] = owner   # not a submodule: the owner is registered once, beside the parts
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        owner = self.owner
        if self.index == 0:
            return owner.compute(x)[0]
        if owner._input is x:
            out = owner._outputs[self.index]
            if self.index == len(owner.parts) - 1:   # the group is done: do not keep its activations
                owner._input, owner._outputs = None, ()
            return out
        return owner.part(x, self.index)


def cat_rows(weights: list[torch.Tensor]) -> torch.Tensor:
    """`weights` stacked along their output rows, in their own (float or torchao) layout."""
    first = weights[0]
    if all(type(w) in (torch.Tensor, nn.Parameter) for w in weights):
        return torch.cat([w.detach() for w in weights])
    kind = type(first)
    dims = ROW_DIMS.get(kind.__name__)
    if dims is None or any(type(w) is not kind for w in weights):
        raise Unfusable(f"no known row layout for {sorted({type(w).__name__ for w in weights})}")
    names, attrs = first.__tensor_flatten__()
    for w in weights[1:]:
        other_names, other = w.__tensor_flatten__()
        if other_names != names or {k: v for k, v in other.items() if k != "shape"} != \
                {k: v for k, v in attrs.items() if k != "shape"}:
            raise Unfusable(f"{kind.__name__} weights quantized differently")
    if not set(names) <= set(dims):
        raise Unfusable(f"{kind.__name__} with inner tensors {names} (known: {sorted(dims)})")
    inner = {}
    for name in names:
        parts = [getattr(w, name) for w in weights]
        if kind.__name__ == "Int4TilePackedTo4dTensor" and name == "qdata" and \
                any(p.shape[0] * 8 != w.shape[0] for p, w in zip(parts, weights)):
            raise Unfusable("int4 weights with padded output rows")
        inner[name] = torch.cat(parts, dim=dims[name])
    shape = (sum(w.shape[0] for w in weights), *first.shape[1:])
    return kind.__tensor_unflatten__(inner, {**attrs, **({"shape": list(shape)} if "shape" in attrs else {})},
                                     shape, None)


def _stacks(module: nn.Module) -> bool:
    """Whether `module`'s type stacks layers of its kind itself (FusedStack)."""
    return callable(getattr(type(module), "stacked", None)) and callable(getattr(module, "stack_key", None))


def _fusable(members: list[nn.Module]) -> bool:
    # Plain frozen linears (adapters, bitsandbytes and hooked wrappers keep their own forwards), or layers of a
    # type that stacks its own kind (compact int4) with equal stack keys.
    if _stacks(members[0]) and len({type(m) for m in members}) == 1:
        kinds = {m.stack_key() for m in members}
    elif all(type(m) is nn.Linear and not m.weight.requires_grad for m in members):
        kinds = {(m.in_features, m.bias is None) for m in members}
    else:
        return False
    return len(kinds) == 1


def fuse(llm: nn.Module) -> dict[str, int]:
    """Fuse every q/k/v and gate/up group of `llm` whose members are frozen plain linears, in place. Returns
    the groups fused per kind; groups that are already fused, trainable or in an unknown layout are left."""
    fused = {kind: 0 for kind in GROUPS}
    skipped: dict[str, str] = {}
    for parent_name, parent in list(llm.named_modules()):
        for kind, names in GROUPS.items():
            members = [getattr(parent, n, None) for n in names]
            if any(m is None for m in members) or not _fusable(members):
                continue
            if _stacks(members[0]):
                owner: FusedLinear = FusedStack(members)
            else:
                try:
                    weight = cat_rows([m.weight for m in members])
                except Unfusable as err:
                    skipped.setdefault(str(err), f"{parent_name}.{kind}")
                    continue
                bias = None if members[0].bias is None else torch.cat([m.bias.detach() for m in members])
                owner = FusedLinear(weight, bias, [m.out_features for m in members])
            setattr(parent, f"{kind}_fused", owner)
            for i, name in enumerate(names):
                setattr(parent, name, FusedPart(owner, i))
            fused[kind] += 1
    for why, where in skipped.items():
        log.info("projections left unfused (%s), first at %s", why, where)
    return fused


def _rows(t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a fused weight as a tensor of its own. A group fused while decoding under inference
    mode (Lightning's test loop) holds inference tensors; once the module has moved outside that mode (Lightning's
    teardown), its parameters are no longer inference tensors, yet torch refuses any view of them, in either mode
    ("Inference tensors do not track version counter"). So a plain tensor's rows are gathered by a copying op,
    never a view; a torchao tensor's are sliced in its own layout, in the mode its tensors were made in."""
    with torch.no_grad():
        if type(t) in (torch.Tensor, nn.Parameter):
            return torch.index_select(t, 0, torch.arange(start, stop, device=t.device))
        with torch.inference_mode(t.is_inference()):
            part = t.detach()[start:stop]
        # its inner tensors copied, so the rows hold no view of the fused storage
        names, attrs = part.__tensor_flatten__()
        inner = {n: getattr(part, n).contiguous().clone() for n in names}
        return type(part).__tensor_unflatten__(inner, attrs, part.shape, None)


def unfuse(llm: nn.Module) -> int:
    """Undo `fuse` in place: each member a plain linear again, holding its rows of the fused weight (sliced in
    the weight's own layout). Returns the groups unfused."""
    count = 0
    for parent in list(llm.modules()):
        for kind, names in GROUPS.items():
            owner = getattr(parent, f"{kind}_fused", None)
            if not isinstance(owner, FusedLinear):
                continue
            for i, name in enumerate(names):
                setattr(parent, name, owner.member(i))
            delattr(parent, f"{kind}_fused")
            count += 1
    return count


def is_fused(llm: nn.Module) -> bool:
    return any(isinstance(m, FusedLinear) for m in llm.modules())


def fused_groups(llm: nn.Module) -> dict[str, int]:
    """The fused groups `llm` holds now, per kind (whoever fused them)."""
    return {kind: sum(1 for name, m in llm.named_modules() if isinstance(m, FusedLinear)
                      and name.endswith(f"{kind}_fused")) for kind in GROUPS}
