"""taps: task-aware speculative decoding (EAGLE-2/HASS drafters, dynamic trees, lossless verification)."""

from taps.draft import EagleProposer
from taps.drafter import Drafter, DrafterConfig
from taps.generate import Generation, speculative_generate, vanilla_generate
from taps.metrics import acceptance_length, bootstrap_ci
from taps.target import TargetModel, load_target
from taps.tree import DraftTree, TreeConfig

__all__ = [
    "DraftTree", "Drafter", "DrafterConfig", "EagleProposer", "Generation", "TargetModel", "TreeConfig",
    "acceptance_length", "bootstrap_ci", "load_target", "speculative_generate", "vanilla_generate",
]
