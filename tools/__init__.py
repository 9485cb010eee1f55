"""The tool catalog, installed as ``agentrl.tools``.

Importing it registers every catalog tool in :data:`agentrl.tool.TOOLS`:

``calculator``
    exact arithmetic over an expression tree (:mod:`agentrl.tools.calculator`).
``python``
    runs a program in the sandbox (:mod:`agentrl.tools.python`, :mod:`agentrl.tools.sandbox`).
``search``
    BM25 over a local document collection (:mod:`agentrl.tools.search`); environments build
    their own with :func:`agentrl.tools.search.search_tool`.
"""

from agentrl.tools import calculator, python, search

__all__ = ["calculator", "python", "search"]
