"""A sweep's grid: one :class:`Run` per point (mode, seed, lambda, K, loss, step pairs, target stop-gradient),
its names and the `stepjepa train` flags that select it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stepjepa.experiments.config import BASE, LOSS_FLAGS

if TYPE_CHECKING:
    from stepjepa.experiments.config import SweepConfig



@dataclass(frozen=True)
class Run:
    """One point of the grid; regular runs carry no lbd, predictors, loss or target setting, and only Step-JEPA
    runs carry step pairs."""

    mode: str
    seed: int
    lbd: float | None = None
    predictors: int | None = None
    loss: str | None = None
    step_pairs: str | None = None
    target_stop_grad: bool = False

    @property
    def config_name(self) -> str:
        """The settings without the seed: runs of one configuration differ only in their seed. The defaults
        (first pair, gradient through the target) add nothing, so older sweeps keep their names."""
        if self.mode in ("regular", BASE):
            return self.mode
        pairs = f"_{self.step_pairs}pairs" if self.step_pairs not in (None, "first") else ""
        stop = "_stopgrad" if self.target_stop_grad else ""
        return f"{self.mode}_lbd{self.lbd:g}_k{self.predictors}_{self.loss}{pairs}{stop}"

    @property
    def name(self) -> str:
        """The run's directory name, e.g. ``step_jepa_lbd0.1_k2_cosine_seed82`` (``base``: the untrained model)."""
        return BASE if self.mode == BASE else f"{self.config_name}_seed{self.seed}"

    def mode_flags(self) -> list[str]:
        """The `stepjepa train` flags that select this run's mode, lambda, K and loss."""
        if self.mode == "regular":
            return ["--regular"]
        flags = ["--step_jepa"] if self.mode == "step_jepa" else []
        flags += ["--lbd", f"{self.lbd:g}", "--predictors", str(self.predictors), *LOSS_FLAGS[self.loss]]
        if self.step_pairs not in (None, "first"):
            flags += ["--step_pairs", self.step_pairs]
        return flags + (["--target_stop_grad"] if self.target_stop_grad else [])


def plan_runs(cfg: SweepConfig) -> list[Run]:
    """The grid in order: per mode, per loss, lambda, K, step pairs (Step-JEPA only) and target stop-gradient,
    every seed; regular once per seed."""
    runs = []
    for mode in cfg.modes:
        if mode == "regular":
            runs += [Run("regular", seed) for seed in cfg.seeds]
            continue
        pair_modes = cfg.step_pairs if mode == "step_jepa" else [None]
        for loss in cfg.losses:
            for lbd in cfg.lbd:
                for k in cfg.predictors:
                    for pairs in pair_modes:
                        for stop in cfg.target_stop_grad:
                            runs += [Run(mode, seed, lbd, k, loss, pairs, stop) for seed in cfg.seeds]
    return runs
