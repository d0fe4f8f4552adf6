"""What the end-to-end tests on SmolLM2 share: fixed prompts, the stock-SGLang command line on CPU,
and batched greedy generation."""

from __future__ import annotations

from sglang_tokenweave.config import SWITCH_ENV

# Twenty fixed chat prompts: questions, instructions, a little code and arithmetic.
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "How many legs does a spider have?",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
    "Translate 'good morning' into Spanish.",
    "Explain in one sentence what a CPU does.",
    "Give me a synonym for 'happy'.",
    "What is the boiling point of water in Celsius?",
    "Write a Python function that returns the square of a number.",
    "Who wrote Romeo and Juliet?",
    "List the first five prime numbers.",
    "What is the largest planet in the solar system?",
    "Summarise the plot of Cinderella in two sentences.",
    "What does HTML stand for?",
    "Suggest a name for a pet goldfish.",
    "Why is the sky blue?",
    "Convert 5 kilometres to metres.",
    "What is the opposite of 'ancient'?",
    "Tell me a fun fact about octopuses.",
]

# Our CPU defaults, spelt out for stock SGLang (our launcher adds them itself; see cpu_support),
# and fp32 compute for both (see launch_server: fp32 on CPUs without native bf16).
STOCK_CPU_ARGS = ["--device", "cpu", "--cuda-graph-backend-prefill", "disabled",
                  "--cuda-graph-backend-decode", "disabled"]
COMMON_ARGS = ["--dtype", "float32", "--served-model-name", "smollm2"]
# Stock SGLang 0.5.17 cannot serve on a CPU by itself here: off CUDA its rotary embedding imports
# vllm (not installed), and TP > 1 builds a PyNccl communicator. The switch alone, with no overlay
# flag, registers only our CPU enablement hooks (patch table, feature "cpu"; they change no
# arithmetic) and the status report: SGLang's model code, kernels and scheduler stay stock.
STOCK_ENV = {SWITCH_ENV: "1"}
STOCK_LAUNCHER = "sglang.launch_server"


def chat_ids(tokenizer, prompts=PROMPTS):
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"] for p in prompts]


def greedy(server, input_ids, max_new_tokens, **extra):
    """One batched /generate request: every prompt's output, in order."""
    body = {"input_ids": input_ids, "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0},
            **extra}
    r = server.post("/generate", body, timeout=1800)
    assert r.status_code == 200, r.text
    return r.json()
