"""Fixtures shared by the agents' tests."""

from __future__ import annotations

import pytest
from predictor_world import TASKS

from metacompress.agents.unit_predictors import UnitExample, load_or_measure_tables, unit_examples


@pytest.fixture(scope="session")
def examples(tiny_world, tmp_path_factory) -> dict[str, list[UnitExample]]:
    """Each tiny model's units with their measured option tables (measured once: tens of evaluations per unit)."""
    folder = tmp_path_factory.mktemp("tables")
    out = {}
    for name, task in TASKS.items():
        context = tiny_world.context(task)
        out[name] = unit_examples(context, name, load_or_measure_tables(context, folder / f"{name}.tables.json"))
    return out
