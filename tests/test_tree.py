"""Pure tree functions against hand-drawn expectations."""

import pytest
import torch

from taps.tree import (DraftTree, TreeConfig, additive_mask, ancestor_mask, children_lists, leaf_paths,
                       likely_nodes, node_depths, position_ids, prune, select_top)

#        0
#      /   \
#     1     2
#    / \     \
#   3   4     5
#   |
#   6
PARENTS = torch.tensor([-1, 0, 0, 1, 1, 2, 3])


def test_depths_and_positions_of_hand_drawn_tree():
    assert node_depths(PARENTS).tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert position_ids(PARENTS, past_len=10).tolist() == [10, 11, 11, 12, 12, 12, 13]


def test_ancestor_mask_of_hand_drawn_tree():
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0],
        [1, 0, 1, 0, 0, 1, 0],
        [1, 1, 0, 1, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(ancestor_mask(PARENTS), expected)


def test_leaf_paths_of_hand_drawn_tree():
    assert leaf_paths(PARENTS).tolist() == [[0, 1, 4, -1], [0, 2, 5, -1], [0, 1, 3, 6]]
    assert children_lists(PARENTS) == [[1, 2], [3, 4], [5], [6], [], [], []]


def test_chain_mask_is_causal_and_root_is_single_path():
    chain = torch.arange(-1, 4)
    assert torch.equal(ancestor_mask(chain), torch.ones(5, 5, dtype=torch.bool).tril())
    assert leaf_paths(torch.tensor([-1])).tolist() == [[0]]


def test_additive_mask_is_zero_where_allowed_and_min_elsewhere():
    allowed = torch.tensor([[True, False], [True, True]])
    mask = additive_mask(allowed, torch.float32)
    low = torch.finfo(torch.float32).min
    assert mask.shape == (1, 1, 2, 2)
    assert mask[0, 0].tolist() == [[0.0, low], [0.0, 0.0]]


def test_select_top_breaks_ties_towards_ancestors_and_sorts():
    # a child with probability 1 ties with its parent (index 0); the parent must win the tie
    scores = torch.tensor([-1.0, -1.0, -0.5, -3.0])
    assert select_top(scores, 1).tolist() == [2]
    assert select_top(scores, 2).tolist() == [0, 2]
    assert select_top(scores, 10).tolist() == [0, 1, 2, 3]


def _candidates(parents, logp):
    n = len(parents)
    return DraftTree(tokens=torch.arange(100, 100 + n), parents=torch.tensor(parents), logp=torch.tensor(logp),
                     prob=torch.ones(n), entropy=torch.zeros(n), source=torch.zeros(n, dtype=torch.long))


def test_prune_remaps_parents_under_the_root():
    # candidates: 0, 1 at depth 1; 2, 3 children of 1; 4 child of 0
    cand = _candidates([-1, -1, 1, 1, 0], [-0.1, -0.2, -0.3, -2.0, -0.4])
    keep = select_top(cand.logp, 4)
    assert keep.tolist() == [0, 1, 2, 4]
    tree = prune(7, cand, keep)
    assert tree.tokens.tolist() == [7, 100, 101, 102, 104]
    assert tree.parents.tolist() == [-1, 0, 0, 2, 1]
    assert tree.depths.tolist() == [0, 1, 1, 2, 2]
    assert torch.allclose(tree.confidence, torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4]).neg().exp())


def test_likely_nodes_are_the_most_probable_of_the_subtree():
    # PARENTS (0 -> 1, 2; 1 -> 3, 4; 2 -> 5; 3 -> 6); ties go to the lower index
    tree = _candidates(PARENTS.tolist(), [0.0, -0.5, -0.2, -0.9, -0.6, -0.3, -1.0])
    assert likely_nodes(tree, 0, 4) == [0, 1, 2, 5]
    assert likely_nodes(tree, 0, 2) == [0, 2]
    assert likely_nodes(tree, 1, 3) == [1, 3, 4]
    assert likely_nodes(tree, 1, 10) == [1, 3, 4, 6]
    assert likely_nodes(tree, 6, 4) == [6]
    tied = _candidates([-1, 0, 0], [0.0, -0.5, -0.5])
    assert likely_nodes(tied, 0, 2) == [0, 1]


def test_prune_refuses_a_set_missing_an_ancestor():
    cand = _candidates([-1, 0], [-0.1, -0.2])
    with pytest.raises(ValueError, match="ancestry"):
        prune(0, cand, torch.tensor([1]))


@pytest.mark.parametrize("kwargs", [{"total_tokens": 0}, {"depth": -1}, {"top_k": 0}])
def test_tree_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TreeConfig(**kwargs)
