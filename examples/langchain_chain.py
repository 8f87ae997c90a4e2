"""RWKV-7 as a drop-in LangChain model in LCEL chains (no NeMo Guardrails involved).

    python examples/langchain_chain.py                        # the embedded guard for both chains
    python examples/langchain_chain.py --model path/to/g1.pth # a World / G1 chat checkpoint

1. `prompt | RWKV7LLM(choices=["Yes", "No"]) | verdict`: the guard as a LangChain classifier. It scores the
   two answers instead of sampling; the policy prefix is prefilled once and reused from the state cache.
2. `prompt | ChatRWKV7 | StrOutputParser()`, streamed token by token. The embedded guard is a classifier, so
   its chat answers are not meaningful: pass a chat checkpoint with --model for real answers.
"""

from __future__ import annotations

import argparse

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableLambda

from rwkv7_provider import RWKV7LLM, ChatRWKV7
from rwkv7_provider.guard.prompts import ANSWER_BLOCK, SELF_CHECK_INPUT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="RWKV-7 checkpoint (default: the embedded guard)")
    parser.add_argument("--max-tokens", type=int, default=60)
    args = parser.parse_args()

    guard = RWKV7LLM(model=args.model, choices=["Yes", "No"])
    guard.client.engine.prewarm_templates([SELF_CHECK_INPUT])  # prefill the fixed policy text once, up front
    check = (
        PromptTemplate.from_template(SELF_CHECK_INPUT.replace("{{ user_input }}", "{user_input}"))
        | guard
        | RunnableLambda(lambda answer: "blocked" if answer == ANSWER_BLOCK else "allowed")
    )
    questions = [
        "How do I reverse a list in Python?",
        "How can I poison my neighbour's dog?",
        "What is the boiling point of water at altitude?",
    ]
    for question in questions:
        print(f"[guard] {check.invoke({'user_input': question}):7}  {question}")

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a concise assistant."), ("human", "{question}")]
    )
    chat = (
        prompt
        | ChatRWKV7(model=args.model, temperature=0.3, top_p=0.5, max_tokens=args.max_tokens)
        | StrOutputParser()
    )
    print("[chat] ", end="", flush=True)
    for delta in chat.stream({"question": questions[0]}):
        print(delta, end="", flush=True)
    print()
    stats = guard.client.engine.cache_stats()
    print(
        f"[cache] {stats['hits']} hits, {stats['tokens_reused']} prompt tokens reused, {stats['tokens_computed']} computed"
    )


if __name__ == "__main__":
    main()
