"""The mirror engine: upstream sources, runs and their steps, the scheduler, on-demand fetch."""
