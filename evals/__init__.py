"""Scoring and statistics: pure functions of (prompt, completion), reused by RL rewards."""
