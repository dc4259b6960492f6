"""Training methods of the papers cvdeep implements: their losses, data generation and the
training loop behind `cvdeep train`, reusing the same networks and ops as inference."""
