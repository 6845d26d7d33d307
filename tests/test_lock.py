"""``requirements-lock.txt`` (what ``scripts/setup_env.sh`` installs) agrees with ``requirements.txt`` and
``requirements-dev.txt``: every requirement is locked at a version it allows, and nothing is locked as a requirement
that the files no longer name. Read from the files alone, offline (no resolution).
"""
import re
import shutil
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements-lock.txt"


def requirements(path: Path) -> list:
    """The requirements of a pip requirements file, following ``-r`` includes."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


def locked() -> dict:
    """``{name: [(version, the requirement files it is locked for)]}`` of the lock; a package can be locked at
    several versions, each for some Pythons (an environment marker)."""
    pins, current = {}, None
    for line in LOCK.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if pin:
            current = pins.setdefault(canonicalize_name(pin[1]), [])
            current.append((pin[2], set()))
        elif current is not None and (via := re.search(r"-r (requirements[\w.-]*\.txt)", line)):
            current[-1][1].add(via[1])
    return pins


def test_the_lock_agrees_with_the_requirement_files():
    pins = locked()
    wanted = requirements(REPO / "requirements-dev.txt")  # includes requirements.txt
    problems = []
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in the lock")
        problems += [f"{requirement}: the lock pins {version}" for version, _ in pins.get(name, [])
                     if not requirement.specifier.contains(version, prereleases=True)]
    named = {canonicalize_name(requirement.name) for requirement in wanted}
    problems += [f"{name} is locked as a requirement of {', '.join(sorted(via))}, which no longer names it"
                 for name, versions in pins.items() for _, via in versions if via and name not in named]
    assert not problems, ("requirements-lock.txt disagrees with the requirement files (regenerate it: bash "
                          "scripts/lock.sh):\n  " + "\n  ".join(problems))


def test_the_lock_check_catches_a_changed_requirement(tmp_path, monkeypatch):
    """A pin that requirements.txt no longer allows, and a requirement the lock lacks, are both found."""
    (tmp_path / "requirements.txt").write_text("torch==2.12.0\nnot-a-locked-package>=1\n")
    (tmp_path / "requirements-dev.txt").write_text("-r requirements.txt\n")
    shutil.copy(LOCK, tmp_path / "requirements-lock.txt")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "LOCK", tmp_path / "requirements-lock.txt")
    with pytest.raises(AssertionError) as failure:
        test_the_lock_agrees_with_the_requirement_files()
    assert "torch==2.12.0: the lock pins 2.11.0" in str(failure.value)
    assert "not-a-locked-package>=1 is not in the lock" in str(failure.value)
    assert "pooch is locked as a requirement of requirements.txt, which no longer names it" in str(failure.value)
