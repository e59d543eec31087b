"""mtlcc-tf: recurrent encoders for multi-temporal land cover classification."""
