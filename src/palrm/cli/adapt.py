"""`palrm adapt`: onboard new users (or update known ones) from a few pairs; shared weights stay fixed."""

from __future__ import annotations

from pathlib import Path

from palrm.cli.flags import add_saved_model_flags, add_shortcut, load_data, metrics_line, print_json, reconfigure, write_rejected
from palrm.errors import ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("adapt", help="onboard new users (or update known ones) from a few pairs; shared weights stay fixed")
    add_saved_model_flags(p, "model directory to start from", "print the learned weights as JSON")
    p.add_argument("--output", metavar="DIR", help="where to save the adapted model (default: overwrite --model, atomically)")
    p.add_argument("--reset", action="store_true", help="re-learn known users from the population instead of their current weights")
    add_shortcut(p, "steps", int, "optimisation steps", metavar="N")
    add_shortcut(p, "adapt_lr", float, "learning rate", metavar="LR")
    add_shortcut(p, "prior", str, "none = maximum likelihood (paper); gaussian or mixture = MAP toward the known users",
                 choices=["none", "gaussian", "mixture"])
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args) -> int:
    from palrm import PALRewardModel

    model = PALRewardModel.load(args.model, device=args.device)
    overrides = {name: getattr(args, name) for name in ("steps", "adapt_lr", "prior") if getattr(args, name) is not None}
    reconfigure(model, {**overrides, "train.progress": not args.no_progress})
    data = load_data(args)
    held_out = None
    if data.split is not None:  # a split column: adapt on the non-test rows, report accuracy on the test rows
        is_test = data.split == "test"
        held_out = data.select(is_test) if is_test.any() else None
        data = data.select(~is_test)
        if len(data) == 0:
            raise ConfigError(f"{args.data}: every row has split=test; nothing is left to adapt on")
    before = set(model.users_)
    btl = not model.net_.has_users  # plain BTL: one reward for everybody, nothing to learn, every user is scored
    model.adapt(data, reset=args.reset)
    target = Path(args.output or args.model)
    model.save(target)
    write_rejected(args, target.parent)
    users = data.users_present()
    result = {
        "model": str(target),
        "n_pairs": len(data),
        "new_users": [u for u in users if u not in before],
        "updated_users": [u for u in users if u in before],
        "weights": {u: [round(float(x), 6) for x in model.user_weights(u)] for u in users[:1000]} if not btl else {},
    }
    if held_out is not None:
        result["held_out"] = {k: v for k, v in model.evaluate(held_out).items() if k != "per_user"}
    if args.json:
        print_json(result)
        return 0
    if btl:
        print(f"BTL has no per-user parameters: nothing to adapt for {len(users)} users; every user gets the one reward")
    else:
        print(f"adapted {len(users)} users ({len(result['new_users'])} new, {len(result['updated_users'])} updated) "
              f"on {len(data)} pairs; model saved to {target}")
    if held_out is not None:
        print(metrics_line("held out", result["held_out"]) + "  (rows with split=test, not used to adapt)")
    return 0
