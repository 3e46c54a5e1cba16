"""`palrm serve MODEL_DIR`: the HTTP reward service (imports FastAPI / uvicorn only when it runs)."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import sys
from pathlib import Path

from palrm.cli.flags import add_device_flag
from palrm.errors import ConfigError, PalrmError

logger = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
TOKEN_HINT = "python -c \"import secrets; print(secrets.token_urlsafe(32))\" > token.txt"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; every other address or name counts as exposed."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str | os.PathLike) -> str:
    path = Path(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file {path}: cannot read it ({exc})") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(f"--token-file {path}: the token must be one line of at least {MIN_TOKEN_CHARS} characters "
                          f"without spaces; make one with: {TOKEN_HINT}")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("--token-file %s is readable by other users; chmod 600 it", path)
    return token


def check_bind(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host} is reachable from other machines, so a bearer token is required: write one to a "
                          f"file ({TOKEN_HINT}) and pass --token-file token.txt, or bind 127.0.0.1")


def settings_from_args(args):
    from palrm.serve.engine import ServeSettings
    from palrm.serve.postgres import is_postgres_url

    token = read_token(args.token_file) if args.token_file else None
    check_bind(args.host, token)
    default_weights = None
    if args.default_weights:
        text = args.default_weights.strip()
        if text == "population" or text.startswith("group:"):
            default_weights = text
        else:
            try:
                default_weights = [float(x) for x in text.split(",")]
            except ValueError:
                raise ConfigError(f"--default-weights {text!r}: expected population, group:K or w1,...,wK") from None
    for name in ("port", "max_body_bytes", "max_items", "max_pairs", "max_text_chars", "queue_items", "max_batch_items",
                 "max_batch_tokens", "prompt_cache"):
        value = getattr(args, name)
        if value < (0 if name in ("port", "prompt_cache") else 1) or (name == "port" and value > 65535):
            raise ConfigError(f"--{name.replace('_', '-')} {value}: out of range")
    if not 0.01 <= args.poll_interval <= 60:
        raise ConfigError(f"--poll-interval {args.poll_interval}: expected 0.01 to 60 seconds")
    url = args.store if is_postgres_url(args.store) else None
    if args.store and "://" in args.store and not url:
        raise ConfigError(f"--store {args.store.split('://')[0]}://...: the only store URL is postgresql://USER@HOST:PORT/DB; "
                          "anything else is a SQLite file path")
    return ServeSettings(
        host=args.host, port=args.port, token=token, store_path=Path(args.store) if args.store and not url else None,
        store_url=url, max_batch_tokens=args.max_batch_tokens, prompt_cache_size=args.prompt_cache,
        cache_completions=args.cache_completions, encoder_backend=args.encoder_backend, normalize=args.normalize,
        poll_interval=args.poll_interval,
        max_body_bytes=args.max_body_bytes, max_items=args.max_items, max_pairs=args.max_pairs,
        max_text_chars=args.max_text_chars, queue_items=args.queue_items, max_batch_items=args.max_batch_items,
        batching=not args.no_batching, default_user=args.default_user, default_weights=default_weights,
        default_aggregate=args.default_aggregate,
        embedding_cache=args.embedding_cache, device=args.device, query_pools=_query_pools(args.query_pool),
    )


def _query_pools(items: list[str]) -> dict:
    pools = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--query-pool {item!r}: expected ID=FILE, e.g. --query-pool onboarding=pool.jsonl")
        if not Path(path).is_file():
            raise ConfigError(f"--query-pool {item!r}: {path} is not a file")
        pools[name] = path
    return pools


def cmd_serve(args) -> int:
    settings = settings_from_args(args)  # refuse bad binds before loading anything
    try:
        import uvicorn

        from palrm.serve.app import create_app
        from palrm.serve.engine import RewardEngine
    except ImportError as exc:
        raise PalrmError(f"palrm serve needs FastAPI and uvicorn ({exc.name} is missing): pip install 'palrm[serve]'") from None
    engine = RewardEngine(args.model_dir, settings)
    if settings.default_user is not None or settings.default_weights is not None:
        engine.resolve(settings.default_user, settings.default_weights)  # fail now, not on the first request
    app = create_app(engine)
    print(f"palrm serve: {args.model_dir} ({engine.model.net_.kind}, K={engine.k}, {len(engine.model.users_)} users) on "
          f"http://{settings.host}:{settings.port}  auth={'bearer token' if settings.token else 'off (loopback only)'}  "
          f"store={engine.store.path}  batching={'on' if settings.batching else 'off'}  "
          f"encoder={settings.encoder_backend}  rewards={'normalised' if settings.normalize else 'raw'}",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, access_log=args.access_log,
                server_header=False, timeout_graceful_shutdown=5, timeout_keep_alive=30)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="HTTP reward service (rewards, comparisons, user onboarding, OpenRLHF /get_reward)",
        description="Serve a trained model over HTTP (FastAPI + uvicorn). Binds 127.0.0.1 unless told otherwise; "
                    "any other address needs --token-file. API docs at http://HOST:PORT/docs.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a trained palrm model directory (never written to)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token-file)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token-file", metavar="PATH", help="file holding the bearer token clients must send")
    p.add_argument("--store", metavar="PATH|URL",
                   help="user store: a SQLite file (default: MODEL_DIR.users.sqlite beside the model), or "
                        "postgresql://USER:PASSWORD@HOST:PORT/DB shared by many replicas (pip install 'palrm[postgres]')")
    p.add_argument("--poll-interval", type=float, default=0.2, metavar="S",
                   help="PostgreSQL store: seconds between polls for users adapted by other replicas (default 0.2)")
    p.add_argument("--normalize", action="store_true",
                   help="return (r - mean) / std with the model's reference statistics (default: raw rewards; "
                        "/v1/reward requests can override with \"normalize\")")
    p.add_argument("--default-user", metavar="ID", help="user for /get_reward queries without labels (and items without user_id)")
    p.add_argument("--default-weights", metavar="SPEC", help="instead: population, group:K or w1,...,wK")
    p.add_argument("--default-aggregate", metavar="SPEC", help="instead: one reward for the population for /get_reward "
                   "queries without labels: maxmin, mean, alpha:1, ... (palrm.aggregate)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    g.add_argument("--max-items", type=int, default=256, help="items (or queries) per request (default 256)")
    g.add_argument("--max-pairs", type=int, default=1000, help="pairs per adapt request (default 1000)")
    g.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text (default 20000)")
    g.add_argument("--queue-items", type=int, default=8192, help="items waiting to be scored before 503 (default 8192)")
    g.add_argument("--max-batch-items", type=int, default=1024, help="items per model forward (default 1024)")
    g.add_argument("--max-batch-tokens", type=int, default=8192,
                   help="estimated tokens per model forward (default 8192): bounds how long a late request waits")
    g.add_argument("--no-batching", action="store_true", help="score each request on its own (no micro-batching)")
    p.add_argument("--query-pool", action="append", default=[], metavar="ID=FILE",
                   help="candidate pairs for POST /v1/users/{id}/next-query {\"pool_id\": ID} (repeatable)")
    e = p.add_argument_group("encoding")
    e.add_argument("--encoder-backend", default="torch", choices=["torch", "onnx", "onnx-int8"],
                   help="torch (default), or ONNX Runtime on the CPU, fp32 or int8-quantised (sentence-transformers "
                        "encoders; exported locally once; pip install 'palrm[onnx]')")
    e.add_argument("--prompt-cache", type=int, default=4096, metavar="N",
                   help="prompt embeddings kept in memory, least recently used evicted (default 4096; 0: off)")
    e.add_argument("--cache-completions", action="store_true",
                   help="also keep completions in the in-memory cache (off: RLHF completions are unique)")
    p.add_argument("--embedding-cache", action="store_true", help="also cache embeddings on disk (off: completions are unique)")
    add_device_flag(p)
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)
