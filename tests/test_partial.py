"""A killed evaluation resumes from its first unfinished turn and ends with an uninterrupted run's rows.

The kill is an exception raised right after the k-th finished turn is saved (`taps.partial.PartialRun`),
at T=0 (replayed against references, the first prompt timed) and at T=1 (replayed along a sample, whose
generators are seeded per turn); MT-Bench-like two-turn prompts put a kill between a prompt's turns.
"""

import pytest

from taps import EagleProposer, TreeConfig
from taps.compose import compose, proposers_for
from taps.evaluate import EvalConfig, evaluate_many, reference_rows
from taps.partial import PartialRun, digest
from conftest import echo_drafter

from test_evaluate import PROMPTS, tiny  # noqa: F401  (the fixture)

PROMPTS3 = PROMPTS + PROMPTS[1:]  # turns: a0 | b0 b1 | b0 b1


class Killed(Exception):
    pass


class KilledAfter(PartialRun):
    """A PartialRun whose job dies right after saving its `after`-th turn."""

    def __init__(self, directory, key, after):
        super().__init__(directory, key)
        self.after, self.saved = after, 0

    def save(self, *args):
        super().save(*args)
        self.saved += 1
        if self.saved == self.after:
            raise Killed


def _untimed(rows):
    """Rows without wall-clock columns (the only ones two runs may differ in)."""
    return {name: {table: [{k: v for k, v in r.items() if "seconds" not in k} for r in getattr(r_, table)]
                   for table in ("cycles", "nodes", "turns", "candidates")} for name, r_ in rows.items()}


@pytest.mark.parametrize("temperature, after", [(0.0, 2), (1.0, 4)])  # killed between a prompt's two turns
def test_a_killed_evaluation_resumes_to_the_uninterrupted_rows(tiny, tmp_path, temperature, after):  # noqa: F811
    target, _ = tiny
    drafter = echo_drafter(target)
    proposers = {"single": EagleProposer(drafter, TreeConfig(12, 3, 3)),
                 "routed": compose("route-confidence", proposers_for([drafter, drafter], TreeConfig(12, 3, 3)))}
    config = EvalConfig(temperature, max_new_tokens=12, replay=True, timed_prompts=1)
    refs = reference_rows(target, PROMPTS3, EvalConfig(max_new_tokens=12), progress=False)
    run = lambda partial=None: evaluate_many(target, proposers, PROMPTS3, config, refs, progress=False,  # noqa: E731
                                             partial=partial)
    whole = run()
    with pytest.raises(Killed):
        run(KilledAfter(tmp_path / "p", "k", after))
    again = PartialRun(tmp_path / "p", "k")
    resumed = run(again)
    assert again.resumed == after  # the finished turns were read back, not decoded
    assert _untimed(resumed) == _untimed(whole)


def test_a_partial_of_other_settings_or_a_damaged_turn_is_not_read(tmp_path):
    run = PartialRun(tmp_path / "p", digest({"prompts": 10}))
    run.save(0, 0, [1, 2], {"x": {"turns": [{"a": 1}]}})
    assert PartialRun(tmp_path / "p", digest({"prompts": 10})).load(0, 0) == {"answer": [1, 2],
                                                                                "rows": {"x": {"turns": [{"a": 1}]}}}
    assert PartialRun(tmp_path / "p", digest({"prompts": 20})).load(0, 0) is None  # other settings: discarded
    run = PartialRun(tmp_path / "p", digest({"prompts": 20}))
    run.save(0, 0, [1], {})
    (tmp_path / "p" / "00000-000.json").write_text('{"answer": [1')  # a write cut short
    assert run.load(0, 0) is None


def test_the_digest_reads_the_bytes_of_every_input(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "w.bin").write_bytes(b"\x00\x01")
    first = digest({"a": 1}, [tmp_path / "d"])
    (tmp_path / "d" / "w.bin").write_bytes(b"\x00\x02")
    assert digest({"a": 1}, [tmp_path / "d"]) != first != digest({"a": 2}, [tmp_path / "d"])
