"""Benchmarks: the paper's experiments against baselines (`paper` suite) and speed / scale (`perf` suite).

Entry points: `palrm bench --suite paper|perf|all [--quick]` or `python -m palrm.bench ...`;
`palrm data NAME --out FILE` writes any dataset builder's pairs for `palrm train`.
"""
