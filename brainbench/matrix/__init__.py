"""Experiment matrices: a spec expands into cells (RunConfigs) that launchers run under one MLflow parent."""
