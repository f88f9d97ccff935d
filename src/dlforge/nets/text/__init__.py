"""Text and sequence networks."""
