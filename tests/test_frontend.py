"""Front end: resampling and log-mel (the augmentations are tested in test_augmentation.py)."""
import pytest
import torch

from models.frontend import LogMelFrontEnd


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


def test_eval_matches_reference_computation(waveforms):
    import torchaudio
    frontend = LogMelFrontEnd().eval()
    resampled = torchaudio.transforms.Resample(44100, 32000)(waveforms)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=32000, n_fft=4096, win_length=3072, hop_length=500,
                                               n_mels=256, f_min=0, f_max=None)(resampled)
    with torch.no_grad():
        assert torch.allclose(frontend(waveforms), (mel + 1e-5).log(), atol=1e-5)


def test_front_end_never_augments_and_its_halves_compose(waveforms):
    frontend = LogMelFrontEnd()
    with torch.no_grad():
        reference = frontend.eval()(waveforms)
        assert torch.equal(frontend.train()(waveforms), reference)  # masking lives in the augmentation module
        assert torch.equal(frontend.finish(frontend.spectrogram(waveforms)), reference)
