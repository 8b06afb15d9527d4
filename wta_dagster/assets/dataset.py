"""gtzan_dataset: decoded, de-duplicated clips with log-mel features and the `tracks` table."""


import dagster as dg

from wta_core.data.prepare import prepare_dataset
from wta_core.plots import genre_spectrograms
from wta_dagster.metadata import image, markdown_table
from wta_dagster.resources import WtaSettings


@dg.asset(
    group_name="attribution",
    kinds={"duckdb", "python"},
    description="Clips of every genre as normalised log-mel features; rows in the DuckDB table `tracks`.",
)
def gtzan_dataset(context: dg.AssetExecutionContext, settings: WtaSettings) -> dg.MaterializeResult:
    config = settings.run_config()
    paths = settings.paths()
    dataset = settings.dataset_name()
    context.log.info(f"building dataset from {dataset!r} with preset {config.name!r} into {paths.home}")
    summary = prepare_dataset(dataset, config, paths)
    catalog = summary.catalog

    skipped = catalog.skipped_rows
    for row in skipped:
        if not row["reason"].startswith("over the preset"):
            context.log.warning(f"skipped {row['source_path']}: {row['reason']}")
    counts = catalog.clips_per_genre()
    features = catalog.feature_array()
    examples = {}
    for row in catalog.ok_rows:
        examples.setdefault(row["genre"], features[row["feature_index"]])
    figure = genre_spectrograms(examples, paths.dataset_dir / "genre_spectrograms.png")
    total_s = sum(row["duration_s"] or 0.0 for row in catalog.ok_rows)
    context.log.info(f"{len(catalog.ok_rows)} clips in {len(counts)} genres, {len(skipped)} files skipped")
    return dg.MaterializeResult(
        metadata={
            "source": summary.source,
            "preset": config.name,
            "clips": len(catalog.ok_rows),
            "genres": len(counts),
            "clips_per_genre": markdown_table([{"genre": g, "clips": n} for g, n in counts.items()]),
            "skipped": len(skipped),
            "skipped_files": markdown_table(skipped, ["track_id", "genre", "source_path", "reason"]),
            "total_source_duration_s": round(total_s, 1),
            "clip_seconds": round(config.audio.clip_seconds, 3),
            "pretraining_clips": summary.pretrain_count,
            "database": dg.MetadataValue.path(str(paths.database)),
            "mel_spectrograms": image(figure),
        }
    )


@dg.asset_check(asset=gtzan_dataset, blocking=True, description="Every genre has at least one usable clip.")
def every_genre_has_clips(settings: WtaSettings) -> dg.AssetCheckResult:
    counts = settings.store().read(
        "SELECT genre, count(*) FILTER (WHERE status = 'ok') AS clips FROM tracks GROUP BY genre ORDER BY genre")
    empty = counts.filter(counts["clips"] == 0)["genre"].to_list()
    return dg.AssetCheckResult(
        passed=not empty,
        metadata={"genres": counts.height, "genres_without_clips": ", ".join(empty) or "none"},
    )
