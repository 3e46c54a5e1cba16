import torch

from palrm.config import ModelConfig
from palrm.models import MLP, StackedMLP, build_net


def test_stacked_mlp_equals_k_separate_mlps():
    torch.manual_seed(0)
    stacked = StackedMLP(3, 5, 4, hidden=[7], act=torch.nn.GELU)
    x = torch.randn(6, 5)
    out = stacked(x)  # (6, 3, 4)
    for k in range(3):
        single = MLP(5, 4, [7], torch.nn.GELU)
        single[0].weight.data = stacked.layers[0].weight[k].T.clone()
        single[0].bias.data = stacked.layers[0].bias[k].clone()
        single[2].weight.data = stacked.layers[1].weight[k].T.clone()
        single[2].bias.data = stacked.layers[1].bias[k].clone()
        torch.testing.assert_close(out[:, k], single(x))


def _net(kind, **kw):
    torch.manual_seed(0)
    return build_net(ModelConfig(kind=kind, k=3, d=6, hidden=[8], **kw), input_dim=5, num_users=4).eval()


def test_reward_difference_equals_pair_logit_for_every_kind():
    x = torch.randn(4, 5)
    t, a, b = x, torch.randn(4, 5), torch.randn(4, 5)
    for kind in ("pal-a", "pal-b", "btl"):
        for link in ("euclidean", "cosine"):
            net = _net(kind, link=link)
            w = net.user_weights(torch.arange(4))
            torch.testing.assert_close(net.pair_logits(w, t, a, b), net.score(w, t, a) - net.score(w, t, b))


def test_pal_a_ignores_the_prompt_and_pal_b_uses_it():
    a, b = torch.randn(2, 5), torch.randn(2, 5)
    t1, t2 = torch.randn(2, 5), torch.randn(2, 5)
    pal_a, pal_b = _net("pal-a"), _net("pal-b")
    w = pal_a.user_weights(torch.tensor([0, 1]))
    torch.testing.assert_close(pal_a.pair_logits(w, t1, a, b), pal_a.pair_logits(w, t2, a, b))
    assert not torch.allclose(pal_b.pair_logits(w, t1, a, b), pal_b.pair_logits(w, t2, a, b))


def test_euclidean_score_is_negative_distance_to_the_mixed_ideal_point():
    net = _net("pal-a", prototype_space="latent")
    w = torch.tensor([[0.2, 0.3, 0.5]])
    x = torch.randn(1, 5)
    ideal = w @ net.prototypes  # (1, d)
    expected = -((net.f(x) - ideal) ** 2).sum(-1)
    torch.testing.assert_close(net.score(w, torch.zeros(1, 5), x), expected)


def test_partition_users_use_argmax_at_evaluation_only():
    net = _net("pal-a", users="partition")
    net.user_logits.weight.data = torch.tensor([[0.1, 2.0, 0.3]] * 4)
    assert torch.equal(net.user_weights(torch.tensor([0])), torch.tensor([[0.0, 1.0, 0.0]]))
    net.train()
    assert net.user_weights(torch.tensor([0]))[0, 0] > 0


def test_cosine_scale_is_capped():
    net = _net("pal-b", link="cosine", tau_max=50.0)
    net.cosine.log_tau.data.fill_(10.0)
    assert float(net.cosine.tau.detach()) == 50.0


def test_grow_users_keeps_existing_rows():
    net = _net("pal-b")
    before = net.user_logits.weight.detach().clone()
    net.grow_users(2)
    assert net.num_users == 6
    assert torch.equal(net.user_logits.weight[:4], before)
    assert torch.equal(net.user_logits.weight[4:], torch.zeros(2, 3))


def test_btl_has_no_trainable_user_parameters():
    net = _net("btl")
    assert not net.user_logits.weight.requires_grad
    assert net.user_logits.weight not in set(net.shared_parameters())
