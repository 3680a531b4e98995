"""The RL mathematics on hand-made tensors: masks, GAE, group advantages, clipped losses."""
import pytest
import torch

from pipeline.train import rl


def test_answer_mask_keeps_tokens_through_the_first_eos():
    eos = 9
    ids = torch.tensor([[5, 6, 9, 0, 0], [5, 9, 9, 7, 0], [1, 2, 3, 4, 5]])
    assert rl.answer_mask(ids, eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_positions_count_from_the_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert rl.positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


def test_answer_logprobs_read_the_next_token():
    logits = torch.zeros(1, 4, 3)
    logits[0, 1, 2] = 10.0  # position 1 predicts token 2 at position 2
    ids = torch.tensor([[0, 1, 2, 0]])
    lp = rl.answer_logprobs(logits, ids, prompt_len=2)
    assert lp.shape == (1, 2)
    assert lp[0, 0].item() == pytest.approx(0.0, abs=1e-3)
    assert lp[0, 1].item() == pytest.approx(torch.log(torch.tensor(1 / 3)).item(), abs=1e-5)


def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0]])  # the last token is padding: its value is ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.8
    d2 = 1.0 - 0.1
    d1 = 0.0 + gamma * 0.1 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    adv, ret = rl.gae(rewards, values, mask, gamma, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0], abs=1e-6)
    assert ret[0, :3].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.1], abs=1e-6)


def test_last_token_reward_lands_on_each_answers_last_token():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    r = rl.last_token_reward(torch.tensor([2.0, -1.0]), mask)
    assert r.tolist() == [[0.0, 2.0, 0.0], [0.0, 0.0, -1.0]]


def test_group_advantages():
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0])
    rloo = rl.group_advantages(rewards, 2, "rloo")
    assert rloo.tolist() == pytest.approx([-2.0, 2.0, 0.0, 0.0])
    grpo = rl.group_advantages(rewards, 2, "grpo")
    assert grpo[0] < 0 < grpo[1] and grpo[2:].abs().max() < 1e-6
    with pytest.raises(ValueError):
        rl.group_advantages(rewards, 2, "ppo")


def test_clipped_policy_loss_stops_pushing_past_the_clip():
    old = torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    adv = torch.ones(1, 2)
    inside = torch.log(torch.full((1, 2), 1.1))
    outside = torch.log(torch.full((1, 2), 1.5))
    loss_in, frac_in = rl.clipped_policy_loss(inside, old, adv, mask, 0.2)
    loss_out, frac_out = rl.clipped_policy_loss(outside.requires_grad_(), old, adv, mask, 0.2)
    assert loss_in.item() == pytest.approx(-1.1) and frac_in.item() == 0.0
    assert loss_out.item() == pytest.approx(-1.2) and frac_out.item() == 1.0
    loss_out.backward()
    assert outside.grad is None or float(outside.grad.abs().sum()) == 0.0  # no gradient beyond the clip


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    assert rl.k3_kl(lp, lp).abs().max().item() == 0.0
    assert (rl.k3_kl(lp, lp + 0.3) > 0).all()


def test_whiten_ignores_padding():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w = rl.whiten(x, mask)
    assert w[0, :2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-3) and w[0, 2].item() == 0.0


def test_the_critic_is_separate_from_the_policy():
    """Values are the preference model's score head read at every position; the value loss
    trains the critic only: the policy's weights get no gradient from it."""
    from pipeline.train.models import scratch_model, train_tokenizer
    tok = train_tokenizer(["\n\nHuman: hello there\n\nAssistant: hi, how can I help?"] * 20, 300)
    critic = scratch_model("micro", tok, 0, reward=True)
    module = rl.ActorCritic(scratch_model("micro", tok, 0), critic)
    ids = torch.tensor([tok("\n\nHuman: hello\n\nAssistant: hi")["input_ids"]])
    mask = torch.ones_like(ids)
    logits, values = module(ids, mask, rl.positions(mask))
    assert logits.shape[:2] == ids.shape and values.shape == ids.shape
    with torch.no_grad():  # the value at the last token is the preference model's score
        assert values[0, -1].item() == pytest.approx(critic(input_ids=ids).logits[0, 0].item(), abs=1e-5)
    (values ** 2 + 1).sum().backward()
    assert all(p.grad is None for p in module.lm.parameters())
    assert critic.score.weight.grad is not None
    assert rl.ActorCritic(scratch_model("micro", tok, 0))(ids, mask, rl.positions(mask))[1] is None
