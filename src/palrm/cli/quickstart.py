"""`palrm quickstart`: the main job (Persona benchmark, MiniLM, PAL vs BTL, seen and unseen users)."""

from __future__ import annotations

from palrm.cli.flags import add_progress_flag


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("quickstart", help="the main job: Persona benchmark, MiniLM, PAL vs BTL, seen and unseen users")
    p.add_argument("--output-dir", "-o", default="runs/quickstart", help="where results.json, the plot and model/ go")
    p.add_argument("--encoder", default="minilm", help="text encoder (default minilm; 'hashing' needs no model weights)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a shared small machine; 0 = torch's default)")
    p.add_argument("--small", action="store_true", help="a smaller set (fewer users), for smoke tests")
    add_progress_flag(p)
    p.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args) -> int:
    from palrm.quickstart import run_quickstart

    run_quickstart(output_dir=args.output_dir, encoder=args.encoder, seed=args.seed, progress=not args.no_progress,
                   small=args.small, printer=print, threads=args.threads)
    return 0
