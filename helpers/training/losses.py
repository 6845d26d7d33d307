"""Every training loss, in one place: the label loss (cross-entropy; with mixup, each clip's loss mixed
with its partner's by the clips' weights) and the knowledge-distillation loss of the 2023 winner
(CPJKU). The training step calls ``training_loss`` once per batch."""
import torch
import torch.nn.functional as F

from helpers.training.augmentation import Mix


def label_loss(logits: torch.Tensor, labels: torch.Tensor, mix: Mix) -> torch.Tensor:
    """Cross-entropy of the class indices ``labels``; after mixup, ``w * CE(label) + (1 - w) * CE(partner's
    label)`` with each clip's weight ``w``."""
    if mix.partner is None:
        return F.cross_entropy(logits, labels)
    own = F.cross_entropy(logits, labels, reduction="none")
    partners = F.cross_entropy(logits, labels[mix.partner], reduction="none")
    weight = mix.weight.to(own.dtype)
    return (weight * own + (1 - weight) * partners).mean()


def label_targets(labels: torch.Tensor, mix: Mix, n_classes: int) -> torch.Tensor:
    """The labels as the distillation loss takes them: class indices, or after mixup the mixed one-hot vectors."""
    if mix.partner is None:
        return labels
    return mix.targets(F.one_hot(labels, n_classes).float())


def teacher_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's soft targets: its probabilities at ``temperature``."""
    return F.softmax(teacher_logits.float() / temperature, dim=-1)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)`` with the element-wise KL terms averaged over batch AND
    classes, as in the 2023 winner's code (PyTorch's ``batchmean`` would be n_classes times this)."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_student, teacher_probs.float(), reduction="none").mean() * temperature ** 2


def kd_loss(student_logits, labels, teacher_probs, kd_lambda: float, temperature: float) -> tuple:
    """``(loss, label_loss, distillation_loss)`` with ``loss = kd_lambda * label_loss + (1 - kd_lambda)
    * distillation_loss``. ``labels`` are class indices or (mixed) class probabilities;
    ``teacher_probs`` come from ``teacher_targets`` (mixed like the clips if clips were mixed)."""
    label = F.cross_entropy(student_logits, labels)
    distill = distillation_loss(student_logits, teacher_probs, temperature)
    return kd_lambda * label + (1 - kd_lambda) * distill, label, distill


def training_loss(logits, labels, mix: Mix, teacher_logits=None, kd_lambda: float = None,
                  temperature: float = None) -> tuple:
    """``(loss, parts)``: the loss of a training batch and its parts to log by name (``label_loss``,
    ``kd_loss``; none without a teacher). Without ``teacher_logits`` the label loss alone; with them
    (one row per clip) the distillation loss of ``kd_lambda`` and ``temperature``, mixed clips getting
    mixed targets: the labels' and the teacher's, with the same weights."""
    if teacher_logits is None:
        return label_loss(logits, labels, mix), {}
    teacher_probs = mix.targets(teacher_targets(teacher_logits, temperature))
    loss, label, distill = kd_loss(logits, label_targets(labels, mix, logits.size(-1)), teacher_probs,
                                   kd_lambda, temperature)
    return loss, {"label_loss": label, "kd_loss": distill}
