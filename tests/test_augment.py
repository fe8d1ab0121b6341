"""Speech augmentation: lengths, achieved SNR, the telephone band limit, reverb tails, determinism, settings."""

import numpy as np
import pytest

from sota.data import augment as aug

SR = aug.SAMPLE_RATE


def _speechlike(seed: int = 0, seconds: float = 2.0, level: float = 0.05) -> np.ndarray:
    """Harmonics of a gliding 120-200 Hz pitch under a syllable-rate envelope: cheap stand-in for speech."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 160 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    return (level * x / np.abs(x).max()).astype(np.float32)


def _snr_db(clean: np.ndarray, mixed: np.ndarray) -> float:
    return 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((mixed - clean).astype(np.float64) ** 2))


def test_shapes_and_range():
    x = _speechlike()
    rng = np.random.default_rng(0)
    for out in (aug.reverb(x, rng), aug.telephone(x, rng), aug.add_noise(x, rng, [rng.standard_normal(999)])):
        assert out.shape == x.shape and out.dtype == np.float32 and np.abs(out).max() <= 1.0
    slow = aug.speed_perturb(x, rng, (0.8, 0.8))
    assert slow.dtype == np.float32 and abs(slow.size - x.size / 0.8) <= 2


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 30.0])
def test_noise_lands_at_the_drawn_snr(snr_db):
    x = _speechlike(level=0.01)
    rng = np.random.default_rng(1)
    short_loop = rng.standard_normal(3000).astype(np.float32)  # shorter than x: looped
    long_scene = (0.3 * rng.standard_normal(5 * SR)).astype(np.float32)  # longer than x: cropped
    for noises in ([short_loop], [long_scene]):
        mixed = aug.add_noise(x, rng, noises, (snr_db, snr_db))
        assert abs(_snr_db(x, mixed) - snr_db) < 0.5


def test_loud_mixes_are_scaled_down_not_clipped():
    x = _speechlike(level=0.9)
    out = aug.add_noise(x, np.random.default_rng(2), [np.ones(100, np.float32)], (-10.0, -10.0))
    assert np.abs(out).max() == pytest.approx(1.0, abs=1e-6)


def test_telephone_removes_everything_above_4_khz():
    x = (0.3 * np.random.default_rng(3).standard_normal(2 * SR)).astype(np.float32)  # white: energy everywhere
    for mu_law_p in (0.0, 1.0):
        y = aug.telephone(x, np.random.default_rng(4), mu_law_p)
        power = np.abs(np.fft.rfft(y)) ** 2
        freqs = np.fft.rfftfreq(y.size, 1 / SR)
        assert power[freqs > 4000].sum() < 1e-4 * power.sum()
        assert power[(freqs > 500) & (freqs < 3000)].sum() > 0.5 * power.sum()


def test_reverb_leaves_a_decaying_tail_and_keeps_the_level():
    x = np.zeros(SR, np.float32)
    x[:160] = _speechlike(seconds=0.01, level=0.5)
    y = aug.reverb(x, np.random.default_rng(5), rt60_range=(0.5, 0.5), drr_db_range=(0.0, 0.0))
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    tail_early, tail_late = (np.sum(y[a:b] ** 2) for a, b in ((1600, 3200), (6400, 8000)))
    assert tail_early > 10 * tail_late > 0  # 0.1-0.2 s after the burst vs 0.4-0.5 s: decaying


def test_augment_is_deterministic_per_seed():
    x = _speechlike()
    noises = [np.random.default_rng(6).standard_normal(SR).astype(np.float32)]
    cfg = aug.AugmentConfig(speed_p=1.0, reverb_p=1.0, noise_p=1.0, telephone_p=1.0)
    a, b, c = (aug.augment(x, np.random.default_rng(s), cfg, noises) for s in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert a.size != c.size or not np.array_equal(a, c)
    untouched = aug.augment(x, np.random.default_rng(7), aug.AugmentConfig(speed_p=0, reverb_p=0, noise_p=0,
                                                                             telephone_p=0))
    np.testing.assert_array_equal(untouched, x)


@pytest.mark.parametrize("field, value, message", [
    ("speed_p", 1.5, r"AugmentConfig.speed_p must be a probability in \[0, 1\], got 1.5"),
    ("speed_range", (1.2, 0.9), r"AugmentConfig.speed_range must be \(low, high\) with 0.5 <= low <= high <= 2.0"),
    ("snr_db_range", (0.0, 100.0), r"AugmentConfig.snr_db_range must be .* <= 60.0"),
    ("rt60_range", (0.0, 1.0), r"AugmentConfig.rt60_range must be .*0.05 <= low"),
])
def test_config_range_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        aug.AugmentConfig(**{field: value})


def test_noise_step_without_noises_says_what_to_pass():
    with pytest.raises(ValueError, match=r"noise_p=0.5 needs noise arrays: pass noises="):
        aug.augment(_speechlike(), np.random.default_rng(0), aug.AugmentConfig())
