"""The one training engine: Ray Train workers, a DeepSpeed strategy, model factory."""
