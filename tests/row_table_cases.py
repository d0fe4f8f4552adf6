"""A decode step planned from the row table, and the same step planned on the host: shared by
the CPU tests, the Triton interpreter's child process and the GPU tests."""

import dataclasses
import random

import torch

from sglang_tokenweave.determinism.row_table import TOP_K_ALL, RowTable
from sglang_tokenweave.determinism.sampling import RowParams, plan_sampling, sample, sample_at_batch_rows, write_at_batch_rows

POOL_ROWS = 64
POISON = -7


@dataclasses.dataclass
class TableStep:
    table: RowTable
    params: dict  # request row -> RowParams of the deterministic request there
    request_rows: list  # the batch's request rows, in batch order
    positions: list  # each batch row's input position

    @property
    def ours(self) -> list:
        """The batch rows of deterministic requests."""
        return [i for i, r in enumerate(self.request_rows) if r in self.params]

    def host_plan(self, vocab: int, device):
        rows = [dataclasses.replace(self.params[self.request_rows[i]], position=self.positions[i] + 1)
                for i in self.ours]
        return plan_sampling(rows, vocab, device, batch_rows=self.ours)

    def table_plan(self, vocab: int, device, kernel: str):
        rows = torch.tensor(self.request_rows, device=device)
        return self.table.plan(rows, torch.tensor(self.positions, device=device), vocab, kernel=kernel)


def table_step(device, seed: int = 0, deterministic: int = 12, batch: int = 37) -> TableStep:
    """Deterministic requests (greedy, temperatures, min_p, SGLang's "all" top_k; 64-bit seeds)
    at random request rows, in a batch among rows of other requests, at positions past 2**40
    (the key's products wrap modulo 2**64)."""
    rng = random.Random(seed)
    rows = rng.sample(range(1, POOL_ROWS), deterministic)
    params = {r: RowParams(seed=rng.getrandbits(64), position=0, temperature=rng.choice([0.0, 0.6, 1.0, 1.7]),
                           min_p=rng.choice([0.0, 0.05]), top_k=rng.choice([-1, TOP_K_ALL])) for r in rows}
    table = RowTable(POOL_ROWS, device)
    table.mark(rows, [params[r] for r in rows])
    others = rng.sample([r for r in range(POOL_ROWS) if r not in params], batch - deterministic)
    request_rows = rows + others
    rng.shuffle(request_rows)
    positions = [rng.randrange(0, 1 << 41) for _ in request_rows]
    return TableStep(table, params, request_rows, positions)


def written_ids(logits, plan, kernel: str, at_batch_rows: bool) -> list:
    """The ids SGLang's sampler left (POISON everywhere) after our rows are written in."""
    ids = torch.full((logits.shape[0],), POISON, dtype=torch.int32, device=logits.device)
    ours = sample_at_batch_rows(logits, plan, kernel) if at_batch_rows else sample(logits, plan, kernel)
    write_at_batch_rows(ids, ours, plan, kernel)
    return ids.tolist()
