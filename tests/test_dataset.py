"""The gtzan_dataset asset on generated GTZAN and Hugging Face copies, and on the embedded corpus."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import GENRE_FREQUENCIES, make_gtzan, tone, wav_bytes
from wta_core.storage import TableStore
from wta_dagster.assets.dataset import every_genre_has_clips, gtzan_dataset
from wta_dagster.resources import WtaSettings


def materialize_dataset(home, dataset: str, preset: str = "smoke") -> dg.ExecuteInProcessResult:
    settings = WtaSettings(home=str(home), dataset=dataset, preset=preset)
    return dg.materialize([gtzan_dataset, every_genre_has_clips], resources={"settings": settings},
                          raise_on_error=False)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The failed step's error messages, outermost first, including the causes."""
    error = result.failure_data_for_node("gtzan_dataset").error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def track_rows(home) -> dict[str, dict]:
    frame = TableStore(home / "wta.duckdb").read_table("tracks")
    return {row["source_path"].split("/")[-1]: row for row in frame.to_dicts()}


def test_gtzan_layout_skips_bad_files(tmp_path):
    root = make_gtzan(tmp_path / "gtzan")
    home = tmp_path / "home"
    result = materialize_dataset(home, str(root))
    assert result.success
    rows = track_rows(home)
    assert rows["jazz.00054.wav"]["status"] == "skipped"
    assert "RIFF" in rows["jazz.00054.wav"]["reason"]
    assert rows["._jazz.00000.wav"]["status"] == "skipped"
    assert "AppleDouble" in rows["._jazz.00000.wav"]["reason"]
    assert "empty" in rows["blues.00098.wav"]["reason"]
    assert "not decodable" in rows["notes.txt"]["reason"]
    assert "too short" in rows["metal.00097.wav"]["reason"]


def test_gtzan_duplicate_names_both_genres(tmp_path):
    root = make_gtzan(tmp_path / "gtzan")
    home = tmp_path / "home"
    assert materialize_dataset(home, str(root)).success
    rows = track_rows(home)
    # Files are taken in genre order, so the jazz copy is kept and the metal copy reported.
    kept = rows["jazz.00099.wav"]
    duplicate = rows["metal.00000.wav"]
    assert kept["status"] == "ok"
    assert duplicate["status"] == "skipped"
    assert "duplicate of jazz.00099" in duplicate["reason"]
    assert "'jazz'" in duplicate["reason"]
    assert "'metal'" in duplicate["reason"]


def test_gtzan_converts_stereo_and_rates(tmp_path):
    root = make_gtzan(tmp_path / "gtzan")
    home = tmp_path / "home"
    assert materialize_dataset(home, str(root)).success
    rows = track_rows(home)
    stereo = rows["blues.00001.wav"]
    assert stereo["status"] == "ok"
    assert stereo["channels"] == 2
    assert stereo["sample_rate"] == 44_100
    ok = [row for row in rows.values() if row["status"] == "ok"]
    # The smoke preset keeps the first three genres in sorted order.
    assert {row["genre"] for row in ok} == {"blues", "jazz", "metal"}
    assert all(len(row["sha256"]) == 64 for row in rows.values() if row["sha256"])


def test_gtzan_metadata_lists_skips(tmp_path):
    root = make_gtzan(tmp_path / "gtzan")
    result = materialize_dataset(tmp_path / "home", str(root))
    metadata = result.asset_materializations_for_node("gtzan_dataset")[0].metadata
    assert metadata["skipped"].value >= 6
    assert "jazz.00054" in metadata["skipped_files"].value
    assert "blues" in metadata["clips_per_genre"].value
    assert "data:image/png;base64" in metadata["mel_spectrograms"].value


def test_gtzan_au_files_decode(tmp_path):
    base = tmp_path / "gtzan" / "genres"
    for genre, frequency in list(GENRE_FREQUENCIES.items())[:2]:
        (base / genre).mkdir(parents=True)
        for number in range(2):
            data = wav_bytes(tone(2.5, 22_050, frequency + number), 22_050, fmt="AU")
            (base / genre / f"{genre}.{number:05d}.au").write_bytes(data)
    home = tmp_path / "home"
    assert materialize_dataset(home, str(tmp_path / "gtzan")).success
    statuses = [row["status"] for row in track_rows(home).values()]
    assert statuses == ["ok"] * 4


def write_hf_parquet(folder, with_class_labels: bool) -> None:
    names = list(GENRE_FREQUENCIES)
    audio, labels = [], []
    for index, (genre, frequency) in enumerate(GENRE_FREQUENCIES.items()):
        for number in range(2):
            audio.append({"bytes": wav_bytes(tone(2.5, 22_050, frequency + number), 22_050),
                          "path": f"{genre}.{number:05d}.wav"})
            labels.append(index if with_class_labels else genre)
    audio.append({"bytes": b"RIFX-broken", "path": "jazz.00054.wav"})
    labels.append(names.index("jazz") if with_class_labels else "jazz")
    table = pa.table({"audio": audio, ("label" if with_class_labels else "genre"): labels})
    if with_class_labels:
        features = {"audio": {"_type": "Audio"}, "label": {"_type": "ClassLabel", "names": names}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "train-00000-of-00001.parquet")


@pytest.mark.parametrize("with_class_labels", [True, False])
def test_huggingface_parquet_copy(tmp_path, with_class_labels):
    write_hf_parquet(tmp_path / "hf" / "data", with_class_labels)
    home = tmp_path / "home"
    assert materialize_dataset(home, str(tmp_path / "hf")).success
    frame = TableStore(home / "wta.duckdb").read_table("tracks")
    ok = frame.filter(frame["status"] == "ok")
    assert ok.height == 6
    assert sorted(set(ok["genre"].to_list())) == ["blues", "jazz", "metal"]
    skipped = frame.filter(frame["status"] == "skipped")
    assert skipped["track_id"].to_list() == ["jazz.00054"]
    assert "#row=8" in skipped["source_path"][0]


def test_huggingface_arrow_copy(tmp_path):
    folder = tmp_path / "hf_arrow"
    folder.mkdir()
    audio = [{"bytes": wav_bytes(tone(2.5, 16_000, f), 16_000), "path": f"x{i}.wav"}
             for i, f in enumerate([200.0, 300.0, 400.0, 500.0])]
    table = pa.table({"audio": audio, "genre": ["pop", "pop", "rock", "rock"]})
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    home = tmp_path / "home"
    assert materialize_dataset(home, str(folder)).success
    frame = TableStore(home / "wta.duckdb").read_table("tracks")
    assert frame["track_id"].to_list() == ["pop.x0", "pop.x1", "rock.x2", "rock.x3"]


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no_genres"])
def test_unusable_dataset_fails_clearly(tmp_path, case):
    target = tmp_path / "data"
    if case == "file":
        target.write_text("not a folder")
    elif case == "empty":
        target.mkdir()
    elif case == "no_genres":
        target.mkdir()
        (target / "readme.txt").write_text("nothing here")
    result = materialize_dataset(tmp_path / "home", str(target))
    assert not result.success
    message = failure_message(result)
    expected = {"missing": "does not exist", "file": "is a file", "empty": "is empty",
                "no_genres": "no genre folders"}[case]
    remedy = {"missing": "or set it to 'embedded'", "file": "or set it to 'embedded'",
              "empty": "or set WTA_DATASET to 'embedded'",
              "no_genres": "expected <root>/<genre>/<genre>.000NN.wav"}[case]
    assert expected in message
    assert remedy in message
    assert str(target) in message


def test_genre_without_usable_clips_fails(tmp_path):
    root = make_gtzan(tmp_path / "gtzan", bad_cases=False)
    empty_genre = root / "genres_original" / "country"
    empty_genre.mkdir()
    (empty_genre / "country.00000.wav").write_bytes(b"garbage bytes")
    result = materialize_dataset(tmp_path / "home", str(root))
    assert not result.success
    assert "['country'] have no usable clips" in failure_message(result)


def test_silent_and_nan_audio_skipped(tmp_path):
    root = make_gtzan(tmp_path / "gtzan", bad_cases=False)
    import numpy as np
    silent = np.zeros((22_050 * 3, 1), dtype=np.float32)
    (root / "genres_original" / "blues" / "blues.00050.wav").write_bytes(wav_bytes(silent, 22_050))
    nan = tone(3.0, 22_050, 100.0)
    nan[100:200] = np.nan
    buffer_path = root / "genres_original" / "blues" / "blues.00051.wav"
    import soundfile
    soundfile.write(buffer_path, nan, 22_050, subtype="FLOAT")
    home = tmp_path / "home"
    assert materialize_dataset(home, str(root)).success
    rows = track_rows(home)
    assert "silent" in rows["blues.00050.wav"]["reason"]
    assert "non-finite" in rows["blues.00051.wav"]["reason"]


def test_embedded_builder_small_subset(tmp_path, monkeypatch, render_cache):
    monkeypatch.setenv("WTA_CACHE", str(render_cache))
    home = tmp_path / "home"
    result = materialize_dataset(home, "embedded")
    assert result.success
    store = TableStore(home / "wta.duckdb")
    ok = store.read("SELECT genre, count(*) AS clips FROM tracks WHERE status = 'ok' GROUP BY genre")
    assert ok.height == 3
    assert min(ok["clips"].to_list()) == 8
    split = store.read_table("corpus_split")
    roles = set(split["role"].to_list())
    assert roles == {"attribution", "pretrain"}
    attribution = set(split.filter(split["role"] == "attribution")["piece"].to_list())
    pretrain = set(split.filter(split["role"] == "pretrain")["piece"].to_list())
    assert not attribution & pretrain
    assert (home / "dataset" / "pretrain.safetensors").exists()


def test_home_bound_to_one_preset(tmp_path):
    root = make_gtzan(tmp_path / "gtzan", bad_cases=False)
    home = tmp_path / "home"
    assert materialize_dataset(home, str(root), preset="smoke").success
    result = materialize_dataset(home, str(root), preset="demo")
    assert not result.success
    assert "holds a 'smoke' run" in failure_message(result)
