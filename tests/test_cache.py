"""The audio cache: same samples as the wav path, reuse, staleness, and the loaders built on it."""
import argparse
import os
import wave

import numpy as np
import pytest
import torch
import torchaudio
from torch.utils.data import DataLoader

from dataset import cache as cache_module
from dataset import dcase25
from dataset.audio import load_audio
from dataset.cache import AudioCache
from dataset.dcase25 import AudioDataset
from helpers.setup.data import input_sample_rate, make_loader
from helpers.setup.flags import build_parser
from helpers.training.augmentation import TrainingAugmentation
from models.frontend import LogMelFrontEnd


@pytest.fixture(scope="module")
def demo(demo_dir):
    return demo_dir


@pytest.fixture
def rows(demo):
    return dcase25.test_rows(demo, demo / "split_setup")


def build(cache_dir, demo, files, rate=32000):
    return AudioCache.open_or_build(cache_dir, demo, list(files), rate)


def test_cached_samples_are_the_resampled_wav_rounded_to_16_bit(tmp_path, demo, rows):
    cache = build(tmp_path, demo, rows["filename"])
    resample = torchaudio.transforms.Resample(44100, 32000)
    for name in rows["filename"][:5]:
        wav, _ = load_audio(demo / name)
        expected = resample(wav).half().float()
        assert torch.equal(cache.waveform(name), expected)
    # features from the cache equal the wav path's within the 16-bit rounding of the audio
    name = rows["filename"].iloc[0]
    from_wav = LogMelFrontEnd().eval()(load_audio(demo / name)[0][None])
    from_cache = LogMelFrontEnd(orig_sample_rate=32000).eval()(cache.waveform(name)[None])
    assert from_cache.shape == from_wav.shape == (1, 1, 256, 65)
    power_wav, power_cache = from_wav.exp(), from_cache.exp()
    assert ((power_wav - power_cache).abs() / (power_wav + 1e-3)).max() < 0.01


@pytest.mark.parametrize("num_workers", [0, 2])
def test_building_the_cache_leaves_the_global_random_state_alone(tmp_path, demo, rows, num_workers):
    """A seeded run that builds the cache trains like one that finds it built."""
    torch.manual_seed(0)
    AudioCache.open_or_build(tmp_path, demo, list(rows["filename"][:4]), 32000, num_workers=num_workers)
    after_building = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_building, torch.rand(3))


def test_cache_is_reused_and_serves_subsets(tmp_path, demo, rows, monkeypatch):
    first = build(tmp_path, demo, rows["filename"])
    monkeypatch.setattr(AudioCache, "_build", classmethod(lambda *a, **k: pytest.fail("rebuilt a valid cache")))
    again = build(tmp_path, demo, rows["filename"])
    subset = build(tmp_path, demo, rows["filename"][::3])
    assert again.array_path == first.array_path == subset.array_path
    name = rows["filename"].iloc[3]
    assert torch.equal(subset.waveform(name), first.waveform(name))


def test_stale_or_different_caches_are_rebuilt(tmp_path, demo, rows):
    files = list(rows["filename"][:6])
    first = build(tmp_path, demo, files)
    other_rate = build(tmp_path, demo, files, rate=16000)
    assert other_rate.array_path != first.array_path and other_rate.n_samples == 16000
    more_files = build(tmp_path, demo, files + [rows["filename"].iloc[7]])
    assert more_files.array_path != first.array_path
    # a changed file (new modification time) makes every cache holding it stale
    stat = os.stat(demo / files[0])
    os.utime(demo / files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = build(tmp_path, demo, files)
    assert rebuilt.array_path not in (first.array_path, more_files.array_path)


def test_resampler_change_invalidates(tmp_path, demo, rows, monkeypatch):
    files = list(rows["filename"][:4])
    first = build(tmp_path, demo, files)
    monkeypatch.setattr(cache_module, "resampler_signature", lambda: {"torchaudio": "other"})
    assert build(tmp_path, demo, files).array_path != first.array_path


def test_short_and_long_clips_are_padded_or_cut(tmp_path, capsys):
    folder = tmp_path / "data"
    (folder / "audio").mkdir(parents=True)
    for name, seconds in [("short.wav", 0.5), ("long.wav", 1.5), ("exact.wav", 1.0)]:
        with wave.open(str(folder / "audio" / name), "wb") as handle:
            handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(32000)
            handle.writeframes((np.ones(int(32000 * seconds)) * 1000).astype("<i2").tobytes())
    cache = build(tmp_path / "cache", folder, ["audio/short.wav", "audio/long.wav", "audio/exact.wav"])
    assert cache.array.shape == (3, 32000)
    short = cache.waveform("audio/short.wav")[0]
    assert short[:16000].abs().min() > 0 and short[16000:].abs().max() == 0
    assert "2 of 3 clips" in capsys.readouterr().out


def test_workers_read_the_cache_without_copying_it(tmp_path, demo, rows):
    cache = build(tmp_path, demo, rows["filename"])
    dataset = AudioDataset(demo, rows, cache=cache)
    in_process = torch.stack([dataset[i][0] for i in range(len(dataset))])
    _ = cache.array  # mapped here; the workers must map it themselves
    loaded = torch.cat([batch[0] for batch in DataLoader(dataset, batch_size=7, num_workers=2)])
    assert torch.equal(in_process, loaded)


def loader_args(**overrides):
    args = build_parser("base", "").parse_args(["--num_workers", "0", "--batch_size", "8"])
    return argparse.Namespace(**{**vars(args), **overrides})


def test_roll_range_is_the_same_in_seconds():
    args = loader_args()
    assert TrainingAugmentation.from_args(args, input_sample_rate(args)).roll_samples == 4410
    cached = loader_args(cache_dir="cache")
    assert TrainingAugmentation.from_args(cached, input_sample_rate(cached)).roll_samples == 3200


def test_evaluation_loader_keeps_each_device_together(demo, rows):
    shuffled = rows.sample(frac=1.0, random_state=0)
    devices = make_loader(demo, shuffled, loader_args(), False).dataset.devices
    changes = sum(a != b for a, b in zip(devices, devices[1:]))
    assert changes == len(set(devices)) - 1
    assert sorted(devices) == sorted(shuffled["source_label"])


def test_a_batch_read_in_one_go_equals_its_clips_read_one_by_one(tmp_path, demo, rows):
    cache = build(tmp_path / "cache", demo, rows["filename"].tolist())
    dataset = AudioDataset(demo, rows, cache=cache)
    indices = [7, 0, 3, 7, len(rows) - 1]  # any order, repeats allowed (a sampler's batch)
    together = dataset.__getitems__(indices)
    for got, index in zip(together, indices):
        one = dataset[index]
        assert torch.equal(got[0], one[0]) and got[0].shape == one[0].shape and got[0].dtype == torch.float32
        assert got[1:] == one[1:]
    # and the DataLoader takes this path: the same batches as without it
    loader = DataLoader(dataset, batch_size=4, shuffle=False)
    plain = DataLoader([dataset[i] for i in range(len(dataset))], batch_size=4, shuffle=False)
    for a, b in zip(loader, plain):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2:] == b[2:]
