"""Session 22's two host-side changes of the decoding loop against the code before them, in one
process, alternating round by round (the GPU host drifts by +-15-35 % between runs; only
paired ratios read):

    python -m bench.step_ab AUDIO.npy [--rounds 16] [--seconds S]

Configurations: `before` (the code of 78ccc8f: the token log joins every step on the default
stream at each `so_far`, and the compiled step is written with `nn.Linear`s on (B, 1, n_state)
rows), `log` (the token log of 3b7e4eb, the step as before) and `now` (both changes), each
segment-only and with words. First checks that all three give the same text and words, then
prints medians and each configuration's change over `before`, paired by round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from . import systems
from .throughput import load_samples


def _legacy_step(self, tokens, offset, starts, keys, values, cross, record, base):
    """`CompiledStep._step` as of 78ccc8f (the baseline; kept here for this A/B only)."""
    from lightning_align.backend import mx
    from lightning_align.model import cross_attention

    d = self.decoder
    x = d.token_embedding(tokens) + mx.take(d.positional_embedding, offset - starts, axis=0)[:, None]
    x = x.astype(cross[0][0].dtype)
    at = mx.arange(d.n_ctx)[None, :]
    mask = ((at <= offset) & (at >= starts[:, None]))[:, None, None, :]
    new_keys, new_values, queries = [], [], []
    for i, block in enumerate(d.blocks):
        sa = block.attn
        h = block.attn_ln(x)
        q, k, v = sa.heads(sa.query(h)), sa.heads(sa.key(h)), sa.heads(sa.value(h))
        scale = q.shape[-1] ** -0.5
        kc = mx.slice_update(keys[i], k, offset, axes=(2,))
        vc = mx.slice_update(values[i], v, offset, axes=(2,))
        new_keys.append(kc)
        new_values.append(vc)
        x = x + sa.merge(mx.fast.scaled_dot_product_attention(q, kc, vc, scale=scale, mask=mask))
        ca = block.cross_attn
        projected = ca.query(block.cross_attn_ln(x))
        ck, cv = cross[i]
        x = x + ca.merge(cross_attention(ca.heads(projected), ck, cv, scale))
        if i in self.probe:
            queries.append(projected)
        x = x + block.mlp(x)
    logits = (d.ln(x)[:, 0, :] @ self.projection).astype(mx.float32)
    written = [mx.slice_update(buf, q, offset - base, axes=(1,)) for buf, q in zip(record, queries)]
    return (logits, new_keys, new_values, *written)


def _legacy_so_far(self):
    """`_TokenLog.so_far` as of 78ccc8f (the baseline)."""
    from lightning_align.backend import mx

    ids = np.concatenate([r for r, _, _ in self._steps])
    chosen = np.asarray(mx.concatenate([mx.array(c) for _, c, _ in self._steps])).astype(np.int64)
    lps = np.asarray(mx.concatenate([mx.array(lp) for _, _, lp in self._steps]), np.float32)
    live = np.flatnonzero(ids >= 0)
    order = live[np.argsort(ids[live], kind="stable")]
    cuts = np.cumsum(np.bincount(ids[live], minlength=self.n_rows))[:-1]
    return [(c.tolist(), lp) for c, lp in zip(np.split(chosen[order], cuts),
                                              np.split(lps[order], cuts))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("audio")
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--seconds", type=float, default=None, help="use only the first S seconds")
    args = p.parse_args(argv)

    import lightning_align as la
    from lightning_align import decoding as dec
    from lightning_align import model as mdl

    step_now, so_far_now = mdl.CompiledStep._step, dec._TokenLog.so_far
    wm = la.load_model(str(systems.ct2_dir()))
    samples = load_samples(args.audio)
    if args.seconds:
        samples = samples[: int(args.seconds * 16000)]
    versions = {"before": (_legacy_step, _legacy_so_far), "log": (_legacy_step, so_far_now),
                "now": (step_now, so_far_now)}

    keys = ("_compiled_plain", "_compiled_probe")  # the model's compiled steps (`compiled_step`)
    held: dict[str, dict] = {}

    def use(version: str) -> None:
        step, so_far = versions[version]
        mdl.CompiledStep._step, dec._TokenLog.so_far = step, so_far
        if version in held:  # this version's steps, compiled when first used
            for key, value in held[version].items():
                setattr(wm, key, value)
            return
        for key in keys:
            if hasattr(wm, key):
                delattr(wm, key)
        for kwargs in (dict(keep_attention=False), dict(word_timestamps=True)):
            la.transcribe(samples, model=wm, **kwargs)  # compile this version's graphs
        held[version] = {key: getattr(wm, key) for key in keys if hasattr(wm, key)}

    configs = {f"{kind}-{v}": (v, kwargs) for v in versions for kind, kwargs in
               (("seg", dict(keep_attention=False)), ("words", dict(word_timestamps=True)))}
    words = {}
    for v in versions:
        use(v)
        out = la.transcribe(samples, model=wm, word_timestamps=True)
        words[v] = [(w["word"], w["start"], w["end"]) for s in out["segments"] for w in s["words"]]
    print("same words as before:", {v: words[v] == words["before"] for v in versions},
          len(words["now"]), flush=True)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(args.rounds):
        for v in (list(versions) if r % 2 == 0 else list(versions)[::-1]):
            use(v)
            for name, (version, kwargs) in configs.items():
                if version != v:
                    continue
                t0 = time.perf_counter()
                la.transcribe(samples, model=wm, **kwargs)
                times[name].append(time.perf_counter() - t0)
        print("round", r, {k: round(t[-1], 4) for k, t in times.items()}, flush=True)
    for name, t in times.items():
        print(f"median {name}: {statistics.median(t):.4f} s (fastest {min(t):.4f})")
    for kind in ("seg", "words"):
        for v in ("log", "now"):
            ratios = [a / b - 1 for a, b in zip(times[f"{kind}-{v}"], times[f"{kind}-before"])]
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            print(f"{kind}-{v} over {kind}-before: {statistics.median(ratios) * 100:+.1f} % "
                  f"(quartiles {q[0] * 100:+.1f} / {q[2] * 100:+.1f}), "
                  f"{sum(x < 0 for x in ratios)} of {len(ratios)} rounds faster")
    use("now")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
