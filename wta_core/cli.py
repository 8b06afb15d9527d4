"""`wta`: read a WTA home's tables, scores and validation results from the command line.

Every command reads through one short read-only `TableStore` connection, so a running
pipeline waits at most for that command's queries. The module imports neither Dagster nor
torch nor `wta_core.validation`, because those take seconds to load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl

from wta_core.config import RunConfig, ScoreConfig, get_preset
from wta_core.errors import ConfigError, WtaError
from wta_core.paths import WtaPaths, resolve_home
from wta_core.storage import TableStore, read_in

EXIT_OK = 0
EXIT_ERROR = 2  # the same code argparse uses for a usage error
DEMO_COMMAND = "bash scripts/demo.sh"
TARGETS = ("latent", "predicted_clean")

# The asset that writes each table the commands read, for the "materialise ... first" hint.
TABLE_ASSETS = {"wta_scores": "wta_scores", "validation_results": "validation_report"}

# The verdicts and the report file name of `wta_core.validation`. They are repeated here
# because importing that package loads scipy and torch, which takes seconds.
VERDICTS = ("PASS", "FAIL", "NOT RUN")
REPORT_FILE = "validation_report.md"

SCORES_HELP = """\
Prints the leave-one-genre-out matrix: one row per removed genre, one column per prompt
genre, each cell the mean score over seeds of the adapter trained without that genre.
A row of mean control scores (full data, other training seeds) follows as the noise floor.
Then the N highest single scores over all adapters, with z-score and p-value against the
control scores, and the calibration note.

Only rows of the chosen target and of the preset's scoring method and weighting are read.

With --json, stdout holds one object:
  {
    "database": path of wta.duckdb,
    "preset": preset name from $WTA_HOME/preset, or null when that file is missing,
    "target": "latent" | "predicted_clean", "method": str, "weighting": str,
    "genres": [                             one entry per genre, sorted by name
      {"removed_genre": str,
       "scores": {prompt genre: mean score, or null when not scored yet},
       "seeds": {prompt genre: number of seeds in the mean},
       "top_prompt": prompt genre with the highest mean score, or null}
    ],
    "control_scores": {prompt genre: mean control score, or null},
    "top": [                                highest scores first, at most N
      {"rank": int, "adapter_id": str, "kind": str, "removed_genre": str or null,
       "prompt": str, "seed": int, "score": float,
       "z_score": float or null, "p_value": float or null}
    ],
    "calibration": [distinct calibration notes of these rows]
  }
Scores that are NaN or infinite are written as null; the top list skips them.
"""

REPORT_HELP = """\
Prints the eleven validation tests (id, name, value, threshold, verdict, metric), the
number of PASS, FAIL and NOT RUN verdicts, the reason of each test that did not run and
the path of the Markdown report. Failed tests are results, so the exit code is 0.

With --json, stdout holds one object:
  {
    "database": path of wta.duckdb,
    "tests": [{"test_id": int, "name": str, "metric": str, "value": float or null,
               "threshold": float or null, "passed": bool or null,
               "verdict": "PASS" | "FAIL" | "NOT RUN", "details": object}],
    "counts": {"PASS": int, "FAIL": int, "NOT RUN": int},
    "report": path of validation_report.md, "report_exists": bool
  }
"""

TABLES_HELP = """\
Lists the tables and views of the database with their row counts.

With --json, stdout holds one object:
  {"database": path, "tables": [{"name": str, "kind": "table" | "view", "rows": int}]}
"""

EPILOG = """\
Exit codes: 0 on success, 2 on an error. An error is a missing database or table, a
database that stays locked, or an invalid argument, and its message on stderr names the
file and the fix. WTA_DB_TIMEOUT_S sets how many seconds to wait while another program
keeps the database open (default 600), with a message on stderr every 10 s.
"""


# ---------------------------------------------------------------------------------------
# Opening the database


def open_store(home: Path) -> TableStore:
    """Return the TableStore of `home`, or raise `WtaError` when `home` has no database."""
    database = WtaPaths(home).database
    if not database.is_file():
        raise WtaError(
            f"no WTA database at {database}; run the pipeline first ({DEMO_COMMAND}), "
            f"or point --home or WTA_HOME at the home of a finished run"
        )
    return TableStore(database)


def require_table(connection: duckdb.DuckDBPyConnection, database: Path, table: str) -> None:
    """Raise `WtaError` naming the asset to materialise when `table` is missing."""
    found = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    if found[0][0] == 0:
        asset = TABLE_ASSETS.get(table, table)
        raise WtaError(f"table {table} not found in {database}; materialise {asset} first: {DEMO_COMMAND}")


def read_preset(home: Path) -> RunConfig | None:
    """Return the preset recorded in `home/preset`, or None when the file is missing."""
    marker = home / "preset"
    if not marker.is_file():
        return None
    name = marker.read_text(encoding="utf-8").strip()
    try:
        return get_preset(name)
    except ConfigError as error:
        raise WtaError(f"{marker} names preset {name!r}, which this version cannot read: {error}") from error


# ---------------------------------------------------------------------------------------
# Formatting


def finite_or_none(value) -> float | None:
    """Return `value` as a float, or None when it is missing, NaN or infinite, so JSON stays standard."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def format_number(value, spec: str) -> str:
    number = finite_or_none(value)
    return "-" if number is None else format(number, spec)


def format_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Return aligned text lines; columns whose index is in `right` are right-aligned."""
    widths = [len(title) for title in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.rjust(width) if i in right else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def emit(payload: dict, lines: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print("\n".join(lines))


# ---------------------------------------------------------------------------------------
# wta tables


def run_tables(home: Path, as_json: bool) -> int:
    store = open_store(home)
    with store.connect(read_only=True) as connection:
        listing = connection.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = 'main' ORDER BY table_name"
        ).fetchall()
        tables = []
        for name, table_type in listing:
            quoted = '"' + name.replace('"', '""') + '"'
            rows = connection.execute(f"SELECT count(*) FROM {quoted}").fetchall()[0][0]
            kind = "view" if table_type == "VIEW" else "table"
            tables.append({"name": name, "kind": kind, "rows": int(rows)})

    lines = [f"database: {store.path}", ""]
    if tables:
        body = [[table["name"], table["kind"], str(table["rows"])] for table in tables]
        lines += format_table(["name", "kind", "rows"], body, right={2})
    else:
        lines.append(f"no tables yet; materialise the assets first: {DEMO_COMMAND}")
    emit({"database": str(store.path), "tables": tables}, lines, as_json)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# wta scores


def read_scores(store: TableStore, score: ScoreConfig, top_n: int) -> dict[str, pl.DataFrame]:
    """Read the LOO cell means, control means, `top_n` highest rows and calibration notes of one target."""
    where = "target = ? AND method = ? AND weighting = ?"
    filters = [score.target, score.method, score.weighting]
    with store.connect(read_only=True) as connection:
        require_table(connection, store.path, "wta_scores")
        combinations = read_in(connection, "SELECT DISTINCT target, method, weighting FROM wta_scores ORDER BY ALL")
        frames = {
            "combinations": combinations,
            "prompts": read_in(connection, f"SELECT DISTINCT prompt FROM wta_scores WHERE {where}", filters),
            "loo": read_in(
                connection,
                "SELECT removed_genre, prompt, avg(score) AS mean_score, count(*) AS seeds FROM wta_scores "
                f"WHERE kind = 'loo' AND {where} GROUP BY removed_genre, prompt",
                filters,
            ),
            "control": read_in(
                connection,
                "SELECT prompt, avg(score) AS mean_score FROM wta_scores "
                f"WHERE kind = 'control' AND {where} GROUP BY prompt",
                filters,
            ),
            "top": read_in(
                connection,
                "SELECT adapter_id, kind, removed_genre, prompt, seed, score, z_score, p_value FROM wta_scores "
                f"WHERE {where} AND isfinite(score) "
                "ORDER BY score DESC, adapter_id, prompt, seed LIMIT ?",
                [*filters, top_n],
            ),
            "calibration": read_in(
                connection,
                f"SELECT DISTINCT calibration FROM wta_scores WHERE {where} AND calibration IS NOT NULL "
                "ORDER BY calibration",
                filters,
            ),
        }
    return frames


def loo_matrix(frames: dict[str, pl.DataFrame]) -> tuple[list[str], list[dict]]:
    """Return the sorted genres and one entry per genre: its row of mean LOO scores."""
    loo = frames["loo"]
    genres = sorted(set(frames["prompts"]["prompt"].to_list())
                    | {genre for genre in loo["removed_genre"].to_list() if genre is not None})
    cells = {(row["removed_genre"], row["prompt"]): row for row in loo.iter_rows(named=True)}
    entries = []
    for removed in genres:
        scores = {}
        seeds = {}
        for prompt in genres:
            cell = cells.get((removed, prompt))
            scores[prompt] = finite_or_none(cell["mean_score"]) if cell else None
            seeds[prompt] = int(cell["seeds"]) if cell else 0
        scored = {prompt: value for prompt, value in scores.items() if value is not None}
        top_prompt = max(scored, key=scored.get) if scored else None
        entries.append({"removed_genre": removed, "scores": scores, "seeds": seeds, "top_prompt": top_prompt})
    return genres, entries


def top_rows(frame: pl.DataFrame) -> list[dict]:
    rows = []
    for rank, row in enumerate(frame.iter_rows(named=True), start=1):
        rows.append({
            "rank": rank, "adapter_id": row["adapter_id"], "kind": row["kind"],
            "removed_genre": row["removed_genre"], "prompt": row["prompt"], "seed": row["seed"],
            "score": finite_or_none(row["score"]), "z_score": finite_or_none(row["z_score"]),
            "p_value": finite_or_none(row["p_value"]),
        })
    return rows


def seeds_phrase(entries: list[dict]) -> str:
    counts = {count for entry in entries for count in entry["seeds"].values() if count}
    if not counts:
        return "no leave-one-out scores yet"
    if len(counts) == 1:
        count = counts.pop()
        return f"mean over {count} seed{'s' if count != 1 else ''}"
    return f"mean over {min(counts)} to {max(counts)} seeds per cell"


def score_lines(payload: dict, top_n: int) -> list[str]:
    genres = [entry["removed_genre"] for entry in payload["genres"]]
    lines = [
        f"Leave-one-genre-out scores, {seeds_phrase(payload['genres'])} "
        f"(target {payload['target']}, method {payload['method']}, weighting {payload['weighting']})",
        "rows: removed genre; columns: prompt genre",
        "",
    ]
    body = []
    for entry in payload["genres"]:
        cells = [format_number(entry["scores"][prompt], ".4f") for prompt in genres]
        body.append([entry["removed_genre"], *cells, entry["top_prompt"] or "-"])
    controls = payload["control_scores"]
    body.append(["control (mean)", *[format_number(controls[prompt], ".4f") for prompt in genres], ""])
    header = ["removed \\ prompt", *genres, "top prompt"]
    lines += format_table(header, body, right=set(range(1, len(genres) + 1)))

    if top_n > 0:
        lines += ["", f"Top {len(payload['top'])} scores over all adapters", ""]
        top_body = [
            [str(row["rank"]), row["adapter_id"], row["kind"], row["removed_genre"] or "-", row["prompt"],
             str(row["seed"]), format_number(row["score"], ".4f"), format_number(row["z_score"], ".2f"),
             format_number(row["p_value"], ".4g")]
            for row in payload["top"]
        ]
        top_header = ["rank", "adapter", "kind", "removed", "prompt", "seed", "score", "z-score", "p-value"]
        lines += format_table(top_header, top_body, right={0, 5, 6, 7, 8})
        notes = "; ".join(payload["calibration"]) or "none recorded"
        lines += ["", f"calibration: {notes}"]
    return lines


def run_scores(home: Path, as_json: bool, target: str | None, top_n: int) -> int:
    store = open_store(home)
    preset = read_preset(home)
    # NOTE: a home without a `preset` file falls back to the ScoreConfig defaults, which are
    # the values of the demo and smoke presets.
    score = preset.score if preset else ScoreConfig()
    chosen = dataclasses.replace(score, target=target or score.target)
    frames = read_scores(store, chosen, top_n)

    combinations = frames["combinations"]
    if combinations.height == 0:
        raise WtaError(f"table wta_scores in {store.path} is empty; materialise wta_scores first: {DEMO_COMMAND}")
    if frames["prompts"].height == 0:
        present = ", ".join("/".join(str(value) for value in row) for row in combinations.iter_rows())
        raise WtaError(
            f"wta_scores in {store.path} has no rows for target {chosen.target}, method {chosen.method}, "
            f"weighting {chosen.weighting} (target/method/weighting present: {present}); "
            f"choose another --target, or materialise wta_scores with this preset: {DEMO_COMMAND}"
        )

    genres, entries = loo_matrix(frames)
    control = dict(zip(frames["control"]["prompt"].to_list(), frames["control"]["mean_score"].to_list()))
    payload = {
        "database": str(store.path),
        "preset": preset.name if preset else None,
        "target": chosen.target,
        "method": chosen.method,
        "weighting": chosen.weighting,
        "genres": entries,
        "control_scores": {genre: finite_or_none(control.get(genre)) for genre in genres},
        "top": top_rows(frames["top"]),
        "calibration": frames["calibration"]["calibration"].to_list(),
    }
    emit(payload, score_lines(payload, top_n), as_json)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# wta report


def parse_details(raw: str | None):
    """Return the details column as an object; text that is not JSON is kept as a string."""
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def report_lines(payload: dict) -> list[str]:
    lines = [f"Validation results in {payload['database']}", ""]
    body = [
        [str(test["test_id"]), test["name"], format_number(test["value"], ".4g"),
         format_number(test["threshold"], ".4g"), test["verdict"], test["metric"]]
        for test in payload["tests"]
    ]
    lines += format_table(["id", "name", "value", "threshold", "verdict", "metric"], body, right={0, 2, 3})
    counts = payload["counts"]
    lines += ["", ", ".join(f"{verdict} {counts[verdict]}" for verdict in VERDICTS)
              + f" ({len(payload['tests'])} tests)"]

    skipped = [test for test in payload["tests"] if test["verdict"] == "NOT RUN"]
    if skipped:
        lines += ["", "not run:"]
        for test in skipped:
            details = test["details"]
            reason = details.get("reason", "no reason given") if isinstance(details, dict) else details
            lines.append(f"  test {test['test_id']} {test['name']}: {reason}")

    suffix = "" if payload["report_exists"] else f" (not written yet; materialise validation_report: {DEMO_COMMAND})"
    lines += ["", f"report: {payload['report']}{suffix}"]
    return lines


def run_report(home: Path, as_json: bool) -> int:
    store = open_store(home)
    with store.connect(read_only=True) as connection:
        require_table(connection, store.path, "validation_results")
        frame = read_in(
            connection,
            "SELECT test_id, name, metric, value, threshold, passed, verdict, details "
            "FROM validation_results ORDER BY test_id",
        )

    tests = []
    for row in frame.iter_rows(named=True):
        tests.append({
            "test_id": row["test_id"], "name": row["name"], "metric": row["metric"],
            "value": finite_or_none(row["value"]), "threshold": finite_or_none(row["threshold"]),
            "passed": row["passed"], "verdict": row["verdict"], "details": parse_details(row["details"]),
        })
    report = WtaPaths(home).report_dir / REPORT_FILE
    payload = {
        "database": str(store.path),
        "tests": tests,
        "counts": {verdict: sum(1 for test in tests if test["verdict"] == verdict) for verdict in VERDICTS},
        "report": str(report),
        "report_exists": report.is_file(),
    }
    emit(payload, report_lines(payload), as_json)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# Entry point


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def common_options() -> argparse.ArgumentParser:
    """The --home and --json options, as a parent parser of every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=None,
                        help="WTA home folder, the one that contains wta.duckdb (default: $WTA_HOME, else .wta)")
    common.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of text")
    return common


def add_read_commands(commands, common: argparse.ArgumentParser) -> None:
    """Add `tables`, `scores` and `report` to the subparsers action `commands`."""
    commands.add_parser("tables", parents=[common], help="list tables and views with row counts",
                        description=TABLES_HELP, epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    scores = commands.add_parser("scores", parents=[common], help="leave-one-genre-out matrix and top scores",
                                 description=SCORES_HELP, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    scores.add_argument("--target", choices=TARGETS, default=None,
                        help="trajectory the scores compare (default: the preset's score.target)")
    scores.add_argument("--top", type=non_negative_int, default=10, metavar="N",
                        help="number of highest single scores to list; 0 lists none (default: 10)")
    commands.add_parser("report", parents=[common], help="validation verdicts and the report path",
                        description=REPORT_HELP, epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)


READ_COMMANDS = ("tables", "scores", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wta", description="Read the tables, scores and validation results of a WTA home.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_read_commands(commands, common_options())
    return parser


def run_read_command(args: argparse.Namespace, home: Path) -> int:
    """Run `tables`, `scores` or `report` as parsed into `args`."""
    if args.command == "tables":
        return run_tables(home, args.json)
    if args.command == "scores":
        return run_scores(home, args.json, args.target, args.top)
    return run_report(home, args.json)


def run_guarded(home: Path, command: Callable[[], int]) -> int:
    """Run `command` and return its exit code; print a known error on stderr and return 2."""
    try:
        return command()
    except WtaError as error:
        print(f"wta: {error}", file=sys.stderr)
    except duckdb.Error as error:
        print(f"wta: cannot read {WtaPaths(home).database}: {error}", file=sys.stderr)
    except BrokenPipeError:
        # The reader of stdout (`head`, for example) closed it early, which is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as error:
        print(f"wta: cannot open {WtaPaths(home).database}: {error}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run one `wta` command and return its exit code: 0 on success, 2 on any error."""
    args = build_parser().parse_args(argv)
    # TableStore logs a warning every 10 s while it waits for a locked database.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="wta: %(message)s")
    home = resolve_home(args.home)
    return run_guarded(home, lambda: run_read_command(args, home))


if __name__ == "__main__":
    sys.exit(main())
