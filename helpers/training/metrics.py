"""Accuracy and loss per class, per device and per device group, and the confusion counts, correct under DDP.

One torchmetrics ``Metric`` keeps, for every device, the confusion counts (true class x predicted
class) and the summed loss per true class. Those are sums, so torchmetrics can add them up across
processes, and every figure the challenge reports, and every confusion matrix, follows from them.
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
        n_devices, n_classes = len(self.devices), len(self.classes)
        # confusion[device, true class, predicted class]: clip counts
        self.add_state("confusion", default=torch.zeros((n_devices, n_classes, n_classes), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("loss_sum", default=torch.zeros((n_devices, n_classes), dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor, devices) -> None:
        logits = logits.float()
        losses = F.cross_entropy(logits, labels, reduction="none").double()
        predicted = logits.argmax(dim=1)
        unknown = self._device_index[UNKNOWN]
        rows = torch.tensor([self._device_index.get(d, unknown) for d in devices], device=labels.device)
        self.confusion.index_put_((rows, labels, predicted), torch.ones_like(losses), accumulate=True)
        self.loss_sum.index_put_((rows, labels), losses, accumulate=True)

    def compute(self) -> dict:
        """Flat ``{name: value}``: ``count``, ``acc``, ``macro_avg_acc``, ``loss``, then ``acc.<x>``, ``loss.<x>``
        and ``count.<x>`` (clips) for every class, device and device group that has clips (accuracies as
        fractions)."""
        count = self.confusion.sum(dim=2)  # [device, true class]
        correct = self.confusion.diagonal(dim1=1, dim2=2)
        results = {}

        def add(name, cells):
            n = count[cells].sum()
            if n > 0:
                results[f"acc.{name}" if name else "acc"] = correct[cells].sum() / n
                results[f"loss.{name}" if name else "loss"] = self.loss_sum[cells].sum() / n
                if name:
                    results[f"count.{name}"] = n

        results["count"] = count.sum()  # clips seen, over all processes
        add("", (slice(None), slice(None)))
        for i, label in enumerate(self.classes):
            add(label, (slice(None), i))
        for i, device in enumerate(self.devices):
            add(device, (i, slice(None)))
        for group in dict.fromkeys(self.device_groups.values()):
            rows = [self._device_index[d] for d, g in self.device_groups.items() if g == group]
            add(group, (rows, slice(None)))
        class_accs = [results[f"acc.{label}"] for label in self.classes if f"acc.{label}" in results]
        if class_accs:
            results["macro_avg_acc"] = torch.stack(class_accs).mean()
        return {name: float(value) for name, value in results.items()}

    def confusion_counts(self) -> dict:
        """``{device: matrix}`` for every device with clips (``unknown``: any other device id): clip counts as
        lists of lists, rows the true class and columns the predicted class (order of ``classes``),
        summed over all processes. Like ``compute``, every process of a distributed run must call it."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=True):
            matrices = self.confusion.round().long().tolist()
        return {device: matrix for device, matrix in zip(self.devices, matrices) if any(map(any, matrix))}
