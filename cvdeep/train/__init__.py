"""Training methods of the papers cvdeep implements."""
