"""Segmentation: a label per voxel, learnt from label images on the image's grid."""

from __future__ import annotations

from medimg.tasks.base import Task

SEGMENTATION = Task(
    name="segmentation",
    description="a label per voxel (organ, lesion, ...), learnt from label images",
    target="mask",
    dense=True,
    channels="labels",
    writers=("nifti",),
    dicom_writers=("dicom_seg", "dicom_sr"),
    explain_methods=("seg-gradcam",),
)
