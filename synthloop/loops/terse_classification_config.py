"""Configuration of the TERSE classification loop (:mod:`synthloop.loops.terse_classification`):
every knob, with the paper's value (TERSE A.1 / section 3.4) in its description, and the options
beyond the paper that bound the synthesizer (issue 10: teacher objective, random anchor,
worst-of-k, replay, diversity, mixing in recipe samples)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from synthloop.config import Config, check_range
from synthloop.data.affnist import AFFNIST_RANGES
from synthloop.models.synthesizer import ParamRanges

Range = tuple[float, float]


class RangesConfig(Config):
    """``(min, max)`` of each affine parameter S may output; defaults: the AffNIST recipe's ranges
    (TERSE A.1: "we clamp these parameters to the same range used to generate AffNIST")."""

    angle: Range = AFFNIST_RANGES["angle"]
    tx: Range = AFFNIST_RANGES["tx"]
    ty: Range = AFFNIST_RANGES["ty"]
    shear: Range = AFFNIST_RANGES["shear"]
    sx: Range = AFFNIST_RANGES["sx"]
    sy: Range = AFFNIST_RANGES["sy"]

    @field_validator("angle", "tx", "ty", "shear", "sx", "sy")
    @classmethod
    def _ordered(cls, value: Range) -> Range:
        return check_range(value)

    def to_param_ranges(self) -> ParamRanges:
        return ParamRanges(**{k: tuple(v) for k, v in self.model_dump().items()})


class TerseClassificationConfig(Config):
    """Every knob of the loop; defaults are the paper's values (TERSE A.1 / section 3.4) unless noted."""

    seed: int = 0
    num_classes: int = Field(10, ge=2)
    cycles: int = Field(10, ge=1, description="K cycles of (S phase, T phase); the paper does not state K")
    source: Literal["terse", "random", "worst_of_k"] = Field("terse", description="terse: S; random: the recipe; worst_of_k: hardest of k recipe draws")
    worst_k: int = Field(8, ge=1, description="worst_of_k: recipe draws per digit, the one with the lowest S-loss is kept")
    mix_random: float = Field(0.0, ge=0.0, le=1.0, description="fraction of each cycle's added samples drawn from the plain recipe")
    # S objective and its bounds (issue 10; paper: objective paper, anchor none, no teacher, no replay)
    objective: Literal["paper", "teacher"] = Field("paper", description="paper: maximise T's CE; teacher: -log(1-p_T(y)) + w CE(teacher)")
    teacher: Literal["ema", "reference"] = Field("ema", description="teacher objective: an EMA of T or the reference classifier")
    teacher_decay: float = Field(0.999, gt=0.0, lt=1.0, description="EMA teacher: decay per T step")
    teacher_weight: float = Field(1.0, ge=0.0, description="weight w of the teacher's CE")
    anchor: Literal["none", "random_delta"] = Field("none", description="random_delta: S moves a random recipe draw by a bounded delta")
    anchor_bound: float = Field(0.25, gt=0.0, le=1.0, description="largest |delta| per parameter, as a fraction of its range")
    diversity_weight: float = Field(0.0, ge=0.0, description="weight of the penalty on S's batch concentrating in parameter space")
    diversity_sigma: float = Field(0.1, gt=0.0, description="kernel width of that penalty (unit parameter space)")
    s_zero_init: bool = Field(False, description="zero-initialise S's last layer: S starts at the range centre (the identity)")
    s_replay: int = Field(0, ge=0, description="S snapshots kept; generation draws each batch from one of them or the current S")
    s_train_steps: int | None = Field(None, ge=1, description="S updates in the first n batches of a cycle, later batches only generate (paper: None, all)")
    s_update_every: int = Field(1, ge=1, description="S trains in cycles 1, 1+n, 1+2n, ...; in the others it only generates")
    # synthesizer phase
    hard_per_class: int = Field(500, ge=1, description="paper: 500 hard examples per class")
    hard_margin: float = Field(0.05, ge=0.0, description="hard when max_{c!=y} p_c - p_y > margin; paper 0.05")
    s_batch_size: int = Field(1024, ge=2, description="paper: 1024")
    lr_s: float = Field(1e-3, gt=0.0, description="Adam, paper 1e-3")
    s_weight_decay: float = Field(5e-4, ge=0.0, description="paper section 3.4: 5e-4")
    s_max_steps: int = Field(200, ge=1, description="S batches per cycle at most (not in the paper: a budget guard)")
    s_min_steps: int = Field(1, ge=1, description="S batches per cycle at least, even once the cache is full (paper: 1)")
    cache_policy: Literal["first", "latest"] = Field("first", description="which hard examples a full class keeps (paper: first)")
    s_noise_dim: int = Field(0, ge=0, description="explicit noise input to S; paper: 0 (dropout only)")
    ranges: RangesConfig = RangesConfig()
    fit_translation: bool = True
    # target phase
    t_epochs: int = Field(30, ge=0, description="paper: 30 epochs per cycle")
    t_batch_size: int = Field(64, ge=2, description="paper: 64")
    lr_t: float = Field(1e-2, gt=0.0, description="SGD, paper 1e-2")
    t_momentum: float = Field(0.5, ge=0.0, description="paper A.1: 0.5 (section 3.4 says 0.9)")
    t_weight_decay: float = Field(0.0, ge=0.0, description="A.1 lists none (section 3.4 says 5e-4)")
    lr_t_drop_cycle: int | None = Field(None, ge=1, description="from this cycle on use lr_t_drop_to (Table 1: after 100)")
    lr_t_drop_to: float = Field(1e-3, gt=0.0)
    t_real_per_epoch: int | None = Field(None, ge=1, description="real samples drawn into each T epoch; None = all (paper)")
    t_synthetic_per_epoch: int | None = Field(None, ge=1, description="added samples drawn into each T epoch; None = all (paper)")
    accumulate: bool = Field(True, description="train T on every cache so far (True) or only the latest")
    # discriminator (off for AffNIST in the paper)
    discriminator: bool = False
    lr_d: float = Field(1e-4, gt=0.0, description="Adam, paper A.2: 1e-4")
    d_width: float = Field(0.25, gt=0.0, description="PatchDiscriminator width multiplier (paper: 1.0)")
    adv_weight: float = Field(1.0, ge=0.0)
    eval_batch_size: int = Field(2048, ge=1)
