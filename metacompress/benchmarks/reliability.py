"""``bench reliability``: replay the bad-input catalogue and the interruption cases end to end through the CLI.

Every case runs in a fresh folder: ``setup`` writes the user's files there (a model file, a
thesis folder, an old run, a corrupt summary), the command runs, and the case passes when

- the exit status is the expected one (2: one ``error:`` line; 130: Ctrl-C; 141: the
  reader of a pipe went away; 0: it worked), with no traceback;
- the last line on stderr holds the expected words (the message names the problem);
- every file the case marks as the user's is still there, byte for byte ("files lost");
- nothing is left behind (``.tmp-*``, ``.old-*`` or probe files beside the target).

Most cases call ``metacompress.cli.main`` in this process (an escaping exception is a
traceback). The Ctrl-C cases run ``python -m metacompress.cli`` in a process group of its
own and send it SIGINT, as a terminal does, so the SB3 workers receive it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from metacompress.benchmarks.budget_property import BudgetPropertyResult

LEFTOVER_MARKS = (".tmp-", ".old-", ".metacompress-probe-")
TINY_TRAIN = {  # a training run of seconds: two subprocess workers, checkpoints every 64 steps
    "timesteps": 256, "n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 2, "vec_env": "subproc",
    "models": ["mlp-w64-d1-digits"], "net_arch": [16], "eval_tasks": 0, "checkpoint_every": 64, "search_finetune_steps": 0,
}
USER_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn
    from metacompress import splits_from_arrays

    def factory():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 3))
        x = torch.randn(400, 12)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        return model.eval(), splits_from_arrays(x, y, seed=0)

    def broken():
        widths = {"hidden": 24}
        return widths["hiden"]
    """
)


@dataclass(frozen=True)
class Case:
    """One replayed situation.

    Args:
        name: how the report names it.
        argv: the command, ``{w}`` standing for the case's folder.
        exit: the expected exit status.
        expect: words the last stderr line must hold ("" for none: a silent exit).
        setup: writes the case's files into its folder.
        keep: paths (relative to the folder) that are the user's and must survive unchanged.
        before: a command that must succeed first (e.g. the run that ``--overwrite`` replaces).
        interrupt_when: a glob (relative to the folder); the command runs as a subprocess and
            gets SIGINT once a path matches it.
        after: a command to run after the interruption (e.g. ``--resume``) and what it must print.
    """

    name: str
    argv: tuple[str, ...]
    exit: int
    expect: str
    setup: Callable[[Path], None] = lambda w: None
    keep: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    interrupt_when: str | None = None
    after: tuple[tuple[str, ...], str] | None = None


@dataclass
class Outcome:
    """What a case did; ``passed`` sums up the checks."""

    case: Case
    exit: int | None
    message: str
    left: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        left = ", ".join(self.left + [f"LOST {p}" for p in self.lost]) or "-"
        status = "ok  " if self.passed else "FAIL"
        why = f"  [{'; '.join(self.problems)}]" if self.problems else ""
        return f"{status} {self.case.name:<48} exit {self.exit!s:<4} {self.message[:120]!r:<124} left: {left}{why}"


# --- the user's files ---------------------------------------------------------------------
def _user_files(w: Path) -> None:
    (w / "mymodel.py").write_text(USER_MODEL)
    (w / "thesis").mkdir()
    (w / "thesis" / "chapter1.tex").write_text("years of work")
    (w / "results.txt").write_text("keep me")
    (w / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    (w / "tiny.json").write_text(json.dumps(TINY_TRAIN))


def _fake_apply_run(w: Path, summary: str | None = None) -> None:
    from metacompress.commands.inspect import TABLE_COLUMNS

    run = w / "run"
    run.mkdir()
    (run / "decisions.csv").write_text(",".join(TABLE_COLUMNS) + "\n" + ",".join(["0", "fc", "linear"] + ["1"] * (len(TABLE_COLUMNS) - 3)) + "\n")
    good = {"model": "m", "hardware": "h", "budget": "size=0.5", "budget_ratio": 0.9,
            "test_accuracy_original": 0.9, "test_accuracy_compressed": 0.8}
    (run / "summary.json").write_text(summary if summary is not None else json.dumps(good))


def _edited_policy(w: Path, **change) -> None:
    import shutil

    from metacompress.agents.registry import DEFAULT_POLICY

    shutil.copytree(DEFAULT_POLICY, w / "policy")
    description = json.loads((w / "policy" / "policy.json").read_text())
    (w / "policy" / "policy.json").write_text(json.dumps({**description, **change}))


def _train_run(w: Path, checkpoint: Callable[[Path], None] | None = None) -> None:
    """A train run as ``train --config tiny.json --out run`` starts it (manifest, config.json)."""
    from dataclasses import asdict, replace

    from metacompress.agents.train_config import TrainConfig
    from metacompress.compressors.runs import RunFolder, config_from_file

    config = replace(config_from_file(w / "tiny.json", TrainConfig()), algo="ppo", seed=0, split="train")
    with RunFolder(w / "run", "train").write(asdict(config)) as tmp:
        (tmp / "checkpoints").mkdir()
        (tmp / "old-run.txt").write_text("the old run")
        if checkpoint is not None:
            checkpoint(tmp / "checkpoints" / "ckpt-000000064.pt")


class _Payload:
    """Unpickling it would run ``print``: what ``weights_only=True`` must refuse."""

    def __reduce__(self):
        return (print, ("this ran code from a checkpoint",))


def _malicious_checkpoint(path: Path) -> None:
    import torch

    torch.save({"policy": _Payload(), "num_timesteps": 64}, path)


def _with(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        _user_files(w)
        for step in steps:
            step(w)
    return setup


APPLY = ("apply", "--model", "{w}/mymodel.py:factory", "--hardware", "m7-mcu", "--budget", "size=0.5", "--finetune-steps", "1")
TRAIN = ("train", "--config", "{w}/tiny.json", "--no-progress")


def catalogue() -> list[Case]:
    """The cases issue 13 lists: data loss, refusals before work, tracebacks that must be errors, interruptions."""
    files = _with()
    return [
        Case("apply --overwrite on a thesis folder", APPLY + ("--overwrite", "--out", "{w}/thesis"), 2,
             "is not a metacompress run", files, keep=("thesis/chapter1.tex",)),
        Case("train --overwrite on a thesis folder", TRAIN + ("--overwrite", "--out", "{w}/thesis"), 2,
             "is not a metacompress run", files, keep=("thesis/chapter1.tex",)),
        Case("apply --overwrite on a regular file", APPLY + ("--overwrite", "--out", "{w}/results.txt"), 2,
             "exists and is not a folder", files, keep=("results.txt",)),
        Case("apply --overwrite replaces its own run", APPLY + ("--overwrite", "--out", "{w}/runs/a"), 0, "",
             files, before=APPLY + ("--out", "{w}/runs/a")),
        Case("apply: unwritable --out", APPLY + ("--out", "{w}/results.txt/run"), 2, "cannot write --out", files, keep=("results.txt",)),
        Case("train: unwritable --out", TRAIN + ("--out", "{w}/results.txt/run"), 2, "cannot write --out", files),
        Case("hardware measure: unwritable --out", ("hardware", "measure", "--out", "{w}/results.txt/cpu.csv"), 2,
             "cannot write --out", files),
        Case("inspect: unwritable --plot", ("inspect", "{w}/run", "--plot", "{w}/results.txt/d.png"), 2,
             "cannot write --plot", _with(_fake_apply_run)),
        Case("inspect: corrupt summary.json", ("inspect", "{w}/run"), 2, "summary.json is corrupt",
             _with(lambda w: _fake_apply_run(w, "{ truncated"))),
        Case("inspect --format json | head", ("inspect", "{w}/run", "--format", "json"), 141, "", _with(_fake_apply_run)),
        Case("suite list | head", ("suite", "list"), 141, "", files),
        Case("apply --weights corrupt file", APPLY + ("--weights", "{w}/bad.safetensors", "--out", "{w}/r"), 2,
             "cannot load weights", files),
        *[Case(f"apply --budget {text}", APPLY[:6] + (text,) + APPLY[7:] + ("--out", "{w}/r"), 2, "cannot read budget", files)
          for text in ("latency=1.2.3", "latency=.", "latency=-", "latency=1e")],
        Case("apply --max-prune 1.5", APPLY + ("--max-prune", "1.5", "--out", "{w}/r"), 2, "max prune ratio 1.5 is outside", files),
        Case("policy.json: unknown activation", APPLY + ("--policy", "{w}/policy", "--out", "{w}/r"), 2,
             "activation 'gelu' is not one of", _with(lambda w: _edited_policy(w, activation="gelu"))),
        Case("policy.json: malformed net_arch", APPLY + ("--policy", "{w}/policy", "--out", "{w}/r"), 2,
             "net_arch 'wide' is not a list", _with(lambda w: _edited_policy(w, net_arch="wide"))),
        Case("a user factory that raises", ("apply", "--model", "{w}/mymodel.py:broken", "--out", "{w}/r"), 2,
             "model factory {w}/mymodel.py:broken() failed at {w}/mymodel.py:15: KeyError", files),
        Case("train --resume: malicious checkpoint", TRAIN + ("--resume", "--out", "{w}/run"), 2, "cannot be loaded safely",
             _with(lambda w: _train_run(w, _malicious_checkpoint)), keep=("run/old-run.txt",)),
        Case("train --resume: not a train run", TRAIN + ("--resume", "--out", "{w}/thesis"), 2, "not a metacompress train run",
             files, keep=("thesis/chapter1.tex",)),
        Case("Ctrl-C in train, then --resume", TRAIN + ("--out", "{w}/run"), 130, "keeps its checkpoint at", files,
             interrupt_when=".run.tmp-*/checkpoints/ckpt-*.pt",
             after=(TRAIN + ("--resume", "--out", "{w}/run"), "(resumed; 256 in all)")),
        Case("Ctrl-C in train --overwrite before a checkpoint", TRAIN + ("--overwrite", "--out", "{w}/run"), 130,
             "nothing was written", _with(_train_run), keep=("run/old-run.txt",), interrupt_when=".run.tmp-*/config.json"),
    ]


# --- running ------------------------------------------------------------------------------
class _ClosedPipe(io.TextIOBase):
    """stdout whose reader has gone (``| head`` after its lines): every write fails."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def _fill(argv: tuple[str, ...], w: Path) -> list[str]:
    return [part.replace("{w}", str(w)) for part in argv]


def _in_process(argv: list[str], broken_pipe: bool = False) -> tuple[int | None, str, str, str]:
    """``main(argv)`` here: (exit status, stdout, stderr, "traceback: ..." if an exception escaped)."""
    from metacompress.cli import main

    out, err = (_ClosedPipe() if broken_pipe else io.StringIO()), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException as exc:  # what would have been a traceback
        code, crash = None, f"traceback: {type(exc).__name__}: {exc}"
    else:
        crash = ""
    return code, "" if broken_pipe else out.getvalue(), err.getvalue(), crash


def _interrupted(argv: list[str], w: Path, pattern: str, timeout_s: float = 300) -> tuple[int | None, str, str]:
    command = [sys.executable, "-m", "metacompress.cli", *argv]
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, cwd=w)
        deadline = time.monotonic() + timeout_s
        while process.poll() is None and not list(w.glob(pattern)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # the whole group, as a terminal's Ctrl-C does
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code = None
        err.seek(0)
        text = err.read()
    return code, text, "traceback" if "Traceback (most recent call last)" in text else ""


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    chosen = [line for line in lines if line.startswith(("error:", "interrupted"))]
    return (chosen or lines or [""])[-1]


def run_case(case: Case, root: Path) -> Outcome:
    """Run one case in a fresh folder under ``root``; check exit, message, the user's files and leftovers."""
    w = Path(tempfile.mkdtemp(dir=root, prefix="case-"))
    case.setup(w)
    kept = {path: _digest(w / path) for path in case.keep}
    problems = []
    if case.before:
        code, _, stderr, crash = _in_process(_fill(case.before, w))
        if code != 0:
            problems.append(f"the first run failed: {crash or _last_line(stderr)}")
    argv = _fill(case.argv, w)
    if case.interrupt_when:
        code, stderr, crash = _interrupted(argv, w, case.interrupt_when)
    else:
        code, _, stderr, crash = _in_process(argv, broken_pipe=case.exit == 141)
    message = crash or _last_line(stderr)
    expect = case.expect.replace("{w}", str(w))
    if crash:
        problems.append(crash)
    if code != case.exit:
        problems.append(f"exit {code}, expected {case.exit}")
    if expect not in message:
        problems.append(f"message lacks {expect!r}")
    if case.after:
        after_code, after_out, after_err, after_crash = _in_process(_fill(case.after[0], w))
        if after_code != 0 or case.after[1] not in after_out:
            problems.append(f"the follow-up printed {after_out.strip()[:80]!r}: {after_crash or _last_line(after_err)}")
    lost = [path for path, digest in kept.items() if _digest(w / path) != digest]
    left = sorted(str(p.relative_to(w)) for p in w.rglob("*") if any(mark in p.name for mark in LEFTOVER_MARKS))
    problems += [f"lost {path}" for path in lost] + [f"left {path}" for path in left]
    return Outcome(case, code, message.replace(str(w), "<case>"), left, lost, problems)


@dataclass(frozen=True)
class ReliabilityReport:
    """Every case's outcome and the budget property's counts."""

    outcomes: list[Outcome]
    budget: "BudgetPropertyResult"

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    def summary(self) -> list[str]:
        """The lines a closing note quotes."""
        b = self.budget
        lost = sum(len(o.lost) for o in self.outcomes)
        left = sum(len(o.left) for o in self.outcomes)
        return [
            f"cases passed: {self.passed}/{len(self.outcomes)}; files lost: {lost}; left behind: {left}",
            f"budget property: {b.tasks} random tasks ({b.odd_width_tasks} with non-power-of-two widths, {b.feasible} feasible): "
            f"plans over budget: {b.over_budget}; wrong refusals: {b.wrong_refusals}",
        ]


def run_reliability(tasks: int = 1000, seed: int = 0, only: str | None = None, progress: Callable[[Outcome], None] | None = None) -> ReliabilityReport:
    """Run the catalogue (cases whose name contains ``only``, if given) and the budget property over ``tasks``."""
    from metacompress.benchmarks.budget_property import run_budget_property

    outcomes = []
    with tempfile.TemporaryDirectory(prefix="metacompress-reliability-") as root:
        for case in catalogue():
            if only is None or only in case.name:
                outcomes.append(run_case(case, Path(root)))
                if progress is not None:
                    progress(outcomes[-1])
    return ReliabilityReport(outcomes, run_budget_property(tasks, seed))
