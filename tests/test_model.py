import numpy as np
import pytest
import torch

from sota.models.audio_llm import IGNORE, AudioLLM
from sota.models.connector import WindowQFormer
from sota.models.encoder import AudioEncoder, trim_whisper_context
from sota.models.llm import tiny_llama
from sota.models.prompt import PromptBuilder
from sota.models.tokenizer import corpus_tokenizer

from conftest import SMALL_WHISPER

PROMPTS = {"asr": "<AudioHere> transcribe the speech", "aac": "<AudioHere> describe the sound"}
WORDS = ["a", "dog", "barks", "red", "cat", "transcribe", "the", "speech", "describe", "sound"]


def small_model(context_s=2.0, **enc):
    encoder = AudioEncoder(path=None, config=SMALL_WHISPER, context_s=context_s, **enc)
    llm, tok = tiny_llama(WORDS, hidden_size=32, layers=1, heads=4, kv_heads=2, intermediate_size=64)
    con = WindowQFormer(encoder.out_dim, 32, frames_per_second=50, hidden_size=32, heads=4,
                        intermediate_size=64, layers=1)
    return AudioLLM(encoder, con, llm, tok, PROMPTS)


def batch_for(model, seconds, tasks, answers=None):
    waves = [np.random.default_rng(i).standard_normal(int(s * 16000)).astype(np.float32) * 0.1
             for i, s in enumerate(seconds)]
    b = {"encoder_inputs": model.encoder.featurize(waves),
         "num_frames": model.encoder.frames_for([len(w) for w in waves]), "tasks": tasks}
    if answers:
        b["answers"] = answers
    return b


def test_context_trim_shortens_whisper_input_and_longer_clips_are_encoded_in_chunks():
    model = small_model(context_s=2.0)
    assert model.encoder.total_frames == 100
    b = batch_for(model, [1.0, 3.0], ["asr", "aac"])
    # the 3 s clip is two chunks of the 2 s context; the 1 s clip gets a silent second chunk
    assert tuple(b["encoder_inputs"]["mel"].shape) == (2, 2, 80, 200)
    assert b["num_frames"].tolist() == [50, 150]
    hidden = model.encoder(**b["encoder_inputs"])
    assert hidden.shape == (2, 200, 64)
    # a chunk's frames are the encoding of that stretch of audio alone, so the clip's first 2 s and its
    # last second encode as they would as clips of their own
    wave = np.random.default_rng(1).standard_normal(48000).astype(np.float32) * 0.1
    with torch.no_grad():
        first = model.encoder(**model.encoder.featurize([wave[:32000]]))
        last = model.encoder(**model.encoder.featurize([wave[32000:]]))
        assert torch.allclose(hidden[1, :100], first[0], atol=1e-5)
        assert torch.allclose(hidden[1, 100:], last[0], atol=1e-5)
    # every frame of audio reaches the connector: 150 valid frames -> 9 windows of 17 frames
    embeds, mask = model.audio_embeds(b)
    assert mask.sum(1).tolist() == [3, 9]


def test_context_must_be_whole_frames():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    with pytest.raises(ValueError, match="context_s"):
        trim_whisper_context(WhisperEncoder(WhisperConfig(**SMALL_WHISPER)), 0.015)


def test_loss_only_on_answer_tokens_and_backward_reaches_connector_not_frozen_encoder():
    model = small_model()
    b = batch_for(model, [1.0, 2.0], ["asr", "aac"], ["a red dog barks", "a cat"])
    embeds, mask = model.audio_embeds(b)
    inputs = model.assemble(embeds, mask, b["tasks"], b["answers"])
    labels = inputs["labels"]
    n_answer = [len(model.prompt.answer_ids(a)) for a in b["answers"]]
    assert (labels != IGNORE).sum(1).tolist() == n_answer
    # training batches are right-padded (no query row without a key to attend to: cuDNN's attention backward
    # returns NaN for those): every row starts with a real token and ends its real part with end-of-turn
    lengths = inputs["attention_mask"].sum(1)
    assert inputs["attention_mask"][:, 0].tolist() == [1, 1]
    assert [int(labels[i, n - 1]) for i, n in enumerate(lengths.tolist())] == [model.prompt.end_of_turn_id] * 2
    short = int(lengths.argmin())
    assert lengths[0] != lengths[1] and inputs["attention_mask"][short, -1] == 0
    assert inputs["position_ids"][short, lengths[short] - 1] == lengths[short] - 1
    # prompts alone (generation) are left-padded: the last column is every row's last prompt token
    gen = model.assemble(embeds, mask, b["tasks"])
    assert gen["attention_mask"][:, -1].tolist() == [1, 1] and gen["attention_mask"][short, 0] == 0
    loss = model(b)
    loss.backward()
    assert model.connector.query.grad is not None
    assert all(p.grad is None for p in model.encoder.parameters())


def test_frozen_encoder_stays_in_eval_mode():
    model = small_model()
    model.train()
    assert not model.encoder.training and model.connector.training


def test_generate_returns_one_string_per_clip_and_respects_max_tokens():
    model = small_model().eval()
    b = batch_for(model, [1.0, 1.5, 0.5], ["asr", "aac", "asr"])
    out = model.generate(b, max_new_tokens=3)
    assert len(out) == 3 and all(isinstance(o, str) and len(o.split()) <= 3 for o in out)


def test_second_encoder_is_concatenated():
    second = {"config": {"model_type": "wav2vec2", "hidden_size": 16, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "intermediate_size": 32, "conv_dim": [16, 16],
                         "conv_stride": [5, 4], "conv_kernel": [10, 4], "num_feat_extract_layers": 2}}
    model = small_model(second=second)
    assert model.encoder.out_dim == 64 + 16
    b = batch_for(model, [1.0], ["asr"])
    assert model.encoder(**b["encoder_inputs"]).shape == (1, 100, 80)


def test_end_of_turn_found_from_the_chat_template():
    tok = corpus_tokenizer(WORDS)
    pb = PromptBuilder(tok, PROMPTS)
    assert tok.convert_ids_to_tokens(pb.end_of_turn_id) == "<|end|>"
    assert set(pb.stop_ids) == {tok.convert_tokens_to_ids("<|end|>"), tok.eos_token_id}
    assert pb.decode(pb.answer_ids("a red dog")) == "a red dog"


def test_prompt_without_audio_slot_is_rejected():
    with pytest.raises(ValueError, match="prompts.asr"):
        PromptBuilder(corpus_tokenizer(WORDS), {"asr": "transcribe"})


def test_unknown_task_is_rejected():
    model = small_model()
    b = batch_for(model, [1.0], ["translate"], ["a"])
    with pytest.raises(ValueError, match="no prompt for task 'translate'"):
        model(b)


def test_char_tokenizer_spells_and_round_trips():
    tok = corpus_tokenizer(["a", "red", "dog"], "char")
    ids = tok("a red dog", add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids) == ["a", "▁", "r", "e", "d", "▁", "d", "o", "g"]
    assert tok.decode(ids) == "a red dog"
    pb = PromptBuilder(tok, PROMPTS)
    assert tok.convert_ids_to_tokens(pb.end_of_turn_id) == "<|end|>"


def test_unknown_tokenizer_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="llm.tokenizer must be one of word, char"):
        corpus_tokenizer(WORDS, "bpe")


def test_a_bf16_encoder_keeps_its_dtype_when_its_final_norm_answers_in_float32():
    # bf16-mixed training of a compressed encoder (features not cached): CUDA's autocast runs layer_norm in
    # float32, and the encoder's bf16 output buffers must still take what it answers
    model = small_model(context_s=2.0)
    model.encoder.to(torch.bfloat16)
    norm = model.encoder.whisper.layer_norm
    norm.forward = lambda x, f=norm.forward: f(x).float()   # what autocast on CUDA does
    for seconds in ([1.0, 0.5], [1.0, 3.0]):   # buckets alone, then buckets beside a clip of two chunks
        b = batch_for(model, seconds, ["asr", "aac"])
        with torch.no_grad():
            hidden = model.encoder(**b["encoder_inputs"])
        assert hidden.dtype == torch.bfloat16 and hidden.shape[0] == 2


@pytest.mark.slow  # Inductor compiles a layer: 10-25 s on 2 cores
@pytest.mark.skipif(not (__import__("shutil").which("cc") or __import__("shutil").which("gcc")),
                    reason="Inductor on a CPU needs a C compiler")
def test_layer_compilation_trains_the_same_loss_decodes_eagerly_and_is_forgotten():
    model = small_model()
    b = batch_for(model, [1.0, 0.5], ["asr", "aac"], ["a red dog barks", "a cat"])
    plain_loss = model(b)
    plain_answers = model.generate_ids(b, max_new_tokens=4)
    model.compile_training("layers")
    layers = model.__dict__["_compiled_layers"]
    assert len(layers) == model.llm.config.num_hidden_layers
    assert all(layer._compiled_call_impl is not None for layer in layers)
    loss = model(b)
    loss.backward()
    assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-3)  # Inductor fuses, so sums reassociate
    assert model.generate_ids(b, max_new_tokens=4) == plain_answers
    model.forget_compiled()
    assert "_compiled_layers" not in model.__dict__ and all(layer._compiled_call_impl is None for layer in layers)
