"""A decoded, resampled copy of the audio, kept on disk as one memory-mapped 16-bit array.

The baseline decodes every wav file in every epoch and resamples it in the training step. With
``--cache_dir`` each clip is decoded and resampled once; later epochs and later runs read the
array, which DataLoader workers map into memory without copying it. A cache is identified by
what makes it valid: the files (with their sizes and modification times), the sample rates,
the clip length and the resampler. A cache whose files changed is never used; a cache that
holds more files than asked for (the whole split, when stage 2 asks for one device) serves them.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dataset.audio import ClipReader
from dataset.locking import exclusive, replace_atomically

CACHE_FORMAT = 1
STORAGE_DTYPE = np.float16  # halves the size; features change only within 16-bit rounding


def resampler_signature() -> dict:
    """What determines the resampled samples besides the rates: torchaudio's Resample defaults."""
    return {"torchaudio": torchaudio.__version__.split("+")[0], "method": "sinc_interp_hann",
            "lowpass_filter_width": 6, "rolloff": 0.99}


def file_signature(path: Path) -> list:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


class _DecodeAndResample(Dataset):
    """Decodes and resamples clips for building a cache (run by DataLoader workers in parallel)."""

    def __init__(self, dataset_dir, files, sample_rate, seconds):
        self.dataset_dir, self.files = Path(dataset_dir), files
        self.read = ClipReader(sample_rate, seconds)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        fitted, changed = self.read(self.dataset_dir / self.files[index])
        return index, fitted[0].numpy().astype(STORAGE_DTYPE), changed


class AudioCache:
    """Clips at ``sample_rate``, ``seconds`` long, looked up by file name."""

    def __init__(self, array_path: Path, manifest: dict):
        self.array_path = array_path
        self.files = manifest["files"]
        self.index = {name: i for i, name in enumerate(self.files)}
        self.sample_rate = manifest["sample_rate"]
        self.n_samples = manifest["n_samples"]
        self._array = None  # mapped lazily, so every worker process maps it itself

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __getstate__(self):  # DataLoader workers get the path, not the mapping
        return {**self.__dict__, "_array": None}

    def waveform(self, filename: str) -> torch.Tensor:
        """``[1, n_samples]`` float32."""
        return torch.from_numpy(self.array[self.index[filename]].astype(np.float32))[None]

    def waveforms(self, filenames) -> torch.Tensor:
        """``[len(filenames), 1, n_samples]`` float32, read in one go: one copy out of the mapping and one
        conversion (by torch, the faster of the two libraries at it) for the whole batch."""
        rows = np.fromiter((self.index[name] for name in filenames), dtype=np.int64, count=len(filenames))
        return torch.from_numpy(self.array[rows]).float()[:, None]

    @classmethod
    def open_or_build(cls, cache_dir, dataset_dir, files, sample_rate, seconds=1.0, num_workers=0) -> "AudioCache":
        cache_dir, dataset_dir = Path(cache_dir), Path(dataset_dir)
        params = {"format": CACHE_FORMAT, "sample_rate": int(sample_rate),
                  "n_samples": int(round(seconds * sample_rate)), "resampler": resampler_signature()}
        signatures = {name: file_signature(dataset_dir / name) for name in files}
        # one process builds, the others (of a distributed run) wait and then find what it built
        with exclusive(cache_dir / ".lock"):
            for manifest_path in sorted(cache_dir.glob("*.json")):
                manifest = json.loads(manifest_path.read_text())
                if manifest.get("params") != params or not manifest_path.with_suffix(".npy").is_file():
                    continue
                held = dict(zip(manifest["files"], manifest["signatures"]))
                if all(held.get(name) == sig for name, sig in signatures.items()):
                    return cls(manifest_path.with_suffix(".npy"), {**manifest, **params})
            return cls._build(cache_dir, dataset_dir, list(files), signatures, params, num_workers)

    @classmethod
    def _build(cls, cache_dir, dataset_dir, files, signatures, params, num_workers):
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(json.dumps([params, [[f, signatures[f]] for f in files]]).encode()).hexdigest()[:16]
        array_path, manifest_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
        tmp_path = cache_dir / f".{key}.{os.getpid()}.npy.tmp"
        array = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=STORAGE_DTYPE,
                                          shape=(len(files), params["n_samples"]))
        seconds = params["n_samples"] / params["sample_rate"]
        # a generator of its own: iterating a DataLoader draws from the global random state otherwise, and a
        # seeded run that builds the cache would then train unlike one that finds it
        loader = DataLoader(_DecodeAndResample(dataset_dir, files, params["sample_rate"], seconds),
                            batch_size=None, num_workers=num_workers, generator=torch.Generator())
        fitted = 0
        try:
            for index, samples, changed in tqdm(loader, total=len(files), unit="clip",
                                                desc=f"Caching audio at {params['sample_rate']} Hz in {cache_dir}"):
                array[int(index)] = np.asarray(samples)
                fitted += int(changed)
            array.flush()
            del array
            os.replace(tmp_path, array_path)
        finally:
            tmp_path.unlink(missing_ok=True)
        if fitted:
            print(f"{fitted} of {len(files)} clips were not {params['n_samples']} samples long and were padded or cut.")
        manifest = {"params": params, "files": files, "signatures": [signatures[f] for f in files]}
        replace_atomically(manifest_path, json.dumps(manifest))  # written last: a cache without it is never used
        return cls(array_path, {**manifest, **params})
