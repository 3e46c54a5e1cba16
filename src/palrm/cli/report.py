"""`palrm report MODEL_DIR --data PAIRS -o report.html`: does personalization pay on this data?

One self-contained HTML page (palrm.evaluation.report; what the page needs from the data is in that
module's docstring): PAL vs BTL with bootstrap intervals over users, accuracy vs K from the run's
selection.json, the few-shot curve from n = 0, per-user accuracy, the learned groups.
"""

from __future__ import annotations

from pathlib import Path

from palrm.cli.flags import add_data_flags, add_device_flag, add_json_flag, load_data, print_json, write_rejected
from palrm.errors import ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="one HTML page: does personalization pay on this data? (PAL vs BTL, few-shot, groups)",
        description="Write a self-contained HTML report for a trained model on pair files: rows of known users with "
                    "split=test are scored, their split=train/validation rows train a BTL baseline (unless --btl), "
                    "users the model does not know are onboarded on their non-test rows (few-shot curve, n = 0 = "
                    "population weights). `palrm data NAME --out FILE` writes FILE and FILE.unseen.jsonl in this "
                    "layout: pass both, --data FILE FILE.unseen.jsonl.")
    p.add_argument("model", metavar="MODEL_DIR", help="a saved model (RUN_DIR/model); selection.json is read from it or RUN_DIR")
    add_data_flags(p, many=True)
    p.add_argument("--btl", metavar="DIR", help="a saved BTL model to compare with (default: train one on the known users' "
                   "split=train rows with the model's configuration)")
    p.add_argument("--output", "-o", default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument("--shots", default="0,1,2,5,10,20", help="few-shot points n (default 0,1,2,5,10,20)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap draws over users for the intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of any split made here (default 0)")
    add_device_flag(p)
    add_json_flag(p, "print the report's numbers as JSON")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from palrm import PALRewardModel
    from palrm.atomic import atomic_write_bytes
    from palrm.data.schema import concat_pairs
    from palrm.evaluation.report import build_report, read_selection, render_html

    try:
        shots = sorted({int(x) for x in args.shots.split(",")})
    except ValueError:
        raise ConfigError(f"--shots {args.shots!r}: expected comma-separated integers, e.g. 0,1,2,5,10") from None
    if any(n < 0 for n in shots) or args.n_boot < 1:
        raise ConfigError("--shots must be non-negative and --n-boot at least 1")
    model = PALRewardModel.load(args.model, device=args.device)
    btl = PALRewardModel.load(args.btl, device=args.device) if args.btl else None
    if btl is not None and btl.config_.model.kind != "btl":
        raise ConfigError(f"--btl {args.btl}: that model is {btl.config_.model.kind}, not btl; pass a BTL model directory")
    data = concat_pairs([load_data(args, path) for path in args.data])
    out = Path(args.output)
    write_rejected(args, out.parent)
    selection, selection_path = read_selection(args.model)
    result = build_report(model, data, btl=btl, selection=selection, selection_path=selection_path, ns=shots,
                          n_boot=args.n_boot, seed=args.seed)
    atomic_write_bytes(out, render_html(result).encode("utf-8"))
    if args.json:
        print_json({k: v for k, v in result.items() if k != "figures"})
        return 0
    print(result["verdict"])
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"report: {out}")
    return 0
