"""Compositions: hand-drawn merged trees, routing decisions, and the keystone for each one."""

import pytest
import torch

from taps import TreeConfig, speculative_generate, vanilla_generate
from taps.compose import COMPOSITIONS, SelectedProposer, compose, proposers_for, route
from taps.replay import replay_generate
from taps.tree import DraftTree, ancestor_mask, node_depths
from conftest import echo_drafter


def _tree(tokens, parents, logp, source, entropy=None):
    n = len(tokens)
    return DraftTree(tokens=torch.tensor(tokens), parents=torch.tensor(parents), logp=torch.tensor(logp),
                     prob=torch.ones(n), entropy=torch.tensor(entropy or [0.0] * n),
                     source=torch.full((n,), source))


# drafter 0:  r -> a -> b, r -> c        drafter 1:  r -> a -> d, r -> e
A = _tree([9, 1, 2, 3], [-1, 0, 1, 0], [0.0, -0.1, -0.5, -0.7], 0)
B = _tree([9, 1, 4, 5], [-1, 0, 1, 0], [0.0, -0.2, -0.3, -0.4], 1)


def test_merged_tree_without_trie_keeps_subtrees_apart():
    from taps.tree import merge_trees
    merged = merge_trees([A, B], trie=False)
    assert merged.tokens.tolist() == [9, 1, 2, 3, 1, 4, 5]
    assert merged.parents.tolist() == [-1, 0, 1, 0, 0, 4, 0]
    assert node_depths(merged.parents).tolist() == [0, 1, 2, 1, 1, 2, 1]
    assert merged.source.tolist() == [0, 0, 0, 0, 1, 1, 1]
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 0, 0, 1, 0, 0, 0],
        [1, 0, 0, 0, 1, 0, 0],  # drafter 1's copy of token 1 sees only the root
        [1, 0, 0, 0, 1, 1, 0],
        [1, 0, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(ancestor_mask(merged.parents), expected)


def test_merged_trie_shares_the_common_prefix():
    from taps.tree import merge_trees
    merged = merge_trees([A, B], trie=True)
    assert merged.tokens.tolist() == [9, 1, 2, 3, 4, 5]
    assert merged.parents.tolist() == [-1, 0, 1, 0, 1, 0]  # d hangs under drafter 0's node a
    assert torch.allclose(merged.logp, torch.tensor([0.0, -0.1, -0.5, -0.7, -0.3, -0.4]))
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],
        [1, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(ancestor_mask(merged.parents), expected)


def test_merging_trees_with_different_roots_is_refused():
    from taps.tree import merge_trees
    with pytest.raises(ValueError, match="different roots"):
        merge_trees([A, _tree([8], [-1], [0.0], 1)])


def test_routing_picks_by_mean_confidence_or_entropy():
    confident = _tree([9, 1, 2], [-1, 0, 1], [0.0, -0.1, -0.2], 0, entropy=[0.0, 3.0, 3.0])
    unsure = _tree([9, 3, 4], [-1, 0, 0], [0.0, -1.0, -2.0], 1, entropy=[0.0, 0.5, 0.5])
    assert route([confident, unsure], "confidence") == 0
    assert route([unsure, confident], "confidence") == 1
    assert route([confident, unsure], "entropy") == 1
    assert route([confident, confident], "confidence") == 0  # ties go to the first drafter
    assert route([_tree([9], [-1], [0.0], 0), unsure], "confidence") == 1  # an empty tree never wins


def test_unknown_names_list_the_known_ones():
    with pytest.raises(KeyError, match="known: single, route-confidence, route-entropy, merged-tree, select-leader, "
                                       "select-ucb, select-confidence"):
        compose("route-magic", [])
    with pytest.raises(ValueError, match="at least 2 drafters"):
        compose("route-confidence", [object()])


def _drafters(target):
    """Two drafters that disagree: the echo drafter, and an echo drafter over even tokens only."""
    return [echo_drafter(target), echo_drafter(target, __import__("taps").DrafterConfig(draft_vocab_size=32),
                                               d2t=torch.arange(0, 64, 2))]


VARIANTS = [("single", {}), ("route-confidence", {}), ("route-entropy", {}),
            ("merged-tree", {"budget": "paper", "trie": True}), ("merged-tree", {"budget": "paper", "trie": False}),
            ("merged-tree", {"budget": "equal", "trie": True}), ("select-leader", {}), ("select-leader", {"explore": 2}),
            ("select-ucb", {}), ("select-confidence", {}), ("select-confidence", {"signal": "topk"}),
            ("select-confidence", {"signal": "depth2"})]


def test_every_registered_composition_is_covered():
    assert {name for name, _ in VARIANTS} == set(COMPOSITIONS)


@pytest.mark.parametrize("name,options", VARIANTS, ids=lambda v: str(v))
def test_greedy_composition_equals_vanilla_greedy(target, name, options):
    tree = TreeConfig(total_tokens=20, depth=3, top_k=4)
    drafters = _drafters(target)[:1] if name == "single" else _drafters(target)
    proposer = compose(name, proposers_for(drafters, tree), **options)
    sizes = []
    for seed in range(4):
        prompt = torch.randint(0, 64, (3 + seed,), generator=torch.Generator().manual_seed(seed))
        got = speculative_generate(target, proposer, prompt, 30)
        assert got.tokens == vanilla_generate(target, prompt, 30).tokens
        sizes += [c["nodes"] for c in got.cycles]
    if options.get("budget") == "equal" or name != "merged-tree":
        assert max(sizes) <= tree.total_tokens
    else:
        assert max(sizes) > tree.total_tokens  # the paper's budget verifies more nodes per pass


def test_routing_records_which_drafter_was_chosen(target):
    proposer = compose("route-confidence", proposers_for(_drafters(target), TreeConfig(20, 3, 4)))
    got = speculative_generate(target, proposer, torch.tensor([5, 6, 7]), 40)
    chosen = {c["drafter"] for c in got.cycles}
    assert chosen <= {0, 1} and len(chosen) >= 1
    for c in got.cycles:
        assert {n["drafter"] for n in got.nodes if n["cycle"] == c["cycle"]} == {c["drafter"]}


def test_greedy_verification_without_trie_tries_every_copy_of_the_token():
    """Target chain 1, 4, 7: drafter 1's copy of token 1 leads on to 4, drafter 0's copy does not.

    Walking only the first sibling holding 1 (drafter 0's) would accept 1 token; the prefix match
    over all paths, as EAGLE's evaluate_posterior does, accepts 2 through drafter 1's copy.
    """
    from taps.tree import follow, merge_trees
    from taps.verify import verify_greedy
    merged = merge_trees([A, B], trie=False)  # tokens [9, 1, 2, 3, 1, 4, 5]
    chain = {0: 1, 1: 6, 4: 4, 5: 7}  # node -> the target's argmax after it (1 after the root, ...)
    logits = torch.full((len(merged), 10), -1.0)
    for node, token in chain.items():
        logits[node, token] = 1.0
    read = []

    class Rows:
        def __getitem__(self, i):
            read.append(i)
            return logits[i]

    path, bonus = verify_greedy(merged, Rows())
    assert (path, bonus) == ([0, 4, 5], 7)
    assert sorted(set(read)) == [0, 1, 4, 5] and len(read) == len(set(read))  # each matching node's row once
    assert follow(merged, [1, 4, 7]) == [0, 4, 5]
    assert follow(merged, [1, 2]) == [0, 1, 2]  # drafter 0's copy wins where it is the longer one
    assert follow(merged, [1, 8]) == [0, 1]  # equally long: the first copy in child order
    trie = merge_trees([A, B], trie=True)
    assert follow(trie, [1, 4, 7]) == [0, 1, 4]  # the trie reaches the same tokens through one node


class _Counting:
    """A stand-in drafter: records what it is committed and how often it proposes."""

    def __init__(self, source):
        self.source, self.tree, self.steps = source, TreeConfig(20, 3, 4), 0
        self.reset()

    def reset(self):
        self.committed, self.proposed = [], 0

    def commit(self, features, next_tokens):
        self.committed += next_tokens.tolist()
        self.steps += 1

    def propose(self, root):
        self.proposed += 1
        return _tree([root], [-1], [0.0], self.source)


def test_selection_tries_each_drafter_then_follows_the_better_and_catches_up_in_one_pass():
    a, b = _Counting(0), _Counting(1)
    sel = SelectedProposer([a, b], "leader")
    sel.commit(torch.zeros(3, 1), torch.tensor([1, 2, 3]))  # the prompt
    assert (a.committed, b.committed) == ([], [])  # nothing run before a drafter is chosen
    outcomes = {0: 1, 1: 4}  # drafted tokens accepted per cycle: drafter 1 is the better one
    chosen = []
    for cycle in range(6):
        tree = sel.propose(root=7)
        chosen.append(int(tree.source[0]))
        accepted = outcomes[chosen[-1]]
        sel.commit(torch.zeros(accepted + 1, 1), torch.arange(accepted + 1) + 10 * cycle)
    assert chosen == [0, 1, 1, 1, 1, 1]
    # drafter 0 caught up on the prompt in one pass and was never chosen again; drafter 1 got the prompt and
    # drafter 0's cycle in one pass when first chosen, then one pass per cycle
    assert (a.steps, a.proposed, a.committed) == (1, 1, [1, 2, 3])
    assert b.committed[:5] == [1, 2, 3, 0, 1] and b.steps == 5 and b.proposed == 5
    assert sel.steps == a.steps + b.steps


def test_ucb_selection_goes_back_to_a_drafter_that_was_not_tried_for_long():
    a, b = _Counting(0), _Counting(1)
    sel = SelectedProposer([a, b], "ucb")
    sel.commit(torch.zeros(1, 1), torch.tensor([1]))
    chosen = []
    for cycle in range(30):
        chosen.append(int(sel.propose(root=7).source[0]))
        accepted = {0: 2, 1: 3}[chosen[-1]]
        sel.commit(torch.zeros(accepted + 1, 1), torch.zeros(accepted + 1, dtype=torch.long))
    assert chosen.count(1) > chosen.count(0) > 1  # the better drafter mostly, the other again now and then


def test_selection_refuses_an_unknown_rule_or_no_exploration():
    with pytest.raises(ValueError, match="unknown selection rule 'best'; known: leader, ucb"):
        SelectedProposer([_Counting(0), _Counting(1)], "best")
    with pytest.raises(ValueError, match="explore >= 1"):
        SelectedProposer([_Counting(0), _Counting(1)], explore=0)


class _Peaked(_Counting):
    """A stand-in drafter whose root distribution is given: the features committed last are its logits."""

    def __init__(self, source, top_k=2):
        super().__init__(source)
        self.tree = TreeConfig(20, 3, top_k)
        self.drafter = type("Head", (), {"logits": staticmethod(lambda hidden: hidden)})()

    def commit(self, features, next_tokens):
        super().commit(features, next_tokens)
        self.last_hidden = features[-1]


def test_select_confidence_drafts_with_the_drafter_most_confident_at_the_root_and_commits_every_drafter():
    probs = {"flat": [0.5, 0.5, 0.0, 0.0, 0.0], "peaked": [0.6, 0.1, 0.1, 0.1, 0.1]}
    logits = {k: torch.tensor(v).clamp_min(1e-9).log() for k, v in probs.items()}
    for signal, expected in (("top1", 1), ("topk", 0)):  # top1: 0.5 < 0.6; the top 2 children: 1.0 > 0.7
        a, b = _Peaked(0), _Peaked(1)
        sel = compose("select-confidence", [a, b], signal=signal)
        chosen = []
        for cycle, (first, second) in enumerate([("flat", "peaked"), ("peaked", "flat"), ("flat", "peaked")]):
            rows = torch.stack([torch.zeros(5), logits[first]]), torch.stack([torch.zeros(5), logits[second]])
            a.commit(rows[0], torch.tensor([cycle, cycle]))
            b.commit(rows[1], torch.tensor([cycle, cycle]))
            chosen.append(int(sel.propose(root=7).source[0]))
        flip = {"top1": [1, 0, 1], "topk": [0, 1, 0]}[signal]
        assert chosen == flip and chosen[0] == expected
        assert a.proposed + b.proposed == 3  # one tree per cycle
    sel.commit(torch.zeros(2, 5), torch.tensor([8, 9]))
    assert a.committed[-2:] == b.committed[-2:] == [8, 9]  # every drafter commits every cycle
    with pytest.raises(ValueError, match="unknown selection signal 'mean'; known: top1, topk, depth2"):
        compose("select-confidence", [a, b], signal="mean")


def _parity_drafters(target):
    """Echo drafters over the even and over the odd tokens: each is the more confident where the target's next
    token is of its parity."""
    small = __import__("taps").DrafterConfig(draft_vocab_size=32)
    return [echo_drafter(target, small, d2t=torch.arange(0, 64, 2)), echo_drafter(target, small, d2t=torch.arange(1, 64, 2))]


@pytest.mark.parametrize("signal", ["top1", "depth2"])
def test_select_confidence_chooses_the_argmax_each_cycle_and_every_drafter_commits_every_cycle(target, signal):
    tree = TreeConfig(total_tokens=20, depth=3, top_k=4)
    proposer = compose("select-confidence", proposers_for(_parity_drafters(target), tree), signal=signal)
    scores, confidence = [], proposer.confidence
    proposer.confidence = lambda p, root: scores.append(confidence(p, root)) or scores[-1]
    got = speculative_generate(target, proposer, torch.tensor([5, 6, 7]), 40)
    per_cycle = [scores[i:i + 2] for i in range(0, len(scores), 2)]
    assert len(per_cycle) == len(got.cycles) and len(scores) % 2 == 0
    assert [c["drafter"] for c in got.cycles] == [max((0, 1), key=lambda i: (s[i], -i)) for s in per_cycle]
    assert {c["drafter"] for c in got.cycles} == {0, 1}
    # each drafter: one pass per commit (the prompt and every cycle's accepted tokens), depth passes per tree,
    # and with depth2 one probe pass per cycle
    probes = len(got.cycles) if signal == "depth2" else 0
    commits = [p.steps - probes - tree.depth * sum(c["drafter"] == i for c in got.cycles)
               for i, p in enumerate(proposer.proposers)]
    assert commits[0] == commits[1] >= len(got.cycles)
    if signal == "depth2":  # the probe: the sum of path probabilities of the two-level tree, cache left as it was
        probe = proposer.proposers[0]
        length, cached = probe.length, probe.cache.get_seq_length()
        two = probe.propose(9, passes=1)
        assert two.depths.max() == 2 and confidence(probe, 9) == pytest.approx(two.confidence[1:].sum().item())
        assert (probe.length, probe.cache.get_seq_length()) == (length, cached)


@pytest.mark.parametrize("name, options", [("select-leader", {}), ("select-ucb", {}), ("select-confidence", {}),
                                           ("select-confidence", {"signal": "depth2"})])
def test_selection_replays_as_the_engine_runs_and_drafts_one_tree_per_cycle(target, name, options):
    tree = TreeConfig(total_tokens=20, depth=3, top_k=4)
    drafters = _parity_drafters if name == "select-confidence" else _drafters
    proposer = compose(name, proposers_for(drafters(target), tree), **options)
    routed = compose("route-confidence", proposers_for(drafters(target), tree))
    prompt = torch.tensor([5, 6, 7])
    got = speculative_generate(target, proposer, prompt, 40)
    replayed = replay_generate(target, proposer, prompt, got.tokens, 40)
    assert [(c["accepted"], c["drafter"]) for c in replayed.cycles] == [(c["accepted"], c["drafter"]) for c in got.cycles]
    assert {c["drafter"] for c in got.cycles} == {0, 1}
    assert got.drafter_steps == replayed.drafter_steps
    # one tree of depth levels per cycle, plus commits and catch-ups: fewer passes than routing's two trees
    assert got.drafter_steps < speculative_generate(target, routed, prompt, 40).drafter_steps
