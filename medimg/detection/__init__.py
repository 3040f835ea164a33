"""Lesion detection: 3D boxes in the scan's geometry, MONAI RetinaNet, FROC/AP, box outputs.

Modules: ``boxes`` (world mm <-> voxel boxes, box files, mask components), ``grid`` (the plan's
axis-wise grid), ``plan`` (anchors from the training boxes), ``network`` (the detector),
``predict`` (sliding windows + NMS), ``metrics`` and ``scoring`` (FROC, AP, CIs), ``synthetic``
(the detection study). See docs/detection.md.
"""
