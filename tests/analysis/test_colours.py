"""The strategy colour map (counterarg.analysis.colours)."""

from __future__ import annotations

from counterarg.analysis.colours import strategy_colours


def test_colours_go_by_sorted_name_and_differ_up_to_twenty():
    names = [f"s{i:02d}" for i in range(20)]
    colours = strategy_colours(reversed(names))
    assert list(colours) == names and len(set(colours.values())) == 20
    assert strategy_colours(names[:3]) == {n: colours[n] for n in names[:3]}  # a sweep's first ten: tab10
    assert strategy_colours(["b", "a", "a"]) == {"a": "#1f77b4", "b": "#ff7f0e"}
