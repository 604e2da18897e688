"""Atomic file writing: write to a temporary name in the same folder, then rename.

An interrupted writer leaves at most a ``.NAME.partial-*`` file behind, never a half-written file
under the final name.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def partial_path(final: Path) -> Path:
    """A fresh temporary name next to `final` (not created; the writer creates it with normal permissions)."""
    return final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:12]}{final.suffix}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (not yet existing) next to `path`; on success rename it to `path`, on error delete it."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
