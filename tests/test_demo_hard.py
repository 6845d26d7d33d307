"""Tests for the hard variant of the demo set (``--variant hard``: dataset/demo/hard_*.py).

Its layout against the default's, determinism, the default variant left as it was, the markers of the
two variants, the devices made by impulse responses (the unseen ones never among the responses written
for ``--dir_dir``), and that it is harder than the default for a nearest-class-mean classifier.
"""

import hashlib
import json
import os
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from test_demo_data import NAME_PATTERN, parse, read_tsv, read_wav

from dataset import demo
from dataset.demo import hard_devices

SCALE = 0.15  # 205 training and 180 test clips per variant: the classifier test needs a few test locations
TINY = 0.02  # one clip per scene and device: for the tests of writing and markers
CSV_FILES = ("meta.csv", "split_setup/split25.csv", "split_setup/test.csv", "eval/evaluation_setup/fold1_test.csv")

# The default variant's files as recorded (seed 0, scale 0.05: conftest's demo_dir): the hard variant leaves
# them unchanged.
DEFAULT_SHA256 = {
    ".demo_complete": "d5781a1c4cfd0629026ef84b4d45d987dbaaa84e947bafff830a8a884c7f7238",
    "meta.csv": "6e8c1cac6623681bf4fb7436fca0b9b52b8093d1944a106fa3ef84b850186a6c",
    "split_setup/split25.csv": "d493b7c230da1523aef95b6dc5628c8a414ebf785b628c0e3bde5b6dd7a08805",
    "split_setup/test.csv": "dd785d83330e2a686878c01b11614f8dd64dca2ee92dab29a813fbea7e5fbbf8",
    "eval/evaluation_setup/fold1_test.csv": "14657b8234622b7101785b80f79bc84be8a46ef52248a2db591186d4fe2b0805",
}
# a few samples (24-bit integers) of three of its wav files: compared within 1 step, since another numpy
# may round a sample differently
SAMPLE_POSITIONS = (0, 1, 2205, 7777, 22050, 31415, 40000, 44099)
DEFAULT_SAMPLES = {
    "audio/airport-barcelona-0-0-0-a.wav": (-4292, 71038, -70070, -132632, -115534, -74351, -221697, -30598),
    "audio/bus-london-3-0-0-s5.wav": (-390810, -484932, -541835, -71227, -159521, -100256, -447671, 71485),
    "eval/audio/3.wav": (272204, 298652, 38589, -45640, 93875, 350298, -315747, 271760),
}


@pytest.fixture(scope="module")
def default_root(tmp_path_factory):
    return demo.write_demo_dataset(tmp_path_factory.mktemp("default") / "demo", scale=SCALE)


@pytest.fixture(scope="module")
def hard_root(tmp_path_factory):
    return demo.write_demo_dataset(tmp_path_factory.mktemp("hard") / "demo", scale=SCALE, variant="hard")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, demo_dir):
    """``copy(variant, where)``: a copy of a small demo set of that variant: the hard one at ``TINY`` (written
    once), the default one conftest's."""
    written = {"default": demo_dir}

    def copy(variant: str, where):
        if variant not in written:
            written[variant] = demo.write_demo_dataset(tmp_path_factory.mktemp(variant) / "demo", scale=TINY,
                                                       variant=variant)
        return shutil.copytree(written[variant], where, copy_function=shutil.copy2)
    return copy


def file_bytes(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def device(name: str) -> str:
    return parse(name)["device"]


# --------------------------------------------------------------------------
# Layout and determinism
# --------------------------------------------------------------------------

def devices_of(name: str, rows) -> list:
    """The device of every row, sorted (``device_id`` in the evaluation csv)."""
    return sorted(row["device_id"] if name.startswith("eval") else device(row["filename"]) for row in rows)


def place(row) -> str:
    return row["filename"].rsplit("-", 3)[0]  # audio/scene-city-location


def test_layout_as_the_default(default_root, hard_root):
    default_files, hard_files = (sorted(str(p.relative_to(r)) for p in r.rglob("*") if p.suffix != ".wav")
                                 for r in (default_root, hard_root))
    assert hard_files == default_files  # the same csv files, folders and marker
    assert len(list(hard_root.rglob("*.wav"))) == len(list(default_root.rglob("*.wav")))
    for name in CSV_FILES:
        default_header, default_rows = read_tsv(default_root / name)
        hard_header, hard_rows = read_tsv(hard_root / name)
        assert hard_header == default_header, name
        assert devices_of(name, hard_rows) == devices_of(name, default_rows), name  # the same devices, as often
    meta = read_tsv(hard_root / "meta.csv")[1]
    assert {row["filename"] for row in meta} == {f"audio/{p.name}" for p in (hard_root / "audio").iterdir()}
    assert all(NAME_PATTERN.match(row["filename"]) for row in meta)
    # train and test locations disjoint; the hard variant has more of them
    split25 = read_tsv(hard_root / "split_setup" / "split25.csv")[1]
    test = read_tsv(hard_root / "split_setup" / "test.csv")[1]
    assert not {place(r) for r in split25} & {place(r) for r in test}
    default_places = {place(r) for r in read_tsv(default_root / "split_setup" / "split25.csv")[1]}
    assert len({place(r) for r in split25}) > len(default_places)


def test_deterministic(tmp_path, tiny, hard_root):
    first = file_bytes(tiny("hard", tmp_path / "one"))
    second = file_bytes(demo.write_demo_dataset(tmp_path / "two", seed=0, scale=TINY, variant="hard"))
    other = file_bytes(demo.write_demo_dataset(tmp_path / "other", seed=4, scale=TINY, variant="hard"))
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[k] != other[k] for k in first if k.endswith(".wav"))
    # a clip's sound does not depend on the scale either
    larger = {f"audio/{p.name}" for p in (hard_root / "audio").iterdir()}
    shared = [k for k in first if k.startswith("audio/") and k in larger]
    assert len(shared) > 100
    assert all(first[k] == (hard_root / k).read_bytes() for k in shared)
    irs = [file_bytes(demo.write_demo_impulse_responses(tmp_path / f"irs{i}", seed=3, variant="hard"))
           for i in range(2)]
    assert irs[0] == irs[1] and len(irs[0]) == hard_devices.HARD_TRAINING_RESPONSES


def test_sound_is_sane(hard_root):
    names = [row["filename"] for row in read_tsv(hard_root / "meta.csv")[1][::11]]
    for name in names:
        samples = read_wav(hard_root / name)
        assert 1e-4 < np.sqrt(np.mean(samples ** 2)) < 0.5, name
        assert np.mean(np.abs(samples) > 0.999) < 1e-3, name


# --------------------------------------------------------------------------
# The default variant is as it was
# --------------------------------------------------------------------------

def test_default_as_before_the_variant(demo_dir):
    for name, digest in DEFAULT_SHA256.items():
        assert hashlib.sha256((demo_dir / name).read_bytes()).hexdigest() == digest, name
    for name, expected in DEFAULT_SAMPLES.items():
        samples = np.round(read_wav(demo_dir / name) * 2 ** 23).astype(int)[list(SAMPLE_POSITIONS)]
        assert np.max(np.abs(samples - np.array(expected))) <= 1, name


def test_default_never_runs_the_variant_code(demo_dir, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the default variant called code of the hard one")

    modules = [module for name, module in sys.modules.items() if name.startswith("dataset.demo.")]
    hard = [(module, name) for module in modules for name, value in vars(module).items()
            if name.lower().startswith(("hard_", "_hard_")) and callable(value)]
    assert len({name for _, name in hard}) > 10  # the hard modules' functions, named so, wherever they are used
    for module, name in hard:
        monkeypatch.setattr(module, name, refuse)
    root = demo.write_demo_dataset(tmp_path / "demo", scale=0.05)
    assert file_bytes(root) == file_bytes(demo_dir)
    demo.write_demo_impulse_responses(tmp_path / "irs", count=2)


# --------------------------------------------------------------------------
# Markers: a folder of one variant is never taken for, or replaced by, the other
# --------------------------------------------------------------------------

def test_marker_records_the_variant(tmp_path, tiny):
    hard = tiny("hard", tmp_path / "hard")
    assert json.loads((hard / ".demo_complete").read_text()) == {
        "version": demo.DEMO_VERSION, "seed": 0, "scale": TINY, "variant": "hard",
        "variant_version": demo.HARD_VERSION}
    assert demo.is_complete(hard) and demo.is_complete(hard, "hard") and not demo.is_complete(hard, "default")
    assert demo.demo_variant(hard) == "hard"
    marker = hard / ".demo_complete"
    marker.write_text(marker.read_text().replace(f'"variant_version": {demo.HARD_VERSION}', '"variant_version": 0'))
    assert not demo.is_complete(hard)  # an outdated hard variant is not complete


@pytest.mark.parametrize("present, wanted", [("hard", "default"), ("default", "hard")])
def test_other_variant_is_not_replaced_silently(tmp_path, tiny, present, wanted):
    root = tiny(present, tmp_path / "my_demo")
    before = file_bytes(root)
    scale = json.loads((root / ".demo_complete").read_text())["scale"]
    with pytest.raises(FileExistsError, match=r"my_demo.*--demo_dir.*--force"):
        demo.write_demo_dataset(root, scale=scale, variant=wanted)
    assert file_bytes(root) == before
    if wanted == "default":  # (writing the other way round costs as long again)
        demo.write_demo_dataset(root, scale=TINY, variant=wanted, force=True)
        assert demo.is_complete(root, wanted) and not (root / ".demo_in_progress").exists()


def test_training_uses_a_hard_folder_as_it_is(tmp_path, tiny, capsys):
    from helpers.setup.data import prepare_dataset_dir
    root = tiny("hard", tmp_path / "hard")
    os.utime(root / "meta.csv", ns=(1, 1))  # a rewrite would show
    assert prepare_dataset_dir(SimpleNamespace(demo=True, dataset_dir=str(root))) == root
    assert (root / "meta.csv").stat().st_mtime_ns == 1
    assert "hard variant" in capsys.readouterr().out
    # an unfinished hard folder is refused, not replaced by the default variant
    (root / ".demo_complete").rename(root / ".demo_in_progress")
    with pytest.raises(FileExistsError, match="hard variant"):
        prepare_dataset_dir(SimpleNamespace(demo=True, dataset_dir=str(root)))
    assert (root / "meta.csv").stat().st_mtime_ns == 1


# --------------------------------------------------------------------------
# Devices: s1-s6 are a's clip through their responses; the unseen ones are never written for --dir_dir
# --------------------------------------------------------------------------

def test_simulated_devices_are_device_a_through_their_response(hard_root):
    test = [row["filename"] for row in read_tsv(hard_root / "split_setup" / "test.csv")[1]]
    a_names = [n for n in test if n.endswith("-a.wav")][:4]
    for name in a_names:
        a = read_wav(hard_root / name)
        for simulated, (_, noise_dbfs) in hard_devices.HARD_SIMULATED_DEVICES.items():
            recorded = read_wav(hard_root / name.replace("-a.wav", f"-{simulated}.wav"))
            through = np.fft.irfft(np.fft.rfft(a) * hard_devices.hard_device_transfer(simulated, 0), n=a.size)
            residual_db = 10 * np.log10(np.mean((recorded - through) ** 2))
            assert residual_db < noise_dbfs + 1, (name, simulated)  # what remains is the self-noise


def similarity(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(largest normalised cross-correlation over all shifts, std in dB of the ratio of the magnitude
    responses, 100 Hz - 10 kHz): a rescaled, shifted copy gives (1, 0)."""
    n = x.size + y.size
    correlation = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(y, n)), n)
    peak = float(np.abs(correlation).max() / np.linalg.norm(x) / np.linalg.norm(y))
    freqs = np.fft.rfftfreq(8192, 1 / 44_100)
    band = (freqs > 100) & (freqs < 10_000)
    ratio_db = 20 * np.log10(np.abs(np.fft.rfft(x, 8192)[band]) / np.abs(np.fft.rfft(y, 8192)[band]))
    return peak, float(np.std(ratio_db))


def test_unseen_devices_responses_are_not_written(tmp_path):
    folder = demo.write_demo_impulse_responses(tmp_path / "irs", seed=0, variant="hard")
    written = [read_wav(path) for path in sorted(folder.glob("*.wav"))]
    assert len(written) == hard_devices.HARD_TRAINING_RESPONSES
    devices = {d: hard_devices.hard_microphone_impulse_response(i, 0)
               for d, i in hard_devices.HARD_DEVICE_RESPONSE_INDEX.items()}
    # the measure finds a copy: s4's response, halved and delayed, written and read back
    demo.write_wav(tmp_path / "copy.wav", 0.5 * np.concatenate([np.zeros(37), devices["s4"]]))
    peak, spread_db = similarity(read_wav(tmp_path / "copy.wav"), devices["s4"])
    assert peak > 0.999 and spread_db < 0.1
    for name in ("s4", "s5", "s6", "s1", "s2", "s3"):  # no device's response, unseen ones above all
        for response in written:
            peak, spread_db = similarity(response, devices[name])
            assert peak < 0.95 and spread_db > 1.0, name
    # yet they are of the same family: responses of similar length and peak
    assert all(0.4 < np.abs(r).max() / 0.9 < 1.01 for r in written)


# --------------------------------------------------------------------------
# Harder than the default
# --------------------------------------------------------------------------

def nearest_class_mean_accuracy(root) -> tuple[float, int]:
    """Log band energies (16 bands, 50 Hz - 16 kHz) + nearest class mean, trained on split25, scored on test."""
    bands = np.geomspace(50, 16_000, 17)
    freqs = np.fft.rfftfreq(44_100, 1 / 44_100)
    masks = [(freqs >= lo) & (freqs < hi) for lo, hi in zip(bands[:-1], bands[1:])]

    def features(rows):
        power = np.abs(np.fft.rfft(np.stack([read_wav(root / row["filename"]) for row in rows]), axis=1)) ** 2
        return (np.log(np.stack([power[:, m].mean(axis=1) for m in masks], axis=1) + 1e-20),
                np.array([demo.SCENES.index(row["scene_label"]) for row in rows]))

    train_x, train_y = features(read_tsv(root / "split_setup" / "split25.csv")[1])
    test_x, test_y = features(read_tsv(root / "split_setup" / "test.csv")[1])
    means = np.stack([train_x[train_y == k].mean(axis=0) for k in range(len(demo.SCENES))])
    predictions = np.argmin(((test_x[:, None, :] - means[None]) ** 2).sum(axis=-1), axis=1)
    return float(np.mean(predictions == test_y)), test_y.size


def test_harder_than_the_default(default_root, hard_root):
    default_accuracy, n = nearest_class_mean_accuracy(default_root)
    hard_accuracy, _ = nearest_class_mean_accuracy(hard_root)
    # lower by more than two standard errors of the difference of two accuracies on n clips each
    standard_error = np.sqrt((default_accuracy * (1 - default_accuracy) + hard_accuracy * (1 - hard_accuracy)) / n)
    print(f"nearest class mean: default {default_accuracy:.3f}, hard {hard_accuracy:.3f} ({n} test clips)")
    assert default_accuracy - hard_accuracy > 2 * standard_error, (default_accuracy, hard_accuracy)
    chance = 1 / len(demo.SCENES)
    assert hard_accuracy > chance + 2 * np.sqrt(chance * (1 - chance) / n)  # not noise
