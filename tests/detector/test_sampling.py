"""The training samplers: the reference's ``subsample_labels`` and the replay of recorded draws."""

from __future__ import annotations

import pytest
import torch

from fnl_detector.modeling.sampling import BalancedSampler, ReplaySampler, subsample_labels


def test_subsample_labels_draws_as_detectron2():
    """Positives (not -1, not background), then negatives, each in one randperm's order."""
    labels = torch.tensor([1, 0, -1, 0, 1, 0, 0, 1, 0, -1, 0, 0])
    torch.manual_seed(7)
    pos, neg = subsample_labels(labels, num_samples=6, positive_fraction=0.25, bg_label=0)
    torch.manual_seed(7)
    positive, negative = torch.tensor([0, 4, 7]), torch.tensor([1, 3, 5, 6, 8, 10, 11])
    expect_pos = positive[torch.randperm(3)[:1]]  # int(6 * 0.25) = 1
    expect_neg = negative[torch.randperm(7)[:5]]
    assert pos.tolist() == expect_pos.tolist()
    assert neg.tolist() == expect_neg.tolist()


def test_subsample_labels_fills_with_negatives_and_takes_every_positive_when_few():
    labels = torch.tensor([1, 0, 0, 0, 0, -1])
    pos, neg = subsample_labels(labels, num_samples=4, positive_fraction=0.5, bg_label=0)
    assert pos.tolist() == [0]
    assert len(neg) == 3 and set(neg.tolist()) <= {1, 2, 3, 4}


def test_background_label_other_than_zero():
    """The RoI heads' labels: class 0 = person, 1 = background."""
    classes = torch.tensor([0, 1, 1, 0, 1])
    pos, neg = BalancedSampler(4, 0.25)(classes, bg_label=1)
    assert len(pos) == 1 and pos.item() in (0, 3)
    assert len(neg) == 3 and set(neg.tolist()) == {1, 2, 4}


def test_the_balanced_sampler_draws_nothing_beyond_its_two_permutations():
    labels = torch.tensor([1, 0, 0, 1, 0])
    torch.manual_seed(3)
    BalancedSampler(4, 0.5)(labels, bg_label=0)
    after = torch.rand(())
    torch.manual_seed(3)
    torch.randperm(2), torch.randperm(3)
    assert torch.rand(()) == after


def test_replay_by_index_hands_back_the_draws_in_order():
    sampler = ReplaySampler([([2], [0, 1]), ([1], [3])])
    labels = torch.zeros(5)
    assert [t.tolist() for t in sampler(labels, bg_label=0)] == [[2], [0, 1]]
    assert [t.tolist() for t in sampler(labels, bg_label=0)] == [[1], [3]]
    with pytest.raises(RuntimeError, match="only 2 draws"):
        sampler(labels, bg_label=0)


def test_replay_by_box_finds_the_rows_in_another_order():
    candidates = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4.0]])
    recorded = torch.tensor([[1, 2, 3, 4.001], [0, 0, 10, 10]])  # rounding-level difference
    sampler = ReplaySampler([([7], [9])], boxes=[recorded])
    pos, neg = sampler(torch.zeros(3), bg_label=1, candidates=candidates)
    assert pos.tolist() == [2] and neg.tolist() == [0]


def test_replay_by_box_names_a_box_that_is_missing():
    sampler = ReplaySampler([([0], [])], boxes=[torch.tensor([[50.0, 50, 60, 60]])])
    with pytest.raises(ValueError, match=r"recorded box 0 .* not among the candidates"):
        sampler(torch.zeros(1), bg_label=1, candidates=torch.tensor([[0.0, 0, 10, 10]]))
