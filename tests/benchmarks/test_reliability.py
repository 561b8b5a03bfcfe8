"""``bench reliability``'s catalogue as regression tests (issue 13 items 1, 2, 7, 8): each case through the CLI."""

from __future__ import annotations

import pytest

from metacompress.benchmarks.budget_property import run_budget_property
from metacompress.benchmarks.reliability import catalogue, run_case
from metacompress.cli import main

CASES = {case.name: case for case in catalogue()}
SUBPROCESS = [name for name, case in CASES.items() if case.interrupt_when]


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METACOMPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.mark.parametrize("name", [n for n in CASES if n not in SUBPROCESS])
def test_case(name, tmp_path, zoo_cache):
    outcome = run_case(CASES[name], tmp_path)
    assert outcome.passed, outcome.line()
    assert outcome.exit == CASES[name].exit and CASES[name].expect.split("{w}")[0] in outcome.message


@pytest.mark.slow  # a subprocess with two SB3 workers, SIGINT to the group: ~1 min on 2 busy cores
@pytest.mark.parametrize("name", SUBPROCESS)
def test_ctrl_c_case(name, tmp_path, zoo_cache):
    outcome = run_case(CASES[name], tmp_path)
    assert outcome.passed, outcome.line()


def test_budget_property_at_odd_widths():
    result = run_budget_property(tasks=40, seed=1, models=8)
    assert result.odd_width_tasks == 40 and result.feasible > 10
    assert (result.over_budget, result.wrong_refusals) == (0, 0)


def test_the_command_prints_one_line_per_case_and_the_summary(capsys, tmp_path, zoo_cache):
    assert main(["bench", "reliability", "--tasks", "5", "--only", "--budget latency=1e"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok   apply --budget latency=1e") and "exit 2" in lines[0]
    assert lines[1] == "cases passed: 1/1; files lost: 0; left behind: 0"
    assert lines[2].startswith("budget property: 5 random tasks") and lines[2].endswith("plans over budget: 0; wrong refusals: 0")
