"""sglang-tokenweave: an overlay for SGLang that makes tensor-parallel serving faster
(TokenWeave) and, per request, deterministic (LLM-42).

Importing this package has no side effects on SGLang: the overlay is applied by the plugin
(``sglang_tokenweave.glue.plugin``) only in processes started through our launcher or with
``SGLANG_TOKENWEAVE=1`` set.
"""

__version__ = "0.1.0"
