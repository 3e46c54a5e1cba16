"""`palrm data NAME --out FILE`: a dataset builder's pairs as palrm files (split and group columns)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from palrm.cli.flags import add_json_flag
from palrm.errors import ConfigError


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
    add_json_flag(p, "print the written paths as JSON")
    p.set_defaults(func=cmd_data)


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
