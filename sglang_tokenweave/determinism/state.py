"""The verify / commit / rollback state machine of one deterministic request (one choice).

Notation: P is the prompt length, ``out`` the output tokens (committed ones first, then the
fast path's unverified proposals), C the number of committed tokens. Output token ``out[i]``
sits at sequence position ``P + i``; that position is also its sampling key, so fast path and
verifier draw the same random number for it.

Invariants, true between scheduler steps:
- ``out[:C]`` is final: it came from the isolated prefill (``out[0]``) or from a verification
  pass, and only it is ever streamed, counted or checked for finishing.
- 0 <= len(out) - C <= L*W: the fast path stops proposing at the end of the L-th block of W
  inputs from the current one (see "aligned" and "lookahead" below).
- KV is held for positions ``[0, kv_len)`` with ``kv_len = P + len(out) - 1``: the newest
  token has no KV yet (it is the next step's input), as in a normal decode.

Verification of u unverified tokens replays u inputs ``out[C-1 : C-1+u]`` (the last committed
token, then every unverified token but the newest) at positions ``P+C-1 ...``. The replay
rewrites their KV and samples, in row j, the token for position ``P+C+j`` with key
``(seed, P+C+j)``. With m the first row whose token differs from ``out[C+m]``, the pass commits
``out[C:C+m]`` plus the verifier's token in row m ("commit m tokens plus the verifier's
token"), drops the rest and frees the KV written from dropped inputs. If all u rows agree,
all u tokens are committed.

Windows are aligned to fixed blocks of W inputs (output indices [kW, (k+1)W)): a pass replays
its request's block from the block's start, committed inputs of the block included
(``replay_ids``), so every position is always computed by a row that starts at the same
position and has the same length, whatever the history of rollbacks. Kernels reduce in an order
that can depend on where a row starts (attention over prefix + row), so an unaligned replay
could compute a position differently after a rollback than without one. The fast path
therefore stops at the end of a block: replayed + unverified <= L*W.

Lookahead (L blocks; the server's default is 2): with L > 1 the fast path goes on past a complete block while
that block waits to be verified, so a pass can wait for more requests' windows without holding
anyone up. A verification covers the complete blocks (``ready_tokens``), and every unverified
token when the request cannot decode on; its row is cut into one row per block, each starting
at its block's start. A pass that verifies some complete blocks and finds no mismatch keeps the
unverified tokens after them; a mismatch drops everything after the corrected token, later
blocks included. Since every row starts at its block's start and sees verifier-written KV
before it, the committed tokens are the same for any L (rows of one request in one pass read
the KV that the earlier rows write in the same layer, as a later pass would read it).

Finish checks run on committed tokens only, token by token, in SGLang's order: length, then
the caller's hook (stop strings), then stop token ids. A token that finishes the request is
committed and everything after it is dropped. A fast-path finish (say an EOS proposal) only
triggers an early verification; if the verifier disagrees, the request decodes on.

Retraction throws everything away, since KV built from a re-prefill of prompt + output would
differ numerically from the original. The request restarts from the prompt and regenerates
the same tokens; those the client already has are not streamed again, and a regenerated
token that differs from one already committed raises ``DeterminismViolation``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
from typing import Any, Callable, Optional, Sequence


class Phase(enum.Enum):
    PREFILL = "prefill"  # waiting for the isolated prefill (initially and after retraction)
    DECODING = "decoding"  # fast path and verification alternate
    FINISHED = "finished"


@dataclasses.dataclass(frozen=True)
class FinishReason:
    """A finish found by the built-in checks (the hook may return objects of its own)."""

    kind: str  # "length" or "stop_token"
    matched: Optional[int] = None  # the stop token id, or the length limit


# Called after each newly committed token with the committed output so far; returns None to
# go on, or any object (for instance SGLang's FINISH_MATCHED_STR) to finish the request.
FinishHook = Callable[[Sequence[int]], Optional[Any]]


class DeterminismViolation(RuntimeError):
    """A restarted request committed a token different from one it had committed before."""


class InvalidTransition(RuntimeError):
    """An operation that the request's current state does not allow."""


@dataclasses.dataclass(frozen=True)
class VerifyWindow:
    """What the verifier replays for one request (all tuples have ``num_tokens`` entries)."""

    input_ids: tuple[int, ...]  # out[C-1 : C-1+u]
    input_positions: tuple[int, ...]  # P+C-1 ...: where their KV is (re)written
    sample_positions: tuple[int, ...]  # P+C ...: the sampling key of each row's token
    proposed_ids: tuple[int, ...]  # out[C : C+u], compared with the verifier's tokens
    # Committed inputs out[b : C-1] replayed before them, b = the block's start (see above);
    # they sit at positions P+b ... P+C-2 and their rows re-derive committed tokens.
    replay_ids: tuple[int, ...] = ()

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_replayed(self) -> int:
        return len(self.replay_ids)

    @property
    def row_start(self) -> int:
        """Position of the row's first input: P + b, a multiple of W after P."""
        return self.input_positions[0] - self.num_replayed

    @property
    def row_ids(self) -> tuple[int, ...]:
        """Every input of the pass's row: replayed committed inputs, then the window's."""
        return self.replay_ids + self.input_ids

    def block_rows(self, window: int) -> tuple[range, ...]:
        """``row_ids`` cut at block boundaries: one verification row per block of ``window``
        inputs (the row starts at a block's start, so the cuts fall every ``window`` inputs)."""
        n = len(self.row_ids)
        return tuple(range(start, min(start + window, n)) for start in range(0, n, window))


@dataclasses.dataclass(frozen=True)
class CommitResult:
    """The outcome of the prefill's token or of one verification, for the scheduler to apply."""

    num_accepted: int  # fast-path proposals confirmed by the verifier
    committed_ids: tuple[int, ...]  # newly committed tokens, in order
    num_dropped: int  # proposals removed from the output (a corrected one counts)
    free_kv_positions: range  # positions whose KV slots must be freed
    output_len: int  # len(out) afterwards: the committed count, plus any unverified tokens kept
    kv_len: int  # P + output_len - 1: the request's KV length afterwards
    stream: range  # output indices newly streamable (never ones the client already has)
    finish: Optional[Any]  # a FinishReason, the hook's object, or None (decoding goes on)

    @property
    def rolled_back(self) -> bool:
        return self.num_dropped > 0


@dataclasses.dataclass(frozen=True)
class RestartPlan:
    """What the scheduler does when it retracts the request."""

    free_kv_positions: range  # every KV slot the request holds
    num_already_streamed: int  # output tokens the client has; not to be sent again


class DeterministicRequest:
    """Commit/rollback bookkeeping of one deterministic choice. Pure Python, no tensors.

    Typical use by the scheduler::

        state.on_prefill_token(t)                      # isolated prefill, committed at once
        while not state.finished:
            state.on_fast_token(t)                     # after each fast decode step
            if state.needs_verification(req_finished_by_fast_path):
                window = state.verify_window()         # packed by groups.plan_verify_passes
                result = state.apply_verification(verifier_ids, verifier_logprobs)
    """

    def __init__(
        self,
        prompt_len: int,
        window: int,
        *,
        max_new_tokens: Optional[int] = None,
        stop_token_ids: Sequence[int] = (),
        finish_hook: Optional[FinishHook] = None,
        lookahead_blocks: int = 1,
    ):
        if prompt_len < 1:
            raise ValueError(f"prompt_len must be >= 1, got {prompt_len}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {max_new_tokens}")
        if lookahead_blocks < 1:
            raise ValueError(f"lookahead_blocks must be >= 1, got {lookahead_blocks}")
        self.prompt_len = prompt_len
        self.window = window
        self.lookahead_blocks = lookahead_blocks
        self.max_new_tokens = max_new_tokens
        self.stop_token_ids = frozenset(stop_token_ids)
        self.finish_hook = finish_hook
        self.phase = Phase.PREFILL
        self.finish: Optional[Any] = None
        self.out: list[int] = []
        self.committed_logprobs: list[Any] = []  # one entry per committed token
        self.num_committed = 0
        self.num_streamed = 0  # tokens the client has; survives retraction
        self.num_restarts = 0
        self._fast_path_finished = False
        # Tokens committed before a retraction: the restarted request must reproduce them.
        self._reference: list[int] = []

    # ---- views -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def committed_ids(self) -> list[int]:
        return self.out[: self.num_committed]

    @property
    def num_unverified(self) -> int:
        return len(self.out) - self.num_committed

    @property
    def kv_len(self) -> int:
        return self.prompt_len + len(self.out) - 1 if self.out else 0

    def sample_position(self, output_index: int) -> int:
        """Sequence position (and sampling key) of output token ``output_index``."""
        return self.prompt_len + output_index

    @property
    def num_replayed(self) -> int:
        """Committed inputs of the current block that its verification replays."""
        return (self.num_committed - 1) % self.window if self.num_committed else 0

    def can_decode(self, in_flight: int = 0) -> bool:
        """Whether the fast path may propose one more token now, or once ``in_flight``
        proposals already launched (the overlap scheduler's step in flight) have arrived."""
        return (
            self.phase is Phase.DECODING
            and not self._fast_path_finished
            and self.num_replayed + self.num_unverified + in_flight < self.lookahead_blocks * self.window
            and (self.max_new_tokens is None or len(self.out) + in_flight < self.max_new_tokens)
        )

    def blocked_after(self, in_flight: int) -> bool:
        """Whether the request will need a verification before its next proposal once
        ``in_flight`` launched proposals have arrived (known before they arrive, except a
        fast-path finish, which only their processing finds)."""
        return (
            self.phase is Phase.DECODING
            and self.num_unverified + in_flight > 0
            and not self.can_decode(in_flight)
        )

    def needs_verification(self, finished_by_fast_path: bool = False) -> bool:
        """True when the request must be verified before it decodes again.

        ``finished_by_fast_path``: the scheduler's own finish check fired on an unverified
        token; it is remembered until the next verification.
        """
        if self.phase is not Phase.DECODING or self.num_unverified == 0:
            return False
        self._fast_path_finished |= finished_by_fast_path
        return not self.can_decode()

    def ready_tokens(self) -> int:
        """Unverified tokens the next verification covers: all of them when the request must
        be verified (``needs_verification``), else those that complete a block (0: not due)."""
        if self.phase is not Phase.DECODING or self.num_unverified == 0:
            return 0
        if not self.can_decode():
            return self.num_unverified
        inputs_end = self.num_committed - 1 + self.num_unverified  # one past the last input
        return max(0, inputs_end // self.window * self.window - (self.num_committed - 1))

    # ---- transitions -------------------------------------------------------------------------

    def on_prefill_token(self, token_id: int, logprob: Any = None) -> CommitResult:
        """The first output token, from the isolated prefill: committed at once."""
        if self.phase is not Phase.PREFILL:
            raise InvalidTransition(f"prefill token in phase {self.phase.value}")
        self.phase = Phase.DECODING
        self.out.append(token_id)
        return self._commit(1, [logprob], num_accepted=0, num_dropped=0, old_len=1)

    def on_fast_token(self, token_id: int) -> None:
        """A proposal from the fast path (unverified)."""
        if not self.can_decode():
            raise InvalidTransition(
                f"fast-path token not allowed: phase={self.phase.value}, "
                f"unverified={self.num_unverified}/{self.window}, output_len={len(self.out)}"
            )
        self.out.append(token_id)

    def verify_window(self, num_tokens: Optional[int] = None) -> VerifyWindow:
        """The replay verifying the first ``num_tokens`` unverified tokens (default: all)."""
        if self.phase is not Phase.DECODING or self.num_unverified == 0:
            raise InvalidTransition(f"nothing to verify (phase={self.phase.value})")
        c, p = self.num_committed, self.prompt_len
        u = self.num_unverified if num_tokens is None else num_tokens
        if not 1 <= u <= self.num_unverified:
            raise ValueError(f"cannot verify {u} of {self.num_unverified} unverified tokens")
        return VerifyWindow(
            input_ids=tuple(self.out[c - 1 : c - 1 + u]),
            input_positions=tuple(range(p + c - 1, p + c - 1 + u)),
            sample_positions=tuple(range(p + c, p + c + u)),
            proposed_ids=tuple(self.out[c : c + u]),
            replay_ids=tuple(self.out[c - 1 - self.num_replayed : c - 1]),
        )

    def apply_verification(
        self, verifier_ids: Sequence[int], verifier_logprobs: Optional[Sequence[Any]] = None,
        num_tokens: Optional[int] = None,
    ) -> CommitResult:
        """Commit what the verifier confirms of ``verify_window(num_tokens)`` (rows beyond the
        window's length are ignored).

        ``verifier_logprobs``: per-row payloads (logprob, top logprobs, ...) stored with the
        committed tokens; None when logprobs were not requested.
        """
        window = self.verify_window(num_tokens)
        u = window.num_tokens
        if len(verifier_ids) < u or (verifier_logprobs is not None and len(verifier_logprobs) < u):
            raise ValueError(f"verifier returned fewer than {u} rows")
        verified = [int(t) for t in verifier_ids[:u]]
        m = next((j for j in range(u) if verified[j] != window.proposed_ids[j]), u)
        c, old_len = self.num_committed, len(self.out)
        num_new = min(m + 1, u)
        self.out[c : c + num_new] = verified[:num_new]
        if m < u:  # a mismatch: what followed the corrected token was built on the wrong one
            del self.out[c + num_new :]
        logprobs = list(verifier_logprobs[:num_new]) if verifier_logprobs is not None else [None] * num_new
        self._fast_path_finished = False
        # Dropped proposals: the corrected one and all after it; none when every token agreed.
        return self._commit(num_new, logprobs, num_accepted=m, num_dropped=old_len - c - m if m < u else 0,
                            old_len=old_len)

    def retract(self) -> RestartPlan:
        """Forget everything but what the client already has; prefill again from the prompt."""
        if self.phase is Phase.FINISHED:
            raise InvalidTransition("cannot retract a finished request")
        plan = RestartPlan(free_kv_positions=range(0, self.kv_len), num_already_streamed=self.num_streamed)
        if self.num_committed > len(self._reference):
            self._reference = self.out[: self.num_committed]
        self.out.clear()
        self.committed_logprobs.clear()
        self.num_committed = 0
        self._fast_path_finished = False
        self.phase = Phase.PREFILL
        self.num_restarts += 1
        return plan

    # ---- internals ---------------------------------------------------------------------------

    def _commit(
        self, num_new: int, logprobs: list[Any], *, num_accepted: int, num_dropped: int, old_len: int
    ) -> CommitResult:
        """Commit ``out[C : C+num_new]`` one token at a time, stopping at the first finish."""
        start = self.num_committed
        for i in range(start, start + num_new):
            if i < len(self._reference) and self.out[i] != self._reference[i]:
                raise DeterminismViolation(
                    f"output token {i} is {self.out[i]} after a restart but was {self._reference[i]}"
                )
            self.num_committed = i + 1
            self.committed_logprobs.append(logprobs[i - start])
            self.finish = self._finish_check()
            if self.finish is not None:
                self.phase = Phase.FINISHED
                num_dropped += len(self.out) - self.num_committed
                del self.out[self.num_committed :]
                break
        new_len = self.num_committed
        stream = range(max(start, self.num_streamed), max(new_len, self.num_streamed))
        self.num_streamed = max(self.num_streamed, new_len)
        return CommitResult(
            num_accepted=min(num_accepted, new_len - start),
            committed_ids=tuple(self.out[start:new_len]),
            num_dropped=num_dropped,
            free_kv_positions=range(self.prompt_len + len(self.out) - 1, self.prompt_len + old_len - 1),
            output_len=len(self.out),
            kv_len=self.kv_len,
            stream=stream,
            finish=self.finish,
        )

    def _finish_check(self) -> Optional[Any]:
        n = self.num_committed
        if self.max_new_tokens is not None and n >= self.max_new_tokens:
            return FinishReason("length", self.max_new_tokens)
        if self.finish_hook is not None:
            reason = self.finish_hook(_Prefix(self.out, n))
            if reason is not None:
                return reason
        if self.out[n - 1] in self.stop_token_ids:
            return FinishReason("stop_token", self.out[n - 1])
        return None


class _Prefix(collections.abc.Sequence):
    """Read-only view of ``items[:length]`` without copying (the hook runs once per token)."""

    def __init__(self, items: list, length: int):
        self._items, self._length = items, length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._items[: self._length][index]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._items[index]
