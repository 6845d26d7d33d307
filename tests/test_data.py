"""Audio decoding, split files (download with no network), split selection and the dataset."""
import struct
import urllib.error
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dataset import dcase25, validation
from dataset.audio import load_audio
from dataset.dcase25 import (
    CLASSES,
    DATASET_DIR_ENV,
    SPLIT_URL,
    AudioDataset,
    DataError,
    resolve_dataset_dir,
    select_split,
    split_file,
    training_rows,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_wav(path, samples, sample_width, sample_rate=44100, channels=1):
    """Write integer ``samples`` (interleaved when ``channels`` > 1) as little-endian PCM."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sample_width == 2:
        frames = struct.pack(f"<{len(samples)}h", *samples)
    elif sample_width == 3:
        values = np.asarray(samples, dtype="<i4")  # low three bytes of each little-endian int32
        frames = values.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raise ValueError(sample_width)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(sample_width)
        handle.setframerate(sample_rate)
        handle.writeframes(frames)


def test_load_audio_16bit_exact(tmp_path):
    samples = [0, 1, -1, 32767, -32768, 12345, -20000, 7] * 50
    path = tmp_path / "pcm16.wav"
    write_wav(path, samples, 2, sample_rate=16000)
    audio, rate = load_audio(path)
    assert rate == 16000
    assert audio.dtype == torch.float32
    assert audio.shape == (1, len(samples))
    expected = torch.tensor(samples, dtype=torch.float64) / 2 ** 15
    assert torch.equal(audio.double()[0], expected)


def test_load_audio_24bit_exact(tmp_path):
    samples = [0, 1, -1, 2 ** 23 - 1, -(2 ** 23), 4_000_001, -1_234_567, 255, 256, -257] * 40
    path = tmp_path / "pcm24.wav"
    write_wav(path, samples, 3, sample_rate=44100)
    audio, rate = load_audio(path)
    assert rate == 44100
    assert audio.dtype == torch.float32
    assert audio.shape == (1, len(samples))
    expected = torch.tensor(samples, dtype=torch.float64) / 2 ** 23
    assert torch.equal(audio.double()[0], expected)


def test_load_audio_24bit_one_second(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.integers(-(2 ** 23), 2 ** 23, size=44100).tolist()
    path = tmp_path / "second.wav"
    write_wav(path, samples, 3)
    audio, rate = load_audio(path)
    assert rate == 44100 and audio.shape == (1, 44100)
    assert torch.equal(audio.double()[0], torch.tensor(samples, dtype=torch.float64) / 2 ** 23)


@pytest.mark.parametrize("width, scale", [(2, 2 ** 15), (3, 2 ** 23)])
def test_load_audio_stereo_is_mixed_to_mono(tmp_path, width, scale):
    left = [100, -200, 300, 1000, 0, 8] * 30
    right = [300, 200, -100, -1000, 0, 2] * 30
    interleaved = [v for pair in zip(left, right) for v in pair]
    path = tmp_path / "stereo.wav"
    write_wav(path, interleaved, width, sample_rate=22050, channels=2)
    audio, rate = load_audio(path)
    assert rate == 22050
    assert audio.shape == (1, len(left))
    expected = (torch.tensor(left, dtype=torch.float64) + torch.tensor(right, dtype=torch.float64)) / 2 / scale
    assert torch.allclose(audio.double()[0], expected, atol=1e-9)


def test_load_audio_real_clip():
    path = SHARED_DATA / "real_clip.wav"
    if not path.is_file():
        pytest.skip("shared real clip not present")
    audio, rate = load_audio(path)
    assert rate == 44100
    assert audio.shape == (1, 44100)
    assert audio.dtype == torch.float32
    assert audio.abs().max() <= 1.0 and audio.abs().max() > 0
    # 24-bit PCM: every value is an integer multiple of 2**-23
    scaled = audio.double() * 2 ** 23
    assert torch.equal(scaled, scaled.round())


# ---------------------------------------------------------------- a synthetic data folder

SPLIT25 = [  # devices a, b, c, s1, s2, s3 only; deliberately not in meta order
    ("airport", "barcelona-1", 0, "s1"),
    ("bus", "helsinki-2", 0, "a"),
    ("tram", "lyon-3", 1, "b"),
    ("park", "paris-4", 0, "c"),
    ("metro_station", "prague-5", 2, "a"),
    ("street_traffic", "vienna-6", 0, "s2"),
    ("shopping_mall", "london-7", 1, "s3"),
]
TEST = [  # all nine devices
    ("metro", "milan-8", 0, "a"),
    ("public_square", "lisbon-9", 0, "b"),
    ("street_pedestrian", "stockholm-10", 0, "c"),
    ("airport", "barcelona-11", 0, "s1"),
    ("bus", "helsinki-12", 0, "s2"),
    ("tram", "lyon-13", 0, "s3"),
    ("park", "paris-14", 0, "s4"),
    ("metro_station", "prague-15", 0, "s5"),
    ("shopping_mall", "london-16", 0, "s6"),
]
EXTRA = [  # in meta.csv, but in neither split
    ("airport", "barcelona-17", 0, "a"),
    ("bus", "helsinki-18", 0, "s1"),
    ("tram", "lyon-19", 0, "s4"),
]


def filename(row):
    scene, identifier, segment, device = row
    return f"audio/{scene}-{identifier}-{segment}-0-{device}.wav"


@pytest.fixture
def data_folder(tmp_path):
    dataset_dir = tmp_path / "data"
    split_dir = dataset_dir / "split_setup"
    split_dir.mkdir(parents=True)
    rows = EXTRA[:1] + TEST[::-1] + SPLIT25[::-1] + EXTRA[1:]  # meta order differs from the splits'
    meta = pd.DataFrame([{"filename": filename(r), "scene_label": r[0], "identifier": r[1], "source_label": r[3]}
                         for r in rows])
    meta.to_csv(dataset_dir / "meta.csv", sep="\t", index=False)
    for name, split in (("split25.csv", SPLIT25), ("test.csv", TEST)):
        pd.DataFrame({"filename": [filename(r) for r in split], "scene_label": [r[0] for r in split]}).to_csv(
            split_dir / name, sep="\t", index=False)
    for i, row in enumerate(SPLIT25 + TEST[:2]):
        write_wav(dataset_dir / filename(row), [(i * 1000 + k) % 2 ** 23 - 2 ** 22 for k in range(44100)], 3)
    return dataset_dir, split_dir


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(url, filename=None, *args, **kwargs):
        calls.append((url, filename))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlretrieve", refuse)
    return calls


def test_meta_is_tab_separated(data_folder):
    dataset_dir, _ = data_folder
    first = (dataset_dir / "meta.csv").read_text().splitlines()[0]
    assert first == "filename\tscene_label\tidentifier\tsource_label"


def test_training_rows_are_the_split25_files_in_order(data_folder, no_network):
    dataset_dir, split_dir = data_folder
    rows = training_rows(dataset_dir, split_dir)
    assert rows["filename"].tolist() == [filename(r) for r in SPLIT25]
    assert rows["scene_label"].tolist() == [r[0] for r in SPLIT25]
    assert rows["source_label"].tolist() == [r[3] for r in SPLIT25]
    assert not set(rows["filename"]) & {filename(r) for r in EXTRA + TEST}
    assert list(rows.index) == list(range(len(SPLIT25)))
    assert no_network == []


def test_training_rows_device_filter(data_folder, no_network):
    dataset_dir, split_dir = data_folder
    rows = training_rows(dataset_dir, split_dir, devices=["a"])
    assert rows["filename"].tolist() == [filename(r) for r in SPLIT25 if r[3] == "a"]
    rows = training_rows(dataset_dir, split_dir, devices=("s1", "c"))
    assert rows["filename"].tolist() == [filename(r) for r in SPLIT25 if r[3] in ("s1", "c")]
    with pytest.raises(DataError, match="s4"):
        training_rows(dataset_dir, split_dir, devices=["s4"])  # no s4 in the 25 % split


def test_test_rows_select_the_test_split(data_folder, no_network):
    dataset_dir, split_dir = data_folder
    rows = dcase25.test_rows(dataset_dir, split_dir)
    assert rows["filename"].tolist() == [filename(r) for r in TEST]
    assert sorted(rows["source_label"]) == sorted(["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"])
    rows = dcase25.test_rows(dataset_dir, split_dir, devices=["s5"])
    assert rows["filename"].tolist() == [filename(TEST[7])]


@pytest.mark.parametrize("subset", [5, 10, 50, 100])
def test_other_subsets_are_refused(data_folder, no_network, subset):
    dataset_dir, split_dir = data_folder
    with pytest.raises(DataError) as info:
        training_rows(dataset_dir, split_dir, subset=subset)
    assert "25" in str(info.value)
    assert no_network == []  # refused before anything is downloaded


def test_audio_dataset_items(data_folder):
    dataset_dir, split_dir = data_folder
    rows = training_rows(dataset_dir, split_dir)
    dataset = AudioDataset(dataset_dir, rows)
    assert len(dataset) == len(SPLIT25)
    for index, row in enumerate(SPLIT25):
        waveform, label, device, name = dataset[index]
        assert waveform.dtype == torch.float32 and waveform.shape == (1, 44100)
        assert label == CLASSES.index(row[0])
        assert device == row[3]
        assert name == filename(row)
        expected = torch.tensor([(index * 1000 + k) % 2 ** 23 - 2 ** 22 for k in range(44100)],
                                dtype=torch.float64) / 2 ** 23
        assert torch.equal(waveform.double()[0], expected)  # the audio as read: no augmentation


def test_audio_dataset_class_order_is_fixed():
    assert CLASSES == ["airport", "bus", "metro", "metro_station", "park", "public_square",
                       "shopping_mall", "street_pedestrian", "street_traffic", "tram"]


def test_audio_dataset_missing_labels(data_folder):
    dataset_dir, split_dir = data_folder
    rows = training_rows(dataset_dir, split_dir)
    unlabeled = rows[["filename", "source_label"]]
    item = AudioDataset(dataset_dir, unlabeled)[1]
    assert item[1] == -1 and item[2] == SPLIT25[1][3]


def test_missing_split_without_network(tmp_path, no_network):
    split_dir = tmp_path / "split_setup"
    with pytest.raises(DataError) as info:
        split_file(split_dir, "split25.csv")
    message = str(info.value)
    assert "split25.csv" in message
    assert SPLIT_URL + "split25.csv" in message
    assert SPLIT_URL == "https://github.com/CPJKU/dcase2024_task1_baseline/releases/download/files/"
    assert str(split_dir) in message
    assert len(no_network) == 1 and no_network[0][0] == SPLIT_URL + "split25.csv"
    assert list(split_dir.iterdir()) == []  # nothing left behind


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    def partial_then_fail(url, filename=None, *args, **kwargs):
        Path(filename).write_text("filename\tscene_label\naudio/half")
        raise urllib.error.URLError("connection reset")

    monkeypatch.setattr(urllib.request, "urlretrieve", partial_then_fail)
    split_dir = tmp_path / "splits"
    with pytest.raises(DataError, match="test.csv"):
        split_file(split_dir, "test.csv")
    assert list(split_dir.iterdir()) == []
    # a second call tries again rather than trusting a leftover
    with pytest.raises(DataError):
        split_file(split_dir, "test.csv")


def test_successful_download_gets_the_real_name(tmp_path, monkeypatch):
    content = "filename\tscene_label\naudio/airport-x-0-0-a.wav\tairport\n"

    def fake_download(url, filename=None, *args, **kwargs):
        assert url == SPLIT_URL + "test.csv"
        Path(filename).write_text(content)
        return filename, None

    monkeypatch.setattr(urllib.request, "urlretrieve", fake_download)
    split_dir = tmp_path / "new" / "split_setup"
    path = split_file(split_dir, "test.csv")
    assert path == split_dir / "test.csv"
    assert path.read_text() == content
    assert [p.name for p in split_dir.iterdir()] == ["test.csv"]


def test_existing_split_file_is_not_downloaded(data_folder, no_network):
    _, split_dir = data_folder
    assert split_file(split_dir, "split25.csv") == split_dir / "split25.csv"
    assert no_network == []


def test_training_rows_missing_split_file(data_folder, no_network):
    dataset_dir, split_dir = data_folder
    (split_dir / "split25.csv").unlink()
    with pytest.raises(DataError) as info:
        training_rows(dataset_dir, split_dir)
    assert "split25.csv" in str(info.value) and str(split_dir) in str(info.value)


def test_resolve_dataset_dir_from_env(data_folder, monkeypatch):
    dataset_dir, _ = data_folder
    monkeypatch.setenv(DATASET_DIR_ENV, str(dataset_dir))
    assert DATASET_DIR_ENV == "DCASE25_DATASET_DIR"
    assert resolve_dataset_dir() == dataset_dir
    assert resolve_dataset_dir(None) == dataset_dir


def test_resolve_dataset_dir_argument_wins(data_folder, tmp_path, monkeypatch):
    dataset_dir, _ = data_folder
    monkeypatch.setenv(DATASET_DIR_ENV, str(tmp_path / "elsewhere"))
    assert resolve_dataset_dir(str(dataset_dir)) == dataset_dir


def test_resolve_dataset_dir_missing_meta(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(DATASET_DIR_ENV, str(empty))
    with pytest.raises(DataError) as info:
        resolve_dataset_dir()
    assert "meta.csv" in str(info.value) and str(empty) in str(info.value)


def test_resolve_dataset_dir_nothing_given(monkeypatch):
    monkeypatch.delenv(DATASET_DIR_ENV, raising=False)
    with pytest.raises(DataError) as info:
        resolve_dataset_dir()
    assert DATASET_DIR_ENV in str(info.value) and "--dataset_dir" in str(info.value)


def test_select_split_on_real_test_csv():
    path = SHARED_DATA / "test.csv"
    if not path.is_file():
        pytest.skip("shared test.csv not present")
    split = validation.read_table(path).reset_index(drop=True)
    meta = pd.DataFrame({
        "filename": split["filename"],
        "scene_label": split["scene_label"],
        "identifier": split["filename"].str.split("-").str[1:3].str.join("-"),
        "source_label": split["filename"].str.rsplit("-", n=1).str[-1].str.removesuffix(".wav"),
    })
    # shuffle the meta rows: the selection must follow the split's order, not meta's
    meta = meta.sample(frac=1.0, random_state=0).reset_index(drop=True)
    rows = select_split(meta, split)
    assert len(rows) == 29_680
    assert rows["filename"].tolist() == split["filename"].tolist()
    assert set(rows["source_label"]) == {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}
    device_a = select_split(meta, split, devices=["a"])
    assert len(device_a) == 3_300
    assert (device_a["source_label"] == "a").all()
    assert len(select_split(meta, split, devices=["b"])) == 3_290
    counts = rows["source_label"].value_counts()
    assert counts["c"] == 3_290 and counts["s6"] == 3_300


@pytest.mark.parametrize("channels", [2, 8, 16])
def test_many_channels_are_averaged_to_mono(tmp_path, channels):
    """PyAV 18 read planar frames of 8 or more channels past their planes (a crash, found by the property
    tests of test_validation.py); the packed decode averages any number of channels."""
    rng = np.random.default_rng(channels)
    samples = rng.integers(-20000, 20000, size=(2205, channels))
    path = tmp_path / "many.wav"
    write_wav(path, samples.reshape(-1).tolist(), 2, channels=channels)
    waveform, rate = load_audio(path)
    assert rate == 44100 and waveform.shape == (1, 2205)
    assert np.allclose(waveform[0].numpy(), (samples / 32768).mean(axis=1), atol=1e-6)
