"""`palrm bench --suite paper|perf|aggregation|real|onboarding|all [--quick]` (also `python -m palrm.bench ...`)."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    b = subparsers.add_parser("bench", help="the paper's experiments vs baselines (paper), speed / scale (perf), "
                              "pluralistic aggregation (aggregation)",
                              description="Writes RESULTS/<suite>/*.json and PNGs, results/paper/summary.json, and "
                              "regenerates the marked tables of docs/benchmarks.md.")
    b.add_argument("--suite", choices=["paper", "perf", "aggregation", "real", "onboarding", "all"], default="all",
                   help="paper, perf, aggregation, real (real multi-user data vs BTL / heads; not part of all), onboarding "
                        "(new users' active vs random queries, calibration, coverage; not part of all), or all (paper + perf + aggregation)")
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
    b.add_argument("--polis-source", help="Polis conversations folder (default: $PALRM_POLIS_DIR or ../shared/data/polis)")
    b.add_argument("--only", metavar="SET[,SET...]", help="real suite: run only these data sets (persona, polis, "
                   "Topmodel2007, FirstNames, GermanParties2009, SoundQuality); docs are not updated from such a run")
    b.add_argument("--report-only", action="store_true", help="only regenerate the docs tables from existing RESULTS/<suite>/")
    b.add_argument("--silent", action="store_true", help="no progress lines")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from palrm.bench.report import update_docs

    profile = "quick" if args.quick else ("smoke" if args.smoke else "full")
    results = Path(args.results)
    suites = ["paper", "perf", "aggregation"] if args.suite == "all" else [args.suite]
    say = (lambda m: None) if args.silent else (lambda m: print(m, flush=True))
    for suite in [] if args.report_only else suites:
        if suite == "onboarding":
            from palrm.bench.onboarding import run_onboarding

            run_onboarding(results / "onboarding", profile=profile, seed=args.seed, threads=args.threads,
                           encoder=args.encoder, persona_source=args.persona_source, say=say)
        elif suite == "paper":
            from palrm.bench.paper import run_paper

            run_paper(results / "paper", profile=profile, seed=args.seed, threads=args.threads, encoder=args.encoder,
                      persona_source=args.persona_source, paircomp_source=args.paircomp_source, say=say)
        elif suite == "aggregation":
            from palrm.bench.aggregation import run_aggregation

            run_aggregation(results / "aggregation", profile=profile, seed=args.seed, threads=args.threads,
                            encoder=args.encoder, persona_source=args.persona_source, say=say)
        elif suite == "real":
            from palrm.bench.real import run_real

            run_real(results / "real", profile=profile, seed=args.seed, threads=args.threads, encoder=args.encoder,
                     paircomp_source=args.paircomp_source, polis_source=args.polis_source, say=say,
                     only=args.only.split(",") if args.only else None)
        else:
            from palrm.bench.perf import run_perf

            run_perf(results / "perf", profile=profile, seed=args.seed, threads=args.threads, encoder=args.encoder, say=say)
    if args.only and not args.report_only:
        say("--only: a partial run; docs not updated")
    elif args.docs and (profile != "smoke" or args.report_only):
        if not Path(args.docs).is_file():
            say(f"{args.docs} not found (run from the palrm checkout or pass --docs PATH); docs not updated")
        else:
            for path in update_docs(Path(args.docs), results, suites):
                say(f"updated {path}")
    return 0
