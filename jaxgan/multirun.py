"""Groups of runs: one GAN per seed (x lr x beta1), trained together by the one training loop
(`jaxgan.train`): `python -m jaxgan.train --seeds 0-7 [--lr 1e-4,2e-4] [--beta1 0.5,0.9]`.

This module holds what a group is, not how it trains: its members (`members_of`), its directory
(`GroupDir`: group.json and the group's own files), opening a new or saved group (`open_group`),
freezing a member that diverged (`Group.freeze`), and the group's summary. The loop trains a
group's members as K runs of one stacked state (`jaxgan.steps.stack`, `runs_steps`), exactly as it
trains one run, a group of one. What differs between members is data, not config: the seed lives
in each member's key, and a swept lr or beta1 in `GANState.adam`, so one compilation serves the grid.

    WORKDIR/group.json       the template config, the lists, and the frozen (diverged) runs
            seed_3/          each member's own run directory (`jaxgan.rundir`; seed_3-lr_0.0002/
                             in a sweep) with normal single-run checkpoints that generate, evaluate
                             and convert read; a member trains only with its group (`member_of`)
            losses.png       every run's loss curves in one plot
            summary.json     each run's last row (FD and score with --eval-every), mean and std

Divergence: a member whose loss or parameters turn non-finite is named, with its seed, lr and
beta1, and frozen: its directory keeps what it had (the rows of its good epochs, its last good
checkpoint), nothing more is written to it, and the others go on. Its lane stays in the compiled
program (lanes never mix, so the others' numbers do not change).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

from jaxgan import checkpoint, rundir, visualize
from jaxgan.checkpoint import CheckpointError
from jaxgan.cli import UserError, first_line
from jaxgan.config import Config
from jaxgan.report import mean_std

GROUP_FILE = "group.json"
FORMAT_VERSION = 1
SWEPT = ("seed", "lr", "beta1")  # the fields whose values differ between members


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a group: its directory name under the group's workdir and its config."""

    name: str
    config: Config

    def describe(self) -> str:
        c = self.config
        return f"{self.name} (seed {c.seed}, lr {c.lr:g}, beta1 {c.beta1:g})"


def members_of(template: Config, lists: dict[str, tuple]) -> list[Member]:
    """One member per combination of the `lists` of SWEPT fields (seed-major; a field without a
    list keeps template's value). A field with several values is part of the names:
    seed_3, or seed_3-lr_0.0002 when lr is swept."""
    values = {name: tuple(lists.get(name) or (getattr(template, name),)) for name in SWEPT}
    named = [name for name in SWEPT[1:] if len(values[name]) > 1]
    members = []
    for combo in itertools.product(*(values[name] for name in SWEPT)):
        config = template.replace(**dict(zip(SWEPT, combo, strict=True)))
        parts = [f"seed_{config.seed}", *(f"{name}_{getattr(config, name)!r}" for name in named)]
        members.append(Member("-".join(parts), config))
    return members


def is_group(workdir: str | Path) -> bool:
    """True when `workdir` holds a group of runs (its group.json)."""
    return (Path(workdir) / GROUP_FILE).is_file()


class GroupDir:
    """The group's directory: group.json, the summary, and one `rundir.RunDir` per member."""

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.manifest = self.workdir / GROUP_FILE
        self.losses = self.workdir / "losses.png"
        self.summary = self.workdir / "summary.json"

    def run(self, member: Member) -> rundir.RunDir:
        return rundir.RunDir(self.workdir / member.name)

    def read(self) -> dict:
        """group.json: {"config": template, "lists": {field: values}, "frozen": {name: why}}."""
        try:
            manifest = json.loads(self.manifest.read_text())
            template = Config.from_dict(manifest["config"]).validate()
            lists = {name: tuple(manifest["lists"][name]) for name in SWEPT}
            frozen = dict(manifest["frozen"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.manifest} is not a jaxgan group file: {first_line(err)}") from None
        return {"config": template, "lists": lists, "frozen": frozen}

    def write(self, template: Config, lists: dict[str, tuple], frozen: dict[str, str]) -> None:
        record = {
            "format_version": FORMAT_VERSION,
            "config": template.to_dict(),
            "lists": {name: list(lists[name]) for name in SWEPT},
            "frozen": frozen,
        }
        partial = self.manifest.with_name(f".{GROUP_FILE}.tmp")
        partial.write_text(json.dumps(record, indent=2) + "\n")
        partial.replace(self.manifest)  # atomic: a reader sees the old file or the new one


@dataclasses.dataclass
class Group:
    """A group being trained: its directory, template config, lists, members and frozen runs."""

    dir: GroupDir
    template: Config
    lists: dict[str, tuple]
    frozen: dict[str, str]

    @property
    def members(self) -> list[Member]:
        return members_of(self.template, self.lists)

    def freeze(self, member: Member, why: str) -> str:
        """Record `member` as diverged in group.json; returns the message naming it."""
        self.frozen[member.name] = f"run {member.describe()} diverged: {why}"
        self.dir.write(self.template, self.lists, self.frozen)
        return self.frozen[member.name]


def member_of(workdir: str | Path) -> Path | None:
    """The group directory whose member `workdir` is (its parent holds a group.json naming it), or None."""
    path = Path(workdir).absolute()
    parent = path.parent
    if not is_group(parent):
        return None
    try:
        saved = GroupDir(parent).read()
    except CheckpointError:
        return None
    names = {m.name for m in members_of(saved["config"], saved["lists"])}
    return parent if path.name in names else None


def check_not_a_member(workdir: str | Path) -> None:
    """UserError when `workdir` is a member of a group of runs: trained alone, it would leave the
    group's runs at different epochs."""
    group = member_of(workdir)
    if group is not None:
        raise UserError(
            f"{workdir} is run {Path(workdir).name} of the group of runs in {group}: continue the group "
            f"(python -m jaxgan.train --workdir {group}), or copy the run directory elsewhere to train it alone"
        )


@dataclasses.dataclass
class GroupResult:
    """What a group's training returns: each member, its final state (None if not trained here),
    its metric rows, and the frozen members' reasons."""

    members: list[Member]
    states: list
    histories: list[list[dict]]
    frozen: dict[str, str]


def open_group(group_dir: GroupDir, config: Config, lists: dict[str, tuple], resume, explicit) -> Group:
    """The group to train: a new one from `config` and `lists`, or the one in group.json with the
    `explicit` fields of `config` applied (CheckpointError when one may not change, or when the
    lists differ from the group's)."""
    explicit_given = explicit is not None  # None: every field of config, but the lists only from `lists`
    explicit = frozenset(f.name for f in dataclasses.fields(Config)) if explicit is None else explicit
    given = {name: tuple(lists[name]) if name in lists else (getattr(config, name),) for name in SWEPT}
    if resume is False or not is_group(group_dir.workdir):
        if resume:
            raise CheckpointError(f"--resume: no group of runs to resume in {group_dir.workdir}")
        return Group(group_dir, config, given, {})
    saved = group_dir.read()
    template = checkpoint.merge_config(saved["config"], config, explicit - set(SWEPT))
    asked = set(lists) | (explicit & set(SWEPT) if explicit_given else set())
    wanted = {name: given[name] if name in asked else saved["lists"][name] for name in SWEPT}
    if wanted != saved["lists"]:
        raise CheckpointError(
            f"the runs asked for ({show_lists(wanted)}) are not the group's in {group_dir.workdir} "
            f"({show_lists(saved['lists'])}); use another --workdir, or --no-resume to start over"
        )
    return Group(group_dir, template, saved["lists"], saved["frozen"])


def show_lists(lists: dict[str, tuple]) -> str:
    return " ".join(f"{name}={','.join(map(str, values))}" for name, values in lists.items())


def others_go_on(n: int) -> str:
    return "the other run goes on" if n == 1 else f"the other {n} runs go on"


# The summary ------------------------------------------------------------------------------------


def finish_group(group: Group, states, histories: list[list[dict]], log) -> GroupResult:
    """The group's own files, losses.png (every run's curves) and summary.json, and the closing table."""
    members = group.members
    visualize.plot_runs({m.name: h for m, h in zip(members, histories, strict=True) if h}, group.dir.losses)
    summary = summarize(members, histories, group.frozen)
    group.dir.summary.write_text(json.dumps(summary, indent=1) + "\n")
    log(format_summary(summary))
    return GroupResult(members, states, histories, group.frozen)


SUMMARY_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "fd", "score", "coverage_kl", "max_prob", "cond_acc")


def summarize(members: list[Member], histories: list[list[dict]], frozen: dict[str, str]) -> dict:
    """{"runs": {name: last row + seed, lr, beta1, frozen}, "mean": ..., "std": ...} over the runs
    that were not frozen (std with ddof 1; None for one run)."""
    runs, good = {}, []
    for member, history in zip(members, histories, strict=True):
        last = history[-1] if history else {}
        c = member.config
        runs[member.name] = {"seed": c.seed, "lr": c.lr, "beta1": c.beta1, "frozen": frozen.get(member.name), **last}
        if member.name not in frozen and history:
            good.append(last)
    keys = [key for key in SUMMARY_KEYS if good and all(key in row for row in good)]
    stats = {key: mean_std([row[key] for row in good]) for key in keys}
    return {
        "runs": runs,
        "num_runs": len(members),
        "num_frozen": len(frozen),
        "mean": {key: s[0] for key, s in stats.items()},
        "std": {key: s[1] for key, s in stats.items()},
    }


def format_summary(summary: dict) -> str:
    """The closing table: each run's last epoch, and the mean ± std of the runs that finished."""
    quality = "fd" in summary["mean"]
    head = f"{'run':<28}{'epoch':>6}{'D loss':>9}{'G loss':>9}" + (f"{'FD':>9}{'score':>8}" if quality else "")
    lines = [head]
    for name, row in summary["runs"].items():
        if row["frozen"]:
            lines.append(f"{name:<28}  frozen (diverged): see group.json")
            continue
        if "epoch" not in row:
            continue
        line = f"{name:<28}{row['epoch']:>6}{row['d_loss']:>9.4f}{row['g_loss']:>9.4f}"
        lines.append(line + (f"{row['fd']:>9.2f}{row['score']:>8.2f}" if quality else ""))
    mean, std = summary["mean"], summary["std"]
    if mean:
        pm = lambda key, spec: format(mean[key], spec) + ("" if std[key] is None else f" ± {std[key]:{spec}}")  # noqa: E731
        text = f"mean ± std: D loss {pm('d_loss', '.4f')}, G loss {pm('g_loss', '.4f')}"
        lines.append(text + (f", FD {pm('fd', '.2f')}, score {pm('score', '.2f')}" if quality else ""))
    return "\n".join(lines)
