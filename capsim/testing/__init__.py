"""capsim's fuzzing and property-testing toolkit (public; Hypothesis is a dependency of capsim).

Modules
-------
:mod:`capsim.testing.strategies`
    Typed Hypothesis strategies: APDUs, BER-TLV trees, DOLs, cards, CAP inputs, codes.
:mod:`capsim.testing.model`
    A black-box reference model of a CAP card (the invariants of cap-protocol.md §9).
:mod:`capsim.testing.machines`
    Reusable ``RuleBasedStateMachine`` classes (card vs model; reader ↔ card;
    card → reader → verifier) to subclass in other test suites.
:mod:`capsim.testing.hostile`
    A hostile emulated card that mutates the answers of a real one.
:mod:`capsim.testing.fuzz_card`, :mod:`capsim.testing.fuzz_reader`, :mod:`capsim.testing.fuzz_verifier`
    The engines behind ``capsim fuzz card|reader|serve|verifier``; the card fuzzer's targets
    and guard (:mod:`capsim.testing.fuzz_card_target`), its seeded grammar
    (:mod:`capsim.testing.fuzz_card_gen`), the PIV card's targets, grammar and reference model
    (:mod:`capsim.testing.fuzz_piv`, :mod:`capsim.testing.fuzz_piv_model`), and what the
    fuzzers share (:mod:`capsim.testing.fuzz_engine`).
:mod:`capsim.testing.findings`, :mod:`capsim.testing.progress`
    Findings saved as replayable transcripts; the live progress line.
:mod:`capsim.testing.atheris_targets`
    Coverage-guided entry points for atheris (the optional extra ``capsim[fuzz]``).

Nothing is imported here, so ``import capsim.testing`` does not pull in Hypothesis.
The guide is ``docs/fuzzing.md``.
"""

from __future__ import annotations

__all__: list[str] = []
