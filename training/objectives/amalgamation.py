"""Knowledge amalgamation (KA): the common feature space, its losses and its training hook.

Paper: papers/knowledge-amalgamation-single-shot-caer.txt, section 2.3 (Figure 2b), 3.2
(eq. 7-9) and 3.3.

The student imitates N frozen teachers in a *common feature space* (:class:`Amalgamation`):

1. every feature map is resized (bilinear) to the student's feature grid; the resized teacher
   maps are the reconstruction targets ``F_Ti``;
2. one 1x1 convolution per network aligns it to ``C`` channels: ``f_Ti``, ``f_S``;
3. a *shared extractor* of 3 residual blocks (C channels, each ending with a ReLU) projects
   every aligned map: ``hat f_Ti``, ``hat f_S`` (>= 0);
4. with N > 1 a shared 1x1 convolution (then a ReLU, so the result stays >= 0) reduces every
   ``hat f_Ti`` to ``C / N`` channels and the N results are concatenated into ``hat f_T``
   (C channels); with N = 1, ``hat f_T = hat f_T1``;
5. a learnable decoder maps ``hat f_T`` back to every teacher's features: ``hat F_Ti``.

Losses (:func:`amalgamation_losses`), both with the paper's ``mask(A - B)^2 / N_mask``
(:func:`masked_mse`: squared differences only where ``A`` is strictly positive, averaged over
those elements):

- eq. 7, ``L_feat = mask(hat f_T - hat f_S)^2 / N_mask``: the teachers' side is ``A``;
- eq. 8, ``L_rec = sum_i mask(F_Ti - hat F_Ti)^2 / N_mask`` (each teacher its own N_mask).

Choices the paper leaves open, and why:

- **Gradients of eq. 7: the teachers' side is detached** (``detach_target: true``, the
  default). The paper learns a common space into which teachers and student are both projected
  (after Luo et al., 2019) and adds the decoder of eq. 8 "to make the learning of the common
  feature space more robust". Measured on the synthetic benchmark, eq. 8 does not stop the
  collapse when eq. 7's gradient also reaches ``hat f_T``: eq. 7 fell from 59.5 to 0.021 while
  feeding *zero* student features gave 0.031 - the teachers' projection had shrunk to a
  near-constant map, which a student matches without learning anything, and eq. 8 settled at
  what predicting each channel's mean gives. Detached, eq. 7 only moves the student toward the
  teachers' projection, and that projection learns from eq. 8 alone (an autoencoder of the
  teachers' features), so it has to keep what the teachers know: nothing rewards it for
  going flat. ``detach_target: false`` keeps the other reading, for comparison.
- **BatchNorm statistics per source.** The shared extractor's convolutions are shared, but
  each source (every teacher and the student) has BatchNorm statistics and affine parameters
  of its own (:class:`PerSourceNorm`). With one set, the statistics are dominated by the
  teachers' much larger features (RMS 15 against the student's ~1) and the student's batch
  shifts the teachers' projection; per source, each map is standardised on its own, so the
  teachers' projection neither depends on the student nor loses its scale, and the student's
  features are compared with it after the same standardisation. The extractor runs once per
  source (the same FLOPs as one stacked pass).
- **Collapse diagnostic.** In eval mode (validation) the extra also reports, unweighted,
  eq. 7's loss (``diag.ka.feat``) and its value when the student's features are replaced by
  zeros (``diag.ka.feat_zero``). A common space that carries the teachers' knowledge keeps the
  second clearly above the first (their ratio, ``collapse_ratio``, well below 1); a collapsed
  one has them equal. Both go to ``history.json`` with the validation losses.
- **Decoder.** Per teacher, one residual block (C channels) then a 1x1 convolution (with bias)
  to that teacher's channel count, with no final ReLU. The residual block gives each head a
  3x3 spatial context and the capacity to untangle one teacher's share out of the concatenated
  ``hat f_T`` (for N > 1 every teacher is squeezed to C/N channels); the linear output serves
  teachers whose features are signed as well as non-negative ones, and loses nothing for the
  latter: eq. 8 only counts positions where ``F_Ti > 0``, which a linear output reaches as
  well as a ReLU one, without a ReLU's dead (zero-gradient) region.
- **C.** 96 by default: divisible by 1, 2 and 3 teachers (the paper uses up to 3), and with 3
  teachers every teacher keeps 32 channels, the width of HRNet-W32's 1/4 branch.
- **F_S.** ``student_feature: quarter`` (default): the student's 1/4 backbone branch, the map
  its emotion and detection heads read (the paper's student is one backbone with two
  HigherHRNet-style bottom-up heads, section 2 and Figure 2a, whose backbone output is the
  1/4 branch). ``concat``: all four branches resized to 1/4 and concatenated (HRNet's
  segmentation-style representation), an option when the teachers' knowledge sits in the
  coarse branches.

:class:`AmalgamationExtra` is the trainer's hook (:mod:`training.objectives.extras`): it runs
the frozen teachers under ``torch.no_grad()`` on the un-normalised batch, the module on the
teachers' and the student's features, and returns the weighted terms ``ka.feat`` and ``ka.rec``
of eq. 9. Its config section is :class:`training.config.AmalgamationConfig`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caer_ros.model.blocks import BasicBlock, init_weights, make_layer
from caer_ros.model.output import BENetOutput
from training.config import DEFAULT_CHANNELS, STUDENT_FEATURES, AmalgamationConfig

EXTRACTOR_BLOCKS = 3  # section 2.3: "a shared extractor composed of 3 residual blocks"


# ----------------------------------------------------------------------------- losses
def masked_mse(target: Tensor, prediction: Tensor) -> Tensor:
    """``mask(A - B)^2 / N_mask`` of eq. 7-8 with ``A = target``, ``B = prediction``: the
    squared differences where ``target > 0`` (strictly), summed and divided by their number.
    No strictly positive target: 0, still connected to both inputs' graphs. Computed in
    float32 whatever the inputs' precision. Gradients reach ``target`` too if it has any."""
    if target.shape != prediction.shape:
        raise ValueError(f"masked_mse: target {tuple(target.shape)} and prediction "
                         f"{tuple(prediction.shape)} must have the same shape")
    target, prediction = target.float(), prediction.float()
    mask = target.detach() > 0
    squared = torch.where(mask, (target - prediction) ** 2, torch.zeros_like(prediction))
    return squared.sum() / mask.sum().clamp(min=1)


@dataclass
class AmalgamationOutput:
    """One pass through the common feature space (names of section 2.3)."""

    f_T: Tensor  # (B, C, h, w) hat f_T: the teachers' merged projection, >= 0
    f_S: Tensor  # (B, C, h, w) hat f_S: the student's projection, >= 0
    reconstructions: list[Tensor]  # hat F_Ti, (B, channels_i, h, w) per teacher
    targets: list[Tensor]  # F_Ti resized to the student's grid (h, w), detached


def amalgamation_losses(out: AmalgamationOutput, detach_target: bool = True
                        ) -> dict[str, Tensor]:
    """``{"feat": L_feat (eq. 7), "rec": L_rec (eq. 8)}``, unweighted. ``detach_target``: no
    gradient from eq. 7 into the teachers' side ``hat f_T`` (see the module docstring)."""
    target = out.f_T.detach() if detach_target else out.f_T
    feat = masked_mse(target, out.f_S)
    rec = torch.stack([masked_mse(t, r) for t, r in
                       zip(out.targets, out.reconstructions, strict=True)]).sum()
    return {"feat": feat, "rec": rec}


# ----------------------------------------------------------------------------- module
class PerSourceNorm(nn.Module):
    """A BatchNorm layer with one copy (statistics and affine parameters) per source of the
    common space; :attr:`source` picks the copy the next forward uses."""

    def __init__(self, norm: nn.BatchNorm2d, sources: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(copy.deepcopy(norm) for _ in range(sources))
        self.source = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.norms[self.source](x)


def per_source_norms(module: nn.Module, sources: int) -> list[PerSourceNorm]:
    """Replace every BatchNorm2d inside ``module`` by a :class:`PerSourceNorm` of ``sources``
    copies; returns them (in module order)."""
    replaced: list[PerSourceNorm] = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            norm = PerSourceNorm(child, sources)
            setattr(module, name, norm)
            replaced.append(norm)
        else:
            replaced += per_source_norms(child, sources)
    return replaced


def resize_to(feature: Tensor, size: Sequence[int]) -> Tensor:
    """``feature`` resized (bilinear) to the spatial ``size``; itself when already there."""
    size = tuple(int(s) for s in size)
    if tuple(feature.shape[-2:]) == size:
        return feature
    downsampling = feature.shape[-2] > size[0] or feature.shape[-1] > size[1]
    return F.interpolate(feature, size=size, mode="bilinear", align_corners=False,
                         antialias=downsampling)


class Decoder(nn.Module):
    """``hat f_T`` (C channels) -> one teacher's features: a residual block, then a 1x1
    convolution to the teacher's channel count (linear output; see the module docstring)."""

    def __init__(self, channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.block = BasicBlock(channels, channels)
        self.out = nn.Conv2d(channels, teacher_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.block(x))


class Amalgamation(nn.Module):
    """The common feature space of Figure 2b (see the module docstring).

    ``teacher_channels``: channel count of every teacher's feature map (N = its length >= 1);
    ``student_channels``: that of the student's feature map; ``channels``: C, a positive
    multiple of N. ``forward(teacher_features, student_feature)`` takes the N teacher maps (any
    resolutions; detached here) and the student's map, and returns an
    :class:`AmalgamationOutput` on the student's grid.
    """

    def __init__(self, teacher_channels: Sequence[int], student_channels: int,
                 channels: int = DEFAULT_CHANNELS) -> None:
        super().__init__()
        teacher_channels = [int(c) for c in teacher_channels]
        n = len(teacher_channels)
        if n < 1:
            raise ValueError("amalgamation needs at least one teacher")
        if not all(c >= 1 for c in [*teacher_channels, student_channels]):
            raise ValueError(f"feature channel counts must be positive, got teachers "
                             f"{teacher_channels}, student {student_channels}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1 \
                or channels % n:
            raise ValueError(f"channels (C) must be a positive multiple of the number of "
                             f"teachers ({n}), got {channels}")
        self.teacher_channels = teacher_channels
        self.student_channels = int(student_channels)
        self.channels = channels
        self.teacher_align = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in teacher_channels)
        self.student_align = nn.Conv2d(student_channels, channels, 1)
        self.extractor = make_layer("basic", channels, channels, EXTRACTOR_BLOCKS)
        # N > 1: the shared reduction to C/N channels; a ReLU keeps hat f_T >= 0
        self.reduce = nn.Sequential(nn.Conv2d(channels, channels // n, 1), nn.ReLU()) \
            if n > 1 else None
        self.decoders = nn.ModuleList(Decoder(channels, c) for c in teacher_channels)
        init_weights(self)
        # then one copy of every extractor BatchNorm per source: 0..N-1 the teachers, N the
        # student (each starts as initialised above)
        self.source_norms = per_source_norms(self.extractor, n + 1)

    @property
    def num_teachers(self) -> int:
        return len(self.teacher_channels)

    def extract(self, aligned: Tensor, source: int) -> Tensor:
        """The shared extractor on one source's aligned map, with that source's BatchNorm."""
        for norm in self.source_norms:
            norm.source = source
        return self.extractor(aligned)

    def zero_student(self, like: Tensor) -> Tensor:
        """``hat f_S`` for all-zero student features shaped like ``like`` (the collapse
        diagnostic's reference, module docstring)."""
        return self.extract(self.student_align(torch.zeros_like(like)), self.num_teachers)

    def forward(self, teacher_features: Sequence[Tensor], student_feature: Tensor
                ) -> AmalgamationOutput:
        n = self.num_teachers
        if len(teacher_features) != n:
            raise ValueError(f"expected {n} teacher feature maps, got {len(teacher_features)}")
        batch, grid = student_feature.shape[0], student_feature.shape[-2:]
        if student_feature.ndim != 4 or student_feature.shape[1] != self.student_channels:
            raise ValueError(f"student feature must be (B, {self.student_channels}, h, w), "
                             f"got {tuple(student_feature.shape)}")
        for i, (f, c) in enumerate(zip(teacher_features, self.teacher_channels, strict=True)):
            if f.ndim != 4 or f.shape[0] != batch or f.shape[1] != c:
                raise ValueError(f"teacher {i} feature must be ({batch}, {c}, h, w), "
                                 f"got {tuple(f.shape)}")
        targets = [resize_to(f.detach(), grid) for f in teacher_features]
        aligned = [conv(t.to(student_feature.dtype))
                   for conv, t in zip(self.teacher_align, targets, strict=True)]
        aligned.append(self.student_align(student_feature))
        projected = [self.extract(a, source) for source, a in enumerate(aligned)]
        teachers, f_S = projected[:n], projected[n]
        if self.reduce is None:
            f_T = teachers[0]
        else:
            f_T = torch.cat(self.reduce(torch.cat(teachers)).split(batch), dim=1)
        reconstructions = [decoder(f_T) for decoder in self.decoders]
        return AmalgamationOutput(f_T=f_T, f_S=f_S, reconstructions=reconstructions,
                                  targets=targets)


def student_feature(features: Sequence[Tensor], kind: str) -> Tensor:
    """The student's ``F_S`` from its backbone branch outputs (1/4 first): ``quarter`` = the
    1/4 branch; ``concat`` = every branch resized to 1/4, concatenated along the channels."""
    if not features:
        raise ValueError("the student output carries no backbone features")
    if kind == "quarter":
        return features[0]
    if kind == "concat":
        grid = features[0].shape[-2:]
        return torch.cat([features[0], *(resize_to(f, grid) for f in features[1:])], dim=1)
    raise ValueError(f"unknown student_feature {kind!r}; known: {', '.join(STUDENT_FEATURES)}")


def student_feature_channels(branch_channels: Sequence[int], kind: str) -> int:
    """Channel count of :func:`student_feature` for a backbone with ``branch_channels``."""
    if kind == "quarter":
        return int(branch_channels[0])
    if kind == "concat":
        return int(sum(branch_channels))
    raise ValueError(f"unknown student_feature {kind!r}; known: {', '.join(STUDENT_FEATURES)}")


# ----------------------------------------------------------------------------- training hook
def _freeze(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


class AmalgamationExtra:
    """The KA extra of the trainer (:mod:`training.objectives.extras`): terms ``ka.feat`` and
    ``ka.rec``.

    ``student_channels``: the student backbone's branch widths (1/4 first);
    ``input_mean`` / ``input_std``: the student's input normalisation, undone for the teachers
    (they take RGB in 0..1). ``teachers``: already built teacher modules (one per
    ``config.teachers`` entry, each with a ``channels`` attribute) instead of loading the specs
    with :func:`training.teachers.models.load_teacher`. The teachers are frozen (eval mode, no
    gradient) and are not part of :attr:`module`, so they are neither optimised nor saved.
    """

    name = "ka"
    in_validation = True  # eq. 9's total includes L_feat and L_rec; best.pt minimises it

    def __init__(self, config: AmalgamationConfig, student_channels: Sequence[int],
                 input_mean: Sequence[float], input_std: Sequence[float],
                 device: str | torch.device = "cpu",
                 teachers: Sequence[nn.Module] | None = None) -> None:
        self.config = config
        device = torch.device(device)
        if teachers is None:
            from training.teachers.models import load_teacher

            teachers = [load_teacher(spec, device) for spec in config.teachers]
        elif len(teachers) != len(config.teachers):
            raise ValueError(f"{len(teachers)} teacher modules given for "
                             f"{len(config.teachers)} teachers in the config")
        self.teachers = [_freeze(t.to(device)) for t in teachers]
        channels = []
        for spec, teacher in zip(config.teachers, self.teachers, strict=True):
            c = getattr(teacher, "channels", None)
            if not isinstance(c, int) or c < 1:
                raise ValueError(f"teacher {spec!r} does not say its feature channels "
                                 f"(a 'channels' attribute)")
            channels.append(c)
        self.module = Amalgamation(
            channels, student_feature_channels(student_channels, config.student_feature),
            config.channels).to(device)
        self._mean = torch.tensor(input_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(input_std, dtype=torch.float32).view(1, 3, 1, 1)

    def teacher_inputs(self, images: Tensor) -> Tensor:
        """The student's normalised batch back to RGB in 0..1 (what the teachers take)."""
        mean, std = self._mean.to(images.device), self._std.to(images.device)
        return (images.float() * std + mean).clamp(0.0, 1.0)

    def teacher_features(self, images: Tensor) -> list[Tensor]:
        """Every teacher's feature map of the (normalised) batch, without gradient."""
        rgb = self.teacher_inputs(images)
        with torch.no_grad():
            features = []
            for teacher in self.teachers:
                if teacher.training:  # someone called .train() on it: back to eval
                    teacher.eval()
                features.append(teacher(rgb))
        return features

    def terms(self, output: BENetOutput, images: Tensor, batch: Any = None
              ) -> dict[str, Tensor]:
        """``{"ka.feat": w_f L_feat, "ka.rec": w_r L_rec}`` of this batch (eq. 7-9); in eval
        mode also the collapse diagnostic ``diag.ka.feat`` and ``diag.ka.feat_zero``."""
        feature = student_feature(output.features, self.config.student_feature)
        out = self.module(self.teacher_features(images), feature)
        losses = amalgamation_losses(out, self.config.detach_target)
        terms = {"ka.feat": losses["feat"] * self.config.feature_weight,
                 "ka.rec": losses["rec"] * self.config.reconstruction_weight}
        if not self.module.training:
            with torch.no_grad():
                terms["diag.ka.feat"] = losses["feat"].detach()
                terms["diag.ka.feat_zero"] = masked_mse(out.f_T,
                                                        self.module.zero_student(feature))
        return terms

    def set_progress(self, progress: float) -> None:
        """No schedule: the weights are constant (eq. 9)."""

    def set_task_weights(self, weights: dict[str, float]) -> None:
        """KA terms are not emotion tasks: adaptive task weights do not apply."""

    def supervised_factors(self) -> dict[str, float]:
        """KA leaves the supervised terms' weights alone."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}  # everything trainable is in :attr:`module`

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"the amalgamation extra has no state, got keys {sorted(state)}")
