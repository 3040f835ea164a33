"""Inference: the predictor, cohort runner, DICOM SEG/SR outputs and PACS (DICOMweb) access."""
