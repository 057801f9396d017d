"""Stop strings: hand-checked cuts, and every loop (vanilla, speculative, replay) ends at the same token."""

import pytest
import torch

from taps import EagleProposer, TreeConfig, speculative_generate, vanilla_generate
from taps.compose import compose, proposers_for
from taps.data import PLAIN_TEMPLATE, format_conversation
from taps.generate import USER_TURN_STOP, StopStrings, cut_new_tokens
from taps.replay import replay_generate
from taps.tiny import train_tokenizer
from test_compose import _drafters
from test_generate import SHAPES, _prompts
from test_replay import assert_same_records
from conftest import echo_drafter, tiny_target


class Pieces:
    """A tokenizer stand-in: token i decodes to pieces[i], a sequence to their concatenation."""

    def __init__(self, pieces):
        self.pieces, self.widest = pieces, 0

    def decode(self, ids):
        self.widest = max(self.widest, len(ids))  # the longest window decoded so far
        return "".join(self.pieces[i] for i in ids)


#       0   1    2    3     4     5     6    7          8             9
HAND = ["", "a", "b", "\n", "Us", "er", ":", "\nUser:", "x\nUser: y", "\nUser"]


@pytest.mark.parametrize("tokens,expected", [
    ([1, 8, 2], 2),  # inside one token
    ([1, 3, 4, 5, 6, 2], 5),  # across four tokens: cut just after ":"
    ([1, 3] + [0] * 30 + [4, 0, 5, 0, 0, 6, 2], 38),  # across runs of tokens that decode to ""
    ([7, 1, 2], 1),  # the very first token
    ([9, 1, 6, 3, 4, 1, 5, 6, 4, 5], None),  # near misses only
    ([1, 9, 0, 0, 6, 2], 5),  # "\nUser" + "" + "" + ":"
])
def test_user_turn_stop_cuts_just_after_the_completing_token(tokens, expected):
    stop = StopStrings(Pieces(HAND), USER_TURN_STOP)
    assert stop.find(tokens) == expected
    text = Pieces(HAND).decode(tokens)
    if expected is None:
        assert "\nUser:" not in text
    else:  # the prefix holds the stop string, one token less does not
        assert "\nUser:" in Pieces(HAND).decode(tokens[:expected]) and "\nUser:" not in Pieces(HAND).decode(
            tokens[:expected - 1])


def test_the_earliest_of_two_stop_strings_wins_whatever_their_order():
    tokens = [3, 4, 5, 6, 1, 2]  # "\nUser:ab": "\nUser:" ends at token 3, "ab" at token 5
    for strings in (["\nUser:", "ab"], ["ab", "\nUser:"]):
        assert StopStrings(Pieces(HAND), strings).find(tokens) == 4
    assert StopStrings(Pieces(HAND), ["ab", "\nUser:"]).find([1, 2, 3, 4, 5, 6]) == 2


def test_find_searches_only_from_start_and_is_the_same_token_by_token():
    tokens = [1, 2, 1, 3, 0, 4, 5, 0, 6, 1, 9, 6]
    stop = StopStrings(Pieces(HAND), USER_TURN_STOP)
    assert stop.find(tokens) == 9
    for start in range(9):  # any grouping of the tokens into cycles finds the same cut
        assert stop.find(tokens, start) == 9
        assert stop.find(tokens[:9], start) == 9 and stop.find(tokens[:8], start) is None


def test_the_decoded_window_stays_small_on_a_long_output():
    tokenizer = Pieces(["a", "b", "\n", "", "User:"])
    stop = StopStrings(tokenizer, USER_TURN_STOP)
    tokens = [0, 1, 2] * 600 + [2, 4]
    assert stop.find(tokens) == len(tokens)
    assert tokenizer.widest <= 4 * len("\nUser:")  # 23 characters before the last token, one per token
    tokenizer.widest = 0
    assert stop.find([2] + [3] * 500 + [4]) == 502  # tokens that decode to "" do not count
    assert tokenizer.widest == 502


def test_a_byte_level_tokenizer_stops_on_the_plain_templates_next_user_turn():
    tokenizer = train_tokenizer(["User: Two plus two?\n\nAssistant: Four.\n\nUser: Thanks.\n\n"] * 3, 300)
    text, _ = format_conversation(tokenizer, [("user", "Hi"), ("assistant", "Hello there."), ("user", "Bye")])
    reply = text[text.index(PLAIN_TEMPLATE["assistant"][0]) + len(PLAIN_TEMPLATE["assistant"][0]):]
    assert USER_TURN_STOP == ("\n" + PLAIN_TEMPLATE["user"][0],)
    assert reply.index(USER_TURN_STOP[0]) == len(" Hello there.\n\n") - 1  # the reply's own "\n" is the stop's
    ids = tokenizer(reply, add_special_tokens=False).input_ids
    k = StopStrings(tokenizer, USER_TURN_STOP).find(ids)
    assert tokenizer.decode(ids[:k]) == " Hello there.\n\nUser:"
    # a one-character stop string spread over four byte tokens, each decoding alone to "\ufffd"
    ids = tokenizer("ab \U0001F600 cd", add_special_tokens=False).input_ids
    assert [tokenizer.decode([i]) for i in ids].count("\ufffd") == 4
    k = StopStrings(tokenizer, ["\U0001F600"]).find(ids)
    assert tokenizer.decode(ids[:k]) == "ab \U0001F600"


def test_stop_strings_are_validated():
    with pytest.raises(ValueError, match="non-empty strings"):
        StopStrings(Pieces(HAND), [])
    with pytest.raises(ValueError, match="non-empty strings"):
        StopStrings(Pieces(HAND), ["\nUser:", ""])
    with pytest.raises(ValueError, match="decode"):
        StopStrings(None, USER_TURN_STOP)


def test_cut_new_tokens_takes_the_earliest_end_and_names_it():
    stop = StopStrings(Pieces(HAND), USER_TURN_STOP)
    assert cut_new_tokens([1, 3], [4, 5, 6, 2], 10, set(), stop) == ([4, 5, 6], "stop")
    assert cut_new_tokens([1, 3], [4, 5, 6, 2], 10, {5}, stop) == ([4, 5], "eos")
    assert cut_new_tokens([1, 3], [4, 5, 6, 2], 10, {6}, stop) == ([4, 5, 6], "eos")  # EOS wins a tie
    assert cut_new_tokens([1, 3], [4, 5, 6, 2], 4, set(), stop) == ([4, 5], "length")
    assert cut_new_tokens([1, 3], [4, 5, 6, 2], 5, set(), stop) == ([4, 5, 6], "stop")
    assert cut_new_tokens([1, 3], [4, 5, 1, 2], 10, set(), stop) == ([4, 5, 1, 2], "")
    assert cut_new_tokens([1, 3], [4, 5, 1, 2], 6, set(), None) == ([4, 5, 1, 2], "length")


# tiny_target has no tokenizer: its 64 ids decode to letters, every eighth to "" and some to two letters
LETTERS = Pieces(["" if i % 8 == 0 else chr(97 + i % 26) + ("" if i % 3 else chr(65 + i % 26)) for i in range(64)])


def _stops(tokens, g):
    """A stop string taken from the text of `tokens`: 2 to 4 characters from a random place."""
    text = LETTERS.decode(tokens)
    at = int(torch.randint(0, len(text) - 4, (), generator=g))
    return StopStrings(LETTERS, [text[at: at + int(torch.randint(2, 5, (), generator=g))]])


@pytest.mark.parametrize("shape", ["default", "chain", "wide", "deep-narrow"])
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_speculative_equals_vanilla_with_stop_strings(shape, seed):
    target = tiny_target(seed=seed)
    proposer = EagleProposer(echo_drafter(target), SHAPES[shape])
    g, mid_path = torch.Generator().manual_seed(seed), 0
    for prompt in _prompts(6, target.vocab_size, seed):
        stop = _stops(vanilla_generate(target, prompt, 40).tokens, g)
        expected = vanilla_generate(target, prompt, 40, stop=stop)
        got = speculative_generate(target, proposer, prompt, 40, stop=stop)
        assert got.tokens == expected.tokens and got.stopped == expected.stopped == "stop"
        assert sum(c["emitted"] for c in got.cycles) == len(got.tokens) - 1
        mid_path += bool(got.cycles) and got.cycles[-1]["emitted"] == got.cycles[-1]["accepted"] > 0
    assert mid_path > 0  # some stops cut an accepted path, so the cut inside a cycle is tested


def test_replay_equals_the_engine_with_stop_strings():
    target = tiny_target(seed=1)
    tree = TreeConfig(total_tokens=20, depth=3, top_k=4)
    proposers = [EagleProposer(echo_drafter(target), SHAPES[s]) for s in ("default", "chain", "deep-narrow")]
    proposers += [compose("merged-tree", proposers_for(_drafters(target), tree), budget="paper", trie=True)]
    g, mid_path = torch.Generator().manual_seed(7), 0
    for proposer in proposers:
        for prompt in _prompts(4, target.vocab_size, seed=3):
            stop = _stops(vanilla_generate(target, prompt, 40).tokens, g)
            reference = vanilla_generate(target, prompt, 40, stop=stop)
            engine = speculative_generate(target, proposer, prompt, 40, stop=stop)
            replay = replay_generate(target, proposer, prompt, reference.tokens, 40, stop=stop)
            assert_same_records(engine, replay)
            assert replay.stopped == engine.stopped == reference.stopped == "stop"
            mid_path += bool(engine.cycles) and engine.cycles[-1]["emitted"] == engine.cycles[-1]["accepted"] > 0
    assert mid_path > 0


def test_replay_refuses_a_reference_that_holds_an_earlier_stop(target, drafter):
    proposer, prompt = EagleProposer(drafter), torch.tensor([3, 1, 4])
    free = vanilla_generate(target, prompt, 20).tokens
    stop = StopStrings(LETTERS, [LETTERS.decode(free[5:7])])
    k = stop.find(free)
    assert k is not None and k < 20
    with pytest.raises(ValueError, match=rf"generation ends after token {k - 1} \(stop\)"):
        replay_generate(target, proposer, prompt, free, 20, stop=stop)
    cut = vanilla_generate(target, prompt, 20, stop=stop).tokens
    assert cut == free[:k]
    with pytest.raises(ValueError, match="generation does not end"):  # built with stop strings, replayed without
        replay_generate(target, proposer, prompt, cut, 20)
    assert replay_generate(target, proposer, prompt, cut, 20, stop=stop).tokens == cut


def _both_loops(target, proposer):
    """The vanilla and the speculative loop, called alike."""
    return {"vanilla": vanilla_generate,
            "speculative": lambda target, *args, **kw: speculative_generate(target, proposer, *args, **kw)}


def test_a_stop_at_temperature_one_only_truncates_the_same_draws(target, drafter):
    stop, prompt = StopStrings(LETTERS, ["a", "b", "c"]), torch.tensor([5, 9, 2])
    for name, run in _both_loops(target, EagleProposer(drafter)).items():
        free = run(target, prompt, 60, 1.0, torch.Generator().manual_seed(3))
        cut = run(target, prompt, 60, 1.0, torch.Generator().manual_seed(3), stop=stop)
        k = stop.find(free.tokens)
        assert k is not None and k < len(free.tokens), name
        assert cut.tokens == free.tokens[:k] and cut.stopped == "stop" and free.stopped == "length", name


def test_generation_records_why_it_stopped(target, drafter):
    prompt = torch.tensor([2, 7, 1, 8])
    free = vanilla_generate(target, prompt, 30, eos_token_ids=set()).tokens
    for name, run in _both_loops(target, EagleProposer(drafter)).items():
        assert run(target, prompt, 30, eos_token_ids=set()).stopped == "length", name
        assert run(target, prompt, 1, eos_token_ids=set()).stopped == "length", name
        assert run(target, prompt, 30, eos_token_ids={free[9]}).stopped == "eos", name
        assert run(target, prompt, 30, eos_token_ids={free[0]}).stopped == "eos", name  # at the prefill
        at_prefill = run(target, prompt, 30, eos_token_ids=set(), stop=StopStrings(LETTERS, [LETTERS.pieces[free[0]]]))
        assert at_prefill.tokens == free[:1] and at_prefill.stopped == "stop" and not at_prefill.cycles, name
