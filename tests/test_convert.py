"""``convert``: raw MovieLens / Amazon / CSV dumps -> atomic files + dataset YAML that pass ``validate``
and train. Every sample is written here, a few dozen lines each."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recbole_mtl.config import Config
from recbole_mtl.data.convert import convert
from recbole_mtl.data.validate import validate_dataset
from recbole_mtl.errors import ConvertError

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def table(path: Path) -> dict:
    """``{id: {field: value}}`` of an atomic file (first column the id)."""
    header, *body = rows(path)
    names = [h.split(":")[0] for h in header]
    return {r[0]: dict(zip(names, r)) for r in body}


def config_for(out: Path, name: str, **extra) -> Config:
    return Config(model="MTLRec", dataset=name, config_file_list=[str(out / name / f"{name}.yaml")],
                  config_dict={"data_path": str(out), "checkpoint_dir": str(out / "saved"), "state": "ERROR", **extra},
                  cmd_args=[])


def assert_valid(out: Path, name: str) -> None:
    assert validate_dataset(config_for(out, name)) == []


# -- samples --------------------------------------------------------------------------------------
def ml100k(folder: Path, users: int = 6, items: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "u.data", "w") as f:
        for u in range(1, users + 1):
            for i in range(1, items + 1):
                f.write(f"{u}\t{i}\t{(u + i) % 5 + 1}\t{880000000 + 10 * u + i}\n")
    with open(folder / "u.item", "wb") as f:
        for i in range(1, items + 1):
            flags = ["0"] * 19
            flags[i] = flags[4] = "1"  # genre i and Children's
            title = f"Caf\xe9 Movie {i} (199{i})"  # latin-1, as the real u.item
            f.write(("|".join([str(i), title, f"01-Jan-199{i}", "", "http://x"] + flags) + "\n").encode("latin-1"))
    with open(folder / "u.user", "w") as f:
        for u in range(1, users + 1):
            f.write(f"{u}|{20 + u}|{'MF'[u % 2]}|student|0{u}123\n")
    return folder


def amazon(folder: Path, meta: bool = True) -> tuple[Path, Path]:
    """2018-style and 2023-style reviews mixed; metadata with nested categories, prices as text."""
    folder.mkdir(parents=True, exist_ok=True)
    reviews = folder / "reviews.jsonl"
    lines = []
    for u in range(8):
        for k in range(5):
            item = f"B{(u + k) % 7:03d}"
            if u % 2:
                lines.append({"reviewerID": f"U{u}", "asin": item, "overall": float(1 + (u + k) % 5),
                              "unixReviewTime": 1400000000 + 100 * u + k, "reviewText": "fine\tthing\n"})
            else:
                lines.append({"user_id": f"U{u}", "parent_asin": item, "asin": item + "-v", "rating": 1 + (u * k) % 5,
                              "timestamp": 1600000000000 + 100 * u + k, "text": "ok"})
    reviews.write_text("".join(json.dumps(x) + "\n" for x in lines))
    meta_path = folder / "meta.jsonl"
    items = []
    for i in range(7):
        entry = {"asin": f"B{i:03d}", "title": f"Thing {i}\twith a tab\nand a newline &amp; \"quotes\"",
                 "price": ["$1,299.99", "12.5", 3, None, "$10.00 - $20.00", "", "—"][i],
                 "brand": f"Brand {i % 2}", "description": ["line one", "line two"] if i % 2 else "one text"}
        if i % 3 == 0:
            entry["categories"] = [["Beauty", "Skin Care"], ["Beauty", "Tools & Accessories"]]  # 2014: nested
        elif i % 3 == 1:
            entry["category"] = ["Beauty", "Hair Care"]  # 2018
        else:
            entry = {"parent_asin": entry.pop("asin"), **entry, "categories": ["Beauty", "Make Up"]}  # 2023
        items.append(entry)
    items.append({"asin": "B000", "title": "duplicate row", "category": ["Other"]})
    items.append({"asin": "Z999", "title": "never reviewed", "category": ["Other"]})
    meta_path.write_text("".join(json.dumps(x) + "\n" for x in items))
    return reviews, meta_path if meta else None


# -- MovieLens ------------------------------------------------------------------------------------
def test_movielens_100k_layout(tmp_path):
    convert("movielens", [ml100k(tmp_path / "ml")], tmp_path / "out", "m100", progress_every=None)
    folder = tmp_path / "out" / "m100"
    inter = rows(folder / "m100.inter")
    assert inter[0] == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert len(inter) == 1 + 30 and inter[1] == ["1", "1", "3", "880000011"]
    items = table(folder / "m100.item")
    assert rows(folder / "m100.item")[0] == ["item_id:token", "movie_title:token_seq", "release_year:token",
                                              "class:token_seq"]
    assert items["3"] == {"item_id": "3", "movie_title": "Café Movie 3", "release_year": "1993",
                          "class": "Animation Children's"}
    users = table(folder / "m100.user")
    assert users["2"] == {"user_id": "2", "age": "22", "gender": "M", "occupation": "student", "zip_code": "02123"}
    yaml = (folder / "m100.yaml").read_text()
    for line in ("USER_ID_FIELD: user_id", "ITEM_ID_FIELD: item_id", "RATING_FIELD: rating", "TIME_FIELD: timestamp",
                 "interest_label_field: rating", "category_field: class", "text_fields: [movie_title, release_year]",
                 "  item: [item_id, movie_title, release_year, class]"):
        assert line in yaml
    assert "tasks:" not in yaml  # every default task has its labels
    assert_valid(tmp_path / "out", "m100")


def test_movielens_100k_genre_names_come_from_u_genre(tmp_path):
    src = ml100k(tmp_path / "ml")
    names = [f"G{n}" for n in range(19)]
    names[4] = "Kids Films"  # a space inside a category becomes _
    (src / "u.genre").write_text("".join(f"{name}|{n}\n" for n, name in enumerate(names)) + "\n")
    convert("movielens", [src], tmp_path / "out", "g", progress_every=None)
    assert table(tmp_path / "out" / "g" / "g.item")["2"]["class"] == "G2 Kids_Films"


def test_movielens_1m_layout(tmp_path):
    src = tmp_path / "ml-1m"
    src.mkdir()
    (src / "ratings.dat").write_text("".join(f"{u}::{i}::{1 + (u * i) % 5}::97830{u}{i}\n"
                                             for u in range(1, 5) for i in range(1, 5)))
    (src / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n"
                                     "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
                                     "3::Pok\xe9mon: The Movie (1999)::(no genres listed)\n"
                                     "4::Science Fiction Thing (1990)::Sci-Fi\n".encode("latin-1"))
    (src / "users.dat").write_text("".join(f"{u}::{'FM'[u % 2]}::{u * 10}::{u}::4806{u}\n" for u in range(1, 5)))
    convert("movielens", [src], tmp_path / "out", "m1", progress_every=None)
    folder = tmp_path / "out" / "m1"
    items = table(folder / "m1.item")
    assert items["1"]["movie_title"] == "Toy Story" and items["1"]["release_year"] == "1995"
    assert items["1"]["class"] == "Animation Children's Comedy"
    assert items["3"]["movie_title"] == "Pokémon: The Movie" and items["3"]["class"] == ""
    assert table(folder / "m1.user")["3"] == {"user_id": "3", "gender": "M", "age": "30", "occupation": "3",
                                              "zip_code": "48063"}
    assert len(rows(folder / "m1.inter")) == 1 + 16
    assert_valid(tmp_path / "out", "m1")


def test_movielens_20m_layout_with_quoted_titles_and_no_user_file(tmp_path):
    src = tmp_path / "ml-latest-small"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{0.5 * (1 + (u + i) % 10)},96498{u}{i}\n" for u in range(1, 5) for i in (1, 2, 11)))
    (src / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n'
                                    '2,"American President, The (1995)",Comedy|Drama|Romance\n'
                                    '11,"Sabrina (1954)",(no genres listed)\n99,Unrated (2001),Drama\n')
    convert("movielens", [src / "ratings.csv", src / "movies.csv"], tmp_path / "out", "m20", progress_every=None)
    folder = tmp_path / "out" / "m20"
    items = table(folder / "m20.item")
    assert items["2"]["movie_title"] == "American President, The" and items["2"]["class"] == "Comedy Drama Romance"
    assert set(items) == {"1", "2", "11"}  # an item no one rated is not written
    assert table(folder / "m20.inter")["1"]["rating"] in {"1.5", "1", "2"}
    assert not (folder / "m20.user").exists() and "user:" not in (folder / "m20.yaml").read_text()
    assert_valid(tmp_path / "out", "m20")


def test_kcore_drops_users_and_items_round_after_round(tmp_path):
    src = tmp_path / "ml"
    src.mkdir()
    # users 1-3 rate items a, b, c (3 each). User 4 rates a, b and d; item d has only user 4.
    # k=3: round 1 drops item d (1 interaction); user 4 is then left with 2 and goes in round 2.
    pairs = [(u, i) for u in (1, 2, 3) for i in "abc"] + [(4, "a"), (4, "b"), (4, "d")]
    (src / "u.data").write_text("".join(f"{u}\t{i}\t4\t{n}\n" for n, (u, i) in enumerate(pairs)))
    result = convert("movielens", [src], tmp_path / "out", "k", kcore=3, progress_every=None)
    kept = {(r[0], r[1]) for r in rows(tmp_path / "out" / "k" / "k.inter")[1:]}
    assert kept == {(str(u), i) for u in (1, 2, 3) for i in "abc"}
    assert (result.interactions, result.users, result.items, result.dropped, result.kcore_rounds) == (9, 3, 3, 3, 2)
    plain = convert("movielens", [src], tmp_path / "out", "k", kcore=0, progress_every=None)
    assert plain.interactions == 12 and len(rows(tmp_path / "out" / "k" / "k.inter")) == 13
    with pytest.raises(ConvertError, match="--kcore 5 leaves no interaction"):
        convert("movielens", [src], tmp_path / "out", "k", kcore=5, progress_every=None)


# -- Amazon ---------------------------------------------------------------------------------------
def test_amazon_reviews_and_metadata(tmp_path):
    reviews, meta = amazon(tmp_path / "raw")
    result = convert("amazon", [reviews, meta], tmp_path / "out", "beauty", progress_every=None)
    folder = tmp_path / "out" / "beauty"
    inter = table(folder / "beauty.inter")
    assert len(rows(folder / "beauty.inter")) == 1 + 40
    # 2018 fields (reviewerID/asin/overall/unixReviewTime) and 2023 fields (user_id/parent_asin/rating/timestamp)
    assert {"U0", "U1"} <= set(inter)
    body = rows(folder / "beauty.inter")[1:]
    assert ["U1", "B001", "2", "1400000100"] in body and ["U0", "B000", "1", "1600000000000"] in body
    assert not any(r[1].endswith("-v") for r in body)  # parent_asin wins over asin
    header = rows(folder / "beauty.item")[0]
    assert header == ["item_id:token", "title:token_seq", "brand:token", "price:float", "class:token_seq",
                      "description:token_seq"]
    items = table(folder / "beauty.item")
    assert set(items) == {f"B{i:03d}" for i in range(7)}  # Z999 has no review; the second B000 row is skipped
    assert items["B000"]["title"] == "Thing 0 with a tab and a newline & 'quotes'"
    assert items["B000"]["class"] == "Beauty Skin_Care Tools_&_Accessories"
    assert items["B001"]["class"] == "Beauty Hair_Care" and items["B002"]["class"] == "Beauty Make_Up"
    assert [items[f"B{i:03d}"]["price"] for i in range(7)] == ["1299.99", "12.5", "3.0", "", "10.0", "", ""]
    assert items["B001"]["description"] == "line one line two"
    assert any("repeated item row" in w for w in result.warnings)
    assert not (folder / "beauty.user").exists()
    yaml = (folder / "beauty.yaml").read_text()
    assert "text_fields: [title, description]" in yaml and "  item: [item_id, brand, price, class]" in yaml
    assert_valid(tmp_path / "out", "beauty")


def test_amazon_gzip_reviews_without_metadata(tmp_path):
    reviews, _ = amazon(tmp_path / "raw", meta=False)
    packed = tmp_path / "raw" / "reviews.json.gz"
    packed.write_bytes(gzip.compress(reviews.read_bytes()))
    convert("amazon", [packed], tmp_path / "out", "plain", progress_every=None)
    folder = tmp_path / "out" / "plain"
    assert len(rows(folder / "plain.inter")) == 41 and not (folder / "plain.item").exists()
    yaml = (folder / "plain.yaml").read_text()
    assert "category_field: ~" in yaml and "tasks: [sequence, interest]" in yaml
    assert_valid(tmp_path / "out", "plain")


# -- CSV ------------------------------------------------------------------------------------------
def test_csv_with_column_mapping_and_item_file(tmp_path):
    inter = tmp_path / "events.tsv"
    inter.write_text("ts\tstars\tuid\tiid\n" + "".join(f"{100 + n}\t{1 + n % 5}\tu{n % 4}\tp{n % 6}\n" for n in range(24)))
    items = tmp_path / "products.csv"
    items.write_text('pid,name,genres,blurb,yr\n' + "".join(
        f'p{i},"Product {i}, deluxe","Home & Garden|Kitchen","A ""fine""\nproduct",20{i:02d}\n' for i in range(6)))
    convert("csv", [inter, items], tmp_path / "out", "shop", sep="tab", columns="user=uid,item=iid,rating=stars,time=ts",
            item_columns="item=pid,title=name,category=genres,text=blurb,year=yr", item_sep=",", progress_every=None)
    folder = tmp_path / "out" / "shop"
    assert rows(folder / "shop.inter")[1] == ["u0", "p0", "1", "100"]
    assert rows(folder / "shop.item")[0] == ["item_id:token", "title:token_seq", "class:token_seq",
                                             "description:token_seq", "year:token"]
    assert table(folder / "shop.item")["p2"] == {"item_id": "p2", "title": "Product 2, deluxe",
                                                 "class": "Home_&_Garden Kitchen", "description": "A 'fine' product",
                                                 "year": "2002"}
    assert_valid(tmp_path / "out", "shop")


def test_csv_without_header_rating_or_time(tmp_path):
    inter = tmp_path / "clicks.csv"
    inter.write_text("".join(f"u{n % 3},i{n % 5}\n" for n in range(15)))
    convert("csv", [inter], tmp_path / "out", "clicks", columns="user=1,item=2", header=False, progress_every=None)
    folder = tmp_path / "out" / "clicks"
    body = rows(folder / "clicks.inter")
    assert body[0] == ["user_id:token", "item_id:token", "timestamp:float"] and body[3] == ["u2", "i2", "3"]
    yaml = (folder / "clicks.yaml").read_text()
    assert "RATING_FIELD: ~" in yaml and "interest_label_field: ~" in yaml and "tasks: [sequence]" in yaml
    assert_valid(tmp_path / "out", "clicks")


# -- errors and atomic output --------------------------------------------------------------------
def _amazon_lines(tmp_path, bad_line: str, at: int = 3) -> Path:
    good = [json.dumps({"reviewerID": "A", "asin": f"I{n}", "overall": 5, "unixReviewTime": n}) for n in range(5)]
    good.insert(at - 1, bad_line)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(good) + "\n")
    return path


@pytest.mark.parametrize("bad,pieces", [
    ('{"reviewerID": "A", "asin": "X", "overall": 5', ["line 3", "not valid JSON"]),
    ('{"reviewerID": "A", "asin": "X", "unixReviewTime": 7}', ["line 3", "field 'overall'", "'rating'", "missing"]),
    ('{"reviewerID": "A", "asin": "X", "overall": "five", "unixReviewTime": 7}', ["line 3", "field 'overall'", "'five'"]),
    ('{"reviewerID": "A", "asin": "X", "overall": 5, "unixReviewTime": "yesterday"}',
     ["line 3", "field 'unixReviewTime'", "'yesterday'"]),
    ('{"reviewerID": "", "asin": "X", "overall": 5, "unixReviewTime": 7}', ["line 3", "field 'reviewerID'", "empty"]),
    ('["a", "list"]', ["line 3", "expected a JSON object"]),
    ('{"reviewerID": "A", "asin": "X", "overall": "' + "9" * 150 + "x" * 5000 + '", "unixReviewTime": 7}',
     ["line 3", "field 'overall'", "..."]),
])
def test_malformed_amazon_line_names_file_line_and_field(bad, pieces, tmp_path):
    path = _amazon_lines(tmp_path, bad)
    with pytest.raises(ConvertError) as info:
        convert("amazon", [path], tmp_path / "out", "bad", progress_every=None)
    message = str(info.value)
    assert message.startswith(f"{path}, line 3")
    for piece in pieces:
        assert piece in message, message
    assert "\n" not in message and "x" * 201 not in message and len(message) < 800


@pytest.mark.parametrize("layout,content,pieces", [
    ("u.data", "1\t1\t5\t10\n1\t2\t4\n", ["u.data, line 2", "3 column(s)", "expected 4"]),
    ("u.data", "1\t1\t5\t10\n1\t2\tgood\t11\n", ["u.data, line 2", "field 'rating'", "'good'"]),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,5,10\n1,2,4\n", ["ratings.csv, line 3", "3 column(s)"]),
    ("ratings.dat", "1::1::5::10\n1::2::4::x\n", ["ratings.dat, line 2", "field 'timestamp'", "'x'"]),
])
def test_malformed_movielens_line_names_file_line_and_field(layout, content, pieces, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / layout).write_text(content)
    with pytest.raises(ConvertError) as info:
        convert("movielens", [src], tmp_path / "out", "bad", progress_every=None)
    for piece in pieces:
        assert piece in str(info.value), str(info.value)


def test_a_failed_conversion_leaves_the_previous_output_untouched(tmp_path):
    reviews, meta = amazon(tmp_path / "raw")
    out = tmp_path / "out"
    convert("amazon", [reviews, meta], out, "beauty", progress_every=None)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "beauty").iterdir()}
    broken = tmp_path / "raw" / "broken.jsonl"
    broken.write_text(reviews.read_text() + '{"reviewerID": "U9", "asin": "B001", "overall": "five", '
                                            '"unixReviewTime": 1}\n')
    with pytest.raises(ConvertError, match="line 41, field 'overall'"):
        convert("amazon", [broken, meta], out, "beauty", progress_every=None)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "beauty").iterdir()}
    assert after == before
    assert sorted(p.name for p in out.iterdir()) == ["beauty"]  # no staging folder left behind
    # a later good conversion replaces the files, and one it no longer writes goes
    convert("amazon", [reviews], out, "beauty", progress_every=None)
    assert sorted(p.name for p in (out / "beauty").iterdir()) == ["beauty.inter", "beauty.yaml"]


def test_cli_convert_then_validate(tmp_path, capsys, monkeypatch):
    from recbole_mtl.cli import main

    monkeypatch.chdir(tmp_path)
    src = ml100k(tmp_path / "ml")
    main(["convert", "--format", "movielens", "--input", str(src), "--out", "out", "--name", "mini", "--kcore", "2",
          "--quiet"])
    printed = capsys.readouterr().out
    assert "30 interactions, 6 users, 5 items, 0 dropped by --kcore 2" in printed
    assert "--config_files=" in printed and "mini.yaml" in printed
    main(["validate", "--dataset=mini", "--data_path=out", "--config_files=out/mini/mini.yaml"])
    assert "mini: atomic files OK (0 warning(s))" in capsys.readouterr().out
    (src / "u.data").write_text("1\t1\t5\n")
    with pytest.raises(SystemExit) as info:
        main(["convert", "--format", "movielens", "--input", str(src), "--out", "out", "--name", "mini", "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "u.data, line 1" in err


def test_progress_lines_for_long_inputs(tmp_path, capsys):
    src = tmp_path / "ml"
    src.mkdir()
    (src / "u.data").write_text("".join(f"{n % 50}\t{n % 70}\t3\t{n}\n" for n in range(9000)))
    convert("movielens", [src], tmp_path / "out", "long", progress_every=0)
    err = capsys.readouterr().err
    assert "u.data: 4,096 lines read" in err and "u.data: 8,192 lines read" in err


def test_mtlrec_trains_one_epoch_on_a_converted_amazon_sample(tmp_path, monkeypatch):
    """End to end: an Amazon-style dump -> convert -> the written YAML -> one epoch of MTLRec, every task."""
    from recbole_mtl import pipeline

    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    reviews, meta = raw / "reviews.jsonl", raw / "meta.jsonl"
    cats = ["Skin Care", "Hair Care", "Make Up", "Fragrance"]
    with open(reviews, "w") as f:
        for u in range(40):
            for k in range(8):
                item = (3 * u + 5 * k) % 36
                f.write(json.dumps({"reviewerID": f"U{u}", "asin": f"B{item:03d}", "overall": 1 + (u + item) % 5,
                                    "unixReviewTime": 1400000000 + 1000 * u + k}) + "\n")
    with open(meta, "w") as f:
        for i in range(36):
            f.write(json.dumps({"asin": f"B{i:03d}", "title": f"Item {i} {cats[i % 4]}", "brand": f"Brand{i % 3}",
                                "price": f"${i}.99", "categories": [["Beauty", cats[i % 4]]]}) + "\n")
    convert("amazon", [reviews, meta], tmp_path / "data", "beauty", kcore=2, progress_every=None)
    config = config_for(tmp_path / "data", "beauty", epochs=1, show_progress=False, state="WARNING",
                        MAX_ITEM_LIST_LENGTH=5, embedding_size=8, n_layers=1, n_heads=1, inner_size=16,
                        shared_hidden=[16], tower_hidden=[8], window_batch_size=16, topk=[5], valid_metric="NDCG@5")
    result = pipeline.run(config, saved=False, verbose=False)
    test = result["test_result"]
    assert "ndcg@5" in test and "interest_auc" in test and "category_micro_f1" in test
    assert all(v == v for v in test.values())  # no NaN
