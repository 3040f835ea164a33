"""DICOM: header reads, series discovery, volume assembly, writing and de-identification."""
