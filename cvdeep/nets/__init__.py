"""Networks: one file per method, pure torch, official state_dict key layouts."""
