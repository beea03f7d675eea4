"""careloop: an engine for AI-personalized care that runs next to a hospital's EHR."""

__version__ = "0.1.0"
