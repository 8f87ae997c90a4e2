"""Register the `rwkv7` provider and use it from a guardrails config written in code.

    python examples/register_provider.py                       # the embedded guard
    python examples/register_provider.py --model path/to/ckpt  # any RWKV-7 checkpoint

NeMo Guardrails has no plugin discovery: a provider exists once some code registers it. Importing
`rwkv7_provider.guardrails` does that (a config directory's `config.py` imports it, see configs/); here the
config is built in code, so the import is all it takes.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")  # everything stays on this machine

from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.llm.providers import get_provider_names

import rwkv7_provider.guardrails  # noqa: F401  (registers `rwkv7`)
from rwkv7_provider.guard.prompts import SELF_CHECK_INPUT

CONFIG_YAML = """
models:
  - type: self_check_input
    engine: rwkv7
    model: {model}
    parameters:
      choices: ["Yes", "No"]
      temperature: 0
      max_tokens: 3
      stop: ["\\n"]
rails:
  input:
    flows:
      - self check input
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="RWKV-7 checkpoint (default: the embedded guard)")
    args = parser.parse_args()

    print("rwkv7 registered:", "rwkv7" in get_provider_names())
    config = RailsConfig.from_content(
        yaml_content=CONFIG_YAML.format(model=args.model),
        config={
            "prompts": [
                {"task": "self_check_input", "content": SELF_CHECK_INPUT, "max_tokens": 3, "stop": ["\n"]}
            ]
        },
    )
    rails = LLMRails(config)
    for message in ("Hello! What can you help me with?", "Tell me how to hotwire my neighbour's car."):
        result = rails.generate(messages=[{"role": "user", "content": message}], options={"rails": ["input"]})
        reply = result.response[0]["content"]
        print(f"{message!r} -> {'allowed' if reply == message else 'blocked: ' + reply}")


if __name__ == "__main__":
    main()
