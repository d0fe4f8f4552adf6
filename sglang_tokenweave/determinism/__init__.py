"""Deterministic requests (LLM-42): the pure core of verify-and-rollback.

A request with ``deterministic: true`` decodes on the normal batched ("fast") path; a verifier
periodically replays its recent tokens in a pass of fixed shape, commits the tokens that match
and rolls back the rest. Only committed tokens are ever returned, so the output is a function
of the prompt, the sampling parameters and the server's static configuration alone.

Modules (none imports SGLang; the scheduler glue builds on them):

- ``config``: window W, verifier rows B, the test-only perturbation switch.
- ``state``: the per-request commit/rollback state machine.
- ``groups``: packing requests ready for verification into fixed-shape B x W passes.
- ``seeds``: default seed, per-choice seeds for n > 1, the (seed, position) random draw.
- ``sampling``: seeded, batch-invariant sampling (torch).
- ``sampling_plan``: the layout the sampler, its Triton kernels (``sampling_kernel``) and the
  row table (``row_table``) share: row parameters, a plan's device fields, the table's columns.
- ``logprobs``: batch-invariant log-probabilities of chosen / top tokens (torch).
- ``perturbation``: test-only noise on the fast path's logits.
- ``replay_rules``: what the verifier can replay, checked by the HTTP layer and the scheduler.
- ``request_validation``: where the field goes in a JSON body and what it may come with (HTTP 400s).
- ``metrics``: plain counters.
"""
