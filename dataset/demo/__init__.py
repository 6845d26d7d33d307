"""Synthetic stand-in for the DCASE 2025 Task 1 data, in the real on-disk layout.

The real development set (TAU Urban Acoustic Scenes 2022 Mobile) is ~23 GB and
the 2025 evaluation set is not labelled, so tests, CI and first-time users need
something small that the training code can consume unchanged.  This module
writes a few thousand one-second clips that follow the real layout exactly:

    <root>/audio/<scene>-<city>-<location>-<segment>-<chunk>-<device>.wav
    <root>/meta.csv                      filename, scene_label, identifier, source_label
    <root>/split_setup/split25.csv       filename, scene_label (devices a,b,c,s1,s2,s3)
    <root>/split_setup/test.csv          filename, scene_label (all nine devices)
    <root>/eval/audio/<n>.wav            2025-style evaluation clips, no labels
    <root>/eval/evaluation_setup/fold1_test.csv   filename, device_id

All csv files are TAB-separated; wav files are 1 s, 44.1 kHz, mono, 24-bit PCM.

The sound is not random noise: every scene has its own spectral tilt, a few
characteristic noise bands or harmonic tones, and its own amplitude-modulation
and transient-event rates, so a small CNN can learn the classes.  City,
location, segment and clip each perturb these parameters (frequencies, levels,
rates, phases), so that memorising training locations does not solve the
test split, whose locations are disjoint from training.  Every device colours
the shared scene signal with its own frequency response, gain and noise floor,
so device-specific fine-tuning has something real to adapt to; as in the real
data, the same segment is "recorded" in parallel by several devices.

Everything is derived from the seed through per-clip random generators, so the
same seed gives byte-identical files, independently of `scale`.

Usage:  python -m dataset.demo --out demo_data [--seed 0] [--scale 1.0] [--force] [--impulse_responses FOLDER]
        [--variant default|hard]

``--impulse_responses FOLDER`` also writes a few synthetic device impulse responses there, a
stand-in for the real MicIRP responses of DIR augmentation (``--dir_dir``).

``--variant hard`` writes a harder set in the same layout (docs/demo_hard.md); the default variant's files
do not depend on it.

The modules, by job: ``sound`` (what every variant shares: clip format, scenes, devices, sound sources),
``default_variant`` (the default synthesiser), ``hard_profiles``, ``hard_scenes`` and ``hard_devices`` (the
hard variant), ``dir_responses`` (impulse responses for ``--dir_dir``), ``plan`` (which clips, in which
split) and ``writer`` (the files, the markers, the command).
"""
from dataset.demo.dir_responses import write_demo_impulse_responses
from dataset.demo.hard_profiles import HARD_VERSION
from dataset.demo.plan import VARIANTS, plan_recordings
from dataset.demo.sound import DEMO_VERSION, SAMPLE_RATE, SCENES, write_wav
from dataset.demo.writer import demo_variant, is_complete, main, write_demo_dataset

__all__ = ["DEMO_VERSION", "HARD_VERSION", "SAMPLE_RATE", "SCENES", "VARIANTS", "demo_variant", "is_complete", "main",
           "plan_recordings", "write_demo_dataset", "write_demo_impulse_responses", "write_wav"]
