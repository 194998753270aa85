"""Download the wheels an offline GPU machine needs for ``gpu_bench.sh --wheels``.

Our borrowed GPU machines reach no package index; their Python (3.12) has torch and the
scientific stack but not lerobot, the transformers 4 stack lerobot 0.4.4 pins, or ROS. This
script downloads those (the names in ``scripts/gpu_wheels.txt``, the versions pinned in
``constraints.txt``) as binary wheels for that Python into ``.whl/<part>/``, one folder per part,
and says how large each is: a device call carries at most 64 MiB, the repository included.

    python3 scripts/gpu_wheels.py                      # .whl/core and .whl/ros for cp312
    python3 scripts/gpu_wheels.py --python-version 3.11 --out /tmp/whl311   # a local check

Runs with any Python that has pip; nothing is installed here.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "scripts" / "gpu_wheels.txt"
CARRY_LIMIT_MIB = 64
#: manylinux tags pip must be told about when it downloads for another Python
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def normalise(name: str) -> str:
    """PEP 503: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parts(text: str) -> dict[str, list[str]]:
    """``[part]`` headers and one package name per line (``#`` comments) → names by part."""
    out: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        header = re.fullmatch(r"\[([\w-]+)\]", line)
        if header:
            current = out.setdefault(header.group(1), [])
        elif current is None:
            raise ValueError(f"{line!r} comes before any [part] header")
        else:
            current.append(line)
    return out


def pins(constraints: str) -> dict[str, str]:
    """``name==version`` lines of a constraints file → {normalised name: version}."""
    found = (re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
             for line in constraints.splitlines())
    return {normalise(m.group(1)): m.group(2) for m in found if m}


def requirements(names: list[str], pinned: dict[str, str]) -> list[str]:
    """``name==version`` for each name; a name constraints.txt does not pin is an error."""
    missing = [n for n in names if normalise(n) not in pinned]
    if missing:
        raise ValueError(f"not pinned in constraints.txt: {', '.join(missing)} (run "
                         f"scripts/lock.sh after adding them to requirements.txt)")
    return [f"{n}=={pinned[normalise(n)]}" for n in names]


def size_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.whl")) / 2**20


def repo_mib() -> float:
    """The tracked files' size: what a device call sends besides the carried wheels."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\0")
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    p.add_argument("--out", type=Path, default=ROOT / ".whl", help="one folder per part in here")
    p.add_argument("--parts", nargs="+", default=None, help="default: every part of the list")
    args = p.parse_args(argv)
    listed = parts(LIST.read_text())
    pinned = pins((ROOT / "constraints.txt").read_text())
    tag = "".join(args.python_version.split(".")[:2])
    repo = repo_mib()
    for part in args.parts or list(listed):
        if part not in listed:
            raise SystemExit(f"no part {part!r} in {LIST.name}; it has {', '.join(listed)}")
        folder = args.out / part
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", args.python_version, "--implementation", "cp",
               "--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none", "-d", str(folder)]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run([*cmd, *requirements(listed[part], pinned)], check=True)
        total = size_mib(folder) + repo
        verdict = "fits" if total < CARRY_LIMIT_MIB else "TOO LARGE for one device call"
        print(f"{folder}: {len(list(folder.glob('*.whl')))} wheels, {size_mib(folder):.1f} MiB;"  # noqa: T201
              f" with the repository {total:.1f} of {CARRY_LIMIT_MIB} MiB: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
