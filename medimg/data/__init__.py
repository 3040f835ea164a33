"""Cases, manifests, patient-level splits, synthetic studies and MONAI pipelines."""
