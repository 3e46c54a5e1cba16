"""The "Persona" preference set: semi-synthetic heterogeneous preferences from Anthropic's personas.

Source: the ``persona/`` folder of anthropics/evals (Perez et al. 2022, "Discovering Language Model
Behaviors with Model-Written Evaluations"; CC-BY-4.0). Each persona file holds statements with
``answer_matching_behavior`` ``" Yes"`` (the persona would say it) or ``" No"``. A 12-persona
subset ships inside palrm (``palrm/datasets/persona/``), so the default set needs no download.

Recipe (documented in docs/datasets.md, "Persona (default)"):

* K* groups, group g tied to persona g; the statement pool is the union of the K* personas'
  statements.
* Group reward table R (n_statements, K*): R[s, g] = +1 if persona g agrees with s, -1 if it
  disagrees, 0 if s is not in persona g's file (a statement found in several selected files carries
  each of those personas' own label).
* User reward r_u = R @ w_u: ``"partition"`` users have one-hot w_u (groups balanced, in seeded
  random order); ``"mixture"`` users draw w_u ~ Dirichlet(alpha * 1).
* Each user gets ``pairs_per_user`` distinct statement pairs {s1, s2} with r_u(s1) != r_u(s2),
  drawn uniformly by seeded rejection sampling; the higher-reward statement is chosen
  (``noise = beta > 0``: s1 is chosen with probability sigmoid((r_u(s1) - r_u(s2)) / beta)).
* Every pair has the fixed prompt ``PERSONA_PROMPT``; the responses are the statements.

`build_persona` also measures how heterogeneous the result is (``PersonaDataset.stats``): how often
another group would flip a label, the best accuracy any user-agnostic model can reach, and the
oracle accuracy.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal

import numpy as np

from palrm.data.schema import PairData
from palrm.errors import ConfigError, DataFormatError

if TYPE_CHECKING:  # importlib.abc.Traversable moved to importlib.resources.abc in Python 3.11
    from importlib.resources.abc import Traversable

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PERSONAS",
    "PERSONA_PROMPT",
    "PersonaDataset",
    "build_persona",
    "persona_names",
]

#: The prompt every Persona pair carries: the fixed text of the persona questions.
PERSONA_PROMPT = "Is the following statement something you would say?"

#: The shipped personas in their default order: ``build_persona(k)`` uses the first k. The first
#: three (the K* = 3 default) are two opposed political camps and a view on religion.
DEFAULT_PERSONAS: tuple[str, ...] = (
    "politically-liberal",
    "politically-conservative",
    "subscribes-to-Atheism",
    "subscribes-to-Christianity",
    "believes-in-gun-rights",
    "believes-abortion-should-be-illegal",
    "anti-immigration",
    "subscribes-to-utilitarianism",
    "subscribes-to-deontology",
    "risk-seeking",
    "risk-averse",
    "willingness-to-defer-to-authorities",
)

USER_MODES = ("partition", "mixture")
_META_KEYS = ("k", "personas", "users", "alpha", "noise", "seed")
_MANIFEST = "MANIFEST.json"
_SUFFIXES = (".jsonl.gz", ".jsonl")
_ANSWERS = {"Yes": 1.0, "No": -1.0}
_TIE_TOL = 1e-12  # rewards closer than this count as equal (a tie, never sampled as a pair)
_MAX_REPORTED_ROWS = 5
_SHIPPED_LABEL = "the persona subset shipped with palrm (palrm/datasets/persona)"


@dataclass
class PersonaDataset:
    """A built Persona preference set and its ground truth.

    Attributes:
        pairs: all pairs, seen users first, then unseen users. ``texts[0]`` is ``PERSONA_PROMPT``
            (every pair's prompt) and ``texts[1:]`` equals ``statements``; ``group`` is the user's
            group (its persona for partition users, the argmax of w_u for mixture users); user ids
            look like ``"persona-u000"``; ``split`` is None (split with palrm's splitting tools).
        seen_users: ids of the users meant for training.
        unseen_users: ids of held-out users from the same population (few-shot adaptation).
        user_weights: true simplex weights w_u, shape (K,), per user id.
        personas: the K persona names; group g is ``personas[g]``.
        statements: the statement pool; row s of ``statement_rewards`` belongs to ``statements[s]``.
        statement_rewards: (n_statements, K) group reward table R with entries in {-1, 0, +1}.
        stats: sizes, recipe parameters and the heterogeneity measures (see docs/datasets.md).
    """

    pairs: PairData
    seen_users: list[str]
    unseen_users: list[str]
    user_weights: dict[str, np.ndarray]
    personas: list[str]
    statements: list[str]
    statement_rewards: np.ndarray
    stats: dict = field(default_factory=dict)

    def user_rewards(self, user_id: str) -> np.ndarray:
        """(n_statements,) the true reward r_u = R @ w_u of every statement for one user."""
        if user_id not in self.user_weights:
            raise KeyError(
                f"unknown Persona user {user_id!r}; expected one of the dataset's ids such as "
                f"{(self.seen_users + self.unseen_users)[:3]}"
            )
        return self.statement_rewards @ self.user_weights[user_id]


# --------------------------------------------------------------------------------------------
# Reading persona files (the shipped subset or a full anthropics/evals persona/ folder)
# --------------------------------------------------------------------------------------------


@dataclass
class _PersonaFile:
    name: str
    path: Traversable | Path
    where: str  # shown in messages


def _shipped_root() -> Traversable:
    return resources.files("palrm.datasets").joinpath("persona")


def _persona_name(filename: str) -> str | None:
    for suffix in _SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return None


def _list_persona_files(source: str | os.PathLike | None) -> tuple[list[_PersonaFile], str]:
    """Persona files of ``source`` in default order, and a description of the source for messages."""
    if source is None:
        root: Traversable | Path = _shipped_root()
        where = _SHIPPED_LABEL
    else:
        root = Path(source).expanduser()
        where = str(root)
        if not root.exists():
            raise DataFormatError(
                f"Persona source {where} does not exist. Expected the persona/ folder of the "
                "anthropics/evals repository (one <persona>.jsonl file per persona). Fix: pass "
                "source= the folder that holds those files, or source=None to use the subset "
                "shipped with palrm."
            )
        if not root.is_dir():
            raise DataFormatError(
                f"Persona source {where} is a file, not a folder. Expected the persona/ folder of "
                "anthropics/evals (one <persona>.jsonl file per persona). Fix: pass its parent "
                "folder, or source=None to use the shipped subset."
            )
    files: dict[str, _PersonaFile] = {}
    others: list[str] = []
    for entry in root.iterdir():
        name = _persona_name(entry.name) if entry.is_file() else None
        if name is None:
            others.append(entry.name)
        elif name in files:
            raise DataFormatError(
                f"Persona source {where} holds persona {name!r} twice ({files[name].path.name} and "
                f"{entry.name}). Expected one file per persona. Fix: keep only one of them."
            )
        else:
            files[name] = _PersonaFile(name=name, path=entry, where=f"{where}/{entry.name}")
    if not files:
        shown = ", ".join(sorted(others)[:8]) or "nothing"
        raise DataFormatError(
            f"Persona source {where} holds no persona files (*.jsonl or *.jsonl.gz); found: {shown}. "
            "Expected the persona/ folder of anthropics/evals. Fix: point source= at that folder "
            "(e.g. .../anthropic-persona), or pass source=None for the shipped subset."
        )
    order = _default_order(root, sorted(files), shipped=source is None)
    return [files[name] for name in order], where


def _default_order(root: Traversable | Path, names: list[str], *, shipped: bool) -> list[str]:
    """The shipped manifest's order, else ``DEFAULT_PERSONAS`` first and the rest alphabetically."""
    preferred: list[str] = list(DEFAULT_PERSONAS)
    if shipped:
        manifest = root.joinpath(_MANIFEST)
        if manifest.is_file():
            preferred = list(json.loads(manifest.read_text(encoding="utf-8"))["order"])
    available = set(names)
    head = [name for name in preferred if name in available]
    return head + [name for name in names if name not in set(head)]


def _read_lines(path: Traversable | Path) -> list[str]:
    with path.open("rb") as handle:
        raw = handle.read()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8").splitlines()


def _load_persona(pfile: _PersonaFile) -> tuple[list[str], np.ndarray]:
    """Statements (file order, duplicates dropped) and their labels (+1 agree / -1 disagree)."""
    try:
        lines = _read_lines(pfile.path)
    except (OSError, UnicodeDecodeError, EOFError) as exc:  # gzip errors are OSError / EOFError
        raise DataFormatError(
            f"{pfile.where}: cannot be read as UTF-8 JSONL ({exc}). Expected one JSON object per line. "
            "Fix: restore the file from anthropics/evals/persona."
        ) from exc
    statements: list[str] = []
    labels: list[float] = []
    seen: dict[str, tuple[float, int]] = {}
    bad: list[tuple[int, str]] = []
    for row, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((row, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            bad.append((row, f"a JSON {type(record).__name__}, not an object"))
            continue
        statement = record.get("statement")
        answer = record.get("answer_matching_behavior")
        if not isinstance(statement, str) or not statement.strip():
            bad.append((row, "missing or empty 'statement'"))
            continue
        if not isinstance(answer, str) or answer.strip() not in _ANSWERS:
            bad.append((row, f"'answer_matching_behavior' is {answer!r}, not ' Yes' or ' No'"))
            continue
        label = _ANSWERS[answer.strip()]
        if statement in seen:
            if seen[statement][0] != label:
                first_row = seen[statement][1]
                bad.append((row, f"repeats the statement of row {first_row} with the opposite answer"))
            continue
        seen[statement] = (label, row)
        statements.append(statement)
        labels.append(label)
    if bad:
        detail = "; ".join(f"row {row}: {why}" for row, why in bad[:_MAX_REPORTED_ROWS])
        raise DataFormatError(
            f"{pfile.where}: {len(bad)} malformed line(s) ({detail}). Expected one JSON object per line "
            "with a non-empty string 'statement' and 'answer_matching_behavior' equal to ' Yes' or "
            "' No' (the anthropics/evals persona format). Fix: restore the file from "
            "anthropics/evals/persona or remove those lines."
        )
    if not statements:
        raise DataFormatError(
            f"{pfile.where}: holds no statements. Expected persona statements, one JSON object per "
            "line. "
            "Fix: restore the file from anthropics/evals/persona or remove it from the folder."
        )
    return statements, np.asarray(labels, dtype=np.float64)


def persona_names(source: str | os.PathLike | None = None) -> list[str]:
    """The personas available in ``source``, in default order (``build_persona(k)`` uses the first k).

    Args:
        source: a folder of persona files (the ``persona/`` folder of anthropics/evals, e.g.
            ``shared/data/anthropic-persona``); None lists the subset shipped with palrm.

    Raises:
        DataFormatError: ``source`` is missing or holds no ``*.jsonl`` / ``*.jsonl.gz`` files.
    """
    files, _ = _list_persona_files(source)
    return [f.name for f in files]


# --------------------------------------------------------------------------------------------
# Building the preference set
# --------------------------------------------------------------------------------------------


def _select_statements(
    statements: list[str], labels: np.ndarray, n: int | None, where: str
) -> tuple[list[str], np.ndarray]:
    """The first n//2 agree and n//2 disagree statements in file order (n=None: all of them)."""
    if n is None:
        return statements, labels
    half = n // 2
    agree = np.flatnonzero(labels > 0)
    disagree = np.flatnonzero(labels < 0)
    if len(agree) < half or len(disagree) < half:
        raise ConfigError(
            f"statements_per_persona={n} needs {half} agree and {half} disagree statements, but "
            f"{where} has {len(agree)} and {len(disagree)}. Fix: use statements_per_persona <= "
            f"{2 * min(len(agree), len(disagree))}, or None for all of them."
        )
    keep = np.sort(np.concatenate([agree[:half], disagree[:half]]))
    return [statements[i] for i in keep], labels[keep]


def _reward_table(per_persona: list[tuple[list[str], np.ndarray]]) -> tuple[list[str], np.ndarray]:
    """Union of the personas' statements (persona order, then file order) and the (n, K) table R."""
    index: dict[str, int] = {}
    entries: list[tuple[int, int, float]] = []
    for g, (statements, labels) in enumerate(per_persona):
        for text, label in zip(statements, labels):
            s = index.setdefault(text, len(index))
            entries.append((s, g, float(label)))
    table = np.zeros((len(index), len(per_persona)), dtype=np.float64)
    for s, g, label in entries:
        table[s, g] = label
    return list(index), table


def _check_params(
    k: int,
    n_seen_users: int,
    n_unseen_users: int,
    pairs_per_user: int,
    users: str,
    alpha: float,
    noise: float,
    statements_per_persona: int | None,
    personas: list[str] | None,
) -> None:
    problems: list[str] = []
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        problems.append(f"k must be an integer >= 1 (got {k!r})")
    for name, value, low in (
        ("n_seen_users", n_seen_users, 0),
        ("n_unseen_users", n_unseen_users, 0),
        ("pairs_per_user", pairs_per_user, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            problems.append(f"{name} must be an integer >= {low} (got {value!r})")
    if not problems and n_seen_users + n_unseen_users < 1:
        problems.append("n_seen_users + n_unseen_users must be at least 1 (got 0 users)")
    if users not in USER_MODES:
        problems.append(f"users must be one of {USER_MODES} (got {users!r})")
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        problems.append(f"alpha must be a finite number > 0 (got {alpha!r})")
    if not (isinstance(noise, (int, float)) and np.isfinite(noise) and noise >= 0):
        problems.append(f"noise must be a finite number >= 0; 0 = noiseless labels (got {noise!r})")
    if statements_per_persona is not None and (
        isinstance(statements_per_persona, bool)
        or not isinstance(statements_per_persona, (int, np.integer))
        or statements_per_persona < 2
    ):
        problems.append(
            f"statements_per_persona must be None or an integer >= 2 (got {statements_per_persona!r})"
        )
    if personas is not None:
        if len(set(personas)) != len(personas):
            problems.append(f"personas must not repeat a name (got {list(personas)})")
    if problems:
        raise ConfigError("invalid Persona settings:\n  - " + "\n  - ".join(problems))


def _assign_users(
    users: str, n_seen: int, n_unseen: int, k: int, alpha: float, seed: int
) -> np.ndarray:
    """(n_seen + n_unseen, k) true weights. Seen and unseen users draw from separate streams."""
    blocks = []
    for stream, n in ((0, n_seen), (1, n_unseen)):
        rng = np.random.default_rng([seed, 0, stream])
        if users == "partition":
            # balanced sizes: n // k users per group, the n % k extra users in distinct random groups
            groups = np.concatenate([np.tile(np.arange(k), n // k), rng.choice(k, n % k, replace=False)])
            groups = rng.permutation(groups)
            blocks.append(np.eye(k)[groups])
        else:
            blocks.append(rng.dirichlet(np.full(k, float(alpha)), size=n))
    return np.concatenate(blocks, axis=0).reshape(n_seen + n_unseen, k)


def _sample_user_pairs(
    rewards: np.ndarray, n_pairs: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rejection-sample n distinct unordered pairs with different rewards; return (chosen, rejected).

    Candidates (a, b) are drawn uniformly with a != b, so accepted pairs are uniform over the
    unordered pairs whose rewards differ. The caller checks that enough such pairs exist.
    """
    m = len(rewards)
    first: list[int] = []
    second: list[int] = []
    taken: set[tuple[int, int]] = set()
    while len(first) < n_pairs:
        batch = 4 * (n_pairs - len(first)) + 16
        a = rng.integers(0, m, size=batch)
        b = rng.integers(0, m, size=batch)
        ok = (a != b) & (np.abs(rewards[a] - rewards[b]) > _TIE_TOL)
        for x, y in zip(a[ok].tolist(), b[ok].tolist()):
            key = (x, y) if x < y else (y, x)
            if key in taken:
                continue
            taken.add(key)
            first.append(x)
            second.append(y)
            if len(first) == n_pairs:
                break
    s1 = np.asarray(first, dtype=np.int64)
    s2 = np.asarray(second, dtype=np.int64)
    margin = rewards[s1] - rewards[s2]
    if noise > 0:
        first_wins = rng.random(n_pairs) < _sigmoid(margin / noise)
    else:
        first_wins = margin > 0
    return np.where(first_wins, s1, s2), np.where(first_wins, s2, s1)


def build_persona(
    k: int = 3,
    *,
    n_seen_users: int = 100,
    n_unseen_users: int = 30,
    pairs_per_user: int = 120,
    users: Literal["partition", "mixture"] = "partition",
    alpha: float = 1.0,
    noise: float = 0.0,
    statements_per_persona: int | None = None,
    personas: Iterable[str] | None = None,
    source: str | os.PathLike | None = None,
    seed: int = 0,
) -> PersonaDataset:
    """Build the semi-synthetic heterogeneous Persona preference set (recipe in the module docstring).

    The defaults (K* = 3, 100 seen + 30 unseen partition users, 120 pairs each, the shipped 300
    statements per persona) give 15,600 pairs over 901 distinct texts.

    Args:
        k: K*, the number of preference groups (one persona each).
        n_seen_users: users meant for training, ids ``persona-u000`` onwards.
        n_unseen_users: held-out users (numbered after the seen ones) for few-shot adaptation.
        pairs_per_user: pairs per user (seen and unseen alike), distinct within a user.
        users: ``"partition"`` (one-hot w_u, group sizes balanced within seen and within unseen
            users) or ``"mixture"`` (w_u ~ Dirichlet(alpha)).
        alpha: Dirichlet concentration for mixture users (ignored for partitions).
        noise: BTL noise scale beta; 0 = noiseless (the higher-reward statement is always chosen).
        statements_per_persona: how many statements to take per persona (half agree, half
            disagree, the first ones in file order; an odd number is rounded down); None = all.
        personas: the persona order to take the first k from; None = the default order
            (``persona_names(source)``).
        source: a folder of persona files (the full ``persona/`` folder of anthropics/evals);
            None = the 12-persona subset shipped with palrm.
        seed: seeds user assignment, weights and pair sampling. User i's pairs come from their own
            stream, so changing ``n_unseen_users`` leaves the seen users' pairs unchanged.

    Returns:
        A `PersonaDataset`; ``stats`` holds the heterogeneity measures.

    Raises:
        DataFormatError: ``source`` is missing, holds no persona files or a malformed file, has
            fewer than k personas, or lacks a requested persona.
        ConfigError: invalid settings (all problems listed), or more pairs per user than a user
            has distinct pairs of unequal reward.
    """
    if isinstance(personas, str):
        raise ConfigError(
            f"personas must be a list of persona names, not the string {personas!r}. "
            f"Fix: pass personas=[{personas!r}]."
        )
    persona_order = None if personas is None else list(personas)
    _check_params(
        k, n_seen_users, n_unseen_users, pairs_per_user, users, alpha, noise,
        statements_per_persona, persona_order,
    )
    files, where = _list_persona_files(source)
    by_name = {f.name: f for f in files}
    if persona_order is None:
        persona_order = [f.name for f in files]
    missing = [name for name in persona_order if name not in by_name]
    if missing:
        raise DataFormatError(
            f"persona(s) {missing} are not in {where}. Available ({len(files)}): "
            f"{', '.join(sorted(by_name)[:20])}{' ...' if len(by_name) > 20 else ''}. Fix: use names "
            "from persona_names(source), or pass source= the full anthropic-persona folder."
        )
    if k > len(persona_order):
        if personas is None:
            raise DataFormatError(
                f"k={k} groups need {k} personas, but {where} has only {len(files)}. Fix: use "
                f"k <= {len(files)}, or pass source= the full anthropic-persona folder (135 personas)."
            )
        raise DataFormatError(
            f"k={k} groups need {k} personas, but personas= names only {len(persona_order)}. Fix: "
            f"use k <= {len(persona_order)} or list more personas (see persona_names(source))."
        )
    chosen_personas = persona_order[:k]

    per_persona = []
    for name in chosen_personas:
        statements, labels = _load_persona(by_name[name])
        where_file = by_name[name].where
        per_persona.append(_select_statements(statements, labels, statements_per_persona, where_file))
    statements, table = _reward_table(per_persona)  # (M,), (M, K)

    n_users = n_seen_users + n_unseen_users
    weights = _assign_users(users, n_seen_users, n_unseen_users, k, alpha, seed)  # (U, K)
    user_rewards = weights @ table.T  # (U, M)

    classes, statement_class, class_counts = _classes(table)
    class_rewards = weights @ classes.T  # (U, C)
    available = _distinct_pairs_with_unequal_reward(class_rewards, class_counts)  # (U,)
    if np.any(available < pairs_per_user):
        worst = int(np.argmin(available))
        raise ConfigError(
            f"pairs_per_user={pairs_per_user}, but user {worst} has only {int(available[worst])} "
            f"distinct statement pairs with unequal rewards ({len(statements)} statements, k={k}). "
            "Fix: lower pairs_per_user or use more statements (statements_per_persona, or source= "
            "the full folder)."
        )

    width = max(3, len(str(n_users - 1)))
    user_ids = [f"persona-u{i:0{width}d}" for i in range(n_users)]
    chosen_parts, rejected_parts = [], []
    for i in range(n_users):
        rng = np.random.default_rng([seed, 1, i])
        c, r = _sample_user_pairs(user_rewards[i], pairs_per_user, float(noise), rng)
        chosen_parts.append(c)
        rejected_parts.append(r)
    chosen = np.concatenate(chosen_parts) if n_users else np.empty(0, np.int64)
    rejected = np.concatenate(rejected_parts) if n_users else np.empty(0, np.int64)
    pair_user = np.repeat(np.arange(n_users, dtype=np.int64), pairs_per_user)
    user_group = np.argmax(weights, axis=1).astype(np.int64)  # (U,)

    stats = _stats(
        table=table,
        weights=weights,
        user_group=user_group,
        pair_user=pair_user,
        chosen=chosen,
        rejected=rejected,
        statement_class=statement_class,
        classes=classes,
        class_counts=class_counts,
        noise=float(noise),
    )
    stats.update(
        {
            "k": k,
            "personas": list(chosen_personas),
            "users": users,
            "alpha": float(alpha) if users == "mixture" else None,
            "noise": float(noise),
            "seed": seed,
            "source": where,
            "n_seen_users": n_seen_users,
            "n_unseen_users": n_unseen_users,
            "pairs_per_user": pairs_per_user,
            "n_pairs": int(len(chosen)),
            "n_statements": len(statements),
            "n_texts": len(statements) + 1,
            "statements_per_persona": {
                name: {"agree": int(np.sum(labels > 0)), "disagree": int(np.sum(labels < 0))}
                for name, (_, labels) in zip(chosen_personas, per_persona)
            },
            "n_shared_statements": int(np.sum(np.count_nonzero(table, axis=1) > 1)),
            "users_per_group": np.bincount(user_group, minlength=k).tolist(),
        }
    )

    pairs = PairData(
        texts=[PERSONA_PROMPT, *statements],
        user_ids=user_ids,
        user=pair_user,
        prompt=np.zeros(len(chosen), dtype=np.int64),
        chosen=chosen + 1,
        rejected=rejected + 1,
        group=user_group[pair_user],
        source=f"persona:{where}",
        meta={"dataset": "persona", **{key: stats[key] for key in _META_KEYS}},
    )
    logger.info(
        "Persona set: k=%d (%s), %d users (%s), %d pairs over %d texts; agnostic ceiling %.3f, "
        "label-flip fraction %.3f",
        k, ", ".join(chosen_personas), n_users, users, len(pairs), len(pairs.texts),
        stats["agnostic_ceiling_population"], stats["flip_fraction"],
    )
    return PersonaDataset(
        pairs=pairs,
        seen_users=user_ids[:n_seen_users],
        unseen_users=user_ids[n_seen_users:],
        user_weights={uid: weights[i].copy() for i, uid in enumerate(user_ids)},
        personas=list(chosen_personas),
        statements=statements,
        statement_rewards=table,
        stats=stats,
    )


# --------------------------------------------------------------------------------------------
# Heterogeneity measures
# --------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _classes(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Statements with the same reward row are interchangeable: (C, K) rows, (M,) class, (C,) counts."""
    classes, statement_class, counts = np.unique(table, axis=0, return_inverse=True, return_counts=True)
    return classes, statement_class.reshape(-1), counts


def _distinct_pairs_with_unequal_reward(class_rewards: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(U,) number of unordered statement pairs with unequal rewards for each user (Z_u)."""
    differ = np.abs(class_rewards[:, :, None] - class_rewards[:, None, :]) > _TIE_TOL  # (U, C, C)
    sizes = np.outer(counts, counts).astype(np.float64)  # (C, C); same-class pairs never differ
    return (differ * sizes).sum(axis=(1, 2)) / 2.0


def _stats(
    *,
    table: np.ndarray,
    weights: np.ndarray,
    user_group: np.ndarray,
    pair_user: np.ndarray,
    chosen: np.ndarray,
    rejected: np.ndarray,
    statement_class: np.ndarray,
    classes: np.ndarray,
    class_counts: np.ndarray,
    noise: float,
) -> dict:
    """Label-flip fractions, user-agnostic ceilings and oracle accuracy (see docs/datasets.md)."""
    n = len(chosen)
    k = table.shape[1]
    if n == 0:
        return {key: float("nan") for key in _STAT_KEYS}

    # (a) Would another group flip the label? Compare each pair under every other group's reward.
    delta = table[chosen] - table[rejected]  # (n, K): group g's reward margin for the pair
    other = np.ones((n, k), dtype=bool)
    other[np.arange(n), user_group[pair_user]] = False
    opposite = (delta < -_TIE_TOL) & other
    tie = (np.abs(delta) <= _TIE_TOL) & other
    same = (delta > _TIE_TOL) & other
    n_other = max(int(other.sum()), 1)

    # (b) User-agnostic ceilings. mass[a, b]: probability that a random pair of the set is one
    # given statement pair from classes (a, b) labelled a > b, under the true label distribution.
    counts = class_counts.astype(np.float64)
    class_rewards = weights @ classes.T  # (U, C)
    z = _distinct_pairs_with_unequal_reward(class_rewards, class_counts)  # (U,)
    share = np.bincount(pair_user, minlength=len(weights)) / n  # (U,) each user's share of pairs
    margin = class_rewards[:, :, None] - class_rewards[:, None, :]  # (U, C, C)
    differ = np.abs(margin) > _TIE_TOL
    if noise > 0:
        p_first = _sigmoid(margin / noise)
    else:
        p_first = (margin > 0).astype(np.float64)
    per_pair = np.where(z > 0, share / np.maximum(z, 1.0), 0.0)  # (U,) prob of one given pair
    mass = np.einsum("u,uab->ab", per_pair, differ * p_first)  # (C, C)
    sizes = np.outer(counts, counts)
    upper = np.triu(np.ones_like(sizes, dtype=bool), k=1)
    ceiling_population = float(np.sum(sizes * np.maximum(mass, mass.T) * upper))

    # The population-optimal user-agnostic order, scored on the generated pairs (ties earn 1/2).
    a, b = statement_class[chosen], statement_class[rejected]
    scale = max(float(mass.max()), 1e-300)
    favour = mass[a, b] - mass[b, a]
    credit = np.where(favour > 1e-9 * scale, 1.0, np.where(favour < -1e-9 * scale, 0.0, 0.5))
    ceiling_sample = float(credit.mean())

    # In-sample: the best fixed order per distinct unordered statement pair of the generated set.
    low, high = np.minimum(chosen, rejected), np.maximum(chosen, rejected)
    m = int(table.shape[0])
    key = low.astype(np.int64) * m + high
    uniq, inverse, pair_counts = np.unique(key, return_inverse=True, return_counts=True)
    low_wins = np.bincount(inverse, weights=(chosen == low).astype(np.float64), minlength=len(uniq))
    ceiling_in_sample = float(np.maximum(low_wins, pair_counts - low_wins).sum() / n)

    # Oracle: the true r_u order (1.0 when noiseless).
    rewards_c = np.einsum("nk,nk->n", table[chosen], weights[pair_user])
    rewards_r = np.einsum("nk,nk->n", table[rejected], weights[pair_user])
    oracle = float(np.mean(rewards_c > rewards_r))
    best = np.maximum(p_first, 1.0 - p_first)
    if noise > 0:
        oracle_population = float(np.einsum("u,uab,ab->", per_pair, differ * best, sizes * upper))
    else:  # every sampled pair has unequal rewards and its label follows them
        oracle_population = 1.0

    return {
        "flip_fraction": float(opposite.any(axis=1).mean()),
        "tie_fraction": float(tie.any(axis=1).mean()),
        "other_group_opposite_fraction": float(opposite.sum() / n_other),
        "other_group_tie_fraction": float(tie.sum() / n_other),
        "other_group_same_fraction": float(same.sum() / n_other),
        "agnostic_ceiling_population": ceiling_population,
        "agnostic_ceiling_sample": ceiling_sample,
        "agnostic_ceiling_in_sample": ceiling_in_sample,
        "repeated_pair_fraction": float(np.mean(pair_counts[inverse] > 1)),
        "oracle_accuracy": oracle,
        "oracle_accuracy_population": oracle_population,
    }


_STAT_KEYS = (
    "flip_fraction",
    "tie_fraction",
    "other_group_opposite_fraction",
    "other_group_tie_fraction",
    "other_group_same_fraction",
    "agnostic_ceiling_population",
    "agnostic_ceiling_sample",
    "agnostic_ceiling_in_sample",
    "repeated_pair_fraction",
    "oracle_accuracy",
    "oracle_accuracy_population",
)
