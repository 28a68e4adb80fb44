"""The atomic-file reader: RecBole's read_csv(engine="python") runs on pandas' C parser, same frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import recbole

import recbole_mtl  # noqa: F401  (applies the reader)
from recbole.data.dataset import dataset as rb_dataset

ML100K = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"


def _both(path: Path, dtype: dict, **kwargs):
    args = dict(delimiter="\t", dtype=dtype, encoding="utf-8", engine="python", **kwargs)
    return pd.read_csv(path, **args), rb_dataset.pd.read_csv(path, **args)


def _dtypes(path: Path) -> dict:
    head = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    return {h: (float if h.split(":")[1] == "float" else str) for h in head}


def test_recbole_reads_through_the_c_parser(monkeypatch):
    seen = []
    original = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: seen.append(k.get("engine")) or original(*a, **k))
    rb_dataset.pd.read_csv(ML100K / "ml-100k.user", delimiter="\t", engine="python")
    rb_dataset.pd.read_csv(ML100K / "ml-100k.user", delimiter="::", engine="python")  # not one character
    assert seen == ["c", "python"]


@pytest.mark.parametrize("name", ["ml-100k.inter", "ml-100k.item", "ml-100k.user"])
def test_ml100k_files_read_the_same(name):
    path = ML100K / name
    python, c = _both(path, _dtypes(path))
    pd.testing.assert_frame_equal(python, c)


def test_awkward_values_read_the_same(tmp_path):
    path = tmp_path / "x.inter"
    rows = [
        "user_id:token\titem_id:token\tscore:float\ttitle:token_seq\tnote:token",
        "u1\ti1\t0.1234567890123456789\tThe Matrix\t",
        "u2\ti 2\t1e-310\t\"quoted, with tab-free text\"\tnaïve café",
        "u3\ti3\t\t  padded  \t007",
        "u4\ti4\t-0.30000000000000004\tCamelCase Words\tNaN",
        "",
        "u5\ti5\t3.141592653589793238\tlast line\tx",
    ]
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))
    python, c = _both(path, _dtypes(path))
    pd.testing.assert_frame_equal(python, c)
    assert c["score:float"].tolist()[0] == float("0.1234567890123456789")  # Python's rounding
    assert c["note:token"].tolist()[2] == "007"  # tokens stay strings


def test_interaction_rows_by_array_index_are_the_rows_by_list():
    import numpy as np
    import torch
    from recbole.data.interaction import Interaction

    inter = Interaction({"a": torch.arange(10), "b": torch.arange(20.0).view(10, 2)})
    for index in (np.array([3, 1, 1, -1]), torch.tensor([0, 9]), np.arange(10) % 3 == 0,
                  torch.arange(10) > 6, np.array([], dtype=np.int64), np.array([2, 5], dtype=np.int32)):
        rows = inter[index]
        as_list = np.asarray(index).tolist()
        for key in ("a", "b"):
            expected = inter.interaction[key][as_list] if len(as_list) else inter.interaction[key][:0]
            assert torch.equal(rows[key], expected), (key, index)


def test_interaction_rows_by_python_list_are_recboles():
    import torch
    from recbole.data.interaction import Interaction

    inter = Interaction({"a": torch.arange(6), "b": torch.arange(12.0).view(6, 2)})
    for index in ([4, 0, 4], [True, False, True, False, False, True], [-1]):
        rows = inter[index]
        for key in ("a", "b"):
            assert torch.equal(rows[key], inter.interaction[key][index])
