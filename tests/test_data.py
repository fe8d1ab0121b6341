"""Manifests and audio files: bad rows and files are named in the error, or skipped and counted."""

import json

import numpy as np
import pytest
import soundfile as sf

from sota.data.audio import BadAudioFile, load_audio
from sota.data.manifest import BadSample, read_manifest


def write(path, rows):
    path.write_text(json.dumps({"annotation": rows}))
    return path


def test_relative_paths_and_references(tmp_path):
    m = write(tmp_path / "m.json", [
        {"path": "a.wav", "text": "hello there", "task": "asr"},
        {"path": "/abs/b.wav", "text": "", "references": ["a dog barks", "  ", "dog barking"], "task": "aac"},
    ])
    a, b = read_manifest(m)
    assert a.path == tmp_path / "a.wav" and a.targets == ("hello there",)
    assert b.text == "a dog barks" and b.references == ("a dog barks", "dog barking")


def test_empty_transcript_is_an_error_or_skipped(tmp_path):
    m = write(tmp_path / "m.json", [{"path": "a.wav", "text": " ", "task": "asr"},
                                    {"path": "b.wav", "text": "ok", "task": "asr"}])
    with pytest.raises(BadSample, match=r"m.json: row 0 \(a.wav\) has an empty transcript"):
        read_manifest(m)
    skipped = []
    rows = read_manifest(m, on_bad="skip", skipped=skipped)
    assert [r.text for r in rows] == ["ok"] and len(skipped) == 1


def test_task_filter_and_bad_layout(tmp_path):
    m = write(tmp_path / "m.json", [{"path": "a.wav", "text": "x", "task": "asr"},
                                    {"path": "b.wav", "text": "y", "task": "aac"}])
    assert [r.task for r in read_manifest(m, tasks=["aac"])] == ["aac"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(BadSample, match="not a SALMONN annotation file"):
        read_manifest(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="data.on_bad_file must be one of"):
        read_manifest(m, on_bad="ignore")


def test_audio_is_resampled_and_mixed_to_mono(tmp_path):
    t = np.linspace(0, 1, 44100, endpoint=False)
    stereo = np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 44100)
    audio = load_audio(tmp_path / "s.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - 16000) <= 1
    assert 0.45 < np.abs(audio).max() < 0.55


@pytest.mark.parametrize("content,msg", [(None, "not found"), (b"not audio at all", "cannot read"),
                                         (b"", "cannot read|empty")])
def test_bad_audio_files_are_named(tmp_path, content, msg):
    path = tmp_path / "x.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadAudioFile, match=msg) as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_zero_length_wav_is_empty(tmp_path):
    sf.write(tmp_path / "e.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(BadAudioFile, match="empty"):
        load_audio(tmp_path / "e.wav")


def _encoder():
    from sota.models.encoder import AudioEncoder

    from conftest import SMALL_WHISPER

    return AudioEncoder(path=None, config=SMALL_WHISPER, context_s=1.0)


def test_encode_clips_returns_half_precision_frames_and_leaves_the_encoder_where_it_was():
    import numpy as np
    import torch

    from sota.data.features import encode_clips

    enc = _encoder()
    waves = [np.random.default_rng(i).standard_normal(8000 * (i + 1)).astype(np.float32) * 0.1 for i in range(3)]
    feats = encode_clips(enc, waves, batch_size=2)
    # the 1.5 s clip is two chunks of the 1 s context, so every clip gets two chunks' frames
    assert feats.shape == (3, 100, 64) and feats.dtype == torch.float16
    # the shorter clips' padding chunk is zeros: the second chunk of the 0.5 and 1 s clips holds no audio
    assert feats[:2, 50:].abs().max() == 0 and feats[2, 50:].abs().max() > 0
    assert next(enc.parameters()).device.type == "cpu"


def test_a_clips_features_follow_the_clip_not_its_batch():
    """With bucket_s a clip is encoded over its own bucket, and a long clip over its own chunks only: the
    same frames alone or beside any other clip, zeros past them; buckets change what a short clip hears."""
    import numpy as np
    import torch

    from sota.models.encoder import AudioEncoder

    from conftest import SMALL_WHISPER

    torch.manual_seed(0)
    enc = AudioEncoder(path=None, config=SMALL_WHISPER, context_s=1.0, bucket_s=0.2)
    whole = AudioEncoder(path=None, config=SMALL_WHISPER, context_s=1.0)
    whole.load_state_dict(enc.state_dict())
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1 for s in (0.3, 0.75, 2.5, 1.2)]
    frames = enc.frames_for([len(w) for w in waves]).tolist()
    with torch.no_grad():
        together = enc(**enc.featurize(waves))
        assert together.shape == (4, 150, 64)
        for i, w in enumerate(waves):
            alone = enc(**enc.featurize([w]))
            assert torch.equal(alone[0, :frames[i]], together[i, :frames[i]])
            assert together[i, enc.chunks_for(len(w)) * 50:].abs().sum() == 0  # chunks it does not have
        short = whole(**whole.featurize(waves[:1]))
    assert not torch.allclose(short[0, :frames[0]], together[0, :frames[0]], atol=1e-4)
    assert torch.allclose(whole(**whole.featurize(waves[2:3]))[0], together[2])  # whole chunks: as stock


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_encode_clips_on_cuda_with_an_encoder_left_on_the_cpu():
    """After training, Lightning's teardown leaves the model on the CPU while the test split is still to be
    encoded on the GPU."""
    import numpy as np

    from sota.data.features import encode_clips

    enc = _encoder()
    feats = encode_clips(enc, [np.zeros(16000, np.float32) + 0.01], device="cuda")
    assert feats.shape[0] == 1 and next(enc.parameters()).device.type == "cpu"


def test_relative_paths_resolve_against_the_manifest_folder_or_its_parent(tmp_path):
    """SALMONN sets keep paths relative to the manifest's folder; sets with one manifest per subfolder (realdev's
    asr/manifest.json listing asr/x.wav) write them from their root."""
    import json

    from sota.data.manifest import read_manifest

    (tmp_path / "asr").mkdir()
    for name in ("asr/a.wav", "asr/b.wav"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "asr" / "c.wav").write_bytes(b"")
    rows = [{"path": "asr/a.wav", "text": "one", "task": "asr"}, {"path": "c.wav", "text": "two", "task": "asr"},
            {"path": "asr/missing.wav", "text": "three", "task": "asr"}]
    (tmp_path / "asr" / "manifest.json").write_text(json.dumps({"annotation": rows}))
    paths = [s.path for s in read_manifest(tmp_path / "asr" / "manifest.json")]
    assert paths == [tmp_path / "asr" / "a.wav", tmp_path / "asr" / "c.wav", tmp_path / "asr" / "asr" / "missing.wav"]
