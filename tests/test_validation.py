"""Checked input: every broken csv, split or audio file gives one DataError naming it; unusual
audio is resampled, mixed down, padded or cut and counted; nothing is written into the data folder."""
import argparse
import struct
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from dataset import dcase25
from dataset.audio import AudioError, load_audio
from dataset.audio_checks import scan_audio
from dataset.dcase25 import AudioDataset, DataError, split_file, training_rows
from dataset.validation import check_outside_dataset, read_table
from helpers.outputs.predictions import evaluation_rows
from helpers.setup.data import check_audio, open_cache
from helpers.setup.flags import build_parser

HEADER = "filename\tscene_label\tidentifier\tsource_label"
TRAIN = [("airport", "a"), ("bus", "b"), ("tram", "s1"), ("park", "c")]
TEST = [("metro", "a"), ("park", "s4"), ("bus", "s6")]


def name(scene, device, i):
    return f"audio/{scene}-lyon-{i}-0-0-{device}.wav"


def write_wav(path, seconds=1.0, rate=44100, channels=1, width=2, value=1000):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(round(seconds * rate))
    samples = np.full(frames * channels, value, dtype="<i4")
    data = samples.astype("<i2").tobytes() if width == 2 else samples.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels), handle.setsampwidth(width), handle.setframerate(rate)
        handle.writeframes(data)
    return path


@pytest.fixture
def folder(tmp_path):
    """(data folder, split folder outside it) with meta.csv, split25.csv, test.csv and 1-s wav files."""
    data, splits = tmp_path / "data", tmp_path / "splits"
    train = [name(s, d, i) for i, (s, d) in enumerate(TRAIN)]
    test = [name(s, d, 10 + i) for i, (s, d) in enumerate(TEST)]
    meta = [HEADER] + [f"{n}\t{s}\tlyon-{i}\t{d}" for n, (s, d), i in
                       zip(train + test, TRAIN + TEST, range(20))]
    data.mkdir()
    (data / "meta.csv").write_text("\n".join(meta) + "\n")
    write_split(splits / "split25.csv", train)
    write_split(splits / "test.csv", test)
    for file in train + test:
        write_wav(data / file)
    return data, splits


def write_split(path, files):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("filename\tscene_label\n" + "".join(f"{f}\t{f[6:].split('-')[0]}\n" for f in files))


def meta_lines(data):
    return (data / "meta.csv").read_text().splitlines()


def write_meta(data, lines):
    (data / "meta.csv").write_text("\n".join(lines) + "\n")


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


def args_for(**overrides):
    args = build_parser("base", "").parse_args(["--num_workers", "0", "--batch_size", "4"])
    return argparse.Namespace(**{**vars(args), **overrides})


# ---------------------------------------------------------------------------- meta.csv and splits

def test_valid_folder_passes(folder):
    data, splits = folder
    assert len(training_rows(data, splits)) == len(TRAIN)
    assert len(dcase25.test_rows(data, splits)) == len(TEST)


def test_demo_set_passes_unchanged(demo_dir):
    demo = demo_dir
    train, test = training_rows(demo, demo / "split_setup"), dcase25.test_rows(demo, demo / "split_setup")
    report = check_audio(args_for(), demo, train, test)
    assert report.scanned == len(train) + len(test) and report.notes() == []


def test_missing_column(folder):
    data, splits = folder
    write_meta(data, [line.rsplit("\t", 1)[0] for line in meta_lines(data)])
    message = refusal(training_rows, data, splits)
    assert "meta.csv lacks the column source_label" in message and str(data) in message


def test_unknown_scene_label_names_the_line(folder):
    data, splits = folder
    lines = meta_lines(data)
    lines[3] = lines[3].replace("\ttram\t", "\ttrams\t")
    write_meta(data, lines)
    message = refusal(training_rows, data, splits)
    assert "meta.csv line 4: unknown scene label 'trams'" in message and "airport" in message


def test_unknown_device_names_the_line(folder):
    data, splits = folder
    lines = meta_lines(data)
    lines[2] = lines[2][:-1] + "x"
    lines[5] = lines[5][:-1] + "z9"
    write_meta(data, lines)
    message = refusal(dcase25.test_rows, data, splits)
    assert "meta.csv line 3: unknown device 'x' (and 1 more line)" in message


def test_duplicate_file_name_names_both_lines(folder):
    data, splits = folder
    lines = meta_lines(data)
    write_meta(data, lines + [lines[2]])
    message = refusal(training_rows, data, splits)
    assert f"line {len(lines) + 1}: file name {lines[2].split()[0]} is listed again (first at line 3)" in message


def test_file_name_not_under_audio(folder):
    data, splits = folder
    lines = meta_lines(data)
    lines[1] = lines[1].replace("audio/", "../", 1)
    write_meta(data, lines)
    assert "line 2: file name '../" in refusal(training_rows, data, splits)


def test_split_lists_a_file_not_in_meta(folder):
    data, splits = folder
    files = read_table(splits / "split25.csv")["filename"].tolist()
    write_split(splits / "split25.csv", files + ["audio/bus-oslo-1-0-0-a.wav"])
    message = refusal(training_rows, data, splits)
    assert f"split25.csv line {len(files) + 2}: audio/bus-oslo-1-0-0-a.wav is not in {data / 'meta.csv'}" in message
    assert "--dataset_dir and --split_dir" in message


def test_split_with_a_duplicate(folder):
    data, splits = folder
    files = read_table(splits / "test.csv")["filename"].tolist()
    write_split(splits / "test.csv", files + files[:1])
    assert "test.csv line 5: file name" in refusal(dcase25.test_rows, data, splits)


def test_split_without_filename_column(folder):
    data, splits = folder
    (splits / "test.csv").write_text("file\tscene_label\naudio/x.wav\tbus\n")
    assert "test.csv lacks the column filename" in refusal(dcase25.test_rows, data, splits)


def test_comma_separated_meta(folder):
    data, splits = folder
    write_meta(data, [line.replace("\t", ",") for line in meta_lines(data)])
    message = refusal(training_rows, data, splits)
    assert "meta.csv is not TAB-separated" in message and "Save it with TABs" in message


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_meta(folder, content):
    data, splits = folder
    (data / "meta.csv").write_text(content)
    assert "meta.csv is empty" in refusal(training_rows, data, splits)


def test_header_only_split(folder):
    data, splits = folder
    (splits / "split25.csv").write_text("filename\tscene_label\n")
    assert "split25.csv has a header but no rows" in refusal(training_rows, data, splits)


def test_row_with_too_many_fields(folder):
    data, splits = folder
    lines = meta_lines(data)
    lines[4] += "\textra"
    write_meta(data, lines)
    message = refusal(training_rows, data, splits)
    assert "meta.csv line 5 has 5 TAB-separated fields, the header 4" in message


def test_blank_lines_keep_line_numbers(folder):
    data, splits = folder
    lines = meta_lines(data)
    lines[3] = lines[3].replace("\ttram\t", "\tboat\t")
    write_meta(data, lines[:2] + [""] + lines[2:] + ["", ""])
    assert "meta.csv line 5: unknown scene label 'boat'" in refusal(training_rows, data, splits)


def test_empty_selection_names_the_flag(folder):
    data, splits = folder
    message = refusal(training_rows, data, splits, devices=["s5"])
    assert "split25.csv selects no clips of devices s5" in message and "--train_devices" in message
    assert "--train_devices" in refusal(dcase25.of_devices, training_rows(data, splits), ["s2"])


def test_evaluation_table(tmp_path):
    path = tmp_path / "eval" / "evaluation_setup" / "fold1_test.csv"
    path.parent.mkdir(parents=True)
    path.write_text("filename\tdevice_id\naudio/0.wav\ta\naudio/1.wav\tunknown\naudio/2.wav\tphone7\n")
    assert evaluation_rows(tmp_path / "eval")["device_id"].tolist() == ["a", "unknown", "phone7"]
    path.write_text("filename\tdevice_id\naudio/0.wav\ta\naudio/1.wav\t\n")
    assert "fold1_test.csv line 3: the column 'device_id' is empty" in refusal(evaluation_rows, tmp_path / "eval")
    path.write_text("filename\tdevice\naudio/0.wav\ta\n")
    assert "lacks the column device_id" in refusal(evaluation_rows, tmp_path / "eval")
    path.write_text("filename,device_id\naudio/0.wav,a\n")
    assert "is not TAB-separated" in refusal(evaluation_rows, tmp_path / "eval")


# ------------------------------------------------------------------------ nothing written in the data

def test_cache_inside_data_folder_is_refused(folder):
    data, splits = folder
    rows = training_rows(data, splits)
    message = refusal(open_cache, args_for(cache_dir=str(data / "cache")), data, rows)
    assert "--cache_dir" in message and "inside the data folder" in message
    assert not (data / "cache").exists()
    refusal(check_outside_dataset, data, data, "--cache_dir")  # the folder itself too


def test_download_into_data_folder_is_refused(folder, monkeypatch):
    data, _ = folder
    monkeypatch.setattr("urllib.request.urlretrieve", lambda *a, **k: pytest.fail("downloaded"))
    message = refusal(split_file, data / "split_setup", "split25.csv", data)
    assert "--split_dir" in message and "split25.csv" in message and "inside the data folder" in message
    assert not (data / "split_setup").exists()
    # split files that are already there (the demo set's split_setup/) are read, not refused
    write_split(data / "split_setup" / "split25.csv", ["audio/x.wav"])
    assert split_file(data / "split_setup", "split25.csv", data) == data / "split_setup" / "split25.csv"


# ------------------------------------------------------------------------------------ audio files

def scan(data, files, rate=44100):
    return scan_audio(data, files, rate)


def test_missing_empty_truncated_and_non_audio_files(folder):
    data, splits = folder
    files = training_rows(data, splits)["filename"].tolist()
    (data / files[0]).unlink()
    (data / files[1]).write_bytes(b"")
    whole = (data / files[2]).read_bytes()
    (data / files[2]).write_bytes(whole[:len(whole) // 2])
    (data / files[3]).write_bytes(b"<html>404 Not Found</html>\n" * 20)
    message = refusal(check_audio, args_for(), data, training_rows(data, splits))
    assert message.startswith(f"4 of 4 audio files in {data} are missing or broken")
    assert f"{files[0]}: missing" in message
    assert f"{files[1]}: empty (0 bytes)" in message
    assert f"{files[2]}: truncated (its header announces 88200 bytes of samples, the file holds 44" in message
    assert f"{files[3]}: not an audio file" in message or f"{files[3]}: cannot be decoded" in message
    assert "Restore them from the original download" in message


def test_many_broken_files_are_counted(folder):
    data, _ = folder
    files = [f"audio/gone-{i}.wav" for i in range(12)]
    error = scan(data, files).error()
    assert str(error).startswith("12 of 12 audio files")
    assert "audio/gone-4.wav: missing" in str(error) and "audio/gone-5.wav" not in str(error)
    assert "and 7 more" in str(error)


def test_unusual_clips_are_counted(folder, capsys):
    data, _ = folder
    write_wav(data / "audio/short.wav", seconds=0.5)
    write_wav(data / "audio/long.wav", seconds=1.5, width=3)
    write_wav(data / "audio/rate.wav", rate=48000)
    write_wav(data / "audio/stereo.wav", channels=2)
    rows = pd.DataFrame({"filename": ["audio/short.wav", "audio/long.wav", "audio/rate.wav", "audio/stereo.wav"]})
    report = check_audio(args_for(), data, rows)
    assert (report.other_length, report.other_rate, report.several_channels) == (
        ["audio/short.wav", "audio/long.wav"], ["audio/rate.wav"], ["audio/stereo.wav"])
    out = capsys.readouterr().out
    assert "2 clips are not 1.0 s long and are padded or cut" in out
    note = next(line for line in out.splitlines() if "44100 Hz" in line)
    assert note.startswith("1 clip") and "resampled" in note  # how many, which rate, what is done
    assert "1 clip has several channels and is mixed down" in out


def test_wav_path_resamples_mixes_pads_and_cuts(folder):
    data, _ = folder
    write_wav(data / "audio/short.wav", seconds=0.5)
    write_wav(data / "audio/long.wav", seconds=1.5)
    write_wav(data / "audio/rate.wav", rate=48000)
    write_wav(data / "audio/stereo.wav", channels=2)
    files = ["audio/short.wav", "audio/long.wav", "audio/rate.wav", "audio/stereo.wav"]
    rows = pd.DataFrame({"filename": files, "source_label": ["a"] * 4})
    batch = next(iter(DataLoader(AudioDataset(data, rows, sample_rate=44100), batch_size=4)))[0]
    assert batch.shape == (4, 1, 44100)
    short, long, rate, stereo = batch[:, 0]
    assert short[:22050].min() > 0 and short[22050:].abs().max() == 0
    assert torch.allclose(long, torch.full((44100,), 1000 / 2 ** 15))
    assert torch.allclose(rate[2000:-2000], torch.full((40100,), 1000 / 2 ** 15), atol=1e-3)  # 48 kHz -> 44.1 kHz
    assert torch.allclose(stereo, torch.full((44100,), 1000 / 2 ** 15))


def test_worker_decode_failure_names_the_file(folder):
    data, splits = folder
    rows = training_rows(data, splits)
    bad = rows["filename"].iloc[1]
    (data / bad).write_bytes(b"RIFF" + b"\x00" * 40)
    loader = DataLoader(AudioDataset(data, rows), batch_size=2, num_workers=1)
    with pytest.raises(DataError) as info:
        list(loader)
    assert str(data / bad) in str(info.value) and "Restore the file" in str(info.value)


# ------------------------------------------------------------------------------- property-based

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def valid_wav_bytes(tmp_path) -> bytes:
    return write_wav(tmp_path / "valid.wav", seconds=0.05, width=3).read_bytes()


def decode_or_refuse(path):
    """A decode, or an error of ours that names the file; any other exception fails the test."""
    try:
        waveform, rate = load_audio(path)
        assert waveform.ndim == 2 and waveform.shape[0] == 1 and rate > 0
    except AudioError as err:
        assert str(path) in str(err)
    report = scan_audio(path.parent, [path.name], 44100)
    assert report.scanned == 1
    if report.broken:
        assert report.broken[0][0] == path.name and str(path.name) in str(report.error())


@PROPERTY
@given(st.binary(max_size=400))
def test_random_bytes(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("bytes") / "clip.wav"
    path.write_bytes(content)
    decode_or_refuse(path)


@PROPERTY
@given(st.data())
def test_random_truncations_and_header_fields(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("wav")
    content = bytearray(valid_wav_bytes(folder))
    if data.draw(st.booleans()):
        content = content[:data.draw(st.integers(0, len(content)))]
    else:  # overwrite one field of the 44-byte header
        offset = data.draw(st.sampled_from([4, 16, 20, 22, 24, 28, 32, 34, 40]))
        value = data.draw(st.integers(0, 2 ** 32 - 1))
        width = 2 if offset in (20, 22, 32, 34) else 4
        content[offset:offset + width] = struct.pack("<I", value)[:width]
    path = folder / "clip.wav"
    path.write_bytes(bytes(content))
    decode_or_refuse(path)
    report = scan_audio(folder, ["clip.wav"], 44100)
    if len(content) < 44 + 3 * 2205:  # every proper truncation is refused by the scan
        assert report.broken


TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)


@PROPERTY
@given(header=st.lists(TEXT, min_size=0, max_size=5),
       rows=st.lists(st.lists(TEXT, min_size=0, max_size=6), max_size=6),
       separator=st.sampled_from(["\t", ",", ";"]))
def test_garbage_meta_is_refused_with_meta_csv_named(tmp_path_factory, header, rows, separator):
    data = tmp_path_factory.mktemp("meta")
    text = "\n".join(separator.join(line) for line in [header] + rows)
    (data / "meta.csv").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        dcase25.read_meta(data)
    except DataError as err:
        assert "meta.csv" in str(err)


@PROPERTY
@given(rows=st.lists(st.tuples(st.sampled_from(["audio/a.wav", "audio/b.wav", "x.wav", "", "audio/c.wav"]),
                               st.sampled_from(dcase25.CLASSES + ["", "boat"]),
                               st.sampled_from(["lyon-1", ""]),
                               st.sampled_from(dcase25.DEVICES + ["", "s9"])), max_size=6),
       split=st.lists(st.sampled_from(["audio/a.wav", "audio/b.wav", "audio/zz.wav", ""]), max_size=4))
@example(rows=[("audio/a.wav", "airport", "lyon-1", "a")], split=["audio/a.wav", ""])
def test_near_valid_tables_pass_or_are_refused(tmp_path_factory, rows, split):
    data = tmp_path_factory.mktemp("near")
    (data / "meta.csv").write_text("\n".join([HEADER] + ["\t".join(row) for row in rows]) + "\n")
    (data / "test.csv").write_text("filename\n" + "".join(f"{f}\n" for f in split))
    try:
        selected = dcase25.test_rows(data, data)
    except DataError as err:
        assert "meta.csv" in str(err) or "test.csv" in str(err)
    else:
        named = {name for name in split if name}  # a blank line in a split file names no clip
        assert set(selected["filename"]) == named and set(selected["scene_label"]) <= set(dcase25.CLASSES)
