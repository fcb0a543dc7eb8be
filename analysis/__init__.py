"""analysis: metrics, plots, the model-vs-measurement check, and the main job (`aegis reproduce`)."""
