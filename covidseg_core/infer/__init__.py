"""Running trained networks: device and precision, loading a run's model, predicting a study."""
