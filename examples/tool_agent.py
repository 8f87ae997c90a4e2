"""A small tool-using agent on `ChatRWKV7.bind_tools`: the model calls tools until it can answer.

    python examples/tool_agent.py --model path/to/rwkv7-g1.pth "What is 17 * 23, and is it warm in Oslo?"

RWKV-7 has no tool-call API: the tools are described in the system turn and the model answers with JSON,
which ChatRWKV7 parses into `AIMessage.tool_calls`. Output that is not a usable call comes back as
`invalid_tool_calls`; the agent returns the error to the model so it can correct itself. Use a World / G1
chat checkpoint: the embedded default guard is a classifier and will not call tools sensibly.
"""

from __future__ import annotations

import argparse
import ast
import operator

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from rwkv7_provider import ChatRWKV7

OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}
WEATHER = {"oslo": "4 C, light snow", "paris": "14 C, cloudy", "cairo": "31 C, sunny"}


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '17 * 23' or '(2 + 3) ** 2'."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](ev(node.operand))
        raise ValueError(f"not plain arithmetic: {expression!r}")

    return str(ev(ast.parse(expression, mode="eval").body))


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return WEATHER.get(city.strip().lower(), f"no weather data for {city}")


TOOLS = {t.name: t for t in (calculator, get_weather)}


def run_agent(model: ChatRWKV7, question: str, max_steps: int) -> list[BaseMessage]:
    agent = model.bind_tools(list(TOOLS.values()))
    messages: list[BaseMessage] = [
        SystemMessage("You are a helpful assistant. Use a tool when it helps."),
        HumanMessage(question),
    ]
    for _ in range(max_steps):
        reply = agent.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls and not reply.invalid_tool_calls:
            break
        for call in reply.tool_calls:
            try:
                result = TOOLS[call["name"]].invoke(call["args"])
            except Exception as e:  # noqa: BLE001  (a tool's error goes back to the model, like any result)
                result = f"error: {e}"
            messages.append(ToolMessage(str(result), tool_call_id=call["id"], name=call["name"]))
        for bad in reply.invalid_tool_calls:
            messages.append(
                ToolMessage(f"error: {bad['error']}", tool_call_id=bad["id"], name=bad["name"] or "tool")
            )
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="What is 17 * 23? And what's the weather in Oslo?")
    parser.add_argument(
        "--model", default="default", help="RWKV-7 chat checkpoint (default: the embedded guard)"
    )
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=120)
    args = parser.parse_args()

    model = ChatRWKV7(model=args.model, temperature=0, max_tokens=args.max_tokens)
    for message in run_agent(model, args.question, args.max_steps)[1:]:
        if isinstance(message, ToolMessage):
            print(f"[tool {message.name}] {message.content}")
        elif getattr(message, "tool_calls", None) or getattr(message, "invalid_tool_calls", None):
            for call in message.tool_calls:
                print(f"[call] {call['name']}({call['args']})")
            for bad in message.invalid_tool_calls:
                print(f"[invalid call] {bad['error']}")
        else:
            print(f"[{message.type}] {message.content}")


if __name__ == "__main__":
    main()
