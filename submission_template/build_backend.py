"""Build backend of this package: setuptools, run on a temporary copy of the package folder.

setuptools writes ``build/`` and ``<name>.egg-info/`` into the folder it builds in; building a copy
leaves the package folder exactly as it was exported when it is installed with ``pip install``.
"""
import os
import shutil
import tempfile
from contextlib import contextmanager

from setuptools import build_meta


@contextmanager
def _in_copy():
    source = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "package")
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("predictions", "__pycache__", "build",
                                                                     "*.egg-info"))
        os.chdir(copy)
        try:
            yield
        finally:
            os.chdir(source)


def get_requires_for_build_wheel(config_settings=None):
    with _in_copy():
        return build_meta.get_requires_for_build_wheel(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    metadata_directory = os.path.abspath(metadata_directory)
    with _in_copy():
        return build_meta.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel_directory = os.path.abspath(wheel_directory)
    metadata_directory = metadata_directory and os.path.abspath(metadata_directory)
    with _in_copy():
        return build_meta.build_wheel(wheel_directory, config_settings, metadata_directory)


def get_requires_for_build_sdist(config_settings=None):
    with _in_copy():
        return build_meta.get_requires_for_build_sdist(config_settings)


def build_sdist(sdist_directory, config_settings=None):
    sdist_directory = os.path.abspath(sdist_directory)
    with _in_copy():
        return build_meta.build_sdist(sdist_directory, config_settings)
