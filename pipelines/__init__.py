"""zerocert: join a city's departmental data and precompute school-catchment eligibility."""

__version__ = "0.1.0"
