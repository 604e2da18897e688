"""The per-instance results table, written in checkpointed parts so a run can stop and resume.

Layout for one video, in `<out>/<video stem>/`:

```
parts/part-00000000-00000199.parquet   rows of frames 0..199 (written whole, then renamed into place)
progress.json                          last completed frame, the parts that hold it, the schema
results.parquet, results.csv           the whole table, written when the video is finished
```

`progress.json` is replaced atomically after each part, so after an interruption it names exactly
the parts whose frames are complete; stray files (a part written but not yet recorded) are removed on
resume, and the run continues after the last completed frame: no row is lost or written twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sipec.data.atomic import atomic_path

PROGRESS = "progress.json"
PARTS = "parts"
# meta keys a resume must find unchanged in progress.json: the same video file, the same model versions
RESUME_KEYS = ("source", "model_versions")


class ResumeMismatch(ValueError):
    """progress.json belongs to another video, or to other model versions: resuming would mix two analyses."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _atomic_write_table(path: Path, table: pa.Table, fmt: str) -> None:
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            pacsv.write_csv(table, tmp)


class ResultsWriter:
    """Collects rows frame by frame and writes them in parts of `chunk_frames` frames.

    `schema` fixes the columns (pyarrow schema); rows are dicts with those keys (missing keys -> null).
    Frames must be completed in increasing order (`add_frame(index, rows)`, possibly with no rows).
    """

    def __init__(self, folder: Path, schema: pa.Schema, chunk_frames: int = 200, resume: bool = False,
                 meta: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.schema = schema
        self.chunk_frames = max(1, chunk_frames)
        self.meta = meta or {}
        self.parts_dir = self.folder / PARTS
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = []
        self.last_completed = -1
        self.finished = False
        if resume:
            self._load_progress()
        else:
            for p in self.parts_dir.glob("*.parquet"):
                p.unlink()
            (self.folder / PROGRESS).unlink(missing_ok=True)
        self._rows: list[dict[str, Any]] = []
        self._first: int | None = None
        self._pending_last = self.last_completed

    # resume ---------------------------------------------------------------------------------------
    def _load_progress(self) -> None:
        path = self.folder / PROGRESS
        if not path.is_file():
            for p in self.parts_dir.glob("*.parquet"):
                p.unlink()
            return
        progress = json.loads(path.read_text())
        if progress.get("schema") != self.schema.names:
            raise ValueError(f"{path}: the results columns changed since the interrupted run "
                             f"({len(progress.get('schema', []))} -> {len(self.schema.names)} columns); "
                             "run again without --resume")
        self.parts = [p for p in progress["parts"] if (self.parts_dir / p).is_file()]
        if len(self.parts) != len(progress["parts"]):
            raise ValueError(f"{path}: names parts that are missing from {self.parts_dir}; run again without --resume")
        for key in RESUME_KEYS:
            if key in self.meta and key in progress and progress[key] != self.meta[key]:
                what = "another video" if key == "source" else "other model versions"
                raise ResumeMismatch(f"{path}: was written for {what} ({key} {progress[key]}, now "
                                     f"{self.meta[key]}); resuming would mix two analyses. Analyse into another "
                                     "--out, or run again without --resume to start this video over")
        self.last_completed = int(progress["last_completed_frame"])
        self.finished = bool(progress.get("finished"))
        for p in self.parts_dir.glob("*.parquet"):  # written after the last checkpoint: not complete
            if p.name not in self.parts:
                p.unlink()

    @property
    def next_frame(self) -> int:
        return self.last_completed + 1

    # writing --------------------------------------------------------------------------------------
    def add_frame(self, index: int, rows: list[dict[str, Any]]) -> None:
        if index <= self._pending_last:
            raise ValueError(f"frame {index} completed twice or out of order (last {self._pending_last})")
        if self._first is None:
            self._first = index
        self._pending_last = index
        self._rows.extend(rows)
        if index - self._first + 1 >= self.chunk_frames:
            self.flush()

    def flush(self) -> None:
        if self._first is None:
            return
        first, last = self._first, self._pending_last
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        name = f"part-{first:08d}-{last:08d}.parquet"
        _atomic_write_table(self.parts_dir / name, table, "parquet")
        self.parts.append(name)
        self.last_completed = last
        self._write_progress()
        self._rows = []
        self._first = None

    def _write_progress(self) -> None:
        progress = {"last_completed_frame": self.last_completed, "parts": self.parts, "finished": self.finished,
                    "schema": self.schema.names, **self.meta}
        _atomic_write_bytes(self.folder / PROGRESS, json.dumps(progress, indent=1).encode())

    def table(self, columns: list[str] | None = None) -> pa.Table:
        """The rows written so far (all columns, or `columns`), read back from the parts."""
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        tables = [pq.read_table(self.parts_dir / p, columns=columns, schema=schema) for p in self.parts]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def finish(self) -> None:
        """Flush, then write results.parquet and results.csv (each atomically) part by part: the memory this
        takes is one part's, however long the video (docs/benchmarks.md, memory against video length)."""
        self.flush()
        with atomic_path(self.folder / "results.parquet") as pq_tmp, \
                atomic_path(self.folder / "results.csv") as csv_tmp:
            parquet = pq.ParquetWriter(pq_tmp, self.schema)
            csv = pacsv.CSVWriter(csv_tmp, self.schema)
            try:
                for p in self.parts:
                    part = pq.read_table(self.parts_dir / p, schema=self.schema)
                    parquet.write_table(part)
                    csv.write_table(part)
            finally:
                parquet.close()
                csv.close()
        self.finished = True
        self._write_progress()
