"""The network: backbones, the multitask module and its masked loss.

- ``_backbones`` and ``_weight_files``: torchvision's registry, timm, the small CNN or the
  user's module, and their weights (torchvision's, or a local file);
- ``_feature_maps``: a backbone's last spatial feature map, which heatmaps weigh;
- ``_model``: the backbone, then one head per task;
- ``_loss``: the masked multitask loss, an ordinal head's level probabilities and
  ``level_score`` (a level's score to explain); ``_weighting``: class weights and dynamic weight
  average.
"""

from .. import _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(
    __name__,
    {
        "_backbones": [
            "IMAGENET_MEAN",
            "IMAGENET_STD",
            "PRETRAINED",
            "TIMM_PREFIX",
            "WEIGHTS_SUFFIXES",
            "SimpleCNN",
            "backbone_state_shapes",
            "build_backbone",
            "check_backbone",
            "check_single_image_batches",
            "default_image_size",
            "has_pretrained_weights",
            "is_torchvision_classifier",
        ],
        "_feature_maps": ["spatial_layer"],
        "_loss": [
            "LOSS_WEIGHTINGS",
            "REGRESSION_LOSSES",
            "MaskedMultiTaskLoss",
            "check_loss_options",
            "check_task_losses",
            "class_counts",
            "corn_log_probabilities",
            "level_score",
        ],
        "_model": [
            "NET_PARTS",
            "MultiTaskModule",
            "load_net_state",
            "multitask_module",
            "net_state",
        ],
        "_weight_files": ["load_weights_file", "read_state_dict"],
        "_weighting": [
            "check_class_weight_option",
            "check_class_weights",
            "class_weights",
            "dwa_weights",
            "is_weight",
        ],
    },
)
