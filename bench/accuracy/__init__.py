"""Word-boundary accuracy harness: generated and real speech, peers side by side.

`python -m bench.accuracy` regenerates every table of docs/benchmarks.md's accuracy block.
Modules: `metrics` (matching and scores, no model), `datasets` (generated calibration and
evaluation sets, real speech with a forced-aligner reference), `peers` (other engines on the
same weights), `report` (runs everything, prints markdown).
"""
