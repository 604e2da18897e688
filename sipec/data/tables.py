"""Shared plumbing of the project's CSV label tables: column checks, atomic writes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from sipec.data.atomic import write_text_atomic


def to_frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]], columns: Sequence[str], what: str) -> pd.DataFrame:
    """A DataFrame with exactly `columns` in order; raises ValueError naming missing columns."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=list(columns))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {', '.join(missing)}")
    return df.loc[:, list(columns)]


def write_table(path: str | os.PathLike, df: pd.DataFrame, float_format: str = "%.3f") -> None:
    write_text_atomic(path, df.to_csv(index=False, float_format=float_format, lineterminator="\n"))


def read_table(path: str | os.PathLike, dtypes: Mapping[str, Any], what: str) -> pd.DataFrame:
    """Read a CSV, check that it has every column of `dtypes` and convert them."""
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c, t in dtypes.items() if t is float})
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{path}: empty file, expected a {what} CSV") from exc
    missing = [c for c in dtypes if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a {what} CSV, missing columns {', '.join(missing)}")
    for col, typ in dtypes.items():
        try:
            df[col] = df[col].astype(typ)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: column {col!r} must hold {typ.__name__} values ({exc})") from exc
    return df
