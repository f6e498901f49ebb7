"""Write the speed section of docs/benchmarks.md (and its plot) from measured JSON lines.

    python -m bench.report [bench/results/*.jsonl ...]

Inputs are the files `python -m bench.throughput --out FILE` writes (GPU and CPU runs alike).
Every table groups rows by (machine, audio length) and gives realtime factors (audio seconds
per wall second) and ratios to the peers measured in the same file, i.e. on the same machine in
the same session. Only the block between `<!-- speed:begin -->` and `<!-- speed:end -->` is
rewritten.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
PLOT = DOC.parent / "speed.png"


def load(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                row["file"] = Path(path).name
                rows.append(row)
    return rows


def best(rows: list[dict]) -> dict[tuple, dict]:
    """Fastest row per (file, audio length, system, batch size), with the number of runs and
    their median wall time added (`runs`, `median_wall_s`): GPU runs vary by +-15 %."""
    out: dict[tuple, dict] = {}
    walls: dict[tuple, list[float]] = defaultdict(list)
    rounds: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    for r in rows:
        key = (r["file"], r["audio_s"], r["system"], r.get("batch_size"), str(r.get("window_s", "")))
        walls[key].append(r["wall_s"])
        if "round" in r:
            rounds[key][(r.get("invocation"), r["round"])] = r["wall_s"]
        if key not in out or r["rtf"] > out[key]["rtf"]:
            out[key] = r
    return {key: {**r, "runs": len(walls[key]), "median_wall_s": statistics.median(walls[key]),
                  "round_walls": rounds.get(key, {})}
            for key, r in out.items()}


def session(file: str) -> tuple[str, int]:
    """(machine, session number) of a results file named MACHINE-N[-what].jsonl, e.g.
    gpu-h200-31-base.jsonl -> ("gpu-h200", 31); files without a number count as session 0."""
    m = re.match(r"(.+?)-(\d+)(?:-|\.)", file)
    return (m.group(1), int(m.group(2))) if m else (file.split(".")[0], 0)


def model_of(file: str) -> str:
    """The weights a file measured: tiny.en unless its name says base."""
    return "base" if re.search(r"-base(?:-|\.)", file) else "tiny.en"


def summary(rows: list[dict]) -> str:
    """A table of the figures the goals are judged on: one line per file and audio length of
    each machine's newest session that ran lightning beside mlx-whisper, the paired ratios next
    to fastest against fastest."""
    newest = newest_sessions(rows)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in best(rows).values():
        machine, n = session(r["file"])
        if n == newest[machine]:
            groups[(machine, r["file"], r["audio_s"])].append(r)
    with_peer = {file for (_, file, _), group in groups.items()
                 if any(r["system"] == "mlx-whisper" for r in group)}
    lines = ["| machine | model | audio | lightning x realtime (fastest; median) | mlx-whisper x realtime "
             "| lightning vs mlx-whisper (fastest vs fastest; paired by round) | words over "
             "segment-only (paired by round) | WER lightning / mlx-whisper | file |",
             "|---|---|---|---|---|---|---|---|---|"]
    rank = _machine_rank(rows)
    for (machine, file, audio_s), group in sorted(groups.items(), key=lambda kv: (
            rank[kv[0][0]], model_of(kv[0][1]) != "tiny.en", kv[0][1:])):
        ours = max((r for r in group if r["system"] == "lightning"), key=lambda r: r["rtf"], default=None)
        if ours is None or file not in with_peer:
            continue
        same = {r["system"]: r for r in group
                if (r.get("batch_size"), _window(r)) in ((ours.get("batch_size"), _window(ours)), (None, ""))}
        peer, words = same.get("mlx-whisper"), same.get("lightning+words")
        peer_rtf = vs = "not run at this length"
        if peer:
            peer_rtf, vs = f"{peer['rtf']:.0f}", f"{ours['rtf'] / peer['rtf']:.1f}x"
            paired = paired_ratios(peer["round_walls"], ours["round_walls"])
            if paired:
                vs += (f"; {statistics.median(paired):.1f}x ({min(paired):.1f}-{max(paired):.1f}x, "
                       f"{_rounds(len(paired))})")
        overhead = ""
        if words:
            paired = paired_ratios(words["round_walls"], ours["round_walls"])
            overhead = (f"{_signed(statistics.median(paired))} ({_signed(min(paired))} to "
                        f"{_signed(max(paired))}, {_rounds(len(paired))})" if paired
                        else f"{_signed(words['wall_s'] / ours['wall_s'])} (fastest vs fastest)")
        wer = " / ".join(f"{100 * r['wer']:.1f} %" if r and "wer" in r else "-" for r in (ours, peer))
        lines.append(f"| {ours.get('gpu') or 'CPU (' + machine + ')'} | {model_of(file)} | "
                     f"{audio_s / 60:.1f} min | {ours['rtf']:.0f}; {audio_s / ours['median_wall_s']:.0f} | "
                     f"{peer_rtf} | {vs} | {overhead} | {wer} | {file} |")
    return "\n".join(lines)


def _machine_rank(rows: list[dict]) -> dict[str, int]:
    """Machines ordered by their newest measurement, newest first."""
    last: dict[str, float] = defaultdict(float)
    for r in rows:
        last[session(r["file"])[0]] = max(last[session(r["file"])[0]], r.get("time", 0.0))
    return {m: i for i, m in enumerate(sorted(last, key=lambda m: -last[m]))}


def _rounds(n: int) -> str:
    return f"{n} round" + ("s" if n != 1 else "")


def _signed(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.0f} %"


def tables(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in best(rows).values():
        groups[(r["file"], r["audio_s"])].append(r)
    lines = []
    # Machines by their newest measurement, each one's newest session first; within a session,
    # files and audio lengths in name order.
    rank = _machine_rank(rows)
    for (file, audio_s), group in sorted(groups.items(), key=lambda kv: (
            rank[session(kv[0][0])[0]], -session(kv[0][0])[1], kv[0][0], kv[0][1])):
        machine = group[0].get("gpu") or group[0].get("cpu") or "?"
        peers = {r["system"]: r["rtf"] for r in group if not r["system"].startswith("lightning")}
        lines += [f"#### {file}: {audio_s:.0f} s of speech, {machine} ({group[0].get('device', '?')}, "
                  f"MLX {group[0].get('mlx', '?')})", "",
                  "| system | batch | wall s | runs: median wall s | x realtime | vs mlx-whisper | vs openai-whisper | words | WER |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(group, key=lambda r: (r["system"], r.get("batch_size") or 0, _window(r))):
            words = r["system"].endswith("+words")
            mw = peers.get("mlx-whisper+words" if words else "mlx-whisper")
            ow = peers.get("openai-whisper+words" if words else "openai-whisper")
            vs_mw = f"{r['rtf'] / mw:.1f}x" if mw else ""
            vs_ow = f"{r['rtf'] / ow:.1f}x" if ow else ""
            wer = f"{100 * r['wer']:.1f} %" if "wer" in r else ""
            lines.append(f"| {r['system']} | {_batch_label(r)} | {r['wall_s']:.2f} | "
                         f"{r['runs']}: {r['median_wall_s']:.2f} | "
                         f"{r['rtf']:.1f} | {vs_mw} | {vs_ow} | {r['words']} | {wer} |")
        overhead = _overheads(group)
        if overhead:
            lines += ["", "Word-timestamp overhead (fastest run with words / without, same batch; "
                      "runs made in interleaved rounds are also paired round by round): "
                      + "; ".join(overhead)]
        lines.append("")
    return "\n".join(lines)


def _window(r: dict) -> str:
    return str(r.get("window_s", ""))


def _batch_label(r: dict) -> str:
    """Batch size, and the window cap where it is not the default 30 s ("shortened": windows
    cut to fill the batch, an experiment measured slower and not kept)."""
    label = str(r.get("batch_size") or "")
    w = _window(r)
    return label + (f", windows {w}" if w not in ("", "30", "30.0", "auto") else "")


def _overheads(group: list[dict]) -> list[str]:
    by = {(r["system"], r.get("batch_size"), _window(r)): r for r in group}
    out = []
    for (system, batch, window), r in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])):
        if system.endswith("+words"):
            base = by.get((system[: -len("+words")], batch, window))
            if base:
                name = _batch_label({"batch_size": batch, "window_s": window})
                name = system[: -len("+words")] + (f" b={name}" if name else "")
                line = f"{name} {_pct(r, base)}"
                capture = by.get((system[: -len("+words")] + "+capture", batch, window))
                if capture:  # words need the capture: show what each of the two costs
                    line += f": capture {_pct(capture, base)}, words over capture {_pct(r, capture)}"
                out.append(line)
    return out


def _pct(slow: dict, fast: dict) -> str:
    """How much slower `slow` ran than `fast`: fastest against fastest, the medians, and, for
    interleaved runs, the median of the per-round ratios (each pair ran minutes apart at most)."""
    text = (f"{100 * (slow['wall_s'] / fast['wall_s'] - 1):+.0f} % (medians "
            f"{100 * (slow['median_wall_s'] / fast['median_wall_s'] - 1):+.0f} %")
    paired = paired_ratios(slow.get("round_walls", {}), fast.get("round_walls", {}))
    if paired:
        text += (f"; paired by round {100 * (statistics.median(paired) - 1):+.0f} %, "
                 f"range {100 * (min(paired) - 1):+.0f} to {100 * (max(paired) - 1):+.0f} %, "
                 f"{_rounds(len(paired))}")
    return text + ")"


def paired_ratios(slow: dict[tuple, float], fast: dict[tuple, float]) -> list[float]:
    """Wall-time ratios slow/fast of the rounds, keyed (invocation, round), that both ran in
    (interleaved runs; see `bench.throughput --interleave`)."""
    return [slow[k] / fast[k] for k in sorted(slow.keys() & fast.keys())]


def newest_sessions(rows: list[dict]) -> dict[str, int]:
    """{machine: its newest session number} among `rows`."""
    newest: dict[str, int] = {}
    for r in rows:
        machine, n = session(r["file"])
        newest[machine] = max(newest.get(machine, 0), n)
    return newest


def plot_points(rows: list[dict]) -> dict[str, tuple[int, dict[str, list[tuple[float, float]]]]]:
    """{machine: (session, {system: [(audio minutes, x realtime)]})} for tiny.en from each
    machine's newest session that ran it (as the summary), the fastest run at each audio
    length (to the minute above 25 minutes, so the 30.2 and 30.3 min tilings are one length):
    lengths of one session only, since hosts of one kind differ in speed from session to
    session."""
    tiny = [r for r in best(rows).values() if model_of(r["file"]) == "tiny.en"]
    newest = newest_sessions(tiny)
    top: dict[tuple, float] = {}
    for r in tiny:
        machine, n = session(r["file"])
        if n == newest[machine]:
            minutes = r["audio_s"] / 60
            minutes = round(minutes) if minutes > 25 else round(minutes, 1)
            key = (machine, r["system"], minutes)
            top[key] = max(top.get(key, 0.0), r["rtf"])
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for (machine, system, minutes), rtf in sorted(top.items()):
        out[machine][system].append((minutes, rtf))
    return {machine: (newest[machine], per) for machine, per in out.items()}


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    points = plot_points(rows)
    machines = sorted(points, key=lambda m: (not m.startswith("gpu"), m))
    systems = sorted({s for _, per in points.values() for s in per})
    colours = dict(zip(systems, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(1, len(machines), figsize=(4.2 * len(machines), 4.2), sharey=True,
                             squeeze=False)
    for ax, machine in zip(axes[0], machines):
        n, per = points[machine]
        for system, pts in sorted(per.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    linestyle="-" if system.startswith("lightning") else "--",
                    color=colours[system], label=system)
        lengths = sorted({p[0] for pts in per.values() for p in pts})
        ax.set_title(f"{machine} (session {n})", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlim(lengths[0] / 1.5, lengths[-1] * 1.5)
        ax.set_xticks(lengths)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("audio length (minutes)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("x realtime (audio s / wall s)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="lower center",
               ncol=min(4, len(handles)), frameon=False)
    fig.suptitle("tiny.en: each machine's newest session, fastest run of each system at each length",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.14, 1, 0.95))
    fig.savefig(PLOT, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the speed block of docs/benchmarks.md and its "
                                 "plot from bench.throughput's JSON lines.")
    ap.add_argument("results", nargs="*", help="JSON-lines files (default: every bench/results/"
                    "*.jsonl except breakdowns)")
    paths = ap.parse_args(argv).results or sorted(
        p for p in glob.glob(str(Path(__file__).parent / "results" / "*.jsonl")) if "breakdown" not in p)
    rows = load(paths)
    block = "\n".join([BEGIN, "## Speed", "",
                       "Measured with `python -m bench.throughput AUDIO --out bench/results/NAME.jsonl` "
                       "(GPU: `bench/device_run.sh` on the device machine, an H100 in earlier "
                       "sessions and an H200 since 2026-11-30, after `device-stage`); every "
                       "table is one file, i.e. one machine in one session, peers side by side on the "
                       "same weights (tiny.en; base where the file name says so) and audio (generated "
                       "speech; the 1814-1818 s rows tile the 454 s recording 4x). Greedy decoding with "
                       "temperature fallback for all; wall time after one warm-up run; `wall s` and "
                       "`x realtime` are the fastest of the runs, whose number and median follow. "
                       "Files from 2026-12-01 on (`gpu-h200-15*`, `cpu-2core-5`) ran the systems "
                       "in interleaved rounds (`--interleave`): their overheads are also given "
                       "paired round by round, the figure to trust on hosts that drift. "
                       "The fallback temperatures sample, so a run's time is also a draw: "
                       "mlx-whisper's random state moves on from run to run, lightning repeats "
                       "seed 0 in every run unless it ran with `--vary-seed` (seed r in round r; "
                       "no file before 2026-12-03 did). Before its runs, `bench.throughput` "
                       "calls `lightning_align.warm_up` as a service does at start (GPU kernels "
                       "compiled once; rows carry `warm_up_s`; no file before 2026-12-07's did). "
                       "Regenerate: `python -m bench.report`.", "",
                       "### Summary: each machine's newest session", "",
                       "x realtime = audio seconds per wall second. \"Paired by round\": the "
                       "median (range) of the ratios of runs made in the same round, minutes apart "
                       "at most; on a device whose speed drifts by +-15-35 % between runs, these "
                       "are the figures to judge by, fastest against fastest flatters whichever "
                       "system caught the fast moment. The gpu-h200 `-peers` file ran both systems "
                       "in one process, the other files ran mlx-whisper in an invocation of its own.", "",
                       summary(rows), "",
                       "### Every run, newest session first", "",
                       tables(rows), f"![x realtime vs audio length]({PLOT.name})", END])
    text = DOC.read_text() if DOC.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    plot(rows)
    print(f"wrote {DOC} and {PLOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
