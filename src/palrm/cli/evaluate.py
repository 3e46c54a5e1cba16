"""`palrm evaluate`: accuracy and log-loss of a saved model on a pair file."""

from __future__ import annotations

from pathlib import Path

from palrm.cli.flags import add_saved_model_flags, load_data, metrics_line, print_json, reconfigure, write_rejected


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="accuracy and log-loss of a saved model on a pair file")
    add_saved_model_flags(p, "model directory (RUN_DIR/model)", "print the metrics as one JSON object")
    p.add_argument("--per-user", action="store_true", help="include per-user accuracy")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from palrm import PALRewardModel

    model = PALRewardModel.load(args.model, device=args.device)
    if args.no_progress:
        reconfigure(model, {"train.progress": False})
    metrics = model.evaluate(load_data(args))
    write_rejected(args, Path(args.model).parent)
    if not args.per_user:
        metrics.pop("per_user", None)
    if args.json:
        print_json(metrics)
        return 0
    print(metrics_line("evaluation", metrics))
    unk = metrics["unknown_users"]
    if unk["n_pairs"]:
        print(f"not scored: {unk['n_pairs']} pairs of {unk['n_users']} unknown users ({', '.join(unk['user_ids'][:5])}...); "
              "onboard them with `palrm adapt`")
    return 0
