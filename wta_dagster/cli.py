"""`wta`: the read commands of `wta_core.cli`, plus the commands that need Dagster.

`wta subsets add | list | remove` manage user subsets, whose partitions are dynamic
partitions of the Dagster instance, and `wta attribute` scores a generation of the user's
under every adapter. Dagster, torch and the asset definitions are imported only by these
commands, so `wta tables`, `scores` and `report` start as fast as before.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import polars as pl

from wta_core.cli import (
    EPILOG,
    EXIT_OK,
    READ_COMMANDS,
    add_read_commands,
    common_options,
    emit,
    finite_or_none,
    format_number,
    format_table,
    non_negative_int,
    read_preset,
    run_guarded,
    run_read_command,
)
from wta_core.config import RunConfig
from wta_core.errors import ConfigError, WtaError
from wta_core.paths import WtaPaths, resolve_home

USER_SUBSETS = "user_subsets"  # repeated from wta_dagster.partitions, whose import loads Dagster
USER_SUBSET_ASSETS = ("user_subset_adapters", "user_subset_trajectories", "user_subset_scores")
MATERIALIZE_COMMAND = ("dagster asset materialize -m wta_dagster --select " + ",".join(USER_SUBSET_ASSETS)
                       + " --partition {name}")

SUBSETS_HELP = """\
Manage user subsets: named sets of training tracks whose removal is tested like a genre's.

  wta subsets add NAME (--tracks ID[,ID...] | --genre G | --path-pattern PAT | --ids-file FILE)
  wta subsets list
  wta subsets remove NAME

Each subset is the partition NAME of the assets user_subset_adapters,
user_subset_trajectories and user_subset_scores (adapter id subset-NAME).
"""

ADD_HELP = """\
Registers a user subset: resolves the definition to track ids with status ok, stores it in
the tables user_subsets and user_subset_tracks, and adds NAME to the dynamic partitions
user_subsets of the Dagster instance at $DAGSTER_HOME (default: <home>/dagster).

NAME: 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit, not a
built-in subset (full, control-N, a genre, dose-NN, noise) and not taken. The subset must
remove at least one track and leave at least one.

--path-pattern matches the tracks' source_path in full: a pattern with *, ? or [ is a glob,
any other is SQL LIKE (% any text, _ one character).

With --materialize the adapter is trained, its trajectories sampled and scored at once,
through the Dagster API into the same instance. Otherwise run:
  dagster asset materialize -m wta_dagster --select \\
    user_subset_adapters,user_subset_trajectories,user_subset_scores --partition NAME

With --json, stdout holds one object:
  {"database": str, "dagster_home": str, "partition": "user_subsets/NAME",
   "subset": {"name", "adapter_id", "definition": object, "created_at": ISO time (UTC),
              "members_removed": int, "tracks": [track ids]},
   "runs": [{"partition", "run_id", "seconds"}],       empty without --materialize
   "scores": [{"prompt", "mean_score", "mean_z_score", "control_mean"}]  empty without it}
"""

LIST_HELP = """\
Lists the user subsets with their definition, removed tracks and what has been built.

With --json, stdout holds one object:
  {"database": str, "dagster_home": str,
   "subsets": [{"name", "adapter_id", "definition": object, "created_at": ISO time (UTC),
                "members_removed": int, "tracks": [str], "adapter_trained": bool,
                "scored": bool, "partition_registered": bool}],
   "partitions_without_subset": [partition keys in the instance with no stored subset]}
"""

REMOVE_HELP = """\
Removes a user subset: its rows in every table (user_subsets, user_subset_tracks, subsets,
subset_members, adapters, trajectories, step_distances, wta_scores, attribution_scores),
its files (adapter, checkpoints, trajectories, audio, plots) and its dynamic partition.
Nothing else is changed.

With --json, stdout holds one object:
  {"name": str, "rows": {table: rows deleted}, "files": [paths deleted],
   "partition_deleted": bool}
"""

# The screening scores of `wta_core.pipeline.attribution.SCREENS`, named here so that building
# the parser does not import torch.
SCREENS = ("embedding", "gradient")

ATTRIBUTE_HELP = """\
Samples one generation (prompt, seed, steps) under every adapter of the home, scores each
against the full adapter with the preset's method, weighting and target, and calibrates
the scores against the control adapters' scores for the same generation. Prints the
removal subsets (genres, dose, noise, user subsets) ranked by score with z-score and
p-value. Results are stored in the tables generations and attribution_scores, and the
trajectories in trajectories/generations/<generation_id>/. Asking again computes only
adapters without a stored score for the generation.

With --screen K, the training tracks are ranked by a cheap similarity to the generation
(the full adapter's output): --screen-by embedding (default) takes the cosine similarity
of MFCC-chroma embeddings of the audio, --screen-by gradient the TracIn-LoRA gradient dot
product. A single-track subset track-<track id> is registered and materialised for each
of the top K, and their WTA scores are reported. Tracks outside the top K are not tested.

With --json, stdout holds one object:
  {"database": str,
   "generation": {"generation_id", "prompt", "seed", "steps", "created_at"},
   "target": str, "method": str, "weighting": str,
   "computed": [adapter ids scored by this call], "reused": [adapter ids],
   "ranking": [{"rank", "adapter_id", "kind", "removed", "score", "z_score", "p_value"}],
   "controls": [{"adapter_id", "score"}], "calibration": str, "trajectories": folder,
   "screen": null, or {"k": int, "tracks_total": int, "untested_tracks": int,
     "by": "embedding" or "gradient", "score": "mfcc-chroma" or "tracin-lora", "note": str,
     "candidates": [{"rank", "track_id", "genre", "similarity", "subset", "adapter_id",
                     "score", "z_score", "p_value"}]}}
Scores that are NaN or infinite are written as null.
"""

ATTRIBUTE_EPILOG = EPILOG + """
The controls bound the p-values: with C control adapters, no p-value is below 1 / (C + 1).
"""


# ---------------------------------------------------------------------------------------
# Parser


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected 1 or more, got 0")
    return value


def track_list(text: str) -> tuple[str, ...]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected track ids separated by commas, got {text!r}")
    return tuple(items)


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="wta", description="Read the results of a WTA home, manage user subsets and attribute generations.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_read_commands(commands, common)
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=positive_int, default=None, metavar="N",
                         help="torch CPU threads for training and sampling (default: num_threads of the training "
                              "resource, the count the main job uses); another count can change the last bits "
                              "of the results")

    subsets = commands.add_parser("subsets", help="add, list or remove user subsets", description=SUBSETS_HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = subsets.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common, threads], help="register a user subset",
                             description=ADD_HELP, epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    add.add_argument("name", metavar="NAME", help="subset name, also its partition key")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--tracks", type=track_list, metavar="ID[,ID...]", help="track ids to remove")
    source.add_argument("--genre", metavar="G", help="remove every track of this genre")
    source.add_argument("--path-pattern", metavar="PAT",
                        help="remove the tracks whose source_path matches (glob with * ? [, else SQL LIKE)")
    source.add_argument("--ids-file", metavar="FILE", help="remove the track ids listed in FILE, one per line")
    add.add_argument("--materialize", action="store_true",
                     help="train, sample and score the subset now, through the Dagster API")
    actions.add_parser("list", parents=[common], help="list user subsets", description=LIST_HELP,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    remove = actions.add_parser("remove", parents=[common], help="delete a user subset and everything built from it",
                                description=REMOVE_HELP, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    remove.add_argument("name", metavar="NAME")

    attribute = commands.add_parser("attribute", parents=[common, threads],
                                    help="attribute a generation to every trained subset",
                                    description=ATTRIBUTE_HELP, epilog=ATTRIBUTE_EPILOG,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    attribute.add_argument("--prompt", required=True, help="text prompt of the generation")
    attribute.add_argument("--seed", type=non_negative_int, required=True, help="seed of the initial noise")
    attribute.add_argument("--steps", type=positive_int, default=None,
                           help="denoising steps (default: the preset's sample.steps)")
    attribute.add_argument("--screen", type=positive_int, default=None, metavar="K",
                           help="also retrain without each of the K tracks most similar to the generation")
    attribute.add_argument("--screen-by", choices=SCREENS, default=SCREENS[0],
                           help="similarity that picks the screened tracks (default: %(default)s)")
    return parser


# ---------------------------------------------------------------------------------------
# Environment and Dagster


def prepare_environment(home: Path) -> RunConfig:
    """Point the Dagster settings at `home` and return its preset.

    The assets read WTA_HOME and WTA_PRESET, and the instance is $DAGSTER_HOME, which
    defaults to <home>/dagster as scripts/env.sh sets it.
    """
    paths = WtaPaths(home)
    if not paths.database.is_file():
        raise WtaError(f"no WTA database at {paths.database}; run the pipeline first (bash scripts/demo.sh), "
                       "or point --home or WTA_HOME at the home of a finished run")
    preset = read_preset(home)
    if preset is None:
        raise WtaError(f"{home / 'preset'} is missing, so the preset of this home is unknown; "
                       "materialise gtzan_dataset in it first")
    requested = os.environ.get("WTA_PRESET")
    if requested and requested != preset.name:
        raise ConfigError(f"WTA_PRESET is {requested!r} but {home} contains a {preset.name!r} run; "
                          f"unset WTA_PRESET or set it to {preset.name!r}")
    os.environ["WTA_HOME"] = str(home)
    os.environ["WTA_PRESET"] = preset.name
    if not os.environ.get("DAGSTER_HOME"):
        paths.dagster_home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    elif Path(os.environ["DAGSTER_HOME"]).resolve() != paths.dagster_home.resolve():
        print(f"wta: note: DAGSTER_HOME is {os.environ['DAGSTER_HOME']}, not {paths.dagster_home}; "
              "partitions and runs are recorded there", file=sys.stderr)
    return preset


def open_instance():
    """Open the Dagster instance at $DAGSTER_HOME; use the result as a context manager."""
    import dagster as dg

    try:
        return dg.DagsterInstance.get()
    except dg.DagsterError as error:
        raise WtaError(f"cannot open the Dagster instance at {os.environ.get('DAGSTER_HOME')}: {error}") from error


def resource_threads() -> int | None:
    """Return the torch thread count of the definitions' training resource (None keeps torch's)."""
    from wta_dagster.definitions import defs

    return defs.resources["training"].threads()


def materialize(names: list[str], threads: int | None) -> list[dict]:
    """Materialise the three user subset assets for each partition in `names`, one run each.

    `threads` None keeps the training resource's own thread count.
    """
    import dagster as dg

    from wta_dagster.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    # The run's own log stays in the instance; the terminal gets one line per run.
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if threads is not None:
        run_config["resources"] = {"training": {"config": {"num_threads": threads}}}
    runs = []
    with open_instance() as instance:
        for name in names:
            print(f"wta: materialising {', '.join(USER_SUBSET_ASSETS)} for partition {name!r}", file=sys.stderr)
            started = time.monotonic()
            result = job.execute_in_process(
                instance=instance, partition_key=name, run_config=run_config, raise_on_error=False,
                asset_selection=[dg.AssetKey(asset) for asset in USER_SUBSET_ASSETS])
            seconds = time.monotonic() - started
            if not result.success:
                failures = [event.message for event in result.all_events if event.is_failure]
                raise WtaError(f"materialising user subset {name!r} failed in run {result.run_id} "
                               f"({'; '.join(failures) or 'no failure message'}); open that run in the UI "
                               f"for its log, then rerun: {MATERIALIZE_COMMAND.format(name=name)}")
            print(f"wta: done {name!r} in {seconds:.1f} s (run {result.run_id})", file=sys.stderr)
            runs.append({"partition": name, "run_id": result.run_id, "seconds": round(seconds, 2)})
    return runs


# ---------------------------------------------------------------------------------------
# wta subsets


def subset_payload(subset) -> dict:
    return {"name": subset.name, "adapter_id": subset.adapter_id, "definition": subset.definition,
            "created_at": subset.created_at.isoformat(), "members_removed": len(subset.removed),
            "tracks": list(subset.removed)}


def definition_phrase(definition: dict) -> str:
    if "genre" in definition:
        return f"genre {definition['genre']}"
    if "path_pattern" in definition:
        return f"path {definition['syntax']} {definition['path_pattern']}"
    if "ids_file" in definition:
        return f"ids file {definition['ids_file']}"
    return "tracks " + ", ".join(definition.get("tracks", []))


def subset_scores(home: Path, config: RunConfig, adapter_id: str) -> list[dict]:
    """Return the mean score and z-score per prompt of one adapter, with the controls' mean score."""
    from wta_core.storage import TableStore

    frame = TableStore(WtaPaths(home).database).read(
        "SELECT s.prompt, avg(s.score) AS mean_score, avg(s.z_score) AS mean_z_score, "
        "(SELECT avg(c.score) FROM wta_scores c WHERE c.kind = 'control' AND c.prompt = s.prompt "
        " AND c.target = s.target AND c.method = s.method AND c.weighting = s.weighting) AS control_mean "
        "FROM wta_scores s WHERE s.adapter_id = ? AND s.target = ? AND s.method = ? AND s.weighting = ? "
        "GROUP BY s.prompt, s.target, s.method, s.weighting ORDER BY s.prompt",
        [adapter_id, config.score.target, config.score.method, config.score.weighting])
    return [{"prompt": row["prompt"], "mean_score": finite_or_none(row["mean_score"]),
             "mean_z_score": finite_or_none(row["mean_z_score"]),
             "control_mean": finite_or_none(row["control_mean"])} for row in frame.iter_rows(named=True)]


def register(home: Path, config: RunConfig, name: str, definition, origin: dict | None = None):
    """Store a user subset and add its dynamic partition; the rows are removed again if that fails."""
    from wta_core.pipeline.user_subsets import register_user_subset, remove_user_subset

    paths = WtaPaths(home)
    subset = register_user_subset(paths, config, name, definition, origin)
    try:
        with open_instance() as instance:
            instance.add_dynamic_partitions(USER_SUBSETS, [name])
    except BaseException:
        remove_user_subset(paths, name)
        raise
    return subset


def run_subsets_add(args: argparse.Namespace, home: Path) -> int:
    from wta_core.pipeline.user_subsets import SubsetDefinition

    config = prepare_environment(home)
    definition = SubsetDefinition(tracks=args.tracks or (), genre=args.genre, path_pattern=args.path_pattern,
                                  ids_file=args.ids_file)
    subset = register(home, config, args.name, definition)
    runs = materialize([subset.name], args.threads) if args.materialize else []
    scores = subset_scores(home, config, subset.adapter_id) if runs else []
    total = len(subset.removed)
    payload = {"database": str(WtaPaths(home).database), "dagster_home": os.environ["DAGSTER_HOME"],
               "partition": f"{USER_SUBSETS}/{subset.name}", "subset": subset_payload(subset),
               "runs": runs, "scores": scores}

    lines = [f"registered user subset {subset.name!r} (adapter {subset.adapter_id}): removes {total} "
             f"track{'s' if total != 1 else ''} ({definition_phrase(subset.definition)})",
             "  " + ", ".join(subset.removed),
             f"dagster partition {USER_SUBSETS}/{subset.name} in {os.environ['DAGSTER_HOME']}"]
    if runs:
        lines += ["", f"materialised in {runs[0]['seconds']:.1f} s (run {runs[0]['run_id']}); "
                      f"WTA scores of {subset.adapter_id} (target {config.score.target}, mean over seeds):", ""]
        body = [[row["prompt"], format_number(row["mean_score"], ".4f"), format_number(row["mean_z_score"], ".2f"),
                 format_number(row["control_mean"], ".4f")] for row in scores]
        lines += format_table(["prompt", "score", "z-score", "control mean"], body, right={1, 2, 3})
    else:
        lines += ["", "materialise it with:", "  " + MATERIALIZE_COMMAND.format(name=subset.name)]
    emit(payload, lines, args.json)
    return EXIT_OK


def run_subsets_list(args: argparse.Namespace, home: Path) -> int:
    from wta_core.pipeline.user_subsets import list_user_subsets
    from wta_core.storage import TableStore

    prepare_environment(home)
    subsets = list_user_subsets(WtaPaths(home))
    store = TableStore(WtaPaths(home).database)
    trained = set(store.read_table("adapters")["adapter_id"].to_list()) if store.table_exists("adapters") else set()
    scored = (set(store.read("SELECT DISTINCT adapter_id FROM wta_scores")["adapter_id"].to_list())
              if store.table_exists("wta_scores") else set())
    with open_instance() as instance:
        partitions = set(instance.get_dynamic_partitions(USER_SUBSETS))
    entries = [subset_payload(subset) | {"adapter_trained": subset.adapter_id in trained,
                                         "scored": subset.adapter_id in scored,
                                         "partition_registered": subset.name in partitions}
               for subset in subsets]
    orphans = sorted(partitions - {subset.name for subset in subsets})
    payload = {"database": str(store.path), "dagster_home": os.environ["DAGSTER_HOME"], "subsets": entries,
               "partitions_without_subset": orphans}

    def flag(value: bool) -> str:
        return "yes" if value else "no"

    if entries:
        body = [[entry["name"], str(entry["members_removed"]), definition_phrase(entry["definition"]),
                 entry["created_at"][:19], flag(entry["adapter_trained"]), flag(entry["scored"]),
                 flag(entry["partition_registered"])] for entry in entries]
        lines = format_table(["name", "removed", "definition", "created (UTC)", "adapter", "scored", "partition"],
                             body, right={1})
    else:
        lines = ["no user subsets yet; add one with `wta subsets add NAME --tracks ID[,ID...]`"]
    if orphans:
        lines += ["", f"partitions without a stored subset: {', '.join(orphans)} "
                      "(remove them with `wta subsets remove NAME`)"]
    emit(payload, lines, args.json)
    return EXIT_OK


def run_subsets_remove(args: argparse.Namespace, home: Path) -> int:
    from wta_core.pipeline.user_subsets import check_name, remove_user_subset

    prepare_environment(home)
    check_name(args.name)
    with open_instance() as instance:
        registered = instance.has_dynamic_partition(USER_SUBSETS, args.name)
        removal = remove_user_subset(WtaPaths(home), args.name)
        if registered:
            instance.delete_dynamic_partition(USER_SUBSETS, args.name)
    if not removal.found and not registered:
        raise WtaError(f"no user subset named {args.name!r} in {WtaPaths(home).database} or the Dagster "
                       "instance; list them with `wta subsets list`")
    rows = {table: count for table, count in removal.rows.items() if count}
    payload = {"name": args.name, "rows": rows, "files": removal.files, "partition_deleted": registered}
    counts = ", ".join(f"{table} {count}" for table, count in rows.items()) or "none"
    lines = [f"removed user subset {args.name!r}",
             f"  rows deleted: {counts}",
             f"  files and folders deleted: {len(removal.files)}",
             f"  dagster partition {USER_SUBSETS}/{args.name}: {'deleted' if registered else 'was not registered'}"]
    emit(payload, lines, args.json)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# wta attribute


def ranking_rows(frame: pl.DataFrame) -> list[dict]:
    return [{"rank": rank, "adapter_id": row["adapter_id"], "kind": row["kind"], "removed": row["removed"],
             "score": finite_or_none(row["score"]), "z_score": finite_or_none(row["z_score"]),
             "p_value": finite_or_none(row["p_value"])}
            for rank, row in enumerate(frame.iter_rows(named=True), start=1)]


def check_screen_count(paths: WtaPaths, count: int) -> None:
    """Raise `ConfigError` unless 1 <= count < the number of training tracks, before anything is computed."""
    from wta_core.storage import TableStore

    total = TableStore(paths.database).read("SELECT count(*) AS n FROM tracks WHERE status = 'ok'")["n"][0]
    if not 1 <= count <= total - 1:
        raise ConfigError(f"--screen takes 1 to {total - 1} tracks (the dataset has {total} clips, and removing "
                          f"every one leaves nothing to train on), got {count}")


def screen(home: Path, config: RunConfig, generation: str, count: int, threads: int | None,
           by: str, prompt: str) -> tuple[list[dict], int, str]:
    """Register and materialise the single-track subsets of the `count` most similar tracks."""
    from wta_core.pipeline.attribution import screen_tracks
    from wta_dagster.resources import WtaSettings
    from wta_core.storage import TableStore
    from wta_dagster.partitions import register_track_subset

    paths = WtaPaths(home)
    candidates, total, score_name = screen_tracks(paths, config, generation, count, by=by, prompt=prompt,
                                                  dataset=WtaSettings().dataset_name(),
                                                  num_threads=threads or resource_threads())
    store = TableStore(paths.database)
    scored = (set(store.read("SELECT DISTINCT adapter_id FROM wta_scores")["adapter_id"].to_list())
              if store.table_exists("wta_scores") else set())
    pending = []
    entries = []
    for candidate in candidates:
        with open_instance() as instance:
            subset = register_track_subset(instance, paths, config, candidate.track_id,
                                           origin={"screened_for": generation})
        if subset.adapter_id not in scored:
            pending.append(subset.name)
        entries.append({"rank": candidate.rank, "track_id": candidate.track_id, "genre": candidate.genre,
                        "similarity": candidate.similarity, "subset": subset.name, "adapter_id": subset.adapter_id})
    if pending:
        materialize(pending, threads)
    return entries, total, score_name


def attribute_lines(payload: dict) -> list[str]:
    generation = payload["generation"]
    lines = [f"generation {generation['generation_id']}: prompt {generation['prompt']!r}, seed {generation['seed']}, "
             f"{generation['steps']} steps",
             f"computed {len(payload['computed'])} adapters, reused {len(payload['reused'])} stored scores",
             "",
             f"WTA scores against the full adapter (target {payload['target']}, method {payload['method']}, "
             f"weighting {payload['weighting']}), highest first:",
             ""]
    body = [[str(row["rank"]), row["adapter_id"], row["kind"], row["removed"] or "-",
             format_number(row["score"], ".4f"), format_number(row["z_score"], ".2f"),
             format_number(row["p_value"], ".3g")] for row in payload["ranking"]]
    lines += format_table(["rank", "subset", "kind", "removed", "score", "z-score", "p-value"], body,
                          right={0, 4, 5, 6})
    controls = ", ".join(f"{row['adapter_id']} {format_number(row['score'], '.4f')}" for row in payload["controls"])
    lines += ["", f"noise floor (control adapters): {controls or 'none'}",
              f"calibration: {payload['calibration']}",
              f"trajectories: {payload['trajectories']}"]
    screened = payload["screen"]
    if screened:
        lines += ["", f"Screening: the {screened['k']} of {screened['tracks_total']} training tracks most similar "
                      f"to the generation ({screened['score']} similarity), each retrained without it:", ""]
        body = [[str(row["rank"]), row["track_id"], row["genre"], format_number(row["similarity"], ".3f"),
                 row["subset"], format_number(row["score"], ".4f"), format_number(row["z_score"], ".2f"),
                 format_number(row["p_value"], ".3g")] for row in screened["candidates"]]
        lines += format_table(["rank", "track", "genre", "similarity", "subset", "score", "z-score", "p-value"],
                              body, right={0, 3, 5, 6, 7})
        lines += ["", screened["note"]]
    return lines


def run_attribute(args: argparse.Namespace, home: Path) -> int:
    from wta_core.devices import pick_device
    from wta_core.pipeline.attribution import attribute_generation, check_request, generation_dir

    config = prepare_environment(home)
    paths = WtaPaths(home)
    steps = args.steps or config.sample.steps
    check_request(args.prompt, args.seed, steps)
    if args.screen:
        check_screen_count(paths, args.screen)
    device = pick_device("auto")
    # Sampling uses the same thread count as training, because CPU results depend on it.
    threads = args.threads or resource_threads()
    result = attribute_generation(paths, config, args.prompt, args.seed, steps, device=device,
                                  num_threads=threads)
    computed = list(result.computed)
    screened = None
    if args.screen:
        candidates, total, score_name = screen(home, config, result.generation_id, args.screen, args.threads,
                                               args.screen_by, args.prompt)
        # The new single-track adapters are scored for this generation like every other adapter.
        result = attribute_generation(paths, config, args.prompt, args.seed, steps, device=device,
                                      num_threads=threads)
        computed += result.computed
        by_adapter = {row["adapter_id"]: row for row in result.ranked().iter_rows(named=True)}
        for candidate in candidates:
            row = by_adapter.get(candidate["adapter_id"], {})
            candidate |= {"score": finite_or_none(row.get("score")), "z_score": finite_or_none(row.get("z_score")),
                          "p_value": finite_or_none(row.get("p_value"))}
        untested = total - len(candidates)
        screened = {"k": len(candidates), "tracks_total": total, "untested_tracks": untested,
                    "by": args.screen_by, "score": score_name, "candidates": candidates,
                    "note": f"Only these {len(candidates)} tracks were tested. The other {untested} of {total} tracks "
                            "were not tested: their effect on this generation is unknown, not zero. Similarity "
                            "only chose the candidates; the WTA score of each retraining is the test."}

    generation = dict(result.generation)
    generation["created_at"] = generation["created_at"].isoformat()
    payload = {
        "database": str(paths.database), "generation": generation,
        "target": result.target, "method": config.score.method, "weighting": config.score.weighting,
        "computed": computed, "reused": [a for a in result.reused if a not in computed],
        "ranking": ranking_rows(result.ranked()),
        "controls": [{"adapter_id": row["adapter_id"], "score": finite_or_none(row["score"])}
                     for row in result.controls().iter_rows(named=True)],
        "calibration": result.calibration(),
        "trajectories": str(generation_dir(paths, result.generation_id)),
        "screen": screened,
    }
    emit(payload, attribute_lines(payload), args.json)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None) -> int:
    """Run one `wta` command and return its exit code: 0 on success, 2 on any error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="wta: %(message)s")
    home = resolve_home(args.home)
    if args.command in READ_COMMANDS:
        return run_guarded(home, lambda: run_read_command(args, home))
    if args.command == "attribute":
        return run_guarded(home, lambda: run_attribute(args, home))
    commands = {"add": run_subsets_add, "list": run_subsets_list, "remove": run_subsets_remove}
    return run_guarded(home, lambda: commands[args.action](args, home))


if __name__ == "__main__":
    sys.exit(main())
