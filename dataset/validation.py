"""Checks of the data before a run starts: csv files, split files, audio files, output folders.

Every problem raises one ``DataError`` that names the file, the line (as an editor shows it:
the header is line 1) or the flag, and what to do, so that a run never starts on a broken set
and never ends hours later in a pandas or decoder traceback.

Tables are read by ``read_table``, whose index is each row's line number; the checks use it to
point at the line.
"""
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import av
import pandas as pd

from dataset.audio import decoder_reason
from helpers.base.errors import DataError

SHOWN = 5  # problems listed by name before "and N more"


# ------------------------------------------------------------------------------------ csv files

def read_table(path) -> pd.DataFrame:
    """A TAB-separated file as strings, indexed by line number; blank lines are skipped.

    Parsed here rather than by pandas, which would silently turn an extra field into an index
    or drop it, and whose line numbers shift at blank lines; there is no quoting in these files.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start} cannot be decoded): "
                        "restore it from the original download.") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}).") from None
    lines = [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1)]
    lines = [(number, line) for number, line in lines if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty: it needs a header line and one row per file, TAB-separated. "
                        "Restore it from the original download.")
    (header_line, header), rows = lines[0], lines[1:]
    columns = [name.strip() for name in header.split("\t")]
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise DataError(f"{path} line {header_line}: the header names the column '{repeated[0]}' twice. "
                        "Each column must appear once.")
    fields = [line.split("\t") for _, line in rows]
    for (number, _), values in zip(rows, fields):
        if len(values) != len(columns):
            raise DataError(f"{path} line {number} has {len(values)} TAB-separated fields, the header "
                            f"{len(columns)}: fix the line or remove it.")
    return pd.DataFrame(fields, columns=columns, index=[number for number, _ in rows], dtype=str)


def check_columns(table: pd.DataFrame, path, required, hint="") -> None:
    """The header holds ``required``; a single column with commas is named as what it is."""
    missing = [name for name in required if name not in table.columns]
    if not missing:
        return
    if len(table.columns) == 1 and any(sep in table.columns[0] for sep in ",;"):
        raise DataError(f"{path} is not TAB-separated: its header line '{table.columns[0]}' has no TAB "
                        "(comma- or semicolon-separated?). Save it with TABs between the columns.")
    raise DataError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                    f"(header line 1 has: {', '.join(table.columns)}). {hint}".rstrip())


def check_has_rows(table: pd.DataFrame, path) -> None:
    if table.empty:
        raise DataError(f"{path} has a header but no rows: restore it from the original download.")


def check_filled(table: pd.DataFrame, path, columns) -> None:
    """No empty cell in ``columns`` (a row with fewer fields than the header has empty cells)."""
    for column in columns:
        empty = table.index[table[column].str.strip() == ""]
        if len(empty):
            raise DataError(f"{path} line {empty[0]}: the column '{column}' is empty{_more(empty, 'line')}. "
                            "Fill it in or remove the line.")


def check_values(table: pd.DataFrame, path, column, allowed, what) -> None:
    bad = table.index[~table[column].isin(allowed)]
    if len(bad):
        raise DataError(f"{path} line {bad[0]}: unknown {what} '{table.at[bad[0], column]}'{_more(bad, 'line')}; "
                        f"known are {', '.join(allowed)}. Fix the line or remove it.")


def check_unique(table: pd.DataFrame, path, column="filename") -> None:
    repeated = table.index[table[column].duplicated()]
    if len(repeated):
        line = repeated[0]
        first = table.index[table[column] == table.at[line, column]][0]
        raise DataError(f"{path} line {line}: file name {table.at[line, column]} is listed again (first at line "
                        f"{first}){_more(repeated, 'repeated line')}. Remove the repeated lines.")


def check_file_names(table: pd.DataFrame, path) -> None:
    """``audio/<name>.wav`` inside the data folder: no absolute paths, no ``..``."""
    names = table["filename"]
    good = names.str.startswith("audio/") & names.str.endswith(".wav") & ~names.str.contains(r"\.\./|\\", regex=True)
    bad = table.index[~good]
    if len(bad):
        raise DataError(f"{path} line {bad[0]}: file name '{names[bad[0]]}' is not of the form audio/<name>.wav"
                        f"{_more(bad, 'line')}. Fix the line or remove it.")


def check_meta(meta: pd.DataFrame, path, classes, devices) -> None:
    """``meta.csv`` of the development set: columns, labels, devices, unique ``audio/*.wav`` names."""
    check_columns(meta, path, ("filename", "scene_label", "identifier", "source_label"),
                  "meta.csv of TAU Urban Acoustic Scenes 2022 Mobile (development) has these four columns.")
    check_has_rows(meta, path)
    check_filled(meta, path, ("filename", "scene_label", "source_label"))
    check_file_names(meta, path)
    check_values(meta, path, "scene_label", classes, "scene label")
    check_values(meta, path, "source_label", devices, "device")
    check_unique(meta, path)


def check_split(split: pd.DataFrame, path, meta_files, meta_path) -> None:
    """A split file: a unique ``filename`` column whose files are all in ``meta.csv``."""
    check_columns(split, path, ("filename",), "The organisers' split files have the columns filename, scene_label.")
    check_has_rows(split, path)
    check_filled(split, path, ("filename",))
    check_unique(split, path)
    unknown = split.index[~split["filename"].isin(meta_files)]
    if len(unknown):
        raise DataError(f"{path} line {unknown[0]}: {split.at[unknown[0], 'filename']} is not in {meta_path}"
                        f"{_more(unknown, 'line')}. The split file and the data set do not belong together: "
                        "check --dataset_dir and --split_dir.")


def check_evaluation_table(rows: pd.DataFrame, path, device_column) -> None:
    """``fold1_test.csv`` of an evaluation set; any device name is accepted (``unknown`` included)."""
    check_has_rows(rows, path)
    check_filled(rows, path, ("filename", device_column))
    check_unique(rows, path)


def _more(index, what) -> str:
    return f" (and {len(index) - 1} more {what}{'s' if len(index) > 2 else ''})" if len(index) > 1 else ""


# -------------------------------------------------------------------------------- output folders

def check_outside_dataset(path, dataset_dir, flag, why="", instead="") -> None:
    """Nothing is ever written into the data folder: refuse an output folder inside it."""
    target, data = Path(path).resolve(), Path(dataset_dir).resolve()
    if target == data or data in target.parents:
        raise DataError(f"{flag} {path} is inside the data folder {dataset_dir}, where nothing is ever written"
                        f"{why}: pass a {flag} outside it{instead}.")


# ----------------------------------------------------------------------------------- audio files

PCM_FORMATS = {1, 3, 0xFFFE}  # integer PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE
UNKNOWN_SIZE = 0xFFFFFFFF  # streaming writers leave the data size open
# containers a .wav file may really be; anything else that FFmpeg guesses for odd bytes (raw
# streams, images, text) is not audio of this data set
AUDIO_CONTAINERS = {"wav", "w64", "flac", "mp3", "ogg", "aiff", "caf", "mov,mp4,m4a,3gp,3g2,mj2"}


class BrokenAudio(Exception):
    """Internal: the reason one file is refused."""


@dataclass
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int


@dataclass
class AudioReport:
    """What a scan found: broken files (name, reason), and the names of unusual but usable ones."""
    dataset_dir: Path
    expected_rate: int
    seconds: float
    scanned: int = 0
    broken: list = field(default_factory=list)
    other_length: list = field(default_factory=list)
    other_rate: list = field(default_factory=list)
    several_channels: list = field(default_factory=list)

    def error(self):
        """One DataError listing the first broken files, or None."""
        if not self.broken:
            return None
        shown = "\n".join(f"  {name}: {reason}" for name, reason in self.broken[:SHOWN])
        more = f"\n  and {len(self.broken) - SHOWN} more" if len(self.broken) > SHOWN else ""
        return DataError(f"{len(self.broken)} of {self.scanned} audio files in {self.dataset_dir} are missing or "
                         f"broken:\n{shown}{more}\nRestore them from the original download, or remove their lines "
                         "from meta.csv and the split files.")

    def notes(self) -> list:
        """One line per kind of unusual clip, for the user."""
        kinds = [(self.other_length, f"{{is}} not {self.seconds} s long and {{is}} padded or cut"),
                 (self.other_rate, f"{{has}} another sample rate than {self.expected_rate} Hz and {{is}} resampled"),
                 (self.several_channels, "{has} several channels and {is} mixed down")]
        lines = []
        for names, what in kinds:
            if len(names) == 1:
                lines.append(f"1 clip {what.format(**{'is': 'is', 'has': 'has'})} ({names[0]}).")
            elif names:
                lines.append(f"{len(names)} clips {what.format(**{'is': 'are', 'has': 'have'})} (e.g. {names[0]}).")
        return lines


def scan_audio(dataset_dir, filenames, expected_rate, seconds=1.0) -> AudioReport:
    """Reads the header of every file (a few bytes each; decodes only files that are not plain wav)."""
    dataset_dir = Path(dataset_dir)
    report = AudioReport(dataset_dir, int(expected_rate), seconds)
    for name in dict.fromkeys(filenames):  # once per file, in order
        report.scanned += 1
        try:
            info = audio_info(dataset_dir / name)
        except BrokenAudio as reason:
            report.broken.append((name, str(reason)))
            continue
        if info.frames != round(seconds * info.sample_rate):
            report.other_length.append(name)
        if info.sample_rate != expected_rate:
            report.other_rate.append(name)
        if info.channels > 1:
            report.several_channels.append(name)
    return report


def audio_info(path) -> AudioInfo:
    """Rate, channels and length of one file; raises BrokenAudio with the reason."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise BrokenAudio("missing") from None
    except OSError as err:
        raise BrokenAudio(f"cannot be read ({err.strerror or err})") from None
    if not os.path.isfile(path):
        raise BrokenAudio("not a file")
    if size == 0:
        raise BrokenAudio("empty (0 bytes)")
    try:
        with open(path, "rb") as handle:
            info = _wav_header(handle, size)
    except OSError as err:
        raise BrokenAudio(f"cannot be read ({err.strerror or err})") from None
    return info if info is not None else _decoded_info(path)


def _wav_header(handle, size):
    """AudioInfo from the RIFF chunks of a PCM wav file, None when it is another kind of file."""
    head = handle.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt, position = None, 12
    for _ in range(1000):  # real files have a handful of chunks; random bytes must not loop for long
        if position + 8 > size:
            break
        handle.seek(position)
        chunk, length = struct.unpack("<4sI", handle.read(8))
        if chunk == b"fmt ":
            body = handle.read(16)
            if len(body) < 16 or length < 16:
                raise BrokenAudio("truncated (its format header is cut short)")
            fmt = struct.unpack("<HHIIHH", body)
        elif chunk == b"data":
            return _pcm_info(fmt, length, size - position - 8)
        position += 8 + length + (length & 1)
    raise BrokenAudio("truncated or not a wav file (no sample data found after the header)")


def _pcm_info(fmt, declared, available):
    if fmt is None:
        raise BrokenAudio("not a valid wav file (samples before the format header)")
    code, channels, rate, _, block_align, bits = fmt
    if code not in PCM_FORMATS:
        return None  # compressed wav: let the decoder tell
    if not (channels and rate and bits in (8, 16, 24, 32, 64) and block_align == channels * bits // 8):
        raise BrokenAudio(f"not a valid wav file (format header: {channels} channels, {rate} Hz, {bits} bits)")
    if declared == UNKNOWN_SIZE:
        declared = available
    if declared > available:
        raise BrokenAudio(f"truncated (its header announces {declared} bytes of samples, the file holds {available})")
    if declared < block_align:
        raise BrokenAudio("holds no samples")
    return AudioInfo(rate, channels, declared // block_align)


def _decoded_info(path) -> AudioInfo:
    """For files that are not plain PCM wav: decode them, which is the only sure check."""
    try:
        with av.open(str(path)) as container:
            if container.format.name not in AUDIO_CONTAINERS or not container.streams.audio:
                raise BrokenAudio(f"not an audio file (it reads as '{container.format.name}')")
            stream = container.streams.audio[0]
            frames = sum(frame.samples for frame in container.decode(stream))
            rate, channels = stream.rate, stream.codec_context.channels
    except BrokenAudio:
        raise
    except Exception as err:  # whatever the decoder says, the file is unusable
        raise BrokenAudio(f"cannot be decoded ({decoder_reason(err)})") from None
    if not frames or not rate:
        raise BrokenAudio("holds no samples")
    return AudioInfo(rate, channels, frames)
