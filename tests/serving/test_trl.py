"""TRL integration: the reward function's contract, and GRPOTrainer for two steps fully offline."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from palrm import PALRewardModel, ScalarRewardModel
from palrm.errors import ConfigError, UnknownUserError
from palrm.export import export_scalar
from palrm.integrations.trl import completion_text, prompt_text, reward_function

CATS, DOGS = "I love cats, answer 3", "Dogs are the best, reply 4"


def test_plain_and_conversational_completions(model_dir):
    model = PALRewardModel.load(model_dir)
    f = reward_function(model)
    # TRL calls reward_func(prompts=..., completions=..., completion_ids=..., **dataset columns, trainer_state=...)
    plain = f(prompts=["Which pet?"] * 2, completions=[CATS, DOGS], completion_ids=[[1], [2]],
              user_id=["user0", "user0"], trainer_state=None, log_extra=None, log_metric=None)
    expected = model.reward("user0", "Which pet?", [CATS, DOGS])
    np.testing.assert_allclose(plain, expected, rtol=1e-6)
    assert all(isinstance(x, float) for x in plain)
    conv = f(prompts=[[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which pet?"}]] * 2,
             completions=[[{"role": "assistant", "content": CATS}], [{"role": "assistant", "content": DOGS}]],
             user_id=["user0", "user0"])
    np.testing.assert_allclose(conv, expected, rtol=1e-6)
    # users that disagree get opposite orderings (user0 prefers cats, user1 dogs)
    mixed = f(prompts=["Which pet?"] * 4, completions=[CATS, DOGS, CATS, DOGS], user_id=["user0", "user0", "user1", "user1"])
    assert (mixed[0] > mixed[1]) != (mixed[2] > mixed[3])
    assert f.__name__ == "palrm_reward"
    params = inspect.signature(f).parameters
    assert "prompts" in params and "completions" in params and any(p.kind is p.VAR_KEYWORD for p in params.values())


def test_defaults_errors_and_scalar_models(model_dir, tmp_path):
    model = PALRewardModel.load(model_dir)
    with pytest.raises(ConfigError, match="user_id"):
        reward_function(model)(prompts=["p"], completions=["c"])
    with pytest.raises(UnknownUserError):
        reward_function(model)(prompts=["p"], completions=["c"], user_id=["nobody"])
    pop = reward_function(model, default_weights="population")(prompts=["Which pet?"], completions=[CATS], user_id=[None])
    np.testing.assert_allclose(pop, model.reward(None, "Which pet?", [CATS], weights="population"), rtol=1e-6)
    rm_dir = export_scalar(model, tmp_path / "rm", user_id="user1")
    for source in (rm_dir, ScalarRewardModel.from_pretrained(rm_dir)):
        out = reward_function(source, name="alice")(prompts=["Which pet?"] * 2, completions=[CATS, DOGS])
        np.testing.assert_allclose(out, model.reward("user1", "Which pet?", [CATS, DOGS]), rtol=1e-5, atol=1e-5)
    assert prompt_text([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == "hi"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "a\nb"


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "which pet ? i love cats dogs are the best answer reply , a b c d e f g h".split()
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *dict.fromkeys(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   padding_side="left")


@pytest.mark.slow
def test_grpo_trainer_two_steps_offline(model_dir, tmp_path):
    trl = pytest.importorskip("trl")
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    policy = LlamaForCausalLM(config)
    ds = Dataset.from_dict({"prompt": ["which pet ?"] * 8, "user_id": ["user0", "user1"] * 4})
    calls = []
    inner = reward_function(PALRewardModel.load(model_dir))

    def palrm_reward(prompts, completions, **kwargs):
        out = inner(prompts, completions, **kwargs)
        calls.append((list(kwargs["user_id"]), out))
        return out

    args = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=6, max_steps=2, learning_rate=1e-3, logging_steps=1, report_to="none",
                          save_strategy="no", use_cpu=True, bf16=False, seed=0, dataloader_num_workers=0)
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=palrm_reward, args=args, train_dataset=ds,
                              processing_class=tokenizer)
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.train()
    assert trainer.state.global_step == 2
    assert len(calls) >= 2 and all(len(u) == len(r) for u, r in calls)
    assert {"user0", "user1"} <= {u for users, _ in calls for u in users}
    assert all(np.isfinite(r).all() for _, r in calls)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, policy.parameters()))


def test_aggregate_reward_function(model_dir):
    model = PALRewardModel.load(model_dir)
    f = reward_function(model, aggregate="maxmin")
    got = f(prompts=["Which pet?"] * 2, completions=[CATS, DOGS], user_id=["user0", "nobody"])  # users are ignored
    np.testing.assert_allclose(got, model.reward(None, "Which pet?", [CATS, DOGS], aggregate="maxmin"), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="valid forms"):
        reward_function(model, aggregate="softmin:0")
    with pytest.raises(ConfigError, match="default_user"):
        reward_function(model, aggregate="maxmin", default_user="user0")
