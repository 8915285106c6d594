"""Compression stages: multi-threaded zstd, or gzip (pigz when installed)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from pgbackup.errors import PgBackupError
from pgbackup.pipeline import StageCommand, minimal_environment

EXTENSIONS = {"zstd": "zst", "gzip": "gz"}


class CompressionError(PgBackupError):
    """The compressor failed or is missing."""


def _program(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise CompressionError(f"{name} is not installed (apt-get install {name})")
    return path


def _gzip_program() -> tuple[str, bool]:
    """pigz compresses gzip on every core; plain gzip is the fallback."""
    pigz = shutil.which("pigz")
    return (pigz, True) if pigz else (_program("gzip"), False)


@lru_cache(maxsize=8)
def tool_version(algorithm: str) -> str:
    program = _program("zstd") if algorithm == "zstd" else _gzip_program()[0]
    out = subprocess.run([program, "--version"], env=minimal_environment(), capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip().splitlines()
    return f"{os.path.basename(program)} {text[0] if text else '?'}"


@dataclass
class CompressStage:
    algorithm: str = "zstd"
    level: int = 6
    threads: int = 0
    name: str = "compress"
    error_class: type[PgBackupError] = CompressionError

    @contextlib.contextmanager
    def command(self) -> Iterator[StageCommand]:
        threads = self.threads or (os.cpu_count() or 1)
        if self.algorithm == "zstd":
            argv = [_program("zstd"), "-q", "-c", f"-{self.level}", f"-T{threads}"]
        elif self.algorithm == "gzip":
            program, parallel = _gzip_program()
            argv = [program, "-c", f"-{self.level}"] + (["-p", str(threads)] if parallel else [])
        else:
            raise CompressionError(f"unknown compression {self.algorithm!r}; expected zstd or gzip")
        yield StageCommand(argv)


@dataclass
class DecompressStage:
    algorithm: str = "zstd"
    name: str = "decompress"
    error_class: type[PgBackupError] = CompressionError

    @contextlib.contextmanager
    def command(self) -> Iterator[StageCommand]:
        if self.algorithm == "zstd":
            argv = [_program("zstd"), "-q", "-d", "-c"]
        elif self.algorithm == "gzip":
            argv = [_gzip_program()[0], "-d", "-c"]
        else:
            raise CompressionError(f"unknown compression {self.algorithm!r}; expected zstd or gzip")
        yield StageCommand(argv)
