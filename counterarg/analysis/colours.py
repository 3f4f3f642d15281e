"""One colour per strategy: the one home of the strategy -> colour map every figure of a sweep uses.

The colours go by the sweep's strategy names in sorted order, so a strategy has the same colour in
``validation_mean_acc1.png``, ``test_acc1_per_task.png``, ``mining_telemetry.png`` and ``race.png``
of one sweep as long as each figure is given the sweep's whole list of names (a figure that draws
fewer strategies keeps the others' colours unused rather than shifting them). Up to 10 strategies
get matplotlib's ``tab10``; more get ``tab20``'s 20 (strong then pale of each hue), so no two of a
sweep's strategies share a colour until there are more than 20. TensorBoard picks its run colours
itself in the browser (a person can change them in the runs list), so they cannot be set from here.
"""

from __future__ import annotations

from collections.abc import Iterable

#: matplotlib's tab10, as hex (no matplotlib import needed to read a colour)
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: matplotlib's tab20 pale partners of tab10, in the same hue order
TAB10_PALE = (
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)


def strategy_colours(names: Iterable[str]) -> dict[str, str]:
    """``{name: "#rrggbb"}`` for the sweep's strategy names (duplicates once, in sorted order): the
    first 10 the strong tab10 colours, the next 10 their pale partners, then around again."""
    palette = TAB10 + TAB10_PALE
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(set(names)))}
