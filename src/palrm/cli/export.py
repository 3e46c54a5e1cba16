"""`palrm export MODEL_DIR -o DIR`: one user's (or one mixture's) reward as a standalone scalar reward model."""

from __future__ import annotations

import json

from palrm.cli.flags import add_device_flag, add_mixture_flags, mixture_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="write one user's (or one mixture's) reward as a standalone scalar reward model",
                              description="Export a scalar reward model: load it with ScalarRewardModel.from_pretrained(DIR).")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a trained palrm model directory (e.g. runs/quickstart/model)")
    add_mixture_flags(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output directory: new, empty, or an earlier export (replaced atomically); anything else is refused")
    p.add_argument("--data", metavar="PAIRS", help="optional pair file to measure the exported reward's accuracy on "
                   "(only the exported user's pairs with --user)")
    p.add_argument("--normalize", action="store_true",
                   help="the exported model returns (r - mean) / std with the model's reference statistics (they "
                        "travel with every export; default: raw rewards)")
    add_device_flag(p, "torch device to load the model on (default: as saved)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from palrm import PALRewardModel
    from palrm.export import CONFIG_FILE, export_scalar

    model = PALRewardModel.load(args.model_dir, device=args.device)
    out = export_scalar(model, args.output, user_id=args.user, weights=mixture_from_args(args), source=args.model_dir,
                        eval_pairs=args.data, aggregate=args.aggregate, normalize=args.normalize)
    meta = json.loads((out / CONFIG_FILE).read_text())
    print(f"exported the {'normalised ' if args.normalize else ''}reward of {meta['mixture']['description']} to {out} "
          "(config.json, model.safetensors, README.md)")
    if meta.get("eval"):
        print(f"accuracy on {meta['eval']['users']} of {args.data}: {meta['eval']['accuracy']:.4f} ({meta['eval']['n_pairs']} pairs)")
    return 0
