"""Synthetic speech with exact word boundaries, for tests, benchmarks and accuracy checks.

Speech comes from the espeak-ng C library (through ctypes), which reports the sample at which
it starts each word. Those reports are refined against the waveform itself: espeak-ng renders
pauses and stop closures as exact digital zeros, so

* a word starts at the first non-zero sample at or after its word event (a word-initial
  stop after a pause therefore starts at its burst, not at its silent closure, which no
  listener or recogniser can place), and
* a word ends after its last non-zero sample before the earliest of: the first pause phoneme
  after its last word event, the next word's event, the end of the audio.

Times are computed on espeak's own 22 050 Hz sample grid (exact to 1/22 050 s) and kept in
seconds; the audio is then resampled to 16 kHz with a zero-phase polyphase filter, which moves
no boundary (its ringing stays within 0.5 ms of a boundary).

Word truth is per input word token (whitespace-separated, surrounding punctuation removed).
Numbers and symbols must be spelled out ("nineteen ninety", not "1990"): espeak-ng expands them
into several spoken words whose reported text positions are unreliable, so a token with digits
or symbols is rejected instead of being given a wrong boundary.

Everything here is deterministic. espeak-ng carries hidden state from one utterance to the
next, so every utterance is spoken by a freshly loaded instance of the library (see below);
its output then depends only on text, voice and parameters. All other randomness (noise, the
choices in `long_speech`) comes from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

import _ctypes
import atexit
import bisect
import ctypes
import ctypes.util
import json
import math
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, resample_poly

from .errors import LightningAlignError

__all__ = [
    "DEFAULT_VOICES",
    "SENTENCES",
    "SAMPLE_TEXT",
    "Speech",
    "SynthesisError",
    "SynthesisInputError",
    "WordTruth",
    "concatenate",
    "espeak_version",
    "long_speech",
    "synthesize",
    "write_sample",
]

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
# 16000 / 22050 reduced: resample_poly needs the integer ratio.
_UP, _DOWN = 320, 441

_INSTALL_HINT = (
    "install it with `apt-get install espeak-ng libespeak-ng1` (Debian/Ubuntu) "
    "or `brew install espeak-ng` (macOS)"
)


class SynthesisError(LightningAlignError, RuntimeError):
    """espeak-ng is missing or failed, or its output cannot be turned into word truth."""


class SynthesisInputError(SynthesisError, ValueError):
    """`synthesize`, `concatenate` or `long_speech` was given text or options it cannot use."""


@dataclass(frozen=True)
class WordTruth:
    """One spoken word and where it is in the audio, in seconds from the start of the audio."""

    word: str
    start: float
    end: float


# eq=False: the generated __eq__ would compare numpy arrays element-wise and then fail on
# their ambiguous truth value; identity equality is the honest default for audio.
@dataclass(frozen=True, eq=False)
class Speech:
    """Synthetic speech and its true word boundaries.

    `audio` is float32 mono at `sample_rate` Hz (16 kHz); `words` are in spoken order with
    `start`/`end` in seconds from the first sample; `text` is what was spoken.
    """

    audio: np.ndarray
    words: tuple[WordTruth, ...]
    text: str
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        """Length of `audio` in seconds."""
        return len(self.audio) / self.sample_rate


# --------------------------------------------------------------------------------------------
# espeak-ng through ctypes
# --------------------------------------------------------------------------------------------
#
# espeak-ng keeps synthesis state in static variables that no API resets: the position in its
# pitch-flutter table, a cycle counter behind voice roughness, clause-level pause and
# intonation bookkeeping. Through them one utterance changes the samples (and even the pause
# lengths) of the next, so output would depend on everything spoken before in the process.
# Each utterance is therefore synthesised by a freshly loaded instance of the library, which
# is unloaded afterwards: about 25 ms per utterance, for output that depends only on the call.


# Layout of espeak_EVENT from speak_lib.h (API revision 12).
class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


# Layout of espeak_VOICE from speak_lib.h.
class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated name)* then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

_EV_LIST_TERMINATED = 0
_EV_WORD = 1
_EV_PHONEME = 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_EE_NOT_FOUND = 2
# Below espeak-ng's default of 100: at 100 loud vowels overflow 16 bits and espeak-ng's
# automatic gain control squashes them; this also leaves headroom for added noise.
_VOLUME = 60
_P_RATE, _P_VOLUME, _P_PITCH, _P_RANGE, _P_PUNCTUATION, _P_CAPITALS, _P_WORDGAP = (
    1, 2, 3, 4, 5, 6, 7,
)
_LIBRARY_NAMES = (
    "libespeak-ng.so.1",
    "libespeak-ng.so",
    "libespeak-ng.1.dylib",
    "libespeak-ng.dylib",
    "/opt/homebrew/lib/libespeak-ng.dylib",
    "/usr/local/lib/libespeak-ng.dylib",
)


@dataclass
class _Raw:
    """One espeak_Synth call: int16 samples at 22 050 Hz and the events, in samples."""

    samples: np.ndarray
    words: list[tuple[int, int, int]]  # (0-based character offset, length, sample)
    pauses: list[int]  # samples of pause phonemes ("_", "_:", "_!" ...)


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p


def _mapped_espeak() -> list[str]:
    """Paths of libespeak-ng files mapped into this process (Linux; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            fields = [line.split(None, 5) for line in maps if "libespeak-ng" in line]
    except OSError:
        return []
    return sorted({f[5].strip() for f in fields if len(f) == 6})


def _already_loaded(name: str) -> bool:
    """Whether `name` is loaded in this process already (cheap: dlopen with RTLD_NOLOAD)."""
    if not hasattr(os, "RTLD_NOLOAD"):
        return False
    try:
        probe = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return False
    _dlclose(probe._handle)
    return True


def _dlclose(handle: int) -> None:
    if hasattr(_ctypes, "dlclose"):
        _ctypes.dlclose(handle)
    elif hasattr(_ctypes, "FreeLibrary"):  # Windows
        _ctypes.FreeLibrary(handle)


class _Library:
    """Finds libespeak-ng and hands out fresh, initialised instances of it."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._private: str | None = None
        self._voices: dict[str, str] | None = None
        self._variants = ""  # espeak-ng's directory of voice variants

    def _locate(self) -> str:
        names = list(_LIBRARY_NAMES)
        found = ctypes.util.find_library("espeak-ng")
        if found:
            names.append(found)
        for name in names:
            try:
                probe = ctypes.CDLL(name)
            except OSError:
                continue
            _dlclose(probe._handle)
            return name
        raise SynthesisError(
            f"the espeak-ng shared library (libespeak-ng) was not found; {_INSTALL_HINT}"
        )

    def _fresh_path(self) -> str:
        if self._private is not None:
            return self._private
        if self._name is None:
            self._name = self._locate()
        if not _already_loaded(self._name):
            return self._name
        mapped = _mapped_espeak()
        if not mapped:
            return self._name  # cannot find the file to copy; output may then depend on history
        # Something else in this process holds libespeak-ng, so unloading ours would not
        # reset it. A copy under another path is a separate library to the dynamic loader.
        directory = tempfile.mkdtemp(prefix="lightning_align_espeak_")
        owner = os.getpid()
        atexit.register(
            lambda: os.getpid() == owner and shutil.rmtree(directory, ignore_errors=True)
        )
        self._private = os.path.join(directory, "libespeak-ng.so")
        shutil.copyfile(mapped[0], self._private)
        return self._private

    def open(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(self._fresh_path())
        _declare(lib)
        # Long buffers: fewer Python callbacks; the events carry exact sample numbers anyway.
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 1000, None, _INITIALIZE_PHONEME_EVENTS
        )
        if rate != ESPEAK_RATE:
            self.close(lib)
            raise SynthesisError(
                f"espeak-ng failed to initialise (espeak_Initialize returned {rate}, "
                f"expected the sample rate {ESPEAK_RATE}); its data files may be missing: "
                f"{_INSTALL_HINT}"
            )
        return lib

    @staticmethod
    def close(lib: ctypes.CDLL) -> None:
        lib.espeak_Terminate()
        _dlclose(lib._handle)

    def voice_name(self, lib: ctypes.CDLL, voice: str) -> str | None:
        """The name espeak_SetVoiceByName accepts for `voice`, or None if there is none.

        That function matches voice file names only ("en" is British English there); users
        write language tags such as "en-gb", as the espeak-ng command line accepts, so those
        map to the file of the language's preferred voice. A "+variant" suffix is kept."""
        if self._voices is None:
            self._voices = _voice_table(lib)
            data = ctypes.c_char_p()
            lib.espeak_Info(ctypes.byref(data))
            self._variants = os.path.join((data.value or b"").decode(), "voices", "!v")
        base, plus, variant = voice.partition("+")
        identifier = self._voices.get(base.lower())
        if identifier is None:
            return None
        # espeak-ng ignores an unknown variant silently; a typo should not pass unnoticed.
        if variant and os.path.isdir(self._variants) and not os.path.isfile(
            os.path.join(self._variants, variant)
        ):
            return None
        return identifier + plus + variant


def _voice_table(lib: ctypes.CDLL) -> dict[str, str]:
    """Lower-case voice file name, file path or language tag -> voice identifier
    ("gmw/en-US"). mbrola voices are left out: they need separate packages."""
    by_language: dict[str, tuple[int, str]] = {}
    by_file: dict[str, str] = {}
    table = lib.espeak_ListVoices(None)
    i = 0
    while table[i]:
        voice = table[i].contents
        i += 1
        identifier = (voice.identifier or b"").decode()
        if not identifier or identifier.startswith("mb/"):
            continue
        by_file[identifier.lower()] = identifier
        by_file.setdefault(identifier.rsplit("/", 1)[-1].lower(), identifier)
        at = voice.languages
        while at:
            priority = ctypes.c_ubyte.from_address(at).value
            if priority == 0:
                break
            language = ctypes.string_at(at + 1).decode().lower()
            at += 2 + len(language)
            if language not in by_language or priority < by_language[language][0]:
                by_language[language] = (priority, identifier)
    result = {language: ident for language, (_, ident) in by_language.items()}
    result.update(by_file)
    return result


class _Collector:
    """The synthesis callback: gathers audio and word and pause events."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.words: list[tuple[int, int, int]] = []
        self.pauses: list[int] = []
        self.error: BaseException | None = None
        self.callback = _CALLBACK(self._on_synth)

    def _on_synth(self, wav, n_samples, events) -> int:
        try:
            i = 0
            while True:
                event = events[i]
                kind = event.type
                if kind == _EV_LIST_TERMINATED:
                    break
                if kind == _EV_WORD:
                    # text_position counts characters (not UTF-8 bytes), from 1.
                    self.words.append((event.text_position - 1, event.length, event.sample))
                elif kind == _EV_PHONEME and event.id.string[:1] == b"_":
                    self.pauses.append(event.sample)
                i += 1
            if wav and n_samples > 0:
                self.chunks.append(ctypes.string_at(wav, 2 * n_samples))
            return 0
        except BaseException as exc:  # an exception must not unwind through C
            self.error = exc
            return 1


def _seed_libc_rand() -> None:
    """Breath noise (variants f2, f3, f5, whisper, ...) and the Klatt voices draw from the C
    library's rand(), whose state is process-wide; seeding it makes them repeatable too."""
    try:
        libc = ctypes.CDLL(None)
        libc.srand.argtypes = [ctypes.c_uint]
        libc.srand(1)
    except (OSError, AttributeError, TypeError):
        pass  # no libc symbols to seed (e.g. Windows): such voices are not repeatable


_LOCK = threading.Lock()  # espeak-ng is not re-entrant, and loading it is process-wide
_LIBRARY = _Library()


def espeak_version() -> str:
    """Version of the espeak-ng library in use, e.g. "1.51". Output (and so word truth)
    can differ between versions; record it next to any stored synthetic audio."""
    with _LOCK:
        lib = _LIBRARY.open()
        try:
            return (lib.espeak_Info(None) or b"").decode()
        finally:
            _LIBRARY.close(lib)


def _synth_raw(text: str, voice: str, rate_wpm: int, pitch: int, word_gap: int) -> _Raw:
    with _LOCK:
        lib = _LIBRARY.open()
        try:
            name = _LIBRARY.voice_name(lib, voice)
            status = _EE_NOT_FOUND if name is None else lib.espeak_SetVoiceByName(name.encode())
            if status == _EE_NOT_FOUND:
                raise SynthesisInputError(
                    f"espeak-ng has no voice {voice!r}; list voices with "
                    "`espeak-ng --voices=en` and variants with `espeak-ng --voices=variant` "
                    "(a variant is added as 'en-us+f1')"
                )
            if status != _EE_OK:
                raise SynthesisError(f"espeak-ng could not load voice {voice!r} (error {status})")
            for parameter, value in (
                (_P_RATE, rate_wpm),
                (_P_VOLUME, _VOLUME),
                (_P_PITCH, pitch),
                (_P_RANGE, 50),
                (_P_PUNCTUATION, 0),
                (_P_CAPITALS, 0),
                (_P_WORDGAP, word_gap),
            ):
                lib.espeak_SetParameter(parameter, value, 0)
            collector = _Collector()
            lib.espeak_SetSynthCallback(collector.callback)
            _seed_libc_rand()
            data = text.encode("utf-8") + b"\0"
            status = lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            lib.espeak_Synchronize()
        finally:
            _LIBRARY.close(lib)
    if collector.error is not None:
        raise SynthesisError(f"espeak-ng callback failed: {collector.error!r}") from collector.error
    if status != _EE_OK:
        raise SynthesisError(f"espeak_Synth failed with error {status} for text {text!r}")
    return _Raw(
        np.frombuffer(b"".join(collector.chunks), dtype=np.int16),
        collector.words,
        collector.pauses,
    )


# --------------------------------------------------------------------------------------------
# Text -> word tokens
# --------------------------------------------------------------------------------------------

# Punctuation espeak-ng does not speak (with punctuation reading off); stripped from token ends.
_SILENT_PUNCT = ".,;:!?\"'()[]{}\u2026\u2014\u2013-\u201c\u201d\u2018\u2019\u00ab\u00bb\u00a1\u00bf"
# Letters, optionally joined by apostrophes, hyphens or periods ("keeper's", "well-known").
_WORD_RE = re.compile(r"[^\W\d_]+(?:['\u2019.\-][^\W\d_]+)*")


@dataclass
class _Token:
    start: int  # character offsets in the text
    end: int
    word: str  # "" for a punctuation-only token, which is not a word


def _tokens(text: str) -> list[_Token]:
    tokens = []
    for match in re.finditer(r"\S+", text):
        word = match.group().strip(_SILENT_PUNCT)
        if word and not _WORD_RE.fullmatch(word):
            raise SynthesisInputError(
                f"cannot give exact word truth for {match.group()!r} in {text!r}: espeak-ng "
                "expands digits and symbols into several words at unreliable positions; "
                "spell it out in letters (e.g. '1990' -> 'nineteen ninety', '&' -> 'and')"
            )
        tokens.append(_Token(match.start(), match.end(), word))
    return tokens


def _espeak_text(tokens: list[_Token], text: str) -> tuple[str, list[_Token]]:
    """`text` with a zero-width space before every token but the first, and the tokens'
    offsets in that string.

    espeak-ng's dictionary joins common word pairs ("in the", "there were", "for a") into
    one pronunciation with a single word event, which would leave the second word without a
    boundary. A zero-width space between the words stops that lookup and is not spoken;
    such pairs are then pronounced word by word, like any pair not in espeak-ng's list."""
    pieces: list[str] = []
    shifted: list[_Token] = []
    length = 0
    previous_end = 0
    for i, token in enumerate(tokens):
        gap = text[previous_end : token.start] + ("\u200b" if i else "")
        pieces.append(gap)
        length += len(gap)
        pieces.append(text[token.start : token.end])
        shifted.append(_Token(length, length + token.end - token.start, token.word))
        length += token.end - token.start
        previous_end = token.end
    pieces.append(text[previous_end:])
    return "".join(pieces), shifted


def _word_samples(tokens: list[_Token], raw: _Raw, text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) in espeak samples (end exclusive), one per word token; `tokens`
    carry their offsets in the text espeak-ng spoke, `text` is for error messages."""
    starts = [t.start for t in tokens]
    events: list[list[int]] = [[] for _ in tokens]
    for offset, length, sample in raw.words:
        if length <= 0:  # espeak emits a zero-length word event at the end of a message
            continue
        i = bisect.bisect_right(starts, offset) - 1
        if i < 0 or offset >= tokens[i].end:  # event in whitespace: it belongs to what follows
            i += 1
        if i < len(tokens):
            events[i].append(sample)

    x = raw.samples
    n = len(x)
    voiced = np.flatnonzero(x)
    pauses = sorted(raw.pauses)
    spoken = [(t, sorted(e)) for t, e in zip(tokens, events) if e]
    for token, ev in zip(tokens, events):
        if token.word and not ev:
            raise SynthesisError(
                f"espeak-ng reported no word event for {token.word!r} in {text!r}, so its "
                "boundaries are unknown; rephrase the text (plain words, spelled out)"
            )
    result = []
    for k, (token, ev) in enumerate(spoken):
        next_start = spoken[k + 1][1][0] if k + 1 < len(spoken) else n
        if next_start < ev[-1]:
            raise SynthesisError(
                f"espeak-ng spoke the words of {text!r} out of text order near {token.word!r}; "
                "rephrase the text"
            )
        p = bisect.bisect_right(pauses, ev[-1])
        bound = min(next_start, pauses[p] if p < len(pauses) else n, n)
        if not token.word:
            continue
        # Non-zero samples in [ev[0], bound): the word's own sound, without silent closures.
        lo = bisect.bisect_left(voiced, ev[0])
        hi = bisect.bisect_left(voiced, bound)
        if hi <= lo:
            raise SynthesisError(f"espeak-ng produced no sound for {token.word!r} in {text!r}")
        result.append((token.word, int(voiced[lo]), int(voiced[hi - 1]) + 1))
    return result


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:  # also rejects NaN
        raise SynthesisInputError(f"{name}={value!r} is outside [{lo}, {hi}]")


# J. O. Smith's 3-pole/3-zero pink filter: 1/f power within about 0.3 dB over three and a
# half decades. Cheaper than FFT shaping, which needs over a gigabyte for an hour of audio.
_PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
_PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)
_PINK_WARMUP = 4096  # samples dropped while the filter's slowest pole settles


def _noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    if color == "white":
        return rng.standard_normal(n)
    return lfilter(_PINK_B, _PINK_A, rng.standard_normal(n + _PINK_WARMUP))[_PINK_WARMUP:]


def _add_noise(
    audio: np.ndarray, words: Sequence[WordTruth], snr_db: float, color: str, seed: int,
    sample_rate: int,
) -> np.ndarray:
    # Speech power is measured over the speech span (first word start to last word end), so
    # lead-in and tail silence do not make the noise quieter than asked for.
    a = max(0, int(words[0].start * sample_rate))
    b = min(len(audio), int(math.ceil(words[-1].end * sample_rate)))
    signal_power = float(np.mean(np.square(audio[a:b], dtype=np.float64)))
    noise = _noise(len(audio), color, np.random.default_rng(seed))
    noise -= noise.mean()
    # Scaled to its exact measured power, so the realised SNR equals the requested one.
    noise *= math.sqrt(signal_power / 10.0 ** (snr_db / 10.0) / np.mean(np.square(noise)))
    return (audio.astype(np.float64) + noise).astype(np.float32)


def synthesize(
    text: str,
    *,
    voice: str = "en-us",
    rate_wpm: int = 175,
    pitch: int = 50,
    word_gap_ms: int = 0,
    lead_in_s: float = 0.0,
    tail_s: float = 0.0,
    noise_snr_db: float | None = None,
    noise: str = "white",
    seed: int = 0,
) -> Speech:
    """Speak `text` with espeak-ng and return 16 kHz audio with its exact word boundaries.

    Args:
        text: plain English words; numbers and symbols spelled out in letters. Punctuation
            shapes the prosody (pauses at commas and full stops) and is not spoken.
        voice: espeak-ng voice or language, optionally with a variant ("en-us", "en-gb",
            "en-us+f1"). Variants with echo or breath noise (f2-f5, m2, whisper, ...) fill
            pauses with sound, so their word starts stay at espeak-ng's word events (a
            word-initial stop then starts at its silent closure); `DEFAULT_VOICES` avoids them.
        rate_wpm: speaking rate in words per minute, 80 to 450.
        pitch: espeak-ng base pitch, 0 to 100.
        word_gap_ms: extra silence between words in milliseconds (espeak-ng's nominal value,
            applied in 10 ms steps and scaled with the rate); 0 for connected speech.
        lead_in_s: silence before the first word, in seconds (rounded to whole samples).
        tail_s: silence after the last word, in seconds (rounded to whole samples).
        noise_snr_db: add noise at this signal-to-noise ratio in dB (speech power measured
            from the first word's start to the last word's end); None for clean audio.
        noise: "white" or "pink".
        seed: seeds the noise; espeak-ng itself is deterministic.

    Returns:
        `Speech` whose audio holds exactly `lead_in_s` of silence, the speech (which starts
        with the first word's first non-zero sample and ends with the last word's last one)
        and `tail_s` of silence; word times in seconds from the first sample.
    """
    if not isinstance(text, str) or not text.strip():
        raise SynthesisInputError(f"text must be a non-empty string, got {text!r}")
    _check_range("rate_wpm", rate_wpm, 80, 450)
    _check_range("pitch", pitch, 0, 100)
    _check_range("word_gap_ms", word_gap_ms, 0, 10_000)
    _check_range("lead_in_s", lead_in_s, 0.0, 3600.0)
    _check_range("tail_s", tail_s, 0.0, 3600.0)
    if noise not in ("white", "pink"):
        raise SynthesisInputError(f"noise={noise!r}: use 'white' or 'pink'")
    if noise_snr_db is not None:
        _check_range("noise_snr_db", noise_snr_db, -50.0, 100.0)

    spoken_text, tokens = _espeak_text(_tokens(text), text)
    raw = _synth_raw(spoken_text, voice, int(rate_wpm), int(pitch), int(round(word_gap_ms / 10)))
    spans = _word_samples(tokens, raw, text)
    if not spans:
        raise SynthesisInputError(f"text {text!r} contains no words")
    first, last = spans[0][1], spans[-1][2]
    clean = raw.samples[first:last].astype(np.float64) / 32768.0
    speech = resample_poly(clean, _UP, _DOWN)

    lead = int(round(lead_in_s * SAMPLE_RATE))
    tail = int(round(tail_s * SAMPLE_RATE))
    audio = np.zeros(lead + len(speech) + tail, dtype=np.float32)
    audio[lead : lead + len(speech)] = speech
    # Times come from the 22 050 Hz grid; the shift is the lead-in actually inserted.
    shift = lead / SAMPLE_RATE
    words = tuple(
        WordTruth(w, shift + (s - first) / ESPEAK_RATE, shift + (e - first) / ESPEAK_RATE)
        for w, s, e in spans
    )
    if noise_snr_db is not None:
        audio = _add_noise(audio, words, noise_snr_db, noise, seed, SAMPLE_RATE)
    return Speech(audio=audio, words=words, text=text)


def concatenate(parts: Sequence[Speech], gaps_s: Sequence[float] | float) -> Speech:
    """Join utterances with silent pauses between them, shifting their word times.

    Args:
        parts: the utterances, all at the same sample rate.
        gaps_s: pause after each part but the last, in seconds (rounded to whole samples):
            one number for all, or `len(parts) - 1` numbers.

    Returns:
        One `Speech`; its text is the parts' texts joined by spaces.
    """
    parts = list(parts)
    if not parts:
        raise SynthesisInputError("concatenate needs at least one Speech")
    if isinstance(gaps_s, (int, float)):
        gaps = [float(gaps_s)] * (len(parts) - 1)
    else:
        gaps = [float(g) for g in gaps_s]
        if len(gaps) != len(parts) - 1:
            raise SynthesisInputError(
                f"gaps_s has {len(gaps)} values for {len(parts)} parts; give "
                f"{len(parts) - 1} (one per pause) or a single number"
            )
    for g in gaps:
        _check_range("gap", g, 0.0, 3600.0)
    rate = parts[0].sample_rate
    if any(p.sample_rate != rate for p in parts):
        raise SynthesisInputError(
            f"parts have different sample rates {sorted({p.sample_rate for p in parts})}"
        )
    gap_samples = [int(round(g * rate)) for g in gaps] + [0]
    total = sum(len(p.audio) for p in parts) + sum(gap_samples)
    audio = np.zeros(total, dtype=np.float32)
    words: list[WordTruth] = []
    offset = 0
    for part, gap in zip(parts, gap_samples):
        audio[offset : offset + len(part.audio)] = part.audio
        shift = offset / rate
        words.extend(WordTruth(w.word, w.start + shift, w.end + shift) for w in part.words)
        offset += len(part.audio) + gap
    return Speech(
        audio=audio, words=tuple(words), text=" ".join(p.text for p in parts), sample_rate=rate
    )


# Voices that render pauses as exact digital zeros and add no echo or random breath noise
# (variants f2-f5 and m2 have echo, which would blur the word ends).
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-us+f1",
    "en-gb-x-rp",
    "en-029",
    "en-gb-scotland",
    "en-us+m3",
    "en-gb+f1",
)


def long_speech(
    duration_s: float,
    *,
    seed: int = 0,
    voices: Sequence[str] = DEFAULT_VOICES,
    rate_wpm: tuple[int, int] = (145, 205),
    pitch: tuple[int, int] = (35, 65),
    pause_s: tuple[float, float] = (0.2, 2.5),
    sentences: Sequence[str] | None = None,
    noise_snr_db: float | None = None,
    noise: str = "white",
) -> Speech:
    """A deterministic recording of at least `duration_s` seconds of varied speech.

    Sentences (from `SENTENCES`, each used once per shuffled round) are spoken one by one
    with a voice, rate (words per minute) and pitch drawn at random, separated by pauses
    drawn from `pause_s` (seconds; about a third of them longer than one second where the
    range allows). The recording starts with a pause from the same range and ends with
    0.5 s of silence. Same arguments, same result.

    Args:
        duration_s: minimum length in seconds; the last sentence is finished, so the result
            is longer by up to one sentence.
        seed: seeds every choice and the noise.
        voices: espeak-ng voices to draw from.
        rate_wpm: (min, max) speaking rate in words per minute, inclusive.
        pitch: (min, max) espeak-ng pitch, inclusive.
        pause_s: (min, max) pause between sentences in seconds.
        sentences: texts to draw from instead of `SENTENCES`.
        noise_snr_db: noise over the whole recording at this SNR in dB; None for clean.
        noise: "white" or "pink".
    """
    _check_range("duration_s", duration_s, 0.0, 24 * 3600.0)
    lo_p, hi_p = pause_s
    if not 0.0 <= lo_p <= hi_p:
        raise SynthesisInputError(f"pause_s={pause_s!r} must be (min, max) with 0 <= min <= max")
    if noise not in ("white", "pink"):
        raise SynthesisInputError(f"noise={noise!r}: use 'white' or 'pink'")
    voices = list(voices)
    pool = list(SENTENCES if sentences is None else sentences)
    if not voices or not pool:
        raise SynthesisInputError("long_speech needs at least one voice and one sentence")
    rng = np.random.default_rng(seed)
    tail_s = 0.5

    def pause() -> float:
        # Mostly short pauses, with a share of long ones so that > 1 s silences are covered.
        if hi_p > 1.0 and lo_p < 1.0:
            if rng.random() < 1 / 3:
                return float(rng.uniform(1.0, hi_p))
            return float(rng.uniform(lo_p, 1.0))
        return float(rng.uniform(lo_p, hi_p))

    lead_in = pause()
    parts: list[Speech] = []
    gaps: list[float] = []
    total = lead_in + tail_s
    order: list[int] = []
    while not parts or total < duration_s:
        if not order:
            order = list(rng.permutation(len(pool)))
        text = pool[order.pop()]
        part = synthesize(
            text,
            voice=voices[int(rng.integers(len(voices)))],
            rate_wpm=int(rng.integers(rate_wpm[0], rate_wpm[1] + 1)),
            pitch=int(rng.integers(pitch[0], pitch[1] + 1)),
        )
        if parts:
            gaps.append(pause())
            total += gaps[-1]
        parts.append(part)
        total += part.duration
    joined = concatenate(parts, gaps)
    head = np.zeros(int(round(lead_in * SAMPLE_RATE)), dtype=np.float32)
    end = np.zeros(int(round(tail_s * SAMPLE_RATE)), dtype=np.float32)
    shift = len(head) / SAMPLE_RATE
    audio = np.concatenate([head, joined.audio, end])
    words = tuple(WordTruth(w.word, w.start + shift, w.end + shift) for w in joined.words)
    if noise_snr_db is not None:
        audio = _add_noise(audio, words, noise_snr_db, noise, seed, SAMPLE_RATE)
    return Speech(audio=audio, words=words, text=joined.text)


SAMPLE_TEXT = (
    "The old lighthouse keeper climbed the narrow stairs every evening before sunset. "
    "He polished the great lamp and watched the fishing boats return to the harbor. "
    "Nobody remembered a night when the light had failed."
)


def write_sample(path_wav: str | Path, path_json: str | Path) -> Speech:
    """Write the bundled sample clip: `SAMPLE_TEXT` in voice en-us as 16 kHz mono PCM16 WAV,
    and a JSON file with its text and true word boundaries (seconds)."""
    speech = synthesize(SAMPLE_TEXT, voice="en-us", lead_in_s=0.3, tail_s=0.4)
    sf.write(str(path_wav), speech.audio, speech.sample_rate, subtype="PCM_16")
    record = {
        "text": speech.text,
        "espeak_ng_version": espeak_version(),
        "voice": "en-us",
        "rate_wpm": 175,
        "lead_in_s": 0.3,
        "tail_s": 0.4,
        "sample_rate": speech.sample_rate,
        "duration": speech.duration,
        "words": [{"word": w.word, "start": w.start, "end": w.end} for w in speech.words],
    }
    Path(path_json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return speech


# Built-in texts for `long_speech`: plain words, numbers spelled out, names, questions,
# short and long sentences.
SENTENCES: tuple[str, ...] = (
    "The old lighthouse keeper climbed the narrow stairs every evening.",
    "Good morning.",
    "Could you pass me the salt, please?",
    "Margaret and Oliver drove to the coast on a cold Sunday in November.",
    "There were twenty seven boats in the harbor that night.",
    "Why did the train leave so early this morning?",
    "The committee will meet again on the fourth of March at half past nine.",
    "I honestly don't know.",
    "After the storm had passed, the children ran outside to look for shells along the beach, "
    "and their grandmother followed them slowly with a basket.",
    "Nineteen ninety was the year the bridge finally opened to traffic.",
    "Is this the road to Cambridge?",
    "Please remember to lock the back door before you go to bed.",
    "Samuel Johnson wrote a dictionary of the English language.",
    "The recipe calls for two cups of flour, three eggs, and a pinch of salt.",
    "Where have you been all afternoon?",
    "Absolutely not.",
    "The library closes at six o'clock on weekdays and at noon on Saturdays.",
    "Professor Chen explained the experiment twice, but most of the students were still "
    "confused about the second step.",
    "A quiet river runs behind the village school.",
    "How many languages do you speak?",
    "The price went up by fifteen percent in a single year.",
    "Eleanor painted the kitchen a pale shade of yellow.",
    "We should probably leave before the traffic gets worse.",
    "Thank you very much for your help yesterday.",
    "On the third day of the journey, the travellers reached a wide valley full of orchards, "
    "where farmers were already picking the first apples of the season.",
    "Do you think it will rain tomorrow?",
    "The museum owns more than four thousand paintings.",
    "Rajesh finished the marathon in three hours and twelve minutes.",
    "Turn left at the bakery and walk straight on for about two hundred metres.",
    "Nobody answered the telephone.",
    "The scientists measured the temperature of the lake every hour for a week.",
    "What time does the concert start?",
    "My brother collects old maps of Scotland and Ireland.",
    "Yes, of course.",
    "The new software update fixed the problem with the printer.",
    "She was born in London in nineteen eighty four and moved to Toronto as a child.",
    "Can you hear the birds singing in the garden?",
    "The kettle whistled loudly in the empty kitchen.",
    "Every Tuesday, the farmers bring fresh vegetables, cheese and honey to the market square.",
    "It is exactly eleven minutes past seven.",
    "Which of these two jackets do you prefer?",
    "Daniel forgot his umbrella on the bus again.",
    "The mountain path was steep, rocky and covered with loose stones.",
    "Let's meet at the station.",
    "According to the report, sales in the northern region grew faster than anyone had "
    "expected, while the southern offices struggled to keep up with demand.",
    "Have you ever seen the northern lights?",
    "Sophie plays the violin in the city orchestra.",
    "The ship carried one hundred and forty passengers across the Atlantic.",
    "Please speak a little more slowly.",
    "Water boils at one hundred degrees at sea level.",
    "Who left the window open?",
    "The little dog barked at every car that drove past the house.",
    "Mister Patel has worked at the hospital for almost thirty years.",
    "The meeting was cancelled because of the snow.",
    "Would you like tea or coffee?",
    "In the spring, the hills behind the farm turn bright green, and the lambs play in the "
    "fields until it gets dark.",
    "Fantastic!",
    "The bookshop on the corner sells secondhand novels for two pounds each.",
    "Where exactly did you put the keys?",
    "Isabella and Tom are getting married in the summer.",
    "The final score was three goals to one.",
    "A gentle breeze carried the smell of fresh bread down the street.",
)
