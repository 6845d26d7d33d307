"""The device-specific system: one copy of the general network per training device.

State-dict names follow the organisers' container: ``base_model.*`` for the general model and
``device_models.<device>.*`` for the copies.
"""
import copy

import torch
from torch import nn


class MultiDeviceModel(nn.Module):
    """Routes every clip to its device's model; devices without one use the general model."""

    routes_by_device = True

    def __init__(self, base_model: nn.Module, devices):
        super().__init__()
        self.base_model = base_model
        self.device_models = nn.ModuleDict({device: copy.deepcopy(base_model) for device in devices})

    def get_model_for_device(self, device: str) -> nn.Module:
        return self.device_models[device] if device in self.device_models else self.base_model

    def forward(self, x: torch.Tensor, devices, compute=None) -> torch.Tensor:
        """``x`` ``[B, ...]`` with ``devices[i]`` the device of clip ``i`` -> logits in input order.

        Clips are grouped by the model they go to, each group runs as one batch, through
        ``compute(model, batch)`` if given (evaluation passes ``models.inference.infer``)."""
        if len(devices) != x.size(0):
            raise ValueError(f"{len(devices)} device ids for a batch of {x.size(0)} clips")
        groups = {}
        for i, device in enumerate(devices):
            groups.setdefault(self.get_model_for_device(device), []).append(i)
        out = None
        for model, rows in groups.items():
            index = torch.tensor(rows, device=x.device)
            batch = x.index_select(0, index)
            logits = model(batch) if compute is None else compute(model, batch)
            if out is None:
                out = logits.new_empty((x.size(0),) + logits.shape[1:])
            out[index] = logits
        return out
