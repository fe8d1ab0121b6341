import functools
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from sota.compose import compose
from sota.compress import lora, quant

from test_model import batch_for, small_model


@functools.cache
def _group(name):
    return compose(config_name=name)


def lcfg(**over):
    """conf/lora/lora.yaml (rank 4 to keep tests small) with `over` merged in."""
    return OmegaConf.merge(_group("lora/lora").lora, {"rank": 4, "dropout": 0.0}, over)


def qcfg(name, **over):
    return OmegaConf.merge(_group(f"quant/{name}").quant, over)


def logits(model, batch):
    with torch.no_grad():
        embeds, mask = model.audio_embeds(batch)
        return model.llm(**model.assemble(embeds, mask, batch["tasks"], batch["answers"])).logits


def train_step(model, batch, lr=1e-2):
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = model(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    opt.zero_grad()
    model.eval()
    return loss, grads


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="MatMul8bitLt")
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return small_model().eval()


@pytest.fixture()
def batch(model):
    return batch_for(model, [1.0, 1.5], ["asr", "aac"], ["a red dog barks", "a cat"])


def test_validate_names_the_key():
    out = []
    lora.validate(lcfg(rank=0), out)
    assert out == ["lora.rank must be an integer >= 1, got 0"]
    out = []
    lora.validate(lcfg(on=["llm", "decoder"], method="lora"), out)
    assert len(out) == 1 and "lora.on must be a non-empty subset of [llm, encoder]" in out[0]
    out = []
    lora.validate(lcfg(method="dora"), out)
    assert out == ["lora.method must be one of none, lora; got 'dora'"]
    out = []
    lora.validate(_group("lora/none").lora, out)
    lora.validate(None, out)
    lora.validate(lcfg(), out)
    assert out == []
    with pytest.raises(ValueError, match="lora.rank"):
        lora.attach(small_model(), lcfg(rank=0))


def test_attach_wraps_only_the_llm_and_trains_only_adapters_and_the_connector(model, batch):
    rec = lora.attach(model, lcfg())
    assert type(model).__name__ == "AudioLLM" and type(model.llm).__name__ == "PeftModel"
    assert rec == {"method": "lora", "rank": 4, "alpha": 32.0, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
                   "on": ["llm"], "trainable_params": 4 * (4 * 32 + 4 * 32) - 2 * (4 * 16),  # k, v: 16 outputs
                   "adapted_modules": 4}
    trainable = [n for n, p in model.llm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.requires_grad for p in model.connector.parameters())
    loss, grads = train_step(model, batch)
    assert torch.isfinite(loss)
    assert any("lora_B" in n and g.abs().sum() > 0 for n, g in grads.items())
    assert not any(n.startswith("llm.") and "lora_" not in n for n in grads)
    assert len(model.generate(batch, max_new_tokens=3)) == 2


def test_merge_gives_the_same_logits_and_plain_modules(model, batch):
    lora.attach(model, lcfg())
    with torch.no_grad():
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)  # a non-zero update, as after training
    before = logits(model, batch)
    rec = lora.merge(model)
    assert rec == {"merged": ["llm"], "notes": []}
    assert type(model.llm).__name__ == "LlamaForCausalLM"
    assert not any("lora_" in n for n, _ in model.named_parameters())
    after = logits(model, batch)
    assert (before - after).abs().max() < 1e-5
    assert (before - logits(small_model(), batch)).abs().max() > 1e-3  # the update did change the model


def test_unknown_target_lists_the_layers_that_exist(model):
    with pytest.raises(ValueError) as err:
        lora.attach(model, lcfg(targets=["q_proj", "query"]))
    msg = str(err.value)
    assert "['query']" in msg and all(n in msg for n in ("q_proj", "o_proj", "gate_proj", "down_proj", "lm_head"))
    assert type(model.llm).__name__ == "LlamaForCausalLM"  # nothing was wrapped


def test_encoder_adapters_use_the_targets_it_has(model, batch):
    rec = lora.attach(model, lcfg(on=["llm", "encoder"]))
    assert rec["adapted_modules"] == 4 + 3  # Whisper has q/k/v_proj but calls its output projection out_proj
    assert type(model.encoder.whisper).__name__ == "PeftModel"
    loss, grads = train_step(model, batch)
    assert any(n.startswith("encoder.") and "lora_B" in n for n in grads)
    assert lora.merge(model)["merged"] == ["llm", "encoder"]
    assert type(model.encoder.whisper).__name__ == "WhisperEncoder"


def test_merge_without_adapters_says_so(model):
    assert lora.merge(model) == {"merged": [], "notes": ["no LoRA adapters attached; nothing to merge"]}


@pytest.mark.parametrize("mode", ["nf4", "int8_bnb"])
def test_qlora_trains_adapters_on_a_frozen_quantized_base(mode, model, batch):
    quant.quantize(model, qcfg(mode), "cpu")
    lora.attach(model, lcfg())
    q_proj = model.llm.base_model.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == ("Linear4bit" if mode == "nf4" else "Linear8bitLt")
    base = q_proj.base_layer.weight.detach().clone()
    a_before = q_proj.lora_A["default"].weight.detach().clone()
    loss, grads = train_step(model, batch)
    loss2, _ = train_step(model, batch)
    assert torch.isfinite(loss) and torch.isfinite(loss2)
    assert grads["llm.base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"].abs().sum() > 0
    assert not q_proj.base_layer.weight.requires_grad and torch.equal(q_proj.base_layer.weight, base)
    assert not torch.equal(q_proj.lora_A["default"].weight, a_before)  # second step moved A too
    rec = lora.merge(model)
    assert rec["merged"] == [] and "adapters kept unmerged" in rec["notes"][0]
    assert len(model.generate(batch, max_new_tokens=3)) == 2


def test_qlora_checkpoint_of_trainable_tensors_restores_the_model(model, batch):
    """The pipeline's checkpoints keep trainable tensors only: rebuild, quantize the base, attach, load."""
    quant.quantize(model, qcfg("nf4"), "cpu")
    lora.attach(model, lcfg())
    train_step(model, batch)
    ref = logits(model, batch)
    kept = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.manual_seed(0)
    fresh = small_model().eval()
    quant.quantize(fresh, qcfg("nf4"), "cpu")
    lora.attach(fresh, lcfg())
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    assert not unexpected
    assert torch.equal(logits(fresh, batch), ref)


def test_qlora_on_the_encoder_uses_peft_bitsandbytes_layers(model, batch):
    quant.quantize(model, qcfg("nf4", targets=["encoder"]), "cpu")
    lora.attach(model, lcfg(on=["encoder"], targets=["q_proj", "v_proj", "out_proj"]))
    q_proj = model.encoder.whisper.base_model.model.layers[0].self_attn.q_proj
    assert type(q_proj).__module__ == "peft.tuners.lora.bnb" and type(q_proj.base_layer).__name__ == "Linear4bit"
    loss, grads = train_step(model, batch)
    assert torch.isfinite(loss) and any(n.startswith("encoder.") and "lora_B" in n for n in grads)
