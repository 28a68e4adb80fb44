"""``convert --format sequences`` and ``--format pairs``: order-only dumps (the preprocessed Amazon
Beauty/Sports files of the sequential-recommendation papers) -> atomic files plus a YAML that carries
the papers' leave-one-out protocol. Every sample is a few lines written here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recbole_mtl.config import Config
from recbole_mtl.data.convert import convert
from recbole_mtl.errors import ConvertError

# One line per user, items in time order. u3 has 3 items: it must not be filtered out, and RecBole's
# sequential leave-one-out gives it a test row but no validation row (see test_the_protocol_split).
# "7" takes item 12 twice: both stay.
SEQUENCES = """\
7 10 11 12 13 12
u2 11 13 15 10

u3 12 16 10
u4 16 10 11 15 12
"""
# What the .inter must hold, in this order: (user, item, position in the user's line).
SEQUENCES_ROWS = [("7", "10", "0"), ("7", "11", "1"), ("7", "12", "2"), ("7", "13", "3"), ("7", "12", "4"),
                  ("u2", "11", "0"), ("u2", "13", "1"), ("u2", "15", "2"), ("u2", "10", "3"),
                  ("u3", "12", "0"), ("u3", "16", "1"), ("u3", "10", "2"),
                  ("u4", "16", "0"), ("u4", "10", "1"), ("u4", "11", "2"), ("u4", "15", "3"), ("u4", "12", "4")]

# One line per interaction, in time order, users interleaved; tabs and spaces both separate.
PAIRS = "a\tx1\nb x2\na x3\n\nc\tx1\nb\tx3\na x2\nc  x4\nb x1\na\tx4\nc x2\nb x4\nc x3\n"
# (user, item, line number): a blank line is skipped but still counts as a line.
PAIRS_ROWS = [("a", "x1", "1"), ("b", "x2", "2"), ("a", "x3", "3"), ("c", "x1", "5"), ("b", "x3", "6"),
              ("a", "x2", "7"), ("c", "x4", "8"), ("b", "x1", "9"), ("a", "x4", "10"), ("c", "x2", "11"),
              ("b", "x4", "12"), ("c", "x3", "13")]

PROTOCOL = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            "eval_mask_history": True, "metrics": ["Hit", "NDCG"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
            "tasks": ["sequence"], "interest_label_field": None, "category_field": None, "RATING_FIELD": None,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 50,
            "TIME_FIELD": "timestamp", "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)"}


def inter_rows(folder: Path, name: str) -> list[tuple]:
    header, *body = (folder / f"{name}.inter").read_text(encoding="utf-8").splitlines()
    assert header.split("\t") == ["user_id:token", "item_id:token", "timestamp:float"]
    return [tuple(line.split("\t")) for line in body]


def by_user(rows: list[tuple]) -> dict:
    """``{user: [items in time order]}`` of hand-written rows."""
    out: dict = {}
    for user, item, stamp in sorted(rows, key=lambda r: (r[0], float(r[2]))):
        out.setdefault(user, []).append(item)
    return out


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


# -- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,text,expected", [("sequences", SEQUENCES, SEQUENCES_ROWS), ("pairs", PAIRS, PAIRS_ROWS)],
                         ids=["sequences", "pairs"])
def test_round_trip_rows_and_order(fmt, text, expected, tmp_path):
    src = write(tmp_path, f"{fmt}.txt", text)
    result = convert(fmt, [src], tmp_path / "out", "d", progress_every=None)
    folder = tmp_path / "out" / "d"
    assert inter_rows(folder, "d") == expected
    assert (result.interactions, result.users, result.items) == (
        len(expected), len({r[0] for r in expected}), len({r[1] for r in expected}))
    assert sorted(p.name for p in folder.iterdir()) == ["d.inter", "d.yaml"]


@pytest.mark.parametrize("fmt,text", [("sequences", SEQUENCES), ("pairs", PAIRS)], ids=["sequences", "pairs"])
def test_the_yaml_carries_the_published_protocol(fmt, text, tmp_path):
    convert(fmt, [write(tmp_path, "in.txt", text)], tmp_path / "out", "d", progress_every=None)
    written = (tmp_path / "out" / "d" / "d.yaml").read_text()
    loaded = yaml.safe_load(written)
    assert {key: loaded.get(key, "absent") for key in PROTOCOL} == PROTOCOL
    assert "published protocol" in written and "leave-one-out" in written
    config = Config(model="MTLRec", dataset="d", config_file_list=[str(tmp_path / "out" / "d" / "d.yaml")],
                    config_dict={"data_path": str(tmp_path / "out"), "state": "ERROR"}, cmd_args=[])
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"
    assert config["eval_args"]["group_by"] == "user" and config["eval_args"]["mode"]["test"] == "full"
    assert config["eval_mask_history"] is True and config["topk"] == [5, 10, 20]
    # the recipe measured on this family (docs/training.md): it reaches the model
    assert (config["sequence_score"], config["sequence_temperature"], config["user_id_input"]) == ("cosine", 0.05, False)
    assert config["hidden_dropout_prob"] == 0.5 and config["attn_dropout_prob"] == 0.5


def test_other_formats_keep_their_yaml(tmp_path):
    clicks = write(tmp_path, "clicks.csv", "".join(f"u{n % 3},i{n % 5}\n" for n in range(15)))
    convert("csv", [clicks], tmp_path / "out", "clicks", columns="user=1,item=2", header=False, progress_every=None)
    written = (tmp_path / "out" / "clicks" / "clicks.yaml").read_text()
    for key in ("eval_args", "eval_mask_history", "topk", "metrics", "MAX_ITEM_LIST_LENGTH", "published"):
        assert key not in written


@pytest.mark.parametrize("fmt,text,expected", [("sequences", SEQUENCES, SEQUENCES_ROWS), ("pairs", PAIRS, PAIRS_ROWS)],
                         ids=["sequences", "pairs"])
def test_the_protocol_split(fmt, text, expected, tmp_path):
    """The written YAML, built by RecBole through the plugin: each user's last item is its test
    item and the second-to-last its validation item; no user or item is filtered out."""
    from recbole_mtl import pipeline

    convert(fmt, [write(tmp_path, "in.txt", text)], tmp_path / "out", "d", progress_every=None)
    config = Config(model="MTLRec", dataset="d", config_file_list=[str(tmp_path / "out" / "d" / "d.yaml")],
                    config_dict={"data_path": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "saved"),
                                 "state": "ERROR"}, cmd_args=[])
    dataset = pipeline.obtain_dataset(config)
    histories = by_user(expected)
    assert dataset.user_num - 1 == len(histories) and dataset.item_num - 1 == len({r[1] for r in expected})
    train, valid, test = dataset.build()

    def targets(part) -> dict:
        users = dataset.id2token("user_id", part.inter_feat["user_id"])
        items = dataset.id2token("item_id", part.inter_feat["item_id"])
        out: dict = {}
        for user, item in zip(users, items):
            out.setdefault(str(user), []).append(str(item))
        return out

    assert targets(test) == {u: [items[-1]] for u, items in histories.items()}
    # RecBole's sequential leave-one-out splits each user's prediction rows (every item but the
    # first): a user with 3 items has 2 rows, so its second-to-last item trains instead of validating.
    assert targets(valid) == {u: [items[-2]] for u, items in histories.items() if len(items) >= 4}
    assert targets(train) == {u: items[1:-2] if len(items) >= 4 else items[1:-1] for u, items in histories.items()}


def test_kcore_works_on_sequences(tmp_path):
    # k=2: round 1 drops items r and s (one interaction each); user C is then left with q alone and
    # goes in round 2. The positions are the line's, so A's q keeps position 2.
    src = write(tmp_path, "s.txt", "A p r q\nB p q\nC q s\n")
    result = convert("sequences", [src], tmp_path / "out", "k", kcore=2, progress_every=None)
    assert inter_rows(tmp_path / "out" / "k", "k") == [("A", "p", "0"), ("A", "q", "2"), ("B", "p", "0"),
                                                       ("B", "q", "1")]
    assert (result.interactions, result.users, result.items, result.dropped, result.kcore_rounds) == (4, 2, 2, 3, 2)
    with pytest.raises(ConvertError, match="--kcore 3 leaves no interaction"):
        convert("sequences", [src], tmp_path / "out", "k", kcore=3, progress_every=None)


# -- malformed lines and atomic output -------------------------------------------------------------
@pytest.mark.parametrize("fmt,text,line,pieces", [
    ("sequences", "u1 1 2 3\nu2\nu3 4 5\n", 2, ["user 'u2' has no item", "Add the user's items"]),
    ("sequences", "u1 1 2 3\n 4 5 6\n", 2, ["field 'user'", "user id", "is empty", "put the user id first"]),
    ("sequences", "u1 1 2 3\n\tu2 4 5\n", 2, ["field 'user'", "is empty"]),
    ("sequences", "u1 1 2\nu2 3 4\nu1 5 6\n", 3, ["user 'u1' is already on line 1", "Merge the two lines"]),
    ("pairs", "u1 i1\nu1 i2 5\n", 2, ["3 field(s), expected 2", "'u1 i2 5'", "fix or drop it"]),
    ("pairs", "u1 i1\nu2 i1\nu3\n", 3, ["1 field(s), expected 2"]),
    ("pairs", "user,item\n", 1, ["1 field(s), expected 2", "no header line"]),
    ("pairs", "u1 i1\n\ti2\n", 2, ["field 'user'", "is empty"]),
])
def test_a_malformed_line_is_one_line_naming_file_and_line(fmt, text, line, pieces, tmp_path):
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(ConvertError) as info:
        convert(fmt, [path], tmp_path / "out", "bad", progress_every=None)
    message = str(info.value)
    assert message.startswith(f"{path}, line {line}"), message
    for piece in pieces:
        assert piece in message, message
    assert "\n" not in message and len(message) < 800
    assert not (tmp_path / "out" / "bad").exists()


def test_a_long_malformed_line_is_quoted_short(tmp_path):
    path = write(tmp_path, "bad.txt", "u1 i1\n" + "u2 " + " ".join(f"i{n}" for n in range(5000)) + "\n")
    with pytest.raises(ConvertError) as info:
        convert("pairs", [path], tmp_path / "out", "bad", progress_every=None)
    assert "line 2" in str(info.value) and "5001 field(s)" in str(info.value) and len(str(info.value)) < 600


@pytest.mark.parametrize("fmt,good,bad,line", [
    ("sequences", SEQUENCES, SEQUENCES + "u2 10 11\n", 6),
    ("pairs", PAIRS, PAIRS + "d x1 x2\n", 14),
], ids=["sequences", "pairs"])
def test_a_failed_conversion_leaves_the_earlier_output_untouched(fmt, good, bad, line, tmp_path):
    out = tmp_path / "out"
    convert(fmt, [write(tmp_path, "good.txt", good)], out, "d", progress_every=None)
    before = snapshot(out / "d")
    broken = write(tmp_path, "broken.txt", bad)
    with pytest.raises(ConvertError) as info:
        convert(fmt, [broken], out, "d", progress_every=None)
    assert str(info.value).startswith(f"{broken}, line {line}")
    assert snapshot(out / "d") == before
    assert sorted(p.name for p in out.iterdir()) == ["d"]  # no staging folder left behind


def test_one_input_file(tmp_path):
    a, b = write(tmp_path, "a.txt", SEQUENCES), write(tmp_path, "b.txt", SEQUENCES)
    with pytest.raises(ConvertError, match="--format sequences takes one file"):
        convert("sequences", [a, b], tmp_path / "out", "d", progress_every=None)
    with pytest.raises(ConvertError, match="--format pairs takes one file"):
        convert("pairs", [tmp_path], tmp_path / "out", "d", progress_every=None)


def test_cli_convert_pairs(tmp_path, capsys):
    from recbole_mtl.cli import main

    src = write(tmp_path, "pairs.txt", PAIRS)
    main(["convert", "--format", "pairs", "--input", str(src), "--out", str(tmp_path / "out"), "--name", "p", "--quiet"])
    printed = capsys.readouterr().out
    users, items = len({r[0] for r in PAIRS_ROWS}), len({r[1] for r in PAIRS_ROWS})
    assert f"{len(PAIRS_ROWS)} interactions, {users} users, {items} items" in printed
