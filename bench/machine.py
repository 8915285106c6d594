"""A description of the machine and tool versions, for the report."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path


def _first_line(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return "not installed"
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].strip() if text else "?"


def _lscpu() -> dict[str, str]:
    done = subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
    found = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(":")
        found[key.strip()] = value.strip()
    return found


def _mem_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "?"


def _disk(path: Path) -> str:
    done = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,SIZE", "--target", str(path)],
                          capture_output=True, text=True, check=False)
    source, fstype, size = ([*done.stdout.split(), "?", "?", "?"])[:3]
    rotational = "?"
    device = Path(source).name
    flag = Path(f"/sys/block/{device}/queue/rotational")
    if flag.exists():
        rotational = "rotational" if flag.read_text().strip() == "1" else "non-rotational"
    return f"{source} {fstype} {size} ({rotational}; virtio disk of a VM)" if device.startswith("vd") else \
        f"{source} {fstype} {size} ({rotational})"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(out_dir: Path, pg_bindir: Path, server_version: str) -> dict[str, str]:
    cpu = _lscpu()
    return {
        "CPU": f"{cpu.get('Model name', '?')} ({cpu.get('Hypervisor vendor', 'bare metal')} "
               f"{cpu.get('Virtualization type', '')})".replace(" )", ")"),
        "cores": f"{os.cpu_count()} ({cpu.get('Thread(s) per core', '?')} thread(s) per core)",
        "RAM": _mem_total(),
        "disk (bench/out, staging)": _disk(out_dir),
        "kernel": platform.release(),
        "PostgreSQL": f"server {server_version}; {_first_line([str(pg_bindir / 'pg_dump'), '--version'])}",
        "gpg": _first_line(["gpg", "--version"]),
        "zstd": _first_line(["zstd", "--version"]).strip("* "),
        "gzip / pigz": f"{_first_line(['gzip', '--version'])} / {_first_line(['pigz', '--version'])}",
        "Python / boto3 / moto": f"{platform.python_version()} / {_package('boto3')} / {_package('moto')}",
    }
