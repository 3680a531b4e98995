"""Data generators (from datasets/ recipes) and loaders for external formats."""
