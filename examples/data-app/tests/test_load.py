from datetime import date

import pytest

from sales.load import Sale, load_sales


def test_loads_every_day_typed():
    sales = load_sales()
    assert len(sales) == 28
    assert sales[0] == Sale(day=date(2024, 6, 3), temperature_c=18.5, units_sold=89)
    assert all(isinstance(s.units_sold, int) for s in sales)


def test_missing_column_is_reported(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("date,units_sold\n2024-06-03,89\n", encoding="utf-8")
    with pytest.raises(ValueError, match="temperature_c"):
        load_sales(path)
