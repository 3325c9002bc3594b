"""Read the raw daily sales file into typed rows."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path

COLUMNS = ("date", "temperature_c", "units_sold")
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "data" / "sales.csv"


@dataclass(frozen=True)
class Sale:
    day: date
    temperature_c: float
    units_sold: int


def load_sales(path: Path = DEFAULT_PATH) -> list[Sale]:
    """All rows of a sales CSV, in file order; ValueError when a column is missing."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return [
            Sale(
                day=date.fromisoformat(row["date"]),
                temperature_c=float(row["temperature_c"]),
                units_sold=int(row["units_sold"]),
            )
            for row in reader
        ]
