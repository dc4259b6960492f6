"""Training methods of the papers cvdeep implements: the descriptor-learning losses
(``cvdeep.train.losses``) with which the shipped patch descriptors were trained, so a
trainer can reproduce or fine-tune them on its own correspondences."""
