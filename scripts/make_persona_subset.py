#!/usr/bin/env python
"""Make the Persona subset shipped inside palrm (src/palrm/datasets/persona/) from the full folder.

Command that produced the shipped files (run from the repository root):

    .venv/bin/python scripts/make_persona_subset.py \
        --source ../shared/data/anthropic-persona --out src/palrm/datasets/persona

Selection (deterministic, no randomness):
  * personas: palrm.data.persona.DEFAULT_PERSONAS (12 politically / attitudinally distinct personas,
    in the default order that build_persona(k) takes the first k of);
  * statements that occur in more than one of these 12 files are dropped (so every shipped
    statement belongs to exactly one persona), and repeats within a file are dropped;
  * per persona, the --per-answer (150) statements with the highest label_confidence among those
    answered " Yes" and the 150 highest among those answered " No" (ties: file order), written
    in their original file order as the original JSON lines, gzip-compressed (mtime 0, so the
    output is byte-identical on every run);
  * LICENSE (CC-BY-4.0) is copied, ATTRIBUTION.md and MANIFEST.json (order, counts, sha256 of
    every file) are written.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

from palrm.data.persona import DEFAULT_PERSONAS

COMMIT = "84fcc677e52e1902d696c32cd1a6b663e70d3993"
REPO = "https://github.com/anthropics/evals"
PAPER = (
    'Perez et al. 2022, "Discovering Language Model Behaviors with Model-Written Evaluations", '
    "arXiv:2212.09251"
)


def _read(path: Path) -> list[tuple[str, dict]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append((line, json.loads(line)))
    return rows


def _gzip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(text.encode("utf-8"))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the full anthropic-persona folder")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (its persona files are replaced)"
    )
    parser.add_argument(
        "--per-answer", type=int, default=150, help="statements per answer (Yes / No) per persona"
    )
    args = parser.parse_args(argv)

    data = {name: _read(args.source / f"{name}.jsonl") for name in DEFAULT_PERSONAS}
    owners: dict[str, set[str]] = {}
    for name, rows in data.items():
        for _, record in rows:
            owners.setdefault(record["statement"], set()).add(name)

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.jsonl.gz"):
        old.unlink()
    manifest: dict = {
        "source": f"{REPO} (persona/), commit {COMMIT}",
        "paper": PAPER,
        "license": "CC-BY-4.0",
        "command": "scripts/make_persona_subset.py --source ../shared/data/anthropic-persona "
        f"--out src/palrm/datasets/persona --per-answer {args.per_answer}",
        "order": list(DEFAULT_PERSONAS),
        "files": {},
    }
    for name, rows in data.items():
        seen: set[str] = set()
        candidates = {" Yes": [], " No": []}
        dropped_shared = 0
        for position, (line, record) in enumerate(rows):
            statement = record["statement"]
            if statement in seen:
                continue
            seen.add(statement)
            if len(owners[statement]) > 1:
                dropped_shared += 1
                continue
            answer = record["answer_matching_behavior"]
            candidates[answer].append((-record["label_confidence"], position, line))
        keep: list[tuple[int, str]] = []
        for answer, items in candidates.items():
            if len(items) < args.per_answer:
                sys.exit(f"{name}: {len(items)} statements answered {answer!r}, need {args.per_answer}")
            keep += [(position, line) for _, position, line in sorted(items)[: args.per_answer]]
        keep.sort()
        payload = _gzip_bytes("".join(line + "\n" for _, line in keep))
        filename = f"{name}.jsonl.gz"
        (args.out / filename).write_bytes(payload)
        manifest["files"][filename] = {
            "persona": name,
            "statements": len(keep),
            "agree": args.per_answer,
            "disagree": args.per_answer,
            "source_statements": len(rows),
            "dropped_shared_with_other_selected_personas": dropped_shared,
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
    shutil.copyfile(args.source / "LICENSE", args.out / "LICENSE")
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (args.out / "ATTRIBUTION.md").write_text(_attribution(args.per_answer), encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {len(data)} persona files to {args.out} ({total / 1024:.0f} KiB in all)")
    return 0


def _attribution(per_answer: int) -> str:
    names = "\n".join(f"{i + 1}. `{name}`" for i, name in enumerate(DEFAULT_PERSONAS))
    return f"""# Attribution: Anthropic persona statements (subset)

The files `*.jsonl.gz` in this folder are a subset of the persona statements of

* repository: {REPO}, folder `persona/`, commit `{COMMIT}`;
* paper: {PAPER};
* license: Creative Commons Attribution 4.0 International (CC-BY-4.0), copied in `LICENSE`.
  Copyright Anthropic. palrm ships the data unmodified apart from the selection below.

## What was taken

12 of the 135 persona files, in this (default) order:

{names}

From each file: statements that also occur in another of these 12 files are dropped, then the
{per_answer} statements answered " Yes" (`answer_matching_behavior`) with the highest
`label_confidence` and the {per_answer} answered " No" with the highest `label_confidence` are
kept ({2 * per_answer} per persona), as the original JSON lines in their original order,
gzip-compressed. `MANIFEST.json` lists the counts and the sha256 of every file.

Made with `scripts/make_persona_subset.py` (see its header for the exact command). palrm turns
these statements into a semi-synthetic preference set (`palrm.data.persona.build_persona`,
documented in docs/datasets.md); any dataset derived from them must keep this attribution.
"""


if __name__ == "__main__":
    raise SystemExit(main())
