"""What makes two runs comparable: the threat model, the training protocol, the evaluation."""
