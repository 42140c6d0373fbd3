"""Low-VRAM execution: a network whose weights live on an offload device (CPU RAM) and visit the
execution device (the GPU) one module at a time, for that module's forward only.

Every module that owns parameters or buffers directly gets a forward pre-hook that moves them to
the execution device and a forward hook that moves them back, so the device holds the activations
plus one layer's weights (and the few parameters a parent uses around its children's calls). The
outputs are the same as with the whole network on the device, at the cost of copying every weight
once per network evaluation. For stages larger than the GPU; ComfyUI's own partial loading needs
its cast-weight layer classes, which plain PyTorch modules do not have.
"""

from __future__ import annotations

import torch

__all__ = ["SequentialOffload"]


def _own_tensors(module: torch.nn.Module):
    yield from module.parameters(recurse=False)
    yield from module.buffers(recurse=False)


class SequentialOffload:
    """Attach to ``net`` so it runs on ``device`` with its weights kept on ``offload_device``."""

    def __init__(self, net: torch.nn.Module, device: torch.device | str, offload_device: torch.device | str = "cpu"):
        self.net, self.device, self.offload_device = net, torch.device(device), torch.device(offload_device)
        self.handles: list = []
        self.moves = 0  # weight moves to the device (for tests and logs)

    @property
    def attached(self) -> bool:
        return bool(self.handles)

    def _to(self, module, device, non_blocking):
        for t in _own_tensors(module):
            t.data = t.data.to(device, non_blocking=non_blocking)

    def _pre(self, module, args):
        self._to(module, self.device, True)
        self.moves += 1

    def _post(self, module, args, output):
        self._to(module, self.offload_device, False)

    def attach(self) -> SequentialOffload:
        if self.attached:
            return self
        self.net.to(self.offload_device)
        for m in self.net.modules():
            if next(_own_tensors(m), None) is not None:
                self.handles.append(m.register_forward_pre_hook(self._pre))
                self.handles.append(m.register_forward_hook(self._post))
        return self

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.net.to(self.offload_device)
