"""Lesion detection: 3D boxes in the scan's geometry, MONAI RetinaNet, FROC/AP, box outputs.

Modules: ``boxes`` (world mm <-> voxel boxes, box files, mask components), ``cases`` (a manifest's
images and boxes), ``grid`` (the plan's axis-wise grid), ``plan`` (anchors from the training
boxes), ``network`` (the torchvision-free detector), ``lightning_task`` (training data and the
Lightning module), ``predict`` (sliding windows, NMS and box merging), ``metrics`` and ``scoring``
(FROC, AP, sensitivity by size, patient CIs), ``model_folder``, ``study`` (the run),
``cohort`` and ``dicom_sr`` (boxes.json, boxes.csv, the TID 1500 SR), ``synthetic`` (the
detection study). See docs/detection.md.
"""
