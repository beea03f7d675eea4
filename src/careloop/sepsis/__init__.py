"""Sepsis and deterioration early warning: signals, features, model, alert policy, evaluation."""
