"""`palrm score`: rewards r(user, prompt, response) of a saved model."""

from __future__ import annotations

from pathlib import Path

from palrm.cli.flags import add_mixture_flags, add_saved_model_flags, mixture_from_args, print_json, reconfigure
from palrm.errors import ConfigError, DataFormatError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("score", help="rewards r(user, prompt, response)")
    add_saved_model_flags(p, "model directory", data=False, progress=False)
    add_mixture_flags(p)
    p.add_argument("--prompt", default="", help="the prompt (default: none)")
    p.add_argument("--response", action="append", metavar="TEXT", help="a response to score (repeatable)")
    p.add_argument("--input", metavar="FILE", help="JSONL/CSV/Parquet with response[, prompt, user_id] columns")
    p.add_argument("--normalize", action="store_true", help="return (r - mean) / std with the model's reference statistics (the training responses' rewards); default: raw rewards")
    p.set_defaults(func=cmd_score)


def read_rows(path: str):
    """Rows to score from JSONL / CSV / Parquet; must have a `response` column."""
    import pandas as pd

    p = Path(path)
    readers = {".jsonl": lambda: pd.read_json(p, lines=True), ".json": lambda: pd.read_json(p, lines=True),
               ".csv": lambda: pd.read_csv(p), ".parquet": lambda: pd.read_parquet(p)}
    if not p.is_file():
        raise DataFormatError(f"--input {p}: file not found")
    if p.suffix.lower() not in readers:
        raise DataFormatError(f"--input {p}: unknown file type {p.suffix!r}; use .jsonl, .csv or .parquet")
    try:
        rows = readers[p.suffix.lower()]()
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataFormatError(f"--input {p}: could not be read ({exc})") from None
    if "response" not in rows:
        raise DataFormatError(f"--input {p}: no 'response' column (found: {', '.join(map(str, rows.columns))})")
    if rows["response"].isna().any():
        bad = [int(i) + 1 for i in rows.index[rows["response"].isna()][:5]]
        raise DataFormatError(f"--input {p}: empty response in rows {bad}")
    return rows


def cmd_score(args) -> int:
    import pandas as pd

    from palrm import PALRewardModel

    model = PALRewardModel.load(args.model, device=args.device)
    reconfigure(model, {"train.progress": False})
    weights = mixture_from_args(args)
    if args.input:
        rows = read_rows(args.input)
    else:
        if not args.response:
            raise ConfigError("give --response TEXT (repeatable) or --input FILE with response[, prompt, user_id] columns")
        rows = pd.DataFrame({"prompt": args.prompt or "", "response": args.response})
    rows["prompt"] = rows["prompt"].fillna("").astype(str) if "prompt" in rows else ""
    if args.aggregate:  # one population reward: a user_id column does not matter
        rows["user_id"] = None
    rows["user_id"] = rows["user_id"].astype(object).where(rows["user_id"].notna(), args.user) if "user_id" in rows else args.user
    if model.net_.has_users and weights is None and not args.aggregate and rows["user_id"].isna().any():
        raise ConfigError("say whose reward: --user ID, --population, --group K, --weights w1,...,wK, --aggregate SPEC, "
                          "or a user_id column")
    results = []
    for (user, prompt), group in rows.groupby(["user_id", "prompt"], sort=False, dropna=False):
        user = None if pd.isna(user) else str(user)
        rewards = model.reward(user, prompt, [str(r) for r in group["response"]], weights=weights, aggregate=args.aggregate,
                               normalize=args.normalize)
        who = {"aggregate": args.aggregate} if args.aggregate else {"user_id": user}
        results += [{**who, "prompt": prompt, "response": str(x), "reward": r} for x, r in zip(group["response"], rewards)]
    if args.json:
        print_json(results)
        return 0
    for r in results:
        print(f"{r['reward']:+.4f}\t{r['response']}")
    return 0
