"""bench.report: the speed summary takes each machine's newest session and pairs runs by round."""

from bench.report import model_of, plot_points, session, summary


def _row(file, system, round_, wall_s, audio_s=600.0, **extra):
    return {"file": file, "system": system, "audio_s": audio_s, "wall_s": wall_s,
            "rtf": audio_s / wall_s, "round": round_, "invocation": 1.0, "device": "gpu",
            "gpu": "NVIDIA H200", "time": 100.0 + round_, "batch_size": None if "mlx" in system else 64,
            **extra}


def test_session_and_model_come_from_the_file_name():
    assert session("gpu-h200-31-base.jsonl") == ("gpu-h200", 31)
    assert session("gpu-h200-9.jsonl") == ("gpu-h200", 9)
    assert session("cpu-2core.jsonl") == ("cpu-2core", 0)
    assert model_of("gpu-h200-31-base.jsonl") == "base"
    assert model_of("gpu-h200-31-peers.jsonl") == "tiny.en"


def test_summary_keeps_the_newest_session_and_pairs_by_round():
    old = [_row("gpu-h200-9.jsonl", "lightning", 0, 0.1), _row("gpu-h200-9.jsonl", "mlx-whisper", 0, 10.0)]
    # Round 0: lightning 1 s, mlx-whisper 8 s (8x); round 1: 2 s and 10 s (5x). Fastest vs
    # fastest is 8 / 1 = 8x, paired median 6.5x; words 1.1 s and 2.0 s: +10 % and 0 %.
    new = [_row("gpu-h200-31.jsonl", "lightning", 0, 1.0, wer=0.25),
           _row("gpu-h200-31.jsonl", "mlx-whisper", 0, 8.0, wer=0.2),
           _row("gpu-h200-31.jsonl", "lightning+words", 0, 1.1),
           _row("gpu-h200-31.jsonl", "lightning", 1, 2.0),
           _row("gpu-h200-31.jsonl", "mlx-whisper", 1, 10.0),
           _row("gpu-h200-31.jsonl", "lightning+words", 1, 2.0),
           # A file of the same session without the peer (an A/B) has no line of its own.
           _row("gpu-h200-31-ab.jsonl", "lightning", 0, 0.5)]
    lines = summary(old + new).splitlines()
    assert len(lines) == 3, lines
    line = lines[2]
    assert "gpu-h200-31.jsonl" in line and "gpu-h200-9" not in line
    assert "| 600; 400 |" in line  # fastest 600 s / 1 s; median wall 1.5 s
    assert "8.0x; 6.5x (5.0-8.0x, 2 rounds)" in line
    assert "+5 % (+0 % to +10 %, 2 rounds)" in line
    assert "25.0 % / 20.0 %" in line


def test_plot_points_take_the_newest_tiny_session_and_merge_the_tilings():
    rows = [_row("gpu-h200-9.jsonl", "lightning", 0, 0.1),  # older session: left out
            _row("gpu-h200-31.jsonl", "lightning", 0, 1.0, audio_s=454.0),
            _row("gpu-h200-31.jsonl", "lightning", 1, 0.5, audio_s=454.0),  # fastest kept
            _row("gpu-h200-31.jsonl", "lightning", 0, 2.0, audio_s=1812.0),  # 30.2 min
            _row("gpu-h200-31-ab.jsonl", "lightning", 0, 1.0, audio_s=1818.0),  # 30.3 min: faster
            _row("gpu-h200-32-base.jsonl", "lightning", 0, 0.1),  # newer, but base
            _row("cpu-2core-3.jsonl", "mlx-whisper", 0, 60.0, audio_s=180.0)]
    points = plot_points(rows)
    assert points["gpu-h200"] == (31, {"lightning": [(7.6, 908.0), (30, 1818.0)]})
    assert points["cpu-2core"] == (3, {"mlx-whisper": [(3.0, 3.0)]})
