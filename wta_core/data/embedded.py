"""The embedded default dataset: real music from the music21 corpus, rendered to audio.

Each style is one collection of the corpus that ships inside the `music21` package, played
with one General MIDI instrument typical of it through the `TimGM6mb.sf2` SoundFont that
ships inside `pretty_midi`, rendered by `midirenderer`. Pieces of other collections, played
on other instruments, form the pretraining portion of the base model, so the base model never
hears a clip used for attribution. Rendered WAV files are cached and reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from wta_core.data.sources import SourceFile

log = logging.getLogger(__name__)

RENDER_MEASURES = 6  # enough for a few seconds of music at common tempos
MIN_RENDER_SECONDS = 1.0


@dataclass(frozen=True)
class Style:
    """One genre of the embedded dataset."""

    genre: str
    prompt: str
    program: int  # General MIDI program, 0-based
    collections: tuple[str, ...]  # music21 corpus folders
    name_filter: str = ""  # regular expression on the file name; empty keeps all
    exclude_filter: str = ""


# Ordered so that any prefix of the list mixes timbres and periods; the smoke preset
# keeps the first three.
STYLES: tuple[Style, ...] = (
    Style("chorale", "a baroque chorale on a church organ", 19, ("bach",)),
    Style("fiddle", "an American fiddle tune", 40, ("ryansMammoth",)),
    Style("quartet", "a classical string quartet", 48, ("beethoven", "mozart", "haydn")),
    Style("mass", "a Renaissance mass sung by a choir", 52, ("palestrina",)),
    Style("irish", "an Irish dance tune on the flute", 73, ("oneills1850",)),
    Style("madrigal", "an Italian madrigal", 53, ("monteverdi",)),
    Style("trecento", "a fourteenth-century Italian song on recorders", 74, ("trecento",)),
    Style("german_folk", "a German folk song on guitar", 24, ("essenFolksong",),
          exclude_filter=r"^han"),
    Style("chinese_folk", "a Chinese folk melody on the koto", 107, ("essenFolksong",),
          name_filter=r"^han"),
    Style("scottish", "a Scottish air on the bagpipes", 109, ("airdsAirs",)),
)

# Collections never used for attribution, with the instruments their pretraining clips cycle
# through. None of these instruments plays an attribution style.
PRETRAIN_COLLECTIONS = (
    "nottingham-dataset", "schumann_robert", "schumann_clara", "chopin", "joplin", "handel",
    "schubert", "verdi", "weber", "corelli", "cpebach", "josquin", "ciconia", "luca", "lusitano",
    "demos", "leadSheet", "miscFolk", "beach", "johnson_j_r", "liliuokalani", "schoenberg",
    "webern", "theoryExercises",
)
PRETRAIN_PROGRAMS = (
    (0, "a piano piece"), (4, "an electric piano piece"), (12, "a marimba piece"),
    (32, "an acoustic bass line"), (56, "a trumpet melody"), (65, "an alto saxophone melody"),
    (71, "a clarinet melody"), (46, "a harp piece"),
)
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid", ".midi")


@dataclass(frozen=True)
class Piece:
    """One tune or movement of the corpus: a file, and a tune number inside ABC collections."""

    path: Path
    number: int | None  # the ABC `X:` number, None for single-piece files

    @property
    def label(self) -> str:
        collection = self.path.parent.name
        suffix = f"#X{self.number}" if self.number is not None else ""
        return f"{collection}/{self.path.name}{suffix}"


def _corpus_files(collection: str) -> list[Path]:
    from music21 import corpus

    files = []
    for path in corpus.getPaths():
        parts = Path(path).parts
        if "corpus" in parts and collection in parts[parts.index("corpus") + 1:parts.index("corpus") + 2]:
            if Path(path).suffix.lower() in SCORE_SUFFIXES:
                files.append(Path(path))
    return sorted(files)


def _abc_numbers(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [int(n) for n in re.findall(r"^X:\s*(\d+)", text, flags=re.MULTILINE)]


def list_pieces(collections: tuple[str, ...], name_filter: str = "", exclude_filter: str = "") -> list[Piece]:
    """Every piece of the collections, ABC collections split into their tunes."""
    pieces = []
    for collection in collections:
        for path in _corpus_files(collection):
            if name_filter and not re.search(name_filter, path.name):
                continue
            if exclude_filter and re.search(exclude_filter, path.name):
                continue
            numbers = _abc_numbers(path) if path.suffix.lower() == ".abc" else []
            if len(numbers) > 1:
                pieces.extend(Piece(path, number) for number in numbers)
            else:
                pieces.append(Piece(path, None))
    return pieces


def _load_score(piece: Piece):
    from music21 import converter

    if piece.number is None:
        return converter.parse(str(piece.path))
    text = piece.path.read_text(encoding="utf-8", errors="replace")
    blocks = re.split(r"(?=^X:)", text, flags=re.MULTILINE)
    header = blocks[0] if not blocks[0].startswith("X:") else ""
    for block in blocks:
        match = re.match(r"X:\s*(\d+)", block)
        if match and int(match.group(1)) == piece.number:
            return converter.parseData(header + block, format="abc")
    raise ValueError(f"tune X:{piece.number} not found in {piece.path}")


def render_piece(piece: Piece, program: int) -> bytes:
    """Render the first measures of `piece` on one General MIDI `program` to WAV bytes."""
    import midirenderer
    import pretty_midi
    from music21 import instrument, midi, stream

    score = _load_score(piece)
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    excerpt = score.measures(1, RENDER_MEASURES) if score.hasMeasures() or score.hasPartLikeStreams() else score
    if excerpt is None or not excerpt.flatten().notes:
        excerpt = score
    target = instrument.instrumentFromMidiProgram(program)
    for part in excerpt.parts if excerpt.hasPartLikeStreams() else [excerpt]:
        for existing in list(part.recurse().getElementsByClass(instrument.Instrument)):
            existing.activeSite.remove(existing)
        part.insert(0, instrument.instrumentFromMidiProgram(program))
    del target
    midi_bytes = midi.translate.streamToMidiFile(excerpt).writestr()
    soundfont = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    return midirenderer.render_wave_from(soundfont.read_bytes(), midi_bytes)


@dataclass(frozen=True)
class RenderPlan:
    """Which pieces go to which genre or to pretraining, fixed by a seed."""

    attribution: dict[str, list[Piece]]
    pretrain: list[tuple[Piece, int, str]]  # piece, program, prompt


def plan_split(styles: tuple[Style, ...], clips_per_genre: int, pretrain_clips: int, seed: int = 0) -> RenderPlan:
    """Choose candidate pieces per style and for pretraining, in a seeded order.

    Each style gets twice `clips_per_genre` candidates so that pieces that fail to parse or
    render can be replaced; the catalog keeps the first `clips_per_genre` usable ones.
    """
    rng = random.Random(seed)
    attribution = {}
    for style in styles:
        pieces = list_pieces(style.collections, style.name_filter, style.exclude_filter)
        rng.shuffle(pieces)
        attribution[style.genre] = pieces[: 2 * clips_per_genre]
    pool = list_pieces(PRETRAIN_COLLECTIONS)
    rng.shuffle(pool)
    pretrain = []
    for index, piece in enumerate(pool[: 2 * pretrain_clips]):
        program, prompt = PRETRAIN_PROGRAMS[index % len(PRETRAIN_PROGRAMS)]
        pretrain.append((piece, program, prompt))
    return RenderPlan(attribution=attribution, pretrain=pretrain)


def _cached_render(cache: Path, piece: Piece, program: int) -> tuple[Path, str]:
    """Render once into `cache` and return (wav path, failure reason or "")."""
    key = hashlib.sha256(f"{piece.label}|{program}|{RENDER_MEASURES}".encode()).hexdigest()[:16]
    wav = cache / "wav" / f"{key}.wav"
    failed = cache / "failed" / f"{key}.txt"
    if wav.exists():
        return wav, ""
    if failed.exists():
        return wav, failed.read_text(encoding="utf-8")
    try:
        data = render_piece(piece, program)
    except Exception as error:  # noqa: BLE001 - music21 raises many unrelated types per file
        reason = f"could not parse or render {piece.label}: {type(error).__name__}: {error}"[:300]
        failed.parent.mkdir(parents=True, exist_ok=True)
        # Renamed into place, because an empty record left by a kill would read as rendered.
        temporary = failed.with_suffix(".tmp")
        temporary.write_text(reason, encoding="utf-8")
        temporary.replace(failed)
        log.warning("%s", reason)
        return wav, reason
    wav.parent.mkdir(parents=True, exist_ok=True)
    temporary = wav.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.replace(wav)
    return wav, ""


def _read_file(path: Path):
    return lambda: path.read_bytes() if path.exists() else b""


def embedded_sources(
    cache: Path, clips_per_genre: int, pretrain_clips: int, max_genres: int | None, seed: int = 0
) -> tuple[list[SourceFile], list[SourceFile], list[dict]]:
    """Render (or reuse) the embedded set; return attribution sources, pretraining sources and the split.

    The split lists every piece considered, where it went and whether it rendered, so a
    user can check which pieces trained the base model and which were used for attribution.
    """
    styles = STYLES[:max_genres] if max_genres else STYLES
    plan = plan_split(styles, clips_per_genre, pretrain_clips, seed)
    attribution: list[SourceFile] = []
    split: list[dict] = []
    for style in styles:
        for index, piece in enumerate(plan.attribution[style.genre]):
            wav, reason = _cached_render(cache, piece, style.program)
            split.append({"piece": piece.label, "role": "attribution", "genre": style.genre,
                          "program": style.program, "rendered": not reason, "reason": reason})
            if reason:
                continue
            attribution.append(SourceFile(
                genre=style.genre, name=f"{style.genre}.{index:05d}.wav", source_path=str(wav),
                read=_read_file(wav), origin=piece.label))
    pretrain: list[SourceFile] = []
    for index, (piece, program, prompt) in enumerate(plan.pretrain):
        wav, reason = _cached_render(cache, piece, program)
        split.append({"piece": piece.label, "role": "pretrain", "genre": prompt,
                      "program": program, "rendered": not reason, "reason": reason})
        if reason:
            continue
        pretrain.append(SourceFile(
            genre=prompt, name=f"pretrain.{index:05d}.wav", source_path=str(wav),
            read=_read_file(wav), origin=piece.label))
    return attribution, pretrain, split


def style_prompts() -> dict[str, str]:
    """Text prompt of every embedded genre."""
    return {style.genre: style.prompt for style in STYLES}


def write_split(split: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(split, indent=1), encoding="utf-8")
    temporary.replace(path)
