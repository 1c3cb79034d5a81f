"""The network: a shared backbone (fused with the table columns, if any), then one head
per task.

The one seam between backbone (:mod:`sk_multitask.network._backbones`) and heads is
:meth:`MultiTaskModule.forward_features`.
"""

from __future__ import annotations

import torch
from torch import nn

from ._backbones import IMAGENET_MEAN, IMAGENET_STD

#: The parts of a skorch net whose state is the model: its module and its criterion
#: (class weights, learned task weights).
NET_PARTS = ("module", "criterion")


class MultiTaskModule(nn.Module):
    """Backbone, then one linear head per task, fed images in 0-255 (uint8 or float).

    Parameters
    ----------
    backbone : nn.Module
        Maps normalised float images ``(N, 3, H, W)`` to features (flattened here).
    n_features : int
    head_sizes : dict
        Task name to the head's number of outputs (classes, or 1 for a regression).
    mean, std : sequence of 3 floats
        Normalisation for images scaled to [0, 1].
    n_table : int, default=0
        The width of the encoded table columns; 0: images only (no fusion MLP).
    fusion_width, fusion_depth : int, default=256, 1
        The fusion MLP's hidden width and number of hidden layers (with a table).

    Notes
    -----
    :meth:`forward` concatenates the heads' outputs, in ``head_sizes`` order, into one
    ``(N, sum(head_sizes))`` tensor, the form skorch collects and concatenates;
    :meth:`forward_heads` gives them as a dict keyed by task name.
    """

    def __init__(
        self,
        backbone,
        n_features,
        head_sizes,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        n_table=0,
        fusion_width=256,
        fusion_depth=1,
    ):
        super().__init__()
        self.backbone = backbone
        self.task_names = list(head_sizes)
        self.n_table = int(n_table)
        if self.n_table:
            # Ludwig's concat combiner: an MLP over the image features and the table, so
            # that a target may depend on their interactions (an XOR), not only their sum.
            widths = [n_features + self.n_table] + [fusion_width] * fusion_depth
            # Normalised, image features and table columns start on one scale.
            layers = [nn.BatchNorm1d(widths[0])]
            for width_in, width_out in zip(widths, widths[1:], strict=False):
                layers += [nn.Linear(width_in, width_out), nn.ReLU()]
            self.fusion = nn.Sequential(*layers)
            n_features = fusion_width
        # A ModuleList, not a ModuleDict: task names need not be valid module names.
        self.heads = nn.ModuleList(nn.Linear(n_features, n) for n in head_sizes.values())
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)
        #: Feed the backbone channels-last tensors (faster convolutions; set in ``fit``).
        self.channels_last = False

    #: Whether the backbone is frozen (see :meth:`freeze_backbone`).
    backbone_frozen = False

    def freeze_backbone(self, frozen=True):
        """Freeze (or unfreeze) the backbone: no gradients, BatchNorm statistics kept.

        While frozen, the backbone's parameters do not require gradients and the backbone
        stays in eval mode whatever :meth:`train` is asked, so that its BatchNorm running
        statistics do not move and its dropout is off; the heads train as usual.
        """
        self.backbone_frozen = frozen
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def forward_features(self, images, table=None):
        """Shared features ``(N, n_features)`` of uint8 (0-255) or float images: the
        backbone's, or with a table (float ``(N, n_table)``) the fusion MLP's output over
        the backbone's features and the table."""
        x = (images.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = torch.flatten(self.backbone(x), 1)
        if not self.n_table:
            return features
        if table is None:
            raise ValueError(
                f"the network reads {self.n_table} encoded table columns beside the images "
                "(tabular_cols): call it with table=..."
            )
        return self.fusion(torch.cat([features, table.to(features.dtype)], dim=1))

    def forward_heads(self, features):
        """Each task's outputs, keyed by task name."""
        return {
            name: head(features) for name, head in zip(self.task_names, self.heads, strict=True)
        }

    def forward(self, images, table=None):
        features = self.forward_features(images, table)
        return torch.cat([head(features) for head in self.heads], dim=1)


def multitask_module(net):
    """The net's :class:`MultiTaskModule`, unwrapped from DDP if need be."""
    module = net.module_
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.module
    return module


def net_state(net):
    """A CPU copy of the state of ``net``'s module and criterion: ``"part.key"`` to a tensor.

    What the safe file stores (as safetensors), early stopping keeps as its best epoch
    and a checkpoint resumes.
    """
    return {
        f"{part}.{key}": tensor.detach().cpu().contiguous().clone()
        for part in NET_PARTS
        for key, tensor in getattr(net, f"{part}_").state_dict().items()
    }


def load_net_state(net, state, source=None):
    """Load a :func:`net_state` into an initialised net of the same structure.

    Raises a ValueError naming ``source`` (a file) when a part's tensors do not fit.
    """
    parts = {part: {} for part in NET_PARTS}
    for key, tensor in state.items():
        part, _, name = key.partition(".")
        parts[part][name] = tensor
    for part, part_state in parts.items():
        try:
            getattr(net, f"{part}_").load_state_dict(part_state)
        except RuntimeError as exc:
            if source is None:
                raise
            raise ValueError(
                f"the weights in {source!r} do not fit the network the file describes "
                f"({part}): {exc}"
            ) from exc
    return net
