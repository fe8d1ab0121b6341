import pytest
import torch

from sota.models.connector import WindowProjector, WindowQFormer, count_windows, max_audio_tokens, window_geometry


def make(**kw):
    args = dict(frames_per_second=50, hidden_size=32, heads=4, intermediate_size=64, layers=1)
    args.update(kw)
    return WindowQFormer(48, 40, **args)


def test_salmonn_geometry_covers_30s_with_89_windows():
    assert window_geometry(50, 0.333333, 0.333333) == (17, 17)
    # 1500 = 88 * 17 + 4: the 4 tail frames get a zero-padded window of their own
    assert max_audio_tokens(30.0, 50, 0.333333, 0.333333, 1) == 89


def test_tokens_follow_clip_length_and_padding_is_dropped():
    con = make()
    hidden = torch.randn(3, 250, 48)
    frames = torch.tensor([250, 100, 10])
    emb, mask = con(hidden, frames)
    counts = mask.sum(1).tolist()
    # 250 frames -> ceil(233/17)+1 = 15 windows; 100 -> ceil(83/17)+1 = 6; 10 frames -> one window
    assert counts == [15, 6, 1]
    assert emb.shape == (3, 15, 40)
    assert con.tokens_for(frames, 250).tolist() == counts


def test_trim_padding_off_keeps_every_window():
    con = make(trim_padding=False)
    _, mask = con(torch.randn(2, 250, 48), torch.tensor([250, 20]))
    assert mask.sum(1).tolist() == [15, 15]


def test_num_queries_multiplies_tokens_and_stride_overlaps():
    con = make(num_queries=2, window_s=0.4, stride_s=0.2)
    _, mask = con(torch.randn(1, 100, 48), torch.tensor([100]))
    kernel, stride = window_geometry(50, 0.4, 0.2)
    assert mask.sum().item() == 2 * (-(-(100 - kernel) // stride) + 1)


def test_padding_windows_do_not_change_real_tokens():
    con = make().eval()
    x = torch.randn(1, 250, 48)
    a, _ = con(x, torch.tensor([60]))
    y = x.clone()
    y[:, 60:] = 99.0  # garbage after the clip's end must not leak into its windows (beyond the last window)
    b, _ = con(y, torch.tensor([60]))
    last_window_start = 3 * 17  # frames 51..67 hold the clip's tail plus padding
    assert torch.allclose(a[:, :3], b[:, :3])
    assert a.shape == b.shape and last_window_start < 60


@pytest.mark.parametrize("kw,msg", [
    (dict(window_s=0), "window_s"),
    (dict(stride_s=0.5, window_s=0.3), "stride_s"),
    (dict(num_queries=0), "num_queries"),
])
def test_bad_geometry_is_rejected(kw, msg):
    with pytest.raises(ValueError, match=msg):
        make(**kw)


def test_count_windows_is_clamped_to_full_context():
    assert count_windows(torch.tensor([5000]), 1500, 17, 17).item() == 89


def test_projector_gives_one_token_per_window_from_that_window_only():
    con = WindowProjector(48, 40, frames_per_second=50, hidden_size=64).eval()  # 0.1 s: 5-frame windows
    x = torch.randn(2, 250, 48)
    emb, mask = con(x, torch.tensor([250, 23]))
    assert con.kernel == 5 and mask.sum(1).tolist() == [50, 5] and emb.shape == (2, 50, 40)
    assert con.tokens_for(torch.tensor([250, 23]), 250).tolist() == [50, 5]
    y = x.clone()
    y[:, 10:15] = 7.0  # changes the third window's frames alone
    emb2, _ = con(y, torch.tensor([250, 23]))
    changed = (emb2 - emb).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [2]


def test_projector_refuses_overlapping_windows(compose_cfg):
    with pytest.raises(ValueError, match="must equal connector.window_s"):
        WindowProjector(48, 40, frames_per_second=50, window_s=0.2, stride_s=0.1)
    from sota.config import validate
    from sota.errors import ConfigError
    with pytest.raises(ConfigError, match="must equal connector.window_s"):
        validate(compose_cfg("connector=projector", "connector.stride_s=0.05"))
    validate(compose_cfg("connector=projector"))  # the group's own settings are valid
