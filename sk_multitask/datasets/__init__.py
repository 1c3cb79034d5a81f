"""Datasets: a generated multitask image set, and a loader for UTKFace."""

from ._synthetic import make_multitask_images
from ._utkface import load_utkface

__all__ = ["load_utkface", "make_multitask_images"]
