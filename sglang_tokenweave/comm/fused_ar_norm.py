"""FusedARNorm: the fused all-reduce + residual-add + RMSNorm op for one process group.

Usage, per layer boundary (same calls on every rank of the group):

    op = FusedARNorm(group, max_tokens, hidden, torch.bfloat16, eps)
    partial = op.buffer(num_tokens)            # the row-parallel GEMM writes its output here
    out = op.run(num_tokens, residual, weight)  # every row of out, on every rank

After ``run`` the residual holds the updated rows this rank owns (``op.owned_rows``); the
rest keep old values. That is all later layers need, because ownership depends only on the
token count. The one-shot variant (small batches) updates every row. ``has_residual=False``
is the first layer (the residual is written from the reduced sum, not read), ``final=True``
the last norm (the residual is read, not written).

On a CUDA process group the work runs in one kernel over torch symmetric memory. On any
other group (gloo, CPU tensors) it runs the plain-PyTorch reference with the same semantics.
"""

import logging
import os
from typing import Optional

import torch
import torch.distributed as dist

from . import reference
from .multicast import multimem_refusal
from .plan import MULTIMEM, ONESHOT, RunPlan, make_plan
from .sharding import all_owned_rows, owned_rows

logger = logging.getLogger(__name__)

SUPPORTED_WORLD_SIZES = (2, 4, 8)
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)


def _barrier_timeout_ms() -> int:
    # 0 spins forever (production: a peer may legitimately be late by seconds);
    # tests set a limit so a broken barrier fails instead of hanging.
    return int(os.environ.get("SGLANG_TOKENWEAVE_BARRIER_TIMEOUT_MS", "0"))


class FusedARNorm:
    """All-reduce + residual add + RMSNorm of one layer boundary, over one process group.

    A collective: every rank of ``group`` makes the op with the same arguments and calls
    ``run`` with the same ``num_tokens`` (and ``mode`` / launch overrides), in the same order.

    Parameters
    ----------
    group : ``torch.distributed.ProcessGroup`` or None
        The tensor-parallel group (None: the default group). NCCL: the CUDA kernels over
        symmetric memory (world size 2, 4 or 8); any other backend: the PyTorch reference.
    max_tokens : int
        The most rows one call reduces; the input buffer is ``[max_tokens, hidden]``.
    hidden : int
        The hidden size (a multiple of 8 for the CUDA kernels).
    dtype : torch.dtype
        Of the partial sums, the residual, the weight and the output: ``torch.bfloat16`` or
        ``torch.float16`` on CUDA (any float dtype on the reference path).
    eps : float
        RMSNorm's epsilon.
    device : torch.device, optional
        Default: the current CUDA device on an NCCL group, else the CPU.
    use_multimem : bool
        Ask for the NVLink-multicast variant (``MULTIMEM``). Refused (the P2P variants run;
        the reason is in ``multimem_refusal``) off CUDA, where a multicast-off switch is set
        (``multicast.MULTICAST_OFF_SWITCHES``) or where the buffer has no multicast mapping.
    timeout_ms : int, optional
        Barrier timeout of the CUDA kernels (0: spin forever; default from
        ``SGLANG_TOKENWEAVE_BARRIER_TIMEOUT_MS``).

    Plan / run: ``plan(num_tokens)`` decides the variant (``ONESHOT``, ``SHARDED``,
    ``MULTIMEM``), the rows this rank owns and the launch shape, once per call size (cached,
    identical on every rank); ``run`` launches with that plan. Numerics: the partials are summed
    in float32 in rank order and rounded once to ``dtype``; the norm reads the float32 sum of
    that and the residual (see ``reference``).
    """

    def __init__(
        self,
        group: Optional[dist.ProcessGroup],
        max_tokens: int,
        hidden: int,
        dtype: torch.dtype,
        eps: float = 1e-6,
        *,
        device: Optional[torch.device] = None,
        use_multimem: bool = False,
        timeout_ms: Optional[int] = None,
    ):
        self.group = group if group is not None else dist.group.WORLD
        self.world_size = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self.max_tokens, self.hidden, self.dtype, self.eps = max_tokens, hidden, dtype, eps
        self.timeout_ms = _barrier_timeout_ms() if timeout_ms is None else timeout_ms
        if device is None:
            on_cuda = dist.get_backend(self.group) == "nccl"
            device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        self.multimem_refusal = "multimem variant needs a CUDA group"
        self._plans: dict[tuple, RunPlan] = {}
        if self.on_gpu:
            self._init_gpu(use_multimem)
        else:
            self._buf = torch.empty((max_tokens, hidden), dtype=dtype, device=self.device)

    def _init_gpu(self, use_multimem: bool) -> None:
        if self.world_size not in SUPPORTED_WORLD_SIZES:
            raise ValueError(f"world size {self.world_size} not supported; use one of {SUPPORTED_WORLD_SIZES}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype {self.dtype} not supported; use bfloat16 or float16")
        from torch._C._distributed_c10d import _SymmetricMemory
        from torch.distributed import _symmetric_memory as symm_mem

        from .build import ops

        self._ops = ops()  # first GPU use: build or load the kernels
        # A dedicated allocation (not the shared symmetric pool), so this op has a signal
        # pad of its own: no other symmetric-memory kernel can touch its barrier slots.
        size, stride = (self.max_tokens, self.hidden), (self.hidden, 1)
        self._buf = _SymmetricMemory.empty_strided_p2p(size, stride, self.dtype, self.device)
        self._handle = symm_mem.rendezvous(self._buf, self.group)
        base = self._handle.buffer_ptrs
        offset = self._buf.data_ptr() - base[self.rank]
        self._buffer_ptrs = [p + offset for p in base]
        self._signal_ptrs = list(self._handle.signal_pad_ptrs)
        self._signal_slots = symm_mem.get_signal_pad_size() // 4
        multicast_ptr = int(self._handle.multicast_ptr or 0)
        self.multimem_refusal = multimem_refusal(use_multimem, multicast_ptr)
        self._multicast_ptr = multicast_ptr + offset if not self.multimem_refusal else 0
        if use_multimem and self.multimem_refusal:
            logger.warning("fused all-reduce: using the P2P variant: %s", self.multimem_refusal)

    # ---- plan ---------------------------------------------------------------------------

    def buffer(self, num_tokens: int) -> torch.Tensor:
        """This rank's input: the partial sums to reduce, ``[num_tokens, hidden]`` of ``dtype``
        on ``device``, a view of the op's buffer (a row-parallel GEMM writes its output into it).
        ``run`` overwrites it with the normalised rows."""
        self._check_tokens(num_tokens)
        return self._buf[:num_tokens]

    def owned_rows(self, num_tokens: int) -> tuple[int, int]:
        """``[start, end)``: the residual rows this rank updates in the ``SHARDED`` and
        ``MULTIMEM`` variants (a function of the token count, world size and rank only)."""
        return owned_rows(num_tokens, self.world_size, self.rank)

    def plan(self, num_tokens: int, mode: Optional[str] = None, num_blocks: Optional[int] = None,
             vecs_per_thread: Optional[int] = None, rows_per_block: Optional[int] = None) -> RunPlan:
        """Everything decided per call size, once; identical on every rank.

        ``mode``: one of ``MODES`` (default: ``ONESHOT`` for the smallest batches, else
        ``SHARDED``; ``MULTIMEM`` where allowed). ``num_blocks``, ``vecs_per_thread``,
        ``rows_per_block``: launch overrides (tuning, benchmarks). Raises ValueError for
        ``num_tokens`` outside ``[0, max_tokens]`` or a mode / shape that cannot run."""
        key = (num_tokens, mode, num_blocks, vecs_per_thread, rows_per_block)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(*key)
        return plan

    def _make_plan(self, num_tokens, mode, num_blocks, vecs_per_thread, rows_per_block) -> RunPlan:
        self._check_tokens(num_tokens)
        plan = make_plan(num_tokens, self.world_size, self.rank, self.hidden, mode=mode,
                         multimem_allowed=not self.multimem_refusal, num_blocks=num_blocks,
                         vecs_per_thread=vecs_per_thread, rows_per_block=rows_per_block)
        if self.on_gpu and 2 * plan.shape.num_blocks * self.world_size > self._signal_slots:
            raise ValueError(f"{plan.shape.num_blocks} blocks need more signal slots than the pad has")
        return plan

    # ---- run ----------------------------------------------------------------------------

    def run(self, num_tokens: int, residual: Optional[torch.Tensor], weight: torch.Tensor, *,
            has_residual: bool = True, final: bool = False, out: Optional[torch.Tensor] = None,
            mode: Optional[str] = None, num_blocks: Optional[int] = None,
            vecs_per_thread: Optional[int] = None, rows_per_block: Optional[int] = None) -> torch.Tensor:
        """Reduce ``buffer(num_tokens)`` over the group, add and update the residual, and
        return the normalised rows. The result lives in this op's buffer (valid until the
        next GEMM writes it) unless ``out`` is given.

        Parameters
        ----------
        num_tokens : int
            Rows to reduce, in ``[0, max_tokens]``; the same on every rank.
        residual : torch.Tensor or None
            ``[num_tokens, hidden]``, contiguous, ``dtype``, on ``device``. Read unless
            ``has_residual=False``; updated in place unless ``final=True``: with the sum of
            the reduced rows and the old residual (the reduced rows alone when
            ``has_residual=False``), on every row for ``ONESHOT``, on ``owned_rows`` only
            for ``SHARDED`` / ``MULTIMEM`` (the other rows keep stale values). May be None
            only when it is neither read nor written.
        weight : torch.Tensor
            ``[hidden]`` of ``dtype`` on ``device``: RMSNorm's weight.
        has_residual : bool
            False for the first layer (no residual to add yet).
        final : bool
            True for the model's last norm (the residual is not written).
        out : torch.Tensor, optional
            ``[num_tokens, hidden]`` of ``dtype``: the result is copied here and returned.
        mode, num_blocks, vecs_per_thread, rows_per_block
            As in ``plan``.

        Returns
        -------
        torch.Tensor
            ``[num_tokens, hidden]`` of ``dtype``: every row of ``RMSNorm(x + residual) *
            weight`` on every rank, ``x`` being the sum of the ranks' ``buffer(num_tokens)``.
            A view of the op's buffer (overwritten in place), or ``out``.
        """
        plan = self.plan(num_tokens, mode, num_blocks, vecs_per_thread, rows_per_block)
        self._check_args(plan, residual, weight, has_residual, final)
        if num_tokens > 0:
            if self.on_gpu:
                self._launch(plan, residual, weight, has_residual, not final)
            else:
                self._run_reference(plan, residual, weight, has_residual, not final)
        result = self._buf[:num_tokens]
        if out is not None:
            out.copy_(result)
            return out
        return result

    def _launch(self, plan: RunPlan, residual, weight, has_residual: bool, write_residual: bool) -> None:
        s = plan.shape
        if plan.mode == MULTIMEM:
            self._ops.fused_ar_norm_multimem(
                weight, residual, self._multicast_ptr, self._signal_ptrs, self._signal_slots, self.rank,
                plan.row_begin, plan.row_end, self.eps, has_residual, write_residual, s.num_blocks,
                s.vecs_per_thread, s.threads_per_row, s.rows_per_block, 0, self.timeout_ms)
            return
        self._ops.fused_ar_norm(
            weight, residual, self._buffer_ptrs, self._signal_ptrs, self._signal_slots, self.rank,
            plan.row_begin, plan.row_end, self.eps, has_residual, write_residual, plan.mode == ONESHOT,
            s.num_blocks, s.vecs_per_thread, s.threads_per_row, s.rows_per_block, 0, self.timeout_ms)

    def _run_reference(self, plan: RunPlan, residual, weight, has_residual: bool, write_residual: bool) -> None:
        """The kernel's semantics in plain torch.distributed. Token-sharded, a rank's residual
        is valid on its own rows only, so each row is normalised by its owner and the
        results are gathered, as the kernel's peer stores do."""
        n = plan.num_tokens
        x = reference.reduce_partials(reference.gather_partials(self._buf[:n].clone(), self.group))
        rows = slice(0, n) if plan.mode == ONESHOT else slice(plan.row_begin, plan.row_end)
        out, new_residual = reference.add_rmsnorm(x[rows], residual[rows] if has_residual else None,
                                                  weight, self.eps)
        if plan.mode != ONESHOT:
            out = reference.gather_rows(out, all_owned_rows(n, self.world_size), self.group)
        self._buf[:n].copy_(out)
        if write_residual:
            residual[rows].copy_(new_residual)

    # ---- checks -------------------------------------------------------------------------

    def _check_tokens(self, num_tokens: int) -> None:
        if not 0 <= num_tokens <= self.max_tokens:
            raise ValueError(f"num_tokens {num_tokens} outside [0, {self.max_tokens}]")

    def _check_args(self, plan: RunPlan, residual, weight, has_residual: bool, final: bool) -> None:
        if weight.shape != (self.hidden,) or weight.dtype != self.dtype or weight.device != self.device:
            raise ValueError(f"weight must be [{self.hidden}] {self.dtype} on {self.device}")
        if has_residual or not final:
            if residual is None:
                raise ValueError("residual tensor required (read unless has_residual=False, written unless final)")
            if (residual.shape != (plan.num_tokens, self.hidden) or residual.dtype != self.dtype
                    or residual.device != self.device or not residual.is_contiguous()):
                raise ValueError(f"residual must be contiguous [{plan.num_tokens}, {self.hidden}] "
                                 f"{self.dtype} on {self.device}")
