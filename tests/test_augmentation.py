"""The training augmentations (helpers/training/augmentation.py): roll, DIR, mixup, masking, MixStyle, their
order, the impulse responses (dataset/impulse_responses.py), and the unchanged seeded baseline."""
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio

import train_base
import train_device_specific
from dataset.audio import load_audio
from dataset.demo import write_demo_impulse_responses, write_wav
from dataset.impulse_responses import load_impulse_responses
from helpers.base.errors import DataError
from helpers.setup.flags import build_parser, parse_args
from helpers.training.augmentation import (
    Mix,
    TrainingAugmentation,
    check_augmentation_flags,
    convolve_devices,
    mixstyle,
    mixup,
    roll_clips,
)
from helpers.training.builder import build_module
from helpers.training.losses import label_loss
from models.frontend import LogMelFrontEnd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seeded_losses  # noqa: E402  (the recording script: tests/seeded_losses.py)
from conftest import DEMO_SCALE, SHARED_DATA  # noqa: E402

LOG_FLOOR = math.log(1e-5)

# Printed by tests/seeded_losses.py (learning rate 0, see there): the augmentations must give these numbers
# bit for bit on the machine that recorded them. "defaults_worker" is not among them (see the script).
RECORDED_LOSSES = {
    "defaults": [2.343679189682007, 2.4591269493103027, 2.213247537612915, 2.285071611404419, 2.297292470932007,
                 2.3367979526519775, 2.371912717819214, 2.3509368896484375, 2.307927370071411, 2.3949830532073975],
    "no_roll_worker_cache": [2.2531707286834717, 2.319666862487793, 2.350925922393799, 2.317324638366699,
                             2.315436840057373, 2.228989839553833, 2.2546043395996094, 2.279784679412842,
                             2.257324457168579, 2.399470329284668],
}


@pytest.fixture(scope="module")
def demo(demo_dir):
    assert seeded_losses.DEMO_SCALE == DEMO_SCALE  # the losses were recorded on this demo set
    return demo_dir


@pytest.fixture(scope="module")
def responses_dir(tmp_path_factory):
    return write_demo_impulse_responses(tmp_path_factory.mktemp("irs") / "irs", count=6)


@pytest.fixture(scope="module")
def waveforms():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 1, 44100, generator=gen) * 0.1


def flags(*argv, stage="base"):
    return parse_args(build_parser(stage, ""), list(argv))


def rng_untouched(action):
    """Run ``action``; True when it drew no random number from torch's global generator."""
    state = torch.get_rng_state()
    action()
    return torch.equal(state, torch.get_rng_state())


# --- 1. the unchanged default ---

@pytest.mark.parametrize("setting", [pytest.param(s, marks=pytest.mark.slow) if "worker" in s else s
                                     for s in sorted(RECORDED_LOSSES)])  # a DataLoader worker: seconds more
def test_seeded_losses_equal_those_recorded_before_the_move(demo, tmp_path, setting):
    losses = seeded_losses.seeded_losses(demo, setting, tmp_path / "cache")
    # bit-identical on the machine that recorded them; the tolerance allows only for other CPUs' kernels,
    # far below what any change of an augmentation moves (docs/reliability.md)
    assert losses == pytest.approx(RECORDED_LOSSES[setting], rel=1e-5, abs=0)


def test_new_augmentations_are_off_by_default_and_draw_nothing(waveforms):
    for stage in ("base", "device"):
        args = flags(stage=stage)
        new_flags = (args.dir_dir, args.dir_p, args.dir_devices, args.mixup_alpha, args.mixup_p)
        assert new_flags == (None, 0.0, ["a"], 0.0, 1.0)
    augment = TrainingAugmentation.from_args(flags("--roll_sec", "0", "--freqm", "0", "--mixstyle_p", "0"), 44100)
    frontend = LogMelFrontEnd()
    result = {}
    assert rng_untouched(lambda: result.update(out=augment(waveforms, ["a"] * 4, frontend)))
    features, mix = result["out"]
    assert mix.partner is None and torch.equal(features, frontend(waveforms))


def test_order_is_roll_dir_mixup_front_end_masking_log_mixstyle(waveforms, responses_dir):
    args = flags("--dir_dir", str(responses_dir), "--dir_p", "0.7", "--mixup_alpha", "0.4", "--timem", "10",
                 "--mixstyle_p", "1")
    augment, frontend = TrainingAugmentation.from_args(args, 44100), LogMelFrontEnd()
    devices = ["a", "b", "a", "a"]
    torch.manual_seed(5)
    features, mix = augment(waveforms, devices, frontend)
    torch.manual_seed(5)  # the same draws, step by step in the documented order
    x = roll_clips(waveforms, 4410)
    x = convolve_devices(x, devices, augment.responses, 0.7, ("a",))
    x, expected_mix = mixup(x, 0.4, 1.0)
    mel = frontend.spectrogram(x)
    mel = torchaudio.transforms.TimeMasking(10, iid_masks=True)(
        torchaudio.transforms.FrequencyMasking(48, iid_masks=True)(mel))
    expected = mixstyle(frontend.finish(mel), 1.0, 0.3)
    assert torch.equal(features, expected)
    assert torch.equal(mix.partner, expected_mix.partner) and torch.equal(mix.weight, expected_mix.weight)


def test_evaluation_never_augments(waveforms, responses_dir):
    args = flags("--dir_dir", str(responses_dir), "--dir_p", "1", "--mixup_alpha", "0.3", "--timem", "20",
                 "--mixstyle_p", "1")
    module = build_module(vars(args)).train()
    with torch.no_grad():
        plain = module.model(module.frontend(waveforms))
        torch.manual_seed(0)
        first = module(waveforms, ["a"] * 4)
        torch.manual_seed(1)
        second = module(waveforms, ["a"] * 4)
        module.eval()  # inference computes the network as tested: eval mode
        evaluated = module.model(module.frontend(waveforms))
        inference = module.inference_logits(waveforms, ["a"] * 4)
    assert torch.equal(first, plain) and torch.equal(second, plain)
    assert torch.allclose(inference, evaluated, atol=1e-2)  # 16-bit input rounding only


def test_flags_are_recorded_and_responses_stay_out_of_checkpoints(responses_dir):
    args = flags("--dir_dir", str(responses_dir), "--dir_p", "0.6", "--dir_devices", "a", "b",
                 "--mixup_alpha", "0.3", "--mixup_p", "0.5", stage="device")
    module = build_module(vars(args))
    assert {k: module.hparams[k] for k in ("dir_dir", "dir_p", "dir_devices", "mixup_alpha", "mixup_p")} == \
        {"dir_dir": str(responses_dir), "dir_p": 0.6, "dir_devices": ["a", "b"], "mixup_alpha": 0.3, "mixup_p": 0.5}
    assert module.augment.responses.shape[0] == 6
    assert not any(key.startswith("augment") for key in module.state_dict())


# --- roll ---

def test_roll_shifts_every_clip_by_its_own_amount_circularly_within_range():
    torch.manual_seed(0)
    n, max_shift = 1000, 5
    clips = torch.arange(n, dtype=torch.float32).repeat(300, 1, 1)  # [300, 1, n] ramps: first value = -shift
    rolled = roll_clips(clips, max_shift)
    assert rolled.shape == clips.shape
    shifts = set()
    for clip in rolled:
        shift = int(clip[0, 0].item())
        shift = -shift if shift <= max_shift else n - shift  # rolled[0] = clip[-shift mod n]
        assert -max_shift <= shift <= max_shift
        assert torch.equal(clip, torch.roll(clips[0], shift, dims=-1))  # circular
        shifts.add(shift)
    assert shifts == set(range(-max_shift, max_shift + 1))  # uniform over all 2R + 1, both ends


def test_roll_zero_is_identity_and_draws_nothing():
    x = torch.randn(3, 1, 441)
    assert rng_untouched(lambda: torch.equal(roll_clips(x, 0), x))
    assert torch.equal(roll_clips(x, 0), x)


def test_roll_range_follows_the_rate_the_audio_arrives_at():
    assert TrainingAugmentation.from_args(flags(), 44100).roll_samples == 4410
    assert TrainingAugmentation.from_args(flags(), 32000).roll_samples == 3200
    assert TrainingAugmentation.from_args(flags("--roll_sec", "0"), 44100).roll_samples == 0


# --- frequency and time masking (on the mel power, before the log) ---

def masked(waveforms, freqm, timem, seed):
    augment = TrainingAugmentation(roll_samples=0, freqm=freqm, timem=timem, mixstyle_p=0)
    frontend = LogMelFrontEnd()
    with torch.no_grad():
        torch.manual_seed(seed)
        return augment(waveforms, ["a"] * len(waveforms), frontend)[0], frontend(waveforms)


def test_frequency_masking_masks_whole_mel_rows_before_the_log(waveforms):
    out, reference = masked(waveforms, 48, 0, seed=0)
    assert out.shape == reference.shape and not torch.equal(out, reference)
    row_floor = torch.isclose(out, torch.full_like(out, LOG_FLOOR)).all(dim=-1)  # power 0 before the log
    row_same = torch.isclose(out, reference, atol=1e-5).all(dim=-1)
    assert (row_floor | row_same).all() and row_floor.any()
    for sample in range(out.shape[0]):
        bins = torch.nonzero(row_floor[sample, 0]).flatten()
        if len(bins):
            assert len(bins) < 48  # width drawn from [0, freqm)
            assert torch.equal(bins, torch.arange(bins[0], bins[-1] + 1))  # one contiguous band
    # masks are drawn per sample (iid_masks)
    assert len({tuple(torch.nonzero(row_floor[s, 0]).flatten().tolist()) for s in range(4)}) > 1


def test_time_masking_masks_whole_frames(waveforms):
    out, reference = masked(waveforms, 0, 30, seed=1)
    frame_floor = torch.isclose(out, torch.full_like(out, LOG_FLOOR)).all(dim=-2)
    frame_same = torch.isclose(out, reference, atol=1e-5).all(dim=-2)
    assert (frame_floor | frame_same).all() and frame_floor.any()


# --- DIR ---

def test_dir_changes_only_the_selected_devices_clips_and_keeps_their_length(waveforms, responses_dir):
    responses, _ = load_impulse_responses(str(responses_dir), 44100)
    devices = ["a", "b", "s1", "a"]
    torch.manual_seed(0)
    out = convolve_devices(waveforms, devices, responses, 1.0, ("a",))
    assert out.shape == waveforms.shape
    changed = [not torch.equal(out[i], waveforms[i]) for i in range(4)]
    assert changed == [True, False, False, True]
    torch.manual_seed(0)
    out = convolve_devices(waveforms, devices, responses, 1.0, ("a", "s1"))
    assert [not torch.equal(out[i], waveforms[i]) for i in range(4)] == [True, False, True, True]


def test_dir_p1_convolves_every_selected_clip_with_one_of_the_responses(responses_dir):
    responses, _ = load_impulse_responses(str(responses_dir), 44100)
    clips = torch.randn(12, 1, 4000, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    out = convolve_devices(clips, ["a"] * 12, responses, 1.0, ("a",))
    used = set()
    for clip, result in zip(clips, out):
        # the direct implementation: numpy's full convolution, cut to the clip's length
        candidates = [np.convolve(clip[0].double().numpy(), r.double().numpy())[:4000] for r in responses]
        errors = [np.abs(result[0].double().numpy() - c).max() for c in candidates]
        assert min(errors) < 1e-4
        used.add(int(np.argmin(errors)))
    assert len(used) > 1  # drawn at random, clip by clip


def test_dir_p0_changes_nothing_and_draws_nothing(waveforms, responses_dir):
    responses, _ = load_impulse_responses(str(responses_dir), 44100)
    assert rng_untouched(lambda: convolve_devices(waveforms, ["a"] * 4, responses, 0.0, ("a",)))
    assert torch.equal(convolve_devices(waveforms, ["a"] * 4, responses, 0.0, ("a",)), waveforms)


def test_dir_probability_per_clip(responses_dir):
    responses, _ = load_impulse_responses(str(responses_dir), 44100)
    clips = torch.randn(400, 1, 256, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(4)
    out = convolve_devices(clips, ["a"] * 400, responses, 0.4, ("a",))
    changed = sum(not torch.equal(a, b) for a, b in zip(out, clips))
    assert 120 < changed < 200  # about 160 of 400


# --- the impulse responses: resampling, normalisation, the real ones, bad folders ---

def decaying_tone(rate, seconds=0.1, hz=1000.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.8 * np.sin(2 * np.pi * hz * t) * np.exp(-t / 0.02)
    return tone if channels == 1 else np.stack([tone, 0.5 * tone], axis=1)


@pytest.mark.parametrize("file_rate,target_rate", [(48000, 44100), (44100, 32000), (48000, 32000), (44100, 44100)])
def test_responses_are_resampled_once_to_the_audio_rate_and_have_unit_energy(tmp_path, file_rate, target_rate):
    write_wav(tmp_path / "mic.wav", decaying_tone(file_rate), file_rate)
    responses, names = load_impulse_responses(str(tmp_path), target_rate)
    as_read, _ = load_audio(tmp_path / "mic.wav")
    expected = torchaudio.transforms.Resample(file_rate, target_rate)(as_read)[0] if file_rate != target_rate \
        else as_read[0]
    assert names == ("mic.wav",)
    assert responses.shape == (1, math.ceil(len(as_read[0]) * target_rate / file_rate))
    assert torch.allclose(responses[0], expected / expected.norm(), atol=1e-6)
    assert responses[0].norm().item() == pytest.approx(1.0, abs=1e-5)
    spectrum = torch.fft.rfft(responses[0], n=target_rate).abs()  # 1 Hz bins: the tone stays at 1 kHz
    assert abs(int(spectrum.argmax()) - 1000) <= 2


def test_several_channels_are_averaged_and_shorter_responses_zero_padded(tmp_path):
    write_wav(tmp_path / "a_stereo.wav", decaying_tone(44100, channels=2), 44100)
    write_wav(tmp_path / "b_short.wav", decaying_tone(44100, seconds=0.03), 44100)
    responses, names = load_impulse_responses(str(tmp_path), 44100)
    stereo, _ = load_audio(tmp_path / "a_stereo.wav")  # the channels' mean, as the clips are read
    assert names == ("a_stereo.wav", "b_short.wav") and responses.shape == (2, 4410)
    assert torch.allclose(responses[0], stereo[0] / stereo[0].norm(), atol=1e-6)
    assert torch.equal(responses[1, 1323:], torch.zeros(4410 - 1323))
    assert torch.allclose(responses.norm(dim=1), torch.ones(2), atol=1e-5)


def test_demo_generator_writes_responses_of_both_rates_and_channel_counts(responses_dir, tmp_path):
    files = sorted(responses_dir.iterdir())
    assert [f.name for f in files] == [f"demo_ir_{i:02d}.wav" for i in range(1, 7)]
    import av
    layouts = set()
    for path in files:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            layouts.add((stream.rate, stream.channels))
    assert {rate for rate, _ in layouts} == {44100, 48000} and {ch for _, ch in layouts} == {1, 2}
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_demo_impulse_responses(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.skipif(not (SHARED_DATA / "micirp").is_dir(), reason="the real MicIRP responses are not here")
def test_real_micirp_responses_load():
    responses, names = load_impulse_responses(str(SHARED_DATA / "micirp"), 44100)
    assert len(names) == 66 and responses.shape == (66, 22050)  # the longest: 0.5 s at 44.1 kHz
    assert torch.allclose(responses.norm(dim=1), torch.ones(66), atol=1e-4)
    assert "BBCmarconi_B.wav" in names  # one of the 48 kHz files, resampled
    out = convolve_devices(torch.randn(2, 1, 44100), ["a", "a"], responses, 1.0, ("a",))
    assert out.shape == (2, 1, 44100) and torch.isfinite(out).all()


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"--dir_dir .*missing: no such folder"):
        load_impulse_responses(str(tmp_path / "missing"), 44100)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "licence.txt").write_text("not audio")
    with pytest.raises(DataError, match=r"--dir_dir .*empty holds no audio files \(\.wav"):
        load_impulse_responses(str(empty), 44100)
    broken = tmp_path / "broken"
    broken.mkdir()
    write_wav(broken / "good.wav", decaying_tone(44100), 44100)
    (broken / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    with pytest.raises(DataError, match=r"--dir_dir: .*bad\.wav cannot be decoded"):
        load_impulse_responses(str(broken), 44100)
    silent = tmp_path / "silent"
    silent.mkdir()
    write_wav(silent / "zeros.wav", np.zeros(4410), 48000)
    with pytest.raises(DataError, match=r"--dir_dir: .*zeros\.wav is silent \(every sample is below 1e-06\)"):
        load_impulse_responses(str(silent), 44100)
    not_finite = tmp_path / "not_finite"
    not_finite.mkdir()
    samples = np.zeros(100, dtype="<f4")
    samples[[0, 5]] = 1.0, np.nan
    data = samples.tobytes()  # a 32-bit float wav, which can hold NaN
    (not_finite / "nan.wav").write_bytes(
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " +
        struct.pack("<IHHIIHH", 16, 3, 1, 44100, 44100 * 4, 4, 32) + b"data" + struct.pack("<I", len(data)) + data)
    with pytest.raises(DataError, match=r"--dir_dir: .*nan\.wav holds samples that are not finite numbers"):
        load_impulse_responses(str(not_finite), 44100)



@pytest.mark.parametrize("argv,message", [
    (["--dir_p", "0.5"], "--dir_p 0.5 needs --dir_dir FOLDER"),
    (["--dir_p", "1.5", "--dir_dir", "x"], "--dir_p 1.5: a probability lies between 0 and 1"),
    (["--mixup_p", "-0.1"], "--mixup_p -0.1: a probability"),
    (["--mixup_alpha", "-1"], "--mixup_alpha -1.0: the Beta parameter must be positive"),
    (["--dir_devices", "a", "phone"], "--dir_devices: unknown device phone"),
])
def test_bad_flags_are_clear_errors(argv, message):
    with pytest.raises(DataError, match=message):
        check_augmentation_flags(flags(*argv))


@pytest.mark.parametrize("script", [train_base, train_device_specific])
def test_a_bad_folder_stops_both_scripts_before_anything_is_written(demo, tmp_path, monkeypatch, script):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--dir_dir empty holds no audio files"):
        script.main(["--demo", "--demo_dir", str(demo), "--dir_dir", "empty", "--dir_p", "0.5",
                     "--wandb_mode", "disabled", "--num_workers", "0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no run folder, no cache, no wandb


# --- mixup ---

def direct_mix(tensor, partner, weight):
    return torch.stack([weight[i] * tensor[i] + (1 - weight[i]) * tensor[partner[i]] for i in range(len(tensor))])


@pytest.fixture
def pairing():
    gen = torch.Generator().manual_seed(7)
    return Mix(torch.randperm(8, generator=gen), torch.rand(8, generator=gen))


def test_mix_targets_mix_labels_and_teacher_probabilities_like_a_direct_implementation(pairing):
    labels = torch.tensor([0, 3, 9, 3, 1, 5, 5, 2])
    one_hot = F.one_hot(labels, 10).float()
    teacher = torch.softmax(torch.randn(8, 10, generator=torch.Generator().manual_seed(8)) / 2.0, dim=1)
    for targets in (one_hot, teacher):
        mixed = pairing.targets(targets)
        assert torch.allclose(mixed, direct_mix(targets, pairing.partner, pairing.weight), atol=1e-7)
        assert torch.allclose(mixed.sum(dim=1), torch.ones(8), atol=1e-6)  # still distributions
    assert torch.equal(Mix().targets(teacher), teacher)


def test_mixed_label_loss_equals_a_direct_implementation(pairing):
    labels = torch.tensor([0, 3, 9, 3, 1, 5, 5, 2])
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(9))
    loss = label_loss(logits, labels, pairing)
    log_p = torch.log_softmax(logits, dim=1)
    weight, partner = pairing.weight, pairing.partner
    direct = sum(-(weight[i] * log_p[i, labels[i]] + (1 - weight[i]) * log_p[i, labels[partner[i]]])
                 for i in range(8)) / 8
    assert loss.item() == pytest.approx(direct.item(), rel=1e-6)
    soft = F.cross_entropy(logits, pairing.targets(F.one_hot(labels, 10).float()))  # the same via mixed targets
    assert loss.item() == pytest.approx(soft.item(), rel=1e-6)
    assert torch.equal(label_loss(logits, labels, Mix()), F.cross_entropy(logits, labels))


def test_mixup_mixes_the_waveforms_with_the_pairing_it_returns(waveforms):
    torch.manual_seed(0)
    mixed, mix = mixup(waveforms, 0.3, 1.0)
    assert torch.allclose(mixed, direct_mix(waveforms, mix.partner, mix.weight), atol=1e-7)
    assert sorted(mix.partner.tolist()) == [0, 1, 2, 3]
    assert ((mix.weight >= 0) & (mix.weight <= 1)).all() and (mix.weight < 1).all()


def test_mixup_probability_per_clip_and_off_draws_nothing():
    clips = torch.randn(400, 1, 8)
    torch.manual_seed(1)
    _, mix = mixup(clips, 0.3, 0.4)
    assert 120 < int((mix.weight < 1).sum()) < 200  # about 160 of 400 mixed
    for alpha, p in ((0.0, 1.0), (0.3, 0.0)):
        assert rng_untouched(lambda alpha=alpha, p=p: mixup(clips, alpha, p))
        out, off = mixup(clips, alpha, p)
        assert torch.equal(out, clips) and off.partner is None


def test_training_step_mixes_features_of_mixed_waveforms_and_their_labels(waveforms):
    args = flags("--roll_sec", "0", "--freqm", "0", "--mixstyle_p", "0", "--mixup_alpha", "0.3")
    module = build_module(vars(args))
    torch.manual_seed(2)
    features, mix = module.augment(waveforms, ["a"] * 4, module.frontend)
    expected = module.frontend(direct_mix(waveforms, mix.partner, mix.weight))
    assert torch.allclose(features, expected, atol=1e-4)
