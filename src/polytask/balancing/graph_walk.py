"""The one walk over an autograd graph that the per-task gradient code needs in several places."""

from __future__ import annotations

from collections.abc import Iterator


def graph_nodes(root: object, stop: object = None) -> Iterator[object]:
    """Every autograd node reachable from ``root`` (a ``grad_fn``), each once, depth first, without going
    past ``stop`` (a node)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen or node is stop:
            continue
        seen.add(node)
        yield node
        stack.extend(child for child, _ in node.next_functions)
