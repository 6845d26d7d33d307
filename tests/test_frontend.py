"""Front end (resample + log-mel + masking) and the waveform/spectrogram augmentations."""
import math

import pytest
import torch

from models.frontend import LogMelFrontEnd, mixstyle, roll_waveform

LOG_FLOOR = math.log(1e-5)


@pytest.fixture(scope="module")
def waveforms():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 1, 44100, generator=gen) * 0.1


def test_one_second_gives_network_input_shape(waveforms):
    frontend = LogMelFrontEnd().eval()
    with torch.no_grad():
        out = frontend(waveforms)
    assert out.shape == (4, 1, 256, 65)
    assert frontend.input_shape() == (1, 1, 256, 65)
    assert torch.isfinite(out).all()
    # [B, samples] is accepted as well
    with torch.no_grad():
        assert torch.equal(frontend(waveforms[:, 0]), out)


def test_eval_is_deterministic_and_unmasked(waveforms):
    frontend = LogMelFrontEnd(freqm=48, timem=20).eval()
    with torch.no_grad():
        first, second = frontend(waveforms), frontend(waveforms)
    assert torch.equal(first, second)
    # no whole mel row or frame collapsed to the log floor: masking is off in eval mode
    floor_rows = (first == LOG_FLOOR).all(dim=-1)
    floor_cols = (first == LOG_FLOOR).all(dim=-2)
    assert not floor_rows.any() and not floor_cols.any()


def test_eval_matches_reference_computation(waveforms):
    import torchaudio
    frontend = LogMelFrontEnd().eval()
    resampled = torchaudio.transforms.Resample(44100, 32000)(waveforms)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=32000, n_fft=4096, win_length=3072, hop_length=500,
                                               n_mels=256, f_min=0, f_max=None)(resampled)
    with torch.no_grad():
        assert torch.allclose(frontend(waveforms), (mel + 1e-5).log(), atol=1e-5)


def test_train_frequency_masking_masks_some_rows(waveforms):
    frontend = LogMelFrontEnd(freqm=48, timem=0)
    with torch.no_grad():
        reference = frontend.eval()(waveforms)
        torch.manual_seed(0)
        masked = frontend.train()(waveforms)
    assert masked.shape == reference.shape
    assert not torch.equal(masked, reference)
    row_floor = torch.isclose(masked, torch.full_like(masked, LOG_FLOOR)).all(dim=-1)  # [B, 1, F]
    row_same = torch.isclose(masked, reference, atol=1e-5).all(dim=-1)
    # every mel row is either untouched or masked as a whole (power 0 before the log)
    assert (row_floor | row_same).all()
    assert row_floor.any()
    for sample in range(masked.shape[0]):
        bins = torch.nonzero(row_floor[sample, 0]).flatten()
        if len(bins):
            assert len(bins) < 48  # width drawn from [0, freqm)
            assert torch.equal(bins, torch.arange(bins[0], bins[-1] + 1))  # one contiguous band
    # masks are drawn per sample (iid_masks): not all samples masked at the same bins
    assert len({tuple(torch.nonzero(row_floor[s, 0]).flatten().tolist()) for s in range(4)}) > 1


def test_train_time_masking_masks_frames(waveforms):
    frontend = LogMelFrontEnd(freqm=0, timem=30)
    with torch.no_grad():
        reference = frontend.eval()(waveforms)
        torch.manual_seed(1)
        masked = frontend.train()(waveforms)
    frame_floor = torch.isclose(masked, torch.full_like(masked, LOG_FLOOR)).all(dim=-2)
    frame_same = torch.isclose(masked, reference, atol=1e-5).all(dim=-2)
    assert (frame_floor | frame_same).all()
    assert frame_floor.any()


def test_train_without_masking_equals_eval(waveforms):
    frontend = LogMelFrontEnd(freqm=0, timem=0)
    with torch.no_grad():
        reference = frontend.eval()(waveforms)
        trained = frontend.train()(waveforms)
    assert torch.allclose(trained, reference, atol=1e-6)


def test_roll_is_circular_shift_within_range():
    torch.manual_seed(0)
    n, max_shift = 1000, 5
    x = torch.arange(n, dtype=torch.float32).reshape(1, n)
    shifts = set()
    for _ in range(300):
        rolled = roll_waveform(x, max_shift)
        assert rolled.shape == x.shape
        assert torch.equal(rolled.sort(dim=-1).values, x)  # a permutation of the same values
        shift = int(rolled[0, 0].item())
        shift = -shift if shift <= max_shift else n - shift  # rolled[0] = x[-shift mod n]
        assert -max_shift <= shift <= max_shift
        assert torch.equal(rolled, torch.roll(x, shift, dims=-1))
        shifts.add(shift)
    # uniform over all 2R + 1 integers, both ends included
    assert shifts == set(range(-max_shift, max_shift + 1))


def test_roll_acts_on_last_axis_of_batch():
    torch.manual_seed(1)
    x = torch.randn(2, 1, 100)
    rolled = roll_waveform(x, 10)
    assert any(torch.equal(rolled, torch.roll(x, s, dims=-1)) for s in range(-10, 11))


def test_roll_zero_is_identity():
    x = torch.randn(1, 441)
    assert torch.equal(roll_waveform(x, 0), x)


def _stats(x):
    mean = x.mean(dim=(1, 3))  # [B, F]
    std = x.var(dim=(1, 3)).sqrt()
    return mean, std


def _styled_batch(batch=6, freqs=12, frames=40, seed=0):
    """Samples with clearly different per-frequency means and spreads."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, 1, freqs, frames, generator=gen)
    base = (base - base.mean(dim=(1, 3), keepdim=True)) / base.std(dim=(1, 3), keepdim=True)
    means = torch.randn(batch, 1, freqs, 1, generator=gen) * 3
    stds = torch.rand(batch, 1, freqs, 1, generator=gen) * 2 + 0.5
    return base * stds + means


def test_mixstyle_p0_is_identity():
    x = _styled_batch()
    torch.manual_seed(0)
    out = mixstyle(x, p=0.0, alpha=0.3)
    assert torch.equal(out, x)


def test_mixstyle_p1_keeps_shape_and_changes_statistics():
    x = _styled_batch()
    torch.manual_seed(0)
    out = mixstyle(x, p=1.0, alpha=0.3)
    assert out.shape == x.shape
    mean_in, std_in = _stats(x)
    mean_out, std_out = _stats(out)
    assert not torch.allclose(mean_in, mean_out, atol=1e-3)
    assert not torch.allclose(std_in, std_out, atol=1e-3)


def test_mixstyle_applied_with_probability_p():
    x = _styled_batch(batch=4)
    torch.manual_seed(0)
    changed = sum(not torch.equal(mixstyle(x, p=0.4, alpha=0.3), x) for _ in range(400))
    assert 120 < changed < 200  # about 160 of 400


@pytest.mark.parametrize("seed", range(5))
def test_mixstyle_statistics_are_a_lambda_mix_of_a_pair(seed):
    """For every sample i there is a partner j and one lambda in [0, 1] such that, in every frequency
    bin, out mean = lam * mean_i + (1 - lam) * mean_j and out sigma = lam * sigma_i + (1 - lam) * sigma_j."""
    x = _styled_batch(seed=seed)
    torch.manual_seed(seed)
    out = mixstyle(x, p=1.0, alpha=0.3)
    mean_in, std_in = _stats(x)
    mean_out, std_out = _stats(out)
    partners = []
    for i in range(x.shape[0]):
        if torch.allclose(mean_out[i], mean_in[i], atol=1e-4) and torch.allclose(std_out[i], std_in[i], atol=1e-4):
            partners.append(i)  # lambda 1, or paired with itself
            continue
        found = None
        for j in range(x.shape[0]):
            if j == i:
                continue
            d_mean = mean_in[i] - mean_in[j]
            lam = ((mean_out[i] - mean_in[j]) @ d_mean / (d_mean @ d_mean)).item()
            if not -1e-4 <= lam <= 1 + 1e-4:
                continue
            mean_ok = torch.allclose(mean_out[i], lam * mean_in[i] + (1 - lam) * mean_in[j], atol=1e-3)
            std_ok = torch.allclose(std_out[i], lam * std_in[i] + (1 - lam) * std_in[j], atol=1e-3)
            if mean_ok and std_ok:
                found = j
                break
        assert found is not None, f"sample {i}: output statistics are no lambda-mix of any pair"
        partners.append(found)


def test_mixstyle_identical_samples_are_unchanged():
    one = _styled_batch(batch=1)
    x = one.repeat(8, 1, 1, 1)
    torch.manual_seed(0)
    out = mixstyle(x, p=1.0, alpha=0.3)
    assert torch.allclose(out, x, atol=1e-4)


def test_mixstyle_statistics_are_detached():
    """Mean and sigma are detached: d out / d x = mixed_sigma / sigma, constant along time."""
    x = _styled_batch().requires_grad_(True)
    torch.manual_seed(0)
    out = mixstyle(x, p=1.0, alpha=0.3)
    out.sum().backward()
    grad = x.grad
    assert torch.allclose(grad, grad[..., :1].expand_as(grad), atol=1e-5)
    _, std_in = _stats(x.detach())
    _, std_out = _stats(out.detach())
    assert torch.allclose(grad[:, 0, :, 0], std_out / std_in, rtol=1e-3)
