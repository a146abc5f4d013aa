"""The study's reproduction (docs/protocol.md sections 9 and 10), one job per module: `grid` (the cells of each
experiment), `runner` (computes cells, resumable), `results` (stored rows and records), `claims` (the claims'
comparisons and verdicts), `report` (the markdown), `figures` (the PNGs)."""
