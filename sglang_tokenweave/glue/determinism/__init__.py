"""SGLang glue of deterministic requests: the only modules of this feature that import SGLang.

- ``markers``: how a request is marked deterministic on its way to the scheduler.
- ``http_api``: the ``deterministic`` field on /generate and the OpenAI routes (HTTP 400s).
- ``tokenizer_side``: per-choice seeds for n > 1.
- ``scheduler_guard``: the scheduler refuses marked requests that were not validated or cannot be replayed.
- ``runtime``: per-process configuration, counters and the state kept on each ``Req``.
- ``scheduling``: isolated prefill, no prefix reuse, fast-path finish handling, stream gating.
- ``sampling_hooks``: seeded fast-path sampling; full-window logits for the verifier.
- ``verifier``: the fixed-shape B x W verification pass, commit and rollback.
- ``metrics_export``: counters on SGLang's Prometheus endpoint and on /tokenweave/status.
"""
