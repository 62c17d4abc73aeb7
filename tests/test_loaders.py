"""Real-benchmark loaders on small fixture files written in the published formats."""

import numpy as np
import pytest
import torch

import polytask as pt
from polytask.data.aliexpress import HEADER
from polytask.data.census import CATEGORICAL, COLUMNS, NUMERICAL
from polytask.data.files import DataFileError


def census_row(rng, income="- 50000.", marital="Never married", education="Children", worker=None):
    values = []
    for c in COLUMNS:
        if c == "income":
            values.append(income)
        elif c == "marital_stat":
            values.append(marital)
        elif c == "education":
            values.append(education)
        elif c in NUMERICAL or c == "instance_weight":
            values.append(str(int(rng.integers(0, 90))))
        elif c == "class_worker" and worker is not None:
            values.append(worker)
        else:
            values.append(rng.choice(["a", "b", "?", " Not in universe"]).strip())
    return ", ".join(values)


@pytest.fixture
def census_dir(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        census_row(rng, income=inc, marital=mar, education=edu)
        for inc, mar, edu in [
            ("- 50000.", "Never married", "Children"),
            ("50000+.", "Married-civilian spouse present", "Bachelors degree(BA AB BS)"),
            ("- 50000.", "Divorced", "High school graduate"),
            ("50000+.", "Never married", "Doctorate degree(PhD EdD)"),
        ]
    ]
    (tmp_path / "census-income.data").write_text("\n".join(rows) + "\n")
    test_rows = [census_row(rng, worker="never-seen-value") for _ in range(4)]
    (tmp_path / "census-income.test").write_text("\n".join(test_rows) + "\n")
    return tmp_path


def test_census_reads_the_uci_layout_with_the_mmoe_task_groups(census_dir):
    data = pt.data.create("census_income", path=str(census_dir))
    assert [t.name for t in data.tasks] == ["income", "marital"]
    assert data.train.targets["income"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert data.train.targets["marital"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert len(data.train) == 4 and len(data.val) + len(data.test) == 4
    # education and marital status are not inputs; instance_weight and income neither
    assert len(data.input_shape.categorical) == len(CATEGORICAL) == 42 - 7 - 4
    assert "education" not in CATEGORICAL and "instance_weight" not in CATEGORICAL
    # a value never seen in training is the OOV id 0
    worker = CATEGORICAL.index("class_worker")
    assert torch.all(data.test.inputs["categorical"][:, worker] == 0)
    g2 = pt.data.create("census_income", path=str(census_dir), group="G2")
    assert g2.train.targets["education"].tolist() == [0.0, 1.0, 0.0, 1.0]
    model = pt.models.create("mmoe", tasks=data.tasks, input_shape=data.input_shape)
    assert model(data.test.inputs)["income"].shape == (2, 1)


def test_census_errors_name_file_line_and_column(census_dir, tmp_path):
    with pytest.raises(DataFileError, match=r"census-income\.data not found"):
        pt.data.create("census_income", path=str(tmp_path / "nowhere"))
    lines = (census_dir / "census-income.data").read_text().splitlines()
    bad = lines[1].split(", ")
    bad[0] = "forty"
    (census_dir / "census-income.data").write_text("\n".join([lines[0], ", ".join(bad)]) + "\n")
    with pytest.raises(DataFileError, match=r"census-income.data, line 2, column 'age'"):
        pt.data.create("census_income", path=str(census_dir))
    (census_dir / "census-income.data").write_text(lines[0] + "\n" + "1, 2, 3\n")
    with pytest.raises(DataFileError, match=r"line 2: expected 42 columns, found 3"):
        pt.data.create("census_income", path=str(census_dir))


def aliexpress_rows(n, seed, max_id=5):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cats = rng.integers(0, max_id, 16)
        nums = rng.random(63).round(4)
        click = int(rng.random() < 0.5)
        rows.append(
            ",".join([str(i), *map(str, cats), *map(str, nums), str(click), str(click * int(rng.random() < 0.5))])
        )
    return rows


@pytest.fixture
def aliexpress_dir(tmp_path):
    folder = tmp_path / "AliExpress_NL"
    folder.mkdir()
    (folder / "train.csv").write_text("\n".join([",".join(HEADER), *aliexpress_rows(20, 0)]) + "\n")
    (folder / "test.csv").write_text("\n".join([",".join(HEADER), *aliexpress_rows(6, 1, max_id=9)]) + "\n")
    return tmp_path


def test_aliexpress_reads_the_country_csv_layout(aliexpress_dir):
    data = pt.data.create("aliexpress", path=str(aliexpress_dir), country="NL", val_fraction=0.25)
    assert [t.name for t in data.tasks] == ["ctr", "ctcvr"]
    assert (len(data.train), len(data.val), len(data.test)) == (15, 5, 6)
    assert data.input_shape.categorical[0].vocab_size <= 6  # ids 0..4 shifted by one, plus OOV
    assert torch.all(data.train.targets["ctcvr"] <= data.train.targets["ctr"])
    assert torch.all(
        data.test.inputs["categorical"] < torch.tensor([f.vocab_size for f in data.input_shape.categorical])
    )
    out = pt.models.create("esmm", tasks=data.tasks, input_shape=data.input_shape)(data.test.inputs)
    assert out["ctcvr"].shape == (6,)


def test_aliexpress_errors(aliexpress_dir):
    with pytest.raises(DataFileError, match=r"AliExpress_FR/train\.csv not found"):
        pt.data.create("aliexpress", path=str(aliexpress_dir), country="FR")
    train = aliexpress_dir / "AliExpress_NL" / "train.csv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(["id,click", *lines[1:]]) + "\n")
    with pytest.raises(DataFileError, match="line 1: unexpected header"):
        pt.data.create("aliexpress", path=str(aliexpress_dir))
    fields = lines[2].split(",")
    fields[3] = "x"
    train.write_text("\n".join([lines[0], lines[1], ",".join(fields)]) + "\n")
    with pytest.raises(DataFileError, match=r"train.csv, line 3, column 'categorical_3'"):
        pt.data.create("aliexpress", path=str(aliexpress_dir))


def test_missing_required_path_is_a_clear_error():
    with pytest.raises(pt.ConfigError, match="needs option"):
        pt.data.create("census_income")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_census_refuses_a_non_finite_number_naming_file_line_and_column(census_dir, value):
    lines = (census_dir / "census-income.data").read_text().splitlines()
    bad = lines[1].split(", ")
    bad[0] = value  # age
    (census_dir / "census-income.data").write_text("\n".join([lines[0], ", ".join(bad), *lines[2:]]) + "\n")
    with pytest.raises(DataFileError, match=r"census-income.data, line 2, column 'age': expected a finite number"):
        pt.data.create("census_income", path=str(census_dir))


@pytest.mark.parametrize(("column", "value"), [(3, "nan"), (3, "inf"), (3, "1e300"), (20, "nan"), (20, "-inf")])
def test_aliexpress_refuses_non_finite_values_and_huge_ids(aliexpress_dir, column, value):
    train = aliexpress_dir / "AliExpress_NL" / "train.csv"
    lines = train.read_text().splitlines()
    fields = lines[2].split(",")
    fields[column] = value
    train.write_text("\n".join([lines[0], lines[1], ",".join(fields), *lines[3:]]) + "\n")
    name = HEADER[column]
    with pytest.raises(DataFileError, match=rf"train.csv, line 3, column '{name}'"):
        pt.data.create("aliexpress", path=str(aliexpress_dir))


def test_loaders_expand_the_home_directory(aliexpress_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(aliexpress_dir))
    data = pt.data.create("aliexpress", path="~", country="NL")
    assert len(data.test) == 6
