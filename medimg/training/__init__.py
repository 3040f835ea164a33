"""Lightning tasks, the training run and its MLflow lineage."""
