"""Checks of the audio files before a run starts: every file's header is read (files that are not plain
wav are decoded); missing or broken files make one ``DataError``, clips of another length, sample rate or
channel count are only noted (the run pads or cuts, resamples, mixes down)."""
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import av

from dataset.audio import decoder_reason
from dataset.validation import SHOWN
from helpers.base.errors import DataError

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
