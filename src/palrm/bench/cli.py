"""CLI: `palrm data NAME --out FILE` and `palrm bench --suite paper|perf|all [--quick]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from palrm.errors import ConfigError


def _parse_opts(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--opt {item!r}: expected KEY=VALUE, e.g. --opt n_users=200")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_data(args) -> int:
    from palrm.bench.datasets import write_dataset

    options = _parse_opts(args.opt)
    for flag in ("source", "name", "k", "users", "noise"):
        value = getattr(args, flag)
        if value is not None:
            options[flag] = value
    result = write_dataset(args.dataset, args.out, options, seed=args.seed, shots=args.shots)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"wrote {result['n_pairs']} pairs of {result['n_users']} users to {result['pairs']} (split and group columns)")
    if result["unseen"]:
        print(f"wrote {result['n_unseen_pairs']} pairs of {result['n_unseen_users']} held-out users to {result['unseen']} "
              "(split: train = adaptation pool, test = held out)")
    if result["embeddings"]:
        print(f"wrote the precomputed embeddings to {result['embeddings']}; train with: "
              f"palrm train --data {result['pairs']} --embeddings {result['embeddings']}")
    return 0


def cmd_bench(args) -> int:
    from palrm.bench.report import update_docs

    profile = "quick" if args.quick else ("smoke" if args.smoke else "full")
    results = Path(args.results)
    suites = ["paper", "perf"] if args.suite == "all" else [args.suite]
    say = (lambda m: None) if args.silent else (lambda m: print(m, flush=True))
    for suite in [] if args.report_only else suites:
        if suite == "paper":
            from palrm.bench.paper import run_paper

            run_paper(results / "paper", profile=profile, seed=args.seed, threads=args.threads, encoder=args.encoder,
                      persona_source=args.persona_source, paircomp_source=args.paircomp_source, say=say)
        else:
            from palrm.bench.perf import run_perf

            run_perf(results / "perf", profile=profile, seed=args.seed, threads=args.threads, encoder=args.encoder, say=say)
    if args.docs and (profile != "smoke" or args.report_only):
        if not Path(args.docs).is_file():
            say(f"{args.docs} not found (run from the palrm checkout or pass --docs PATH); docs not updated")
        else:
            for path in update_docs(Path(args.docs), results, suites):
                say(f"updated {path}")
    return 0


def add_parser(subparsers) -> None:
    from palrm.bench.datasets import BUILDERS

    p = subparsers.add_parser("data", help="write a dataset builder's pairs as palrm-format files (split and group columns)",
                              description=__doc__ + "\n\nBuilder options: --opt KEY=VALUE (any keyword of the builder, "
                              "see docs/datasets.md), e.g. palrm data synthetic --out syn.jsonl --opt n_users=200 --opt d=8",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(BUILDERS), help="which builder")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="pairs file (.jsonl, .csv or .parquet)")
    p.add_argument("--seed", type=int, default=0, help="builder and split seed")
    p.add_argument("--source", help="input data: persona folder, TL;DR comparisons, Pick-a-Pic embeddings, psychotools folder")
    p.add_argument("--name", help="paircomp: data set name (Topmodel2007, FirstNames, GermanParties2009, SoundQuality)")
    p.add_argument("--k", type=int, help="number of groups K* (synthetic, persona)")
    p.add_argument("--users", choices=["partition", "mixture"], help="synthetic, persona: partition or mixture users")
    p.add_argument("--noise", type=float, help="synthetic, persona: BTL noise scale")
    p.add_argument("--shots", type=int, default=50, help="held-out users: adaptation pool size per user (split=train)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="any other builder keyword (repeatable)")
    p.add_argument("--json", action="store_true", help="print the written paths as JSON")
    p.set_defaults(func=cmd_data)

    b = subparsers.add_parser("bench", help="the paper's experiments vs baselines (paper) and speed / scale (perf)",
                              description="Writes RESULTS/<suite>/*.json and PNGs, results/paper/summary.json, and "
                              "regenerates the marked tables of docs/benchmarks.md.")
    b.add_argument("--suite", choices=["paper", "perf", "all"], default="all")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="the reduced run CI may use (< 10 minutes on 2 cores per suite)")
    g.add_argument("--smoke", action="store_true", help="the smallest run (tests); does not touch the docs")
    b.add_argument("--results", default="results", help="results root (default: results)")
    b.add_argument("--docs", default="docs/benchmarks.md", help="markdown file whose marked blocks are regenerated ('' = none)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a shared small machine)")
    b.add_argument("--encoder", default="minilm", help="text encoder for Persona (default minilm)")
    b.add_argument("--persona-source", help="the full anthropic-persona folder (default: the shipped subset)")
    b.add_argument("--paircomp-source", help="psychotools CSV folder (default: $PALRM_PAIRCOMP_DIR or ../shared/data/psychotools-paircomp)")
    b.add_argument("--report-only", action="store_true", help="only regenerate the docs tables from existing RESULTS/<suite>/")
    b.add_argument("--silent", action="store_true", help="no progress lines")
    b.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """`python -m palrm.bench ...` = `palrm bench ...`."""
    from palrm.cli import main as palrm_main

    return palrm_main(["bench", *(sys.argv[1:] if argv is None else argv)])
