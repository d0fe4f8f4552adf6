"""Counters of deterministic serving; exported to Prometheus by the server glue."""

from __future__ import annotations

import dataclasses

from .state import CommitResult


# The phases of a verification pass, in order (their seconds add up to ``verification_seconds``):
# building its batch on the host, launching its forward, sampling and waiting for the GPU's
# result, and applying the commits (KV slots, lengths, streaming).
PASS_PHASES = ("build", "forward", "wait", "apply")

# (lowest offset, counter): the first mismatch's offset in its verified window, highest first.
MISMATCH_OFFSET_BUCKETS = ((32, "mismatch_offset_32_up"), (16, "mismatch_offset_16_31"),
                           (4, "mismatch_offset_4_15"), (0, "mismatch_offset_0_3"))


@dataclasses.dataclass
class DeterminismMetrics:
    requests: int = 0  # deterministic choices admitted
    verification_passes: int = 0  # fixed-shape passes run
    verification_rows: int = 0  # real rows across those passes (<= passes * B)
    verification_seconds: float = 0.0  # wall time of those passes (the whole batch waits on them)
    # ... by phase (PASS_PHASES)
    verification_build_seconds: float = 0.0
    verification_forward_seconds: float = 0.0
    verification_wait_seconds: float = 0.0
    verification_apply_seconds: float = 0.0
    # The overlap scheduler's steps in flight processed early, before a pass (the host waits for
    # the GPU there instead of preparing the next step): how often, and the host's wall time.
    verification_drains: int = 0
    verification_drain_seconds: float = 0.0
    tokens_verified: int = 0  # proposals checked by a verifier
    tokens_committed: int = 0  # tokens committed (prefill and verification)
    tokens_rolled_back: int = 0  # proposals dropped
    rollback_events: int = 0  # verifications that dropped at least one proposal
    restarts: int = 0  # retractions of deterministic requests
    isolated_prefills: int = 0  # prefill batches (chunks) that ran one deterministic request alone
    # decode steps with at least one deterministic row (planned from the row table: every decode
    # step while a deterministic request holds a row of it)
    fast_path_steps: int = 0
    sampler_seconds: float = 0.0  # host time of seeded sampling in those batches (SGLang's own not counted)
    # Where rollbacks come from: verified / dropped tokens of greedy rows (the rest are sampled),
    # and the offset in the verified window of each first mismatch, in MISMATCH_OFFSET_BUCKETS.
    tokens_verified_greedy: int = 0
    tokens_rolled_back_greedy: int = 0
    mismatch_offset_0_3: int = 0
    mismatch_offset_4_15: int = 0
    mismatch_offset_16_31: int = 0
    mismatch_offset_32_up: int = 0

    def on_request(self) -> None:
        self.requests += 1

    def on_pass(self, real_rows: int, phases: dict[str, float] | None = None) -> None:
        """A pass of ``real_rows`` rows; ``phases``: its seconds by PASS_PHASES name (their sum is
        the pass's wall time)."""
        phases = phases or {}
        if unknown := set(phases) - set(PASS_PHASES):
            raise ValueError(f"unknown pass phase {sorted(unknown)[0]!r}")
        self.verification_passes += 1
        self.verification_rows += real_rows
        self.verification_seconds += sum(phases.values())
        for phase, phase_seconds in phases.items():
            field = f"verification_{phase}_seconds"
            setattr(self, field, getattr(self, field) + phase_seconds)

    def on_drain(self, seconds: float) -> None:
        """The steps in flight were processed before a pass, taking ``seconds``."""
        self.verification_drains += 1
        self.verification_drain_seconds += seconds

    def on_commit(self, result: CommitResult, tokens_verified: int = 0, greedy: bool = False) -> None:
        """Record a CommitResult; ``tokens_verified`` is the window length (0 for a prefill),
        ``greedy`` whether the request samples greedily."""
        self.tokens_verified += tokens_verified
        self.tokens_committed += len(result.committed_ids)
        self.tokens_rolled_back += result.num_dropped
        self.rollback_events += result.rolled_back
        if greedy:
            self.tokens_verified_greedy += tokens_verified
            self.tokens_rolled_back_greedy += result.num_dropped
        if result.rolled_back:
            field = next(name for low, name in MISMATCH_OFFSET_BUCKETS if result.num_accepted >= low)
            setattr(self, field, getattr(self, field) + 1)

    def on_sampled(self, is_decode: bool, seconds: float) -> None:
        """A batch's deterministic rows were sampled: a fast-path step, or an isolated prefill."""
        if is_decode:
            self.fast_path_steps += 1
        else:
            self.isolated_prefills += 1
        self.sampler_seconds += seconds

    def on_restart(self) -> None:
        self.restarts += 1

    def snapshot(self) -> dict[str, float]:
        return dataclasses.asdict(self)
