"""User subsets: named sets of training tracks that a user removes to test their effect.

A user subset is a list of track ids, or a filter over the `tracks` table (a genre, a
pattern over `source_path`, or a file of ids) that is resolved to such a list once, when
the subset is registered. The definition and the resolved tracks are stored in the tables
`user_subsets` and `user_subset_tracks`. The list stays fixed afterwards, so a subset
always names the tracks its adapter was trained without.

Its adapter, `subset-<name>`, is one more arm of the run's controlled experiment: the
LoRA initialisation, step count, data order and training seed of the full adapter, with the
removed tracks skipped (`wta_core.subsets.member_mask`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from wta_core.config import RunConfig
from wta_core.errors import ConfigError, WtaError
from wta_core.paths import WtaPaths
from wta_core.storage import TableStore, read_in
from wta_core.subsets import FULL, SubsetSpec, subset_keys, user_adapter_id

log = logging.getLogger(__name__)

# A name is a Dagster partition key and part of file names, so it is kept to a safe set.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME_LENGTH = 64
TRACK_SUBSET_PREFIX = "track-"  # names of the single-track subsets that screening registers
GLOB_CHARACTERS = "*?["  # a path pattern with one of these is a glob, otherwise SQL LIKE

SUBSETS_TABLE = "user_subsets"
TRACKS_TABLE = "user_subset_tracks"
# Tables with rows of one adapter, and the column that contains its id.
ADAPTER_TABLES = {"subsets": "subset_id", "subset_members": "subset_id", "adapters": "adapter_id",
                  "trajectories": "adapter_id", "step_distances": "adapter_id", "wta_scores": "adapter_id",
                  "attribution_scores": "adapter_id"}


@dataclass(frozen=True)
class SubsetDefinition:
    """Source of the tracks to remove, as the user gave it: exactly one of the four fields is set."""

    tracks: tuple[str, ...] = ()
    genre: str | None = None
    path_pattern: str | None = None
    ids_file: str | None = None

    def __post_init__(self) -> None:
        set_fields = [bool(self.tracks), self.genre is not None, self.path_pattern is not None,
                      self.ids_file is not None]
        if sum(set_fields) != 1:
            raise ConfigError("a subset definition takes exactly one of: track ids, a genre, a path pattern, "
                              f"an ids file; got {sum(set_fields)}")


@dataclass(frozen=True)
class UserSubset:
    """One registered user subset."""

    name: str
    definition: dict
    created_at: datetime  # UTC
    removed: tuple[str, ...]  # track ids, in the order of the tracks table

    @property
    def adapter_id(self) -> str:
        return user_adapter_id(self.name)


@dataclass
class Removal:
    """Rows and files deleted by `remove_user_subset`."""

    name: str
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows deleted
    files: list[str] = field(default_factory=list)  # files and folders deleted

    @property
    def found(self) -> bool:
        return bool(self.files) or any(self.rows.values())


# ---------------------------------------------------------------------------------------
# Names


def check_name(name: str) -> None:
    """Raise `ConfigError` unless `name` can be a partition key and a file name."""
    if not name or len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"invalid subset name {name!r}: use 1 to {MAX_NAME_LENGTH} letters, digits, '-', '_' or '.', "
            "starting with a letter or digit, with no '..'"
        )


def reserved_names(paths: WtaPaths, config: RunConfig) -> set[str]:
    """Return the built-in subset keys of this run (full, controls, genres, dose, noise)."""
    genres = sorted(set(_ok_tracks(TableStore(paths.database))["genre"].to_list()))
    return set(subset_keys(genres, config))


def track_subset_name(track_id: str) -> str:
    """Return the name of the single-track subset of `track_id`: `track-<id>`, made safe for a partition key.

    An id that needs changing gets a hash suffix, so two ids never map to one name.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", track_id)
    safe = re.sub(r"\.{2,}", ".", safe)
    if safe != track_id:
        safe += "-" + hashlib.sha256(track_id.encode("utf-8")).hexdigest()[:8]
    name = TRACK_SUBSET_PREFIX + safe
    if len(name) > MAX_NAME_LENGTH:
        name = name[: MAX_NAME_LENGTH - 9] + "-" + hashlib.sha256(track_id.encode("utf-8")).hexdigest()[:8]
    return name


# ---------------------------------------------------------------------------------------
# Resolving a definition against the tracks table


def _ok_tracks(store: TableStore) -> pl.DataFrame:
    if not store.table_exists("tracks"):
        raise WtaError(f"no tracks table in {store.path}; materialise the gtzan_dataset asset first")
    return store.read("SELECT track_id, genre, source_path FROM tracks WHERE status = 'ok' ORDER BY feature_index")


def read_ids_file(path: str | Path) -> list[str]:
    """Read the track ids of a text file, one per line, skipping blank lines and lines starting with '#'."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read ids file {file}: {error}") from error
    ids = [line.strip() for line in text.splitlines()]
    ids = [line for line in ids if line and not line.startswith("#")]
    if not ids:
        raise ConfigError(f"ids file {file} lists no track id; write one id per line")
    return ids


def _check_track_ids(store: TableStore, requested: list[str]) -> None:
    """Raise `ConfigError` listing every id that is not a track with status ok."""
    known = store.read("SELECT track_id, status, reason FROM tracks")
    status = dict(zip(known["track_id"].to_list(), zip(known["status"].to_list(), known["reason"].to_list())))
    unknown = [track for track in requested if track not in status]
    skipped = [f"{track} ({status[track][1] or 'skipped'})" for track in requested
               if track in status and status[track][0] != "ok"]
    problems = []
    if unknown:
        problems.append(f"unknown track ids: {', '.join(unknown)}")
    if skipped:
        problems.append(f"tracks skipped by the dataset, so never trained on: {', '.join(skipped)}")
    if problems:
        raise ConfigError("; ".join(problems) + f". Valid ids are the track_id values with status 'ok' in "
                          f"the tracks table of {store.path}")


def resolve_definition(paths: WtaPaths, definition: SubsetDefinition) -> tuple[list[str], dict]:
    """Return the ok track ids that `definition` removes, in table order, and its JSON record."""
    store = TableStore(paths.database)
    tracks = _ok_tracks(store)
    if definition.tracks or definition.ids_file is not None:
        requested = list(definition.tracks) if definition.tracks else read_ids_file(definition.ids_file)
        requested = list(dict.fromkeys(requested))  # drop repeats, keep order
        _check_track_ids(store, requested)
        chosen = set(requested)
        record = ({"tracks": requested} if definition.tracks
                  else {"ids_file": str(Path(definition.ids_file).resolve()), "tracks": requested})
    elif definition.genre is not None:
        genres = sorted(set(tracks["genre"].to_list()))
        if definition.genre not in genres:
            raise ConfigError(f"unknown genre {definition.genre!r}; the dataset's genres are {', '.join(genres)}")
        chosen = set(tracks.filter(pl.col("genre") == definition.genre)["track_id"].to_list())
        record = {"genre": definition.genre}
    else:
        pattern = definition.path_pattern
        syntax = "glob" if any(character in pattern for character in GLOB_CHARACTERS) else "like"
        operator = "GLOB" if syntax == "glob" else "LIKE"
        matched = store.read(f"SELECT track_id FROM tracks WHERE status = 'ok' AND source_path {operator} ?",
                             [pattern])
        chosen = set(matched["track_id"].to_list())
        record = {"path_pattern": pattern, "syntax": syntax}
    removed = [track for track in tracks["track_id"].to_list() if track in chosen]
    return removed, record


# ---------------------------------------------------------------------------------------
# Registering, reading and removing


def _create_tables(connection) -> None:
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {SUBSETS_TABLE} (name VARCHAR, definition VARCHAR, "
        "created_at TIMESTAMP, members_removed BIGINT)")
    connection.execute(f"CREATE TABLE IF NOT EXISTS {TRACKS_TABLE} (name VARCHAR, track_id VARCHAR)")


def register_user_subset(paths: WtaPaths, config: RunConfig, name: str, definition: SubsetDefinition,
                         origin: dict | None = None) -> UserSubset:
    """Validate `name` and `definition`, then store the subset and its tracks in one transaction.

    Raises `ConfigError` for an invalid or taken name, an unknown or skipped track id, or a
    subset that removes no track or every track. `origin` is stored in the definition
    record (screening records the generation that chose the track).
    """
    check_name(name)
    reserved = reserved_names(paths, config)
    if name in reserved or user_adapter_id(name) in reserved:
        raise ConfigError(f"subset name {name!r} clashes with a built-in subset of this run "
                          f"({', '.join(sorted(reserved))}); choose another name")
    if get_user_subset(paths, name) is not None:
        raise _name_taken_error(name)
    removed, record = resolve_definition(paths, definition)
    total = _ok_tracks(TableStore(paths.database)).height
    if not removed:
        raise ConfigError(f"subset {name!r} removes no track: {json.dumps(record)} matches no track with "
                          "status 'ok'; check the definition against the tracks table")
    if len(removed) == total:
        raise ConfigError(f"subset {name!r} removes all {total} tracks, which leaves nothing to train on; "
                          "narrow the definition")
    if origin:
        record = record | origin

    created_at = datetime.now(timezone.utc).replace(tzinfo=None)
    with TableStore(paths.database).transaction() as connection:
        _create_tables(connection)
        existing = connection.execute(f"SELECT count(*) FROM {SUBSETS_TABLE} WHERE name = ?", [name]).fetchone()[0]
        if existing:  # registered by another process since the check above
            raise _name_taken_error(name)
        connection.execute(f"INSERT INTO {SUBSETS_TABLE} VALUES (?, ?, ?, ?)",
                           [name, json.dumps(record, sort_keys=True), created_at, len(removed)])
        connection.executemany(f"INSERT INTO {TRACKS_TABLE} VALUES (?, ?)", [[name, track] for track in removed])
    log.info("registered user subset %r: %d of %d tracks removed", name, len(removed), total)
    return UserSubset(name=name, definition=record, created_at=created_at, removed=tuple(removed))


def track_subset(paths: WtaPaths, config: RunConfig, track_id: str, origin: dict | None = None
                 ) -> tuple[UserSubset, bool]:
    """Return the single-track subset of `track_id`, registering it first if needed, and whether it is new.

    Raises `ConfigError` when a subset of that name exists but removes other tracks.
    """
    name = track_subset_name(track_id)
    existing = get_user_subset(paths, name)
    if existing is None:
        return register_user_subset(paths, config, name, SubsetDefinition(tracks=(track_id,)), origin), True
    if existing.removed != (track_id,):
        raise ConfigError(f"user subset {name!r} exists but removes {', '.join(existing.removed)} instead of "
                          f"only {track_id}; remove it with `wta subsets remove {name}` and screen again")
    return existing, False


def _name_taken_error(name: str) -> ConfigError:
    return ConfigError(f"a user subset named {name!r} already exists; choose another name, or remove it "
                       f"first with `wta subsets remove {name}`")


def list_user_subsets(paths: WtaPaths) -> list[UserSubset]:
    """Return every registered user subset, sorted by name, or [] when none was ever registered."""
    store = TableStore(paths.database)
    if not store.path.exists() or not store.table_exists(SUBSETS_TABLE):
        return []
    with store.connect(read_only=True) as connection:
        subsets = read_in(connection, f"SELECT * FROM {SUBSETS_TABLE} ORDER BY name")
        members = read_in(connection, f"SELECT s.name, s.track_id FROM {TRACKS_TABLE} s "
                                      "LEFT JOIN tracks t USING (track_id) ORDER BY s.name, t.feature_index")
    removed: dict[str, list[str]] = {}
    for row in members.iter_rows(named=True):
        removed.setdefault(row["name"], []).append(row["track_id"])
    return [UserSubset(name=row["name"], definition=json.loads(row["definition"]), created_at=row["created_at"],
                       removed=tuple(removed.get(row["name"], ())))
            for row in subsets.iter_rows(named=True)]


def get_user_subset(paths: WtaPaths, name: str) -> UserSubset | None:
    return next((subset for subset in list_user_subsets(paths) if subset.name == name), None)


def user_subset_spec(paths: WtaPaths, config: RunConfig, name: str) -> SubsetSpec:
    """Return the training spec of a registered user subset, or raise `ConfigError` saying how to register it.

    It trains with the full adapter's seed, so it differs from the full adapter only in the
    removed tracks.
    """
    subset = get_user_subset(paths, name)
    if subset is None:
        raise ConfigError(f"no user subset named {name!r} in {paths.database}; register it with "
                          f"`wta subsets add {name} --tracks ...` first")
    ok = set(_ok_tracks(TableStore(paths.database))["track_id"].to_list())
    unusable = [track for track in subset.removed if track not in ok]
    if unusable:
        raise ConfigError(f"user subset {name!r} removes tracks that are no longer usable clips of the dataset: "
                          f"{', '.join(unusable)}; remove the subset and register it again")
    _check_full_adapter(paths, config)
    return SubsetSpec(subset_id=subset.adapter_id, kind="user", removed_genre=None, fraction=1.0,
                      seed=config.lora.seed, removed_tracks=subset.removed)


def _check_full_adapter(paths: WtaPaths, config: RunConfig) -> None:
    """Raise `ConfigError` when the stored full adapter was trained with other steps or another seed.

    A user subset is compared with the full adapter, so both must come from the same settings.
    """
    store = TableStore(paths.database)
    if not store.table_exists("adapters"):
        return
    full = store.read_table("adapters", {"adapter_id": FULL})
    if full.height == 0:
        return
    trained = full.row(0, named=True)
    if (trained["steps"], trained["seed"]) != (config.lora.steps, config.lora.seed):
        raise ConfigError(
            f"the full adapter was trained for {trained['steps']} steps with seed {trained['seed']}, but preset "
            f"{config.name!r} now trains {config.lora.steps} steps with seed {config.lora.seed}; a user subset "
            "must match the full adapter, so materialise lora_adapters for every partition again first"
        )


def _artifact_paths(paths: WtaPaths, adapter_id: str) -> list[Path]:
    """Return the existing files and folders that the user subset's assets and attributions wrote."""
    candidates = [
        paths.adapter_dir(adapter_id),
        paths.adapter_dir(adapter_id).parent / f"{adapter_id}.loss.png",
        paths.checkpoint_dir(adapter_id),
        paths.trajectory_dir / f"{adapter_id}.safetensors",
        paths.trajectory_dir / f"{adapter_id}.tmp",
        paths.audio_dir / adapter_id,
        paths.report_dir / "divergence" / f"{adapter_id}.png",
    ]
    generations = paths.trajectory_dir / "generations"
    if generations.is_dir():
        candidates += sorted(generations.glob(f"*/{adapter_id}.safetensors"))
        candidates += sorted(generations.glob(f"*/{adapter_id}.tmp"))
    return [candidate for candidate in candidates if candidate.exists() or candidate.is_symlink()]


def remove_user_subset(paths: WtaPaths, name: str) -> Removal:
    """Delete the subset's rows in every table and its files; nothing else is touched.

    Rows go in one transaction, then files. A subset that is not registered still has its
    leftover rows and files removed; `Removal.found` is False when there were none.
    """
    check_name(name)
    adapter_id = user_adapter_id(name)
    removal = Removal(name=name)
    store = TableStore(paths.database)
    if store.path.exists():
        with store.transaction() as connection:
            present = {row[0] for row in connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()}
            for table, key in [(SUBSETS_TABLE, "name"), (TRACKS_TABLE, "name")]:
                if table in present:
                    removal.rows[table] = _delete(connection, table, key, name)
            for table, key in ADAPTER_TABLES.items():
                if table in present:
                    removal.rows[table] = _delete(connection, table, key, adapter_id)
    for target in _artifact_paths(paths, adapter_id):
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        removal.files.append(str(target))
    log.info("removed user subset %r: %d rows, %d files or folders", name, sum(removal.rows.values()),
             len(removal.files))
    return removal


def _delete(connection, table: str, column: str, value: str) -> int:
    count = connection.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" = ?', [value]).fetchone()[0]
    connection.execute(f'DELETE FROM "{table}" WHERE "{column}" = ?', [value])
    return int(count)
