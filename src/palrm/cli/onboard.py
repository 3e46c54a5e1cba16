"""`palrm onboard MODEL_DIR --user alice --pool pool.jsonl`: onboard a user by asking the most informative questions.

Each round shows a prompt and two responses (the pool pair with the highest expected information gain
about the user's weights, `PALRewardModel.next_queries`) and reads 1 (the first is better), 2 (the
second), s (skip this pair) or q (quit). After every answer the user is re-adapted on all its
answers, the posterior weights and their uncertainty are shown, and both the answers file (a pairs
file: user_id, prompt, chosen, rejected) and the model are written atomically, so quitting or a crash
loses no saved answer; running the command again resumes from the answers file.

Non-interactive: `--answers FILE` reads the replies from FILE instead of the keyboard, one per line:
`1`, `2`, `s`, `q`, or `{"pair": INDEX, "answer": "1"}` to answer pool pair INDEX directly.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from palrm.errors import ConfigError, DataFormatError

KEYS = {"1": "first response is better", "2": "second response is better", "s": "skip this pair", "q": "quit"}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Replies:
    """Replies from the keyboard, or from a file (one per line)."""

    def __init__(self, path: str | None) -> None:
        self.lines = None
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise DataFormatError(f"--answers {p}: no such file")
            self.lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]

    def next(self) -> tuple[str, int | None]:
        """(key, pool index or None); "q" at the end of a file or of stdin."""
        if self.lines is None:
            try:
                raw = input("[1/2/s/q] > ").strip()
            except EOFError:
                return "q", None
        else:
            if not self.lines:
                return "q", None
            raw = self.lines.pop(0)
        if raw.startswith("{"):
            try:
                obj = json.loads(raw)
                return str(obj["answer"]).strip().lower(), int(obj["pair"])
            except (ValueError, KeyError, TypeError):
                return f"<unreadable line {raw[:40]!r}>", None
        return raw.lower(), None


def cmd_onboard(args) -> int:
    from palrm import PALRewardModel
    from palrm.data.io import load_pairs
    from palrm.data.pool import read_pool

    model = PALRewardModel.load(args.model)
    if args.questions < 1:
        raise ConfigError(f"--questions {args.questions}: ask at least one question")
    if not model.net_.has_users:
        raise ConfigError(f"{args.model} is a BTL model: it has no per-user weights to onboard")
    pool = read_pool(args.pool)
    out = Path(args.output or args.model)
    session = Path(args.session or f"{Path(args.model).resolve()}.onboard-{args.user}.jsonl")
    answered: list[dict] = []
    if session.is_file() and session.stat().st_size:
        answered = [json.loads(ln) for ln in session.read_text().splitlines() if ln.strip()]
    asked = {(a["prompt"], a["chosen"], a["rejected"]) for a in answered} | {(a["prompt"], a["rejected"], a["chosen"]) for a in answered}
    texts = lambda rows: pool.text_of(rows)  # noqa: E731
    prompts = texts(pool.prompt) if pool.has_prompts else [""] * len(pool)
    first, second = texts(pool.chosen), texts(pool.rejected)
    open_pairs = [i for i in range(len(pool)) if (prompts[i] or "", first[i], second[i]) not in asked]
    replies = _Replies(args.answers)
    say = (lambda m: None) if args.json else (lambda m: print(m, flush=True))
    if answered:
        say(f"resuming: {len(answered)} saved answers of {args.user} in {session}")
    n_new = 0
    while n_new < args.questions and open_pairs:
        sub = pool.select(np.isin(np.arange(len(pool)), open_pairs))
        pick = model.next_queries(args.user, sub, n=1)[0]
        i = open_pairs[pick["index"]]
        say("")
        say(f"question {len(answered) + 1} (expected information {pick['information_gain']:.3f} nats)")
        if prompts[i]:
            say(f"prompt: {prompts[i]}")
        say(f"  1) {first[i]}")
        say(f"  2) {second[i]}")
        key, pair = replies.next()
        if pair is not None:
            if not 0 <= pair < len(pool):
                say(f"pool pair {pair} not found: the pool has {len(pool)} pairs (0..{len(pool) - 1}); line ignored")
                continue
            if pair not in open_pairs:
                say(f"pool pair {pair} was already answered or skipped; line ignored")
                continue
            i = pair
        if key == "q":
            break
        if key == "s":
            open_pairs.remove(i)
            continue
        if key not in ("1", "2"):
            say(f"unknown answer {key!r}: type 1 (the first response is better), 2 (the second), s (skip) or q (quit)")
            continue
        chosen, rejected = (first[i], second[i]) if key == "1" else (second[i], first[i])
        answered.append({"user_id": args.user, "prompt": prompts[i] or "", "chosen": chosen, "rejected": rejected})
        open_pairs.remove(i)
        n_new += 1
        _write_atomic(session, "".join(json.dumps(a) + "\n" for a in answered))  # the answer is safe from here on
        model.adapt(load_pairs(pd.DataFrame(answered)), reset=True)
        model.save(out)
        post = model.user_posterior(args.user)
        say("weights " + " ".join(f"{m:.2f}+-{s:.2f}" for m, s in zip(post.weights_mean, post.weights_std))
            + f"  uncertainty {post.uncertainty:.3f}  ({len(answered)} answers; saved)")
    result = {"user": args.user, "answers": len(answered), "new_answers": n_new, "session": str(session), "model": str(out)}
    if answered:
        post = model.user_posterior(args.user)
        result.update(weights=[round(float(x), 4) for x in post.weights_mean], weights_std=[round(float(x), 4) for x in post.weights_std],
                      uncertainty=round(post.uncertainty, 4))
    if not open_pairs:
        say("the pool has no more unanswered pairs")
    if args.json:
        print(json.dumps(result))
    else:
        say(f"done: {len(answered)} answers of {args.user} saved to {session}; model {out}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("onboard", help="onboard a user interactively: the most informative questions first",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL_DIR", help="a saved palrm model (adapted in place unless --output)")
    p.add_argument("--user", required=True, help="the user's id (new or known)")
    p.add_argument("--pool", required=True, metavar="FILE", help="candidate pairs: prompt, chosen, rejected (the order of the two is irrelevant)")
    p.add_argument("--questions", type=int, default=10, help="how many answers to collect in this run (default 10)")
    p.add_argument("--answers", metavar="FILE", help="non-interactive: read the replies from FILE (1 / 2 / s / q per line)")
    p.add_argument("--session", metavar="FILE", help="where the answers are saved (default MODEL_DIR.onboard-USER.jsonl; resumed if present)")
    p.add_argument("--output", "-o", metavar="DIR", help="save the adapted model here instead of MODEL_DIR")
    p.add_argument("--json", action="store_true", help="print only a JSON summary")
    p.set_defaults(func=cmd_onboard)

