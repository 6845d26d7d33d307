"""Tests for the synthetic demo data set (dataset/demo/).

Most tests share one small data set (module-scoped fixture); the
determinism/idempotence tests write their own, even smaller, ones.
"""

import csv
import json
import os
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from dataset import demo

SCALE = 0.2  # ~5x fewer clips than the full demo: a few seconds to write
TRAIN_DEVICES = {"a", "b", "c", "s1", "s2", "s3"}
ALL_DEVICES = TRAIN_DEVICES | {"s4", "s5", "s6"}
NAME_PATTERN = re.compile(
    r"^audio/(?P<scene>[a-z_]+)-(?P<city>[a-z]+)-(?P<location>\d+)-(?P<segment>\d+)"
    r"-(?P<chunk>\d+)-(?P<device>a|b|c|s[1-6])\.wav$")


def read_tsv(path: Path):
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def read_wav(path: Path) -> np.ndarray:
    """24-bit mono PCM -> float in [-1, 1)."""
    with wave.open(str(path), "rb") as wav:
        raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.uint8).reshape(-1, 3)
    ints = raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16)
    ints = np.where(ints >= 2**23, ints - 2**24, ints)
    return ints / 2**23


def parse(filename: str) -> dict:
    match = NAME_PATTERN.match(filename)
    assert match, filename
    return match.groupdict()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return demo.write_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def tables(root):
    return {
        "meta": read_tsv(root / "meta.csv"),
        "split25": read_tsv(root / "split_setup" / "split25.csv"),
        "test": read_tsv(root / "split_setup" / "test.csv"),
        "eval": read_tsv(root / "eval" / "evaluation_setup" / "fold1_test.csv"),
    }


def test_csv_columns(tables):
    assert tables["meta"][0] == ["filename", "scene_label", "identifier", "source_label"]
    assert tables["split25"][0] == ["filename", "scene_label"]
    assert tables["test"][0] == ["filename", "scene_label"]
    assert tables["eval"][0] == ["filename", "device_id"]
    for _, rows in tables.values():
        assert rows


def test_meta_rows_agree_with_file_names(tables):
    _, meta = tables["meta"]
    assert {row["scene_label"] for row in meta} == set(demo.SCENES)
    for row in meta:
        parts = parse(row["filename"])
        assert row["scene_label"] == parts["scene"]
        assert row["identifier"] == f"{parts['city']}-{parts['location']}"
        assert row["source_label"] == parts["device"]
    assert len({row["filename"] for row in meta}) == len(meta)


def test_split_devices_and_disjointness(tables):
    _, split25 = tables["split25"]
    _, test = tables["test"]
    train_names = {row["filename"] for row in split25}
    test_names = {row["filename"] for row in test}
    assert {parse(n)["device"] for n in train_names} == TRAIN_DEVICES
    assert {parse(n)["device"] for n in test_names} == ALL_DEVICES
    assert not train_names & test_names

    def location(name):
        parts = parse(name)
        return parts["city"], parts["location"]

    assert not {location(n) for n in train_names} & {location(n) for n in test_names}
    # same cities in both splits, as in the real data
    assert {location(n)[0] for n in test_names} <= {location(n)[0] for n in train_names}
    # device a dominates training
    devices = [parse(n)["device"] for n in train_names]
    assert devices.count("a") > max(devices.count(d) for d in TRAIN_DEVICES - {"a"})
    for rows in (split25, test):
        assert all(row["scene_label"] == parse(row["filename"])["scene"] for row in rows)


def test_meta_lists_every_file_and_extra_train_files(root, tables):
    meta_names = {row["filename"] for row in tables["meta"][1]}
    on_disk = {f"audio/{p.name}" for p in (root / "audio").iterdir()}
    assert meta_names == on_disk
    split_names = {row["filename"] for row in tables["split25"][1]} | {row["filename"] for row in tables["test"][1]}
    assert split_names <= meta_names
    extra = meta_names - split_names
    # development-train files outside split25 (catches code that forgets the split)
    assert len(extra) >= 0.1 * len(tables["split25"][1])
    assert {parse(n)["device"] for n in extra} <= TRAIN_DEVICES


def test_eval_set(root, tables):
    _, rows = tables["eval"]
    assert [row["filename"] for row in rows] == [f"audio/{i}.wav" for i in range(len(rows))]
    assert {row["device_id"] for row in rows} <= TRAIN_DEVICES | {"unknown"}
    assert "unknown" in {row["device_id"] for row in rows}
    assert sorted(p.name for p in (root / "eval" / "audio").iterdir()) == sorted(
        row["filename"][len("audio/"):] for row in rows)


def test_wav_format(root, tables):
    names = [row["filename"] for row in tables["meta"][1][::7]]
    paths = [root / n for n in names] + [root / "eval" / row["filename"] for row in tables["eval"][1][:5]]
    for path in paths:
        with wave.open(str(path), "rb") as wav:
            assert wav.getframerate() == 44_100
            assert wav.getnchannels() == 1
            assert wav.getsampwidth() == 3
            assert wav.getnframes() == 44_100
        samples = read_wav(path)
        assert 1e-4 < np.sqrt(np.mean(samples**2)) < 0.5  # audible, not clipped
        assert np.mean(np.abs(samples) > 0.999) < 1e-3


def test_parallel_recordings_share_content_but_devices_differ(root, tables):
    """Same segment, devices a and s1: correlated waveforms, different spectra."""
    test_names = [row["filename"] for row in tables["test"][1]]
    a_names = [n for n in test_names if n.endswith("-a.wav")]
    log_ratios = []
    for name in a_names:
        a = read_wav(root / name)
        s1 = read_wav(root / name.replace("-a.wav", "-s1.wav"))
        spectrum_a, spectrum_s1 = (np.abs(np.fft.rfft(x)) ** 2 for x in (a, s1))
        bands = np.geomspace(50, 16_000, 17)
        freqs = np.fft.rfftfreq(a.size, 1 / 44_100)
        for lo, hi in zip(bands[:-1], bands[1:]):
            in_band = (freqs >= lo) & (freqs < hi)
            log_ratios.append(10 * np.log10(spectrum_s1[in_band].mean() / spectrum_a[in_band].mean()))
    log_ratios = np.array(log_ratios).reshape(len(a_names), -1)
    mean_difference_db = log_ratios.mean(axis=0)  # device s1 response relative to a, per band
    assert np.max(np.abs(mean_difference_db)) > 6.0
    assert np.ptp(mean_difference_db) > 6.0  # not just a gain change


def test_scenes_learnable_by_nearest_class_mean(root, tables):
    """Log band energies + nearest class mean, trained on split25, scored on test."""
    bands = np.geomspace(50, 16_000, 17)
    freqs = np.fft.rfftfreq(44_100, 1 / 44_100)
    band_masks = [(freqs >= lo) & (freqs < hi) for lo, hi in zip(bands[:-1], bands[1:])]

    def features(rows):
        x = np.stack([read_wav(root / row["filename"]) for row in rows])
        power = np.abs(np.fft.rfft(x, axis=1)) ** 2
        feats = np.log(np.stack([power[:, m].mean(axis=1) for m in band_masks], axis=1) + 1e-20)
        labels = np.array([demo.SCENES.index(row["scene_label"]) for row in rows])
        return feats, labels

    train_x, train_y = features(tables["split25"][1])
    test_x, test_y = features(tables["test"][1])
    class_means = np.stack([train_x[train_y == k].mean(axis=0) for k in range(len(demo.SCENES))])
    predictions = np.argmin(((test_x[:, None, :] - class_means[None]) ** 2).sum(axis=-1), axis=1)
    accuracy = np.mean(predictions == test_y)
    assert accuracy > 0.3, accuracy  # chance is 0.1


def _file_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(tmp_path):
    first = _file_bytes(demo.write_demo_dataset(tmp_path / "one", seed=3, scale=0.05))
    second = _file_bytes(demo.write_demo_dataset(tmp_path / "two", seed=3, scale=0.05))
    other = _file_bytes(demo.write_demo_dataset(tmp_path / "other", seed=4, scale=0.05))
    assert first == second
    assert first.keys() == other.keys()  # layout does not depend on the seed ...
    wavs = [k for k in first if k.endswith(".wav")]
    assert all(first[k] != other[k] for k in wavs)  # ... the sound does


def test_idempotent_and_marker(tmp_path):
    root = demo.write_demo_dataset(tmp_path / "demo", seed=0, scale=0.05)
    marker = json.loads((root / ".demo_complete").read_text())
    assert marker == {"version": demo.DEMO_VERSION, "seed": 0, "scale": 0.05}
    assert not (root / ".demo_in_progress").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    os.utime(root / "meta.csv", ns=(1, 1))  # make any rewrite visible
    assert demo.write_demo_dataset(root, seed=0, scale=0.05) == root
    assert (root / "meta.csv").stat().st_mtime_ns == 1
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.name != "meta.csv"} == {
        p: t for p, t in mtimes.items() if p.name != "meta.csv"}


def test_regenerates_over_previous_demo_but_keeps_user_files(tmp_path):
    root = demo.write_demo_dataset(tmp_path / "demo", seed=0, scale=0.05)
    (root / "notes.txt").write_text("mine")
    stale = root / "audio" / "stale.wav"
    stale.write_bytes(b"")
    demo.write_demo_dataset(root, seed=1, scale=0.05)
    assert json.loads((root / ".demo_complete").read_text())["seed"] == 1
    assert not stale.exists()
    assert (root / "notes.txt").read_text() == "mine"


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    folder = tmp_path / "my_data"
    folder.mkdir()
    (folder / "meta.csv").write_text("precious")
    with pytest.raises(FileExistsError, match="my_data"):
        demo.write_demo_dataset(folder, scale=0.05)
    assert (folder / "meta.csv").read_text() == "precious"
    demo.write_demo_dataset(folder, scale=0.05, force=True)
    assert (folder / ".demo_complete").exists()


def test_empty_folder_is_fine(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert demo.write_demo_dataset(folder, scale=0.05) == folder
    assert (folder / "meta.csv").exists()


def test_scale_controls_size():
    small = demo.plan_recordings(0.1)
    full = demo.plan_recordings(1.0)
    assert 5 < len(full) / len(small) < 15
    parts = [r.part for r in full]
    assert parts.count("split25") == 1350
    assert parts.count("test") == 900
    assert 0.15 <= parts.count("extra_train") / parts.count("split25") <= 0.2
    assert 100 <= parts.count("eval") <= 200
