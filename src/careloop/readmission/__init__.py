"""30-day readmission risk at discharge, trained on the UCI "Diabetes 130-US hospitals" layout:
the reader, discharge-time features, the LightGBM model with its calibration and alert policy, the
LACE baseline, the model card and the governance adapter.
"""
