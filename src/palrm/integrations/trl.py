"""TRL integration: a palrm reward as a `GRPOTrainer` reward function.

    from trl import GRPOConfig, GRPOTrainer
    from palrm import PALRewardModel
    from palrm.integrations.trl import reward_function

    model = PALRewardModel.load("runs/quickstart/model")
    trainer = GRPOTrainer(model=policy, reward_funcs=reward_function(model), train_dataset=ds, args=GRPOConfig(...))

The dataset needs a `prompt` column and, for a personalized model, a `user_id` column (TRL passes
every extra column to reward functions as a keyword argument, one value per completion). Plain-text
prompts/completions (strings) and conversational ones (lists of {"role", "content"} messages) both
work. TRL itself is not imported here: `pip install palrm[trl]` installs it for the trainer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from palrm.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

__all__ = ["reward_function", "message_text", "prompt_text", "completion_text"]


def message_text(message: Any) -> str:
    """The text of one chat message ({"role", "content"}); content may be a string or a list of parts."""
    if isinstance(message, str):
        return message
    if not isinstance(message, dict) or "content" not in message:
        raise DataFormatError(f"expected a chat message {{'role': ..., 'content': ...}}, got {type(message).__name__}")
    content = message["content"]
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return "" if content is None else str(content)


def prompt_text(prompt: Any) -> str:
    """A plain-text prompt as is; a conversation -> the text of its last user message (all text when none)."""
    if prompt is None or isinstance(prompt, str):
        return prompt or ""
    if isinstance(prompt, dict):
        prompt = [prompt]
    if isinstance(prompt, Sequence):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return message_text(users[-1]) if users else "\n".join(message_text(m) for m in prompt)
    raise DataFormatError(f"prompt: expected a string or a list of chat messages, got {type(prompt).__name__}")


def completion_text(completion: Any) -> str:
    """A plain-text completion as is; conversational -> the assistant messages' text joined by newlines."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, Sequence):
        msgs = [m for m in completion if not isinstance(m, dict) or m.get("role", "assistant") == "assistant"]
        return "\n".join(message_text(m) for m in msgs)
    raise DataFormatError(f"completion: expected a string or a list of chat messages, got {type(completion).__name__}")


def _load(model: Any):
    if isinstance(model, (str, os.PathLike)):
        import json

        path = Path(model)
        try:
            fmt = json.loads((path / "config.json").read_text()).get("format")
        except (OSError, ValueError):
            fmt = None
        if fmt == "palrm-scalar-reward":
            from palrm.export import ScalarRewardModel

            return ScalarRewardModel.from_pretrained(path)
        from palrm import PALRewardModel

        return PALRewardModel.load(path)
    return model


def reward_function(
    model: Any,
    *,
    user_column: str = "user_id",
    default_user: str | None = None,
    default_weights: Any = None,
    aggregate: str | None = None,
    name: str | None = None,
    risk: str | None = None,
    normalize: bool = False,
) -> Callable[..., list[float]]:
    """A TRL reward function `f(prompts, completions, **columns) -> list[float]` backed by palrm.

    Args:
        model: a `PALRewardModel`, a `ScalarRewardModel`, or the directory of either.
        user_column: the dataset column holding each example's user id (PALRewardModel only).
        default_user: user for examples without a user id (column absent or value None).
        default_weights: mixture for such examples instead: K numbers, "population" or "group:k".
        aggregate: one reward for the whole population for every example, e.g. "maxmin", "alpha:1",
            "quantile:0.1@users" (`palrm.aggregate`); the user column is then ignored.
        name: the function's `__name__` (TRL logs rewards under it); default "palrm_reward".
        risk: None (the user's MAP weights), "mean" (the posterior mean reward) or "quantile:Q" (the
            Q-quantile of the reward under the user's weight posterior: risk-averse RLHF).
        normalize: return (r - mean) / std with the model's reference statistics of users' rewards
            (default: raw; a `ScalarRewardModel` exported with --normalize is normalised either way).

    Without a default, an example without a user id raises ConfigError; an unknown user id raises
    UnknownUserError (onboard the user with `model.adapt` first).
    """
    rm = _load(model)
    from palrm.export import ScalarRewardModel
    from palrm.training.posterior import parse_risk

    scalar = isinstance(rm, ScalarRewardModel)
    parse_risk(risk)  # a bad risk fails here, not at the first training step
    if default_user is not None and default_weights is not None:
        raise ConfigError("reward_function: give default_user or default_weights, not both")
    if aggregate is not None:
        from palrm.aggregate import parse_aggregate

        if scalar:
            raise ConfigError("reward_function: a ScalarRewardModel has one reward already; export it with "
                              "`palrm export --aggregate SPEC` instead of passing aggregate=")
        if default_user is not None or default_weights is not None:
            raise ConfigError("reward_function: aggregate scores every example for the population; drop default_user/default_weights")
        if risk is not None:
            raise ConfigError("reward_function: give aggregate (one reward for the population) or risk (per user), not both")
        aggregate = str(parse_aggregate(aggregate))  # a bad spec fails here, not at the first training step

    def palrm_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        if len(prompts) != n:
            raise DataFormatError(f"palrm reward: {len(prompts)} prompts for {n} completions")
        p_texts = [prompt_text(p) for p in prompts]
        c_texts = [completion_text(c) for c in completions]
        if scalar:
            return [float(x) for x in rm(p_texts, c_texts, normalize=True if normalize else None, risk=risk)]
        if aggregate is not None:
            return [float(x) for x in rm.reward_batch(p_texts, c_texts, aggregate=aggregate, normalize=normalize)]
        users = kwargs.get(user_column)
        if users is None:
            users = [None] * n
        elif isinstance(users, str) or len(users) != n:
            raise DataFormatError(f"palrm reward: column {user_column!r} must hold one user id per completion")
        user_ids: list[str | None] = []
        weights: list[Any] = []
        for u in users:
            if u is None or (isinstance(u, float) and u != u):
                if default_user is None and default_weights is None and rm.net_.has_users:
                    raise ConfigError(f"palrm reward: an example has no {user_column!r}; add that column to the dataset "
                                      "or pass reward_function(model, default_user=ID | default_weights='population')")
                user_ids.append(default_user)
                weights.append(default_weights)
            else:
                user_ids.append(str(u))
                weights.append(None)
        w = weights if any(x is not None for x in weights) else None
        return [float(x) for x in rm.reward_batch(p_texts, c_texts, user_ids=user_ids, weights=w, risk=risk,
                                                  normalize=normalize)]

    palrm_reward.__name__ = palrm_reward.__qualname__ = name or "palrm_reward"
    return palrm_reward
