"""What a model directory holds on disk, to tell when it changed and when it has settled.

A scan records every file's relative path, size and modification time. Two scans that are
equal mean nothing changed; a directory whose newest file is older than the settle period is
complete (a copy in progress keeps touching its files, an atomic rename of a finished folder
does not).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

#: One file: (path relative to the scanned directory, size, mtime in ns).
FileStat = tuple[str, int, int]


def scan_files(root: Path) -> tuple[FileStat, ...]:
    """Every regular file below ``root`` (hidden entries skipped), sorted; () if unreadable."""
    found: list[FileStat] = []
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in filenames:
                if filename.startswith("."):
                    continue
                path = os.path.join(dirpath, filename)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(found))


@dataclass(frozen=True)
class DirectoryScan:
    """A model directory's files at one moment."""

    files: tuple[FileStat, ...]

    @property
    def newest_ns(self) -> int:
        """The newest modification time of any file (0 for an empty directory)."""
        return max((mtime for _, _, mtime in self.files), default=0)

    def settled(self, settle_s: float, now_ns: int | None = None) -> bool:
        """True when no file changed during the last ``settle_s`` seconds."""
        now = time.time_ns() if now_ns is None else now_ns
        return now - self.newest_ns >= int(settle_s * 1e9)


def scan_model(model_dir: Path) -> DirectoryScan:
    """The files of a model directory: its configuration and every version folder."""
    return DirectoryScan(scan_files(model_dir))


def version_files(version_dir: Path) -> tuple[FileStat, ...]:
    """The files of one version folder (what a version's identity on disk is made of)."""
    return scan_files(version_dir)
