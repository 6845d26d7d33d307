"""Accuracy and loss per class, per device and per device group, correct under DDP.

One torchmetrics ``Metric`` keeps, for every (device, class) cell, the number of clips, of correct
predictions and the summed loss. Those are sums, so torchmetrics can add them up across
processes, and every figure the challenge reports follows from them.
"""
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from dataset.dcase25 import CLASSES, DEVICE_GROUPS, DEVICES

UNKNOWN = "unknown"


class SceneDeviceAccuracy(Metric):
    full_state_update = False

    def __init__(self, classes=CLASSES, devices=DEVICES, device_groups=DEVICE_GROUPS):
        super().__init__()
        self.classes = list(classes)
        self.devices = list(devices) + [UNKNOWN]  # clips of any other device id land in the last row
        self.device_groups = dict(device_groups)
        self._device_index = {device: i for i, device in enumerate(self.devices)}
        shape = (len(self.devices), len(self.classes))
        for name in ("correct", "count", "loss_sum"):
            self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor, devices) -> None:
        logits = logits.float()
        losses = F.cross_entropy(logits, labels, reduction="none").double()
        correct = (logits.argmax(dim=1) == labels).double()
        unknown = self._device_index[UNKNOWN]
        rows = torch.tensor([self._device_index.get(d, unknown) for d in devices], device=labels.device)
        cell = (rows, labels)
        self.count.index_put_(cell, torch.ones_like(correct), accumulate=True)
        self.correct.index_put_(cell, correct, accumulate=True)
        self.loss_sum.index_put_(cell, losses, accumulate=True)

    def compute(self) -> dict:
        """Flat ``{name: value}``: ``count``, ``acc``, ``macro_avg_acc``, ``loss``, then ``acc.<x>`` and ``loss.<x>``
        for every class, device and device group that has clips (accuracies as fractions)."""
        results = {}

        def add(name, correct, count, loss_sum):
            if count > 0:
                results[f"acc.{name}" if name else "acc"] = correct / count
                results[f"loss.{name}" if name else "loss"] = loss_sum / count

        results["count"] = self.count.sum()  # clips seen, over all processes
        add("", self.correct.sum(), self.count.sum(), self.loss_sum.sum())
        for i, label in enumerate(self.classes):
            add(label, self.correct[:, i].sum(), self.count[:, i].sum(), self.loss_sum[:, i].sum())
        for i, device in enumerate(self.devices):
            add(device, self.correct[i].sum(), self.count[i].sum(), self.loss_sum[i].sum())
        for group in dict.fromkeys(self.device_groups.values()):
            rows = [self._device_index[d] for d, g in self.device_groups.items() if g == group]
            add(group, self.correct[rows].sum(), self.count[rows].sum(), self.loss_sum[rows].sum())
        class_accs = [results[f"acc.{label}"] for label in self.classes if f"acc.{label}" in results]
        if class_accs:
            results["macro_avg_acc"] = torch.stack(class_accs).mean()
        return {name: float(value) for name, value in results.items()}
