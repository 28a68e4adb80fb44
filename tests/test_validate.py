"""Atomic-file validation: every malformed input gets one clear message (file, line, field)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recbole_mtl.config import Config
from recbole_mtl.data.validate import DataValidationError, validate_dataset

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ROWS = ["1\t10\t4\t881250949", "1\t11\t2\t881250950", "2\t10\t5\t881250951", "2\t12\t3\t881250952",
        "3\t11\t4\t881250953", "3\t12\t1\t881250954"]
USER = "user_id:token\tage:token\tgender:token\n1\t24\tM\n2\t53\tF\n3\t23\tM\n"
ITEM = "item_id:token\tmovie_title:token_seq\tclass:token_seq\n10\tToy Story\tAnimation Comedy\n" \
       "11\tGoldenEye\tAction\n12\tHeat\tAction Crime\n"


def inter(*rows: str, header: str = INTER) -> str:
    return header + "\n".join(rows or ROWS) + "\n"


def write(folder: Path, name: str, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, content in files.items():
        path = folder / f"{name}.{suffix}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")


def check(root: Path, files: dict, model: str = "MTLRec", **config) -> list:
    name = "bad"
    write(root / name, name, {"inter": inter(), "user": USER, "item": ITEM, **files})
    cfg = Config(model=model, dataset=name, config_dict={"data_path": str(root), "checkpoint_dir": str(root / "saved"),
                                                          "state": "ERROR", **config}, cmd_args=[])
    return validate_dataset(cfg)


# (case id, files to overwrite, config, expected pieces of the message)
CASES = [
    ("header field without a type", {"inter": inter(header="user_id\titem_id:token\trating:float\ttimestamp:float\n")},
     {}, ["bad.inter", "line 1", "'user_id'", "name:type"]),
    ("header field with an unknown type", {"inter": inter(header="user_id:token\titem_id:token\trating:int\ttimestamp:float\n")},
     {}, ["bad.inter", "line 1", "field 'rating'", "unknown type 'int'"]),
    ("duplicated header field", {"item": "item_id:token\tclass:token_seq\tclass:token_seq\n10\ta\tb\n"},
     {}, ["bad.item", "line 1", "field 'class'", "twice"]),
    ("extra column on one line", {"inter": inter(*ROWS[:2], "2\t10\t5\t881250951\t7", *ROWS[3:])},
     {}, ["bad.inter", "line 4", "5 column(s)", "header has 4"]),
    ("missing column on one line", {"inter": inter(*ROWS[:4], "3\t11\t4", *ROWS[5:])},
     {}, ["bad.inter", "line 6", "3 column(s)"]),
    ("rating written as a word", {"inter": inter(ROWS[0], "1\t11\tfour\t881250950", *ROWS[2:])},
     {}, ["bad.inter", "line 3", "field 'rating'", "'four'", "expected a number"]),
    ("NaN timestamp", {"inter": inter(*ROWS[:2], "2\t10\t5\tNaN", *ROWS[3:])},
     {}, ["bad.inter", "line 4", "field 'timestamp'", "not a finite number"]),
    ("inf price in the item file", {"item": "item_id:token\tprice:float\n10\t3.5\n11\tinf\n12\t1\n"},
     {}, ["bad.item", "line 3", "field 'price'", "not a finite number"]),
    ("empty rating", {"inter": inter(*ROWS[:5], "3\t12\t\t881250954")},
     {}, ["bad.inter", "line 7", "field 'rating'", "empty"]),
    ("empty user id", {"inter": inter(*ROWS[:1], "\t11\t2\t881250950", *ROWS[2:])},
     {}, ["bad.inter", "line 3", "field 'user_id'", "id is empty"]),
    ("empty interaction file", {"inter": b""}, {}, ["bad.inter", "empty"]),
    ("header but no interactions", {"inter": INTER}, {}, ["bad.inter", "no rows"]),
    ("binary item file", {"item": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03item"}, {}, ["bad.item", "line 1", "not a text file"]),
    ("user file not utf-8", {"user": "user_id:token\tgender:token\n1\tM\n2\tF\n3\tM\xe9\n".encode("latin-1")},
     {}, ["bad.user", "line 4", "not valid utf-8"]),
    ("Windows line endings", {"inter": inter().replace("\n", "\r\n")}, {}, ["bad.inter", "line 1", "CRLF"]),
    ("byte-order mark", {"user": "\ufeff" + USER}, {}, ["bad.user", "line 1", "byte-order mark"]),
    ("user file without the user id", {"user": "uid:token\tage:token\n1\t24\n"}, {},
     ["bad.user", "field 'user_id'", "identifies each row"]),
    ("configured category field absent", {}, {"category_field": "genre"},
     ["bad.item", "field 'genre'", "category_field"]),
    ("configured interest label absent", {}, {"interest_label_field": "score"},
     ["bad.inter", "field 'score'", "interest_label_field"]),
    ("configured text field absent", {}, {"text_features": True, "text_fields": ["movie_title", "plot"]},
     ["bad.item", "field 'plot'", "text_fields"]),
    ("threshold on a missing field", {}, {"threshold": {"label": 1}}, ["bad.inter", "field 'label'", "threshold"]),
    ("bad number in a float_seq feature file",
     {"itememb": "item_emb_id:token\titem_emb:float_seq\n10\t0.1 0.2\n11\t0.3 x\n"},
     {"additional_feat_suffix": ["itememb"]}, ["bad.itememb", "line 3", "field 'item_emb'", "element 2"]),
    ("sequential model without the time field loaded", {}, {"load_col": {"inter": ["user_id", "item_id", "rating"]}},
     ["load_col", "'timestamp'", "load_col['inter']"]),
    ("time-ordered split without a time column", {"inter": "user_id:token\titem_id:token\trating:float\n1\t10\t4\n"},
     {}, ["bad.inter", "field 'timestamp'", "eval_args order"]),
    ("header separated by commas", {"user": "user_id:token,age:token\n1,24\n"}, {},
     ["bad.user", "line 1", "field_separator"]),
]


@pytest.mark.parametrize("case,files,config,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_dataset_gets_one_clear_message(case, files, config, expected, tmp_path):
    with pytest.raises(DataValidationError) as info:
        check(tmp_path, files, **config)
    message = str(info.value)
    for piece in expected:
        assert piece in message, f"{case}: {piece!r} not in {message!r}"
    assert "\n" not in message.strip()


def test_well_formed_dataset_passes_and_unused_ids_only_warn(tmp_path):
    assert check(tmp_path, {}, category_field="class") == []
    warnings = check(tmp_path, {"item": ITEM + "99\tUnseen\tDrama\n"}, category_field="class")
    assert len(warnings) == 1 and "bad.item" in warnings[0] and "1 of 4 items" in warnings[0] and "'99'" in warnings[0]


def test_columns_left_out_by_load_col_are_not_parsed(tmp_path):
    """RecBole never reads a column outside load_col, so its values are not checked (the row shape is)."""
    bad_price = {"item": "item_id:token\tprice:float\n10\tcheap\n11\t1\n12\t2\n"}
    with pytest.raises(DataValidationError, match="price"):
        check(tmp_path, bad_price)
    check(tmp_path, bad_price, load_col={"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id"]})


def test_bundled_ml100k_passes_for_plugin_and_baselines():
    for model, extra in [("MTLRec", {}), ("SASRec", {"train_neg_sample_args": None}), ("DeepFM", {"threshold": {"rating": 4}})]:
        assert validate_dataset(Config(model=model, dataset="ml-100k", config_dict=extra, cmd_args=[])) == []


def test_cli_validate_and_train_print_one_line_without_traceback(tmp_path, capsys):
    from recbole_mtl.cli import main

    write(tmp_path / "bad", "bad", {"inter": inter(ROWS[0], "1\t11\tfour\t881250950"), "item": ITEM, "user": USER})
    for argv in (["validate", "--dataset=bad"], ["--model=MTLRec", "--dataset=bad", "--epochs=1"]):
        with pytest.raises(SystemExit) as info:
            main(argv + [f"--data_path={tmp_path}", f"--checkpoint_dir={tmp_path / 'saved'}"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "bad.inter, line 3, field 'rating'" in err and len(err.strip().splitlines()) == 1


def test_empty_dataset_after_filtering_is_a_clear_error(data_root, workdir):
    from recbole_mtl.pipeline import build

    config = Config(model="MTLRec", dataset="ml-slice", cmd_args=[], config_dict={
        "data_path": str(data_root), "checkpoint_dir": str(workdir / "saved"), "state": "ERROR",
        "val_interval": {"rating": "[10,inf)"}})
    with pytest.raises(DataValidationError, match="no interactions left after filtering.*val_interval"):
        build(config)


# -- duplicate ids, folders a run writes, the text-feature cache, tasks, long values -----------------
@pytest.mark.parametrize("suffix,content,lines", [
    ("item", ITEM + "11\tGoldenEye again\tAction\n", (3, 5)),
    ("user", "user_id:token\tage:token\tgender:token\n1\t24\tM\n2\t53\tF\n1\t30\tF\n3\t23\tM\n", (2, 4)),
])
def test_duplicate_id_in_item_or_user_file_names_both_lines(suffix, content, lines, tmp_path):
    with pytest.raises(DataValidationError) as info:
        check(tmp_path, {suffix: content})
    message = str(info.value)
    first, second = lines
    assert f"bad.{suffix}, line {second}" in message and f"already on line {first}" in message
    assert f"lines {first} and {second}" in message


def _cli(argv, capsys) -> tuple[int, str]:
    from recbole_mtl.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_unwritable_checkpoint_dir_fails_before_data_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the data is malformed too: the folder error must come first, before any file is read
    write(tmp_path / "bad", "bad", {"inter": inter(ROWS[0], "1\t11\tfour\t881250950"), "item": ITEM, "user": USER})
    (tmp_path / "a-file").write_text("x")
    blocked = tmp_path / "a-file" / "saved"
    for argv in (["validate", "--dataset=bad"], ["--model=MTLRec", "--dataset=bad", "--epochs=1"]):
        code, err = _cli(argv + [f"--data_path={tmp_path}", f"--checkpoint_dir={blocked}"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"cannot write to {blocked}" in err and "checkpoint_dir" in err and "is a file" in err
        assert "bad.inter" not in err
    assert not (tmp_path / "log").exists()  # stopped before RecBole's logger made its folder


def test_unwritable_log_folder_is_named_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "bad", "bad", {"inter": inter(), "item": ITEM, "user": USER})
    (tmp_path / "log").write_text("not a folder")
    code, err = _cli(["--model=MTLRec", "--dataset=bad", f"--data_path={tmp_path}",
                      f"--checkpoint_dir={tmp_path / 'saved'}"], capsys)
    assert code == 2 and "cannot write to log" in err and "working directory" in err


def test_unwritable_text_feature_folder_is_named_with_its_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "bad", "bad", {"inter": inter(), "item": ITEM, "user": USER})
    (tmp_path / "a-file").write_text("x")
    blocked = tmp_path / "a-file" / "features"
    common = [f"--data_path={tmp_path}", f"--text_feature_dir={blocked}"]
    code, err = _cli(["embed", "--dataset=bad", "--text_fields", "movie_title", *common], capsys)
    assert code == 2 and f"cannot write to {blocked / 'bad'}" in err and "text_feature_dir" in err
    # validate: text features on and not embedded yet, so `embed` will have to write there
    code, err = _cli(["validate", "--dataset=bad", "--text_features=True", f"--checkpoint_dir={tmp_path / 's'}",
                      *common], capsys)
    assert code == 2 and "text_feature_dir" in err


def _features(folder: Path, name: str, fields) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.itememb").write_text("item_emb_id:token\titem_emb:float_seq\n10\t0.1 0.2\n11\t0.3 0.4\n12\t0.5 0.6\n")
    (folder / f"{name}.itememb.json").write_text(json.dumps(
        {"plm": "some-model", "text_fields": list(fields), "dim": 2, "items": 3, "item_file_sha256": "0", "format": 1}))


def test_text_feature_cache_made_from_other_fields_is_an_error_before_loading(tmp_path):
    from recbole_mtl.errors import TextFeatureError

    item = "item_id:token\tmovie_title:token_seq\tplot:token_seq\tclass:token_seq\n10\tToy Story\ttoys\tAnimation\n" \
           "11\tGoldenEye\tspies\tAction\n12\tHeat\tcops\tCrime\n"
    _features(tmp_path / "bad", "bad", ["movie_title"])
    with pytest.raises(TextFeatureError) as info:
        check(tmp_path, {"item": item}, text_features=True, text_fields=["movie_title", "plot"])
    message = str(info.value)
    assert "made from text fields ['movie_title']" in message and "['movie_title', 'plot']" in message
    assert "bad.itememb.json" in message and "embed --dataset bad" in message
    assert "set text_fields: [movie_title]" in message
    # the same fields: no error
    assert check(tmp_path, {"item": item}, text_features=True, text_fields=["movie_title"], category_field="class") == []


NO_RATING = "user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(
    "\t".join(r.split("\t")[:2] + r.split("\t")[3:]) for r in ROWS) + "\n"


def test_default_task_the_data_cannot_serve_is_a_warning(tmp_path):
    warnings = check(tmp_path, {"inter": NO_RATING}, category_field="class")
    assert len(warnings) == 1 and "task 'interest'" in warnings[0] and "'rating'" in warnings[0]
    assert "interest_label_field" in warnings[0] and "switched off" in warnings[0]
    # the model's default tasks include category: without category_field, a warning too
    assert any("task 'category'" in w and "category_field" in w for w in check(tmp_path, {}))


@pytest.mark.parametrize("config,asked", [
    ({"tasks": ["sequence", "interest"]}, "tasks"),
    ({"tasks": ["sequence", "category"], "category_field": "movie_title", "load_col": {
        "inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "class"]}}, "tasks and category_field"),
])
def test_task_set_explicitly_that_the_data_cannot_serve_is_an_error(config, asked, tmp_path):
    files = {"inter": NO_RATING} if "interest" in config["tasks"] else {}
    with pytest.raises(DataValidationError) as info:
        check(tmp_path, files, **config)
    message = str(info.value)
    assert "cannot run on dataset 'bad'" in message and f"Your config sets {asked}" in message


def test_explicit_task_fails_the_run_but_only_warns_in_validate(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "bad", "bad", {"inter": NO_RATING, "item": ITEM, "user": USER})
    common = [f"--data_path={tmp_path}", f"--checkpoint_dir={tmp_path / 'saved'}", "--category_field=class"]
    code, err = _cli(["validate", "--dataset=bad", *common], capsys)
    assert code == 0 and "warning: task 'interest'" in err
    code, err = _cli(["--model=MTLRec", "--dataset=bad", "--tasks=['sequence','interest']", *common], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "task 'interest' cannot run" in err


LONG = "x" * 5000


@pytest.mark.parametrize("files,config", [
    ({"inter": inter(header=f"user_id:token\t{LONG}:token\trating:float\ttimestamp:float\n")}, {}),
    ({"inter": inter(header=f"user_id:token\titem_id:token\trating:float\ttimestamp:float\t{LONG}:float\n")}, {}),
    ({"inter": inter(header=f"user_id:token\titem_id:token\trating:float\ttimestamp:{LONG}\n")}, {}),
    ({"inter": inter(header=f"user_id:token\titem_id:token\trating:float\ttimestamp:float\t{LONG}\n")}, {}),
    ({"inter": inter(ROWS[0], f"1\t11\t{LONG}\t881250950")}, {}),
    ({"item": ITEM + f"{LONG}\ta\tb\n{LONG}\ta\tb\n"}, {}),
    ({}, {"category_field": LONG}),
    ({}, {"threshold": {LONG: 1}}),
])
def test_error_messages_quote_at_most_200_characters_of_a_value(files, config, tmp_path):
    with pytest.raises(DataValidationError) as info:
        check(tmp_path, files, **config)
    message = str(info.value)
    assert "x" * 201 not in message and len(message) < 1200, message[:300]


# -- fuzzing: anything either passes or gets a DataValidationError, never another exception -------
_FUZZ_ROOT = Path(tempfile.mkdtemp(prefix="recbole-mtl-fuzz-"))
_VALID = {"inter": inter(), "user": USER, "item": ITEM}
_CONFIG = {}


def _fuzz_config() -> Config:
    if "config" not in _CONFIG:
        write(_FUZZ_ROOT / "fz", "fz", _VALID)
        _CONFIG["config"] = Config(model="MTLRec", dataset="fz", cmd_args=[], config_dict={
            "data_path": str(_FUZZ_ROOT), "checkpoint_dir": str(_FUZZ_ROOT / "saved"), "state": "ERROR"})
    return _CONFIG["config"]


def _validate_files(files: dict) -> None:
    config = _fuzz_config()
    write(_FUZZ_ROOT / "fz", "fz", {**_VALID, **files})
    try:
        validate_dataset(config)
    except DataValidationError as e:
        assert str(e).startswith(str(_FUZZ_ROOT / "fz")) or str(e).startswith("config key"), str(e)


_SPECIAL = st.sampled_from(["\t", "\n", ":", '"', "\x00", "\xe9", "nan", "inf", "", " ", "\r", "token", "float_seq",
                            "-1e400", "1.5", "\ufeff", "four"])


@st.composite
def mutated(draw, text: str) -> bytes:
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate_line", "truncate"]))
        pos = draw(st.integers(0, max(0, len(chars) - 1)))
        if op == "insert":
            chars[pos:pos] = list(draw(_SPECIAL))
        elif op == "delete" and chars:
            del chars[pos]
        elif op == "replace" and chars:
            chars[pos:pos + 1] = list(draw(_SPECIAL))
        elif op == "duplicate_line":
            lines = "".join(chars).split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            chars = list("\n".join(lines))
        elif op == "truncate":
            chars = chars[:pos]
    encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
    return "".join(chars).encode(encoding, errors="replace")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["inter", "user", "item"]), st.binary(max_size=300))
def test_fuzz_random_bytes(suffix, data):
    _validate_files({suffix: data})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_valid_files(data):
    suffix = data.draw(st.sampled_from(["inter", "user", "item"]))
    _validate_files({suffix: data.draw(mutated(_VALID[suffix]))})


def teardown_module(module):
    shutil.rmtree(_FUZZ_ROOT, ignore_errors=True)


# -- the fast path: it may only accept, and accepts exactly what the line-by-line check accepts ---------
from recbole_mtl.data.validate import fast as _fast, reader as _reader  # noqa: E402
from recbole_mtl.data.validate import FileRules, check_file  # noqa: E402

_INTER_RULES = FileRules(required_fields={"user_id": "x", "item_id": "y"}, required_values={"rating", "timestamp"},
                         nonempty_tokens={"user_id", "item_id"}, collect_ids={"user_id", "item_id"}, need_rows=True)
# (header, rules): an interaction file, .item files as validate_dataset checks them (with and without
# load_col), a unique id whose values are not collected, a float_seq file and a one-column file
_SHAPES = [
    ("user_id:token\titem_id:token\trating:float\ttimestamp:float", _INTER_RULES),
    ("item_id:token\tprice:float\ttitle:token_seq", FileRules(
        required_fields={"item_id": "z"}, nonempty_tokens={"item_id"}, collect_ids={"item_id"}, unique_ids="item_id")),
    ("item_id:token\tprice:float\ttitle:token_seq", FileRules(
        required_fields={"item_id": "z"}, nonempty_tokens={"item_id"}, collect_ids={"item_id"}, unique_ids="item_id",
        load_col={"item_id"})),
    ("item_id:token\tprice:float\ttitle:token_seq", FileRules(unique_ids="item_id", load_col={"price"})),
    ("item_id:token\temb:float_seq", FileRules(collect_ids={"item_id"}, unique_ids="item_id")),
    ("user_id:token", FileRules(nonempty_tokens={"user_id"}, collect_ids={"user_id"}, unique_ids="user_id")),
    ("item_id:token\ttitle:token_seq\tyear:token", FileRules()),  # no column to read: row shapes only
]
_CELLS = st.one_of(
    st.sampled_from(["1", "2", "3", "10", "11", "4", "4.5", "-3", "1e3", "0.1 0.2", "", " ", "  ", " 4.5", "4.5 ",
                     "1_0", "_1", "nan", "NaN", "inf", "-inf", "1e400", "four", "0x10", "1.", ".5", "+2", "\u0661\u0662",
                     '"', '"4"', 'a"b', "\u00e9", "\u00a0", "\u3000", "\u2028", "\x0b", "\x1c", "\x1a", "\x85",
                     "\ufeff1", "#", "\\", "'", "007", "00", "0", "-0", "0.0", "1e5", "12345678901234567890123",
                     "1.7976931348623159e308", "-", "+", ".", "e5", "1e", "--1", "1-", "1.2.3", "\uff11"]),
    st.integers(0, 40).map(str),
    st.text(alphabet=st.characters(blacklist_characters="\t\n\r\x00", blacklist_categories=("Cs",)), max_size=4),
)


# ids that look like integers but are not written as str(int) writes them, and numbers that only
# float() itself can judge
_ODD_IDS = st.sampled_from(["007", "00", "0", "-0", "+1", "-3", "+31", "-031", "1e5", "1.0", "12345678901234567890123",
                            "123456789012345678", "\uff11", " 1", "1 ", "\u0661"])
_ODD_NUMBERS = st.sampled_from(["1e400", "-1e400", "1.7976931348623159e308", "1.7976931348623157e308", "4e-400",
                                "-", "+", ".", "e5", "1e", "--1", "1-", "1.2.3", "+.5", "5.", "-.e1", "1e+", "",
                                "0x1", "1_0", " 4.5", "4.5 ", "\uff11", "\u0661", "nan", "-inf", "Infinity", "1E5"])


@st.composite
def _atomic_file(draw):
    """A small file of good rows (unique ids, numbers) with zero to three defects mixed in."""
    header, rules = draw(st.sampled_from(_SHAPES))
    types = [f.split(":")[1] for f in header.split("\t")]
    width = len(types)
    prefix = draw(st.sampled_from(["", "i", "\u00e9", "\u4e2d"]))
    good = {"token": ["7", "a"], "float": ["1", "4.5", "-2", "3e2"], "token_seq": ["a b", "w1"], "float_seq": ["0.1 0.2", "3"]}
    rows = [[f"{prefix}{i}"] + [draw(st.sampled_from(good[types[c]])) for c in range(1, width)]
            for i in range(draw(st.integers(0, 10)))]
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        kind = draw(st.sampled_from(["cell", "cell", "id", "number", "extra", "missing", "shift", "blank", "spaces",
                                     "duplicate", "bom"]))
        at = draw(st.integers(0, len(rows)))
        if kind == "cell" and rows and rows[min(at, len(rows) - 1)]:
            row = rows[min(at, len(rows) - 1)]
            row[draw(st.integers(0, len(row) - 1))] = draw(_CELLS)
        elif kind == "id" and rows and rows[min(at, len(rows) - 1)]:
            rows[min(at, len(rows) - 1)][0] = draw(_ODD_IDS)
        elif kind == "number" and rows and len(rows[min(at, len(rows) - 1)]) > 1:
            row = rows[min(at, len(rows) - 1)]
            row[draw(st.integers(1, len(row) - 1))] = draw(_ODD_NUMBERS)
        elif kind == "extra" and rows:
            rows[min(at, len(rows) - 1)].append(draw(_CELLS))
        elif kind == "missing" and rows and rows[min(at, len(rows) - 1)]:
            rows[min(at, len(rows) - 1)].pop()
        elif kind == "shift" and len(rows) > 1 and rows[0]:  # one row a column short, a later one long
            rows[-1].append(rows[0].pop())
        elif kind == "duplicate" and rows:
            rows.insert(at, list(rows[draw(st.integers(0, len(rows) - 1))]))
        elif kind == "bom" and rows and rows[min(at, len(rows) - 1)]:
            rows[min(at, len(rows) - 1)][0] = "\ufeff" + rows[min(at, len(rows) - 1)][0]
        elif kind in ("blank", "spaces"):
            rows.insert(at, [] if kind == "blank" else [" "])
    ending = draw(st.sampled_from(["\n"] * 8 + ["\r\n", "\r"]))
    lines = ["\t".join(cells) for cells in rows]
    text = header + "\n" + ending.join(lines) + (ending if lines and draw(st.booleans()) else "")
    data = text.encode(draw(st.sampled_from(["utf-8"] * 10 + ["latin-1"])), errors="replace")
    return data, rules


def _outcome(path: Path, rules: FileRules, fast: bool):
    try:
        report = check_file(path, rules, fast=fast)
    except DataValidationError as e:
        return ("error", str(e)), False
    return ("ok", report.header, report.rows, report.ids), report.fast


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_atomic_file(), st.sampled_from([_fast.FAST_CHUNK_BYTES, 1, 7, 40]))
def test_fast_path_gives_the_line_by_line_verdict(case, chunk_bytes):
    from hypothesis import event

    data, rules = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fz.item"
        path.write_bytes(data)
        chunk, _fast.FAST_CHUNK_BYTES = _fast.FAST_CHUNK_BYTES, chunk_bytes
        try:
            fast, took_fast = _outcome(path, rules, fast=True)
        finally:
            _fast.FAST_CHUNK_BYTES = chunk
        slow, took_slow = _outcome(path, rules, fast=False)
    event("fast path accepted" if took_fast else f"line by line: {slow[0]}")
    assert not took_slow
    assert fast == slow
    if took_fast:
        assert slow[0] == "ok"


def _big_inter(path: Path, rows: int) -> None:
    import random

    rng = random.Random(0)
    path.write_text(INTER + "".join(f"{rng.randrange(5000)}\t{rng.randrange(2000)}\t{rng.randint(1, 5)}\t{880000000 + i}\n"
                                    for i in range(rows)))


def test_big_clean_files_take_the_fast_path(tmp_path, monkeypatch):
    inter_path, item_path = tmp_path / "big.inter", tmp_path / "big.item"
    _big_inter(inter_path, 200_000)
    item_path.write_text("item_id:token\tprice:float\ttitle:token_seq\n"
                         + "".join(f"i{i}\t{i % 97}.5\tw{i % 13} w{i % 7}\n" for i in range(200_000)))
    item_rules = FileRules(required_fields={"item_id": ""}, nonempty_tokens={"item_id"}, collect_ids={"item_id"},
                           unique_ids="item_id")
    expected = {p: check_file(p, r, fast=False) for p, r in ((inter_path, _INTER_RULES), (item_path, item_rules))}

    def line_by_line(*args):
        raise AssertionError("the clean file went line by line")

    monkeypatch.setattr(_fast, "FAST_CHUNK_BYTES", 1 << 20)  # several chunks
    monkeypatch.setattr(_reader, "_check_rows", line_by_line)
    for path, rules in ((inter_path, _INTER_RULES), (item_path, item_rules)):
        report = check_file(path, rules)
        assert report.fast and report.rows == 200_000
        assert (report.header, report.ids) == (expected[path].header, expected[path].ids)


@pytest.mark.parametrize("defect,expected", [
    ("i5\t1.5\tw\n", "bad.item, line 200002, field 'item_id': the id 'i5' is already on line 7"),
    ("i-1\tnan\tw\n", "bad.item, line 200002, field 'price': 'nan' is not a finite number"),
    ("i-1\t1\n", "bad.item, line 200002: the row has 2 column(s), the header has 3"),
])
def test_a_defect_past_the_first_chunk_gets_the_line_by_line_message(defect, expected, tmp_path, monkeypatch):
    path = tmp_path / "bad.item"
    path.write_text("item_id:token\tprice:float\ttitle:token_seq\n"
                    + "".join(f"i{i}\t{i % 97}.5\tw{i % 13}\n" for i in range(200_000)) + defect)
    monkeypatch.setattr(_fast, "FAST_CHUNK_BYTES", 1 << 20)
    rules = FileRules(nonempty_tokens={"item_id"}, collect_ids={"item_id"}, unique_ids="item_id")
    with pytest.raises(DataValidationError) as info:
        check_file(path, rules)
    assert str(info.value).startswith(f"{path.parent}/{expected}")
    _reader.FAST_PATH = False
    try:
        with pytest.raises(DataValidationError) as slow:
            check_file(path, rules)
    finally:
        _reader.FAST_PATH = True
    assert str(slow.value) == str(info.value)


@pytest.mark.parametrize("rules", [FileRules(), FileRules(collect_ids={"item_id"}, unique_ids="item_id")],
                         ids=["no column read", "ids read"])
def test_a_short_row_and_a_long_row_are_not_taken_for_two_good_ones(rules, tmp_path):
    """The separators add up to a good file's count, but one row is a column short and a later one long."""
    path = tmp_path / "bad.item"
    path.write_text("item_id:token\ttitle:token_seq\tyear:token\n1\ta\t2\n2\tb\n3\tc\t4\t5\n4\td\t6\n")
    with pytest.raises(DataValidationError, match=r"bad.item, line 3: the row has 2 column\(s\), the header has 3"):
        check_file(path, rules)
